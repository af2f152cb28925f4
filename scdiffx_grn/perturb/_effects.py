"""Effect sizes, paired tests, FDR and cell-state summaries; ``tl.perturb`` / ``get.perturbation_df``."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from .._store import done as _done
from .._store import store as _store_result
from .._store import stored as _stored
from .._store import target as _target
from .._errors import InputDataError, MissingLabelError, OptionError, ScdxError, _fmt_items
from ._base import EngineResult, bh_fdr, group_column, group_column_of
from ._engine import Edit, collect, engine_options, iter_results, model_features, prepare_inputs
from ._options import check_engine
from ._spec import Perturbation, resolve_targets

__all__ = ["bh_fdr", "paired_stats", "effects_table", "state_table", "perturb", "perturbation_df",
           "make_edit", "TABLES", "check_engine"]

#: the tables of a ``tl.perturb`` result (``mdata.uns[key_added]``, beside ``"params"``)
TABLES = ("effects", "state", "report")


def _effect_cols(group_col: str) -> list[str]:
    return ["perturbation", group_col, "feature", "readout", "effect", "se", "stat", "pval", "fdr",
            "ctrl_mean", "pert_mean", "n_cells", "n_samples"]


def paired_stats(per_sample: np.ndarray, test: Literal["t", "wilcoxon"] = "t",
                 atol: float = 0.0) -> tuple[np.ndarray, ...]:
    """Mean, standard error, statistic and p-value across samples (axis 0).

    ``per_sample[s, ...]`` is the per-sample cell-mean of (perturbed - control); the paired
    t-test of per-sample cell-means is a one-sample t-test of these differences against 0.
    Features whose differences are all within ``atol`` of zero (exact zeros by default; set
    ``atol`` ~ 1e-5 to ignore float32 round-off between differently batched arms) get
    ``stat = 0, p = 1``.
    """
    from scipy import stats

    d = np.asarray(per_sample, dtype=np.float64)
    S = d.shape[0]
    mean = d.mean(axis=0)
    if S < 2:
        nan = np.full(mean.shape, np.nan)
        return mean, nan, nan, nan
    sd = d.std(axis=0, ddof=1)
    se = sd / np.sqrt(S)
    zero = np.all(np.abs(d) <= atol, axis=0)
    if test == "t":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
        p = 2 * stats.t.sf(np.abs(t), df=S - 1)
        stat = t
    elif test == "wilcoxon":
        flat = d.reshape(S, -1)
        stat = np.zeros(flat.shape[1])
        p = np.ones(flat.shape[1])
        nz = ~np.all(flat == 0, axis=0)
        if nz.any():
            r = stats.wilcoxon(flat[:, nz], axis=0, zero_method="wilcox")
            stat[nz], p[nz] = r.statistic, r.pvalue
        stat, p = stat.reshape(mean.shape), p.reshape(mean.shape)
    else:
        raise OptionError(f"test must be 't' or 'wilcoxon', got {test!r}")
    stat = np.where(zero, 0.0, stat)
    p = np.where(zero, 1.0, p)
    return mean, se, stat, p


def effects_table(res: EngineResult, features: Sequence[str], *, test: str = "t",
                  min_cells: int = 1, atol: float = 1e-5, group_col: str = "cell_type") -> pd.DataFrame:
    """Tidy per perturbation x group x feature effects from an :class:`EngineResult`.

    Columns: ``perturbation, <group_col>, feature, readout, effect`` (mean log-fold change of
    log-normalised expression for an RNA readout, difference in accessibility probability for
    ATAC), ``se, stat, pval, fdr`` (BH across features within perturbation x cell type),
    ``ctrl_mean, pert_mean, n_cells, n_samples``. Features whose per-sample differences are all
    within ``atol`` (float32 round-off) are not tested (``p = 1``).

    Note: the samples differ only in diffusion noise, which cancels in the paired difference, so
    the test measures uncertainty of the *model's* prediction over sampling noise; any consistent
    effect, however small, can be significant. Filter by ``|effect|`` as well as ``fdr``.

    Results of the posterior-mean readout (``res.stats == "cells"``) are tested over cells
    instead: see :func:`cell_effects_table`.
    """
    if getattr(res, "stats", "samples") == "cells":
        return cell_effects_table(res, features, min_cells=min_cells, atol=atol, group_col=group_col)
    features = np.asarray(features, dtype=object)
    frames = []
    for ei, name in enumerate(res.names):
        for gi, g in enumerate(res.group_names):
            nc = int(res.n_cells[ei, gi])
            if nc < min_cells or nc == 0:
                continue
            per = res.diff_sum[ei, :, gi, :] / nc  # S x F
            ctrl = res.ctrl_sum[ei, :, gi, :].mean(axis=0) / nc
            mean, se, stat, p = paired_stats(per, test=test, atol=atol)
            frames.append(pd.DataFrame({
                "perturbation": name, group_col: g, "feature": features, "readout": res.readout,
                "effect": mean, "se": se, "stat": stat, "pval": p, "fdr": bh_fdr(p),
                "ctrl_mean": ctrl, "pert_mean": ctrl + mean, "n_cells": nc, "n_samples": res.n_samples}))
    if not frames:
        return pd.DataFrame(columns=_effect_cols(group_col))
    out = pd.concat(frames, ignore_index=True)
    return out


def cell_stats(diff_sum: np.ndarray, diff_sq: np.ndarray, n: np.ndarray, absmax: np.ndarray | None = None,
               atol: float = 1e-5) -> tuple[np.ndarray, ...]:
    """Mean, standard error, t statistic and p-value of per-cell paired differences from running sums.

    ``diff_sum`` / ``diff_sq``: sums over the ``n`` cells of ``d`` and ``d**2`` (any shape,
    ``n`` broadcastable); a one-sample t-test of ``d`` against 0 with ``n - 1`` degrees of
    freedom. Features whose ``|d|`` is at most ``atol`` in every cell (``absmax``) get
    ``stat = 0, p = 1``; a feature with zero variance and non-zero mean gets ``p = 0``.
    ``n < 2``: standard error, statistic and p-value are NaN.
    """
    from scipy import special

    n = np.asarray(n, dtype=np.float64)
    nn = np.maximum(n, 1.0)
    mean = diff_sum / nn
    var = np.maximum(diff_sq / nn - mean ** 2, 0.0) * (nn / np.maximum(nn - 1.0, 1.0))
    se = np.sqrt(var / nn)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    df = np.broadcast_to(np.maximum(nn - 1.0, 1.0), t.shape)
    with np.errstate(invalid="ignore"):
        p = 2 * special.stdtr(df, -np.abs(t))  # two-sided t tail (scipy.stats.t.sf, faster)
    zero = (np.abs(mean) == 0) & (var == 0) if absmax is None else (absmax <= atol)
    t = np.where(zero, 0.0, t)
    p = np.where(zero, 1.0, p)
    few = np.broadcast_to(n < 2, mean.shape)
    se, t, p = (np.where(few, np.nan, a) for a in (se, t, p))
    return mean, se, t, p


def cell_effects_table(res: EngineResult, features: Sequence[str], *, min_cells: int = 1,
                       atol: float = 1e-5, group_col: str = "cell_type") -> pd.DataFrame:
    """Effects table of the posterior-mean readout: statistics over cells.

    For perturbation *e* and cell type *g*, ``d_c`` is cell *c*'s paired difference (edited -
    control readout of its posterior-mean translation; exactly 0 for cells the edit does not
    change). ``effect`` is the mean of ``d_c`` over the ``n_cells`` perturbed cells of the type,
    ``se`` its standard error over cells, ``stat``/``pval`` a one-sample t-test of the ``d_c``
    against 0 (``n_cells - 1`` df), ``fdr`` BH across features within perturbation x cell type,
    ``n_changed`` the cells whose input changed, ``n_samples`` the noises averaged per cell.
    Features with ``|d_c| <= atol`` in every cell are not tested (``p = 1``).

    The test asks whether the model predicts a consistent shift across the type's cells (a
    population-level question, not a question about sampling noise, which the posterior mean
    has none of); with many cells tiny effects become significant, so filter by ``|effect|``.
    """
    features = np.asarray(features, dtype=object)
    F = len(features)
    nc = res.n_cells.astype(np.int64)
    keep = (nc >= max(min_cells, 1))  # E x G
    if not keep.any():
        return pd.DataFrame(columns=_effect_cols(group_col) + ["n_changed"])
    from ._controls import bh_fdr_rows

    ei, gi = np.nonzero(keep)  # only the (perturbation, group) blocks with cells
    m = len(ei)
    ncs = nc[ei, gi][:, None]
    mean, se, stat, p = cell_stats(res.diff_sum[ei, 0, gi], res.diff_sq[ei, gi], ncs,
                                   None if res.diff_absmax is None else res.diff_absmax[ei, gi], atol=atol)
    ctrl = res.ctrl_sum[ei, 0, gi] / np.maximum(ncs, 1)
    q = bh_fdr_rows(p)
    nch = res.n_changed if res.n_changed is not None else np.zeros_like(nc)
    out = pd.DataFrame({
        "perturbation": np.repeat(np.asarray(res.names, dtype=object)[ei], F),
        group_col: np.repeat(np.asarray(res.group_names, dtype=object)[gi], F),
        "feature": np.tile(features, m), "readout": res.readout,
        "effect": mean.ravel(), "se": se.ravel(), "stat": stat.ravel(), "pval": p.ravel(), "fdr": q.ravel(),
        "ctrl_mean": ctrl.ravel(), "pert_mean": (ctrl + mean).ravel(),
        "n_cells": np.repeat(nc[ei, gi], F), "n_samples": res.n_samples,
        "n_changed": np.repeat(nch[ei, gi], F)})
    return out


def pca_basis(profiles: np.ndarray | None, n_comps: int = 20) -> np.ndarray | None:
    """Loadings (F x k) of a PCA of control translated profiles (n cells x F features, centred).

    The top ``k`` right singular vectors, from the eigenvectors of the smaller of the two Gram
    matrices (n x n or F x F): memory and time bounded by ``min(n, F)^2`` and ``n F min(n, F)``, no
    dense SVD over all features. Signs follow the eigensolver (the projections' norms, which
    :func:`state_table` uses, do not depend on them)."""
    if profiles is None or profiles.shape[0] < 3:
        return None
    X = np.asarray(profiles, dtype=np.float64)
    X = X - X.mean(axis=0, keepdims=True)
    n, F = X.shape
    k = int(min(n_comps, n - 1, F))
    if n < F:
        w, u = np.linalg.eigh(X @ X.T)
        top = np.argsort(w)[::-1][:k]
        s = np.sqrt(np.maximum(w[top], 0.0))
        v = (X.T @ u[:, top]) / np.where(s > 0, s, 1.0)
    else:
        w, v = np.linalg.eigh(X.T @ X)
        v = v[:, np.argsort(w)[::-1][:k]]
    return v


def state_table(res: EngineResult, basis: np.ndarray | None = None, *,
                group_col: str = "cell_type") -> pd.DataFrame:
    """Cell-state effects per perturbation x group.

    Columns: ``perturbation, <group_col>``, ``latent_shift`` (L2 norm of the mean translated-latent difference, averaged over
    samples first), ``latent_shift_se``, ``pca_shift`` (L2 norm of the mean readout difference
    projected on the PCA of control translated profiles), ``frac_type_changed`` (fraction of
    cells whose nearest reference cell type changed), ``ctrl_type_match`` (fraction of control
    cells whose nearest type is their own label), ``top_new_type`` / ``frac_to_new_type`` (the
    most common nearest type among perturbed cells other than their own, and its fraction),
    ``n_cells``.
    """
    rows = []
    K = len(res.centroid_names)
    cpos = {c: i for i, c in enumerate(res.centroid_names)}
    for ei, name in enumerate(res.names):
        for gi, g in enumerate(res.group_names):
            nc = int(res.n_cells[ei, gi])
            if nc == 0:
                continue
            zd = res.zdiff_sum[ei, :, gi, :] / nc  # S x d
            per_s_shift = np.linalg.norm(zd, axis=1)
            latent_shift = float(np.linalg.norm(zd.mean(axis=0)))
            pca_shift = np.nan
            if basis is not None:
                md = res.diff_sum[ei, :, gi, :].mean(axis=0) / nc
                pca_shift = float(np.linalg.norm(md @ basis))
            row = {"perturbation": name, group_col: g, "latent_shift": latent_shift,
                   "latent_shift_se": float(per_s_shift.std(ddof=1) / np.sqrt(len(per_s_shift)))
                   if len(per_s_shift) > 1 else np.nan,
                   "pca_shift": pca_shift, "n_cells": nc, "n_samples": res.n_samples}
            if K:
                row["frac_type_changed"] = float(res.type_changed[ei, :, gi].sum() / (nc * res.type_changed.shape[1]))
                ctrl_counts = res.ctrl_type[:, gi, :].sum(axis=0)
                own = cpos.get(g)
                row["ctrl_type_match"] = (float(ctrl_counts[own] / max(ctrl_counts.sum(), 1))
                                          if own is not None else np.nan)
                nt = res.new_type[ei, :, gi, :].sum(axis=0).astype(float)
                frac = nt / max(nt.sum(), 1)
                other = frac.copy()
                if own is not None:
                    other[own] = -1
                j = int(np.argmax(other))
                row["top_new_type"] = res.centroid_names[j] if other[j] > 0 else None
                row["frac_to_new_type"] = float(max(other[j], 0.0))
                ctrl_frac = ctrl_counts / max(ctrl_counts.sum(), 1)
                row["delta_frac_to_new_type"] = float(max(other[j], 0.0) - ctrl_frac[j]) if other[j] > 0 else 0.0
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["perturbation", group_col, "latent_shift", "n_cells"])


# --------------------------------------------------------------------------- public tool
def _cell_mask(pert_cells: Any, labels: np.ndarray | None, n: int, groupby: str | None) -> np.ndarray | None:
    if pert_cells is None:
        return None
    arr = np.asarray(pert_cells)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InputDataError(f"cell mask has {arr.shape[0]} entries, the data has {n} cells")
        return arr
    if labels is None:
        raise MissingLabelError(f"cells={list(arr)!r} names cell types but groupby is None")
    names = [str(c) for c in arr]
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise MissingLabelError(f"cell types {unknown} are not values of the {groupby!r} labels (known: "
                                f"{sorted(set(labels))[:20]}); a type without cells cannot be perturbed")
    return np.isin(labels, names)


def make_edit(pert: Perturbation, model, idx: np.ndarray, X_src, cell_mask: np.ndarray | None) -> Edit:
    """Turn a resolved :class:`Perturbation` into an engine :class:`Edit`."""
    values = None
    if pert.kind == "overexpress" and pert.overexpress_mode == "quantile" and len(idx):
        import scipy.sparse as sp

        col = X_src[:, idx]
        col = col.toarray() if sp.issparse(col) else np.asarray(col)
        values = np.quantile(col, pert.quantile, axis=0).astype(np.float32)
    return Edit(name=pert.name, idx=idx, kind=pert.kind, factor=pert.factor, values=values, cell_mask=cell_mask)


def _check_same_modality(perts: Sequence[Perturbation]) -> str:
    srcs = {p.source for p in perts}
    if len(srcs) != 1:
        raise InputDataError("perturbations run together must edit the same modality; got "
                             + ", ".join(f"{p.name}:{p.modality}" for p in perts))
    ns = {p.n_samples for p in perts}
    if len(ns) != 1:
        raise InputDataError(f"perturbations run together must share n_samples, got {sorted(ns)}")
    return srcs.pop()


def check_summary_options(alpha, n_top, min_effect) -> None:
    """Range checks of the summary's ``alpha`` (0 < alpha < 1), ``n_top`` (>= 0) and ``min_effect`` (>= 0)."""
    from .._validate import check_count, check_positive, check_probability

    check_probability("alpha", alpha)
    check_count("n_top", n_top)
    check_positive("min_effect", min_effect, allow_zero=True)


def check_on_unknown(on_unknown: str) -> None:
    if on_unknown not in ("raise", "report"):
        raise OptionError(f"on_unknown must be 'raise' or 'report', got {on_unknown!r}")


def build_edits(model, inputs, perts: Sequence[Perturbation], resolved, groupby):
    """Engine edits of resolved perturbations (perturbations with no known target are dropped)."""
    labels = np.asarray(inputs.group_names, dtype=object)[inputs.groups] if groupby is not None else None
    edits, kept = [], []
    for p, idx in zip(perts, resolved):
        if len(idx) == 0 and p.kind != "none":
            continue  # every target unknown: listed in the report with status "unknown"
        edits.append(make_edit(p, model, idx, inputs.X, _cell_mask(p.cells, labels, inputs.X.shape[0], groupby)))
        kept.append(p)
    return edits, kept


def run_perturbations(model, mdata, perts: Sequence[Perturbation], *, groupby: str | None = "cell_type",
                      tf_peaks=None, on_unknown: str = "raise", test: str = "t", use_labels: bool = False,
                      readout: str = "mean", n_pca: int = 20, **options) -> dict[str, Any]:
    """Resolve, run (:class:`~._engine.PairedEngine`, ``options`` as :func:`~._engine.engine_options`) and
    summarise several perturbations of one modality: ``{"effects", "state", "report"}``; the group
    column of the effects and state tables is named after ``groupby`` (:func:`~._base.group_column`)."""
    gcol = group_column(groupby)
    src = _check_same_modality(perts)
    genes, peaks = model_features(model)
    reports, resolved = [], []
    for p in perts:
        idx, rep = resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown=on_unknown)
        reports.append(rep)
        resolved.append(idx)
    report = pd.concat(reports, ignore_index=True)
    inputs = prepare_inputs(model, mdata, src, groupby=groupby, use_labels=use_labels)
    edits, kept = build_edits(model, inputs, perts, resolved, groupby)
    if not edits:
        return {"effects": pd.DataFrame(columns=_effect_cols(gcol)), "report": report,
                "state": pd.DataFrame(columns=["perturbation", gcol])}
    opts = engine_options(model, readout, n_samples=perts[0].n_samples, **options)
    res = collect(iter_results(model, inputs, edits, **opts), edits)
    eff = effects_table(res, peaks if src == "rna" else genes, test=test, group_col=gcol)
    state = state_table(res, pca_basis(res.ctrl_profiles, n_comps=n_pca), group_col=gcol)
    meta = pd.DataFrame([{**p.to_dict(), "targets": ";".join(p.targets)} for p in kept])
    if len(meta) and len(state):
        state = state.merge(meta[["name", "kind", "modality"]].rename(columns={"name": "perturbation"}),
                            on="perturbation", how="left")
    return {"effects": eff, "state": state, "report": report}


def perturb(model, mdata, perturbation: Perturbation | Sequence[Perturbation] | dict, *,
            key_added: str = "perturbation", groupby: str | None = "cell_type", tf_peaks=None,
            on_unknown: Literal["raise", "report"] = "raise", seed: int = 0,
            test: Literal["t", "wilcoxon"] = "t", batch_size: int = 256, batch_targets: int = 8,
            translate_kwargs: dict | None = None, use_labels: bool = False, copy: bool = False,
            readout: Literal["mean", "samples"] = "mean", n_noise: int = 1, batch_rows: int = 1024,
            skip_unchanged: bool = True, controls: Sequence[str] | None = None, alpha: float = 0.05,
            min_effect: float | None = None):
    """In-silico perturbation with paired-seed translation.

    Edits the source modality (RNA counts, or binarised ATAC peaks / a TF's motif peaks),
    re-encodes, translates to the other modality with the same noise as the unedited control,
    and summarises per perturbation x cell type x feature.

    One engine (:class:`~scdiffx_grn.perturb.PairedEngine`), two readouts (``readout``); either way
    cells whose input the edit does not change are skipped exactly (their difference is 0; they
    still count):

    - ``"mean"`` (default): each cell is translated to its posterior mean (one denoiser call per
      cell for v / x0 / flow models; ``n_noise`` noises averaged in latent space, as
      ``model.translate(readout="mean")``); statistics are over cells: ``effect`` = mean
      per-cell paired difference, ``se`` over cells, t-test of the per-cell differences, BH FDR
      within perturbation x cell type (see :func:`cell_effects_table`). ``Perturbation.n_samples``
      is not used.
    - ``"samples"``: ``n_samples`` posterior samples per cell by the sampler in
      ``translate_kwargs`` (``sampler``, ``n_steps``); statistics over samples (``test="t"`` or
      ``"wilcoxon"``), for when the model's sampling uncertainty is wanted.

    Parameters
    ----------
    model
        Trained :class:`~scdiffx_grn.ScDiffusionX` (or anything with its tensor API).
    mdata
        Paired MuData with raw counts (the registered counts layer, ``layers['counts']`` by
        default) and the ``groupby`` labels.
    perturbation
        A :class:`Perturbation`, a dict of its fields, or a list of them (same modality).
    key_added
        Results go to ``mdata.uns[key_added]``: a dict ``{"params", "effects", "state",
        "report"}`` (the storage contract of every ``tl`` function, :mod:`scdiffx_grn._store`);
        read the tables with :func:`perturbation_df` (``get.perturbation_df``).
    groupby
        Cell-type label column (looked up by :func:`scdiffx_grn._registry.labels`: ``mdata.obs``,
        then ``mdata.obs["rna:<groupby>"]``, then the modalities' obs); the group column of the
        effects and state tables is named after it. ``None``: all cells as one group ``"all"``
        in a column ``group``.
    tf_peaks
        TF -> peak table (columns ``tf``, ``peak``) for ``modality="tf"``.
    on_unknown
        ``"raise"`` (:class:`UnknownFeatureError` naming unknown targets) or ``"report"``.
    seed
        Seed of the paired noise.
    test
        ``"t"`` (paired t-test over sample cell-means) or ``"wilcoxon"`` (signed-rank).
    batch_size, batch_targets
        Sampled readout: cells per control call, and about ``batch_targets x batch_size`` edited
        cells per translation call.
    translate_kwargs
        Passed to ``model.translate_latent`` (e.g. ``{"sampler": "ddim", "n_steps": 20}`` for
        the sampled readout; the engine sets ``readout`` itself).
    use_labels
        Condition the translation on the model's label columns (default ``False``: from the
        edited modality alone, so labels do not pin cells to their type).
    copy
        ``True``: leave ``mdata`` untouched and return a modified copy holding the result;
        ``False`` (default): write into ``mdata`` and return ``None``.
    readout
        ``"mean"`` (posterior mean, default) or ``"samples"`` (sampled translations).
    n_noise
        Noises averaged per cell by the posterior-mean readout (1 default; K = 4 agrees with
        K = 1 to Spearman ~0.998 on the demo model, BENCHMARKS.md).
    batch_rows
        (cell x noise) rows per stacked translation call of the posterior-mean readout
        (``batch_size`` / ``batch_targets`` apply to the sampled readout).
    skip_unchanged
        Do not re-translate cells the edit leaves unchanged (exact; ``False``: the reference).
    controls, alpha, min_effect
        Names of perturbations of this call that are controls (e.g. knockouts of matched
        ordinary genes): the other perturbations' effects are then tested against them per group
        (columns ``log2fc, z_vs_controls, p_vs_controls, fdr_vs_controls, significant,
        n_controls`` of the effects table, significance at ``fdr_vs_controls <= alpha`` and
        ``|log2fc| >= min_effect``, default 0.1; target-level ``p_state_vs_controls`` in the state
        table), as :func:`~scdiffx_grn.tl.screen` does with the controls it draws
        (:mod:`scdiffx_grn.perturb._controls`). ``None`` (default): effects and the t-test over
        cells only, nothing is tested against controls.

    Returns
    -------
    MuData or None
        The modified copy when ``copy=True``, else ``None``.

    Raises
    ------
    OptionError
        For a bad ``readout``, ``test``, ``on_unknown``, ``n_noise`` or a ``groupby`` whose name
        collides with a table column.
    MissingLabelError
        When ``groupby`` is not a label column, has unlabelled cells, or ``cells`` names a type
        without cells.
    UnknownFeatureError
        For unknown targets (``on_unknown="raise"``).
    """
    if isinstance(perturbation, dict):
        perturbation = _from_dict(perturbation)
    perts = [perturbation] if isinstance(perturbation, Perturbation) else list(perturbation)
    if not perts:
        raise InputDataError("no perturbation given")
    names = [p.name for p in perts]
    if len(set(names)) != len(names):
        raise InputDataError(f"perturbation names must be unique, got {names}")
    from ._options import EngineOptions

    eng = EngineOptions(readout=readout, test=test, n_noise=n_noise, seed=seed, batch_rows=batch_rows,
                        batch_size=batch_size, batch_targets=batch_targets, skip_unchanged=skip_unchanged,
                        translate_kwargs=translate_kwargs, use_labels=use_labels)  # bad values raise here
    check_on_unknown(on_unknown)
    group_column(groupby)  # a colliding name raises before any work
    if controls is not None:
        controls = [str(c) for c in ([controls] if isinstance(controls, str) else controls)]
        bad = sorted(set(controls) - set(names))
        if bad:
            raise OptionError(f"controls {bad} are not names of the perturbations given ({_fmt_items(names)}); "
                              "pass the control perturbations too and name them in controls=")
    out = run_perturbations(model, mdata, perts, groupby=groupby, tf_peaks=tf_peaks, on_unknown=on_unknown,
                            seed=eng.seed, test=eng.test, batch_size=eng.batch_size, batch_targets=eng.batch_targets,
                            translate_kwargs=translate_kwargs, use_labels=eng.use_labels, readout=eng.readout,
                            n_noise=eng.n_noise, batch_rows=eng.batch_rows, skip_unchanged=eng.skip_unchanged)
    if controls is not None:
        from ._controls import DEFAULT_MIN_EFFECT, ControlCalibration

        gcol = group_column(groupby)
        eff, st = out["effects"], out["state"]
        cal = ControlCalibration(eff[eff["perturbation"].isin(controls)], st[st["perturbation"].isin(controls)],
                                 group_col=gcol, alpha=alpha,
                                 min_effect=DEFAULT_MIN_EFFECT if min_effect is None else min_effect)
        out["effects"] = cal.effects(eff).reset_index(drop=True)
        out["state"] = cal.state(st).reset_index(drop=True)
    params = {"groupby": groupby, "seed": seed, "test": test, "use_labels": use_labels, "readout": readout,
              "n_noise": int(n_noise) if readout == "mean" else None, "on_unknown": on_unknown,
              "skip_unchanged": skip_unchanged, "translate_kwargs": dict(translate_kwargs or {}),
              "controls": list(controls) if controls is not None else None, "alpha": alpha,
              "min_effect": min_effect,
              # keyed by name (anndata cannot write a list of dicts)
              "perturbations": {p.name: p.to_dict() for p in perts}}
    target = _target(mdata, copy)  # the copy is made after the run: a failed run copies nothing
    _store_result(target, key_added, {t: out[t] for t in TABLES}, params)
    return _done(target, copy)


def _from_dict(d: dict) -> Perturbation:
    import dataclasses

    known = {f.name for f in dataclasses.fields(Perturbation)}
    unknown = sorted(set(map(str, d)) - known)
    if unknown:
        raise OptionError(f"unknown perturbation field(s) {unknown}; known: {sorted(known - {'meta'})}")
    return Perturbation(**d)


def _result_tables(mdata_or_result, key: str) -> dict:
    """The result dict of :func:`perturb`: ``uns[key]`` of a MuData, or such a dict itself."""
    if isinstance(mdata_or_result, dict):
        return mdata_or_result
    if not hasattr(mdata_or_result, "uns"):
        raise InputDataError(f"expected a MuData holding a perturbation result (or the result dict), got "
                             f"{type(mdata_or_result).__name__}")
    return _stored(mdata_or_result, key, what="perturbation result", hint=f"tl.perturb(..., key_added={key!r})")


def perturbation_df(mdata_or_result, key: str = "perturbation", *, target: str | Sequence[str] | None = None,
                    cell_type: str | Sequence[str] | None = None, fdr: float | None = None,
                    table: Literal["effects", "state", "report"] = "effects") -> pd.DataFrame:
    """Tidy copy of a perturbation result.

    Parameters
    ----------
    mdata_or_result
        MuData with ``uns[key]`` from :func:`perturb` (``copy=False``, or the copy it returned),
        or a result dict ``{"effects", "state", "report"}`` (what ``perturb(copy=True)``
        returned before it returned a MuData).
    key
        ``uns`` key.
    target
        Keep these perturbation names.
    cell_type
        Keep these groups (values of the group column, which is named after ``groupby``).
    fdr
        Keep rows with ``fdr <= fdr`` (effects table only).
    table
        ``"effects"`` (default), ``"state"`` or ``"report"``.
    """
    if table not in TABLES:
        raise OptionError(f"table must be one of {TABLES}, got {table!r}")
    res = _result_tables(mdata_or_result, key)
    if table not in res:
        raise ScdxError(f"the perturbation result holds no {table!r} table (it holds "
                        f"{_fmt_items(k for k in res if k != 'params')})")
    df = res[table]
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    df = df.copy()
    if target is not None and "perturbation" in df:
        df = df[df["perturbation"].isin([target] if isinstance(target, str) else list(target))]
    gcol = group_column_of(df)
    if cell_type is not None and gcol is not None:
        df = df[df[gcol].astype(str).isin([cell_type] if isinstance(cell_type, str) else list(map(str, cell_type)))]
    if fdr is not None:
        if "fdr" not in df:
            raise ScdxError(f"the {table!r} table has no fdr column")
        df = df[df["fdr"] <= fdr]
    return df.reset_index(drop=True)
