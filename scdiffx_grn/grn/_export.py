"""GRN results: tidy getters, networkx conversion, file export (csv / parquet / graphml)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputDataError, MissingLabelError, OptionError, _fmt_items
from .._io import atomic_path
from ._network import group_column, network_table, tag

__all__ = ["as_edges", "grn_df", "read_grn", "to_networkx", "top_edges", "write_grn"]


def as_edges(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with decoupler-style ``source, target, weight`` columns first.

    Accepts ``peak, gene`` (peak -> gene) or ``tf, gene`` tables as well.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputDataError(f"a GRN must be a DataFrame, got {type(df).__name__}")
    d = df.copy()
    if "source" not in d:
        for c in ("peak", "tf"):
            if c in d:
                d["source"] = d[c]
                break
    if "target" not in d and "gene" in d:
        d["target"] = d["gene"]
    missing = [c for c in ("source", "target") if c not in d]
    if missing:
        raise InputDataError(f"GRN table lacks columns {missing}; has {list(df.columns)}")
    if "weight" not in d:
        d["weight"] = 1.0
    first = ["source", "target", "weight"]
    return tag(d[first + [c for c in d.columns if c not in first]], group_column(df))


def top_edges(df: pd.DataFrame, top_k: int | None, *, by_abs: bool = True, group: str | None = None,
              column: str = "weight") -> pd.DataFrame:
    """Top ``top_k`` edges by (absolute) ``column``, per group when there is a group column.

    ``group``: the group column (``None``: :func:`scdiffx_grn.grn.group_column` of ``df``).
    ``column``: the ranking column (``"weight"``; ``"specificity"`` ranks by its signed value).
    """
    from .._validate import check_count

    if top_k is not None:
        top_k = check_count("top_k", top_k, 1)
    gcol = group or group_column(df)
    if column not in df:
        raise OptionError(f"cannot rank edges by {column!r}: the network has no such column "
                          f"(columns: {_fmt_items(df.columns)})")
    d = df.copy()
    key = d[column].abs() if by_abs and column != "specificity" else d[column]
    d = d.assign(_k=key.to_numpy()).sort_values("_k", ascending=False, kind="stable")
    if top_k is not None:
        d = d.groupby(gcol, sort=False, observed=True).head(top_k) if gcol in d else d.head(top_k)
    return tag(d.drop(columns="_k").reset_index(drop=True), gcol if gcol in d else None)


def grn_df(mdata, key: str = "grn", cell_type=None, top_k: int | None = None,
           rank_by: str | None = None) -> pd.DataFrame:
    """Tidy copy of a GRN stored by ``tl.extract_grn`` / ``tl.tf_gene_network``.

    Parameters
    ----------
    mdata
        MuData (the table is read from ``mdata.uns[key]``, see :func:`network_table`) or a GRN
        DataFrame.
    key
        ``uns`` key.
    cell_type
        A group (cell type) or list of groups to keep (``None``: all). Groups are read from the
        group column the network was stored with (named after ``groupby``, see
        :func:`group_column`).
    top_k
        Keep the ``top_k`` edges per group, ranked by ``rank_by``.
    rank_by
        ``"specificity"`` (the edges that set the group apart; the default when the network has
        a ``specificity`` column, i.e. several groups) or ``"weight"`` (|weight|: a group's
        strongest links, mostly the same pairs in every group).

    Returns
    -------
    DataFrame ``source, target, weight, <group column>, ...`` sorted by group then the ranking
    (``attrs["group_column"]`` names the group column).
    """
    df = as_edges(network_table(mdata, key))
    gcol = group_column(df)
    if cell_type is not None:
        if gcol is None:
            raise MissingLabelError("the GRN has no group (cell_type) column")
        wanted = [cell_type] if isinstance(cell_type, str) else [str(c) for c in cell_type]
        missing = [c for c in wanted if c not in set(df[gcol].astype(str))]
        if missing:
            raise MissingLabelError(f"cell types not in the GRN's {gcol!r} column: {_fmt_items(missing)}; "
                                    f"available: {_fmt_items(pd.unique(df[gcol]))}")
        df = df[df[gcol].astype(str).isin(wanted)]
    if rank_by is None:
        rank_by = "specificity" if "specificity" in df else "weight"
    if rank_by not in ("specificity", "weight"):
        raise OptionError(f"rank_by must be 'specificity' or 'weight', got {rank_by!r}")
    df = top_edges(df, top_k, group=gcol, column=rank_by)
    if gcol is not None:
        df = df.sort_values(gcol, kind="stable").reset_index(drop=True)
    return tag(df, gcol)


def to_networkx(df_or_mdata, cell_type=None, *, key: str = "grn", top_k: int | None = None):
    """Convert a GRN to a :class:`networkx.DiGraph`.

    Nodes get a ``kind`` attribute (``"source"``/``"target"``, or ``"both"``); every other
    column becomes an edge attribute. With several groups (cell types) and ``cell_type=None`` a
    :class:`networkx.MultiDiGraph` keyed by group is returned.
    """
    import networkx as nx

    df = grn_df(df_or_mdata, key=key, cell_type=cell_type, top_k=top_k)
    gcol = group_column(df)
    multi = gcol is not None and df[gcol].nunique() > 1
    G = nx.MultiDiGraph() if multi else nx.DiGraph()
    src, tgt = set(df["source"].astype(str)), set(df["target"].astype(str))
    for n in src | tgt:
        G.add_node(n, kind="both" if (n in src and n in tgt) else ("source" if n in src else "target"))
    attrs = [c for c in df.columns if c not in ("source", "target")]
    for row in df.itertuples(index=False):
        d = row._asdict()
        a = {k: _py(d[k]) for k in attrs}
        if multi:
            G.add_edge(str(d["source"]), str(d["target"]), key=str(d[gcol]), **a)
        else:
            G.add_edge(str(d["source"]), str(d["target"]), **a)
    return G


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_grn(df, path, *, per_cell_type: bool = False, key: str = "grn") -> list[Path]:
    """Write a GRN table atomically; the format follows the suffix.

    ``df``: a GRN DataFrame or a MuData holding one (``uns[key]``). ``.csv`` / ``.tsv`` /
    ``.parquet`` write the table; ``.graphml`` writes a graph with all columns as edge attributes
    (a multigraph keyed by the group column, e.g. ``cell_type``), or one file per group
    (``<stem>.<group>.graphml``) with ``per_cell_type=True``.

    Returns
    -------
    The paths written.
    """
    df = as_edges(network_table(df, key))
    gcol = group_column(df)
    path = Path(os.fspath(path))
    suf = path.suffix.lower()
    if suf == ".gz":
        suf = Path(path.stem).suffix.lower()
    if suf in (".csv", ".tsv"):
        with atomic_path(path, suffix=path.suffix) as tmp:
            df.to_csv(tmp, sep="," if suf == ".csv" else "\t", index=False)
        return [path]
    if suf == ".parquet":
        with atomic_path(path, suffix=".parquet") as tmp:
            df.to_parquet(tmp, index=False)
        return [path]
    if suf == ".graphml":
        import networkx as nx

        if per_cell_type and gcol is not None:
            out = []
            for ct, sub in df.groupby(gcol, sort=True, observed=True):
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(ct))
                p = path.with_name(f"{path.stem}.{safe}.graphml")
                G = to_networkx(tag(sub, gcol))
                with atomic_path(p, suffix=".graphml") as tmp:
                    nx.write_graphml(G, tmp)
                out.append(p)
            return out
        G = to_networkx(df)
        with atomic_path(path, suffix=".graphml") as tmp:
            nx.write_graphml(G, tmp)
        return [path]
    raise OptionError(f"unknown GRN file type {path.suffix!r} for {path.name}; use .csv, .tsv, .parquet or .graphml")


def read_grn(path) -> pd.DataFrame:
    """Read a GRN written by :func:`write_grn` back into a tidy DataFrame."""
    path = Path(os.fspath(path))
    suf = path.suffix.lower()
    if suf == ".gz":
        suf = Path(path.stem).suffix.lower()
    if suf in (".csv", ".tsv"):
        return pd.read_csv(path, sep="," if suf == ".csv" else "\t")
    if suf == ".parquet":
        return pd.read_parquet(path)
    if suf == ".graphml":
        import networkx as nx

        G = nx.read_graphml(path)
        rows = [dict(source=u, target=v, **d) for u, v, d in G.edges(data=True)]
        return as_edges(pd.DataFrame(rows))
    raise OptionError(f"unknown GRN file type {path.suffix!r} for {path.name}; use .csv, .tsv, .parquet or .graphml")
