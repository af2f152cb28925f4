"""The settings of one sampling request, checked once and passed down as one object.

:meth:`ScDiffusionX.generate`, :meth:`~ScDiffusionX.translate`, :meth:`~ScDiffusionX.translate_latent`
and :func:`~scdiffx_grn.model.interpolate` take these settings as keywords (their public
signatures); each builds one :class:`SamplingOptions`, checks it against the model's config
(:meth:`SamplingOptions.checked`) and hands that object to the cell-level functions
(:mod:`._generate`, :mod:`._translate`) and to the
:class:`~scdiffx_grn.model._pipeline.DiffusionPipeline`, which read it and never re-spell it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._samplers import get_sampler
from .._validate import check_count, check_positive, check_range
from .._vocab import READOUTS, check_option

__all__ = ["SamplingOptions", "GUIDANCE_MODES", "TRANSLATION_METHODS"]

#: how classifier-free guidance combines several labels: one scale for all, or per-label terms added up
GUIDANCE_MODES: tuple[str, ...] = ("joint", "additive")
#: how the observed modality enters a sampled translation: given clean, or noised and inpainted
TRANSLATION_METHODS: tuple[str, ...] = ("conditional", "inpaint")


@dataclass(frozen=True)
class SamplingOptions:
    """How latents are sampled: the sampler, its steps, the guidance and (translation) the readout.

    Attributes
    ----------
    sampler
        A sampler registered for the model's objective (:func:`~scdiffx_grn.model.sampler_names`).
    n_steps
        Sampler steps (always sampler steps in :mod:`scdiffx_grn.model`).
    guidance_scale, guidance_mode
        Classifier-free guidance over the labels: one scale (``"joint"``) or ``{label: scale}``
        (``"additive"``); 1 is none.
    readout
        ``"mean"`` (a translation's posterior mean: the sampler is not used) or ``"samples"`` (a
        sampled trajectory; generation always samples).
    source_guidance, method, recon_guidance
        Translation only: classifier-free guidance over the observed modality, ``"conditional"`` or
        ``"inpaint"``, and the weight of the inpainting reconstruction guidance.
    """

    sampler: str = "ddim"
    n_steps: int = 50
    guidance_scale: float | Mapping[str, float] = 1.0
    guidance_mode: str = "joint"
    readout: str = "mean"
    source_guidance: float = 1.0
    method: str = "conditional"
    recon_guidance: float = 0.0

    def checked(self, config) -> SamplingOptions:
        """``self`` after checking every field against the model's ``config`` (its ``objective``).

        Raises
        ------
        OptionError
            Naming the option, its value and the accepted values (the sampler registry names the
            samplers of the model's objective). The sampler is checked when it is used: for
            ``readout="samples"``.
        """
        check_option("readout", self.readout, READOUTS)
        check_option("guidance_mode", self.guidance_mode, GUIDANCE_MODES)
        check_option("translation method", self.method, TRANSLATION_METHODS)
        check_count("n_steps", self.n_steps, 1)
        scales = self.guidance_scale.values() if isinstance(self.guidance_scale, Mapping) else [self.guidance_scale]
        for s in scales:
            check_positive("guidance_scale", s, allow_zero=True)
        check_range("source_guidance", self.source_guidance)
        check_positive("recon_guidance", self.recon_guidance, allow_zero=True)
        if self.readout == "samples":
            get_sampler(self.sampler, getattr(config, "objective", "diffusion"))
        return self

    def replace(self, **changes) -> SamplingOptions:
        """A copy with ``changes`` (not checked: call :meth:`checked`)."""
        return dataclasses.replace(self, **changes)

    def translate_kwargs(self) -> dict[str, Any]:
        """The keywords of the tensor-level API (``translate_latent``, ``step_noise``) for these settings."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
