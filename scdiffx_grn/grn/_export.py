"""GRN results: tidy getters, networkx conversion, file export (csv / parquet / graphml)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputDataError, MissingLabelError, ScdxError, _fmt_items
from .._io import atomic_path

__all__ = ["grn_df", "to_networkx", "write_grn", "read_grn", "as_edges", "top_edges"]


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
    return d[first + [c for c in d.columns if c not in first]]


def top_edges(df: pd.DataFrame, top_k: int | None, *, by_abs: bool = True) -> pd.DataFrame:
    """Top ``top_k`` edges by (absolute) weight, per cell type when there is a ``cell_type`` column."""
    d = df.copy()
    key = d["weight"].abs() if by_abs else d["weight"]
    d = d.assign(_k=key.to_numpy()).sort_values("_k", ascending=False, kind="stable")
    if top_k is not None:
        d = d.groupby("cell_type", sort=False, observed=True).head(top_k) if "cell_type" in d else d.head(top_k)
    return d.drop(columns="_k").reset_index(drop=True)


def grn_df(mdata, key: str = "grn", cell_type=None, top_k: int | None = None) -> pd.DataFrame:
    """Tidy copy of a GRN stored by ``tl.extract_grn`` / ``tl.tf_gene_network``.

    Parameters
    ----------
    mdata
        MuData (the table is read from ``mdata.uns[key]``) or a GRN DataFrame.
    key
        ``uns`` key.
    cell_type
        A cell type or list of cell types to keep (``None``: all).
    top_k
        Keep the ``top_k`` edges by absolute weight per cell type.

    Returns
    -------
    DataFrame ``source, target, weight, cell_type, ...`` sorted by cell type then |weight|.
    """
    if isinstance(mdata, pd.DataFrame):
        df = mdata
    else:
        if key not in mdata.uns:
            raise ScdxError(f"mdata.uns has no {key!r}; available keys: {_fmt_items(mdata.uns.keys())}")
        df = mdata.uns[key]
        if isinstance(df, dict):
            df = pd.concat([as_edges(v).assign(cell_type=k) if "cell_type" not in v else v for k, v in df.items()],
                           ignore_index=True)
    df = as_edges(df)
    if cell_type is not None:
        if "cell_type" not in df:
            raise MissingLabelError("the GRN has no cell_type column")
        wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
        missing = [c for c in wanted if c not in set(df["cell_type"].astype(str))]
        if missing:
            raise MissingLabelError(f"cell types not in the GRN: {_fmt_items(missing)}; "
                                    f"available: {_fmt_items(pd.unique(df['cell_type']))}")
        df = df[df["cell_type"].astype(str).isin(wanted)]
    df = top_edges(df, top_k)
    if "cell_type" in df:
        df = df.sort_values("cell_type", kind="stable").reset_index(drop=True)
    return df


def to_networkx(df_or_mdata, cell_type=None, *, key: str = "grn", top_k: int | None = None):
    """Convert a GRN to a :class:`networkx.DiGraph`.

    Nodes get a ``kind`` attribute (``"source"``/``"target"``, or ``"both"``); every other
    column becomes an edge attribute. With several cell types and ``cell_type=None`` a
    :class:`networkx.MultiDiGraph` keyed by cell type is returned.
    """
    import networkx as nx

    df = grn_df(df_or_mdata, key=key, cell_type=cell_type, top_k=top_k)
    multi = "cell_type" in df and df["cell_type"].nunique() > 1
    G = nx.MultiDiGraph() if multi else nx.DiGraph()
    src, tgt = set(df["source"].astype(str)), set(df["target"].astype(str))
    for n in src | tgt:
        G.add_node(n, kind="both" if (n in src and n in tgt) else ("source" if n in src else "target"))
    attrs = [c for c in df.columns if c not in ("source", "target")]
    for row in df.itertuples(index=False):
        d = row._asdict()
        a = {k: _py(d[k]) for k in attrs}
        if multi:
            G.add_edge(str(d["source"]), str(d["target"]), key=str(d["cell_type"]), **a)
        else:
            G.add_edge(str(d["source"]), str(d["target"]), **a)
    return G


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_grn(df, path, *, per_cell_type: bool = False) -> list[Path]:
    """Write a GRN table atomically; the format follows the suffix.

    ``.csv`` / ``.tsv`` / ``.parquet`` write the table; ``.graphml`` writes a graph with all
    columns as edge attributes (a multigraph keyed by ``cell_type``), or one file per cell type
    (``<stem>.<cell type>.graphml``) with ``per_cell_type=True``.

    Returns
    -------
    The paths written.
    """
    df = as_edges(df)
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

        if per_cell_type and "cell_type" in df:
            out = []
            for ct, sub in df.groupby("cell_type", sort=True, observed=True):
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(ct))
                p = path.with_name(f"{path.stem}.{safe}.graphml")
                G = to_networkx(sub)
                with atomic_path(p, suffix=".graphml") as tmp:
                    nx.write_graphml(G, tmp)
                out.append(p)
            return out
        G = to_networkx(df)
        with atomic_path(path, suffix=".graphml") as tmp:
            nx.write_graphml(G, tmp)
        return [path]
    raise ScdxError(f"unknown GRN file type {path.suffix!r} for {path.name}; use .csv, .tsv, .parquet or .graphml")


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
    raise ScdxError(f"unknown GRN file type {path.suffix!r} for {path.name}")
