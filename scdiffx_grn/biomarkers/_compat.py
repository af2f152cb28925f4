"""Compatibility shim for pyscenic 0.12.1 / arboreto 0.1.6 on numpy 2, pandas 2 and dask >= 2024.

pyscenic and arboreto were released before numpy removed ``np.object``, ``np.float``, ``np.int``,
``np.bool``, ``np.str`` (1.24) and ``np.msort`` (2.0), and before pandas removed
``Series.iteritems`` / ``DataFrame.iteritems`` (2.0). :func:`pyscenic_env` restores those aliases
(only where missing) and switches off dask's automatic conversion of object columns to strings
(with it on, pyscenic's ``prune2df`` silently turns the gene lists of regulons into strings, i.e.
regulons made of single characters) **for the duration of a ``with`` block only**: on exit every
attribute is put back as it was (aliases that were absent are deleted again) and the dask setting
is restored, so nothing leaks into the user's numpy / pandas.

Import and call pyscenic / arboreto / ctxcore inside ``with pyscenic_env():``;
:func:`import_pyscenic`, :func:`import_arboreto` and :func:`import_ctxcore_genesig` import under
the shim (the caller still wraps its calls). This module imports none of them at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import warnings
from collections.abc import Iterator

__all__ = ["pyscenic_env", "patched_attributes", "import_pyscenic", "import_arboreto", "import_ctxcore_genesig"]

_LOCK = threading.Lock()
# nesting depth of pyscenic_env blocks and the attributes the outermost one added
_STATE: dict = {"depth": 0, "added": []}


def _msort(a):
    import numpy as np

    return np.sort(a, axis=0)  # np.msort, removed in numpy 2.0


def patched_attributes() -> list[tuple[object, str, object]]:
    """``(owner, name, value)`` of every attribute the shim sets when the owner lacks it."""
    import numpy as np
    import pandas as pd

    out: list[tuple[object, str, object]] = [
        (np, name, value) for name, value in
        (("object", object), ("float", float), ("int", int), ("bool", bool), ("str", str))]
    out.append((np, "msort", _msort))
    out.append((pd.Series, "iteritems", pd.Series.items))
    out.append((pd.DataFrame, "iteritems", pd.DataFrame.items))
    return out


@contextlib.contextmanager
def pyscenic_env() -> Iterator[None]:
    """Set the numpy / pandas aliases and the dask option pyscenic needs; restore them on exit.

    Re-entrant and shared between threads: the outermost block sets the aliases and the last one
    to leave removes them. Attributes the owner already has (e.g. ``np.bool`` on numpy 2) are
    never touched.
    """
    with _LOCK:
        if _STATE["depth"] == 0:
            added = []
            for owner, name, value in patched_attributes():
                if name not in vars(owner):  # numpy's module __getattr__ would warn on hasattr
                    setattr(owner, name, value)
                    added.append((owner, name))
            _STATE["added"] = added
        _STATE["depth"] += 1
    try:
        with contextlib.ExitStack() as stack:
            try:
                import dask
            except ImportError:  # pragma: no cover - dask is a dependency of arboreto
                pass
            else:
                stack.enter_context(dask.config.set({"dataframe.convert-string": False}))
            yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                for owner, name in reversed(_STATE["added"]):
                    with contextlib.suppress(AttributeError):
                        delattr(owner, name)
                _STATE["added"] = []


def _quiet_import(name: str):
    with pyscenic_env(), warnings.catch_warnings():
        # ctxcore imports pkg_resources (deprecated in setuptools, pinned < 81 by the project)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return importlib.import_module(name)


def import_pyscenic(submodule: str = "aucell"):
    """Import ``pyscenic.<submodule>`` under the shim (call its functions inside :func:`pyscenic_env`)."""
    return _quiet_import(f"pyscenic.{submodule}")


def import_arboreto(submodule: str = "core"):
    """Import ``arboreto.<submodule>`` under the shim (call its functions inside :func:`pyscenic_env`)."""
    return _quiet_import(f"arboreto.{submodule}")


def import_ctxcore_genesig():
    """Import ``ctxcore.genesig`` (GeneSignature, Regulon) under the shim."""
    return _quiet_import("ctxcore.genesig")
