"""Leaf helpers shared by the evaluation modules (imports nothing else from ``eval``).

Every read goes through :mod:`scdiffx_grn._registry`: labels with :func:`~scdiffx_grn._registry.labels`
(one precedence), raw counts with :func:`~scdiffx_grn._registry.layer_matrix` (a missing layer
raises; no fallback to ``X``), counts detected with :func:`~scdiffx_grn._registry.is_counts` and
log1p-CP10k with :func:`~scdiffx_grn._registry.log_normalize`. Option values (modalities,
directions, readouts) and the "must be one of" check come from :mod:`scdiffx_grn._vocab`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from .._errors import InputDataError
from .._registry import TARGET_SUM, log_normalize
from .._registry import counts as _counts
from .._registry import is_counts as _is_counts
from .._registry import labels as _labels
from .._registry import layer_matrix as _layer_matrix
from .._registry import input_layer
from .._vocab import READOUTS, check_option

__all__ = ["cell_indices", "is_adata", "to_csr", "is_counts", "lognormalise", "binarise", "matrix", "counts_layer", "counts_of",
           "group_labels", "Translator", "translation_readouts", "translate_call_kwargs"]

is_counts = _is_counts


@runtime_checkable
class Translator(Protocol):
    """What :func:`~scdiffx_grn.eval.evaluate_model` calls on the model and on each translating baseline.

    ``translate(mdata, direction=..., seed=..., **kwargs)`` returns an AnnData aligned to the cells
    of ``mdata`` holding the target modality (``log1p`` CP10k RNA, or ATAC probabilities).
    ``translation_readouts`` declares the readouts (of :data:`scdiffx_grn._vocab.READOUTS`) that
    ``translate`` takes as ``readout=``: ``("mean", "samples")`` for
    :class:`~scdiffx_grn.ScDiffusionX`, which is then asked for its posterior mean; ``()`` (also
    the reading of an object that declares nothing) for a translator with one point prediction,
    which is passed ``n_samples=`` instead (and may ignore it).
    """

    translation_readouts: tuple[str, ...]

    def translate(self, mdata, direction: str = "atac->rna", *, seed: int = 0, **kwargs) -> Any:
        ...


def translation_readouts(translator) -> tuple[str, ...]:
    """The readouts ``translator.translate`` declares it takes as ``readout=`` (see :class:`Translator`)."""
    declared = tuple(getattr(translator, "translation_readouts", ()))
    for r in declared:
        check_option(f"{type(translator).__name__}.translation_readouts entry", r, READOUTS)
    return declared


def translate_call_kwargs(translator, kwargs: Mapping[str, Any] | None, n_samples: int) -> dict[str, Any]:
    """Keywords of one ``translator.translate`` call of an evaluation: ``kwargs`` plus, by its declared readouts,
    ``readout="mean"`` (its point prediction, unless ``kwargs`` ask for ``"samples"``: then ``n_samples``
    samples), or for a translator without readouts ``n_samples=n_samples``."""
    kw = dict(kwargs or {})
    readouts = translation_readouts(translator)
    if not readouts:
        kw.setdefault("n_samples", n_samples)
        return kw
    kw.setdefault("readout", "mean" if "mean" in readouts else readouts[0])
    check_option("readout", kw["readout"], readouts)
    if kw["readout"] == "samples":
        kw.setdefault("n_samples", n_samples)
    return kw


def cell_indices(cells, n: int, what: str) -> np.ndarray:
    """Sorted row indices of ``cells`` (a boolean mask over ``n`` cells, or indices)."""
    c = np.asarray(cells)
    if c.dtype == bool:
        if len(c) != n:
            raise InputDataError(f"{what} mask has {len(c)} entries for {n} cells")
        return np.flatnonzero(c)
    return np.sort(c.astype(np.int64))


def is_adata(x) -> bool:
    return hasattr(x, "obs") and hasattr(x, "var") and hasattr(x, "X")


def to_csr(X) -> sp.csr_matrix:
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def matrix(x, layer: str | None, *, what: str = "data"):
    """The values of ``x``: ``layers[layer]`` (``None``: ``X``) of an AnnData, or the array itself.

    A missing layer raises naming the layers there (:func:`scdiffx_grn._registry.layer_matrix`).
    """
    if is_adata(x):
        return _layer_matrix(x, layer, what=what)
    return x


def counts_layer(data, mod: str) -> str | None:
    """The layer holding raw counts of modality ``mod``: the registered one, else ``"counts"``."""
    return input_layer(data, mod)


def counts_of(data, mod: str):
    """Raw counts of modality ``mod`` of a MuData (or of an AnnData): :func:`scdiffx_grn._registry.counts`."""
    return _counts(data, mod)


def group_labels(data, key: str | None, *, adata=None, what: str = "data") -> np.ndarray:
    """Labels ``key`` of the cells (of ``adata`` when given) as strings; ``None``: every cell ``"all"``.

    The one lookup of :func:`scdiffx_grn._registry.labels` (a missing column raises
    :class:`~scdiffx_grn.MissingLabelError` naming the columns there).
    """
    if key is None:
        n = adata.n_obs if adata is not None else data.n_obs
        return np.full(n, "all", dtype=object)
    return _labels(data, key, adata=adata, what=what).to_numpy()


def lognormalise(X, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """``log1p`` of counts normalised to ``target_sum`` per cell (over all columns given), as CSR.

    Counts are detected with :func:`scdiffx_grn._registry.is_counts` and normalised with
    :func:`scdiffx_grn._registry.log_normalize` (float32); non-count input is returned as it is
    (taken as already log-normalised); negative values raise.
    """
    X = to_csr(X)
    if not is_counts(X):
        if X.nnz and X.data.min() < 0:
            raise InputDataError("expression values are neither counts nor log-normalised (negative values)")
        return X
    return log_normalize(X, target_sum)


def binarise(X, *, seed: int = 0) -> sp.csr_matrix:
    """Binary accessibility: counts > 0, or Bernoulli draws (seeded) from probabilities in [0, 1]."""
    X = to_csr(X)
    if is_counts(X):
        B = X.copy()
        B.data = (B.data > 0).astype(np.float32)
        B.eliminate_zeros()
        return B
    if X.nnz and (X.data.min() < 0 or X.data.max() > 1):
        raise InputDataError("ATAC values are neither counts nor probabilities in [0, 1]")
    rng = np.random.default_rng(seed)
    B = X.copy()
    B.data = (rng.random(B.data.shape[0]) < B.data).astype(np.float32)
    B.eliminate_zeros()
    return B
