"""Global settings: seed, device, verbosity, progress bars.

Nothing here imports torch at module import time; :func:`get_device` does so lazily.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np

__all__ = ["get_device", "logger", "progress", "seed_everything", "settings"]

logger = logging.getLogger("scdiffx_grn")
logger.addHandler(logging.NullHandler())  # no side effects at import


@dataclass
class _Settings:
    """Package-wide settings.

    Attributes
    ----------
    seed
        Default seed for functions that take ``seed=None``.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    verbosity
        Logging level of the ``scdiffx_grn`` logger (``"warning"``, ``"info"``, ``"debug"``).
    progress
        Show tqdm progress bars for long work.
    data_dir
        Where shared reference data lives (``../shared/data`` beside a checkout, or
        ``$SCDX_DATA_DIR``). Only benchmarks read from it; the package ships its demo data.
    threads
        CPU threads of torch (``torch.set_num_threads``), applied when a model first picks its
        device (and at once when torch is loaded already); ``None``: torch's default. Read from
        ``$SCDX_THREADS`` at import, by the Python API and the command line alike. On a shared or
        busy machine ``1`` is often much faster for small batches.
    """

    seed: int = 0
    device: str = "auto"
    _verbosity: str = "warning"
    progress: bool = True
    data_dir: str | None = None
    _threads: int | None = None

    @property
    def threads(self) -> int | None:
        return self._threads

    @threads.setter
    def threads(self, n: int | None) -> None:
        self._threads = _parse_threads(n)
        import sys

        if "torch" in sys.modules:
            _apply_threads()

    @property
    def verbosity(self) -> str:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, level: str) -> None:
        self._verbosity = level
        logger.setLevel(getattr(logging, str(level).upper()))
        if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler)
                   for h in logger.handlers):
            h = logging.StreamHandler()
            h.setFormatter(logging.Formatter("%(levelname)s scdiffx_grn: %(message)s"))
            logger.addHandler(h)
            # our handler prints; do not print again through the root logger's handlers
            # (Jupyter, logging.basicConfig)
            logger.propagate = False


def _parse_threads(n) -> int | None:
    if n is None or str(n).strip() in ("", "0"):
        return None
    try:
        v = int(str(n).strip())
    except ValueError:
        from ._errors import ScdxError

        raise ScdxError(f"threads (SCDX_THREADS) must be a whole number, got {n!r}") from None
    if v < 0:
        from ._errors import ScdxError

        raise ScdxError(f"threads (SCDX_THREADS) must be >= 1 (or 0 for torch's default), got {n!r}")
    return v


_applied_threads: list[int] = []


def _apply_threads() -> None:
    """Set torch's intra-op threads to ``settings.threads`` (when set and torch's count differs).

    Compared with torch's own count each time, not with what was applied before: other OpenMP users in
    the process (numba's threading layer, run by decoupler's kernels) reset the count to the number of
    cores, so training, translation and the engines call this when they start.
    """
    n = settings.threads
    if not n:
        return
    import torch

    if torch.get_num_threads() != int(n):
        torch.set_num_threads(int(n))
        _applied_threads.append(int(n))


def _env_threads() -> int | None:
    try:
        return _parse_threads(os.environ.get("SCDX_THREADS"))
    except Exception:  # noqa: BLE001 - a bad value must not break the import; the CLI reports it
        return None


settings = _Settings(progress=os.environ.get("SCDX_PROGRESS", "1") != "0",
                     data_dir=os.environ.get("SCDX_DATA_DIR"), _threads=_env_threads())


def seed_everything(seed: int | None = None) -> int:
    """Seed Python, NumPy and (if imported) torch; returns the seed used."""
    seed = settings.seed if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import sys

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return seed


def get_device(device: str | None = None):
    """Resolve a device string (``None`` -> settings.device; ``"auto"`` -> CUDA if available)."""
    import torch

    _apply_threads()
    device = settings.device if device is None else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ._errors import ScdxError

        raise ScdxError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return dev


def progress(iterable=None, **kwargs):
    """A tqdm progress bar honouring ``settings.progress``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not settings.progress)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
