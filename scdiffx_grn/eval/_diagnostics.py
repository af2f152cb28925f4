"""Does a model's translation use the modality it is given? (a check to run before trusting GRNs).

Peak -> gene scores from a model (attention, integrated gradients, peak knockout) are only as
informative as the model's dependence of the translated modality on the observed one. This
diagnostic translates a set of cells twice, once from their own source modality and once after
the source profiles were shuffled between cells, and compares the two against the observed
target modality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputDataError, _fmt_items
from .._vocab import READOUTS, check_option, split_direction
from ._baselines import RidgeTranslator
from ._common import counts_layer, group_labels
from ._metrics import rowwise_auroc, rowwise_pearson
from ._scoring import observed_target, recentre

__all__ = ["source_dependence"]


def _check_same_cells(mdata, mods) -> None:
    names = [pd.Index(mdata.mod[m].obs_names.astype(str)) for m in mods]
    for m, idx in zip(mods, names):
        if idx.has_duplicates:
            raise InputDataError(f"modality {m!r} has duplicated barcodes ({_fmt_items(idx[idx.duplicated()].unique())}); "
                                 "make obs names unique (adata.obs_names_make_unique()) first")
    if len(names[0]) != len(names[1]) or not (names[0] == names[1]).all() or len(names[0]) != mdata.n_obs:
        both = names[0].intersection(names[1])
        raise InputDataError(
            f"the rna and atac modalities hold different cells ({len(names[0])} and {len(names[1])} barcodes, "
            f"{len(both)} shared): a paired check needs the same cells in the same order in both; keep the shared "
            "cells first, e.g. muon.pp.intersect_obs(mdata)")


def _latent_errors(model, part, src: str, tgt: str, perm: np.ndarray, t_high: int, seed: int) -> dict:
    """Clean-latent error of the denoiser at a high noise level, own vs shuffled source, and the mean predictor's."""
    import torch

    from .._modelio import cell_noise
    from ..model import make_scheduler

    if getattr(model.config, "objective", "diffusion") == "flow":
        return {}
    z_src = torch.as_tensor(model.get_latent(part, src), device=model.device)
    z_tgt = torch.as_tensor(model.get_latent(part, tgt), device=model.device)
    sched = make_scheduler("ddim", model.config)
    t = torch.full((len(z_tgt),), int(t_high), dtype=torch.long, device=model.device)
    noise = cell_noise(part.obs_names.astype(str), z_tgt.shape[1], seed, 0, stream=7, device=model.device)
    x_t = sched.add_noise(z_tgt, noise, t)
    zero = torch.zeros_like(t)
    den = model.module.denoiser
    null = den.labels.null(len(z_tgt), model.device)
    out = {}
    with torch.no_grad():
        for name, zs in (("own", z_src), ("shuffled", z_src[torch.as_tensor(perm, device=model.device)])):
            args = (x_t, zs, t, zero) if tgt == "rna" else (zs, x_t, zero, t)
            o_r, o_a = den(*args, null)
            o = o_r if tgt == "rna" else o_a
            x0 = sched.to_x0_eps(o.float(), x_t, t)[0]
            out[f"latent_error_{name}"] = float(((x0 - z_tgt) ** 2).mean())
    # the training latents are normalised to mean 0: predicting 0 is the no-information predictor
    out["latent_error_mean_predictor"] = float((z_tgt ** 2).mean())
    out["latent_error_timestep"] = int(t_high)
    return out


def source_dependence(model, mdata, *, direction: str = "atac->rna", groupby: str = "cell_type",
                      cells=None, n_cells: int | None = 1000, readout: str = "mean", n_noise: int = 4,
                      sampler: str = "ddim", n_steps: int = 20, n_pcs: int = 30, t_high: int = 950,
                      seed: int = 0) -> dict:
    """Does a translation use its input? Translate cells from their own and from shuffled source profiles.

    A classifier (logistic regression on ``n_pcs`` principal components of the observed target
    modality: log1p CP10k RNA or binarised ATAC) is fitted on the cells not in the evaluated
    subsample (all cells when there are fewer than 50 of them) and labels three versions of
    the subsample: the observed target, the translation from each cell's own source profile,
    and the translation after the source profiles were permuted between cells (seeded). A
    model that uses its input gives ``accuracy_translated`` well above
    ``accuracy_shuffled_source`` and a higher per-cell agreement with the observed target
    (Pearson for RNA, AUROC for ATAC) for its own source than for a shuffled one.

    Three references sit beside the model's figures:

    - the clean-latent error of the denoiser at a high noise level (``t_high``) with the own
      vs the shuffled source, and the error of predicting the latent mean: a denoiser that
      learned ``p(target | source)`` is below the mean predictor and below its shuffled self
      (an epsilon-prediction check cannot show this);
    - a ridge point predictor (``accuracy_ridge_own`` / ``_shuffled``) fitted on the
      classifier's cells, and the linear-Gaussian posterior sampler built from it (ridge mean
      plus the residual of a random training cell: ``accuracy_ridge_sample_*``), the reference
      for single samples of a broad posterior;
    - ``verdict``: ``"uses its input: yes"`` when the own-source accuracy exceeds the
      shuffled one by more than 5 points and twice its standard error, or when the per-cell
      agreement with the observed target is higher from the own source by more than 0.01 on
      average with a paired Wilcoxon p < 1e-3 (the classifier is a weak judge of smooth ATAC
      probability profiles); else ``"uses its input: no"``, with the numbers.

    Parameters
    ----------
    model
        A trained paired :class:`~scdiffx_grn.ScDiffusionX`.
    mdata
        MuData with both modalities (the model's features, the same cells in the same order)
        and the ``groupby`` label.
    direction
        ``"atac->rna"`` or ``"rna->atac"``.
    groupby
        Label used by the classifier (labels are *not* given to the translation).
    cells
        The cells to evaluate (boolean mask or integer positions, e.g. a held-out split);
        overrides ``n_cells``. The classifier and the ridge are fitted on the other cells.
    n_cells
        Cells evaluated when ``cells`` is not given (random subsample; ``None``: all).
    readout, n_noise, sampler, n_steps
        The translation readout: ``"mean"`` (posterior mean, default) or ``"samples"`` (one
        sample by ``sampler`` with ``n_steps`` steps).
    n_pcs
        Principal components of the classifier's feature space.
    t_high
        Timestep of the clean-latent error check.
    seed
        Seed of the subsample, the permutation and the translation noise.

    Returns
    -------
    dict with ``accuracy_observed``, ``accuracy_translated``, ``accuracy_shuffled_source``, the
    same two (and the ridge's) after :func:`~scdiffx_grn.eval.recentre` to the classifier's cells'
    observed mean (``*_recentred``: a per-feature offset of the output does not decide them),
    ``majority_fraction``, ``cell_agreement_own``, ``cell_agreement_shuffled`` (mean per-cell
    Pearson / AUROC with the observed target), ``latent_error_own``, ``latent_error_shuffled``,
    ``latent_error_mean_predictor``, ``accuracy_ridge_own``, ``accuracy_ridge_shuffled``,
    ``accuracy_ridge_sample_own``, ``accuracy_ridge_sample_shuffled``, ``uses_input`` (bool),
    ``verdict``, ``readout``, ``n_cells``, ``direction``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    src, tgt = split_direction(direction)
    check_option("readout", readout, READOUTS)
    for m in (src, tgt):
        if m not in mdata.mod:
            raise InputDataError(f"source_dependence needs both modalities; {m!r} is missing "
                                 f"(has {_fmt_items(list(mdata.mod))})")
    _check_same_cells(mdata, (src, tgt))
    labels = group_labels(mdata, groupby)
    n = mdata.n_obs
    rng = np.random.default_rng(seed)
    if cells is not None:
        c = np.asarray(cells)
        sub = np.flatnonzero(c) if c.dtype == bool else np.sort(c.astype(np.int64))
        if c.dtype == bool and len(c) != n:
            raise InputDataError(f"cells mask has {len(c)} entries for {n} cells")
        if len(sub) and (sub.min() < 0 or sub.max() >= n):
            raise InputDataError(f"cell positions must be in [0, {n})")
    elif n_cells is not None and n_cells < n:
        sub = np.sort(rng.choice(n, n_cells, replace=False))
    else:
        sub = np.arange(n)
    if len(sub) < 3:
        raise InputDataError(f"need at least 3 cells, got {len(sub)}")
    rest = np.setdiff1d(np.arange(n), sub)
    ref = rest if len(rest) >= 50 else np.arange(n)

    Y = observed_target(mdata.mod[tgt], tgt, counts_layer(mdata, tgt))
    pca = PCA(n_components=int(min(n_pcs, Y.shape[1] - 1, len(ref) - 1)), random_state=seed).fit(Y[ref])
    clf = LogisticRegression(max_iter=2000).fit(pca.transform(Y[ref]), labels[ref])

    kw = dict(readout=readout, seed=seed)
    kw.update({"n_noise": n_noise} if readout == "mean" else {"n_samples": 1, "sampler": sampler, "n_steps": n_steps})
    part = mdata[sub].copy()
    own = np.asarray(model.translate(part, direction, **kw).X, float)
    perm = rng.permutation(len(sub))
    shuffled_in = mdata[sub[perm]].copy()
    # cell i's slot gets donor perm[i]'s source, under cell i's name (so the same noise as ``own``)
    shuffled_in.obs_names = part.obs_names
    for m in shuffled_in.mod.values():
        m.obs_names = part.obs_names
    shuf = np.asarray(model.translate(shuffled_in, direction, **kw).X, float)
    y = labels[sub]
    obs = Y[sub]

    ref_mean = Y[ref].mean(0)

    def acc(X, recentred: bool = False):
        return float(np.mean(clf.predict(pca.transform(recentre(X, ref_mean) if recentred else X)) == y))

    agree = rowwise_pearson if tgt == "rna" else rowwise_auroc
    out = {"direction": direction, "readout": readout, "n_cells": int(len(sub)),
           "accuracy_observed": acc(obs), "accuracy_translated": acc(own),
           "accuracy_shuffled_source": acc(shuf),
           "accuracy_translated_recentred": acc(own, True), "accuracy_shuffled_source_recentred": acc(shuf, True),
           "majority_fraction": float(pd.Series(y).value_counts(normalize=True).iloc[0]),
           "cell_agreement_own": float(np.nanmean(agree(obs, own))),
           "cell_agreement_shuffled": float(np.nanmean(agree(obs, shuf)))}
    if hasattr(model, "module") and hasattr(model, "config"):
        out.update(_latent_errors(model, part, src, tgt, perm, t_high, seed))
    # ridge point predictor and the linear-Gaussian posterior sampler built on it
    ref_m = mdata[ref].copy()
    ridge = RidgeTranslator(n_comps=n_pcs, seed=seed).fit(ref_m)
    r_own = np.asarray(ridge.translate(part, direction).X, float)
    r_shuf = r_own[perm]
    resid = Y[ref] - np.asarray(ridge.translate(ref_m, direction).X, float)
    pick = rng.integers(0, len(ref), size=len(sub))
    out.update({"accuracy_ridge_own": acc(r_own), "accuracy_ridge_shuffled": acc(r_shuf),
                "accuracy_ridge_own_recentred": acc(r_own, True), "accuracy_ridge_shuffled_recentred": acc(r_shuf, True),
                "accuracy_ridge_sample_own": acc(r_own + resid[pick]),
                "accuracy_ridge_sample_shuffled": acc(r_shuf + resid[pick])})
    from scipy.stats import wilcoxon

    gap = out["accuracy_translated"] - out["accuracy_shuffled_source"]
    p = (out["accuracy_translated"] + out["accuracy_shuffled_source"]) / 2
    se = float(np.sqrt(max(2 * p * (1 - p) / len(sub), 1e-12)))
    d_agree = agree(obs, own) - agree(obs, shuf)
    d_agree = d_agree[np.isfinite(d_agree)]
    p_agree = float(wilcoxon(d_agree).pvalue) if len(d_agree) >= 10 and np.any(d_agree != 0) else 1.0
    out["cell_agreement_gap_pvalue"] = p_agree
    by_class = bool(gap > max(0.05, 2 * se))
    by_agree = bool(np.mean(d_agree) > 0.01 and p_agree < 1e-3) if len(d_agree) else False
    uses = by_class or by_agree
    out["uses_input"] = uses
    what = "AUROC" if tgt == "atac" else "Pearson"
    out["verdict"] = (f"uses its input: {'yes' if uses else 'no'} ({direction}, {readout} readout: "
                      f"{100 * out['accuracy_translated']:.1f} % classified correctly from the own source vs "
                      f"{100 * out['accuracy_shuffled_source']:.1f} % from shuffled sources (ridge "
                      f"{100 * out['accuracy_ridge_own']:.1f} / {100 * out['accuracy_ridge_shuffled']:.1f} %); "
                      f"per-cell {what} {out['cell_agreement_own']:.3f} own vs {out['cell_agreement_shuffled']:.3f} "
                      f"shuffled, paired p = {p_agree:.1g})")
    return out
