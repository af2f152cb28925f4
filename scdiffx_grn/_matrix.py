"""Count matrices in memory or on disk: is a matrix backed, read rows of it, validate it in chunks.

Shared by the registry (``setup_mudata`` validates every layer) and the model's row sources
(:mod:`scdiffx_grn.model._data`), so neither imports the other.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from ._errors import InputDataError

__all__ = ["SCAN_ROWS", "is_backed", "validate_matrix"]

SCAN_ROWS = 4096  # rows per (sparse) chunk when scanning / validating a backed matrix


def is_backed(X) -> bool:
    """Whether ``X`` is an on-disk matrix (anndata backed sparse dataset or h5py / zarr array)."""
    if sp.issparse(X) or isinstance(X, np.ndarray):
        return False
    try:
        from anndata.abc import CSCDataset, CSRDataset

        if isinstance(X, (CSRDataset, CSCDataset)):
            return True
    except ImportError:  # pragma: no cover - older anndata
        pass
    mod = type(X).__module__
    return mod.startswith(("h5py", "zarr", "anndata"))


# the model's likelihood is on counts: loading other values (require_counts=False) does not make them usable
MODEL_COUNTS_FIX = ("the model needs raw RNA counts: pass them (e.g. in layers['counts'], registered with "
                    "setup_mudata(rna_layer=...)); normalised values, e.g. loaded with require_counts=False, "
                    "cannot be used here")


def _check_block(B, kind: str, name: str, obs_names=None, var_names=None) -> None:
    """Validate one block of rows (sparse or dense, data order: before any column reorder)."""
    from ._validate import check_counts, check_finite

    if kind == "rna":
        check_counts(B, name, obs_names=obs_names, var_names=var_names, fix=MODEL_COUNTS_FIX)
        return
    check_finite(B, name, obs_names=obs_names, var_names=var_names)
    if sp.issparse(B):
        B = B.tocoo()
        data, rows, cols = np.asarray(B.data), B.row, B.col
        neg = np.flatnonzero(data < 0)
        if len(neg):
            r, c = int(rows[neg[0]]), int(cols[neg[0]])
            v = data[neg[0]]
    else:
        arr = np.asarray(B)
        neg = np.flatnonzero(arr.ravel() < 0)
        if len(neg):
            r, c = divmod(int(neg[0]), arr.shape[1])
            v = arr.ravel()[neg[0]]
    if len(neg):
        rn = f"cell {obs_names[r]!r}" if obs_names is not None else f"row {r}"
        cn = f"feature {var_names[c]!r}" if var_names is not None else f"column {c}"
        raise InputDataError(
            f"{name} has {len(neg)} negative values, e.g. {float(v)!r} at {rn}, {cn}: ATAC counts or "
            "binary accessibility (non-negative) are expected"
        )


def validate_matrix(X, name: str, kind: str, *, obs_names: Sequence | None = None,
                    var_names: Sequence | None = None, chunk_rows: int | None = None) -> None:
    """Check a count matrix in memory or on disk (streamed in chunks of rows).

    ``kind="rna"``: finite non-negative integers (:class:`~scdiffx_grn.NotCountsError` otherwise);
    ``kind="atac"``: finite and non-negative. Messages name the first offending cell and feature.
    """
    if not is_backed(X):
        _check_block(X if sp.issparse(X) else np.asarray(X), kind, name, obs_names, var_names)
        return
    n = X.shape[0]
    chunk_rows = chunk_rows or SCAN_ROWS
    for s in range(0, n, chunk_rows):
        e = min(n, s + chunk_rows)
        _check_block(_read_rows(X, np.arange(s, e)), kind, name,
                     None if obs_names is None else obs_names[s:e], var_names)


def _read_rows(X, sorted_rows: np.ndarray):
    """Rows of ``X`` (sorted, unique global indices) as a scipy sparse matrix or ndarray."""
    if len(sorted_rows) and sorted_rows[-1] - sorted_rows[0] + 1 == len(sorted_rows):
        out = X[int(sorted_rows[0]):int(sorted_rows[-1]) + 1]  # contiguous: one slice read
    else:
        out = X[sorted_rows]
    if not sp.issparse(out):
        out = np.asarray(out)
    return out
