"""Lazy re-export helper for the scanpy-style namespaces (tl / get / pl)."""

from __future__ import annotations

import importlib


def lazy_namespace(module_name: str, mapping: dict[str, str]):
    """Return (__getattr__, __dir__) that import ``mapping[name]`` on first use."""

    def __getattr__(name: str):
        if name in mapping:
            return getattr(importlib.import_module(mapping[name]), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    def __dir__():
        return sorted(mapping)

    return __getattr__, __dir__
