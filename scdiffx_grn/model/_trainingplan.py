"""Training plan: what is learned from each minibatch (the policy), apart from the loop.

:class:`~scdiffx_grn.model._train.Trainer` owns the loop (data, optimisers, DDP, checkpoints,
timing); a :class:`TrainingPlan` decides, for every minibatch,

- the autoencoder inputs (log1p CP10k RNA via :func:`scdiffx_grn._registry.log_normalize`,
  binarised ATAC) and the per-feature scaling of the two likelihoods;
- the denoiser examples: timestep sampling (the training scheduler's), the task of each example
  (joint generation, or translation with one modality given clean: ``translate_prob``), source
  dropout (the observed modality replaced by a null source, ``source_dropout``), label dropout
  for classifier-free guidance (``cond_dropout``, ``translate_cond_dropout``), the noising;
- the loss (``ScDXModule.diffusion_loss``, with the configured loss weighting) and the EMA of the
  denoiser weights.

All random draws come from one ``torch.Generator`` in a fixed order, so a run is reproducible
(and resumable) given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .._registry import log_normalize
from ._modules import LossOutput
from ._schedulers import training_scheduler

__all__ = ["TrainingPlan", "Draws", "DenoiserBatch"]


@dataclass
class Draws:
    """The random draws of one global denoiser batch (CPU; every rank draws the same)."""

    idx: torch.Tensor  # cells
    t: torch.Tensor  # timesteps
    mode: torch.Tensor  # U(0, 1): the task of each example (translation below translate_prob)
    drop_each: torch.Tensor  # (B, n_labels) bool: each label dropped
    drop_all: torch.Tensor  # (B,) bool: all labels dropped
    noise: torch.Tensor  # (B, latent_rna + latent_atac)
    null_src: torch.Tensor  # (B,) bool: the observed modality replaced by a null source

    def shard(self, sl: slice, device) -> Draws:
        """This rank's slice of the batch, on ``device`` (copied without waiting for the device: the
        host draws are staged at once, so the loop makes no device -> host sync here)."""
        return Draws(**{f.name: getattr(self, f.name)[sl].to(device, non_blocking=True) for f in fields(self)})


@dataclass
class DenoiserBatch:
    """Denoiser inputs of a batch with what the loss needs."""

    x_r: torch.Tensor
    x_a: torch.Tensor
    t_r: torch.Tensor
    t_a: torch.Tensor
    cond: torch.Tensor
    z_r: torch.Tensor  # clean latents
    z_a: torch.Tensor
    n_r: torch.Tensor  # noises
    n_a: torch.Tensor
    m_r: torch.Tensor  # noised (loss-bearing) examples of each branch
    m_a: torch.Tensor

    @property
    def inputs(self):
        return self.x_r, self.x_a, self.t_r, self.t_a, self.cond


class TrainingPlan:
    """The training policy of a model.

    Parameters
    ----------
    module
        The :class:`~scdiffx_grn.model._modules.ScDXModule` being trained.
    config
        Its resolved config (``translate_prob``, ``source_dropout``, ``cond_dropout``,
        ``translate_cond_dropout``, ``loss_weighting``, ``min_snr_gamma``, ``objective``...).
    ema_decay
        Decay of the exponential moving average of the denoiser weights (used for sampling).
    """

    def __init__(self, module, config, *, ema_decay: float = 0.999):
        self.module, self.cfg = module, config
        self.scheduler = training_scheduler(config)  # only its forward process is used
        self.ema_decay = float(ema_decay)
        self.latent = int(config.latent_dim)
        self.latent_atac = self.latent if config.paired else 0
        self.n_labels = len(config.label_keys)
        self.p_translate = float(config.translate_prob)
        self.p_null = float(getattr(config, "source_dropout", 0.0))
        self.t_null = self.scheduler.posterior_mean_timestep  # the noisiest timestep: a null (unobserved) source
        self.weighting = getattr(config, "loss_weighting", "none")
        self.gamma = float(getattr(config, "min_snr_gamma", 5.0))

    # ------------------------------------------------------------------ autoencoders
    @staticmethod
    def ae_inputs(counts: np.ndarray, lib: np.ndarray, atac: np.ndarray | None, device):
        """``(counts, x_log, lib, x_bin)`` tensors of one batch: raw RNA counts, their log1p CP10k, the
        library sizes and the binarised ATAC (``None`` for single-modality models)."""
        def put(a):  # host -> device without a sync (pageable host memory is staged at once)
            return torch.as_tensor(a).to(device, non_blocking=True)

        counts, lib = put(counts), put(lib)
        x_log = log_normalize(counts)
        x_bin = put((atac > 0).astype(np.float32)) if atac is not None else None
        return counts, x_log, lib, x_bin

    # ------------------------------------------------------------------ denoiser
    def draw(self, gen: torch.Generator, batch_size: int, n_cells: int) -> Draws:
        """Random draws of one global batch (this order is part of the reproducibility contract)."""
        cfg, B, K = self.cfg, int(batch_size), self.n_labels
        idx = torch.randint(0, n_cells, (B,), generator=gen)
        t = self.scheduler.sample_training_timesteps(B, gen)
        mode = torch.rand(B, generator=gen)
        drop_each = torch.rand(B, max(K, 1), generator=gen)[:, :K] < cfg.cond_dropout
        u_all = torch.rand(B, generator=gen)
        if cfg.translate_cond_dropout is None:
            drop_all = u_all < cfg.cond_dropout
        else:  # conditional (translation) examples: mode < translate_prob
            drop_all = u_all < torch.where(mode < self.p_translate, float(cfg.translate_cond_dropout),
                                           float(cfg.cond_dropout))
        noise = torch.randn(B, self.latent + self.latent_atac, generator=gen)
        # null source: the observed modality of a translation example is fully noised, so the
        # denoiser also learns p(target | labels) (classifier-free guidance over the source)
        null_src = (torch.rand(B, generator=gen) < self.p_null) if self.p_null > 0 else \
            torch.zeros(B, dtype=torch.bool)
        return Draws(idx, t, mode, drop_each, drop_all, noise, null_src)

    def batch(self, d: Draws, z_rna: torch.Tensor, z_atac: torch.Tensor, cond_all: torch.Tensor,
              null: torch.Tensor) -> DenoiserBatch:
        """Denoiser inputs from the draws: noising, translation masking, source and label dropout."""
        sched, p_tr = self.scheduler, self.p_translate
        z_r, z_a = z_rna[d.idx], z_atac[d.idx]
        n_r, n_a = d.noise.split([self.latent, self.latent_atac], -1)
        rna_given = d.mode < p_tr / 2  # translation task atac <- rna: RNA clean
        atac_given = (d.mode >= p_tr / 2) & (d.mode < p_tr)
        t, null_src = d.t, d.null_src
        t_src = torch.where(null_src, torch.full_like(t, self.t_null), torch.zeros_like(t))
        t_r = torch.where(rna_given, t_src, t)
        t_a = torch.where(atac_given, t_src, t)
        x_r = torch.where((rna_given & ~null_src)[:, None], z_r, sched.add_noise(z_r, n_r, t_r))
        x_a = torch.where((atac_given & ~null_src)[:, None], z_a, sched.add_noise(z_a, n_a, t_a))
        cond = cond_all[d.idx]
        if self.n_labels:
            drop = d.drop_each | d.drop_all[:, None]
            cond = torch.where(drop, null.expand_as(cond), cond)
        return DenoiserBatch(x_r, x_a, t_r, t_a, cond, z_r, z_a, n_r, n_a, ~rna_given, ~atac_given)

    def loss(self, o_r: torch.Tensor, o_a: torch.Tensor, b: DenoiserBatch) -> LossOutput:
        """The denoiser's loss of a batch (``ScDXModule.diffusion_loss``)."""
        return self.module.diffusion_loss(self.scheduler, o_r, o_a, b.z_r, b.z_a, b.n_r, b.n_a, b.t_r, b.t_a,
                                          b.m_r, b.m_a, self.weighting, self.gamma)

    @torch.no_grad()
    def ema_update(self, ema, denoiser, step: int) -> None:
        """EMA of the denoiser weights, with the usual warm-up ``min(decay, (1 + step) / (10 + step))``.

        ``ema`` / ``denoiser``: the modules, or (faster: the training loop builds them once) their
        parameter lists in the same order. One ``_foreach_lerp_`` call updates every tensor.
        """
        d = min(self.ema_decay, (1 + step) / (10 + step))
        pe = list(ema.parameters()) if isinstance(ema, torch.nn.Module) else ema
        p = list(denoiser.parameters()) if isinstance(denoiser, torch.nn.Module) else denoiser
        torch._foreach_lerp_(pe, p, 1 - d)
