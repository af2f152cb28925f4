"""The scDiffusion-X model: autoencoders, Dual-Cross-Attention latent diffusion, samplers.

Layout (scvi-tools / diffusers lines): :class:`ScDiffusionX` is the facade; the networks and their
losses are the module (``_modules``); training is a loop (``_train``) running a training plan
(``_trainingplan``); sampling is a pipeline (``_pipeline``) of samplers and guidance objects
(``_guidance``). Samplers (``_schedulers``, ``_flow``) share one base class, :class:`Sampler`, and
one registry (:func:`register_sampler`, :func:`get_sampler`, :func:`sampler_names`); the tensor API that ``grn`` / ``perturb`` use is the :class:`TranslationModel`
protocol (``_api``).
"""

from .._samplers import SAMPLER_KINDS, get_sampler, register_sampler, sampler_names
from ._api import ModelConfigLike, TranslationModel
from ._autopreset import model_size
from ._sizing import DENOISER_SIZES, denoiser_size
from ._classifier import (
                          LatentClassifier,
                          classifier_guidance,
                          generate_with_classifier,
                          load_classifier,
                          save_classifier,
                          train_latent_classifier,
)
from ._config import FORMAT_VERSION, PRESETS, ModelConfig, preset
from ._flow import FlowEulerScheduler, FlowHeunScheduler, FlowSampler
from ._guidance import (
                          ClassifierGuidance,
                          Guidance,
                          LabelGuidance,
                          MixGuidance,
                          PipelineState,
                          ReconstructionGuidance,
                          SourceGuidance,
                          WithConditions,
)
from ._interpolate import interpolate, nearest_type_fractions
from ._model import PRETRAINED, ScDiffusionX, pretrained_path
from ._modules import (
                          DCADenoiser,
                          LossOutput,
                          ScDXModule,
                          diffusion_loss,
                          nb_log_likelihood,
)
from ._pipeline import DiffusionPipeline
from ._schedulers import (
                          DDIMScheduler,
                          DDPMScheduler,
                          DiffusionSampler,
                          DPMSolverMultistepScheduler,
                          Sampler,
                          default_sampler,
                          deterministic_sampler,
                          make_scheduler,
                          training_scheduler,
)
from ._set_encoder import SetEncoder
from ._trainingplan import TrainingPlan

__all__ = [
    "ScDiffusionX",
    "PRETRAINED",
    "pretrained_path",
    "ModelConfig",
    "PRESETS",
    "preset",
    "denoiser_size",
    "DENOISER_SIZES",
    "model_size",
    "FORMAT_VERSION",
    "TranslationModel",
    "ModelConfigLike",
    "ScDXModule",
    "DCADenoiser",
    "nb_log_likelihood",
    "LossOutput",
    "diffusion_loss",
    "TrainingPlan",
    "DiffusionPipeline",
    "PipelineState",
    "Guidance",
    "LabelGuidance",
    "SourceGuidance",
    "ReconstructionGuidance",
    "ClassifierGuidance",
    "WithConditions",
    "MixGuidance",
    "Sampler",
    "DiffusionSampler",
    "FlowSampler",
    "register_sampler",
    "get_sampler",
    "sampler_names",
    "SAMPLER_KINDS",
    "default_sampler",
    "deterministic_sampler",
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "make_scheduler",
    "training_scheduler",
    "FlowEulerScheduler",
    "FlowHeunScheduler",
    "LatentClassifier",
    "train_latent_classifier",
    "classifier_guidance",
    "generate_with_classifier",
    "save_classifier",
    "load_classifier",
    "interpolate",
    "nearest_type_fractions",
    "SetEncoder",
]
