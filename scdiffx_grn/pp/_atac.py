"""ATAC transforms: binarisation, TF-IDF and LSI."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._errors import InputDataError
from .._settings import settings
from .._store import store
from .._validate import check_finite
from ._utils import get_matrix, is_mudata, open_modality, set_matrix

__all__ = ["binarize", "tfidf", "lsi"]


def _binary(X, threshold: float):
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
        out.data = (out.data > threshold).astype(np.float32)
        out.eliminate_zeros()
        return out
    return (np.asarray(X) > threshold).astype(np.float32)


def binarize(data, *, layer: str | None = None, threshold: float = 0.0, key_added: str | None = None,
             copy: bool = False):
    """Binarise accessibility: values above ``threshold`` become 1, others 0.

    Parameters
    ----------
    data
        AnnData, or a MuData (its ``"atac"`` modality is used).
    layer
        Read this layer instead of X (e.g. ``"counts"``).
    threshold
        Values strictly greater than this become 1.
    key_added
        Write the result to ``layers[key_added]``; by default it replaces X.
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.
    """
    data, adata = open_modality(data, "atac", copy)
    X = get_matrix(adata, layer, what="the ATAC data")
    check_finite(X, f"binarize input ({layer or 'X'})")
    out = _binary(X, threshold)
    set_matrix(adata, out, key_added)
    return data if copy else None


def _tfidf_matrix(X, scale_factor: float, log_tf: bool, log_idf: bool):
    X = sp.csr_matrix(X, dtype=np.float64, copy=True) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, np.float64))
    if X.nnz and X.data.min() < 0:
        raise InputDataError("tfidf needs non-negative accessibility values")
    rs = np.asarray(X.sum(axis=1)).ravel()
    cs = np.asarray(X.sum(axis=0)).ravel()
    inv_rs = np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 0)
    idf = np.divide(X.shape[0], cs, out=np.zeros_like(cs), where=cs > 0)
    if log_idf:
        idf = np.log1p(idf)
    tf = sp.diags(inv_rs) @ X
    if log_tf:
        tf.data = np.log1p(tf.data * scale_factor)
        out = tf @ sp.diags(idf)
    else:
        out = tf @ sp.diags(idf)
        out.data = np.log1p(out.data * scale_factor)
    return sp.csr_matrix(out, dtype=np.float32)


def tfidf(data, *, layer: str | None = None, scale_factor: float = 1e4, log_tf: bool = False,
          log_idf: bool = False, key_added: str | None = None, copy: bool = False):
    """TF-IDF normalisation of accessibility (Signac's default, ``log1p(tf * idf * scale)``).

    ``tf`` is each cell's values divided by its total; ``idf`` is the number of cells
    divided by each peak's total (0 for empty peaks).

    Parameters
    ----------
    data
        AnnData, or a MuData (its ``"atac"`` modality is used).
    layer
        Read this layer instead of X (e.g. ``"counts"``).
    scale_factor
        Multiplier before the log.
    log_tf, log_idf
        Log-transform TF (``log1p(tf * scale)``, then times idf) and/or IDF (``log1p(idf)``).
    key_added
        Write the result to ``layers[key_added]``; by default it replaces X.
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.
    """
    data, adata = open_modality(data, "atac", copy)
    X = get_matrix(adata, layer, what="the ATAC data")
    check_finite(X, f"tfidf input ({layer or 'X'})")
    out = _tfidf_matrix(X, scale_factor, log_tf, log_idf)
    set_matrix(adata, out, key_added)
    return data if copy else None


def lsi(data, n_comps: int = 50, *, layer: str | None = None, use_tfidf: bool = True, key_added: str = "X_lsi",
        seed: int | None = None, copy: bool = False):
    """Latent semantic indexing: truncated SVD of (TF-IDF transformed) accessibility.

    Writes ``obsm[key_added]`` (cells x ``n_comps``, the SVD scores), ``varm["LSI"]`` (peak
    loadings) and ``uns["lsi"]`` (``variance_ratio``, ``n_comps``, ``params``). For a MuData the
    scores also go to ``mdata.obsm[key_added]``. The first component usually tracks
    sequencing depth; drop it downstream if needed.

    Parameters
    ----------
    data
        AnnData, or a MuData (its ``"atac"`` modality is used).
    n_comps
        Number of components (capped at ``min(n_cells, n_peaks) - 1``).
    layer
        Read this layer instead of X.
    use_tfidf
        Apply :func:`tfidf` to the input first (without storing it); set ``False`` when X is
        already TF-IDF transformed.
    key_added
        obsm key for the scores.
    seed
        Random seed of the randomized SVD (``None`` -> ``settings.seed``).
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.

    Raises
    ------
    InputDataError
        When the matrix is too small for any component.
    """
    from sklearn.decomposition import TruncatedSVD

    data, adata = open_modality(data, "atac", copy)
    X = get_matrix(adata, layer, what="the ATAC data")
    check_finite(X, f"lsi input ({layer or 'X'})")
    M = _tfidf_matrix(X, 1e4, False, False) if use_tfidf else X
    k = int(min(n_comps, min(adata.shape) - 1))
    if k < 1:
        raise InputDataError(f"lsi: data of shape {adata.shape} is too small for any component")
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=settings.seed if seed is None else seed)
    Z = svd.fit_transform(M).astype(np.float32)
    adata.obsm[key_added] = Z
    adata.varm["LSI"] = svd.components_.T.astype(np.float32)
    store(adata, "lsi", {"variance_ratio": svd.explained_variance_ratio_, "n_comps": k},
          {"n_comps": n_comps, "layer": layer, "use_tfidf": use_tfidf, "key_added": key_added,
           "seed": settings.seed if seed is None else seed})
    if is_mudata(data):
        data.obsm[key_added] = Z
    return data if copy else None
