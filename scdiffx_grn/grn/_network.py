"""Reading GRN results back: the one way to get a network table from a MuData key or a DataFrame.

Every grn ``tl`` function stores ``data.uns[key_added] = {"params": {...}, <table>: df}``
(:mod:`scdiffx_grn._store`): ``"network"`` for :func:`~scdiffx_grn.grn.extract_grn` and
:func:`~scdiffx_grn.grn.tf_gene_network`, ``"candidates"`` for
:func:`~scdiffx_grn.grn.peak_gene_candidates`. The column holding cell groups is named after
``groupby`` (``groupby="cell_type"`` -> ``cell_type``; ``groupby=None`` -> ``group``, value
``"all"``); its name is kept in ``params["group_column"]`` and in the table's
``attrs["group_column"]``.

:func:`network_table` reads a stored result (from ``uns[key]``, or the stored dict itself) or a
DataFrame; anything else under ``uns[key]`` raises. :func:`group_column` says which column holds
the groups.
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

    Where each form says it: a stored result in ``params["group_column"]`` (written by the ``tl``
    functions), a table returned by this package in ``df.attrs["group_column"]``; a table from
    elsewhere (e.g. read from a file) has it under the name of the default ``groupby``,
    ``cell_type``, or ``group`` (a network of all cells).
    """
    params = params or {}
    for cand in (params.get("group_column"), getattr(df, "attrs", {}).get("group_column")):
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


def network_table(data, key: str = "grn", *, table: str | None = None, group: str | None = None) -> pd.DataFrame:
    """The network (or candidate) table of a grn result, from a MuData / AnnData key or a DataFrame.

    Parameters
    ----------
    data
        A MuData / AnnData holding the result in ``uns[key]`` (the ``{"params", "network"}`` dict
        of the ``tl`` functions), the stored dict itself, or a DataFrame (returned as is).
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
        ``data`` is neither a DataFrame nor an object with ``uns``, or ``uns[key]`` holds something
        else than a stored result.
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
        if "params" not in d:
            raise InputDataError(f"uns[{key!r}] is not a stored GRN result (a dict of 'params' and tables, as "
                                 f"tl.extract_grn / tl.tf_gene_network store it; it holds "
                                 f"{_fmt_items(map(str, d)) or 'nothing'})")
        params = d["params"] or {}
        names = [table] if table is not None else [t for t in _TABLES if t in d]
        if table is None and not names:
            names = [k for k in d if k != "params" and isinstance(d[k], pd.DataFrame)][:1] or ["network"]
        name = names[0]
        if name not in d:
            raise ScdxError(f"uns[{key!r}] holds no {name!r} table (it holds "
                            f"{_fmt_items(k for k in d if k != 'params') or 'nothing'})")
        df = d[name]
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
