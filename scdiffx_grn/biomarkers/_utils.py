"""Shared helpers: pick the RNA modality, get log-normalised expression, prepare networks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, MissingLabelError, UnknownFeatureError, _fmt_items

__all__ = [
    "atac_of",
    "bh",
    "de_table",
    "lognorm_adata",
    "looks_like_counts",
    "obs_labels",
    "prepare_net",
    "rna_of",
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


def obs_labels(data, key: str, adata=None) -> pd.Series:
    """Labels ``key`` for the cells of ``adata`` (looked up in adata.obs, then data.obs)."""
    adata = rna_of(data) if adata is None else adata
    if key in adata.obs:
        return adata.obs[key].astype(str)
    if hasattr(data, "obs") and key in data.obs:
        lab = data.obs[key]
        return lab.reindex(adata.obs_names).astype(str)
    cols = list(adata.obs.columns)
    raise MissingLabelError(f"label column {key!r} not found in obs; available: {_fmt_items(cols)}")


def looks_like_counts(X, n: int = 2000) -> bool:
    """True when a sample of the non-zero values is non-negative integers with some > 1 total."""
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if vals.size == 0:
        return False
    rng = np.random.default_rng(0)
    sub = vals if vals.size <= n else vals[rng.choice(vals.size, n, replace=False)]
    sub = np.asarray(sub, dtype=float)
    if not np.all(np.isfinite(sub)):
        raise InputDataError("expression contains NaN or inf values")
    return bool(np.all(sub >= 0) and np.allclose(sub, np.round(sub)))


def _lognorm(X, target_sum: float = 1e4):
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    tot = np.asarray(X.sum(axis=1)).ravel()
    tot[tot == 0] = 1.0
    scale = (target_sum / tot).astype(np.float32)
    if sp.issparse(X):
        X = sp.diags(scale) @ X
        X.data = np.log1p(X.data)
        return sp.csr_matrix(X)
    return np.log1p(X * scale[:, None])


def lognorm_adata(data, layer: str | None = None, *, copy_obs: bool = True):
    """A new AnnData with log-normalised expression of the RNA of ``data``.

    Detection: ``layer`` (if given) or ``X`` is used; integer non-negative values are treated as
    counts and normalised (total 1e4 per cell, ``log1p``); anything else is assumed to be already
    log-normalised (e.g. the mean expression returned by ``model.translate``). When ``X`` is not
    counts but ``layers['counts']`` exists and ``X`` has negative values (scaled data), the counts
    are normalised instead.
    """
    import anndata as ad

    a = rna_of(data)
    if layer is not None:
        if layer not in a.layers:
            raise InputDataError(f"layer {layer!r} not in the RNA layers ({list(a.layers)})")
        X = a.layers[layer]
    else:
        X = a.X
    if X is None:
        raise InputDataError("the RNA AnnData has no expression matrix X")
    if looks_like_counts(X):
        X = _lognorm(X)
    else:
        vals = X.data if sp.issparse(X) else np.asarray(X)
        if layer is None and np.nanmin(vals) < 0 and "counts" in a.layers:
            X = _lognorm(a.layers["counts"])
        else:
            X = X.astype(np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    obs = a.obs.copy() if copy_obs else pd.DataFrame(index=a.obs_names.astype(str))
    out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)))
    if hasattr(data, "mod"):  # pull MuData-level labels into obs
        for c in data.obs.columns:
            if c not in out.obs.columns:
                base = c.split(":", 1)[-1]
                if base not in out.obs.columns:
                    out.obs[base] = data.obs[c].reindex(out.obs_names).values
    return out


def prepare_net(net: pd.DataFrame, genes, *, tmin: int = 5, cell_type: str | None = None,
                what: str = "network") -> pd.DataFrame:
    """Validate a TF -> gene network against data genes; return ``source, target, weight``.

    Accepts decoupler columns (source, target, weight) or pySCENIC ones (TF, target, importance).
    A ``cell_type`` column selects one cell type (``cell_type``) or, when None, edges are averaged
    over cell types. Raises when no target is among the data genes, or no source keeps ``tmin``.
    """
    if not isinstance(net, pd.DataFrame):
        raise InputDataError(f"{what} must be a DataFrame, got {type(net).__name__}")
    n = net.rename(columns={"TF": "source", "importance": "weight"})
    missing = [c for c in ("source", "target") if c not in n.columns]
    if missing:
        raise InputDataError(f"{what} lacks columns {missing}; has {list(net.columns)}")
    if "weight" not in n.columns:
        n = n.assign(weight=1.0)
    if "cell_type" in n.columns:
        if cell_type is not None:
            sel = n["cell_type"].astype(str) == str(cell_type)
            if not sel.any():
                raise MissingLabelError(
                    f"cell type {cell_type!r} not in {what}; has {_fmt_items(n['cell_type'].unique())}")
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
            f"genes e.g. {_fmt_items(genes[:5])}). Check the organism / symbol case."
        )
    n = n[in_data]
    sizes = n.groupby("source")["target"].size()
    keep = sizes.index[sizes >= tmin]
    if len(keep) == 0:
        raise InputDataError(
            f"no source of the {what} has >= tmin={tmin} targets among the data genes "
            f"({int(in_data.sum())} edges overlap; largest regulon {int(sizes.max())} targets). Lower tmin."
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

    if groupby not in ln.obs:
        raise MissingLabelError(f"label column {groupby!r} not found; available: {_fmt_items(ln.obs.columns)}")
    lab = ln.obs[groupby].astype(str)
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
