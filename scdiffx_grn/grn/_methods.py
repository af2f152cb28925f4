"""GRN scoring methods as kernels (decoupler's ``mt/_Method.py`` pattern).

A :class:`Method` bundles a scoring kernel of :mod:`scdiffx_grn.grn._scores` with its own options
(name, default, accepted values, documentation). :func:`~scdiffx_grn.grn.extract_grn` is the one
runner: it picks the method from :data:`METHODS` (or takes a :class:`Method` instance), checks the
method's keywords with :meth:`Method.resolve` (an unknown keyword, or one of another method,
raises :class:`~scdiffx_grn.OptionError` naming the valid ones) and calls the kernel once per group
of cells.

:func:`show_methods` lists the methods as a DataFrame, :func:`methods` returns them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import OptionError, _fmt_items
from ._scores import READOUTS, attention_scores, ig_scores, knockout_scores

__all__ = ["METHODS", "Method", "Param", "get_method", "methods", "register_method", "show_methods"]

#: options of the runner itself (:func:`~scdiffx_grn.grn.extract_grn`), not of a method
RUNNER_OPTIONS = ("groupby", "candidates", "tss", "window", "cell_types", "max_cells", "min_cells", "batch_size",
                  "key_added", "copy", "seed")


@dataclass(frozen=True)
class Param:
    """One option of a :class:`Method`.

    Attributes
    ----------
    name
        Keyword of :func:`~scdiffx_grn.grn.extract_grn`.
    default
        Value used when the keyword is not given.
    doc
        One line of documentation.
    choices
        Accepted values (``None``: any); another value raises :class:`~scdiffx_grn.OptionError`.
    kernel_arg
        Name of the argument in the kernel (``None``: ``name``).
    check
        ``"positive_int"``, ``"number_list"``, ``"int_list_or_none"`` or ``None``: a check of the value.
    """

    name: str
    default: Any
    doc: str = ""
    choices: tuple | None = None
    kernel_arg: str | None = None
    check: str | None = None

    def validate(self, value, method: str):
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"{self.name} must be one of {list(self.choices)} for method {method!r}, got {value!r}")
        if self.check == "positive_int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
                raise OptionError(f"{self.name} must be a positive integer, got {value!r}")
            return int(value)
        if self.check in ("number_list", "int_list_or_none"):
            if value is None and self.check == "int_list_or_none":
                return None
            kinds = (int, np.integer) if self.check == "int_list_or_none" else (int, float, np.integer, np.floating)
            what = "integers" if self.check == "int_list_or_none" else "numbers"
            if isinstance(value, kinds) and not isinstance(value, bool):
                return (value,)
            try:
                vals = list(value)
            except TypeError:
                raise OptionError(f"{self.name} must be a list of {what}, got {value!r}") from None
            if not vals or any(isinstance(v, bool) or not isinstance(v, kinds) for v in vals):
                raise OptionError(f"{self.name} must be a non-empty list of {what}, got {value!r}")
            return value
        return value


@dataclass(frozen=True)
class Method:
    """A peak -> gene scoring method: a kernel, its options and its documentation.

    The kernel is called as ``kernel(model, *inputs, cond, pairs, batch_size=..., seed=...,
    [cell_names=...], **options)`` where ``inputs`` are the raw RNA and / or ATAC matrices of
    one group of cells in the model's feature order (see :attr:`inputs`), ``cond`` their label
    indices and ``pairs`` the ``peak, gene`` candidate table; it returns one score per row of
    ``pairs``.

    Attributes
    ----------
    name
        Method name (``extract_grn(method=name)``).
    kernel
        The scoring function.
    params
        Its options (:class:`Param`), given to ``extract_grn`` as keywords.
    description
        One-line description (shown by :func:`show_methods`).
    inputs
        Matrices the kernel takes after the model: ``("rna", "atac")`` or ``("atac",)``.
    cell_names
        Whether the kernel takes ``cell_names=`` (obs names keying each cell's noise).
    full_group
        The kernel gets every cell of the group and ``model_cells=`` (mask of the ``max_cells``
        subsample the model is run on), e.g. to compute data evidence on all the group's cells.
    finalize
        ``finalize(network, group_column, info, options, data) -> (network, params)``: called once
        on the table of all groups (``info``: each group's ``attrs`` of the kernel's table;
        ``data``: the model, the raw ``X_rna`` / ``X_atac`` of every cell, their ``labels`` and
        ``names``, the ``candidates``, ``batch_size`` and ``seed``), e.g. to choose one combination
        for every group; ``params`` are added to the stored params.
    """

    name: str
    kernel: Callable
    params: tuple[Param, ...] = ()
    description: str = ""
    inputs: tuple[str, ...] = ("rna", "atac")
    cell_names: bool = False
    full_group: bool = False
    finalize: Callable | None = None
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not callable(self.kernel):
            raise OptionError(f"method {self.name!r}: kernel must be callable, got {type(self.kernel).__name__}")
        bad = [m for m in self.inputs if m not in ("rna", "atac")]
        if bad or not self.inputs:
            raise OptionError(f"method {self.name!r}: inputs must be among 'rna', 'atac', got {self.inputs!r}")
        clash = [p.name for p in self.params if p.name in RUNNER_OPTIONS]
        if clash:
            raise OptionError(f"method {self.name!r}: option names {clash} are options of extract_grn itself")
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "_index", {p.name: p for p in self.params})

    @property
    def defaults(self) -> dict[str, Any]:
        """Option name -> default value."""
        return {p.name: p.default for p in self.params}

    def resolve(self, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The method's options: ``kwargs`` checked (names and values) over the defaults.

        Raises
        ------
        OptionError
            An unknown keyword (naming the method it belongs to, if any, and the valid ones) or a
            value outside the accepted ones.
        """
        kwargs = dict(kwargs or {})
        unknown = [k for k in kwargs if k not in self._index]
        if unknown:
            owners = {k: [m.name for m in METHODS.values() if k in m._index] for k in unknown}
            what = "; ".join(f"{k!r}" + (f" is an option of {_fmt_items(o)}" if o else " is not an option")
                             for k, o in owners.items())
            raise OptionError(f"extract_grn(method={self.name!r}) got unexpected keyword(s): {what}. Options of "
                              f"{self.name!r}: {_fmt_items(self._index) or '(none)'}; of extract_grn: "
                              f"{_fmt_items(RUNNER_OPTIONS)}")
        out = self.defaults
        for k, v in kwargs.items():
            out[k] = self._index[k].validate(v, self.name)
        return out

    def __call__(self, model, X_rna, X_atac, cond, pairs: pd.DataFrame, *, batch_size: int = 64, seed: int = 0,
                 cell_names=None, model_cells=None, **options) -> np.ndarray:
        """Scores of ``pairs`` on one group of cells (``options`` checked by :meth:`resolve`)."""
        opts = self.resolve(options)
        args = [X_rna if m == "rna" else X_atac for m in self.inputs]
        kw = {(self._index[k].kernel_arg or k): v for k, v in opts.items()}
        kw.update(batch_size=batch_size, seed=seed)
        if self.cell_names:
            kw["cell_names"] = cell_names
        if self.full_group:
            kw["model_cells"] = model_cells
        res = self.kernel(model, *args, cond, pairs, **kw)
        # a kernel may return a table: ``weight`` plus per-pair columns (e.g. the consensus evidence)
        return res if isinstance(res, pd.DataFrame) else np.asarray(res, dtype=float)

    def describe(self) -> str:
        """The options as ``name=default`` text."""
        return ", ".join(f"{p.name}={p.default!r}" for p in self.params)


_READOUT = Param("readout", "mean", "translation read out: 'mean' (posterior mean) or 'samples' (a sampled "
                 "trajectory: sampler, translate_steps)", choices=READOUTS)
_SAMPLER = Param("sampler", "ddim", "sampler of the translation (readout='samples', and epsilon models)")
_STEPS = Param("translate_steps", 10, "steps of the sampled translation", check="positive_int")

ATTENTION = Method(
    "attention", attention_scores,
    (Param("timesteps", (100, 300, 500), "RNA noise levels at which the attention maps are read", check="number_list"),
     Param("layers", None, "denoiser layers averaged (None: all)", check="int_list_or_none"),
     Param("head_reduce", "mean", "reduction over attention heads", choices=("mean", "max")),
     Param("noise_atac", False, "noise the ATAC latent to the same timestep (False: clean, the translation "
           "setting)", choices=(False, True))),
    "RNA <- ATAC Dual-Cross-Attention x encoder gradient saliency: S_rna[:, g]^T A S_atac[:, p]",
    inputs=("rna", "atac"))
INTEGRATED_GRADIENTS = Method(
    "integrated_gradients", ig_scores,
    (Param("ig_baseline", "zeros", "baseline accessibility", choices=("zeros", "mean"), kernel_arg="baseline"),
     Param("ig_steps", 16, "quadrature steps", kernel_arg="n_steps", check="positive_int"),
     Param("ig_engine", "jacobian", "'jacobian' (every gene at once) or 'captum' (one call per gene, same "
           "numbers)", choices=("jacobian", "captum"), kernel_arg="engine"),
     _SAMPLER, _STEPS, _READOUT),
    "integrated gradients of the ATAC -> RNA translated expression (log1p CP10k) w.r.t. the candidate peaks",
    inputs=("atac",), cell_names=True)
KNOCKOUT = Method(
    "knockout", knockout_scores,
    (Param("knockout_group", "peak", "close each candidate peak ('peak') or all of a gene's ('gene')",
           choices=("peak", "gene"), kernel_arg="group"),
     _SAMPLER, Param("translate_steps", 10, "steps of the sampled translation", kernel_arg="n_steps",
                     check="positive_int"),
     Param("n_samples", 1, "noise samples averaged", check="positive_int"), _READOUT,
     Param("knockout_engine", "exact", "'exact' (sparse blocks: every open (cell, peak) translated) or 'linear' "
           "(first-order approximation -x_p dy/dx_p in closed form, knockout_group='peak')",
           choices=("exact", "linear"), kernel_arg="engine")),
    "in-silico peak closing: drop of the translated expression (log1p CP10k), paired noise",
    inputs=("atac",), cell_names=True)

def _consensus_kernel(model, X_rna, X_atac, cond, pairs, *, model_evidence: str = "knockout",
                      weights_by: str = "network", **kw):
    from ._consensus import consensus_scores

    scorer = None if model_evidence == "none" else METHODS[model_evidence]
    # weights_by="network": the choice is made once for every group by the finalize step
    return consensus_scores(model, X_rna, X_atac, cond, pairs, model_scorer=scorer,
                            cross_validate=weights_by == "group", **kw)


def _consensus_finalize(net, gcol, info, opts, data):
    from ._consensus import finalize_consensus

    return finalize_consensus(net, gcol, info, opts, data)


CONSENSUS = Method(
    "consensus", _consensus_kernel,
    (Param("model_evidence", "knockout", "model attribution used as evidence ('none': data evidence only)",
           choices=("knockout", "integrated_gradients", "attention", "none")),
     Param("n_metacells", 20, "metacells of the group's train cells (correlation evidence)", check="positive_int"),
     Param("n_random", 5, "degree-preserving rewirings per held-out comparison", check="positive_int"),
     Param("n_folds", 5, "cross-validation folds of the group's train cells (by cell name)", check="positive_int"),
     Param("pool", 30, "cells per pseudo-cell in the cross-validation (fewer in a small group)", check="positive_int"),
     Param("weights_by", "network", "one evidence choice for every group ('network': the whole network's "
           "held-out prediction, folds of all train cells) or one per group ('group': its own folds)",
           choices=("network", "group"))),
    "evidence table (distance prior, metacell correlation, accessibility, model attribution) and the rank "
    "mean of the evidences chosen by cross-validated held-out prediction of the targets (no external truth)",
    inputs=("rna", "atac"), cell_names=True, full_group=True, finalize=_consensus_finalize)

#: the registered methods by name
METHODS: dict[str, Method] = {m.name: m for m in (ATTENTION, INTEGRATED_GRADIENTS, KNOCKOUT, CONSENSUS)}


def get_method(method) -> Method:
    """A :class:`Method` from its name (or the instance itself)."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    raise OptionError(f"method must be one of {list(METHODS)} or a grn.Method, got {method!r}")


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` (so ``extract_grn(method=method.name)`` finds it)."""
    if not isinstance(method, Method):
        raise OptionError(f"register_method needs a grn.Method, got {type(method).__name__}")
    if method.name in METHODS and not overwrite:
        raise OptionError(f"a method named {method.name!r} is registered already (overwrite=True replaces it)")
    METHODS[method.name] = method
    return method


def methods() -> dict[str, Method]:
    """The registered methods by name (a copy of :data:`METHODS`)."""
    return dict(METHODS)


def show_methods() -> pd.DataFrame:
    """The registered methods: DataFrame ``name, description, parameters`` (``name=default, ...``)."""
    return pd.DataFrame([{"name": m.name, "description": m.description, "parameters": m.describe()}
                         for m in METHODS.values()], columns=["name", "description", "parameters"])
