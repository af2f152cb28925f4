"""Reading GRN results back: the one way to get a network table from a MuData key or a DataFrame.

Every grn ``tl`` function stores ``data.uns[key_added] = {"params": {...}, <table>: df}``
(:mod:`scdiffx_grn._store`): ``"network"`` for :func:`~scdiffx_grn.grn.extract_grn` and
:func:`~scdiffx_grn.grn.tf_gene_network`, ``"candidates"`` for
:func:`~scdiffx_grn.grn.peak_gene_candidates`. The column holding cell groups is named after
``groupby`` (``groupby="cell_type"`` -> ``cell_type``; ``groupby=None`` -> ``group``, value
``"all"``); its name is kept in ``params["group_column"]`` and in the table's
``attrs["group_column"]``.

:func:`network_table` reads either form (and the bare DataFrames, or ``{cell type: DataFrame}``
dicts, written by earlier versions, whose group column is ``cell_type``); :func:`group_column`
says which column holds the groups.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

import scdiffx_grn._store as _store
from .._errors import InputDataError, OptionError, ScdxError, _fmt_items

__all__ = ["GROUP_DEFAULT", "RESERVED_COLUMNS", "group_column", "network_table"]

#: group column of a network made with ``groupby=None`` (every cell one group, value ``"all"``)
GROUP_DEFAULT = _store.GROUP_NONE
#: column names of a network table that a ``groupby`` column may not take
RESERVED_COLUMNS = ("source", "target", "weight", "distance", "method", "n_cells", "specificity", "peak", "gene",
                    "tf", "n_peaks", "evidence", "sign", "corr", "corr_p", "motif", "carried_by", "ev_distance",
                    "ev_correlation", "ev_accessibility", "ev_model", "w_distance", "w_correlation", "w_accessibility", "w_model")
_TABLES = ("network", "candidates")


def group_column_for(groupby: str | None) -> str:
    """Name of the group column of a network made with ``groupby`` (:func:`scdiffx_grn._store.group_column_name`)."""
    return _store.group_column_name(groupby, RESERVED_COLUMNS, what="network")


def group_column(df: pd.DataFrame, params: Mapping | None = None) -> str | None:
    """The column of ``df`` holding cell groups, or ``None`` when it has none.

    Looked up in order: ``params["group_column"]`` (stored by the ``tl`` function), the column
    named after ``params["groupby"]``, ``df.attrs["group_column"]``, then a ``cell_type`` column (earlier versions), then ``group``.
    """
    params = params or {}
    for cand in (params.get("group_column"), params.get("groupby"), getattr(df, "attrs", {}).get("group_column")):
        if cand is not None and cand in df.columns:
            return str(cand)
    for cand in ("cell_type", GROUP_DEFAULT):
        if cand in df.columns:
            return cand
    return None


def _with_group(df: pd.DataFrame, col: str | None) -> pd.DataFrame:
    out = df.copy(deep=False)
    out.attrs = {**dict(df.attrs), "group_column": col}
    return out


def tag(df: pd.DataFrame, col: str | None) -> pd.DataFrame:
    """``df`` with ``attrs["group_column"] = col`` (in place; returned for chaining)."""
    df.attrs["group_column"] = col
    return df


def _legacy_per_type(d: Mapping) -> bool:
    return "params" not in d and bool(d) and all(isinstance(v, pd.DataFrame) for v in d.values()) \
        and not (set(d) & set(_TABLES))


def network_table(data, key: str = "grn", *, table: str | None = None, group: str | None = None) -> pd.DataFrame:
    """The network (or candidate) table of a grn result, from a MuData / AnnData key or a DataFrame.

    Parameters
    ----------
    data
        A MuData / AnnData holding the result in ``uns[key]`` (any form: the ``{"params", "network"}``
        dict of the ``tl`` functions, a bare DataFrame or a ``{cell type: DataFrame}`` dict of
        earlier versions), the stored dict itself, or a DataFrame (returned as is).
    key
        ``uns`` key.
    table
        Table to read (``None``: ``"network"``, else ``"candidates"``, else the only table).
    group
        Rename the group column to this name (e.g. ``"cell_type"`` for readers that expect it);
        a network without groups gets the column with value ``"all"``. ``None``: keep the stored name.

    Returns
    -------
    DataFrame (a shallow copy: do not modify it in place) with ``attrs["group_column"]`` set to
    the group column (``None`` when there is none).

    Raises
    ------
    ScdxError
        No result under ``uns[key]``, or it holds no such table.
    InputDataError
        ``data`` is neither a DataFrame nor an object with ``uns``.
    """
    params: Mapping = {}
    if isinstance(data, pd.DataFrame):
        df = data
    else:
        if isinstance(data, Mapping):
            d = dict(data)
        elif hasattr(data, "uns"):
            d = _store.stored(data, key, what="GRN result", hint="tl.extract_grn / tl.tf_gene_network")
        else:
            raise InputDataError(f"expected a MuData / AnnData with uns[{key!r}] or a GRN DataFrame, got "
                                 f"{type(data).__name__}")
        if _legacy_per_type(d):
            df = pd.concat([v if "cell_type" in v else v.assign(cell_type=k) for k, v in d.items()],
                           ignore_index=True)
        else:
            params = d.get("params") or {}
            names = [table] if table is not None else [t for t in _TABLES if t in d]
            if table is None and not names:
                names = [k for k in d if k != "params" and isinstance(d[k], pd.DataFrame)][:1] or ["table"]
            name = names[0]
            if name in d:
                df = d[name]
            elif "table" in d:  # a bare legacy DataFrame
                df = d["table"]
            else:
                raise ScdxError(f"uns[{key!r}] holds no {name!r} table (it holds "
                                f"{_fmt_items(k for k in d if k != 'params') or 'nothing'})")
    if not isinstance(df, pd.DataFrame):
        raise InputDataError(f"uns[{key!r}] does not hold a table (got {type(df).__name__})")
    col = group_column(df, params)
    out = _with_group(df, col)
    if group is not None and group != col:
        if group in out.columns:
            raise OptionError(f"cannot name the group column {group!r}: the table already has such a column")
        out = out.rename(columns={col: group}) if col is not None else out.assign(**{group: _store.GROUP_ALL})
        out.attrs["group_column"] = group
    return out
