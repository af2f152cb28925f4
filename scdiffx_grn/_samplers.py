"""The one sampler registry: name -> (kind, sampler class), read by the model and the CLI (a leaf).

Every sampler that ``generate`` / ``translate`` / ``interpolate`` / the GRN and perturbation
engines accept as ``sampler=name`` is registered here, with the *kind* of model it applies to:
its training objective (``ModelConfig.objective``), one of :data:`SAMPLER_KINDS`:

- ``"diffusion"``: ``"ddpm"``, ``"ddim"``, ``"dpm++"`` (:mod:`scdiffx_grn.model._schedulers`);
- ``"flow"``: the flow-matching ODE samplers ``"euler"``, ``"heun"`` (:mod:`scdiffx_grn.model._flow`).

:func:`register_sampler` adds one (a subclass of :class:`scdiffx_grn.model.Sampler`);
:func:`get_sampler` looks one up for a kind, naming the valid ones when the name is unknown or
belongs to the other kind; :func:`sampler_names` lists them (the CLI's ``--sampler`` choices).

The built-in classes are registered by reference (``"module:Class"``) and imported on first use,
so that listing the samplers (``scdiffx-grn --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._errors import OptionError, _fmt_items
from ._vocab import check_option

__all__ = ["SAMPLER_KINDS", "register_sampler", "get_sampler", "sampler_names", "sampler_kind", "SamplerTable"]

#: the kinds of samplers: the training objectives (``ModelConfig.objective``) whose process they invert
SAMPLER_KINDS: tuple[str, ...] = ("diffusion", "flow")
_WHAT = {"diffusion": "diffusion sampler", "flow": "flow-matching ODE sampler"}
#: other spellings of the built-in names
_ALIASES = {"dpmsolver": "dpm++", "dpmsolver++": "dpm++", "dpm-solver++": "dpm++"}
#: what a sampler class must have (the diffusers-style interface, its constructor from a config and the
#: forward process of its kind that guidance and inpainting read): scdiffx_grn.model.Sampler declares them
_INTERFACE = ("from_config", "set_timesteps", "step", "add_noise", "to_x0_eps", "guidance_coef",
              "recon_guidance_coef", "posterior_mean_timestep", "stochastic", "timestep_dtype")


@dataclass
class _Entry:
    kind: str
    cls: type | str  # the class, or a "module:Class" reference imported on first use


_REGISTRY: dict[str, _Entry] = {}


def _key(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise OptionError(f"a sampler name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def register_sampler(name: str, cls, *, kind: str | None = None, overwrite: bool = False):
    """Register sampler class ``cls`` as ``sampler=name`` for models of ``kind``.

    Parameters
    ----------
    name
        The name (case-insensitive) passed as ``sampler=`` to ``generate``, ``translate`` and the
        engines, and offered by the CLI's ``--sampler``.
    cls
        A subclass of :class:`scdiffx_grn.model.Sampler` (usually of
        :class:`~scdiffx_grn.model.DiffusionSampler` or :class:`~scdiffx_grn.model.FlowSampler`),
        built per call with ``cls.from_config(model.config)``; or a ``"module:Class"`` reference.
    kind
        The training objective it samples from: ``"diffusion"`` or ``"flow"`` (default: the
        class's ``kind`` attribute). A model of the other kind refuses it, naming its own samplers.
    overwrite
        Replace a sampler registered under ``name`` (otherwise that raises).

    Returns
    -------
    ``cls`` (so that ``register_sampler`` can decorate a class through ``functools.partial``).
    """
    key = _key(name)
    if isinstance(cls, str):
        if ":" not in cls:
            raise OptionError(f"a sampler reference must read 'module:Class', got {cls!r}")
        if kind is None:
            raise OptionError(f"register_sampler({name!r}, {cls!r}) needs kind= (one of {_fmt_items(SAMPLER_KINDS)})")
    else:
        if not isinstance(cls, type):
            raise OptionError(f"register_sampler needs a sampler class (a subclass of scdiffx_grn.model.Sampler), "
                              f"got {type(cls).__name__}")
        missing = [m for m in _INTERFACE if not hasattr(cls, m)]
        if missing:
            raise OptionError(f"{cls.__name__} is not a sampler: it has no {_fmt_items(missing)} (subclass "
                              "scdiffx_grn.model.DiffusionSampler or FlowSampler)")
        own = getattr(cls, "kind", None)
        kind = own if kind is None else kind
        if own is not None and own != kind:
            raise OptionError(f"{cls.__name__} is a {own!r} sampler (its kind attribute), registered as kind={kind!r}")
    check_option("kind", kind, SAMPLER_KINDS)
    if key in _REGISTRY and not overwrite:
        raise OptionError(f"a sampler named {key!r} is registered already (overwrite=True replaces it)")
    _REGISTRY[key] = _Entry(kind, cls)
    return cls


def sampler_names(kind: str | None = None) -> list[str]:
    """The registered sampler names (of ``kind`` only, when given), in registration order."""
    if kind is not None:
        check_option("kind", kind, SAMPLER_KINDS)
    return [k for k, e in _REGISTRY.items() if kind is None or e.kind == kind]


def sampler_kind(name: str) -> str:
    """The kind (``"diffusion"`` / ``"flow"``) of the sampler registered as ``name``."""
    key = _key(name)
    if key not in _REGISTRY:
        raise OptionError(f"unknown sampler {name!r}; choose one of {_fmt_items(sampler_names())}")
    return _REGISTRY[key].kind


def get_sampler(name: str, kind: str | None = None) -> type:
    """The sampler class registered as ``name``; with ``kind``, one that applies to models of that kind.

    Raises
    ------
    OptionError
        An unknown name, or a sampler of the other kind (e.g. ``"ddim"`` for a flow model), naming
        the samplers of ``kind``.
    """
    key = _key(name)
    valid = sampler_names(kind)
    entry = _REGISTRY.get(key)
    if entry is None:
        of = f" (samplers of objective={kind!r})" if kind is not None else ""
        raise OptionError(f"unknown sampler {name!r}; choose one of {_fmt_items(valid)}{of}")
    if kind is not None and entry.kind != kind:
        raise OptionError(f"sampler {name!r} is a {_WHAT[entry.kind]} but this model was trained with "
                          f"objective={kind!r}: use one of {_fmt_items(valid)}")
    if isinstance(entry.cls, str):
        module, _, attr = entry.cls.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise OptionError(f"sampler {key!r} is registered as {entry.cls!r}, which cannot be imported: {e}") from None
        if getattr(cls, "kind", entry.kind) != entry.kind:
            raise OptionError(f"{entry.cls} is a {cls.kind!r} sampler, registered as {key!r} of kind {entry.kind!r}")
        entry.cls = cls
    return entry.cls


class SamplerTable(Mapping):
    """A live read-only view ``name -> class`` of the registered samplers of one kind."""

    def __init__(self, kind: str):
        check_option("kind", kind, SAMPLER_KINDS)
        self.kind = kind

    def __getitem__(self, name: str) -> type:
        if name not in sampler_names(self.kind):
            raise KeyError(name)
        return get_sampler(name, self.kind)

    def __iter__(self) -> Iterator[str]:
        return iter(sampler_names(self.kind))

    def __len__(self) -> int:
        return len(sampler_names(self.kind))

    def __repr__(self) -> str:
        return f"SamplerTable({self.kind!r}: {sampler_names(self.kind)})"


for _name, _kind, _ref in (("ddpm", "diffusion", "scdiffx_grn.model._schedulers:DDPMScheduler"),
                           ("ddim", "diffusion", "scdiffx_grn.model._schedulers:DDIMScheduler"),
                           ("dpm++", "diffusion", "scdiffx_grn.model._schedulers:DPMSolverMultistepScheduler"),
                           ("euler", "flow", "scdiffx_grn.model._flow:FlowEulerScheduler"),
                           ("heun", "flow", "scdiffx_grn.model._flow:FlowHeunScheduler")):
    register_sampler(_name, _ref, kind=_kind)
del _name, _kind, _ref
