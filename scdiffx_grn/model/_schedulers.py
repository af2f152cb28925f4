"""Samplers with a diffusers-like API: one base class, diffusion schedules, the registry's front.

Every sampler is a :class:`Sampler`: ``set_timesteps(n)``, a descending ``timesteps`` tensor and
``step(model_output, timestep, sample, generator=None, noise=None) -> prev_sample``; its forward
process (``add_noise``, ``target``, ``to_x0_eps``, ``guidance_coef``, ``recon_guidance_coef``,
``alpha_bar`` / ``snr`` for diffusion, ``timestep_dtype``) is public, so nothing outside the
sampler classes reads their private state. Randomness only comes from explicit ``torch.Generator``
objects (or the ``noise`` given to :meth:`Sampler.step`).

Two kinds (the training objective, :data:`scdiffx_grn._samplers.SAMPLER_KINDS`):

- :class:`DiffusionSampler` (``kind = "diffusion"``): :class:`DDPMScheduler` (ancestral, strided
  when ``n < n_train_timesteps``), :class:`DDIMScheduler` (deterministic for ``eta=0``),
  :class:`DPMSolverMultistepScheduler` (DPM-Solver++(2M), good samples in 10-25 steps);
- :class:`~scdiffx_grn.model._flow.FlowSampler` (``kind = "flow"``): Euler and Heun ODE samplers.

Samplers are looked up by name in the one registry (:mod:`scdiffx_grn._samplers`):
:func:`make_scheduler` builds the named sampler for a model config, refusing one of the other kind;
:func:`~scdiffx_grn.model.register_sampler` adds one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._errors import OptionError
from .._samplers import SamplerTable, get_sampler

__all__ = ["Sampler", "DiffusionSampler", "DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler",
           "SAMPLERS", "make_scheduler", "training_scheduler", "deterministic_sampler", "default_sampler",
           "make_alphas_cumprod"]


def make_alphas_cumprod(n: int, kind: str) -> torch.Tensor:
    """Cumulative product of alphas for a ``linear`` (DDPM) or ``cosine`` schedule (float64)."""
    if kind == "linear":
        betas = np.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n, dtype=np.float64)
    elif kind == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)], dtype=np.float64)
    else:
        raise OptionError(f"unknown beta schedule {kind!r}")
    return torch.from_numpy(np.cumprod(1.0 - betas))


class Sampler:
    """Base class of every sampler (subclass :class:`DiffusionSampler` or ``FlowSampler``).

    A subclass sets ``name``, ``kind`` (the training objective it samples from), ``stochastic``
    (its steps draw fresh noise: then :meth:`step` takes ``noise=``, so that a cell's noise can
    be keyed by the cell) and implements :meth:`from_config`, :meth:`set_timesteps`, :meth:`step`
    and the forward process of its kind. Register it with
    :func:`~scdiffx_grn.model.register_sampler` to use it as ``sampler=name``.
    """

    name = "base"
    #: the training objective this sampler inverts: "diffusion" or "flow"
    kind: str | None = None
    #: True for samplers whose steps draw fresh noise (they accept ``noise=`` in :meth:`step`)
    stochastic = False
    #: dtype of the timesteps the denoiser sees (integers for diffusion, model time for flow)
    timestep_dtype = torch.long
    num_train_timesteps: int
    prediction_type: str
    #: the sampling timesteps, descending (set by :meth:`set_timesteps`)
    timesteps: torch.Tensor

    @classmethod
    def from_config(cls, cfg, **kwargs) -> Sampler:  # pragma: no cover - abstract
        """A sampler for a model of config ``cfg`` (``n_train_timesteps``, ``beta_schedule``, ``prediction``)."""
        raise NotImplementedError

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:  # pragma: no cover - abstract
        """Set ``timesteps`` to ``num_inference_steps`` steps from noise to data and reset multistep state."""
        raise NotImplementedError

    def step(self, model_output, timestep, sample, generator=None, noise=None):  # pragma: no cover - abstract
        """The sample one step closer to the data, from the denoiser's ``model_output`` at ``timestep``."""
        raise NotImplementedError

    # --- the forward process of its kind (DiffusionSampler / FlowSampler implement it) ------------
    def add_noise(self, x0, noise, t):  # pragma: no cover - abstract
        """``x_t`` of clean ``x0`` and ``noise`` at timesteps ``t`` (B,)."""
        raise NotImplementedError

    def target(self, x0, noise, t):  # pragma: no cover - abstract
        """The denoiser's regression target."""
        raise NotImplementedError

    def to_x0_eps(self, model_output, sample, t):  # pragma: no cover - abstract
        """``(x0, eps)`` estimates from a model output at timesteps ``t``."""
        raise NotImplementedError

    def guidance_coef(self, t, like):  # pragma: no cover - abstract
        """Factor ``k`` of classifier guidance, ``output - scale * k * grad log p(y | x_t)``."""
        raise NotImplementedError

    def recon_guidance_coef(self, t, like):  # pragma: no cover - abstract
        """Factor of reconstruction guidance (inpainting translation)."""
        raise NotImplementedError

    @property
    def posterior_mean_timestep(self):  # pragma: no cover - abstract
        """Timestep of the one-call posterior-mean readout (pure noise)."""
        raise NotImplementedError


class DiffusionSampler(Sampler):
    """Base of the diffusion samplers: the discrete forward process ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``."""

    name = "diffusion"
    kind = "diffusion"

    @classmethod
    def from_config(cls, cfg, **kwargs) -> DiffusionSampler:
        return cls(cfg.n_train_timesteps, cfg.beta_schedule, cfg.prediction, **kwargs)

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v", "x0"):
            raise OptionError(f"prediction_type must be 'epsilon', 'v' or 'x0', got {prediction_type!r}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.prediction_type = prediction_type
        self.alphas_cumprod = make_alphas_cumprod(self.num_train_timesteps, beta_schedule)
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)

    # --- training helpers -----------------------------------------------------------
    def _table(self, device) -> torch.Tensor:
        """``alphas_cumprod`` on ``device``, copied there once (no host -> device copy per call)."""
        device = torch.device(device)
        if self.alphas_cumprod.device == device:
            return self.alphas_cumprod
        cache = self.__dict__.setdefault("_tables", {})
        if device not in cache:
            cache[device] = self.alphas_cumprod.to(device)
        return cache[device]

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar_t`` at timesteps ``t`` (B,), shaped to broadcast against ``like`` (B, ...) and in its
        dtype / device; ``t < 0`` (clean data) gives 1."""
        a = self._table(like.device)[t.long().clamp(min=0).to(like.device)]
        a = torch.where(t.to(like.device) < 0, torch.ones_like(a), a)
        return a.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Regression target: the noise, the clean latent, or the velocity ``sqrt(a) eps - sqrt(1-a) x0``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "x0":
            return x0
        a = self.alpha_bar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``abar / (1 - abar)`` at integer timesteps (shape (B,))."""
        a = self._table(t.device)[t.long().clamp(0, self.num_train_timesteps - 1)].float()
        return a / (1 - a).clamp(min=1e-12)

    def loss_weight(self, t: torch.Tensor, kind: str = "none", gamma: float = 5.0) -> torch.Tensor:
        """Per-example weight of the MSE of :meth:`target` (shape (B,)).

        ``"none"``: 1. ``"min_snr"``: the weight that makes the loss equal to the clean-latent
        error times ``min(SNR, gamma)`` (Hang et al. 2023): ``min(SNR, g) / SNR`` for epsilon,
        ``min(SNR, g) / (SNR + 1)`` for v, ``min(SNR, g)`` for x0.
        """
        if kind == "none":
            return torch.ones(t.shape[0], device=t.device)
        if kind != "min_snr":
            raise OptionError(f"unknown loss weighting {kind!r}")
        snr = self.snr(t)
        w = snr.clamp(max=float(gamma))
        if self.prediction_type == "epsilon":
            return w / snr.clamp(min=1e-12)
        if self.prediction_type == "v":
            return w / (snr + 1)
        return w

    @property
    def posterior_mean_timestep(self) -> int:
        """Timestep of the one-call posterior-mean readout: the noisiest training timestep ``T - 1``.

        There ``x_t`` carries almost no information about the target (``abar`` ~ 4e-5 for the
        linear schedule), so the MSE-trained clean-latent estimate is ``E[z_tgt | source, labels]``.
        """
        return self.num_train_timesteps - 1

    def sample_training_timesteps(self, n: int, generator=None) -> torch.Tensor:
        """Integer training timesteps, uniform on [0, T)."""
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator)

    def guidance_coef(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Factor ``k`` with ``output' = output - scale * k * grad log p(y | x_t)`` (classifier guidance).

        ``sqrt(1 - abar)`` for epsilon prediction (Dhariwal & Nichol); ``sqrt((1 - abar) / abar)``
        for velocity prediction (the same change of the implied epsilon).
        """
        a = self.alpha_bar(t, like)
        k = (1 - a).sqrt()
        if self.prediction_type == "x0":  # d x0 / d eps = -sqrt(1 - abar) / sqrt(abar)
            return -(1 - a) / a.sqrt()
        return k if self.prediction_type == "epsilon" else k / a.sqrt()

    def recon_guidance_coef(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Factor of reconstruction guidance (inpainting translation): the noise level ``sqrt(1 - abar)``."""
        return (1 - self.alpha_bar(t, like)).sqrt()

    def to_x0_eps(self, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor):
        """Convert a model output at timestep ``t`` into (x0, eps) estimates."""
        a = self.alpha_bar(t, sample)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        elif self.prediction_type == "x0":
            x0 = model_output
            eps = (sample - a.sqrt() * x0) / (1 - a).sqrt().clamp(min=1e-6)
        else:
            x0 = a.sqrt() * sample - (1 - a).sqrt() * model_output
            eps = a.sqrt() * model_output + (1 - a).sqrt() * sample
        return x0, eps

    # --- sampling ---------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise OptionError(f"num_inference_steps must be in [1, {self.num_train_timesteps}], got {n}")
        ts = np.linspace(0, self.num_train_timesteps - 1, n).round().astype(np.int64)[::-1].copy()
        self.timesteps = torch.from_numpy(ts).to(device)
        self._prev = {int(t): (int(ts[i + 1]) if i + 1 < n else -1) for i, t in enumerate(ts)}
        self._reset()

    def _reset(self) -> None:
        pass

    def prev_timestep(self, t: int) -> int:
        return self._prev[int(t)]

    def _scalars(self, t: int, sample: torch.Tensor):
        tp = self.prev_timestep(t)
        a_t = float(self.alphas_cumprod[t])
        a_p = float(self.alphas_cumprod[tp]) if tp >= 0 else 1.0
        return a_t, a_p, tp

    def _x0_eps(self, model_output, t, sample):
        tt = torch.full((sample.shape[0],), int(t), device=sample.device, dtype=torch.long)
        return self.to_x0_eps(model_output, sample, tt)


class DDPMScheduler(DiffusionSampler):
    """Ancestral DDPM sampler (posterior q(x_prev | x_t, x0) between strided timesteps)."""

    name = "ddpm"
    stochastic = True

    def step(self, model_output, timestep, sample, generator=None, noise=None):
        t = int(timestep)
        a_t, a_p, tp = self._scalars(t, sample)
        x0, _ = self._x0_eps(model_output, t, sample)
        alpha = a_t / a_p
        beta = 1.0 - alpha
        mean = (math.sqrt(a_p) * beta / (1 - a_t)) * x0 + (math.sqrt(alpha) * (1 - a_p) / (1 - a_t)) * sample
        if tp < 0:
            return mean
        var = (1 - a_p) / (1 - a_t) * beta
        if noise is None:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        return mean + math.sqrt(max(var, 1e-20)) * noise


class DDIMScheduler(DiffusionSampler):
    """DDIM sampler; ``eta=0`` is deterministic given the initial noise."""

    name = "ddim"

    def __init__(self, *args, eta: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta = float(eta)

    def step(self, model_output, timestep, sample, generator=None, noise=None):
        t = int(timestep)
        a_t, a_p, tp = self._scalars(t, sample)
        x0, eps = self._x0_eps(model_output, t, sample)
        sigma = self.eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)) if tp >= 0 else 0.0
        out = math.sqrt(a_p) * x0 + math.sqrt(max(1 - a_p - sigma**2, 0.0)) * eps
        if sigma > 0:
            if noise is None:
                noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            out = out + sigma * noise
        return out


class DPMSolverMultistepScheduler(DiffusionSampler):
    """DPM-Solver++(2M) in data-prediction form (Lu et al. 2022), first order on the first step."""

    name = "dpm++"

    def _reset(self) -> None:
        self._last_x0 = None
        self._last_h = None

    @staticmethod
    def _lam(a: float) -> float:
        return 0.5 * math.log(a) - 0.5 * math.log(max(1 - a, 1e-20))

    def step(self, model_output, timestep, sample, generator=None, noise=None):
        t = int(timestep)
        a_t, a_p, tp = self._scalars(t, sample)
        x0, _ = self._x0_eps(model_output, t, sample)
        if tp < 0:  # last step lands on clean data: first-order update reduces to x0
            self._reset()
            return x0
        sig_t, sig_p = math.sqrt(1 - a_t), math.sqrt(1 - a_p)
        h = self._lam(a_p) - self._lam(a_t)
        if self._last_x0 is None:
            d = x0
        else:
            r = self._last_h / h
            d = x0 + (x0 - self._last_x0) / (2 * r)
        out = (sig_p / sig_t) * sample - math.sqrt(a_p) * math.expm1(-h) * d
        self._last_x0, self._last_h = x0, h
        return out


#: the registered diffusion samplers, name -> class (a live view of the registry)
SAMPLERS = SamplerTable("diffusion")

#: per objective: the forward process it is trained with, the deterministic sampler of the
#: posterior-mean readout, the default sampler of generation
_OBJECTIVE_SAMPLERS = {"diffusion": ("ddpm", "ddim", "dpm++"), "flow": ("euler", "euler", "euler")}


def _objective(cfg) -> str:
    return getattr(cfg, "objective", "diffusion")


def training_scheduler(cfg) -> Sampler:
    """The sampler whose forward process (``add_noise``, ``target``, ``sample_training_timesteps``)
    a model of config ``cfg`` was trained with: DDPM for diffusion, Euler for flow models."""
    return make_scheduler(_OBJECTIVE_SAMPLERS[_objective(cfg)][0], cfg)


def deterministic_sampler(cfg) -> str:
    """Name of the deterministic sampler of the posterior-mean readout: ``"ddim"`` (diffusion), ``"euler"`` (flow)."""
    return _OBJECTIVE_SAMPLERS[_objective(cfg)][1]


def default_sampler(cfg) -> str:
    """Name of the default generation sampler: ``"dpm++"`` (diffusion), ``"euler"`` (flow)."""
    return _OBJECTIVE_SAMPLERS[_objective(cfg)][2]


def make_scheduler(name: str, cfg, **kwargs) -> Sampler:
    """A fresh sampler by name for a model config (``cls.from_config(cfg, **kwargs)`` of the registered class).

    Diffusion models (``cfg.objective == "diffusion"``): ``"ddpm"``, ``"ddim"``, ``"dpm++"``.
    Flow-matching models (``"flow"``): the ODE samplers ``"euler"``, ``"heun"``. Plus any sampler
    registered for that objective (:func:`~scdiffx_grn.model.register_sampler`).

    Raises
    ------
    OptionError
        An unknown name, or a sampler of the other objective, naming the model's samplers.
    """
    return get_sampler(name, _objective(cfg)).from_config(cfg, **kwargs)
