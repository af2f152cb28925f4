"""Guidance: how one sampling step turns the denoiser into a (guided) model output.

Every guidance object has one interface, ``guidance(pipeline, state) -> (out_rna, out_atac)``:
``pipeline`` is the :class:`~scdiffx_grn.model._pipeline.DiffusionPipeline` (it gives the raw
denoiser, ``pipeline.denoise``, the null labels and the config) and ``state`` a
:class:`PipelineState` (the current samples, timesteps, labels and scheduler of one batch).
Guidance objects compose: most take a ``base`` guidance whose output they modify.

- :class:`LabelGuidance`: classifier-free guidance over the labels (one scale, or per-label
  scales added up: ``"additive"``); ``scale=1`` is the plain conditional output.
- :class:`SourceGuidance`: classifier-free guidance over the observed modality of a translation,
  ``u + w (c - u)`` with ``u`` the output for a null source.
- :class:`ReconstructionGuidance`: inpainting translation, the target pushed so that the
  denoiser's clean estimate of the (noised) source matches the observed source.
- :class:`ClassifierGuidance`: noisy-latent classifiers (scDiffusion), ``-scale k(t) grad log p(y|x_t)``.
- :class:`WithConditions`: the base guidance with other labels (one row per cell of the request).
- :class:`MixGuidance`: ``w a + (1 - w) b`` of two guidances (gradient interpolation).
- :class:`HookGuidance`: adapter for the old ``generate(guidance_hook=...)`` callables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .._errors import MissingLabelError, OptionError, ScdxError

__all__ = ["PipelineState", "Guidance", "LabelGuidance", "SourceGuidance", "ReconstructionGuidance",
           "ClassifierGuidance", "WithConditions", "MixGuidance", "HookGuidance"]


@dataclass
class PipelineState:
    """What one guided denoiser evaluation sees.

    Attributes
    ----------
    x_r, x_a
        Current RNA / ATAC samples (B, latent_dim); ATAC is zero-width for single-modality models.
    t_r, t_a
        Their timesteps (B,) (a clean, observed modality has timestep 0).
    cond
        Label indices (B, n_label_keys).
    scheduler
        The sampler's scheduler (``guidance_coef``, ``to_x0_eps``, ...).
    rows
        Rows of the whole request held by this batch (per-cell targets and conditions).
    source
        Translation only: the observed modality (``"rna"`` or ``"atac"``).
    null_source
        Translation only: the noise standing in for an unobserved source (source guidance).
    z_source
        Translation only: the clean observed latent (reconstruction guidance).
    """

    x_r: torch.Tensor
    x_a: torch.Tensor
    t_r: torch.Tensor
    t_a: torch.Tensor
    cond: torch.Tensor
    scheduler: Any
    rows: slice = dataclasses.field(default_factory=lambda: slice(None))
    source: str | None = None
    null_source: torch.Tensor | None = None
    z_source: torch.Tensor | None = None

    def replace(self, **changes) -> PipelineState:
        return dataclasses.replace(self, **changes)


class Guidance:
    """Base class: ``guidance(pipeline, state) -> (out_rna, out_atac)``."""

    def __call__(self, pipeline, state: PipelineState) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


@dataclass
class LabelGuidance(Guidance):
    """Classifier-free guidance over the labels: ``u + s (c - u)``.

    ``scale``: one scale for all labels (``mode="joint"``), or ``{label: scale}`` with
    ``mode="additive"``: ``u + sum_k s_k (c_k - u)`` where ``c_k`` keeps only label ``k``.
    A scale of 1 (or a model without labels) is the plain conditional output, one denoiser call.
    """

    scale: float | Mapping[str, float] = 1.0
    mode: str = "joint"

    def __call__(self, pipeline, st: PipelineState):
        keys = list(pipeline.config.label_keys)
        z_r, z_a, t_r, t_a, cond = st.x_r, st.x_a, st.t_r, st.t_a, st.cond
        null = pipeline.null_labels(z_r.shape[0], z_r.device)
        scales = None
        if isinstance(self.scale, Mapping):
            scales = {k: float(v) for k, v in self.scale.items()}
            unknown = sorted(set(scales) - set(keys))
            if unknown:
                raise MissingLabelError(f"guidance given for unknown label(s) {unknown}")
        if (scales is None and float(self.scale) == 1.0) or not keys:
            return pipeline.denoise(z_r, z_a, t_r, t_a, cond)
        b = z_r.shape[0]
        if self.mode == "joint" or scales is None:
            s = float(self.scale) if scales is None else float(np.mean(list(scales.values())))
            o_r, o_a = pipeline.denoise(torch.cat([z_r, z_r]), torch.cat([z_a, z_a]), torch.cat([t_r, t_r]),
                                        torch.cat([t_a, t_a]), torch.cat([cond, null]))
            (c_r, u_r), (c_a, u_a) = o_r.split(b), o_a.split(b)
            return u_r + s * (c_r - u_r), u_a + s * (c_a - u_a)
        if self.mode != "additive":
            raise OptionError(f"guidance_mode must be 'joint' or 'additive', got {self.mode!r}")
        conds = [null]
        ks = [k for k in keys if k in scales]
        for k in ks:
            c = null.clone()
            i = keys.index(k)
            c[:, i] = cond[:, i]
            conds.append(c)
        m = len(conds)
        o_r, o_a = pipeline.denoise(z_r.repeat(m, 1), z_a.repeat(m, 1), t_r.repeat(m), t_a.repeat(m), torch.cat(conds))
        parts_r, parts_a = o_r.split(b), o_a.split(b)
        g_r, g_a = parts_r[0].clone(), parts_a[0].clone()
        for j, k in enumerate(ks, start=1):
            g_r += scales[k] * (parts_r[j] - parts_r[0])
            g_a += scales[k] * (parts_a[j] - parts_a[0])
        return g_r, g_a


def _branches(st: PipelineState):
    """(source x, source t, target x, target t) of a translation state."""
    if st.source == "rna":
        return st.x_r, st.t_r, st.x_a, st.t_a
    if st.source == "atac":
        return st.x_a, st.t_a, st.x_r, st.t_r
    raise ScdxError("this guidance needs a translation state (state.source = 'rna' or 'atac')")


def _with_branches(st: PipelineState, x_src, t_src, x_tgt, t_tgt, **kw) -> PipelineState:
    if st.source == "rna":
        return st.replace(x_r=x_src, t_r=t_src, x_a=x_tgt, t_a=t_tgt, **kw)
    return st.replace(x_a=x_src, t_a=t_src, x_r=x_tgt, t_r=t_tgt, **kw)


@dataclass
class SourceGuidance(Guidance):
    """Classifier-free guidance over the observed modality of a translation: ``u + w (c - u)``.

    ``c`` sees the observed source and ``u`` a null source (``state.null_source`` at the
    noisiest timestep, the input of source dropout in training); ``weight=1`` is the plain
    conditional output. Needs a model trained with ``source_dropout > 0``.
    """

    weight: float = 1.0
    base: Guidance = dataclasses.field(default_factory=LabelGuidance)

    def __call__(self, pipeline, st: PipelineState):
        w = float(self.weight)
        if w == 1.0:
            return self.base(pipeline, st)
        if not getattr(pipeline.config, "source_dropout", 0.0):
            raise ScdxError("source_guidance needs a model trained with source_dropout > 0 (it never saw a "
                            "null source); use source_guidance=1.0")
        b = st.x_r.shape[0]
        x_src, t_src, x, tt = _branches(st)
        t_null = torch.full_like(t_src, st.scheduler.posterior_mean_timestep)
        doubled = _with_branches(st, torch.cat([x_src, st.null_source]), torch.cat([t_src, t_null]),
                                 torch.cat([x, x]), torch.cat([tt, tt]), cond=torch.cat([st.cond, st.cond]))
        o_r, o_a = self.base(pipeline, doubled)
        (c_r, u_r), (c_a, u_a) = o_r.split(b), o_a.split(b)
        return u_r + w * (c_r - u_r), u_a + w * (c_a - u_a)


@dataclass
class ReconstructionGuidance(Guidance):
    """Inpainting translation: the target output moved by ``weight * k(t) * grad_x ||x0_src - z_src||^2``.

    ``x0_src`` is the base guidance's clean estimate of the noised source, ``z_src`` the observed
    source (``state.z_source``), ``k`` the scheduler's ``recon_guidance_coef``.
    """

    weight: float
    base: Guidance = dataclasses.field(default_factory=LabelGuidance)

    def __call__(self, pipeline, st: PipelineState):
        x_src, t_src, x, tt = _branches(st)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            o_r, o_a = self.base(pipeline, _with_branches(st, x_src, t_src, xg, tt))
            o_src, o_tgt = (o_r, o_a) if st.source == "rna" else (o_a, o_r)
            x0_src, _ = st.scheduler.to_x0_eps(o_src, x_src, tt)
            err = ((x0_src - st.z_source) ** 2).sum()
            grad = torch.autograd.grad(err, xg)[0]
        k = st.scheduler.recon_guidance_coef(tt, x)
        o_tgt = o_tgt.detach() + self.weight * k * grad
        return (o_src.detach(), o_tgt) if st.source == "rna" else (o_tgt, o_src.detach())


@dataclass
class ClassifierGuidance(Guidance):
    """Noisy-latent classifier guidance: ``out - k(t) sum_c scale_c grad log p_c(y_c | x_t)``.

    ``terms``: ``(classifier, weights, scale)`` with ``weights`` an (n_request_cells, n_classes)
    tensor of target class weights (one-hot, or a mixture); ``k`` is the scheduler's
    ``guidance_coef``. Build it with :func:`~scdiffx_grn.model._classifier.classifier_guidance`.
    """

    terms: Sequence[tuple[Any, torch.Tensor, float]]
    base: Guidance = dataclasses.field(default_factory=LabelGuidance)

    def __call__(self, pipeline, st: PipelineState):
        o_r, o_a = self.base(pipeline, st)
        t = st.t_r
        with torch.enable_grad():
            xr = st.x_r.detach().float().requires_grad_(True)
            xa = st.x_a.detach().float().requires_grad_(True)
            obj = 0.0
            for clf, W, scale in self.terms:
                logp = torch.log_softmax(clf(clf.inputs(xr, xa), t).float(), -1)
                obj = obj + scale * (W[st.rows] * logp).sum()
            g_r, g_a = torch.autograd.grad(obj, [xr, xa], allow_unused=True)
        k = st.scheduler.guidance_coef(t, st.x_r)
        if g_r is not None:
            o_r = o_r - k * g_r
        if g_a is not None and g_a.shape[1]:
            o_a = o_a - k * g_a
        return o_r, o_a


@dataclass
class WithConditions(Guidance):
    """``base`` evaluated with the labels ``cond`` (one row per cell of the request) instead of the state's."""

    cond: torch.Tensor
    base: Guidance = dataclasses.field(default_factory=LabelGuidance)

    def __call__(self, pipeline, st: PipelineState):
        return self.base(pipeline, st.replace(cond=self.cond[st.rows]))


@dataclass
class MixGuidance(Guidance):
    """``weight * a + (1 - weight) * b`` (only ``a`` at weight 1, only ``b`` at weight 0)."""

    a: Guidance
    b: Guidance
    weight: float

    def __call__(self, pipeline, st: PipelineState):
        w = float(self.weight)
        if w == 0.0:
            return self.b(pipeline, st)
        oa_r, oa_a = self.a(pipeline, st)
        if w == 1.0:
            return oa_r, oa_a
        ob_r, ob_a = self.b(pipeline, st)
        return w * oa_r + (1 - w) * ob_r, w * oa_a + (1 - w) * ob_a


class HookGuidance(Guidance):
    """Adapter for ``hook(start, stop) -> output_fn(x_r, x_a, t, cond, scheduler) -> (o_r, o_a)``."""

    def __init__(self, hook: Callable):
        self.hook = hook
        self._key, self._fn = None, None

    def __call__(self, pipeline, st: PipelineState):
        key = (st.rows.start, st.rows.stop)
        if key != self._key:
            self._key, self._fn = key, self.hook(*key)
        return self._fn(st.x_r, st.x_a, st.t_r, st.cond, st.scheduler)
