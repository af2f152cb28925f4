"""The scDiffusion-X model: autoencoders, Dual-Cross-Attention latent diffusion, samplers.

Layout (scvi-tools / diffusers lines): :class:`ScDiffusionX` is the facade; the networks and their
losses are the module (``_modules``); training is a loop (``_train``) running a training plan
(``_trainingplan``); sampling is a pipeline (``_pipeline``) of schedulers and guidance objects
(``_guidance``); the tensor API that ``grn`` / ``perturb`` use is the :class:`TranslationModel`
protocol (``_api``).
"""

from ._api import ModelConfigLike, TranslationModel
from ._classifier import (
                          LatentClassifier,
                          classifier_guidance,
                          generate_with_classifier,
                          load_classifier,
                          save_classifier,
                          train_latent_classifier,
)
from ._config import FORMAT_VERSION, PRESETS, ModelConfig, preset
from ._flow import FlowEulerScheduler, FlowHeunScheduler
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
                          DPMSolverMultistepScheduler,
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
