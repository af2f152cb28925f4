"""Data manifests: where each data file lives, and its sha256.

Every data set or database the project reads has a YAML manifest in
``scdiffx_grn/datasets/manifests/<name>.yaml`` (``data_manifests/`` in a checkout links there) with fields ``name, description, where,
files [{path, sha256, bytes}], source, licence, species, genome, shape, labels, values``.
``where: vendored`` paths are relative to ``scdiffx_grn/datasets/data``; ``where: shared``
paths are relative to the shared data directory (see :func:`shared_data_dir`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._errors import ChecksumError, DataFileMissingError, ScdxError, _fmt_items
from .._settings import logger, settings

__all__ = [
    "manifest",
    "list_manifests",
    "data_path",
    "shared_data_dir",
    "vendored_data_dir",
    "manifest_dir",
    "sha256sum",
    "verify_file",
]

_PKG_DIR = Path(__file__).resolve().parent.parent  # .../scdiffx_grn
_REPO_ROOT = _PKG_DIR.parent
_VENDORED = Path(__file__).resolve().parent / "data"

# (resolved path, mtime_ns, size) -> sha256 hex; filled once per process
_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def vendored_data_dir() -> Path:
    """Folder holding the data files shipped inside the package.

    Returns
    -------
    Path
        ``scdiffx_grn/datasets/data``.
    """
    return _VENDORED


def manifest_dir() -> Path:
    """Folder holding the YAML manifests (``scdiffx_grn/datasets/manifests``, shipped with the package).

    The environment variable ``SCDX_MANIFEST_DIR`` overrides it (used by tests).

    Returns
    -------
    Path
        The manifest folder.
    """
    env = os.environ.get("SCDX_MANIFEST_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "manifests"


def shared_data_dir(required: bool = True) -> Path | None:
    """Locate the shared reference-data directory.

    Resolution order: ``settings.data_dir``; the environment variable ``SCDX_DATA_DIR``;
    ``../shared/data`` relative to the repository root (the parent of the package folder);
    ``../shared/data`` and ``shared/data`` relative to the current directory and each of
    its parents.

    Parameters
    ----------
    required
        Raise when nothing is found (else return ``None``).

    Returns
    -------
    Path or None
        The directory.

    Raises
    ------
    DataFileMissingError
        When ``required`` and no directory is found, or ``settings.data_dir`` /
        ``SCDX_DATA_DIR`` points at a folder that does not exist.
    """
    for origin, value in (("settings.data_dir", settings.data_dir),
                          ("SCDX_DATA_DIR", os.environ.get("SCDX_DATA_DIR"))):
        if value:
            p = Path(value).expanduser()
            if p.is_dir():
                return p.resolve()
            if required:
                raise DataFileMissingError(f"{origin} = {str(value)!r} is not a directory")
            return None
    candidates = [_REPO_ROOT.parent / "shared" / "data"]
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        candidates += [d.parent / "shared" / "data", d / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if required:
        raise DataFileMissingError(
            "shared data directory not found: set scdiffx_grn.settings.data_dir or the environment "
            "variable SCDX_DATA_DIR, or place it at ../shared/data beside the repository "
            f"(looked in {_REPO_ROOT.parent / 'shared' / 'data'} and above {cwd})"
        )
    return None


@lru_cache(maxsize=None)
def _load_yaml(path: str, mtime_ns: int) -> dict[str, Any]:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def list_manifests() -> list[str]:
    """Names of all data manifests.

    Returns
    -------
    list of str
        Sorted manifest names (file stems in :func:`manifest_dir`).
    """
    d = manifest_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def manifest(name: str) -> dict[str, Any]:
    """Read the manifest of a data set or database.

    Parameters
    ----------
    name
        Manifest name, e.g. ``"mouse_mop_snareseq"`` or ``"dorothea_mm"``.

    Returns
    -------
    dict
        The parsed YAML (a fresh copy; safe to modify), with ``_manifest_path`` added.

    Raises
    ------
    DataFileMissingError
        If no manifest of that name exists (the message lists the known ones).
    """
    import copy

    path = manifest_dir() / f"{name}.yaml"
    if not path.is_file():
        raise DataFileMissingError(
            f"no data manifest named {name!r} in {manifest_dir()}; known: {_fmt_items(list_manifests(), 40)}"
        )
    m = copy.deepcopy(_load_yaml(str(path), path.stat().st_mtime_ns))
    m["_manifest_path"] = str(path)
    return m


def sha256sum(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, cached per process on (path, mtime, size).

    Parameters
    ----------
    path
        File to hash.

    Returns
    -------
    str
        64 hex digits.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


def verify_file(path: str | os.PathLike, sha256: str, *, size: int | None = None,
                manifest_name: str = "?") -> Path:
    """Check that a file exists and has the expected sha256.

    Parameters
    ----------
    path
        The file.
    sha256
        Expected hex digest.
    size
        Expected size in bytes (checked first: cheap).
    manifest_name
        Manifest the expectation came from, for the message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataFileMissingError
        If the file does not exist.
    ChecksumError
        If its size or sha256 differ.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFileMissingError(f"data file {str(p)!r} of manifest {manifest_name!r} is missing")
    if size is not None and p.stat().st_size != int(size):
        raise ChecksumError(
            f"data file {str(p)!r} has {p.stat().st_size} bytes but manifest {manifest_name!r} "
            f"records {int(size)}: the file is truncated, corrupt or a different version"
        )
    got = sha256sum(p)
    if got != str(sha256).lower():
        raise ChecksumError(
            f"sha256 of data file {str(p)!r} is {got} but manifest {manifest_name!r} records "
            f"{sha256}: the file is corrupt or a different version"
        )
    return p


def _base_dir(m: dict[str, Any]) -> Path:
    where = m.get("where", "shared")
    if where == "vendored":
        return vendored_data_dir()
    if where == "shared":
        return shared_data_dir(required=True)
    raise ScdxError(f"manifest {m.get('name')!r} has unknown 'where' value {where!r}")


def data_path(name: str, file: str | None = None, verify: bool = True) -> Path:
    """Path of a data file named by a manifest, verified against its sha256.

    Parameters
    ----------
    name
        Manifest name.
    file
        Which file of the manifest: its recorded path or just its base name. ``None``
        picks the only data file; for a manifest with several files it returns the
        folder holding them (after verifying all of them).
    verify
        Check size and sha256 (cached per process, so repeated calls are cheap).

    Returns
    -------
    Path
        Absolute path of the file (or folder).

    Raises
    ------
    DataFileMissingError
        If the manifest, the file or the shared data directory is missing.
    ChecksumError
        If the file differs from the manifest.
    KeyError
        If ``file`` is not listed in the manifest.
    """
    m = manifest(name)
    files = m.get("files") or []
    base = _base_dir(m)
    if file is None:
        chosen = files
    else:
        chosen = [f for f in files if f["path"] == file or Path(f["path"]).name == file]
        if not chosen:
            from .._errors import UnknownFeatureError

            raise UnknownFeatureError(
                f"manifest {name!r} has no file {file!r}; its files: {_fmt_items([f['path'] for f in files])}"
            )
    for f in chosen:
        p = base / f["path"]
        if not p.is_file():
            raise DataFileMissingError(
                f"data file {str(p)!r} of manifest {name!r} ({m['_manifest_path']}) is missing"
            )
        if verify:
            verify_file(p, f["sha256"], size=f.get("bytes"), manifest_name=f"{name} ({m['_manifest_path']})")
    if len(chosen) == 1:
        return (base / chosen[0]["path"]).resolve()
    parents = {(base / f["path"]).parent for f in chosen}
    if len(parents) == 1:
        return parents.pop().resolve()
    return base.resolve()


def _clear_cache() -> None:
    """Forget cached checksums (tests)."""
    with _SHA_LOCK:
        _SHA_CACHE.clear()
    logger.debug("sha256 cache cleared")
