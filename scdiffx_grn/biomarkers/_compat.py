"""Compatibility shim for pyscenic 0.12.1 / arboreto 0.1.6 on numpy 2, pandas 2 and dask >= 2024.

pyscenic and arboreto were released before numpy removed ``np.object``, ``np.float``, ``np.int``,
``np.bool`` (1.24) and ``np.msort`` (2.0), and before pandas removed ``Series.iteritems`` (2.0).
:func:`apply` restores those aliases (only where missing) and switches off dask's automatic
conversion of object columns to strings: with it on, pyscenic's ``prune2df`` silently turns the
gene lists of regulons into strings, i.e. regulons made of single characters.

Always import pyscenic / arboreto through :func:`import_pyscenic` and :func:`import_arboreto`
(which call :func:`apply` first); this module does not import either at import time.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["apply", "import_pyscenic", "import_arboreto"]

_APPLIED = False


def apply() -> None:
    """Restore removed numpy / pandas aliases and configure dask for pyscenic (idempotent)."""
    global _APPLIED
    import numpy as np
    import pandas as pd

    aliases = {"object": object, "float": float, "int": int, "bool": bool, "str": str}
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(np, "msort"):
        np.msort = lambda a: np.sort(a, axis=0)  # removed in numpy 2.0
    if not hasattr(pd.Series, "iteritems"):
        pd.Series.iteritems = pd.Series.items
    if not hasattr(pd.DataFrame, "iteritems"):
        pd.DataFrame.iteritems = pd.DataFrame.items
    try:
        import dask

        dask.config.set({"dataframe.convert-string": False})
    except ImportError:  # pragma: no cover - dask is a dependency of arboreto
        pass
    _APPLIED = True


def _quiet_import(name: str):
    apply()
    with warnings.catch_warnings():
        # ctxcore imports pkg_resources (deprecated in setuptools, pinned < 81 by the project)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return importlib.import_module(name)


def import_pyscenic(submodule: str = "aucell"):
    """Import ``pyscenic.<submodule>`` after applying the shim."""
    return _quiet_import(f"pyscenic.{submodule}")


def import_arboreto(submodule: str = "core"):
    """Import ``arboreto.<submodule>`` after applying the shim."""
    return _quiet_import(f"arboreto.{submodule}")


def import_ctxcore_genesig():
    """Import ``ctxcore.genesig`` (GeneSignature, Regulon) after applying the shim."""
    return _quiet_import("ctxcore.genesig")
