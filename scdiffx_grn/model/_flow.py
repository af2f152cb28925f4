"""Flow matching (scLDM) with linear interpolants, and fixed-step ODE samplers.

Time convention (the same direction as the diffusion timesteps): ``t = 0`` is clean data and
``t = 1`` is pure noise,

    x_t = (1 - t) x0 + t eps,        velocity target  v = d x_t / d t = eps - x0,

and sampling integrates ``dx/dt = v(x, t)`` from ``t = 1`` down to ``t = 0``. So a clean,
observed modality (translation) is simply given at ``t = 0``, exactly as with diffusion.

The denoiser and these schedulers work in *model time* ``tau = t * num_train_timesteps``
(a float in ``[0, T]``) so that the sinusoidal timestep embedding sees the same range as for
diffusion models; every method below takes and returns model time.

The samplers are :class:`~scdiffx_grn.model.Sampler` s of kind ``"flow"`` (:class:`FlowSampler`),
with the diffusion samplers' API (``set_timesteps``, descending ``timesteps``, ``step``,
``add_noise``, ``target``, ``to_x0_eps``, ``guidance_coef``), registered as ``"euler"`` and ``"heun"``:

- :class:`FlowEulerScheduler`: ``x <- x + (t_next - t) v`` (one model call per step).
- :class:`FlowHeunScheduler`: Heun's second-order method; ``timesteps`` repeats each interior
  time (predictor / corrector evaluations, 2n-1 model calls for n steps, the last step is Euler
  so that the velocity is never queried at ``t = 0``).
"""

from __future__ import annotations

import torch

from .._errors import OptionError, ScdxError
from .._samplers import SamplerTable
from ._schedulers import Sampler

__all__ = ["FlowSampler", "FlowEulerScheduler", "FlowHeunScheduler", "FLOW_SAMPLERS", "MAX_GUIDANCE_RATIO"]

#: largest factor t / (1 - t) used to turn a score into a velocity correction (t -> 1 diverges)
MAX_GUIDANCE_RATIO = 20.0


class FlowSampler(Sampler):
    """Base of the flow-matching ODE samplers: the linear interpolant ``x_t = (1 - t) x0 + t eps`` in model time."""

    name = "flow"
    kind = "flow"

    @classmethod
    def from_config(cls, cfg, **kwargs) -> FlowSampler:
        return cls(cfg.n_train_timesteps, **kwargs)

    def __init__(self, num_train_timesteps: int = 1000, **_):
        self.num_train_timesteps = int(num_train_timesteps)
        self.prediction_type = "velocity"
        self.set_timesteps(self.num_train_timesteps)

    # --- training helpers (t in model time) -----------------------------------------------
    def _frac(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        s = (t.to(like.device).to(like.dtype) / self.num_train_timesteps).clamp(0.0, 1.0)
        return s.view(-1, *([1] * (like.dim() - 1)))

    def sample_training_timesteps(self, n: int, generator=None) -> torch.Tensor:
        """Continuous training times (model time), uniform on [0, T)."""
        return torch.rand(n, generator=generator) * self.num_train_timesteps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._frac(t, x0)
        return (1 - s) * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity ``eps - x0``."""
        return noise - x0

    def to_x0_eps(self, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor):
        """(x0, eps) estimates from a velocity: ``x0 = x - t v``, ``eps = x + (1 - t) v``."""
        s = self._frac(t, sample)
        return sample - s * model_output, sample + (1 - s) * model_output

    def guidance_coef(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Factor ``k`` with ``v' = v - scale * k * grad log p(y | x_t)``.

        The score of ``x_t`` is ``-eps / t``; guiding the score by ``scale * grad`` changes the
        velocity by ``-scale * t / (1 - t) * grad`` (capped at :data:`MAX_GUIDANCE_RATIO`).
        """
        s = self._frac(t, like)
        return (s / (1 - s).clamp(min=1e-6)).clamp(max=MAX_GUIDANCE_RATIO)

    def recon_guidance_coef(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Factor of reconstruction guidance (inpainting translation): the classifier-guidance factor."""
        return self.guidance_coef(t, like)

    def loss_weight(self, t: torch.Tensor, kind: str = "none", gamma: float = 5.0) -> torch.Tensor:
        """Per-example loss weight: flow matching already weighs the clean-latent error by 1."""
        if kind not in ("none", "min_snr"):
            raise OptionError(f"unknown loss weighting {kind!r}")
        return torch.ones(t.shape[0], device=t.device)

    @property
    def posterior_mean_timestep(self) -> float:
        """Model time of the one-call posterior-mean readout (pure noise, ``t = 1``)."""
        return float(self.num_train_timesteps)

    #: dtype of the timesteps the denoiser sees (model time, a float)
    timestep_dtype = torch.float32

    # --- sampling -----------------------------------------------------------------------------
    def _grid(self, n: int) -> torch.Tensor:
        if not 1 <= n <= 100_000:
            raise OptionError(f"num_inference_steps must be >= 1, got {n}")
        return torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64) * self.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        grid = self._grid(int(num_inference_steps))
        self._grid_t = grid
        self.timesteps = grid[:-1].to(torch.float32).to(device)
        self._i = 0

    def _reset(self) -> None:
        self._i = 0

    def _dt(self, i: int) -> float:
        return float(self._grid_t[i + 1] - self._grid_t[i]) / self.num_train_timesteps


class FlowEulerScheduler(FlowSampler):
    """Explicit Euler integration of the flow ODE from t=1 to t=0 over a uniform grid."""

    name = "euler"

    def step(self, model_output, timestep, sample, generator=None, noise=None):
        i = self._i
        if i >= len(self._grid_t) - 1:
            raise ScdxError("step() called more times than there are timesteps: call set_timesteps() again")
        self._i += 1
        return sample + self._dt(i) * model_output


class FlowHeunScheduler(FlowSampler):
    """Heun (explicit trapezoid) integration; the final step (to t=0) is an Euler step."""

    name = "heun"

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        grid = self._grid(int(num_inference_steps))
        self._grid_t = grid
        ts = [grid[0]]
        for i in range(1, len(grid) - 1):
            ts += [grid[i], grid[i]]  # corrector of step i-1 (at t_i), then predictor of step i
        self.timesteps = torch.stack(ts).to(torch.float32).to(device)
        self._reset()

    def _reset(self) -> None:
        self._k = 0  # position in self.timesteps
        self._x = None  # sample at the start of the current step
        self._v = None  # its velocity

    def step(self, model_output, timestep, sample, generator=None, noise=None):
        # even positions k = 2i: predictor of step i (at t_i); odd k = 2i+1: corrector of step i (at t_{i+1})
        k = self._k
        if k >= len(self.timesteps):
            raise ScdxError("step() called more times than there are timesteps: call set_timesteps() again")
        self._k += 1
        i = k // 2
        dt = self._dt(i)
        if k % 2 == 0:
            if i < len(self._grid_t) - 2:  # not the last step: keep the state for the corrector
                self._x, self._v = sample, model_output
            return sample + dt * model_output
        out = self._x + dt * 0.5 * (self._v + model_output)
        self._x = self._v = None
        return out


#: the registered flow-matching samplers, name -> class (a live view of the registry)
FLOW_SAMPLERS = SamplerTable("flow")
