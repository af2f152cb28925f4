"""The members of the tensor-level API (:class:`~scdiffx_grn.model.TranslationModel`) that
:class:`~scdiffx_grn.ScDiffusionX` derives from its config, pipeline and module: the noise of a
cell (the one noise convention) and the hooks of the GRN attention scores."""

from __future__ import annotations

from .._modelio import cell_noise
from ._schedulers import make_scheduler

__all__ = ["TensorHooks"]


class TensorHooks:
    """Mixed into :class:`~scdiffx_grn.ScDiffusionX` (needs ``config``, ``pipeline`` and ``module``)."""

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
