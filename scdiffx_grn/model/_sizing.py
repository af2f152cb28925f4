"""The denoiser's size chosen for the device and the time budget, before the model is built.

:func:`denoiser_size` picks the largest of :data:`DENOISER_SIZES` for which the ``train(preset="auto")``
plan of the budget (each size timed in the real training loop) reaches ``min_steps`` denoiser steps (the
default size on a GPU without a budget). On one CPU thread at
real size the default denoiser (width 128, 4 blocks, ~100 MFLOP per cell per forward pass) gets about
200 steps in 15 minutes, and every knockout translation downstream costs ~2.5 ms per edited cell; a
width-32, 2-block denoiser trains for thousands of steps in the same time and translates ~15x faster.
"""

from __future__ import annotations

import torch

from .._errors import OptionError
from .._settings import logger
from ._autopreset import DEFAULT_CPU_BUDGET, _say, auto_batch, calibrate, plan_training
from ._model import ScDiffusionX

__all__ = ["denoiser_size", "DENOISER_SIZES", "MIN_AUTO_STEPS"]

#: denoiser sizes :func:`denoiser_size` chooses from, largest (the default) first
DENOISER_SIZES = ({"width": 128, "n_heads": 4, "n_layers": 4}, {"width": 64, "n_heads": 4, "n_layers": 3},
                  {"width": 64, "n_heads": 4, "n_layers": 2}, {"width": 32, "n_heads": 2, "n_layers": 2})
#: denoiser steps the ``"auto"`` plan of a size chosen by :func:`denoiser_size` must reach
MIN_AUTO_STEPS = 2000


def denoiser_size(mdata, *, time_budget: float | None = None, device=None, batch_size: int = 256,
                  min_steps: int = MIN_AUTO_STEPS, split_key=None, train_value: str = "train", seed: int = 0,
                  **overrides) -> dict[str, int]:
    """The denoiser size (``{"width", "n_heads", "n_layers"}``) to build for training on ``device`` within
    ``time_budget`` seconds; pass it to :class:`~scdiffx_grn.ScDiffusionX`.

    Each size of :data:`DENOISER_SIZES` (largest first) is timed as ``train(preset="auto")`` times a
    model (:func:`calibrate`: a few autoencoder batches and denoiser steps of the real training loop, at
    the batch that preset will use) and planned as it plans (:func:`plan_training`); the first size whose
    plan reaches ``min_steps`` denoiser steps is returned, else the smallest. ``time_budget=None``: the
    default size on a GPU, :data:`DEFAULT_CPU_BUDGET` on a CPU. ``overrides``: the other model options
    the model will be built with (``latent_dim``...). The choice and its reason are printed before any
    training; the dict holds the three sizes only, so that it can be splatted into the constructor, and
    ``denoiser_size.last`` keeps the timings and plans of the most recent call.

    ::

        size = scdx.model.denoiser_size(mdata, time_budget=900)
        model = scdx.ScDiffusionX(mdata, **size)
        model.train(preset="auto", time_budget=900)
    """
    if time_budget is not None and not float(time_budget) > 0:
        raise OptionError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if int(min_steps) < 1:
        raise OptionError(f"min_steps must be a positive number of steps, got {min_steps!r}")
    named = sorted(set(overrides) & {"width", "n_heads", "n_layers"})
    if named:
        raise OptionError(f"denoiser_size chooses {named} itself; build the model with them directly instead")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budget = float(time_budget) if time_budget is not None else (None if dev.type == "cuda" else DEFAULT_CPU_BUDGET)
    n_train, batch = auto_batch(mdata, batch_size, split_key, train_value)  # the batch train(preset="auto") uses
    tried = []
    choice = dict(DENOISER_SIZES[0])
    if budget is not None:
        for size in DENOISER_SIZES:
            model = ScDiffusionX(mdata, seed=seed, **overrides, **size)
            t = calibrate(model, mdata, batch_size=batch, split_key=split_key, train_value=train_value, seed=seed,
                          device=dev)
            plan = plan_training(n_train, batch, t, time_budget=budget, device=str(dev))
            tried.append({**size, "diffusion_step_s": t["diffusion_step_s"], "ae_epoch_s": plan["ae_epoch_s"],
                          "ae_epochs": plan["ae_epochs"], "diffusion_steps": plan["diffusion_steps"]})
            logger.info("denoiser width %d x %d blocks: %.3f s per training step at batch %d -> %d autoencoder "
                        "epochs + %d denoiser steps in the budget", size["width"], size["n_layers"],
                        t["diffusion_step_s"], batch, plan["ae_epochs"], plan["diffusion_steps"])
            choice = dict(size)
            if plan["diffusion_steps"] >= int(min_steps):
                break
    denoiser_size.last = {"choice": choice, "tried": tried, "batch_size": batch, "time_budget": budget,
                          "device": str(dev), "min_steps": int(min_steps)}
    why = ("the default size (no budget on a GPU)" if budget is None else
           f"{tried[-1]['diffusion_steps']:,} denoiser steps planned in the {budget / 60:.1f}-min budget"
           + ("" if tried[-1]["diffusion_steps"] >= int(min_steps) else
              f" (the smallest size; fewer than {int(min_steps):,}: give more time for a better denoiser)"))
    _say(f"denoiser for {dev.type}: width {choice['width']}, {choice['n_layers']} blocks, {choice['n_heads']} "
         f"heads: {why}")
    return choice


denoiser_size.last = None
