"""Cell-row sources: dense minibatches from in-memory or backed (on-disk) matrices.

The trainer, :meth:`ScDiffusionX.get_latent` and :meth:`ScDiffusionX.translate` never densify a
whole count matrix: they ask a :class:`RowSource` for the rows of one minibatch and get a dense
``float32`` block (rows x model features, in the model's feature order).

A source wraps one of

- a scipy sparse matrix or a numpy array held in memory (``AnnData.X`` / ``layers[...]``);
- the ``X`` of an AnnData opened with ``anndata.read_h5ad(path, backed="r")`` (or a MuData whose
  modalities are such AnnData / read with ``mudata.read_h5mu(path, backed=True)``): only the
  requested rows are read from disk, in sorted order, so memory stays at one batch.

Note that anndata keeps only ``X`` on disk in backed mode (``layers`` are read into memory when the
file is opened); for out-of-core training keep the raw counts in ``X`` and register the data with
``ScDiffusionX.setup_mudata(mdata, rna_layer=None, atac_layer=None)``.

Values are validated as they are read (finite; RNA non-negative integers; ATAC non-negative): bad
values raise :class:`~scdiffx_grn.InputDataError` / :class:`~scdiffx_grn.NotCountsError` naming the
cell and feature. In-memory matrices are checked once, up front. A source over a model's registered layer is made
by :func:`scdiffx_grn.model._access.row_source`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError

__all__ = ["RowSource", "is_backed", "validate_matrix"]

SCAN_ROWS = 4096  # rows per (sparse) chunk when scanning / validating a backed matrix
FIT_ROWS = 1024  # rows per dense block when encoding every training cell (Trainer._fit_latents)


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


def _check_block(B, kind: str, name: str, obs_names=None, var_names=None) -> None:
    """Validate one block of rows (sparse or dense, data order: before any column reorder)."""
    from .._validate import check_counts, check_finite

    if kind == "rna":
        check_counts(B, name, obs_names=obs_names, var_names=var_names)
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


class RowSource:
    """Dense minibatches of selected rows of a matrix, columns in the model's feature order.

    Parameters
    ----------
    X
        scipy sparse matrix, numpy array, or a backed matrix (``AnnData.X`` of an AnnData read with
        ``backed="r"``; CSR on disk is read row-wise efficiently).
    order
        Column indices giving the model's feature order (``None``: as stored).
    rows
        Global row indices served by this source (``None``: all rows); local index ``i`` of
        :meth:`dense` is global row ``rows[i]``.
    kind
        ``"rna"`` (validated as raw counts) or ``"atac"`` (finite, non-negative).
    name, obs_names, var_names
        Used in error messages.
    """

    def __init__(self, X, *, order: np.ndarray | None = None, rows: np.ndarray | None = None,
                 kind: str = "rna", name: str = "X", obs_names: Sequence | None = None,
                 var_names: Sequence | None = None):
        if kind not in ("rna", "atac"):
            raise OptionError(f"kind must be 'rna' or 'atac', got {kind!r}")
        self.kind, self.name = kind, name
        self.obs_names = None if obs_names is None else pd.Index(obs_names)
        self.var_names = None if var_names is None else pd.Index(var_names)
        self.backed = is_backed(X)
        n_total, n_cols = X.shape
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n_obs = n_total if self.rows is None else len(self.rows)
        self.order = None if order is None or np.array_equal(order, np.arange(n_cols)) else np.asarray(order)
        self.n_vars = n_cols if self.order is None else len(self.order)
        if self.backed:
            self.X = X
            self._validated = False
        else:
            if not sp.issparse(X):
                X = np.asarray(X, dtype=np.float32)
                if X.ndim != 2:
                    raise InputDataError(f"{name} must be 2-D (cells x features), got shape {X.shape}")
            elif X.format != "csr":
                X = X.tocsr()
            if self.rows is not None:
                X = X[self.rows]
                self.obs_names = None if self.obs_names is None else self.obs_names[self.rows]
                self.rows = None
            _check_block(X, kind, name, self.obs_names, self.var_names)
            self.X = X.astype(np.float32) if sp.issparse(X) and X.dtype != np.float32 else X
            self._validated = True

    def __len__(self) -> int:
        return self.n_obs

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    def _global(self, idx: np.ndarray) -> np.ndarray:
        return idx if self.rows is None else self.rows[idx]

    def dense(self, idx) -> np.ndarray:
        """Rows ``idx`` (local indices, any order, repeats allowed) as a dense float32 array."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_obs):
            raise IndexError(f"row index out of range for {self.n_obs} rows")
        g = self._global(idx)
        if self.backed:
            uniq, inv = np.unique(g, return_inverse=True)  # sorted reads, each row once
            B = _read_rows(self.X, uniq)
            if not self._validated:
                _check_block(B, self.kind, self.name,
                             None if self.obs_names is None else self.obs_names[uniq], self.var_names)
            B = B.toarray() if sp.issparse(B) else np.asarray(B)
            B = B.astype(np.float32, copy=False)[inv]
        else:
            B = self.X[g]
            B = B.toarray() if sp.issparse(B) else np.array(B)
            B = B.astype(np.float32, copy=False)
        if self.order is not None:
            B = B[:, self.order]
        return np.ascontiguousarray(B)

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Consecutive blocks ``(start, stop, dense rows)`` covering every row once, in order."""
        batch_size = max(1, int(batch_size))
        for s in range(0, self.n_obs, batch_size):
            e = min(self.n_obs, s + batch_size)
            yield s, e, self.dense(np.arange(s, e))

    def scan(self, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One streamed pass over every row: validates the values and returns
        ``(row_sums, row_nnz)`` (float64, int64) in the model's features."""
        sums = np.zeros(self.n_obs, dtype=np.float64)
        nnz = np.zeros(self.n_obs, dtype=np.int64)
        if not self.backed and sp.issparse(self.X):
            # the order is a permutation of the columns: row sums / counts do not depend on it
            sums[:] = np.asarray(self.X.sum(1, dtype=np.float64)).ravel()
            nnz[:] = np.diff((self.X > 0).tocsr().indptr) if self.X.nnz else 0
            return sums, nnz
        if not self.backed:  # dense ndarray in memory
            sums[:] = self.X.sum(1, dtype=np.float64) if self.rows is None else self.X[self.rows].sum(1, dtype=np.float64)
            nnz[:] = (self.X > 0).sum(1) if self.rows is None else (self.X[self.rows] > 0).sum(1)
            return sums, nnz
        chunk_rows = chunk_rows or SCAN_ROWS
        for s in range(0, self.n_obs, chunk_rows):  # sparse chunks: never densified here
            e = min(self.n_obs, s + chunk_rows)
            g = self._global(np.arange(s, e))
            B = _read_rows(self.X, g)
            if not self._validated:
                _check_block(B, self.kind, self.name,
                             None if self.obs_names is None else self.obs_names[g], self.var_names)
            sums[s:e] = np.asarray(B.sum(1, dtype=np.float64)).ravel()
            nnz[s:e] = np.asarray((B > 0).sum(1)).ravel()
        self._validated = True
        return sums, nnz
