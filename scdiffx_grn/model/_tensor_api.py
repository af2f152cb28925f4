"""The members of the tensor-level API (:class:`~scdiffx_grn.model.TranslationModel`) that
:class:`~scdiffx_grn.ScDiffusionX` derives from its config, pipeline and module: the one-batch translation of latents, the noise
of a cell (the one noise convention) and the hooks of the GRN attention scores."""

from __future__ import annotations

import torch

from .._modelio import cell_noise
from ._access import require_paired
from ._options import SamplingOptions
from ._schedulers import make_scheduler

__all__ = ["TensorHooks"]


class TensorHooks:
    """Mixed into :class:`~scdiffx_grn.ScDiffusionX` (needs ``config``, ``pipeline`` and ``module``)."""

    def translate_latent(self, z_src, direction: str, cond, noise,
                         *, readout: str = "mean", sampler: str = "ddim", n_steps: int = 50, guidance_scale=1.0,
                         guidance_mode="joint", source_guidance: float = 1.0, method: str = "conditional",
                         recon_guidance: float = 0.0, generator=None, step_noise=None):
        """Translate normalised source latents into target latents (one batch, tensor level).

        Parameters
        ----------
        z_src
            Normalised source latents (B, latent_dim).
        direction
            ``"atac->rna"`` or ``"rna->atac"``.
        cond
            Label indices (B, n_label_keys) or ``None`` (no labels).
        noise
            (B, latent_dim) noise starting the target, or (B, 2 latent_dim): the second half is the
            source-side noise (null source for ``source_guidance``, noised source for inpainting;
            default: the first half reversed).
        readout
            ``"mean"`` (default): the posterior mean ``E[z_tgt | z_src, labels]`` in ONE denoiser
            call at the noisiest timestep (the clean-latent estimate of a v / x0 / flow model
            from pure noise; for epsilon models, which cannot give it in one call, a
            deterministic DDIM trajectory of ``n_steps`` steps). ``"samples"``: one posterior
            sample by ``sampler`` with ``n_steps`` steps.
        step_noise
            For stochastic samplers (``ddpm``): the per-step noise, ``(n_steps, B, latent_dim)``,
            so that a cell's sample does not depend on its batch-mates (``translate`` passes
            per-cell streams); default: drawn from ``generator``.

        Deterministic given ``noise`` for the mean readout and the DDIM (eta=0), DPM-Solver++ and
        flow samplers, so two calls with the same noise on edited and unedited inputs form a
        paired control. Differentiable when gradients are enabled.
        """
        require_paired(self, "translation")  # the direction is checked by the pipeline
        opts = SamplingOptions(sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale,
                               guidance_mode=guidance_mode, readout=readout, source_guidance=source_guidance,
                               method=method, recon_guidance=recon_guidance).checked(self.config)
        return self.pipeline.translate_latents(z_src, direction, cond, noise, opts, generator=generator,
                                               step_noise=step_noise)

    def linear_front(self, modality: str):
        """The encoder of ``modality`` as ``rest(x @ weight.T + bias)``: ``(weight (hidden x features), bias,
        rest)``, ``rest`` mapping the first layer's output to the normalised latent; ``None`` when the first
        layer is not linear (the RNA set encoder). Lets attribution and knockout work in the first layer's
        width instead of the input's (``encode_closed``, the closed-form integrated gradients)."""
        enc = getattr(self.module._ae(modality), "encoder", None)
        if not isinstance(enc, torch.nn.Sequential) or not isinstance(enc[0], torch.nn.Linear):
            return None
        first, tail = enc[0], enc[1:]
        return first.weight, first.bias, lambda h: self.module.normalize(modality, tail(h))

    def encode_closed(self, modality: str, x_input, rows, cols):
        """Normalised latents of the encoder inputs ``x_input[rows[i]]`` (``atac_tensor`` rows) each with column
        ``cols[i]`` set to 0, without building those rows: the first (linear) layer's output of each input
        row once, minus the closed column's weights times its value per edit; the rest of the encoder runs
        on the result. Equal to ``encode(modality, edited rows)`` up to float rounding. ATAC only (closing
        an RNA gene changes every normalised input through the library size)."""
        if modality != "atac":
            from .._errors import OptionError

            raise OptionError(f"encode_closed edits binarised ATAC inputs only, got modality {modality!r}")
        w, b, rest = self.linear_front("atac")
        h = torch.nn.functional.linear(x_input, w, b)[rows]
        return rest(h - x_input[rows, cols][:, None] * w.t()[cols])

    def cell_noise(self, names, seed: int, sample: int = 0, *, stream: int = 0, device=None):
        """Noise ``(len(names), 2 latent_dim)`` of cells ``names`` for ``translate_latent``: the target's
        starting noise, then the source-side noise; keyed by obs name, ``seed``, ``sample`` and
        ``stream`` (:func:`scdiffx_grn._modelio.cell_noise`)."""
        return cell_noise(names, 2 * int(self.config.latent_dim), seed, sample, stream=stream, device=device)

    def step_noise(self, names, seed: int, sample: int = 0, *, device=None, readout: str = "mean",
                   sampler: str = "ddim", n_steps: int = 50, **_):
        """Per-step noise ``(n_steps, len(names), latent_dim)`` of a stochastic sampler (``ddpm``) for the
        translation ``translate_latent(readout=, sampler=, n_steps=)`` of cells ``names`` (stream 1 of
        :meth:`cell_noise`'s keys); ``None`` when that translation draws no per-step noise."""
        if readout != "samples" or not getattr(make_scheduler(sampler, self.config), "stochastic", False):
            return None
        L, b = int(self.config.latent_dim), len(names)
        return cell_noise(names, int(n_steps) * L, seed, sample, stream=1, device=device).view(b, int(n_steps), L) \
            .transpose(0, 1)

    @property
    def forward_process(self):
        """The forward (noising) process the model was trained with (diffusion or flow matching)."""
        return self.pipeline.training_scheduler

    def denoiser_attention(self, z_rna, z_atac, t_rna, t_atac, cond) -> dict:
        """The denoiser's attention maps ``{"rna_to_atac": [layers x (B, heads, T_rna, T_atac)], "atac_to_rna",
        "rna_self", "atac_self"}`` at latents ``z_*`` noised to timesteps ``t_*``."""
        return self.module.denoiser(z_rna, z_atac, t_rna, t_atac, cond, return_attention=True)[2]
