"""Metacells: k-means on a PCA / LSI of the cells (within cell types), pooled profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError, UnknownFeatureError, _fmt_items
from .._registry import counts as _counts
from .._registry import labels as _labels
from .._registry import layer_matrix, log_normalize

__all__ = ["get_counts", "group_labels", "group_metacell_profiles", "metacell_profiles", "metacells"]


#: scale of the TF-IDF values before ``log1p`` in the ATAC LSI (Signac's ``log(1 + tf * idf * 1e4)``;
#: a TF-IDF transform of binarised peaks, not a counts-per-10k normalisation of expression)
_TFIDF_SCALE = 1e4


def _csr(X) -> sp.csr_matrix:
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    X = (sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()).astype(np.float32)
    if X.nnz and not np.isfinite(X.data).all():
        raise InputDataError("the matrix holds NaN or inf values")
    return X


def get_counts(adata, layer: str | None = "counts") -> sp.csr_matrix:
    """Raw counts of an AnnData, ``layers[layer]`` (``None``: ``X``), as CSR float32.

    A missing layer raises :class:`~scdiffx_grn.InputDataError` naming the layers there (no
    silent fallback to ``X``; :func:`scdiffx_grn._registry.layer_matrix`).
    """
    return _csr(layer_matrix(adata, layer))


def _mod_counts(mdata, mod: str) -> sp.csr_matrix:
    """Raw counts of modality ``mod`` (the layer registered by ``setup_mudata``, else ``counts``)."""
    return _csr(_counts(mdata, mod))


def group_labels(mdata, groupby: str | None) -> np.ndarray:
    """Labels of the cells as an array (:func:`scdiffx_grn._registry.labels`); ``None`` -> ``"all"``."""
    return _labels(mdata, groupby).to_numpy()


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

    if use not in ("rna", "atac"):
        raise OptionError(f"use must be 'rna' or 'atac', got {use!r}")
    labels = group_labels(mdata, groupby)
    if use == "rna":
        X = log_normalize(_mod_counts(mdata, "rna"))
    else:
        B = _mod_counts(mdata, "atac")
        B.data = (B.data > 0).astype(np.float32)
        idf = np.log1p(B.shape[0] / (1 + np.asarray(B.sum(0)).ravel())).astype(np.float32)
        tf = sp.diags(1 / np.maximum(np.asarray(B.sum(1)).ravel(), 1).astype(np.float32)) @ B
        X = (tf @ sp.diags(idf)).tocsr()
        X.data = np.log1p(X.data * _TFIDF_SCALE)
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
    # log1p CP10k of the pooled counts (totals over every gene), then the genes asked for
    rna = log_normalize(P @ _mod_counts(mdata, "rna"))[:, gpos].toarray()
    A = _mod_counts(mdata, "atac")[:, ppos]
    A.data = (A.data > 0).astype(np.float32)
    n = np.asarray(P.sum(1)).ravel()
    atac = np.asarray((P @ A).todense()) / n[:, None]
    group = pd.Series([s.split("::")[0] for s in names], index=names)
    return (pd.DataFrame(rna, index=names, columns=gnames), pd.DataFrame(atac, index=names, columns=pnames), group)


def group_metacell_profiles(X_rna, X_atac, n_metacells: int = 20, *, min_cells: int = 5, n_comps: int = 20,
                            seed: int = 0):
    """Metacell profiles of one group's cells from raw matrices (cells x features, same rows).

    k-means on a PCA of the log-normalised RNA (as :func:`metacells` does within a group), then
    the pooled profiles of :func:`metacell_profiles`: RNA log1p CP10k of the pooled counts, ATAC
    fraction of cells with the peak open. Returns dense ``(rna, atac)`` arrays (metacells x
    features); one metacell when the group has fewer than ``2 * min_cells`` cells.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    R, A = _csr(X_rna), _csr(X_atac)
    n = R.shape[0]
    kk = int(max(1, min(n_metacells, n // max(1, min_cells))))
    if kk == 1:
        lab = np.zeros(n, dtype=int)
    else:
        X = log_normalize(R)
        k = max(1, min(n_comps, min(X.shape) - 1))
        emb = TruncatedSVD(n_components=k, random_state=seed).fit_transform(X)
        emb = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)
        lab = KMeans(n_clusters=kk, n_init=3, random_state=seed).fit_predict(emb)
    P = sp.csr_matrix((np.ones(n, dtype=np.float32), (lab, np.arange(n))), shape=(kk, n))
    P = P[np.asarray(P.sum(1)).ravel() > 0]
    rna = log_normalize(P @ R).toarray()
    A.data = (A.data > 0).astype(np.float32)
    atac = np.asarray((P @ A).todense()) / np.asarray(P.sum(1))
    return rna, atac
