"""Training recipes chosen from the data and the device, with a time estimate before training starts.

``model.train(preset="auto", time_budget=...)`` times a few autoencoder and denoiser steps of a copy of the
model on a few hundred training cells (:func:`calibrate`), extrapolates to the whole run, and picks the
longest recipe that fits the budget (:func:`plan_training`): the full recipe (40 autoencoder epochs +
20,000 denoiser steps) when it fits, else about half the budget for the autoencoders and the rest for the
denoiser. The estimate is printed before training starts; the trainer's own one-line ETA after its first
epoch / 20 steps follows in the log. Named presets (``model._config.PRESETS``) print the same estimate.

:func:`model_size` counts a configuration's parameters and checkpoint bytes without allocating weights
(the module is built on the ``meta`` device).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch

from .._errors import OptionError
from .._settings import logger

__all__ = ["model_size", "calibrate", "plan_training", "apply_preset", "auto_batch", "check_preset", "FULL_RECIPE",
           "DEFAULT_CPU_BUDGET"]

#: the longest recipe ``"auto"`` picks (``ScDiffusionX.train``'s defaults)
FULL_RECIPE = {"ae_epochs": 40, "diffusion_steps": 20_000}
#: ``preset="auto"`` without ``time_budget`` on a CPU: one hour of training
DEFAULT_CPU_BUDGET = 3600.0
_MIN_RECIPE = {"ae_epochs": 1, "diffusion_steps": 200}


def check_preset(preset: str | None, time_budget: float | None = None) -> None:
    """Raise :class:`~scdiffx_grn.OptionError` for an unknown preset or a non-positive time budget
    (before any work)."""
    from ._config import PRESETS

    if preset is not None and preset != "auto" and preset not in PRESETS:
        raise OptionError(f"unknown preset {preset!r}; choose 'auto' or one of {sorted(PRESETS)}")
    if time_budget is not None and not float(time_budget) > 0:
        raise OptionError(f"time_budget must be a positive number of seconds, got {time_budget!r}")


def model_size(config) -> dict[str, int]:
    """``{"n_parameters", "checkpoint_bytes"}`` of a (resolved) :class:`ModelConfig`, float32 weights,
    computed on the meta device (no memory is allocated for the weights)."""
    from ._modules import ScDXModule

    with torch.device("meta"):
        m = ScDXModule(config)
    n_par = sum(p.numel() for p in m.parameters())
    n_buf = sum(b.numel() for b in m.buffers())
    return {"n_parameters": int(n_par), "checkpoint_bytes": int(4 * (n_par + n_buf))}


def _say(msg: str) -> None:
    """An estimate the user should see before a long run: the log, and the console unless progress is off."""
    from .._settings import settings

    logger.info(msg)
    if settings.progress:
        from tqdm.auto import tqdm

        tqdm.write(msg)


def calibrate(model, mdata, *, batch_size: int, n_batches: int = 3, diffusion_steps: int = 5, split_key=None,
              train_value: str = "train", seed: int = 0, device=None) -> dict[str, float]:
    """Seconds per autoencoder step and per denoiser step, measured on a copy of ``model``.

    The copy trains one autoencoder epoch over ``n_batches`` batches of training cells, then
    ``diffusion_steps`` denoiser steps, through the public ``train``; ``model`` itself is untouched.
    """
    from .._registry import labels as registry_labels

    cells = np.arange(mdata.n_obs)
    if split_key is not None:
        cells = np.flatnonzero(registry_labels(mdata, split_key).to_numpy() == str(train_value))
    rng = np.random.default_rng(seed)
    n_cal = int(min(len(cells), max(2, n_batches * batch_size)))
    sub = mdata[np.sort(rng.choice(cells, n_cal, replace=False))].copy()
    cal = copy.copy(model)
    cal._train_mdata = None
    cal.module = copy.deepcopy(model.module)
    cal.history = {"ae_loss": [], "diffusion_loss": []}
    cal.setup = copy.deepcopy(model.setup)
    cal.timing = {}
    from .._settings import settings

    prog, settings.progress = settings.progress, False
    try:
        t0 = time.perf_counter()
        cal.train(mdata=sub, ae_epochs=1, diffusion_steps=int(diffusion_steps), batch_size=int(batch_size),
                  seed=seed, device=device, log_every=max(1, int(diffusion_steps)))
        wall = time.perf_counter() - t0
    finally:
        settings.progress = prog
    t = cal.timing
    n_ae = math.ceil(n_cal / batch_size)
    return {"ae_step_s": float(t["ae_seconds"]) / n_ae,
            "diffusion_step_s": float(t["diffusion_seconds"]) / int(diffusion_steps),
            "calibration_s": wall, "calibration_cells": n_cal}


def plan_training(n_train: int, batch_size: int, timing: dict[str, float], *, time_budget: float | None,
                  device: str = "cpu") -> dict[str, Any]:
    """The recipe (``ae_epochs``, ``diffusion_steps``) that fits ``time_budget`` seconds, and its estimate.

    ``time_budget=None``: the full recipe on a GPU, :data:`DEFAULT_CPU_BUDGET` on a CPU.
    """
    if time_budget is not None and not float(time_budget) > 0:
        raise OptionError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    budget = float(time_budget) if time_budget is not None else (None if device.startswith("cuda") else DEFAULT_CPU_BUDGET)
    epoch_s = math.ceil(n_train / batch_size) * timing["ae_step_s"]
    fit_s = 0.3 * epoch_s  # encoding every training cell once (forward only)
    step_s = timing["diffusion_step_s"]

    def cost(ae, st):
        return ae * epoch_s + fit_s + st * step_s

    ae, st = FULL_RECIPE["ae_epochs"], FULL_RECIPE["diffusion_steps"]
    if budget is not None and cost(ae, st) > budget:
        ae = int(min(FULL_RECIPE["ae_epochs"], max(_MIN_RECIPE["ae_epochs"], (0.5 * budget - fit_s) // max(epoch_s, 1e-9))))
        if cost(ae, _MIN_RECIPE["diffusion_steps"]) > budget:  # the denoiser's minimum first, then epochs
            ae = int(max(_MIN_RECIPE["ae_epochs"],
                         (budget - cost(0, _MIN_RECIPE["diffusion_steps"])) // max(epoch_s, 1e-9)))
        st = int(min(FULL_RECIPE["diffusion_steps"],
                     max(_MIN_RECIPE["diffusion_steps"], (budget - cost(ae, 0)) // max(step_s, 1e-9))))
    est = cost(ae, st)
    plan = {"ae_epochs": ae, "diffusion_steps": st, "batch_size": int(batch_size), "estimated_seconds": est,
            "ae_epoch_s": epoch_s, "diffusion_step_s": step_s, "time_budget": budget, "n_train_cells": int(n_train),
            "fits_budget": budget is None or est <= budget}
    return plan


def auto_batch(mdata, batch_size: int, split_key=None, train_value: str = "train") -> tuple[int, int]:
    """``(training cells, batch size)`` of ``train(preset="auto")``: at most ``batch_size``, at least 32, and
    at least 4 steps per epoch."""
    from .._registry import labels as registry_labels

    n_train = mdata.n_obs
    if split_key is not None:
        n_train = int((registry_labels(mdata, split_key).to_numpy() == str(train_value)).sum())
    return n_train, int(min(batch_size, max(32, n_train // 4)))


def apply_preset(model, mdata, preset: str, *, time_budget: float | None, batch_size: int, lr: float,
                 split_key=None, train_value: str = "train", seed: int = 0, device=None) -> dict[str, Any]:
    """Resolve ``train(preset=...)``: the training options to use and the estimate printed before training.

    ``"auto"``: calibrated recipe fitting ``time_budget``; a name of ``PRESETS``: its ``train`` options (the
    estimate is printed, and a warning when it exceeds ``time_budget``).
    """
    from ._config import PRESETS

    check_preset(preset, time_budget)
    n_train, auto_bs = auto_batch(mdata, batch_size, split_key, train_value)
    opts: dict[str, Any] = {"batch_size": int(batch_size), "lr": float(lr)}
    if preset != "auto":
        opts.update({k: v for k, v in PRESETS[preset]["train"].items()
                     if k in ("ae_epochs", "diffusion_steps", "batch_size", "lr")})
    else:
        opts["batch_size"] = auto_bs
    dev = str(device) if device is not None else str(model.device)
    t = calibrate(model, mdata, batch_size=opts["batch_size"], split_key=split_key, train_value=train_value,
                  seed=seed, device=device)
    if preset == "auto":
        plan = plan_training(n_train, opts["batch_size"], t, time_budget=time_budget, device=dev)
        opts.update(ae_epochs=plan["ae_epochs"], diffusion_steps=plan["diffusion_steps"])
    else:
        plan = plan_training(n_train, opts["batch_size"], t, time_budget=None, device="cuda")
        ep, st = opts["ae_epochs"], opts["diffusion_steps"]
        est = ep * plan["ae_epoch_s"] + 0.3 * plan["ae_epoch_s"] + st * plan["diffusion_step_s"]
        plan.update(ae_epochs=ep, diffusion_steps=st, estimated_seconds=est, time_budget=time_budget,
                    fits_budget=time_budget is None or est <= float(time_budget))
    plan.update(preset=preset, calibration=t, device=dev, **model_size(model.config))
    msg = (f"training preset {preset!r} on {dev} ({torch.get_num_threads()} CPU thread(s)): {plan['ae_epochs']} "
           f"autoencoder epochs + {plan['diffusion_steps']} denoiser steps, batch {opts['batch_size']}, "
           f"{n_train:,} cells, {plan['n_parameters'] / 1e6:.1f} M parameters; estimated "
           f"{plan['estimated_seconds'] / 60:.1f} min ({plan['ae_epoch_s']:.1f} s per epoch, "
           f"{plan['diffusion_step_s']:.3f} s per denoiser step)")
    if plan["time_budget"] is not None:
        msg += f"; budget {plan['time_budget'] / 60:.1f} min"
    _say(msg)
    if not plan["fits_budget"]:
        logger.warning("the training estimate (%.1f min) exceeds the time budget (%.1f min): even the shortest "
                       "recipe does not fit; give more time or fewer features (tl.select_features)",
                       plan["estimated_seconds"] / 60, plan["time_budget"] / 60)
    opts["plan"] = plan
    return opts
