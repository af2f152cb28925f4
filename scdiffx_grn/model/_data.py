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
from .._matrix import SCAN_ROWS, _check_block, _read_rows, is_backed, validate_matrix  # noqa: F401 (re-exported)

__all__ = ["RowSource", "is_backed", "validate_matrix"]

FIT_ROWS = 1024  # rows per dense block when encoding every training cell (Trainer._fit_latents)


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
