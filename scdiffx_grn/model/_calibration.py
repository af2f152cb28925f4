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

:func:`fit_logit_calibration` and :func:`apply_logit_calibration` work on arrays;
:meth:`ScDiffusionX.calibrate_translation` fits a calibration on cells of a MuData and stores it
in ``model.translation_calibration`` (saved with the checkpoint in ``config.json``), and
``model.translate(..., calibrated=True)`` applies it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import CheckpointError, InputDataError, OptionError, ScdxError
from .._vocab import check_option, split_direction

__all__ = ["CALIBRATION_METHODS", "CALIBRATED_DIRECTIONS", "fit_logit_calibration", "apply_logit_calibration",
           "calibration_cells", "check_calibration_record", "bernoulli_loglik", "calibrated_logits"]

CALIBRATION_METHODS: tuple[str, ...] = ("offset", "amplitude", "affine")
#: directions a calibration can be fitted for (ATAC->RNA: a softmax amplitude did not help, BENCHMARKS.md)
CALIBRATED_DIRECTIONS: tuple[str, ...] = ("rna->atac",)
_FREE = {"offset": (True, False, False), "amplitude": (False, False, True), "affine": (True, True, True)}


def bernoulli_loglik(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood per entry of binary ``y`` under ``sigmoid(logits)`` (stable in the logits)."""
    L = np.asarray(logits, np.float64)
    Y = np.asarray(y, np.float64)
    return float(np.mean(Y * L - np.logaddexp(0.0, L)))


def calibrated_logits(logits, centre, record: dict[str, Any]):
    """``offset + prior_weight * centre + amplitude * (logits - centre)`` of a fitted ``record``; the
    arithmetic only, for numpy arrays and torch tensors alike (``centre`` of the same kind)."""
    off, pw, amp = (float(record[k]) for k in ("offset", "prior_weight", "amplitude"))
    return off + pw * centre + amp * (logits - centre)


def apply_logit_calibration(logits, record: dict[str, Any]) -> np.ndarray:
    """Calibrated logits (:func:`calibrated_logits`) of a fitted ``record``, checked against its peaks."""
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


def calibration_cells(model, mdata, cells) -> np.ndarray:
    """Positions of the cells a calibration is fitted on; never a cell of the checkpoint's test split.

    ``cells``: ``"val"`` (the cells whose ``obs[<split key>]`` is ``"val"``; the split key is the
    checkpoint's, ``model.setup["split"]["key"]``, else ``"split"``), or a boolean mask / integer
    positions over ``mdata``'s cells.
    """
    n = mdata.n_obs
    split = (getattr(model, "setup", None) or {}).get("split") or {}
    key = split.get("key", "split")
    if isinstance(cells, str):
        if cells == "test":
            raise OptionError("a calibration must not be fitted on the test cells (their scores would be biased); "
                              "use cells='val'")
        if cells != "val":
            raise OptionError(f"cells must be 'val', a boolean mask or cell positions, got {cells!r}")
        if key not in mdata.obs:
            raise InputDataError(f"cells='val' needs the split column {key!r} in mdata.obs (has "
                                 f"{list(mdata.obs.columns)}); pass a mask of held-out, non-test cells instead")
        idx = np.flatnonzero(mdata.obs[key].astype(str).to_numpy() == "val")
        if len(idx) == 0:
            raise InputDataError(f"no cell of mdata has obs[{key!r}] == 'val'")
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
                             "calibration on validation cells only")
    if len(idx) < 10:
        raise InputDataError(f"a calibration needs at least 10 cells, got {len(idx)}")
    return idx


def check_calibration_record(direction: str, rec, n_peaks: int, where: str = "") -> dict[str, Any]:
    """A stored calibration record, checked (``CheckpointError`` naming ``where`` when it is malformed)."""
    try:
        split_direction(direction)
        if direction not in CALIBRATED_DIRECTIONS:
            raise ValueError(f"direction {direction!r} cannot be calibrated")
        check_option("method", rec["method"], CALIBRATION_METHODS)
        out = dict(rec)
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


def calibrate_translation(model, mdata, direction: str = "rna->atac", *, cells="val", method: str = "offset",
                          n_noise: int = 4, seed: int = 0, batch_size: int = 512) -> dict[str, Any]:
    """Fit a post-hoc calibration of the posterior-mean translation on held-out, non-test cells.

    No weight changes. The RNA->ATAC mean readout decodes the posterior-mean latent once; the
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
        ``"val"`` (default): the cells with ``obs[<split key>] == "val"`` (the checkpoint's
        split key, ``model.setup["split"]["key"]``, else ``"split"``); or a boolean mask /
        positions of cells the model was not trained on. Test cells (``"test"`` in the split
        column or in the checkpoint's recorded test cells) are refused.
    method
        ``"offset"`` (default): one logit offset; a monotone map of every logit, so the order of
        peaks within a cell and of cells within a peak, hence per-cell and per-peak AUROC, are
        unchanged. ``"amplitude"``: deviations from each peak's mean logit scaled by one number.
        ``"affine"``: offset, weight of the peak mean and amplitude together. (On the shipped
        mouse checkpoint, fitted on its 1,034 val cells and scored on its 1,028 test cells,
        ``"offset"`` (+1.98 logits) lifts the re-centred classifier accuracy from 39.4 to 55.6 %
        with both AUROCs unchanged; ``analyses/translation_calibration.py``.)
    n_noise, seed, batch_size
        The mean readout's settings (as in :meth:`translate`).

    Returns
    -------
    The fitted record: ``method``, ``offset``, ``prior_weight``, ``amplitude``, ``centre``
    (per-peak mean logit), ``loglik_before`` / ``loglik_after`` (mean Bernoulli
    log-likelihood per entry on the fitting cells), ``n_cells``, ``readout``, ``n_noise``, ``seed``.

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
    idx = calibration_cells(model, mdata, cells)
    part = mdata[idx].copy()
    res = model.translate(part, direction, readout="mean", n_noise=n_noise, seed=seed, batch_size=batch_size)
    z = torch.as_tensor(res.obsm["latent"], device=model.device)
    with torch.no_grad():
        logits = np.concatenate([model.module.decode_atac_logits(z[s:s + batch_size]).float().cpu().numpy()
                                 for s in range(0, len(z), batch_size)])
    order = check_features(model, part, (tgt,))[tgt]
    y = model._matrix(part, tgt, order)
    rec = fit_logit_calibration(logits, y.toarray() > 0, method)
    rec.update(n_cells=int(len(idx)), readout="mean", n_noise=int(n_noise), seed=int(seed),
               cells=cells if isinstance(cells, str) else "given")
    model.translation_calibration[direction] = rec
    return rec
