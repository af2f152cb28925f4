"""Metacells: k-means on a PCA / LSI of the cells (within cell types), pooled profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, MissingLabelError, UnknownFeatureError, _fmt_items

__all__ = ["metacells", "metacell_profiles", "get_counts", "obs_labels"]


def get_counts(adata, layer: str | None = "counts"):
    """Raw counts of an AnnData (``layers[layer]`` if present, else ``X``) as CSR float32."""
    X = adata.layers[layer] if (layer is not None and layer in adata.layers) else adata.X
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    X = X.astype(np.float32)
    if X.nnz and not np.isfinite(X.data).all():
        raise InputDataError("the matrix holds NaN or inf values")
    return X


def obs_labels(mdata, groupby: str | None) -> np.ndarray:
    """Labels of the cells (``mdata.obs[groupby]`` or the rna modality's obs); ``None`` -> 'all'."""
    n = mdata.n_obs
    if groupby is None:
        return np.full(n, "all", dtype=object)
    for obs in (mdata.obs, mdata.mod["rna"].obs, mdata.mod["atac"].obs):
        if groupby in obs.columns:
            return obs[groupby].astype(str).to_numpy()
    raise MissingLabelError(f"label column {groupby!r} is in neither mdata.obs nor the modalities' obs")


def _lognorm(X: sp.csr_matrix, target: float = 1e4) -> sp.csr_matrix:
    tot = np.asarray(X.sum(1)).ravel()
    tot[tot == 0] = 1
    Y = sp.diags((target / tot).astype(np.float32)) @ X
    Y = Y.tocsr()
    Y.data = np.log1p(Y.data)
    return Y


def metacells(mdata, groupby: str | None = "cell_type", n_metacells: int = 10, *, use: str = "rna",
              n_comps: int = 20, min_cells: int = 5, seed: int = 0) -> np.ndarray:
    """Assign cells to metacells: k-means on a PCA (RNA) or LSI (ATAC) embedding within each group.

    Parameters
    ----------
    mdata
        Paired MuData (``rna`` / ``atac``).
    groupby
        Cell label column; metacells never mix groups. ``None``: one group.
    n_metacells
        Metacells per group (fewer when a group has fewer than ``n_metacells * min_cells`` cells).
    use
        ``"rna"`` (PCA of log-normalised counts) or ``"atac"`` (LSI of TF-IDF binarised counts).
    n_comps, min_cells, seed
        Embedding size, minimal cells per metacell, k-means seed.

    Returns
    -------
    Array of metacell names ``"<group>::<k>"`` per cell.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    labels = obs_labels(mdata, groupby)
    if use == "rna":
        X = _lognorm(get_counts(mdata.mod["rna"]))
    elif use == "atac":
        B = get_counts(mdata.mod["atac"])
        B.data = (B.data > 0).astype(np.float32)
        idf = np.log1p(B.shape[0] / (1 + np.asarray(B.sum(0)).ravel())).astype(np.float32)
        tf = sp.diags(1 / np.maximum(np.asarray(B.sum(1)).ravel(), 1).astype(np.float32)) @ B
        X = (tf @ sp.diags(idf)).tocsr()
        X.data = np.log1p(X.data * 1e4)
    else:
        raise InputDataError(f"use must be 'rna' or 'atac', got {use!r}")
    k = max(1, min(n_comps, min(X.shape) - 1))
    emb = TruncatedSVD(n_components=k, random_state=seed).fit_transform(X) if k >= 1 and min(X.shape) > 1 \
        else np.asarray(X.todense())
    if use == "atac" and emb.shape[1] > 1:
        emb = emb[:, 1:]  # first LSI component tracks depth
    emb = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)
    out = np.empty(len(labels), dtype=object)
    for g in pd.unique(labels):
        idx = np.flatnonzero(labels == g)
        kk = int(max(1, min(n_metacells, len(idx) // max(1, min_cells))))
        if kk == 1:
            lab = np.zeros(len(idx), dtype=int)
        else:
            lab = KMeans(n_clusters=kk, n_init=3, random_state=seed).fit_predict(emb[idx])
        out[idx] = [f"{g}::{j}" for j in lab]
    return out


def metacell_profiles(mdata, assignment: np.ndarray, *, genes=None, peaks=None):
    """Pooled metacell profiles.

    Returns
    -------
    rna
        DataFrame metacells x genes: log1p of counts-per-10k of the pooled counts.
    atac
        DataFrame metacells x peaks: fraction of cells with the peak accessible.
    group
        Series metacell -> group (the part before ``"::"``).
    """
    assignment = np.asarray(assignment).astype(str)
    names, inv = np.unique(assignment, return_inverse=True)
    P = sp.csr_matrix((np.ones(len(inv), dtype=np.float32), (inv, np.arange(len(inv)))),
                      shape=(len(names), len(inv)))
    rna_ad, atac_ad = mdata.mod["rna"], mdata.mod["atac"]

    def _sel(ad, feats, kind):
        if feats is None:
            return np.arange(ad.n_vars), ad.var_names
        feats = pd.Index([str(f) for f in feats])
        pos = ad.var_names.get_indexer(feats)
        if (pos < 0).any():
            raise UnknownFeatureError(f"{kind} not in the data: {_fmt_items(feats[pos < 0])}")
        return pos, feats

    gpos, gnames = _sel(rna_ad, genes, "genes")
    ppos, pnames = _sel(atac_ad, peaks, "peaks")
    R = get_counts(rna_ad)
    tot = np.asarray(R.sum(1)).ravel()
    pooled = P @ R[:, gpos]
    pooled_tot = P @ tot
    pooled_tot[pooled_tot == 0] = 1
    rna = np.log1p(np.asarray(pooled.todense()) / pooled_tot[:, None] * 1e4)
    A = get_counts(atac_ad)[:, ppos]
    A.data = (A.data > 0).astype(np.float32)
    n = np.asarray(P.sum(1)).ravel()
    atac = np.asarray((P @ A).todense()) / n[:, None]
    group = pd.Series([s.split("::")[0] for s in names], index=names)
    return (pd.DataFrame(rna, index=names, columns=gnames), pd.DataFrame(atac, index=names, columns=pnames), group)
