"""Shared helpers: pick the RNA modality, get log-normalised expression, prepare networks.

Labels, layers, the count check and the log-normalisation come from :mod:`scdiffx_grn._registry`
(``labels``, ``layer_matrix``, ``is_counts``, ``log_normalize``): the same cells are grouped and
normalised as in every other package, and a missing layer or label raises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, MissingLabelError, UnknownFeatureError, _fmt_items
from .._registry import is_counts, labels, layer_matrix, log_normalize
from .._validate import symbol_case_hint
from .._store import stored

__all__ = [
    "atac_of",
    "bh",
    "de_table",
    "group_labels",
    "lognorm_adata",
    "prepare_net",
    "rna_of",
    "stored_result",
]


def rna_of(data):
    """The RNA AnnData of a MuData (``mod['rna']``), or the AnnData itself."""
    if hasattr(data, "mod"):
        if "rna" not in data.mod:
            raise InputDataError(f"MuData has no 'rna' modality (modalities: {list(data.mod)})")
        return data.mod["rna"]
    return data


def atac_of(data):
    """The ATAC AnnData of a MuData, or None."""
    if hasattr(data, "mod") and "atac" in data.mod:
        return data.mod["atac"]
    return None


def group_labels(data, key: str, adata=None) -> pd.Series:
    """Labels ``key`` for the cells of ``adata`` (default: the RNA modality), as strings.

    The one lookup of :func:`scdiffx_grn._registry.labels` (MuData obs, then the modalities' obs);
    a missing column raises :class:`~scdiffx_grn.MissingLabelError` naming the columns there.
    """
    return labels(data, key, adata=rna_of(data) if adata is None else adata)


def stored_result(data, key: str, tables, *, what: str, hint: str) -> pd.DataFrame:
    """The first of ``tables`` stored under ``data.uns[key]`` (``data`` itself when a DataFrame)."""
    if isinstance(data, pd.DataFrame):
        return data
    d = stored(data, key, what=what, hint=hint)
    for name in tables:
        if name in d and isinstance(d[name], pd.DataFrame):
            return d[name]
    have = [k for k in d if k != "params"]
    raise InputDataError(f"uns[{key!r}] holds no {what} (tables: {_fmt_items(have) or 'none'}); run {hint} first")


def lognorm_adata(data, layer: str | None = None, *, copy_obs: bool = True):
    """A new AnnData with log-normalised expression of the RNA of ``data``.

    ``layer`` (``None``: ``X``) is read with :func:`scdiffx_grn._registry.layer_matrix` (a missing
    layer raises naming the layers there). Counts (:func:`scdiffx_grn._registry.is_counts`) are
    normalised with :func:`scdiffx_grn._registry.log_normalize` (total 1e4 per cell, ``log1p``);
    anything else is taken as already log-normalised (e.g. the mean expression returned by
    ``model.translate``). Negative values (scaled data) and NaN / inf raise.
    """
    import anndata as ad

    a = rna_of(data)
    where = f"the RNA layers[{layer!r}]" if layer is not None else "the RNA X"
    X = layer_matrix(a, layer, what="the RNA modality")
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    vals = X.data if sp.issparse(X) else np.asarray(X)
    if vals.size and not np.isfinite(vals).all():
        raise InputDataError(f"{where} holds NaN or inf values")
    if is_counts(X):
        X = log_normalize(X)
    else:
        if vals.size and vals.min() < 0:
            raise InputDataError(
                f"{where} holds negative values (scaled data?): it is neither counts nor log-normalised; "
                f"pass layer= the layer holding raw counts (layers: {_fmt_items(a.layers.keys()) or 'none'})")
        X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    obs = a.obs.copy() if copy_obs else pd.DataFrame(index=a.obs_names.astype(str))
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)))


_NET_FIX = "use the network of the data's organism (organism={org!r}; CLI --organism {org})"


def prepare_net(net: pd.DataFrame, genes, *, tmin: int = 5, cell_type: str | None = None,
                what: str = "network", group_col: str = "cell_type") -> pd.DataFrame:
    """Validate a TF -> gene network against data genes; return ``source, target, weight``.

    Accepts decoupler columns (source, target, weight) or pySCENIC ones (TF, target, importance).
    A group column ``group_col`` selects one group (``cell_type``) or, when None, edges are averaged
    over groups. Raises when no target is among the data genes, or no source keeps ``tmin``.
    """
    if not isinstance(net, pd.DataFrame):
        raise InputDataError(f"{what} must be a DataFrame, got {type(net).__name__}")
    n = net.rename(columns={"TF": "source", "importance": "weight"})
    missing = [c for c in ("source", "target") if c not in n.columns]
    if missing:
        raise InputDataError(f"{what} lacks columns {missing}; has {list(net.columns)}")
    if "weight" not in n.columns:
        n = n.assign(weight=1.0)
    if cell_type is not None:
        if group_col not in n.columns:
            raise InputDataError(f"{what} has no group column {group_col!r} to select {cell_type!r} from "
                                 f"(columns: {_fmt_items(n.columns)})")
        sel = n[group_col].astype(str) == str(cell_type)
        if not sel.any():
            raise MissingLabelError(
                f"cell type {cell_type!r} not in {what}; has {_fmt_items(n[group_col].unique())}")
        n = n[sel]
    n = n[["source", "target", "weight"]].copy()
    n["source"] = n["source"].astype(str)
    n["target"] = n["target"].astype(str)
    n["weight"] = pd.to_numeric(n["weight"], errors="coerce").fillna(0.0).astype(float)
    n = n.groupby(["source", "target"], as_index=False, sort=True)["weight"].mean()
    genes = pd.Index(genes).astype(str)
    in_data = n["target"].isin(genes)
    if not in_data.any():
        raise UnknownFeatureError(
            f"no overlap between the {what}'s targets and the data genes: 0 of {n['target'].nunique()} "
            f"targets found among {len(genes)} genes (targets e.g. {_fmt_items(n['target'].unique()[:5])}; "
            f"genes e.g. {_fmt_items(genes[:5])})." + (symbol_case_hint(n["target"], genes, "the network's", _NET_FIX)
                                                       or " Check the organism / symbol case.")
        )
    net_targets = n["target"]
    n = n[in_data]
    sizes = n.groupby("source")["target"].size()
    keep = sizes.index[sizes >= tmin]
    if len(keep) == 0:
        hint = symbol_case_hint(net_targets, genes, "the network's", _NET_FIX)
        raise InputDataError(
            f"no source of the {what} has >= tmin={tmin} targets among the data genes "
            f"({int(in_data.sum())} edges overlap; largest regulon {int(sizes.max())} targets)."
            + (hint or " Lower tmin, or use a network with more of the data's genes.")
        )
    return n[n["source"].isin(keep)].reset_index(drop=True)


def bh(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN kept)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    q = p[ok]
    order = np.argsort(q)
    ranked = q[order] * len(q) / (np.arange(len(q)) + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty_like(q)
    res[order] = np.clip(ranked, 0, 1)
    out[ok] = res
    return out


def de_table(ln, groupby: str, *, method: str = "wilcoxon", min_cells: int = 3) -> pd.DataFrame:
    """Per-group differential expression (one group vs rest) on log-normalised AnnData ``ln``.

    Runs ``scanpy.tl.rank_genes_groups`` on a shallow copy; groups with fewer than ``min_cells``
    cells are left out. Returns a tidy table ``group, gene, score, logfc, pvalue, padj, de_rank``.
    """
    import scanpy as sc

    lab = labels(ln, groupby)
    counts = lab.value_counts()
    groups = sorted(counts.index[counts >= min_cells])
    if len(groups) < 2:
        raise InputDataError(
            f"need at least 2 groups of {groupby!r} with >= {min_cells} cells; have {counts.to_dict()}")
    a = ln[lab.isin(groups).values].copy()
    a.obs = pd.DataFrame({groupby: pd.Categorical(lab[lab.isin(groups)].values, categories=groups)},
                         index=a.obs_names)
    sc.tl.rank_genes_groups(a, groupby, method=method, use_raw=False, key_added="_de", pts=False)
    df = sc.get.rank_genes_groups_df(a, group=None, key="_de")
    if "group" not in df.columns:  # two groups only -> scanpy may omit the column
        df.insert(0, "group", groups[0])
    df = df.rename(columns={"names": "gene", "scores": "score", "logfoldchanges": "logfc",
                            "pvals": "pvalue", "pvals_adj": "padj"})
    df["group"] = df["group"].astype(str)
    df["logfc"] = _log2_fold_change(a, groupby, df)
    df["de_rank"] = df.groupby("group")["score"].rank(ascending=False, method="first").astype(int)
    return df[["group", "gene", "score", "logfc", "pvalue", "padj", "de_rank"]].reset_index(drop=True)


def _log2_fold_change(a, groupby: str, df: pd.DataFrame, pseudocount: float = 1.0) -> np.ndarray:
    """``log2(mean expm1(x) in group + pc) - log2(mean expm1(x) in rest + pc)`` per row of ``df``.

    scanpy's ``logfoldchanges`` adds 1e-9 before the log, which gives |logFC| ~ 25 for genes
    that are (almost) absent from one side; a pseudocount of 1 on the normalised scale (the
    Seurat convention) keeps fold changes of barely-expressed genes near 0.
    """
    X = a.X
    X = X.expm1() if sp.issparse(X) else np.expm1(np.asarray(X, dtype=np.float64))
    lab = a.obs[groupby].astype(str).to_numpy()
    total = np.asarray(X.sum(0)).ravel()
    gi = a.var_names.get_indexer(df["gene"])
    out = np.full(len(df), np.nan)
    for g in pd.unique(df["group"]):
        m = lab == g
        s_g = np.asarray(X[m].sum(0)).ravel()
        mean_g = s_g / max(int(m.sum()), 1)
        mean_r = (total - s_g) / max(int((~m).sum()), 1)
        lfc = np.log2(mean_g + pseudocount) - np.log2(mean_r + pseudocount)
        rows = np.flatnonzero(df["group"].to_numpy() == g)
        out[rows] = lfc[gi[rows]]
    return out
