"""Safe file writes: a crash never leaves a half-written result or checkpoint, and a writer
never deletes or replaces a file it did not write (folders record their files in a manifest)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from ._errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_dir", "restore_orphaned_dir",
           "check_writable", "check_output_file", "check_output_dir", "output_dir", "check_not_input"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic
    on POSIX file systems. On an exception the temporary file is removed and ``path`` is
    left as it was. The file gets the permissions of a normally created file (``0666``
    less the umask; an existing file keeps its mode). Write failures (disk full, read-only
    folder) raise :class:`~scdiffx_grn.OutputError` naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _as_output_error(e, path) from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        mode = (path.stat().st_mode & 0o7777) if path.is_file() else _default_mode(False)
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        err = _output_error(e, path, tmp_path)
        if err is not None:
            raise err from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, known: Iterable[str] = (), strict: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; put its files at ``path`` on success.

    The folder records the files it wrote in a small manifest (``.scdiffx-grn.json``).

    - ``path`` absent: the temporary folder (a sibling) is renamed into place.
    - ``path`` holds only files of an earlier write (its manifest, or for folders without one
      the names matching the glob patterns ``known``): it is swapped for the new one as a
      whole, after the new one is complete.
    - ``path`` also holds other files: the new files are moved in one by one, files of the
      earlier write that are no longer produced are removed, and every other file is kept.
      With ``strict``, a new file whose name is taken by a file that is not ours raises
      :class:`~scdiffx_grn.OutputError` before anything is moved; otherwise it is replaced.

    On an exception nothing at ``path`` changes. Folders and files get the permissions of
    normally created ones (umask). Write failures raise :class:`~scdiffx_grn.OutputError`.
    """
    import shutil

    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write the folder {str(path)!r}: a file of that name exists")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        restore_orphaned_dir(path)
        own = _own_files(path, known) if path.is_dir() else set()
        merge = path.is_dir() and (bool(_list_files(path, stop_at_foreign=own)[1]) or path == Path.cwd()
                                   or not os.access(path.parent, os.W_OK | os.X_OK))
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=path if merge else path.parent))
    except OSError as e:
        raise _as_output_error(e, path) from e
    try:
        yield tmp
        new = _list_files(tmp)[0]
        (tmp / MANIFEST).write_text(json.dumps({"written_by": "scdiffx_grn", "files": new}, indent=1) + "\n")
        _chmod_tree(tmp)
        if merge:
            _merge_into(tmp, path, own, new, strict=strict)
        else:
            old = None
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                os.replace(path, old / "d")
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not merge:
            restore_orphaned_dir(path)  # failed between the two renames: put the old version back
        if isinstance(e, OutputError) and str(tmp) in str(e):  # a nested writer: name the real output
            raise OutputError(str(e).replace(str(tmp), str(path))) from e
        err = _output_error(e, path, tmp)
        if err is not None:
            raise err from e
        raise


# ----------------------------------------------------------------------------- output safety
MANIFEST = ".scdiffx-grn.json"
_TMP_PREFIX = ".scdx-tmp."
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTEMPTY}


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def _default_mode(is_dir: bool) -> int:
    """Mode of a newly created folder / file under the current umask."""
    return (0o777 if is_dir else 0o666) & ~_umask()


def _chmod_tree(folder: Path) -> None:
    """Give ``folder`` (made by mkdtemp: 0700) and the temporary files in it (mkstemp: 0600)
    the permissions of normally created ones."""
    dmode, fmode = _default_mode(True), _default_mode(False)
    os.chmod(folder, dmode)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), dmode)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p) and (os.stat(p).st_mode & 0o777) == 0o600:
                os.chmod(p, fmode)


def _list_files(folder: Path, stop_at_foreign: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Files under ``folder`` (relative posix paths; not the manifest nor temporary folders).

    With ``stop_at_foreign``, returns ``([], [first file not in that set])`` as soon as one is
    found (cheap on a large folder such as a home directory)."""
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if not d.startswith(_TMP_PREFIX) and not d.startswith(f".{folder.name}.old.")]
        for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = f if rel_root == "." else f"{Path(rel_root).as_posix()}/{f}"
            if rel == MANIFEST:
                continue
            if stop_at_foreign is not None and rel not in stop_at_foreign:
                return [], [rel]
            out.append(rel)
    return sorted(out), []


def _read_manifest(folder: Path) -> set[str] | None:
    try:
        rec = json.loads((folder / MANIFEST).read_text())
        return {str(f) for f in rec["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _own_files(folder: Path, known: Iterable[str] = ()) -> set[str]:
    """Files of ``folder`` written by scdiffx_grn: those of its manifest, or, for a folder written
    before manifests existed, all its files when it holds the signature file ``known[0]`` and
    only files matching the glob patterns ``known``."""
    import fnmatch

    rec = _read_manifest(folder)
    if rec is not None:
        return rec
    known = list(known)
    if not known or not (folder / known[0]).is_file():  # the first name is the writer's signature file
        return set()
    files = _list_files(folder)[0]
    if all(any(fnmatch.fnmatchcase(f, k) for k in known) for f in files):
        return set(files)
    return set()  # other files too: none is known to be ours


def _merge_into(tmp: Path, path: Path, own: set[str], new: list[str], *, strict: bool) -> None:
    """Move the files of ``tmp`` into the existing folder ``path``, keeping files not ours."""
    import shutil

    bad = []
    for f in new:
        dst = path / f
        parts = Path(f).parts
        for i in range(1, len(parts)):
            q = path.joinpath(*parts[:i])
            if q.exists() and not q.is_dir():
                bad.append(Path(*parts[:i]).as_posix())
        if dst.is_dir() and not dst.is_symlink():
            bad.append(f + "/")
        elif (dst.exists() or dst.is_symlink()) and strict and f not in own:
            bad.append(f)
    if bad:
        from ._errors import _fmt_items

        raise OutputError(f"{str(path)!r} already holds {_fmt_items(sorted(set(bad)))}, not written by scdiffx-grn; "
                          "move them away or choose another output folder (nothing was changed)")
    for f in new:
        dst = path / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / f, dst)
    for f in sorted(own - set(new)):  # our files of an earlier run that this run does not produce
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (path / f).unlink()
        q = (path / f).parent
        while q != path and q.is_dir() and not any(q.iterdir()):
            q.rmdir()
            q = q.parent
    os.replace(tmp / MANIFEST, path / MANIFEST)
    shutil.rmtree(tmp, ignore_errors=True)


def _output_error(exc: BaseException, path: Path, tmp: Path | None = None) -> OutputError | None:
    """An :class:`OutputError` for a failure to write ``path``, or ``None`` for other errors."""
    from ._errors import ScdxError

    if isinstance(exc, ScdxError):
        return None
    if isinstance(exc, OSError):
        fn = str(exc.filename or "")
        about_output = (not fn or fn.startswith(str(path.parent)) or (tmp is not None and fn.startswith(str(tmp)))
                        or not os.path.isabs(fn))
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or (exc.errno in _WRITE_ERRNOS and about_output) \
                or "No space left" in str(exc):
            return _as_output_error(exc, path)
        return None
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("file write failed", "No space left",
                                                                     "unexpected pos", "Disk quota")):
        return OutputError(f"cannot write {str(path)!r}: the write failed (disk full?): "
                           f"{' '.join(str(exc).split())[:200]}")
    return None


def _as_output_error(exc: OSError, path: Path) -> OutputError:
    why = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "; the disk is full: free some space or write elsewhere",
            errno.EDQUOT: "; the disk quota is exceeded: free some space or write elsewhere",
            errno.EROFS: "; the file system is read-only: write elsewhere",
            errno.EACCES: "; no permission: write elsewhere or fix the folder's permissions",
            errno.EPERM: "; no permission: write elsewhere or fix the folder's permissions"}.get(exc.errno, "")
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return OutputError(f"cannot write {str(path)!r}: {why}{where}{hint}")


def check_writable(path: str | os.PathLike) -> None:
    """Raise :class:`~scdiffx_grn.OutputError` unless ``path`` (a file or folder to create or
    replace) can be written: its nearest existing folder must accept a new file. Call it
    before long work so that the work is not lost at the end."""
    p = Path(os.path.abspath(path))
    anc = p if p.is_dir() else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: {str(anc)!r} is a file, not a folder")
    try:
        fd, t = tempfile.mkstemp(prefix=".scdx-write-test.", dir=anc)
        os.close(fd)
        os.unlink(t)
    except OSError as e:
        raise _as_output_error(e, Path(path)) from None
    if hasattr(os, "geteuid") and os.geteuid() != 0 and not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {str(path)!r}: {str(anc)!r} is not writable")


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False, option: str = "--overwrite") -> None:
    """Before the work: refuse an output file that exists (unless ``overwrite``), a folder
    given as a file name, and an unwritable place; raises :class:`~scdiffx_grn.OutputError`."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        eg = str(p / ("out" + (p.suffix or ".h5ad")))
        raise OutputError(f"output {str(path)!r} is a folder; give a file name (e.g. {eg!r})")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputError(f"output file {str(path)!r} exists; pass {option} to replace it, or choose another name")
    check_writable(p)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, known: Iterable[str] = (),
                     what: str = "output folder", option: str = "--overwrite") -> None:
    """Before the work: refuse a non-empty folder that scdiffx_grn did not write (unless
    ``overwrite``: then the results are added and the other files kept), a file in the way,
    and an unwritable place; raises :class:`~scdiffx_grn.OutputError`.

    A folder counts as ours when it holds a manifest of an earlier write, or (older folders)
    when all its files match the glob patterns ``known``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"output folder {str(path)!r} is an existing file; choose another name")
    if p.is_dir() and _read_manifest(p) is None:
        own = _own_files(p, known)
        first = _list_files(p, stop_at_foreign=own)[1]
        if first and not overwrite:
            from ._errors import _fmt_items

            top = sorted(x.name for x in p.iterdir() if x.name != MANIFEST)
            raise OutputError(f"output folder {str(path)!r} is not empty and is not a scdiffx-grn {what} (it holds "
                              f"{_fmt_items(top, 5)}); choose another folder, or pass {option} to write the results "
                              "beside these files (they are kept)")
    check_writable(p)


def _input_files(path: Path, limit: int = 10_000) -> list[Path]:
    """``path`` and, for a folder (a model folder, a 10x matrix folder), the files under it."""
    out = [path]
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            out += [Path(root) / f for f in files]
            if len(out) > limit:
                break
    return out


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file or folder: the same resolved path (symlinks followed),
    or, where both exist, the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Before the work: refuse an output that would write onto one of the command's own inputs.

    ``outputs`` and ``inputs`` map an option name (e.g. ``"--out"``, ``"--rna"``) to a path, a
    list of paths or ``None``. An output conflicts with an input when it is the same file or
    folder (paths resolved, symlinks followed, hard links compared by inode), when the output is
    one of the files of an input folder (a model folder), or when the output (a folder) holds an
    input file. Inputs that do not exist (built-in names) are ignored. With or without
    ``overwrite``, a conflict raises :class:`~scdiffx_grn.OutputError` naming both, before
    anything is read or written.
    """
    def paths(v) -> list[tuple[str, Path]]:  # (as given, absolute)
        vals = v if isinstance(v, (list, tuple)) else [v]
        return [(str(x), Path(os.path.abspath(x))) for x in vals if x is not None and str(x) != ""]

    ins = [(opt, given, p, f) for opt, v in inputs.items() for given, p in paths(v) if p.exists()
           for f in _input_files(p)]
    for out_opt, v in outputs.items():
        for out_given, out in paths(v):
            real_out = os.path.realpath(out).rstrip(os.sep) + os.sep
            for in_opt, given, p, f in ins:
                if os.path.realpath(f).startswith(real_out):
                    what = f"is a folder holding the input {in_opt} {given!r}" if f == p else \
                        f"is a folder holding {str(f)!r}, a file of the input {in_opt} {given!r}"
                elif _same(out, f):
                    what = f"would overwrite the input {in_opt} {given!r}" if f == p else \
                        f"would overwrite {str(f)!r}, a file of the input {in_opt} {given!r}"
                else:
                    continue
                raise OutputError(f"output {out_opt} {out_given!r} {what}; an output never replaces an input: "
                                  f"choose another {out_opt}")


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, *, overwrite: bool = False, known: Iterable[str] = (),
               what: str = "output folder", option: str = "--overwrite") -> Iterator[Path]:
    """:func:`check_output_dir`, then :func:`atomic_dir` in strict mode: only files scdiffx_grn
    wrote are ever replaced or removed."""
    known = list(known)
    check_output_dir(path, overwrite=overwrite, known=known, what=what, option=option)
    with atomic_dir(path, known=known, strict=True) as tmp:
        yield tmp


def restore_orphaned_dir(path: str | os.PathLike) -> bool:
    """Put back the previous version of ``path`` if a swap by :func:`atomic_dir` was interrupted
    between its two renames (a kill there leaves ``path`` missing and the old copy in
    ``.<name>.old.*/d``). Returns whether something was restored."""
    import shutil

    path = Path(path)
    if path.exists():
        return False
    for old in sorted(path.parent.glob(f".{path.name}.old.*")):
        if (old / "d").is_dir():
            os.replace(old / "d", path)
            shutil.rmtree(old, ignore_errors=True)
            return True
    return False
