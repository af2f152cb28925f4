"""The scDiffusion-X model: autoencoders, Dual-Cross-Attention latent diffusion, samplers."""

from ._config import FORMAT_VERSION, PRESETS, ModelConfig, preset
from ._model import PRETRAINED, ScDiffusionX, pretrained_path
from ._modules import DCADenoiser, ScDXModule, nb_log_likelihood
from ._schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, make_scheduler
from ._flow import FlowEulerScheduler, FlowHeunScheduler
from ._classifier import (LatentClassifier, generate_with_classifier, load_classifier, save_classifier,
                          train_latent_classifier)
from ._interpolate import interpolate, nearest_type_fractions
from ._set_encoder import SetEncoder

__all__ = [
    "ScDiffusionX",
    "PRETRAINED",
    "pretrained_path",
    "ModelConfig",
    "PRESETS",
    "preset",
    "FORMAT_VERSION",
    "ScDXModule",
    "DCADenoiser",
    "nb_log_likelihood",
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "make_scheduler",
    "FlowEulerScheduler",
    "FlowHeunScheduler",
    "LatentClassifier",
    "train_latent_classifier",
    "generate_with_classifier",
    "save_classifier",
    "load_classifier",
    "interpolate",
    "nearest_type_fractions",
    "SetEncoder",
]
