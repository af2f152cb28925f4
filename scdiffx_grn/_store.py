"""The storage contract of every ``tl`` function (scanpy's).

``tl.f(data, *, key_added=..., copy=False)``:

- ``copy=False`` writes into ``data`` and returns ``None``;
- ``copy=True`` leaves ``data`` untouched and returns a modified copy;
- results go to ``data.uns[key_added]``, a dict holding ``"params"`` (the call's parameters, plain
  JSON types) and the result tables by name (e.g. ``"network"``, ``"effects"``);
- a column holding cell groups is named after ``groupby`` (``groupby="cell_type"`` -> ``cell_type``).

The tidy getters (``get.*_df``) read the tables back with :func:`stored_table`; anything else under
``uns[key]`` (e.g. a bare DataFrame) raises, naming what is there.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ._errors import InputDataError, ScdxError, _fmt_items

__all__ = ["target", "store", "done", "stored", "stored_table", "stored_params", "jsonable", "group_column_name",
           "GROUP_ALL", "GROUP_NONE"]

#: the group column value when ``groupby=None`` (every cell one group)
GROUP_ALL = "all"
#: the group column's name when ``groupby=None``
GROUP_NONE = "group"


def group_column_name(groupby: str | None, reserved=(), *, what: str = "result") -> str:
    """Name of a result's cell-group column: ``groupby`` itself (``None``: ``"group"``).

    ``reserved``: the result table's other column names; a ``groupby`` equal to one raises
    :class:`~scdiffx_grn.OptionError` (before any work, so callers check it first).
    """
    from ._errors import OptionError

    if groupby is None:
        return GROUP_NONE
    g = str(groupby)
    if g in reserved:
        raise OptionError(f"groupby={g!r} collides with a column of the {what} tables; rename the obs column "
                          f"(reserved names: {_fmt_items(sorted(reserved), 40)})")
    return g


def target(data, copy: bool):
    """The object a ``tl`` function writes to: ``data`` itself, or a copy when ``copy``."""
    return data.copy() if copy else data


def jsonable(v: Any):
    """``v`` in plain JSON types (numpy scalars -> Python, tuples -> lists, others -> ``str``)."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple, set, np.ndarray, pd.Index)):
        return [jsonable(x) for x in (sorted(v, key=str) if isinstance(v, set) else list(v))]
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if hasattr(v, "to_dict") and not isinstance(v, pd.DataFrame):
        return jsonable(v.to_dict())
    if isinstance(v, pd.DataFrame):
        return f"<DataFrame {v.shape[0]} x {v.shape[1]}>"
    return str(v)


def store(data, key: str, tables: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """``data.uns[key] = {"params": jsonable(params), **tables}``."""
    out = {"params": jsonable(dict(params))}
    for name, t in tables.items():
        if name == "params":
            raise ValueError("'params' is reserved")
        out[name] = t
    data.uns[key] = out


def done(data, copy: bool):
    """What a ``tl`` function returns: the modified copy when ``copy``, else ``None``."""
    return data if copy else None


def stored(data, key: str, *, what: str = "result", hint: str | None = None) -> dict:
    """The dict ``{"params", <table>: DataFrame, ...}`` a ``tl`` function stored under ``data.uns[key]``.

    Raises :class:`~scdiffx_grn.ScdxError` when there is nothing under ``key`` and
    :class:`~scdiffx_grn.InputDataError` when it holds something else than such a dict (e.g. a bare
    DataFrame), naming what is there and the call that makes it.
    """
    uns = getattr(data, "uns", None)
    if uns is None or key not in uns:
        have = [k for k in (uns.keys() if uns is not None else []) if not str(k).startswith("_")]
        raise ScdxError(f"no {what} under uns[{key!r}] ({'run ' + hint + ' first; ' if hint else ''}"
                        f"uns holds: {_fmt_items(have) or '(nothing)'})")
    v = uns[key]
    if not isinstance(v, Mapping):
        raise InputDataError(f"uns[{key!r}] holds a {type(v).__name__}, not a {what} (a dict of 'params' and tables, "
                        f"as the tl functions store it){'; rerun ' + hint if hint else ''}")
    return dict(v)


def stored_table(data, key: str, table: str, *, what: str = "result", hint: str | None = None) -> pd.DataFrame:
    """Table ``table`` of the result under ``data.uns[key]`` (see :func:`stored`)."""
    d = stored(data, key, what=what, hint=hint)
    if table in d:
        return d[table]
    raise ScdxError(f"uns[{key!r}] holds no {table!r} table (it holds {_fmt_items(k for k in d if k != 'params')})")


def stored_params(data, key: str) -> dict:
    """The parameters a ``tl`` call stored under ``data.uns[key]["params"]``."""
    return dict(stored(data, key).get("params", {}))
