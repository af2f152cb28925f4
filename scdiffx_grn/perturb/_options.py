"""Option groups of the perturbation tools: the engine, the controls, the screen's output.

``tl.screen`` (and ``tl.perturb`` for the engine) keep their flat keywords for users and the
command line; internally the keywords are validated once into these frozen dataclasses and
passed as three objects. Each has :meth:`to_dict` (plain values, persisted in a screen's
``config.json`` and in ``uns[...]["params"]``) and raises :class:`~scdiffx_grn.OptionError`
for a bad value when constructed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .._errors import OptionError

__all__ = ["EngineOptions", "ControlOptions", "OutputOptions", "KEEP_EFFECTS", "AUTO_EFFECT_ROWS",
           "CHUNK_ROWS", "options_from", "check_engine"]

#: values of ``keep_effects``
KEEP_EFFECTS = ("auto", "all", "significant", "none")
#: ``keep_effects="auto"`` keeps every effect row up to this many (targets x groups x features), none above
AUTO_EFFECT_ROWS = 5_000_000
#: effect rows (targets x groups x features) per chunk of a screen (``chunk_targets=None``)
CHUNK_ROWS = 500_000


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_engine(readout: str, test: str, n_noise: int, *, batch_size: int = 1, batch_rows: int = 1) -> None:
    """Validate the engine choice (``readout``, ``test``, ``n_noise``, ``batch_size``, ``batch_rows``);
    bad values raise :class:`OptionError`."""
    from .._validate import check_count
    from .._vocab import READOUTS, check_option

    check_count("batch_size", batch_size, 1)
    check_count("batch_rows", batch_rows, 1)
    check_option("readout", readout, READOUTS)
    if test not in ("t", "wilcoxon"):
        raise OptionError(f"test must be 't' or 'wilcoxon', got {test!r}")
    if readout == "mean" and test != "t":
        raise OptionError("the posterior-mean readout (readout='mean') tests per-cell differences with a t-test "
                          "from running sums; test='wilcoxon' needs readout='samples'")
    try:
        ok = int(n_noise) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(f"n_noise must be an integer >= 1, got {n_noise!r}")


@dataclass(frozen=True)
class EngineOptions:
    """How the paired engine runs and tests (see :func:`~scdiffx_grn.tl.perturb`)."""

    readout: str = "mean"
    n_noise: int = 1
    n_samples: int = 5
    seed: int = 0
    batch_rows: int = 1024
    batch_size: int = 256
    batch_targets: int = 8
    skip_unchanged: bool = True
    translate_kwargs: dict | None = None
    use_labels: bool = False
    test: str = "t"

    def __post_init__(self):
        check_engine(self.readout, self.test, self.n_noise, batch_size=self.batch_size, batch_rows=self.batch_rows)
        if not _is_int(self.batch_targets) or self.batch_targets < 1:
            raise OptionError(f"batch_targets must be an integer >= 1, got {self.batch_targets!r}")
        if not _is_int(self.n_samples) or self.n_samples < 1:
            raise OptionError(f"n_samples must be an integer >= 1, got {self.n_samples!r}")
        if not _is_int(self.seed):
            raise OptionError(f"seed must be an integer, got {self.seed!r}")
        for k in ("skip_unchanged", "use_labels"):
            if not isinstance(getattr(self, k), (bool, np.bool_)):
                raise OptionError(f"{k} must be True or False, got {getattr(self, k)!r}")
        if self.translate_kwargs is not None and not isinstance(self.translate_kwargs, dict):
            raise OptionError(f"translate_kwargs must be a dict or None, got {type(self.translate_kwargs).__name__}")
        object.__setattr__(self, "n_noise", int(self.n_noise))
        object.__setattr__(self, "translate_kwargs", dict(self.translate_kwargs or {}))

    def engine_kwargs(self, model) -> dict:
        """:class:`~scdiffx_grn.perturb.PairedEngine` keywords (``_engine.engine_options``)."""
        from ._engine import engine_options

        return engine_options(model, self.readout, n_noise=self.n_noise, n_samples=self.n_samples, seed=self.seed,
                              batch_rows=self.batch_rows, batch_size=self.batch_size,
                              batch_targets=self.batch_targets, translate_kwargs=self.translate_kwargs or None,
                              skip_unchanged=self.skip_unchanged)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ControlOptions:
    """Control calibration of significance (see :mod:`scdiffx_grn.perturb._controls`)."""

    controls: Any = 20
    min_effect: float = 0.1
    alpha: float = 0.05

    def __post_init__(self):
        from ._controls import check_controls
        from .._validate import check_positive, check_probability

        check_probability("alpha", self.alpha)
        check_positive("min_effect", self.min_effect, allow_zero=True)
        n, names = check_controls(self.controls)
        object.__setattr__(self, "controls", list(names) if names is not None else int(n))

    @property
    def n_controls(self) -> int:
        return len(self.controls) if isinstance(self.controls, list) else int(self.controls)

    @property
    def names(self) -> list[str] | None:
        return list(self.controls) if isinstance(self.controls, list) else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class OutputOptions:
    """What a screen writes and where: ``keep_effects`` ``"auto"`` keeps every effect row up to
    :data:`AUTO_EFFECT_ROWS` (targets x groups x features) and none above (summaries only);
    ``chunk_targets`` targets per result chunk (``None``: about :data:`CHUNK_ROWS` effect rows)."""

    out_dir: Any = None
    resume: bool = True
    keep_effects: str = "auto"
    n_top: int = 5
    show_progress: bool = True
    chunk_targets: int | None = None

    def __post_init__(self):
        from .._validate import check_count

        if self.keep_effects not in KEEP_EFFECTS:
            raise OptionError(f"keep_effects must be 'auto', 'all', 'significant' or 'none', got {self.keep_effects!r}")
        check_count("n_top", self.n_top)
        if self.chunk_targets is not None and (not _is_int(self.chunk_targets) or self.chunk_targets < 1):
            raise OptionError(f"chunk_targets must be an integer >= 1 or None, got {self.chunk_targets!r}")
        for k in ("resume", "show_progress"):
            if not isinstance(getattr(self, k), (bool, np.bool_)):
                raise OptionError(f"{k} must be True or False, got {getattr(self, k)!r}")

    def resolved_keep(self, n_rows: int) -> str:
        """``keep_effects`` with ``"auto"`` resolved for a screen of ``n_rows`` effect rows."""
        if self.keep_effects != "auto":
            return self.keep_effects
        return "all" if n_rows <= AUTO_EFFECT_ROWS else "none"

    def chunk_size(self, n_groups: int, n_features: int) -> int:
        if self.chunk_targets is not None:
            return int(self.chunk_targets)
        return int(min(256, max(1, CHUNK_ROWS // max(n_groups * n_features, 1))))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return d


_GROUPS = {"engine": EngineOptions, "control": ControlOptions, "output": OutputOptions}


def options_from(kwargs: dict, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The three option objects from flat keywords ``kwargs`` and objects ``given`` (``{"engine": ...}``).

    A flat keyword that differs from its default (``defaults``) and from the object given for its
    group raises :class:`OptionError` (two values for one option)."""
    out = {}
    for name, cls in _GROUPS.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        obj = given.get(name)
        if obj is None:
            out[name] = cls(**{k: kwargs[k] for k in fields if k in kwargs})
            continue
        if not isinstance(obj, cls):
            raise OptionError(f"{name}= must be a {cls.__name__}, got {type(obj).__name__}")
        clash = [k for k in fields if k in kwargs and k in defaults and not _same(kwargs[k], defaults[k])
                 and not _same(kwargs[k], getattr(obj, k))]
        if clash:
            raise OptionError(f"{_fmt(clash)} given both as keyword(s) and in {name}={cls.__name__}(...); "
                              "give each option once")
        out[name] = obj
    return out


def _same(a, b) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else False
    except Exception:  # noqa: BLE001 - incomparable values differ
        return False


def _fmt(keys: Sequence[str]) -> str:
    return ", ".join(repr(k) for k in keys)

