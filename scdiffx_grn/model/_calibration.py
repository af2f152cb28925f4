"""Post-hoc calibration of the RNA->ATAC posterior-mean translation (no retraining).

The mean readout decodes the posterior-mean latent once. The ATAC decoder is a sigmoid of a
network of the latent, convex where peaks are rare, so decoding the mean latent gives lower
probabilities than the mean of the decoded posterior (Jensen): on the shipped mouse checkpoint
the mean predicted accessibility of the held-out cells is 0.0027 against an observed 0.018, and
the sigmoid flattens the between-cell differences of such small probabilities. A calibration
maps each predicted logit ``L`` of peak ``p`` to

    logit p' = offset + prior_weight * c_p + amplitude * (L - c_p)

with ``c_p`` the mean predicted logit of peak ``p`` over the fitting cells, fitted by Bernoulli
log-likelihood of the observed (binarised) peaks of cells the model was not trained on (the
``val`` cells of the checkpoint's split). ``method`` picks the free parameters:

- ``"offset"`` (default): ``offset`` only (``prior_weight = amplitude = 1``: ``logit p' = L + offset``).
  One monotone map of every logit, so the order of the peaks within a cell and of the cells
  within a peak is unchanged: per-cell and per-peak AUROC are exactly those of the uncalibrated
  predictions;
- ``"amplitude"``: ``amplitude`` only (``offset = 0``, ``prior_weight = 1``): deviations from the
  peak's mean logit scaled by one number; changes the order of peaks within a cell;
- ``"affine"``: all three.

A monotone map cannot move either AUROC. ``method="head"`` is a learned readout instead of a map:
the decoder was trained on the latents of observed cells, not on posterior means, so the head
refits the last step for them, ``logit p' = scale * L + z W + b`` (``z``: the posterior-mean
latent, ``W``: latent x peaks, ``b`` per peak; started at the decoder, ``scale = 1``, ``W = b = 0``),
fitted by Bernoulli log-likelihood on the training cells with early stopping on the val cells
(:func:`fit_readout_head`). On the shipped mouse checkpoint it lifts the RNA->ATAC per-peak
AUROC from 0.615 to 0.628 and the per-cell AUROC from 0.670 to 0.684 on the test cells
(``analyses/translation_calibration.py``, BENCHMARKS.md).

:func:`fit_logit_calibration` and :func:`apply_logit_calibration` work on arrays;
:meth:`ScDiffusionX.calibrate_translation` fits a calibration on cells of a MuData and stores it
in ``model.translation_calibration`` (saved with the checkpoint in ``config.json``; a head's arrays in
``translation_head.pt``), and
``model.translate(..., calibrated=True)`` applies it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import CheckpointError, InputDataError, OptionError, ScdxError
from .._vocab import check_option, split_direction

__all__ = ["CALIBRATION_METHODS", "CALIBRATED_DIRECTIONS", "fit_logit_calibration", "apply_logit_calibration",
           "calibration_cells", "check_calibration_record", "bernoulli_loglik", "calibrated_logits",
           "fit_readout_head", "HEAD_ARRAYS"]

CALIBRATION_METHODS: tuple[str, ...] = ("offset", "amplitude", "affine", "head")
#: the arrays of a ``"head"`` record (saved beside ``config.json`` in ``translation_head.pt``)
HEAD_ARRAYS: tuple[str, ...] = ("weight", "bias")
#: directions a calibration can be fitted for (ATAC->RNA: a softmax amplitude did not help, BENCHMARKS.md)
CALIBRATED_DIRECTIONS: tuple[str, ...] = ("rna->atac",)
_FREE = {"offset": (True, False, False), "amplitude": (False, False, True), "affine": (True, True, True)}


def bernoulli_loglik(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood per entry of binary ``y`` under ``sigmoid(logits)`` (stable in the logits)."""
    L = np.asarray(logits, np.float64)
    Y = np.asarray(y, np.float64)
    return float(np.mean(Y * L - np.logaddexp(0.0, L)))


def calibrated_logits(logits, centre, record: dict[str, Any], z=None):
    """``offset + prior_weight * centre + amplitude * (logits - centre)`` of a fitted ``record``; the
    arithmetic only, for numpy arrays and torch tensors alike (``centre`` of the same kind). A
    ``"head"`` record: ``scale * logits + z @ weight + bias`` (``z``: the latents; ``centre``: unused;
    ``weight`` / ``bias`` of the same kind as ``z``)."""
    if record["method"] == "head":
        return float(record["scale"]) * logits + z @ record["weight"] + record["bias"]
    off, pw, amp = (float(record[k]) for k in ("offset", "prior_weight", "amplitude"))
    return off + pw * centre + amp * (logits - centre)


def apply_logit_calibration(logits, record: dict[str, Any]) -> np.ndarray:
    """Calibrated logits (:func:`calibrated_logits`) of a fitted map ``record``, checked against its peaks
    (a ``"head"`` record also needs the latents: ``calibrated_logits(logits, None, record, z)``)."""
    if record.get("method") == "head":
        raise OptionError("a readout head maps latents as well as logits: use calibrated_logits(logits, None, "
                          "record, z) with the posterior-mean latents z")
    L = np.asarray(logits, np.float64)
    c = np.asarray(record["centre"], np.float64)
    if L.ndim != 2 or L.shape[1] != len(c):
        raise InputDataError(f"the calibration has {len(c)} peaks; got logits of shape {L.shape}")
    return calibrated_logits(L, c, record)


def fit_logit_calibration(logits, y, method: str = "offset") -> dict[str, Any]:
    """Fit a calibration of predicted peak logits to observed binary peaks by Bernoulli log-likelihood.

    Parameters
    ----------
    logits
        Predicted logits (cells x peaks).
    y
        Observed accessibility (cells x peaks; > 0 is open).
    method
        ``"offset"``, ``"amplitude"`` or ``"affine"`` (module docstring).

    Returns
    -------
    dict with ``method``, ``offset``, ``prior_weight``, ``amplitude``, ``centre`` (list: each
    peak's mean predicted logit), ``loglik_before`` / ``loglik_after`` (mean per entry, on these cells).
    """
    from scipy.optimize import minimize

    check_option("method", method, CALIBRATION_METHODS)
    L = np.asarray(logits, np.float64)
    Y = (np.asarray(y) > 0).astype(np.float64)
    if L.ndim != 2 or L.shape != Y.shape:
        raise InputDataError(f"logits and observations must be (cells, peaks) of one shape; got {L.shape} and {Y.shape}")
    if not np.all(np.isfinite(L)):
        raise InputDataError("the predicted logits hold non-finite values")
    if Y.min() == Y.max():
        raise InputDataError("the fitting cells' peaks are all open or all closed: nothing to calibrate against")
    c = L.mean(0)
    D = L - c
    free = np.array(_FREE[method])
    theta0 = np.array([0.0, 1.0, 1.0])

    def nll(x):
        th = theta0.copy()
        th[free] = x
        eta = th[0] + th[1] * c + th[2] * D
        mu = 0.5 * (1.0 + np.tanh(0.5 * eta))  # sigmoid without overflow
        r = Y - mu
        f = -float(np.mean(Y * eta - np.logaddexp(0.0, eta)))
        g = -np.array([r.mean(), float((r * c).mean()), float((r * D).mean())])
        return f, g[free]

    res = minimize(nll, theta0[free], jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-10})
    th = theta0.copy()
    th[free] = res.x
    if not np.all(np.isfinite(th)):
        raise ScdxError(f"the calibration fit did not converge ({res.message})")
    rec = {"method": method, "offset": float(th[0]), "prior_weight": float(th[1]), "amplitude": float(th[2]),
           "centre": [float(v) for v in c], "loglik_before": bernoulli_loglik(L, Y)}
    rec["loglik_after"] = bernoulli_loglik(apply_logit_calibration(L, rec), Y)
    return rec


def fit_readout_head(z, logits, y, fit, val, *, lr: float = 3e-3, batch_size: int = 256, max_epochs: int = 300,
                     patience: int = 10, seed: int = 0) -> dict[str, Any]:
    """Fit the residual readout ``scale * logits + z W + b`` of observed binary peaks ``y``.

    ``z`` (cells x latent), ``logits`` (the decoder's, cells x peaks) and ``y`` (cells x peaks, > 0
    open) of all cells; ``fit`` / ``val``: positions of the cells it is fitted on / of the cells
    whose Bernoulli log-likelihood stops it (the best epoch's parameters are kept; at most
    ``max_epochs``, stopped after ``patience`` epochs without improvement). Started at the decoder
    (``scale = 1``, ``W = b = 0``); Adam with learning rate ``lr``, minibatches of ``batch_size``
    fitting cells in a seeded order. Returns a ``"head"`` record: ``scale``, ``weight`` (latent x
    peaks, float32), ``bias``, ``epochs``, ``loglik_before`` / ``loglik_after`` (mean per entry on
    the ``val`` cells).
    """
    import torch
    import torch.nn.functional as F

    Z, L = (torch.as_tensor(np.asarray(a, np.float32)) for a in (z, logits))
    Y = torch.as_tensor((np.asarray(y) > 0).astype(np.float32))
    fit, val = np.asarray(fit, np.int64), np.asarray(val, np.int64)
    if L.ndim != 2 or L.shape != Y.shape or Z.shape[0] != L.shape[0]:
        raise InputDataError(f"latents, logits and observations must have one row per cell and logits the "
                             f"observations' shape; got {tuple(Z.shape)}, {tuple(L.shape)}, {tuple(Y.shape)}")
    if len(np.intersect1d(fit, val)):
        raise InputDataError("the head's fitting and stopping cells overlap; give it two disjoint sets")
    if not (torch.isfinite(Z).all() and torch.isfinite(L).all()):
        raise InputDataError("the latents or the predicted logits hold non-finite values")
    W = torch.zeros(Z.shape[1], L.shape[1], requires_grad=True)
    b = torch.zeros(L.shape[1], requires_grad=True)
    a = torch.ones(1, requires_grad=True)

    def nll(idx):
        return F.binary_cross_entropy_with_logits(a * L[idx] + Z[idx] @ W + b, Y[idx])

    opt = torch.optim.Adam([W, b, a], lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        before = best = float(nll(val))
    keep, best_ep, ep = (W.detach().clone(), b.detach().clone(), a.detach().clone()), -1, 0
    for ep in range(int(max_epochs)):
        order = fit[torch.randperm(len(fit), generator=gen).numpy()]
        for s in range(0, len(order), batch_size):
            loss = nll(order[s:s + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            v = float(nll(val))
        if v < best:
            best, best_ep, keep = v, ep, (W.detach().clone(), b.detach().clone(), a.detach().clone())
        elif ep - best_ep >= patience:
            break
    return {"method": "head", "scale": float(keep[2]), "weight": keep[0].numpy(), "bias": keep[1].numpy(),
            "epochs": int(ep + 1), "best_epoch": int(best_ep + 1), "loglik_before": -before, "loglik_after": -best}


def calibration_cells(model, mdata, cells) -> np.ndarray:
    """Positions of the cells a calibration is fitted on; never a cell of the checkpoint's test split.

    ``cells``: ``"val"`` or ``"train"`` (the cells whose ``obs[<split key>]`` is that value; the split
    key is the checkpoint's, ``model.setup["split"]["key"]``, else ``"split"``), or a boolean mask /
    integer positions over ``mdata``'s cells.
    """
    n = mdata.n_obs
    split = (getattr(model, "setup", None) or {}).get("split") or {}
    key = split.get("key", "split")
    if isinstance(cells, str):
        if cells == "test":
            raise OptionError("a calibration must not be fitted on the test cells (their scores would be biased); "
                              "use cells='val'")
        if cells not in ("val", "train"):
            raise OptionError(f"cells must be 'val', 'train', a boolean mask or cell positions, got {cells!r}")
        if key not in mdata.obs:
            raise InputDataError(f"cells={cells!r} needs the split column {key!r} in mdata.obs (has "
                                 f"{list(mdata.obs.columns)}); pass a mask of non-test cells instead")
        idx = np.flatnonzero(mdata.obs[key].astype(str).to_numpy() == cells)
        if len(idx) == 0:
            raise InputDataError(f"no cell of mdata has obs[{key!r}] == {cells!r}")
    else:
        c = np.asarray(cells)
        if c.dtype == bool:
            if len(c) != n:
                raise InputDataError(f"cells mask has {len(c)} entries for {n} cells")
            idx = np.flatnonzero(c)
        elif c.size and not np.issubdtype(c.dtype, np.integer):
            raise OptionError(f"cells must be 'val', a boolean mask or integer positions, got dtype {c.dtype}")
        else:
            idx = np.unique(c.astype(np.int64))
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise InputDataError(f"cell positions must be in [0, {n})")
    names = np.asarray(mdata.obs_names.astype(str))[idx]
    test = set(map(str, split.get("test_cells") or []))
    if key in mdata.obs:
        test |= set(np.asarray(mdata.obs_names.astype(str))[mdata.obs[key].astype(str).to_numpy() == "test"])
    bad = [x for x in names if x in test]
    if bad:
        raise InputDataError(f"{len(bad)} of the calibration cells are test cells (e.g. {bad[:3]}); fit the "
                             "calibration on training or validation cells only")
    if len(idx) < 10:
        raise InputDataError(f"a calibration needs at least 10 cells, got {len(idx)}")
    return idx


def check_calibration_record(direction: str, rec, n_peaks: int, where: str = "",
                             latent_dim: int | None = None) -> dict[str, Any]:
    """A stored calibration record, checked (``CheckpointError`` naming ``where`` when it is malformed).
    A ``"head"`` record's ``weight`` must be ``(latent_dim, n_peaks)`` and its ``bias`` ``(n_peaks,)``."""
    try:
        split_direction(direction)
        if direction not in CALIBRATED_DIRECTIONS:
            raise ValueError(f"direction {direction!r} cannot be calibrated")
        check_option("method", rec["method"], CALIBRATION_METHODS)
        out = dict(rec)
        if rec["method"] == "head":
            out["scale"] = float(rec["scale"])
            if not np.isfinite(out["scale"]):
                raise ValueError("the head's scale is not finite")
            for k, shape in (("weight", (latent_dim, int(n_peaks))), ("bias", (int(n_peaks),))):
                out[k] = np.asarray(rec[k], np.float32)
                if out[k].shape != shape or not np.all(np.isfinite(out[k])):
                    raise ValueError(f"the head's {k} must be {shape} finite values, got {out[k].shape}")
            return out
        for k in ("offset", "prior_weight", "amplitude"):
            out[k] = float(rec[k])
            if not np.isfinite(out[k]):
                raise ValueError(f"{k} is not finite")
        c = np.asarray(rec["centre"], np.float64)
        if c.shape != (int(n_peaks),) or not np.all(np.isfinite(c)):
            raise ValueError(f"centre must hold {n_peaks} finite values")
        out["centre"] = [float(v) for v in c]
        return out
    except (KeyError, TypeError, ValueError, ScdxError) as e:
        raise CheckpointError(f"{where}bad translation calibration for {direction!r}: {e}") from None


def fitted_calibration(model, direction: str, readout: str) -> dict[str, Any]:
    """The calibration ``translate(..., calibrated=True)`` applies, checked against the direction and readout."""
    split_direction(direction)
    calibration = model.translation_calibration.get(direction)
    if calibration is None:
        raise ScdxError(f"no translation calibration for {direction!r} (fitted: "
                        f"{sorted(model.translation_calibration) or 'none'}); call "
                        f"model.calibrate_translation(mdata, direction={direction!r}) first")
    if readout != calibration.get("readout", "mean"):
        raise OptionError(f"the {direction} calibration was fitted on the {calibration.get('readout', 'mean')!r} "
                          f"readout; got readout={readout!r}")
    return calibration


def calibrate_translation(model, mdata, direction: str = "rna->atac", *, cells=None, method: str = "offset",
                          val_cells="val", n_noise: int = 4, seed: int = 0, batch_size: int = 512) -> dict[str, Any]:
    """Fit a post-hoc calibration (or readout head) of the posterior-mean translation; never on test cells.

    No weight of the model changes. The RNA->ATAC mean readout decodes the posterior-mean latent once; the
    sigmoid decoder is convex where peaks are rare, so its probabilities are too low (on the
    shipped mouse checkpoint 0.0027 on average against 0.018 observed) and their differences
    between cells are flattened. The calibration maps each predicted logit ``L`` of peak ``p``
    to ``offset + prior_weight * c_p + amplitude * (L - c_p)`` (``c_p``: the peak's mean
    predicted logit over the fitting cells), fitted by Bernoulli log-likelihood of the cells'
    observed peaks, and is stored in ``translation_calibration[direction]`` (saved with the
    model). It is applied only by ``translate(..., calibrated=True)``.

    Parameters
    ----------
    mdata
        MuData with both modalities in the model's features (the observed ATAC is the target).
    direction
        ``"rna->atac"`` (the only direction that can be calibrated).
    cells
        The fitting cells. ``None`` (default): ``"val"`` for the maps, ``"train"`` for the head.
        ``"val"`` / ``"train"``: the cells with ``obs[<split key>]`` of that value (the
        checkpoint's split key, ``model.setup["split"]["key"]``, else ``"split"``); or a boolean
        mask / positions (for the maps: cells the model was not trained on). Test cells
        (``"test"`` in the split column or in the checkpoint's recorded test cells) are refused.
    method
        ``"offset"`` (default): one logit offset; a monotone map of every logit, so the order of
        peaks within a cell and of cells within a peak, hence per-cell and per-peak AUROC, are
        unchanged. ``"amplitude"``: deviations from each peak's mean logit scaled by one number.
        ``"affine"``: offset, weight of the peak mean and amplitude together. (On the shipped
        mouse checkpoint, fitted on its 1,034 val cells and scored on its 1,028 test cells,
        ``"offset"`` (+1.98 logits) lifts the re-centred classifier accuracy from 39.4 to 55.6 %
        with both AUROCs unchanged; ``analyses/translation_calibration.py``.) ``"head"``: the
        learned readout ``scale * L + z W + b`` of :func:`fit_readout_head`, fitted on ``cells``
        (default ``"train"``) and stopped on ``val_cells`` (default ``"val"``); raises both AUROCs.
    val_cells
        ``method="head"`` only: the cells that stop its fit (disjoint from ``cells``; never test cells).
    n_noise, seed, batch_size
        The mean readout's settings (as in :meth:`translate`).

    Returns
    -------
    The fitted record: ``method``, ``offset``, ``prior_weight``, ``amplitude``, ``centre``
    (per-peak mean logit), ``loglik_before`` / ``loglik_after`` (mean Bernoulli
    log-likelihood per entry on the fitting cells), ``n_cells``, ``readout``, ``n_noise``, ``seed``;
    for the head ``scale``, ``weight``, ``bias``, ``epochs``, ``best_epoch``, ``n_val_cells`` and the
    log-likelihoods on the stopping cells instead.

    Raises
    ------
    OptionError
        Unknown direction / method, ``direction="atac->rna"``, ``cells="test"``.
    InputDataError
        Test cells among ``cells``, fewer than 10 cells, no ``val`` cells or no split column.
    """
    import torch

    from ._access import check_features, require_paired

    src, tgt = split_direction(direction)
    if direction not in CALIBRATED_DIRECTIONS:
        raise OptionError(f"only {', '.join(CALIBRATED_DIRECTIONS)} can be calibrated, got direction={direction!r}")
    check_option("method", method, CALIBRATION_METHODS)
    require_paired(model, "translation calibration")
    head = method == "head"
    cells = ("train" if head else "val") if cells is None else cells
    idx = calibration_cells(model, mdata, cells)
    stop = calibration_cells(model, mdata, val_cells) if head else idx[:0]
    both = np.intersect1d(idx, stop)
    if len(both):
        raise InputDataError(f"the head's fitting cells ({cells!r}) and stopping cells ({val_cells!r}) overlap in "
                             f"{len(both)} cells; give it two disjoint sets")
    part = mdata[np.concatenate([idx, stop])].copy()
    res = model.translate(part, direction, readout="mean", n_noise=n_noise, seed=seed, batch_size=batch_size)
    z = torch.as_tensor(res.obsm["latent"], device=model.device)
    with torch.no_grad():
        logits = np.concatenate([model.module.decode_atac_logits(z[s:s + batch_size]).float().cpu().numpy()
                                 for s in range(0, len(z), batch_size)])
    order = check_features(model, part, (tgt,))[tgt]
    y = model._matrix(part, tgt, order).toarray() > 0
    if head:
        rec = fit_readout_head(res.obsm["latent"], logits, y, np.arange(len(idx)),
                               np.arange(len(idx), len(idx) + len(stop)), seed=seed)
    else:
        rec = fit_logit_calibration(logits, y, method)
    rec.update(n_cells=int(len(idx)), readout="mean", n_noise=int(n_noise), seed=int(seed),
               cells=cells if isinstance(cells, str) else "given")
    if head:
        rec.update(n_val_cells=int(len(stop)), val_cells=val_cells if isinstance(val_cells, str) else "given")
    model.translation_calibration[direction] = rec
    return rec
