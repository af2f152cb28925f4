"""The scDiffusion-X model: autoencoders, Dual-Cross-Attention latent diffusion, samplers."""

from ._config import FORMAT_VERSION, ModelConfig
from ._model import ScDiffusionX
from ._modules import DCADenoiser, ScDXModule, nb_log_likelihood
from ._schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, make_scheduler

__all__ = [
    "ScDiffusionX",
    "ModelConfig",
    "FORMAT_VERSION",
    "ScDXModule",
    "DCADenoiser",
    "nb_log_likelihood",
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "make_scheduler",
]
