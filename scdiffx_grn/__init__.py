"""scdiffx_grn: perturbation and gene-regulatory analysis of paired scRNA + scATAC.

Namespaces follow scanpy's conventions and are imported lazily so that
``import scdiffx_grn`` stays fast (torch is only loaded when a model is used):

- ``datasets``: the embedded demo data, shared multiome sets, reference GRN databases
- ``pp``: preprocessing (QC, HVG, peak parsing and filtering, binarisation, TF-IDF/LSI, splits)
- ``tl``: analysis tools writing results into MuData (GRN extraction, perturbation, biomarkers)
- ``get``: tidy getters for results (``grn_df``, ``perturbation_df``, ``biomarker_df``)
- ``pl``: plots
- ``eval``: metrics for generation, translation and GRNs
- ``report``: the end-to-end demo and its HTML report (``report.run_demo``)
- :class:`ScDiffusionX`: the model (train / generate / translate / save / load)
- :func:`setup_mudata` / :func:`registry`: the MuData registry every part reads data through
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._errors import *  # noqa: F401,F403
from ._settings import seed_everything, settings

__version__ = "0.1.0"

_SUBMODULES = {"datasets", "pp", "tl", "pl", "get", "eval", "model", "perturb", "grn", "biomarkers", "report"}
_LAZY_ATTRS = {"ScDiffusionX": ("scdiffx_grn.model", "ScDiffusionX"),
               "setup_mudata": ("scdiffx_grn._registry", "setup_mudata"),
               "registry": ("scdiffx_grn._registry", "registry")}

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, eval, get, pl, pp, tl  # noqa: F401
    from .model import ScDiffusionX  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"scdiffx_grn.{name}")
    if name in _LAZY_ATTRS:
        mod, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'scdiffx_grn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_LAZY_ATTRS))


__all__ = ["settings", "seed_everything", "ScDiffusionX", *sorted(_SUBMODULES)]
