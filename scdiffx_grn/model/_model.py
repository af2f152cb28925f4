"""User-facing model class: a thin facade over the registry, the module, the trainer and the pipeline.

- data registration and access: :mod:`scdiffx_grn._registry` and :mod:`._access`;
- networks and their losses: :mod:`._modules` (:class:`ScDXModule`);
- training: :mod:`._train` (loop) and :mod:`._trainingplan` (policy);
- sampling: :mod:`._pipeline` (:class:`DiffusionPipeline`) with :mod:`._guidance`;
- generation / translation of cells: :mod:`._generate`, :mod:`._translate`, their settings one
  checked :class:`~._options.SamplingOptions`; checks of the model's state: :mod:`._access`;
- checkpoints: :mod:`._checkpoint`.

The tensor-level API (what ``grn`` and ``perturb`` use) is described by
:class:`~scdiffx_grn.model.TranslationModel`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._errors import OptionError, ScdxError
from .._registry import log_normalize, registry
from .._registry import setup_mudata as registry_setup_mudata
from .._settings import get_device
from .._vocab import READOUTS
from ._access import check_features, label_categories, label_indices, model_matrix
from ._access import subset_to_model as _subset_to_model
from ._checkpoint import PRETRAINED, load_model, pretrained_path, save_model
from ._config import ModelConfig
from ._guidance import Guidance
from ._modules import ScDXModule
from ._options import SamplingOptions
from ._pipeline import DiffusionPipeline
from ._tensor_api import TensorHooks

__all__ = ["ScDiffusionX", "PRETRAINED", "pretrained_path"]


class ScDiffusionX(TensorHooks):
    """scDiffusion-X: paired RNA+ATAC latent diffusion with Dual-Cross-Attention.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac`` registered by :meth:`setup_mudata`.
    config
        A :class:`ModelConfig`; keyword overrides are applied on top of it.
    seed
        Seeds the weight initialisation (default ``settings.seed``), so that a model built and
        trained with the same seeds on the same device is identical.
    **overrides
        Any :class:`ModelConfig` field (``width``, ``n_layers``, ``latent_dim``...).

    Examples
    --------
    >>> ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    >>> model = ScDiffusionX(mdata)
    >>> model.train(ae_epochs=50, diffusion_steps=20_000)
    >>> gen = model.generate({"cell_type": ["L2/3"] * 100}, sampler="dpm++", n_steps=20)
    >>> rna_pred = model.translate(mdata, direction="atac->rna", n_samples=5)
    """

    #: the readouts ``translate`` takes (the evaluation contract, :class:`scdiffx_grn.eval.Translator`)
    translation_readouts: tuple[str, ...] = READOUTS

    def __init__(self, mdata=None, config: ModelConfig | None = None, *, seed: int | None = None, **overrides):
        self.history: dict[str, list[float]] = {"ae_loss": [], "diffusion_loss": []}
        self.timing: dict[str, float] = {}
        #: fitted translation calibrations by direction (:meth:`calibrate_translation`; saved with the model)
        self.translation_calibration: dict[str, dict[str, Any]] = {}
        self._device = None
        if mdata is None:  # used by load()
            if config is None:
                raise ScdxError("ScDiffusionX needs a MuData (or use ScDiffusionX.load)")
            self.config = config.resolve()
            self.module = self._build_module(seed)
            self.setup: dict[str, Any] = {}
            self.rna_var_names: list[str] = []
            self.atac_var_names: list[str] = []
            return
        setup = self._get_setup(mdata)
        cfg = ModelConfig.from_dict(config.to_dict()) if config is not None else ModelConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise OptionError(f"unknown model option {k!r}")
            setattr(cfg, k, v)
        cfg.modalities = list(setup["modalities"])
        cfg.n_genes = mdata.mod["rna"].n_vars
        cfg.n_peaks = mdata.mod["atac"].n_vars if "atac" in cfg.modalities else 0
        cfg.label_keys = list(setup["labels"])
        cfg.label_categories = label_categories(mdata, cfg.label_keys)
        self.config = cfg.resolve()
        self.setup = setup
        self.rna_var_names = [str(v) for v in mdata.mod["rna"].var_names]
        self.atac_var_names = [str(v) for v in mdata.mod["atac"].var_names] if self.config.paired else []
        self.module = self._build_module(seed)
        self._train_mdata = mdata  # kept by reference for train(); never saved

    def _build_module(self, seed: int | None) -> ScDXModule:
        from .._settings import settings

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed if seed is None else int(seed))
            return ScDXModule(self.config)

    @property
    def pipeline(self) -> DiffusionPipeline:
        """The sampling pipeline (schedulers, guidance, reverse-time loops) of this model's module."""
        p = getattr(self, "_pipeline", None)
        if p is None or p.module is not self.module or p.config is not self.config:
            p = self._pipeline = DiffusionPipeline(self.module, self.config)
        return p

    # ------------------------------------------------------------------ setup / data access
    @staticmethod
    def setup_mudata(mdata, *, labels: Sequence[str] | str | None = ("cell_type",), rna_layer: str | None = "counts",
                     atac_layer: str | None = "counts", modalities: Sequence[str] | None = None) -> None:
        """Register a MuData for the model: checks modalities, barcodes, labels and counts.

        Parameters
        ----------
        mdata
            MuData with modalities ``rna`` and ``atac`` holding the same cells.
        labels
            obs columns to condition on (cell type first: its categories also key the fitted
            library-size distribution). ``None`` or ``[]`` for an unconditional model.
        rna_layer, atac_layer
            Layers with raw counts (``None``: use ``X``). RNA must be non-negative integers;
            ATAC may be counts or binary (it is binarised).
        modalities
            ``("rna", "atac")`` (paired model) or ``("rna",)`` (single-modality model: RNA only,
            any ``atac`` modality is ignored). ``None``: paired when the MuData has ``atac``,
            RNA-only when it holds ``rna`` alone.

        The registry (:func:`scdiffx_grn.setup_mudata`, read back by ``_registry.registry``) is
        stored in ``mdata.uns["_scdx_setup"]``.

        Raises
        ------
        BarcodeMismatchError, NotCountsError, MissingLabelError, InputDataError, OptionError
        """
        registry_setup_mudata(mdata, labels=labels, rna_layer=rna_layer, atac_layer=atac_layer, modalities=modalities)

    @staticmethod
    def _get_setup(mdata) -> dict:
        """The registry of ``mdata`` as the plain dict the model keeps (and saves) in ``model.setup``."""
        return registry(mdata).to_dict()

    def _check_features(self, mdata, modalities=("rna", "atac")) -> dict[str, np.ndarray | None]:
        """Map the data's features onto the model's; raise naming the differences."""
        return check_features(self, mdata, modalities)

    def subset_to_model(self, mdata):
        """Return a copy of ``mdata`` restricted to the model's genes and peaks, in the model's order.

        Raises
        ------
        FeatureMismatchError
            When some of the model's features are absent from the data (naming them).
        """
        return _subset_to_model(self, mdata)

    def _matrix(self, mdata, mod: str, order: np.ndarray | None = None) -> sp.csr_matrix:
        """The registered raw matrix of ``mod`` (validated CSR, model's feature order when ``order`` is given)."""
        return model_matrix(self, mdata, mod, order)

    # ------------------------------------------------------------------ tensor API
    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = get_device()
            self.module.to(self._device)
        return self._device

    def to(self, device: str | torch.device) -> ScDiffusionX:
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``)."""
        self._device = get_device(str(device))
        self.module.to(self._device)
        return self

    def rna_tensor(self, X) -> torch.Tensor:
        """Encoder input from RNA counts (cells x model genes): ``log1p(1e4 * x / library)``."""
        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32, device=self.device)
        return log_normalize(x)

    def atac_tensor(self, X) -> torch.Tensor:
        """Encoder input from ATAC counts or binary values (cells x model peaks): binarised."""
        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32, device=self.device)
        return (x > 0).float()

    def encode(self, modality: str, x_input: torch.Tensor) -> torch.Tensor:
        """Normalised latent of a modality from its encoder input (``rna_tensor``/``atac_tensor``)."""
        return self.module.encode(modality, x_input)

    def decode_rna(self, z: torch.Tensor) -> torch.Tensor:
        """Expression proportions (softmax over genes) from a normalised RNA latent."""
        return self.module.decode("rna", z)

    def decode_atac(self, z: torch.Tensor) -> torch.Tensor:
        """Accessibility probabilities from a normalised ATAC latent."""
        return self.module.decode("atac", z)

    def condition_indices(self, labels: Mapping[str, Any] | pd.DataFrame | None, n: int | None = None) -> torch.Tensor:
        """Label indices (n, n_label_keys); missing keys or ``None`` values get the null label.

        Raises
        ------
        MissingLabelError
            When a value was not seen in training (naming the values and the known categories).
        """
        return torch.as_tensor(label_indices(self.config, labels, n), device=self.device)

    # ------------------------------------------------------------------ training
    def train(self, *, ae_epochs: int = 40, diffusion_steps: int = 20_000, batch_size: int = 256,
              ae_lr: float = 1e-3, lr: float = 5e-4, weight_decay: float = 1e-4, ema_decay: float = 0.999,
              grad_clip: float = 1.0, seed: int = 0, device: str | None = None, split_key: str | None = None,
              train_value: str = "train", checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int = 1000, resume: bool = False, compile: bool = False,
              log_every: int = 100, precision: str = "auto", mdata=None, preset: str | None = None,
              time_budget: float | None = None) -> dict[str, list[float]]:
        """Train the autoencoders, fit the latent normalisation, then train the denoiser.

        Parameters
        ----------
        ae_epochs
            Epochs of autoencoder training (both modalities together).
        diffusion_steps
            Optimiser steps of denoiser training on the (fixed) normalised latents.
        batch_size
            Cells per step (split across processes under DDP).
        ae_lr, lr, weight_decay, ema_decay, grad_clip
            AdamW learning rates (autoencoders, denoiser), weight decay, EMA decay of the denoiser
            weights used for sampling, gradient-norm clipping.
        seed
            Seeds every random choice (batches, noise, timesteps, label dropout, dropout).
        device
            ``None`` uses ``settings.device`` (CUDA when present).
        split_key, train_value
            Train only on cells with ``obs[split_key] == train_value``.
        checkpoint_dir, checkpoint_every, resume
            Write an atomic training checkpoint every ``checkpoint_every`` steps (and after each
            autoencoder epoch); ``resume=True`` continues from it with identical results to an
            uninterrupted run on the same device.
        compile
            ``torch.compile`` the denoiser (see BENCHMARKS.md, "Speed", for where it pays).
        log_every
            Denoiser steps per entry of ``history["diffusion_loss"]`` (the mean loss of those steps;
            the loss is summed on the device and read once per entry).
        precision
            ``"auto"`` (bf16 autocast on CUDA, float32 on CPU), ``"fp32"`` or ``"bf16"`` (autocast on
            any device). See ``docs/training.md`` for devices, precision and speed.
        mdata
            The training MuData (defaults to the one given at construction if it was kept).
        preset, time_budget
            ``"auto"``: time a few steps on a copy of the model, then pick the epochs / steps (and the
            batch size) that fit ``time_budget`` seconds (default: the full recipe on a GPU, one hour on
            a CPU); a name of ``model.PRESETS``: its training options. Either way the estimated time is
            printed before training starts (``model.train_plan`` keeps it); see ``model._autopreset``.
            The preset's values replace ``ae_epochs``, ``diffusion_steps``, ``batch_size`` (and ``lr``).

        Returns
        -------
        The loss history (also in ``model.history``).
        """
        from ._train import Trainer, check_train_options

        check_train_options(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, batch_size=batch_size,
                            checkpoint_every=checkpoint_every, log_every=log_every, ae_lr=ae_lr, lr=lr,
                            weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay)
        if mdata is None:
            mdata = getattr(self, "_train_mdata", None)
            if mdata is None:
                raise ScdxError("pass the training data: model.train(mdata=...)")
        if device is not None:
            self.to(device)
        if preset is not None:
            from ._autopreset import apply_preset

            o = apply_preset(self, mdata, preset, time_budget=time_budget, batch_size=batch_size, lr=lr,
                             split_key=split_key, train_value=train_value, seed=seed, device=device)
            self.train_plan = o["plan"]
            ae_epochs, diffusion_steps = o["plan"]["ae_epochs"], o["plan"]["diffusion_steps"]
            batch_size, lr = o["batch_size"], o["lr"]
        trainer = Trainer(self, mdata, batch_size=batch_size, ae_lr=ae_lr, lr=lr, weight_decay=weight_decay,
                          ema_decay=ema_decay, grad_clip=grad_clip, seed=seed, split_key=split_key,
                          train_value=train_value, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=checkpoint_every, compile=compile, log_every=log_every,
                          precision=precision)
        trainer.run(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, resume=resume)
        return self.history

    # ------------------------------------------------------------------ cells in, cells out
    def generate(self, labels: Mapping[str, Sequence] | pd.DataFrame | int | None = None, *, n_cells: int | None = None,
                 sampler: str = "dpm++", n_steps: int = 20, guidance_scale: float | Mapping[str, float] = 1.0,
                 guidance_mode: str = "joint", seed: int = 0, batch_size: int = 1024,
                 sample_counts: bool = True, atac_probs: bool | None = None,
                 classifier_guidance: Mapping[str, tuple] | None = None, guidance_hook=None,
                 guidance: Guidance | None = None):
        """Generate paired cells (RNA-only cells for a single-modality model).

        Parameters
        ----------
        labels
            Per-cell labels: ``{"cell_type": [...]}`` or a DataFrame (keys not given are left
            unconditioned), or an int (that many cells with labels drawn from training frequencies).
        n_cells
            With a single-row ``labels``, repeat it ``n_cells`` times.
        sampler, n_steps
            ``"ddpm"``, ``"ddim"`` or ``"dpm++"`` and its number of steps.
        guidance_scale, guidance_mode
            Classifier-free guidance: one scale for all labels (``"joint"``), or a dict
            ``{label: scale}`` with ``"additive"`` guidance (sum of per-label guidance terms).
        seed
            Seeds the latent noise, library sizes and count sampling. A cell's noise (the
            per-step noise of ``"ddpm"`` too: keyed by the cell's index and ``seed``) does not
            depend on ``batch_size``: any batch size gives the same cells.
        batch_size
            Cells per sampler batch (memory only).
        sample_counts
            Sample RNA counts from the negative binomial and peaks from the Bernoulli (else the
            means / rounded probabilities).
        atac_probs
            Keep the dense peak probabilities in ``atac.layers['prob']`` (default: when it is
            under 200 million values).
        classifier_guidance
            scDiffusion-style guidance by noisy-latent classifiers trained separately
            (:func:`~scdiffx_grn.model.train_latent_classifier`):
            ``{label_key: (classifier, target_values, scale)}``; ``target_values`` is one value or
            one per cell. Each classifier adds ``-scale * k(t) * grad log p(y | x_t)`` to the model
            output (``k = sqrt(1 - abar)`` for epsilon prediction); several are summed.
            Combines with classifier-free guidance.
        guidance
            Advanced: a guidance object (:mod:`~scdiffx_grn.model._guidance`:
            ``guidance(pipeline, state) -> (out_rna, out_atac)``) replacing the label guidance,
            e.g. a ``MixGuidance`` of two states (:func:`~scdiffx_grn.model.interpolate`).
        guidance_hook
            Older form of ``guidance``: ``hook(start, stop) -> output_fn(x_r, x_a, t, cond, sched)``
            per batch of cells ``[start, stop)``.

        Returns
        -------
        MuData with ``rna`` (X = counts, ``layers['counts']``, ``obs['library_size']``) and ``atac``
        (X = binary peaks, ``layers['prob']``), obs holding the labels.
        """
        from ._generate import generate_cells

        opts = SamplingOptions(sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale,
                               guidance_mode=guidance_mode, readout="samples").checked(self.config)
        return generate_cells(self, labels, opts, n_cells=n_cells, seed=seed, batch_size=batch_size,
                              sample_counts=sample_counts, atac_probs=atac_probs,
                              classifier_guidance=classifier_guidance, guidance_hook=guidance_hook, guidance=guidance)

    def translate(self, mdata, direction: str = "atac->rna", *, readout: str | None = None,
                  n_samples: int | None = None, n_noise: int = 4, sampler: str = "ddim", n_steps: int = 50,
                  seed: int = 0, labels: str | Mapping | pd.DataFrame | None = None, guidance_scale: float = 1.0,
                  source_guidance: float = 1.0, method: str = "conditional", recon_guidance: float = 0.0,
                  batch_size: int = 512, return_samples: bool = False, calibrated: bool = False):
        """Translate one modality into the other, cell by cell (pairing kept).

        Parameters
        ----------
        mdata
            MuData holding at least the source modality (``atac`` for ``"atac->rna"``) with the
            model's features.
        direction
            ``"atac->rna"`` or ``"rna->atac"``.
        readout
            ``"mean"`` (default unless ``n_samples`` is given): the posterior mean, the point
            prediction to compare with other predictors. Each cell's target latent is the
            denoiser's clean-latent estimate from pure noise at the noisiest timestep (one call),
            averaged over ``n_noise`` noises, then decoded once. ``"samples"``: ``n_samples``
            posterior samples (default 10) by ``sampler`` / ``n_steps``, for uncertainty; ``X`` is
            the decoded latent mean of the samples (samples are never averaged in decoded
            space, which blurs a broad posterior into the worst point estimate).
        n_samples
            Posterior samples per cell (implies ``readout="samples"``, as does ``method="inpaint"``).
        n_noise
            Noises averaged by the mean readout (1 is nearly as good: the estimate barely
            depends on the noise).
        sampler, n_steps
            Sampler and steps of the samples readout (``"ddim"`` with eta=0, ``"dpm++"`` and the
            flow samplers are deterministic given the noise; ``"ddpm"`` draws per-cell step noise).
        seed
            Seeds the noise. The noise of cell *i* is keyed by the seed, the sample index and
            the cell's obs name, so a cell's translation does not depend on its row, on the
            other cells or on ``batch_size``; edited vs unedited copies with the same names
            are paired.
        labels
            ``None`` (default: translate from the observed modality alone), ``"auto"`` (use the
            model's label columns from ``mdata.obs``), or explicit per-cell labels.
        guidance_scale
            Classifier-free guidance over the labels (1: none).
        source_guidance
            Classifier-free guidance over the observed modality, ``u + w (c - u)`` with ``u`` the
            prediction from a null source (models trained with ``source_dropout > 0``). 1: none.
            Values of 2-4 sharpen single samples toward the source's cell state; the posterior
            mean is best at 1.
        method, recon_guidance
            ``"conditional"`` (the observed latent given clean to the denoiser; default) or
            ``"inpaint"`` (joint denoising with the observed branch replaced by its noised latent,
            optionally with reconstruction guidance of weight ``recon_guidance``; samples readout).
        calibrated
            Apply the calibration fitted by :meth:`calibrate_translation` for this direction
            (``"rna->atac"``, mean readout) to the peak probabilities. Off by default: a
            calibration is used only when asked for, and asking without one fitted raises.

        Returns
        -------
        AnnData with ``obs_names`` equal to ``mdata``'s and the target modality's features:
        ``X`` is ``log1p(1e4 * rho)`` (RNA) or peak probabilities (ATAC) of the posterior-mean
        latent (mean readout) or of the samples' latent mean; ``obsm['latent']`` that latent;
        for the samples readout ``layers['std']`` is the standard deviation over decoded samples
        and, with ``return_samples``, ``uns['samples']`` holds the (n_samples, cells, features)
        array of decoded samples.
        """
        from ._translate import resolve_readout, translate_cells

        readout, n_samples = resolve_readout(readout, n_samples, n_noise, method)
        opts = SamplingOptions(sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale, readout=readout,
                               source_guidance=source_guidance, method=method,
                               recon_guidance=recon_guidance).checked(self.config)
        calibration = None
        if calibrated:
            from ._calibration import fitted_calibration

            calibration = fitted_calibration(self, direction, readout)
        return translate_cells(self, mdata, direction, opts, n_samples=n_samples, n_noise=n_noise, seed=seed,
                               labels=labels, batch_size=batch_size, return_samples=return_samples,
                               calibration=calibration)

    def calibrate_translation(self, mdata, direction: str = "rna->atac", *, cells=None, method: str = "offset",
                              val_cells="val", n_noise: int = 4, seed: int = 0, batch_size: int = 512) -> dict[str, Any]:
        """Fit a post-hoc calibration of the posterior-mean RNA->ATAC translation (never on test cells),
        stored in ``translation_calibration[direction]``, saved with the model and applied only by
        ``translate(..., calibrated=True)``. ``method``: ``"offset"`` (default; one logit offset fitted on
        the ``val`` cells, AUROCs unchanged), ``"amplitude"``, ``"affine"``, or ``"head"`` (a learned
        readout of the posterior-mean latent fitted on the ``train`` cells, stopped on ``val_cells``;
        raises both AUROCs). See :func:`scdiffx_grn.model._calibration.calibrate_translation` for the
        parameters, what is fitted and why, and the measured effect."""
        from ._calibration import calibrate_translation

        return calibrate_translation(self, mdata, direction, cells=cells, method=method, val_cells=val_cells,
                                     n_noise=n_noise, seed=seed, batch_size=batch_size)

    def get_latent(self, mdata, modality: str = "rna", *, batch_size: int = 1024) -> np.ndarray:
        """Normalised latent of each cell (cells x latent_dim) from one modality."""
        from ._translate import encode_cells

        return encode_cells(self, mdata, modality, batch_size=batch_size)

    @torch.no_grad()
    def reconstruct(self, mdata, modality: str = "rna", *, batch_size: int = 1024) -> np.ndarray:
        """Autoencoder reconstruction: RNA proportions ``rho`` or ATAC probabilities (cells x features)."""
        z = torch.as_tensor(self.get_latent(mdata, modality, batch_size=batch_size), device=self.device)
        dec = self.decode_rna if modality == "rna" else self.decode_atac
        return np.concatenate([dec(z[s:s + batch_size]).cpu().numpy() for s in range(0, len(z), batch_size)])

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, *, overwrite: bool = False, half: bool | None = None) -> None:
        """Save to a directory: ``config.json``, ``model.pt`` (state_dict), var names, setup.

        The directory is written beside its final place and renamed when complete, so a crash
        never leaves a half-written checkpoint. ``model.pt`` loads with ``weights_only=True``.
        ``half=True`` stores float weights as float16 (half the size; loaded back as float32);
        ``None`` (default) keeps the precision the model was loaded with (float32 for a new model).
        """
        save_model(self, path, overwrite=overwrite, half=half)

    @classmethod
    def load_pretrained(cls, name: str = "mouse_mop_demo", mdata=None, *, device: str | None = None) -> ScDiffusionX:
        """Load a checkpoint shipped with the package by name (``"mouse_mop_demo"``), from any folder."""
        return cls.load(pretrained_path(name), mdata, device=device)

    @classmethod
    def load(cls, path: str | os.PathLike, mdata=None, *, device: str | None = None) -> ScDiffusionX:
        """Load a saved model; with ``mdata``, refuse data whose features differ (naming them).

        Raises
        ------
        CheckpointError
            Missing directory or files, unreadable / truncated weights, unknown format version.
        FeatureMismatchError
            ``mdata``'s genes or peaks differ from the model's.
        """
        return load_model(cls, path, mdata, device=device)

    def __repr__(self) -> str:
        c = self.config
        n_par = sum(p.numel() for p in self.module.parameters())
        return (f"ScDiffusionX(genes={c.n_genes}, peaks={c.n_peaks}, latent={c.latent_dim}, "
                f"tokens={c.n_tokens}x{c.token_dim}, width={c.width}, heads={c.n_heads}, layers={c.n_layers}, "
                f"labels={c.label_keys}, params={n_par / 1e6:.2f}M, trained={bool(int(self.module.fitted))})")
