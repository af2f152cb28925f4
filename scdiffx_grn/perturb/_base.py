"""Pieces shared by the paired engine and its reductions (a leaf module: it imports no other ``perturb`` module).

- :class:`EngineInputs` (made by :func:`~scdiffx_grn.perturb.prepare_inputs`) and
  :class:`EngineResult` (the group sums of :func:`~scdiffx_grn.perturb.iter_results`,
  :func:`~scdiffx_grn.perturb.run_mean` / :func:`~scdiffx_grn.perturb.run_paired`);
- :func:`engine_autocast`, :func:`cell_names`, :func:`nearest`: engine helpers;
- :func:`bh_fdr`: Benjamini-Hochberg q-values (shared by the effects and the control calibration);
- :func:`group_column` / :func:`group_column_of`: the name of the cell-group column of every
  perturbation table (named after ``groupby``, as every ``tl`` result; see :mod:`scdiffx_grn._store`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._store import group_column_name

__all__ = ["bh_fdr", "EngineInputs", "EngineResult", "engine_autocast", "cell_names", "nearest",
           "group_column", "group_column_of", "RESERVED_COLUMNS"]

#: columns of the effects / state / summary tables (a ``groupby`` column cannot take these names)
RESERVED_COLUMNS = frozenset({
    "perturbation", "feature", "readout", "effect", "se", "stat", "pval", "fdr", "ctrl_mean", "pert_mean",
    "n_cells", "n_samples", "n_changed", "latent_shift", "latent_shift_se", "pca_shift", "frac_type_changed",
    "ctrl_type_match", "top_new_type", "frac_to_new_type", "delta_frac_to_new_type", "kind", "modality",
    "n_features", "n_sig", "n_up", "n_down", "top_up", "top_down", "max_abs_effect", "target", "status",
    "reason", "peak", "gene", "log2fc", "z_vs_controls", "p_vs_controls", "fdr_vs_controls", "significant",
    "n_controls", "n_sig_t", "max_abs_log2fc", "latent_shift_ctrl_mean", "latent_shift_z", "p_state_vs_controls",
    "frac_type_changed_ctrl_mean", "p_type_vs_controls", "fdr_state_vs_controls", "moves_state"})


def bh_fdr(pvals: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN and is not counted).

    Parameters
    ----------
    pvals
        1-D array of p-values.

    Returns
    -------
    numpy.ndarray
        q-values, same shape; ``q_i = min_{j >= i} (m / j) p_(j)`` capped at 1.
    """
    p = np.asarray(pvals, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.clip(q, 0.0, 1.0)
    res = np.empty(m)
    res[order] = q
    out[ok] = res
    return out


def group_column(groupby: str | None) -> str:
    """Name of the cell-group column of perturbation tables (:func:`scdiffx_grn._store.group_column_name`).

    Raises :class:`~scdiffx_grn.OptionError` when ``groupby`` would collide with another column.
    """
    return group_column_name(groupby, RESERVED_COLUMNS, what="perturbation")


def group_column_of(df) -> str | None:
    """The group column of a perturbation table (effects, state, screen summary): the column right
    after ``perturbation``, where every table of this package puts it. ``None`` when there is none."""
    cols = [str(c) for c in getattr(df, "columns", [])]
    if len(cols) > 1 and cols[0] == "perturbation" and cols[1] not in RESERVED_COLUMNS:
        return cols[1]
    return None


@dataclass
class EngineInputs:
    """Everything the engine needs, in the model's feature order (see :func:`prepare_inputs`)."""

    src: str
    X: Any
    cond: Any
    groups: np.ndarray
    group_names: list[str]
    centroids: Any = None
    centroid_names: list[str] = field(default_factory=list)
    cell_names: np.ndarray | None = None


@dataclass
class EngineResult:
    """Per-group sums accumulated by the engines.

    Arrays are numpy; ``S`` samples, ``G`` groups, ``F`` readout features, ``d`` latent size,
    ``K`` reference cell types.

    Attributes
    ----------
    names
        Perturbation names (order of the first axis of per-edit arrays).
    diff_sum, ctrl_sum
        (E, S, G, F) sums over perturbed cells of (perturbed - control) readout and of control.
    n_cells
        (E, G) number of perturbed cells per group.
    zdiff_sum
        (E, S, G, d) sums of translated-latent differences.
    type_changed
        (E, S, G) number of cells whose nearest reference type changed.
    new_type
        (E, S, G, K) nearest reference type counts of perturbed cells.
    ctrl_type
        (S, G, K) nearest reference type counts of control cells (all cells).
    ctrl_profiles
        (n_pca_cells, F) control readout averaged over samples, for a PCA basis.
    """

    names: list[str]
    readout: str
    group_names: list[str]
    centroid_names: list[str]
    diff_sum: np.ndarray
    ctrl_sum: np.ndarray
    n_cells: np.ndarray
    zdiff_sum: np.ndarray
    type_changed: np.ndarray
    new_type: np.ndarray
    ctrl_type: np.ndarray
    ctrl_profiles: np.ndarray | None
    n_samples: int
    #: ``"samples"`` (readout ``"samples"``: tests over noise samples) or ``"cells"`` (readout ``"mean"``:
    #: tests over cells, from the fields below)
    stats: str = "samples"
    #: (E, G, F) sums over perturbed cells of squared differences (averaged over samples first)
    diff_sq: np.ndarray | None = None
    #: (E, G, F) maximum |difference| over perturbed cells (averaged over samples first)
    diff_absmax: np.ndarray | None = None
    #: (E, G) cells whose input the edit changed (the others were skipped: difference 0)
    n_changed: np.ndarray | None = None


def nearest(z, centroids):
    """Index of the nearest centroid of each row of ``z`` (Euclidean)."""
    import torch

    return torch.cdist(z.float(), centroids.to(z.device).float()).argmin(dim=1)


def engine_autocast(model, enabled: bool | None = None):
    """bf16 autocast on CUDA (``enabled=None``: on for CUDA models); a no-op on CPU (float32)."""
    import torch

    dev = getattr(model, "device", None)
    dev = torch.device(dev) if dev is not None else torch.device("cpu")
    on = (dev.type == "cuda") if enabled is None else (bool(enabled) and dev.type == "cuda")
    return torch.autocast("cuda", dtype=torch.bfloat16) if on else nullcontext()


def cell_names(inputs, n: int) -> np.ndarray:
    """The obs names of the engine's cells (row numbers when the inputs carry none): the noise keys."""
    names = getattr(inputs, "cell_names", None)
    if names is None:
        return np.array([str(i) for i in range(n)], dtype=object)
    return np.asarray(names).astype(str)
