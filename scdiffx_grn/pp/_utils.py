"""Helpers shared by the preprocessing functions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._registry import layer_matrix
from .._registry import modality as _modality


def is_mudata(data) -> bool:
    """Whether ``data`` is a :class:`mudata.MuData`."""
    if not hasattr(data, "mod"):
        return False
    import mudata

    return isinstance(data, mudata.MuData)


def modality(data, name: str):
    """The AnnData of modality ``name`` of a MuData, or ``data`` itself for an AnnData."""
    return _modality(data, name)


def open_modality(data, name: str, copy: bool):
    """``(data, adata)``: ``data`` (a copy when ``copy``) and its modality ``name`` (see :func:`modality`)."""
    if copy:
        data = data.copy()
    return data, modality(data, name)


def set_matrix(adata, X, key_added: str | None) -> None:
    """Write ``X`` to ``adata.layers[key_added]``, or replace ``adata.X`` when ``key_added`` is empty."""
    if key_added:
        adata.layers[key_added] = X
    else:
        adata.X = X


def get_matrix(adata, layer: str | None, what: str | None = None):
    """``adata.layers[layer]`` (``None``: ``adata.X``); a missing layer raises (the registry's message)."""
    return layer_matrix(adata, layer, what=what)


def nnz_per_col(X) -> np.ndarray:
    """Number of non-zero entries per column."""
    if sp.issparse(X):
        X = sp.csc_matrix(X) if X.format != "csc" else X
        X = X.copy()
        X.eliminate_zeros()
        return np.diff(X.indptr)
    return np.count_nonzero(np.asarray(X), axis=0)


def nnz_per_row(X) -> np.ndarray:
    """Number of non-zero entries per row."""
    if sp.issparse(X):
        X = sp.csr_matrix(X) if X.format != "csr" else X
        X = X.copy()
        X.eliminate_zeros()
        return np.diff(X.indptr)
    return np.count_nonzero(np.asarray(X), axis=1)


def sum_rows(X) -> np.ndarray:
    """Row sums as a 1-D float array."""
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def update(data) -> None:
    """Refresh a MuData after in-place changes to its modalities (no-op for AnnData)."""
    if is_mudata(data):
        import warnings

        import mudata

        mudata.set_options(pull_on_update=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            data.update()
