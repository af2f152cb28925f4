"""Resumable in-silico screens: every target x cell type, one result file per finished target."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from .._errors import CheckpointError, InputDataError, OptionError, ScdxError
from .._io import atomic_path, atomic_write_json
from .._registry import labels
from .._settings import logger, progress
from ._base import group_column, group_column_of
from ._controls import DEFAULT_MIN_EFFECT, DEFAULT_N_CONTROLS
from ._engine import engine_options, iter_results, model_features, prepare_inputs
from ._spec import Perturbation, tf_peak_map

__all__ = ["screen", "load_screen", "load_screen_effects", "summarise_effects", "ScreenLock", "is_screen_dir",
           "SCREEN_FILES"]

_DONE = "done.json"
_CONFIG = "config.json"

#: the files of a screen folder (glob patterns): the screen's own, and the command line's summary.csv and heatmap.png
SCREEN_FILES = ("done.json", "config.json", "report.parquet", "controls.parquet", "summary.parquet", "summary.csv",
                "heatmap.png", "effects/*.parquet", "summary/*.parquet", "screen.lock")
#: temporary files of its atomic writes (``_io.atomic_path``: ``.<name>.<random><suffix>``) that a kill leaves
_SCREEN_TMP = tuple(f"{d}.{b}.*" for d, b in ((p[:p.rfind("/") + 1], p[p.rfind("/") + 1:]) for p in SCREEN_FILES))
_CONFIG_KEYS = {"kind", "modality", "seed", "n_cells"}  # keys every screen's config.json holds


def _is_screen_config(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and _CONFIG_KEYS <= set(cfg)


def is_screen_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder a screen started, finished or not (resumable without overwriting).

    It holds the screen's lock (``screen.lock``), its index (``done.json``) or its settings
    (``config.json`` of a screen), and only files a screen writes (:data:`SCREEN_FILES`), the
    temporary files of atomic writes a killed run leaves included. The screen writes its lock,
    then its settings, then its index, before any result: a run killed at any point leaves a
    folder recognised here (or an empty one).
    """
    import fnmatch

    p = Path(path)
    if not p.is_dir():
        return False
    if not ((p / ScreenLock.NAME).is_file() or (p / _DONE).is_file() or _is_screen_config(p / _CONFIG)):
        return False
    pats = SCREEN_FILES + _SCREEN_TMP
    for root, dirs, files in os.walk(p):
        for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = Path(os.path.relpath(os.path.join(root, f), p)).as_posix()
            if not any(fnmatch.fnmatchcase(rel, pat) for pat in pats):
                return False
    return True


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary files of atomic writes (:data:`_SCREEN_TMP`, ending ``.tmp``) that a killed
    run left (under the lock)."""
    import fnmatch

    for f in out.rglob(".*.tmp"):
        if f.is_file() and any(fnmatch.fnmatchcase(f.relative_to(out).as_posix(), p) for p in _SCREEN_TMP):
            f.unlink(missing_ok=True)


def _read_result(path: Path, what: str) -> pd.DataFrame:
    """A per-target result file; an unreadable one raises :class:`CheckpointError` naming it."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise CheckpointError(f"the screen's {what} file {path} is missing; rerun the screen (same settings) to "
                              "recompute it") from None
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise CheckpointError(f"the screen's {what} file {path} is damaged ({' '.join(str(err).split())[:120]}); "
                              "rerun the screen (same settings) to recompute it") from None


def _damaged(out: Path, stem: str) -> str | None:
    """Why the result files of a finished target cannot be used (``None``: they can): the summary
    is read whole, the (larger) effects file down to its parquet footer."""
    import pyarrow.parquet as pq

    for path, full in ((out / "summary" / f"{stem}.parquet", True), (out / "effects" / f"{stem}.parquet", False)):
        try:
            pq.read_table(path) if full else pq.read_metadata(path)
        except FileNotFoundError:
            return f"{path} is missing"
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            return f"{path} is damaged ({' '.join(str(err).split())[:120]})"
    return None


def _stem(target: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target)[:60]
    return f"{safe}-{hashlib.sha1(target.encode()).hexdigest()[:8]}"


def summarise_effects(effects: pd.DataFrame, state: pd.DataFrame | None = None, *, alpha: float = 0.05,
                      n_top: int = 5, min_effect: float = 0.0) -> pd.DataFrame:
    """Per perturbation x cell type summary of an effects table (and state table).

    Columns: ``perturbation, <group>, n_features, n_sig, n_up, n_down, top_up, top_down``
    (``<group>``: the effects table's group column, named after the ``groupby`` of the run)
    (``;``-joined significant features with the largest positive / negative effects),
    ``max_abs_effect`` (raw units), ``n_sig_t`` (features with t-test-over-cells ``fdr <= alpha``,
    the old, uncalibrated count, for comparison only), ``max_abs_log2fc`` (control-calibrated
    tables) plus the state columns (``latent_shift``, ``pca_shift``, ``frac_type_changed``,
    ``top_new_type``, and the tests against controls: ``p_state_vs_controls``...).

    A feature is significant when the effects table says so (column ``significant`` of a
    control-calibrated table: ``fdr_vs_controls <= alpha`` and ``|log2fc| >= min_effect``, see
    :mod:`scdiffx_grn.perturb._controls`); for a table without controls, when ``fdr <= alpha``
    and ``|effect| >= min_effect``.
    """
    from ._effects import check_summary_options

    check_summary_options(alpha, n_top, min_effect)
    rows = []
    gcol = group_column_of(effects) or "cell_type"
    if len(effects):
        c1, u1 = pd.factorize(effects["perturbation"], sort=False)
        c2, u2 = pd.factorize(effects[gcol], sort=False)
        codes, ukey = pd.factorize(c1.astype(np.int64) * max(len(u2), 1) + c2, sort=False)
        uniq = [(u1[k // max(len(u2), 1)], u2[k % max(len(u2), 1)]) for k in ukey]
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        calibrated = "significant" in effects
        eff_all = effects["log2fc" if calibrated else "effect"].to_numpy(dtype=np.float64)
        fdr_all = effects["fdr"].to_numpy(dtype=np.float64) if "fdr" in effects else None
        sig_all = effects["significant"].to_numpy(dtype=bool) if calibrated else None
        feat_all = effects["feature"].to_numpy()
        eff_all_raw = effects["effect"].to_numpy(dtype=np.float64)
        for k, (pert, ct) in enumerate(uniq):
            ix = order[bounds[k]:bounds[k + 1]]
            eff = eff_all[ix]
            with np.errstate(invalid="ignore"):
                sig_t = (fdr_all[ix] <= alpha) if fdr_all is not None else np.zeros(len(ix), bool)
            if calibrated:
                sig = sig_all[ix]
            elif fdr_all is not None:
                with np.errstate(invalid="ignore"):
                    sig = sig_t & (np.abs(eff) >= min_effect)
            else:
                sig = np.zeros(len(ix), bool)
            up = np.flatnonzero(sig & (eff > 0))
            down = np.flatnonzero(sig & (eff < 0))
            top_up = up[np.argsort(-eff[up], kind="stable")[:n_top]]  # nlargest(keep="first")
            top_down = down[np.argsort(eff[down], kind="stable")[:n_top]]
            rows.append({"perturbation": pert, gcol: ct, "n_features": len(ix), "n_sig": int(sig.sum()),
                         "n_up": len(up), "n_down": len(down),
                         "top_up": ";".join(map(str, feat_all[ix][top_up])),
                         "top_down": ";".join(map(str, feat_all[ix][top_down])),
                         "max_abs_effect": float(np.abs(eff_all_raw[ix]).max()) if len(ix) else np.nan,
                         "n_sig_t": int(sig_t.sum()),
                         **({"max_abs_log2fc": float(np.abs(eff).max()) if len(ix) else np.nan}
                            if calibrated else {})})
    summ = pd.DataFrame(rows)
    if state is not None and len(state) and len(summ):
        cols = [c for c in state.columns if c not in ("n_samples",)]
        summ = summ.merge(state[cols], on=["perturbation", gcol], how="left")
    return summ


def _all_tfs(modality: str, genes: Sequence[str], tf_peaks, tfs, organism: str | None) -> list[str]:
    """The targets of ``targets="all_tfs"``: ``tfs``, else the TFs of ``tf_peaks``, else CollecTRI's TFs
    (:func:`scdiffx_grn.datasets.tf_list`), matched case-insensitively to the model's genes and
    returned in the genes' spelling, alphabetically."""
    if tfs is not None:
        return [str(t) for t in tfs]
    if modality == "tf":
        if tf_peaks is None:
            raise InputDataError("targets='all_tfs' with modality='tf' needs a TF -> peak table (tf_peaks=)")
        return sorted(tf_peak_map(tf_peaks))
    from ..datasets import tf_list

    if tf_peaks is not None:  # the TFs of the table (their peaks are no genes: min_targets=0 keeps every TF)
        tmap = tf_peak_map(tf_peaks)
        net = pd.DataFrame({"source": [t for t, ps in tmap.items() for _ in ps],
                            "target": [p for ps in tmap.values() for p in ps]})
        return tf_list(genes, network=net, order="name")
    try:
        return tf_list(genes, organism=organism or "human", source="collectri", order="name")
    except OptionError:
        raise
    except Exception as err:
        raise InputDataError("targets='all_tfs' needs a TF list: pass tfs=, tf_peaks=, or make "
                             f"datasets.collectri({organism!r}) available ({err})") from err


def _read_done(out: Path) -> dict[str, str]:
    f = out / _DONE
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())["done"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"screen index {f} is corrupt ({err}); delete it to start over") from err


class ScreenLock:
    """Exclusive lock on a screen directory: ``<out_dir>/screen.lock`` naming the holder.

    Created atomically (``O_CREAT | O_EXCL``) with the holder's pid, host, start time and
    command line. A second screen on the same directory raises :class:`CheckpointError` naming
    the other run; a lock left by a run that is gone (same host, pid not alive) is taken over
    with a warning. Released (file removed) when the screen ends, even on error.
    """

    NAME = "screen.lock"

    def __init__(self, out: Path):
        self.path = Path(out) / self.NAME
        self.held = False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> ScreenLock:
        import socket
        import sys
        import time

        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "argv": " ".join(sys.argv)[:300]}
        for attempt in range(2):
            try:
                self._create(info)
            except FileExistsError:
                other = self._read()
                pid, host = other.get("pid"), other.get("host")
                stale = (isinstance(pid, int) and host == info["host"] and not self._alive(pid))
                if stale and attempt == 0:
                    logger.warning("screen: taking over the stale lock %s of pid %s (no longer running)", self.path, pid)
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                raise CheckpointError(
                    f"screen directory {self.path.parent} is in use by another run (pid {pid} on {host}, started "
                    f"{other.get('started')}, command {other.get('argv')!r}); two screens on one directory would "
                    f"lose each other's targets. Wait for it to finish, use another out_dir, or delete "
                    f"{self.path} if that run is gone") from None
            self.held = True
            self._pid = info["pid"]
            return self
        raise CheckpointError(f"could not lock {self.path}")  # pragma: no cover

    def _create(self, info: dict) -> None:
        """Create the lock file with its content in one step (a hard link of a complete temporary
        file), so that a kill never leaves an empty lock; ``FileExistsError`` when it exists."""
        tmp = self.path.with_name(f".{self.NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as fh:
                    json.dump(info, fh)
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            if self._read().get("pid") == self._pid:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def screen(
    model,
    mdata,
    targets: Sequence[str] | Literal["all_tfs", "all_genes", "all_peaks"] = "all_tfs",
    *,
    kind: str = "knockout",
    modality: Literal["rna", "atac", "tf"] = "rna",
    factor: float | None = None,
    groupby: str | None = "cell_type",
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    batch_targets: int = 8,
    batch_size: int = 256,
    n_samples: int = 5,
    seed: int = 0,
    tf_peaks: pd.DataFrame | None = None,
    tfs: Sequence[str] | None = None,
    organism: str | None = None,
    on_unknown: Literal["raise", "report"] = "raise",
    test: Literal["t", "wilcoxon"] = "t",
    alpha: float = 0.05,
    n_top: int = 5,
    min_effect: float = DEFAULT_MIN_EFFECT,
    controls: int | Sequence[str] | None = DEFAULT_N_CONTROLS,
    keep_effects: Literal["all", "significant", "none"] = "all",
    translate_kwargs: dict | None = None,
    use_labels: bool = False,
    show_progress: bool = True,
    readout: Literal["mean", "samples"] = "mean",
    n_noise: int = 1,
    batch_rows: int = 1024,
    skip_unchanged: bool = True,
) -> pd.DataFrame:
    """Perturb every target on its own and summarise every target x cell type.

    Parameters
    ----------
    model
        Trained model with the tensor API.
    mdata
        Paired MuData (raw counts, ``obs[groupby]``).
    targets
        List of genes / peaks / TFs, ``"all_tfs"`` (``tfs=``; else the TFs of ``tf_peaks``;
        else CollecTRI sources via ``datasets.collectri(organism)``, intersected with the genes),
        ``"all_genes"`` (every model gene, ``modality="rna"``) or ``"all_peaks"`` (every model
        peak, ``modality="atac"``).
    kind, modality, factor
        As in :class:`~scdiffx_grn.perturb.Perturbation`.
    groupby
        Cell-type column.
    out_dir
        Directory for results (the group column of every table is named after ``groupby``,
        ``group`` when it is ``None``): ``effects/<target>.parquet`` and ``summary/<target>.parquet`` for
        each finished target (written atomically), then ``done.json`` (atomic) naming the finished
        targets; ``report.parquet`` lists unknown targets; ``summary.parquet`` is the final
        concatenation. ``None`` keeps everything in memory. The directory is locked while the
        screen runs (``screen.lock``): a second screen on it raises :class:`CheckpointError`
        naming the running one. The lock, ``config.json`` and ``done.json`` are written before
        any result, so a run killed at any point leaves a folder that :func:`is_screen_dir`
        recognises and a rerun resumes.
    resume
        Skip targets listed in ``done.json`` (their files are never rewritten). The screen's
        settings must match ``config.json``. A finished target whose result files are missing
        or damaged is recomputed, with a warning naming them. ``False`` starts over.
    readout
        How the paired engine (:class:`~scdiffx_grn.perturb.PairedEngine`) reads each translation
        out. ``"mean"`` (default): the posterior mean (one denoiser call per changed cell,
        statistics over cells; see :func:`~scdiffx_grn.tl.perturb`). ``"samples"``: ``n_samples``
        sampled translations per cell (``translate_kwargs`` ``sampler`` / ``n_steps``; statistics
        over samples). Either way unchanged cells are skipped exactly and cells and targets
        stream through the engine, so memory stays flat in both; targets finish (and are
        written) one at a time.
    n_noise, batch_rows, skip_unchanged
        Posterior-mean readout: noises per cell, rows per translation call; exact skipping of
        unchanged cells (both readouts).
    batch_targets
        Sampled readout: about ``batch_targets x batch_size`` edited cells per translation call.
    batch_size, n_samples, seed, test, translate_kwargs, use_labels
        Engine settings (see :func:`~scdiffx_grn.tl.perturb`).
    on_unknown
        ``"raise"`` (default): unknown targets raise :class:`~scdiffx_grn.UnknownFeatureError` naming
        them, before any work; ``"report"``: they are skipped and listed in the report (and a
        warning). Targets that are all unknown raise either way (there is nothing to screen).
    alpha, n_top, min_effect
        Significance level on ``fdr_vs_controls``, number of top features listed per direction,
        and the smallest ``|log2fc|`` counted as significant (default 0.1: a 7 % change of
        predicted expression / accessibility odds). Over thousands of cells a t-test makes any
        consistent shift significant, so significance is called against controls and this floor.
    controls
        Control perturbations that calibrate significance (the CRISPR-screen standard of
        non-targeting controls): an integer (default 20) draws that many control genes (peaks for
        ``modality="atac"``, random peak sets of the targets' median size for ``"tf"``) per
        group, matched to the targets on mean level and detection rate in the group's cells,
        excluding the targets and known TFs (CollecTRI / DoRothEA A-E / TRRUST, and ``tfs``);
        drawn reproducibly (ties broken by a hash of the name and ``seed``). A list of names
        uses those controls in every group. Each control is perturbed like the targets in one
        group's cells, once per group, shared by all targets. Every per-feature table gains
        ``log2fc, z_vs_controls, p_vs_controls, fdr_vs_controls, significant, n_controls``
        and the summary the target-level tests (``p_state_vs_controls``,
        ``fdr_state_vs_controls``, ``moves_state``, ``p_type_vs_controls``); see
        :mod:`scdiffx_grn.perturb._controls` for the statistics and what 20 controls can and
        cannot resolve. ``0`` / ``None``: no controls; nothing is called significant (the
        t-test columns ``pval``/``fdr`` and ``n_sig_t`` remain). The controls' own summary is in
        ``.attrs["controls"]`` and ``out_dir/controls.parquet``.
    keep_effects
        Which effect rows to write per target (``"significant"``: the rows called significant
        against the controls).
    show_progress
        A progress bar that advances once per finished target.

    Returns
    -------
    pandas.DataFrame
        Summary per target x cell type (see :func:`summarise_effects`), also in
        ``out_dir/summary.parquet``; the report of unknown targets is in ``.attrs["report"]``.
    """
    from ._controls import check_controls
    from ._effects import check_engine, check_on_unknown, check_summary_options
    from ._spec import check_targets

    check_engine(readout, test, n_noise, batch_size=batch_size, batch_rows=batch_rows)
    check_on_unknown(on_unknown)
    check_summary_options(alpha, n_top, min_effect)
    n_ctrl, ctrl_names = check_controls(controls)
    group_column(groupby)  # a name colliding with a table column raises before any work
    labels(mdata, groupby)  # a missing label column (or unlabelled cells) raises before out_dir is touched
    if keep_effects not in ("all", "significant", "none"):
        raise OptionError(f"keep_effects must be 'all', 'significant' or 'none', got {keep_effects!r}")
    if not isinstance(batch_targets, (int, np.integer)) or batch_targets < 1:
        raise OptionError(f"batch_targets must be an integer >= 1, got {batch_targets!r}")
    genes, peaks = model_features(model)
    if isinstance(targets, str):
        if targets == "all_genes":
            targets = list(genes)
        elif targets == "all_peaks":
            targets = list(peaks)
        elif targets == "all_tfs":
            targets = _all_tfs(modality, genes, tf_peaks, tfs, organism)
        else:
            raise OptionError(f"targets must be a list, 'all_tfs', 'all_genes' or 'all_peaks', got {targets!r}")
    targets = list(dict.fromkeys(str(t) for t in targets))
    if not targets:
        raise InputDataError("the screen has no targets")
    perts = [Perturbation([t], kind=kind, modality=modality, factor=factor, n_samples=n_samples, name=t)
             for t in targets]
    check_targets(perts, genes, peaks, tf_peaks, on_unknown)  # unknown targets raise before any work
    config = {"kind": kind, "modality": modality, "factor": perts[0].factor, "groupby": groupby,
              "n_samples": n_samples, "seed": seed, "test": test, "alpha": alpha, "n_top": n_top, "min_effect": min_effect,
              "controls": ctrl_names if ctrl_names is not None else n_ctrl,
              "keep_effects": keep_effects, "translate_kwargs": translate_kwargs or {}, "use_labels": use_labels,
              "n_cells": int(mdata.n_obs), "readout": readout, "n_noise": int(n_noise) if readout == "mean" else None}
    out = Path(out_dir) if out_dir is not None else None
    lock = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        lock = ScreenLock(out).acquire()
    try:
        return _screen_locked(model, mdata, perts, out, config, genes, peaks, resume=resume, tf_peaks=tf_peaks,
                              on_unknown=on_unknown, groupby=groupby, use_labels=use_labels, readout=readout,
                              n_noise=n_noise, batch_rows=batch_rows, skip_unchanged=skip_unchanged,
                              batch_targets=batch_targets, batch_size=batch_size, seed=seed, test=test,
                              alpha=alpha, n_top=n_top, min_effect=min_effect, keep_effects=keep_effects,
                              translate_kwargs=translate_kwargs, show_progress=show_progress,
                              controls=(n_ctrl, ctrl_names), tfs=tfs, organism=organism)
    finally:
        if lock is not None:
            lock.release()


def _screen_locked(model, mdata, perts, out, config, genes, peaks, *, resume, tf_peaks, on_unknown, groupby,
                   use_labels, readout, n_noise, batch_rows, skip_unchanged, batch_targets, batch_size, seed, test,
                   alpha, n_top, min_effect, keep_effects, translate_kwargs, show_progress, controls=(0, None),
                   tfs=None, organism=None):
    import time

    from ._effects import build_edits, effects_table, pca_basis, state_table
    from ._spec import resolve_targets

    gcol = group_column(groupby)
    done: dict[str, str] = {}
    if out is not None:
        cfg_file = out / _CONFIG
        if resume and cfg_file.exists():
            try:
                old = json.loads(cfg_file.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                raise CheckpointError(f"the screen settings {cfg_file} are damaged ({err}): the finished targets "
                                      "cannot be checked against this run; use another out_dir or resume=False "
                                      "(--no-resume)") from None
            diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(config)).items() if old.get(k) != v}
            if diff:
                raise CheckpointError(f"screen in {out} was run with other settings {diff}; "
                                      "use another out_dir or resume=False")
            done = _read_done(out)
        _remove_leftovers(out)
        atomic_write_json(cfg_file, config)
        if not resume or not (out / _DONE).exists():  # the index exists before any result
            atomic_write_json(out / _DONE, {"done": {}})
        bad = {t: why for t, why in ((t, _damaged(out, stem)) for t, stem in done.items()) if why}
        if bad:
            import warnings

            warnings.warn(f"screen: {len(bad)} finished target(s) have unusable result files and are recomputed: "
                          + "; ".join(f"{t!r}: {why}" for t, why in list(bad.items())[:5])
                          + (" ..." if len(bad) > 5 else ""), UserWarning, stacklevel=3)
            done = {t: stem for t, stem in done.items() if t not in bad}
            atomic_write_json(out / _DONE, {"done": done})
    # unknown targets: resolved up front so they are reported, never silently skipped
    reports, runnable, resolved = [], [], {}
    for p in perts:
        idx, rep = resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown=on_unknown)
        reports.append(rep)
        if len(idx):
            runnable.append(p)
            resolved[p.name] = idx
    report = pd.concat(reports, ignore_index=True)
    unknown = report[report.status != "ok"]
    if len(unknown):
        logger.warning("screen: %d unknown target(s) reported, not run: %s", len(unknown),
                       ", ".join(unknown.target.astype(str)[:10]))
    if out is not None:
        with atomic_path(out / "report.parquet") as tmp:
            report.to_parquet(tmp, index=False)
    todo = [p for p in runnable if p.name not in done]
    summaries: dict[str, pd.DataFrame] = {}
    last_write = {"t": 0.0, "cost": 0.0, "dirty": False}

    def write_done(force: bool = False):
        # done.json is rewritten at most ~10 % of the time (every target when it is cheap)
        now = time.perf_counter()
        if force or now - last_write["t"] >= 10 * last_write["cost"]:
            atomic_write_json(out / _DONE, {"done": done})
            last_write["cost"] = time.perf_counter() - now
            last_write["t"] = time.perf_counter()
            last_write["dirty"] = False
        else:
            last_write["dirty"] = True

    calib = {"c": None}
    ctrl_parts: dict[str, list] = {"effects": [], "state": []}

    def emit(p, e, s, bar):
        e, s = calib["c"].effects(e), calib["c"].state(s)
        summ = summarise_effects(e, s, alpha=alpha, n_top=n_top, min_effect=min_effect)
        summaries[p.name] = summ
        if out is not None:
            stem = _stem(p.name)
            keep = e if keep_effects == "all" else (e[e["significant"]] if keep_effects == "significant"
                                                    else e.iloc[:0])
            with atomic_path(out / "effects" / f"{stem}.parquet") as tmp:
                keep.reset_index(drop=True).to_parquet(tmp, index=False)
            with atomic_path(out / "summary" / f"{stem}.parquet") as tmp:
                summ.to_parquet(tmp, index=False)
            done[p.name] = stem
            write_done()
        bar.update(1)

    def controls_done():
        from ._controls import ControlCalibration

        ce = pd.concat(ctrl_parts["effects"], ignore_index=True) if ctrl_parts["effects"] else None
        cs = pd.concat(ctrl_parts["state"], ignore_index=True) if ctrl_parts["state"] else None
        calib["c"] = ControlCalibration(ce, cs, group_col=gcol, alpha=alpha, min_effect=min_effect)
        if ce is not None:
            # each control against the others: how many features the test calls for a null edit
            csumm = summarise_effects(calib["c"].effects(ce), calib["c"].state(cs) if cs is not None else None,
                                      alpha=alpha, n_top=n_top, min_effect=min_effect)
            ctrl_parts["summary"] = csumm
            if out is not None:
                with atomic_path(out / "controls.parquet") as tmp:
                    csumm.to_parquet(tmp, index=False)

    if todo:
        from ._controls import control_perturbations

        inputs = prepare_inputs(model, mdata, perts[0].source, groupby=groupby, use_labels=use_labels)
        readout_names = peaks if perts[0].source == "rna" else genes
        cperts = control_perturbations(inputs, runnable, resolved, genes, peaks, n=controls[0], names=controls[1],
                                       seed=seed, groupby=groupby, tfs=tfs, organism=organism)
        cres = [resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown="report")[0] for p in cperts]
        bar = progress(total=len(runnable), initial=len(runnable) - len(todo), desc="screen", unit="target",
                       disable=not show_progress)
        try:
            edits, kept = build_edits(model, inputs, cperts + todo, cres + [resolved[p.name] for p in todo], groupby)
            cnames = {p.name for p in cperts}
            n_c = sum(1 for p in kept if p.name in cnames)
            meta = {p.name: (p.kind, p.modality) for p in kept}
            it = iter_results(model, inputs, edits, **engine_options(
                model, readout, n_noise=n_noise, n_samples=perts[0].n_samples, seed=seed, batch_rows=batch_rows,
                batch_size=batch_size, batch_targets=batch_targets, translate_kwargs=translate_kwargs,
                skip_unchanged=skip_unchanged))
            _, ctrl = next(it)
            basis = pca_basis(ctrl.ctrl_profiles)
            if n_c == 0:
                controls_done()
            for ei, res in it:  # edits come back in order: the controls first
                p = kept[ei]
                e = effects_table(res, readout_names, test=test, group_col=gcol)
                st = state_table(res, basis, group_col=gcol)
                if len(st):
                    st["kind"], st["modality"] = meta[p.name]
                if ei < n_c:
                    ctrl_parts["effects"].append(e)
                    ctrl_parts["state"].append(st)
                    if ei == n_c - 1:
                        controls_done()
                    continue
                emit(p, e, st, bar)
        finally:
            bar.close()
            if out is not None and last_write["dirty"]:
                write_done(force=True)
    if out is not None:
        summary = load_screen(out, targets=[p.name for p in runnable], _write=True)
    else:
        from ._controls import add_state_fdr

        frames = [summaries[p.name] for p in runnable if p.name in summaries]
        summary = add_state_fdr(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), alpha)
        summary.attrs["controls"] = ctrl_parts.get("summary", pd.DataFrame())
    summary.attrs["report"] = report
    return summary


def load_screen(out_dir: str | os.PathLike, targets: Sequence[str] | None = None, *, _write: bool = False) -> pd.DataFrame:
    """Concatenated per target x cell type summary of a (possibly unfinished) screen directory."""
    out = Path(out_dir)
    done = _read_done(out)
    if not done and not (out / _DONE).exists():
        raise CheckpointError(f"{out} is not a screen directory (no {_DONE})")
    names = [t for t in (targets if targets is not None else done) if t in done]
    frames = [_read_result(out / "summary" / f"{done[t]}.parquet", f"summary of {t!r}") for t in names]
    summary = _finish_summary(out, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    if _write:
        with atomic_path(out / "summary.parquet") as tmp:
            summary.to_parquet(tmp, index=False)
    if (out / "report.parquet").exists():
        summary.attrs["report"] = pd.read_parquet(out / "report.parquet")
    if (out / "controls.parquet").exists():
        summary.attrs["controls"] = pd.read_parquet(out / "controls.parquet")
    return summary


def _finish_summary(out: Path, summary: pd.DataFrame) -> pd.DataFrame:
    """Across-target part of a screen summary: BH of the target-level tests over the targets
    (:func:`~._controls.add_state_fdr`, at the screen's ``alpha``)."""
    from ._controls import add_state_fdr

    alpha = 0.05
    if (out / _CONFIG).exists():
        try:
            alpha = float(json.loads((out / _CONFIG).read_text()).get("alpha", 0.05))
        except (ValueError, TypeError):
            pass
    return add_state_fdr(summary, alpha)


def load_screen_effects(out_dir: str | os.PathLike, target: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Effect table(s) of finished targets of a screen directory."""
    out = Path(out_dir)
    done = _read_done(out)
    names = list(done) if target is None else ([target] if isinstance(target, str) else list(target))
    missing = [t for t in names if t not in done]
    if missing:
        raise ScdxError(f"targets not finished in {out}: {missing[:10]}")
    frames = [_read_result(out / "effects" / f"{done[t]}.parquet", f"effects of {t!r}") for t in names]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
