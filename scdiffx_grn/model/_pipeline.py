"""Sampling pipeline (diffusers-style): schedulers, guidance and the reverse-time loops.

A :class:`DiffusionPipeline` wraps a trained :class:`~scdiffx_grn.model._modules.ScDXModule` and
its config. It knows nothing about AnnData: latents and label indices in, latents out.

- :meth:`DiffusionPipeline.sample_joint`: both modalities generated from noise;
- :meth:`DiffusionPipeline.sample_translation`: one modality observed (given clean, or noised
  for inpainting), the other generated;
- :meth:`DiffusionPipeline.translate_latents`: the tensor-level translation of the model
  (posterior-mean readout in one denoiser call, or a sampled trajectory).

Every loop reads its sampler, steps and guidance settings from one checked
:class:`~scdiffx_grn.model._options.SamplingOptions`.

Each step asks a guidance object (:mod:`~scdiffx_grn.model._guidance`) for the model output;
the default is :class:`~scdiffx_grn.model._guidance.LabelGuidance` (classifier-free guidance over
the labels). Timesteps are integers for diffusion and floats (model time) for flow models.
"""

from __future__ import annotations

import torch

from .._errors import OptionError
from .._vocab import split_direction
from ._guidance import (
    Guidance,
    LabelGuidance,
    PipelineState,
    ReconstructionGuidance,
    SourceGuidance,
)
from ._options import TRANSLATION_METHODS, SamplingOptions
from ._schedulers import deterministic_sampler, make_scheduler, training_scheduler

__all__ = ["DiffusionPipeline", "TRANSLATION_METHODS"]


def _steps(sched, n_steps: int, cond: torch.Tensor):
    """Set ``sched`` to ``n_steps`` and yield, per step, its timestep (a CPU scalar: the scheduler
    reads it with no device -> host sync) and that timestep for every row of the batch, on the
    batch's device (made there: no host -> device copy)."""
    sched.set_timesteps(n_steps)  # the schedule stays on the host
    b = cond.shape[0]
    for t in sched.timesteps:
        yield t, torch.full((b,), t.item(), dtype=t.dtype, device=cond.device)


class DiffusionPipeline:
    """Samplers of a trained module.

    Parameters
    ----------
    module
        The :class:`~scdiffx_grn.model._modules.ScDXModule` (its ``denoiser`` is used).
    config
        Its resolved :class:`~scdiffx_grn.model.ModelConfig`.
    """

    def __init__(self, module, config):
        self.module, self.config = module, config
        self._train_sched = None

    # ------------------------------------------------------------------ schedulers
    def scheduler(self, name: str):
        """A fresh sampler by name (``"ddpm"``, ``"ddim"``, ``"dpm++"``; flow: ``"euler"``, ``"heun"``; or
        one registered with :func:`~scdiffx_grn.model.register_sampler` for the model's objective)."""
        return make_scheduler(name, self.config)

    @property
    def training_scheduler(self):
        """The forward process the model was trained with (``add_noise``, ``target``, ``alpha_bar``...)."""
        if self._train_sched is None:
            self._train_sched = training_scheduler(self.config)
        return self._train_sched

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward-diffuse normalised latents ``z0`` to timesteps ``t`` (model time for flow models)."""
        return self.training_scheduler.add_noise(z0, noise, t)

    def timesteps(self, value, n: int, device=None) -> torch.Tensor:
        """``n`` copies of timestep ``value`` in the dtype the denoiser is trained with."""
        sched = self.training_scheduler
        return torch.full((n,), value, dtype=sched.timestep_dtype, device=device)

    # ------------------------------------------------------------------ denoiser
    def null_labels(self, n: int, device) -> torch.Tensor:
        """The 'no label' condition (n, n_label_keys)."""
        return self.module.denoiser.labels.null(n, device)

    def denoise(self, z_r, z_a, t_r, t_a, cond):
        """Raw denoiser outputs (float32) of both branches (bf16 autocast on CUDA)."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=z_r.device.type == "cuda"):
            o_r, o_a = self.module.denoiser(z_r, z_a, t_r, t_a, cond)
        return o_r.float(), o_a.float()

    # ------------------------------------------------------------------ loops
    def sample_joint(self, cond: torch.Tensor, noise_r: torch.Tensor, noise_a: torch.Tensor, options: SamplingOptions,
                     *, guidance: Guidance | None = None, generator=None, rows: slice = slice(None),
                     step_noise: torch.Tensor | None = None):
        """Generate both modalities of one batch from noise with ``options.sampler`` / ``options.n_steps``;
        returns ``(z_rna, z_atac)``.

        ``guidance``: default the label guidance of ``options``. ``rows``: the rows of the whole
        request this batch holds (for per-cell guidance targets). ``step_noise``: the per-step noise
        of stochastic samplers, a tensor (len(timesteps), B, rna + atac latent width) or a function
        of the step index giving its (B, width) noise (else it is drawn from ``generator``, which
        ties it to the batch).
        """
        guidance = LabelGuidance(options.guidance_scale, options.guidance_mode) if guidance is None else guidance
        sched = self.scheduler(options.sampler)
        if not sched.stochastic:
            step_noise = None
        x_r, x_a = noise_r, noise_a
        for i, (t, tt) in enumerate(_steps(sched, options.n_steps, cond)):
            o_r, o_a = guidance(self, PipelineState(x_r, x_a, tt, tt, cond, sched, rows=rows))
            # two schedulers would keep separate multistep states: stack the branches instead
            x = sched.step(torch.cat([o_r, o_a], -1), t, torch.cat([x_r, x_a], -1), generator,
                           **({} if step_noise is None else
                              {"noise": step_noise(i) if callable(step_noise) else step_noise[i]}))
            x_r, x_a = x.split([x_r.shape[1], x_a.shape[1]], -1)
        return x_r, x_a

    def sample_translation(self, direction: str, cond: torch.Tensor, noise_r: torch.Tensor, noise_a: torch.Tensor,
                           z_src: torch.Tensor, options: SamplingOptions, *, guidance: Guidance | None = None,
                           generator=None, step_noise: torch.Tensor | None = None):
        """Generate the target modality of one batch given the observed source latent ``z_src``.

        ``options.method == "conditional"``: the source is given clean (timestep 0); ``"inpaint"``:
        it is noised to the current timestep with the source-side noise. The target starts from its
        noise (``noise_a`` for ``"rna->atac"``). ``guidance``: default :meth:`translation_guidance`.
        ``step_noise`` (n_steps, B, latent_dim): the per-step noise of stochastic samplers.
        Returns ``(z_rna, z_atac)``.
        """
        source, _ = split_direction(direction)
        guidance = self.translation_guidance(options) if guidance is None else guidance
        sched = self.scheduler(options.sampler)
        b = cond.shape[0]
        zero = torch.zeros(b, dtype=torch.long, device=cond.device)
        src_is_rna = source == "rna"
        x = noise_a if src_is_rna else noise_r
        noise_src = noise_r if src_is_rna else noise_a  # inpainting and the null source
        if not sched.stochastic:
            step_noise = None
        for i, (t, tt) in enumerate(_steps(sched, options.n_steps, cond)):
            if options.method == "conditional":
                src, t_src = z_src, zero
            else:  # inpaint
                src, t_src = sched.add_noise(z_src, noise_src, tt), tt
            st = (PipelineState(src, x, t_src, tt, cond, sched) if src_is_rna
                  else PipelineState(x, src, tt, t_src, cond, sched))
            o_r, o_a = guidance(self, st.replace(source=source, null_source=noise_src, z_source=z_src))
            o_tgt = o_a if src_is_rna else o_r
            x = sched.step(o_tgt, t, x, generator, **({"noise": step_noise[i]} if step_noise is not None else {}))
        return (z_src, x) if src_is_rna else (x, z_src)

    # ------------------------------------------------------------------ translation
    def translation_guidance(self, options: SamplingOptions) -> Guidance:
        """The guidance of a translation: label CFG inside source CFG, or reconstruction guidance (inpainting)."""
        base = LabelGuidance(options.guidance_scale, options.guidance_mode)
        if options.recon_guidance and options.method == "inpaint":
            return ReconstructionGuidance(float(options.recon_guidance), base)
        return SourceGuidance(float(options.source_guidance), base)

    def translate_latents(self, z_src: torch.Tensor, direction: str, cond: torch.Tensor | None, noise: torch.Tensor,
                          options: SamplingOptions, *, generator=None, step_noise=None) -> torch.Tensor:
        """Target latents of normalised source latents with checked ``options`` (see
        :meth:`ScDiffusionX.translate_latent`)."""
        source, _ = split_direction(direction)
        if cond is None:
            cond = self.null_labels(z_src.shape[0], z_src.device)
        L = z_src.shape[1]
        if noise.shape[1] == 2 * L:
            noise, noise_src = noise[:, :L], noise[:, L:]
        elif noise.shape[1] == L:
            noise_src = noise.flip(-1)
        else:
            raise OptionError(f"noise must have latent_dim ({L}) or 2 x latent_dim columns, got {noise.shape[1]}")
        src_is_rna = source == "rna"
        if options.readout == "mean" and self.config.prediction != "epsilon":
            # the clean-latent estimate from pure noise at the noisiest timestep: E[z_tgt | z_src, labels]
            # (the source is given clean: conditional, whatever ``method`` says)
            sched = self.scheduler(deterministic_sampler(self.config))
            tt = torch.full((z_src.shape[0],), sched.posterior_mean_timestep, device=z_src.device,
                            dtype=sched.timestep_dtype)
            zero = torch.zeros_like(tt)
            st = (PipelineState(z_src, noise, zero, tt, cond, sched) if src_is_rna
                  else PipelineState(noise, z_src, tt, zero, cond, sched))
            guide = SourceGuidance(float(options.source_guidance),
                                   LabelGuidance(options.guidance_scale, options.guidance_mode))
            o_r, o_a = guide(self, st.replace(source=source, null_source=noise_src, z_source=z_src))
            return sched.to_x0_eps(o_a if src_is_rna else o_r, noise, tt)[0]
        if options.readout == "mean":  # epsilon model: a deterministic trajectory
            options = options.replace(sampler=deterministic_sampler(self.config))
        nr, na = (noise_src, noise) if src_is_rna else (noise, noise_src)
        z_r, z_a = self.sample_translation(direction, cond, nr, na, z_src, options, generator=generator,
                                           step_noise=step_noise)
        return z_a if src_is_rna else z_r
