"""Resumable in-silico screens: every target x cell type, one effects and one summary file per chunk of targets."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from .._errors import CheckpointError, InputDataError, OptionError, ScdxError
from .._io import atomic_path, atomic_write_json
from .._registry import labels
from .._settings import logger, progress
from ._base import group_column, group_column_of
from ._controls import DEFAULT_MIN_EFFECT, DEFAULT_N_CONTROLS
from ._engine import iter_results, model_features, prepare_inputs
from ._options import ControlOptions, EngineOptions, OutputOptions, options_from
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
    keep_effects: Literal["auto", "all", "significant", "none"] = "auto",
    translate_kwargs: dict | None = None,
    use_labels: bool = False,
    show_progress: bool = True,
    readout: Literal["mean", "samples"] = "mean",
    n_noise: int = 1,
    batch_rows: int = 1024,
    skip_unchanged: bool = True,
    chunk_targets: int | None = None,
    engine: EngineOptions | None = None,
    control: ControlOptions | None = None,
    output: OutputOptions | None = None,
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
        ``group`` when it is ``None``), written once per chunk of targets (``chunk_targets``):
        ``effects/chunk-<k>.parquet`` and ``summary/chunk-<k>.parquet`` (written atomically), then
        ``done.json`` (atomic) naming the finished targets and their chunk; ``report.parquet``
        lists unknown targets; ``controls.parquet`` the controls' summary; ``summary.parquet`` is
        the final concatenation. ``None`` keeps everything in memory. The directory is locked while the
        screen runs (``screen.lock``): a second screen on it raises :class:`CheckpointError`
        naming the running one. The lock, ``config.json`` and ``done.json`` are written before
        any result, so a run killed at any point leaves a folder that :func:`is_screen_dir`
        recognises and a rerun resumes.
    resume
        Skip targets listed in ``done.json`` (their files are never rewritten; a killed run resumes
        at chunk granularity: the chunk in progress is recomputed). The screen's settings must
        match ``config.json``. A finished target whose chunk files are missing or damaged is
        recomputed (with every target of that chunk), with a warning naming them. ``False``
        starts over. Folders of earlier versions (one file per target) are read and resumed too.
    readout
        How the paired engine (:class:`~scdiffx_grn.perturb.PairedEngine`) reads each translation
        out. ``"mean"`` (default): the posterior mean (one denoiser call per changed cell,
        statistics over cells; see :func:`~scdiffx_grn.tl.perturb`). ``"samples"``: ``n_samples``
        sampled translations per cell (``translate_kwargs`` ``sampler`` / ``n_steps``; statistics
        over samples). Either way unchanged cells are skipped exactly and cells and targets
        stream through the engine, so memory stays flat in both; the statistics of a chunk of
        targets (effects, t-tests, the tests against controls, summaries) are computed at once,
        vectorised over the chunk.
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
        Which effect rows to write: ``"all"``, ``"significant"`` (the rows called significant
        against the controls), ``"none"`` (summaries only), or ``"auto"`` (default): ``"all"``
        up to 5 M effect rows (targets x groups x features), ``"none"`` above, so a large screen's
        output stays bounded (pass ``"all"`` / ``"significant"`` to keep per-feature effects).
    chunk_targets
        Targets per result chunk (one effects and one summary file each); ``None`` (default):
        about 0.5 M effect rows per chunk (at most 256 targets).
    engine, control, output
        The options as objects (:class:`~scdiffx_grn.perturb.EngineOptions`,
        :class:`~scdiffx_grn.perturb.ControlOptions`, :class:`~scdiffx_grn.perturb.OutputOptions`)
        instead of the keywords of their group (a keyword that differs from its default and from
        the object raises :class:`OptionError`).
    show_progress
        A progress bar that advances by the targets of each finished chunk.

    Returns
    -------
    pandas.DataFrame
        Summary per target x cell type (see :func:`summarise_effects`), also in
        ``out_dir/summary.parquet``; the report of unknown targets is in ``.attrs["report"]``.
    """
    import inspect

    from ._effects import check_on_unknown
    from ._spec import check_targets

    kw = {k: v for k, v in locals().items() if k not in ("model", "mdata", "targets", "engine", "control", "output",
                                                         "inspect", "check_on_unknown", "check_targets")}
    defaults = {k: p.default for k, p in inspect.signature(screen).parameters.items()
                if p.default is not inspect.Parameter.empty}
    opts = options_from(kw, {"engine": engine, "control": control, "output": output}, defaults)
    eng, ctl, outp = opts["engine"], opts["control"], opts["output"]
    check_on_unknown(on_unknown)
    group_column(groupby)  # a name colliding with a table column raises before any work
    lab = labels(mdata, groupby)  # a missing label column (or unlabelled cells) raises before out_dir is touched
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
    perts = [Perturbation([t], kind=kind, modality=modality, factor=factor, n_samples=eng.n_samples, name=t)
             for t in targets]
    check_targets(perts, genes, peaks, tf_peaks, on_unknown)  # unknown targets raise before any work
    n_feat = len(peaks if perts[0].source == "rna" else genes)
    n_groups = max(int(pd.unique(lab.to_numpy()).size), 1)
    keep = outp.resolved_keep(len(targets) * n_groups * n_feat)
    if keep != outp.keep_effects:
        logger.info("screen: keep_effects='auto' -> %r (%d targets x %d groups x %d features)", keep, len(targets),
                    n_groups, n_feat)
    config = {"kind": kind, "modality": modality, "factor": perts[0].factor, "groupby": groupby,
              "n_samples": eng.n_samples, "seed": eng.seed, "test": eng.test, "alpha": ctl.alpha, "n_top": outp.n_top,
              "min_effect": ctl.min_effect, "controls": ctl.controls, "keep_effects": keep,
              "translate_kwargs": eng.translate_kwargs, "use_labels": eng.use_labels, "n_cells": int(mdata.n_obs),
              "readout": eng.readout, "n_noise": eng.n_noise if eng.readout == "mean" else None}
    out = Path(outp.out_dir) if outp.out_dir is not None else None
    lock = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        lock = ScreenLock(out).acquire()
    try:
        return _screen_locked(model, mdata, perts, out, config, genes, peaks, eng=eng, ctl=ctl, outp=outp,
                              keep=keep, chunk=outp.chunk_size(n_groups, n_feat), tf_peaks=tf_peaks,
                              on_unknown=on_unknown, groupby=groupby, tfs=tfs, organism=organism)
    finally:
        if lock is not None:
            lock.release()


_CHUNK = re.compile(r"chunk-(\d+)$")


def _next_chunk(done: dict[str, str]) -> int:
    """Index of the next chunk file: one past the chunks ``done.json`` names (a chunk a killed run
    wrote but did not list is rewritten)."""
    ks = [int(m.group(1)) for m in (_CHUNK.match(s) for s in set(done.values())) if m]
    return max(ks) + 1 if ks else 0


def _join(results: list) -> Any:
    """The per-edit ``EngineResult`` of :func:`~._engine.iter_results` joined into one (``E`` edits)."""
    from ._base import EngineResult

    fields = ("diff_sum", "ctrl_sum", "n_cells", "zdiff_sum", "type_changed", "new_type", "diff_sq", "diff_absmax",
              "n_changed")
    r0 = results[0]
    return EngineResult(**{**vars(r0), "names": [n for r in results for n in r.names], **{
        f: None if getattr(r0, f) is None else np.concatenate([getattr(r, f) for r in results]) for f in fields}})


def _summarise_blocks(perts, groups, gcol: str, features, l2, effect, fdr, sig, *, alpha: float,
                      n_top: int) -> pd.DataFrame:
    """:func:`summarise_effects` of a control-calibrated effects table laid out in ``m`` blocks of
    ``F`` features (``m x F`` arrays), vectorised over the blocks; the same rows and values."""
    m, F = l2.shape
    with np.errstate(invalid="ignore"):
        sig_t = fdr <= alpha if fdr is not None else np.zeros((m, F), bool)
        up_m, down_m = sig & (l2 > 0), sig & (l2 < 0)
    features = np.asarray(features, dtype=object)

    def tops(mask, key):
        out = [""] * m
        for i in np.flatnonzero(mask.any(axis=1)):
            ix = np.flatnonzero(mask[i])
            ix = ix[np.argsort(key[i, ix], kind="stable")[:n_top]]
            out[i] = ";".join(map(str, features[ix]))
        return out

    summ = pd.DataFrame({
        "perturbation": np.asarray(perts, dtype=object), gcol: np.asarray(groups, dtype=object),
        "n_features": np.full(m, F, np.int64), "n_sig": sig.sum(axis=1).astype(np.int64),
        "n_up": up_m.sum(axis=1).astype(np.int64), "n_down": down_m.sum(axis=1).astype(np.int64),
        "top_up": tops(up_m, -l2), "top_down": tops(down_m, l2),
        "max_abs_effect": np.abs(effect).max(axis=1) if F else np.full(m, np.nan),
        "n_sig_t": sig_t.sum(axis=1).astype(np.int64),
        "max_abs_log2fc": np.abs(l2).max(axis=1) if F else np.full(m, np.nan)})
    return summ


def _chunk_tables(res, calib, basis, features, *, gcol: str, test: str, meta: dict, alpha: float, n_top: int,
                  min_effect: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Calibrated effects, calibrated state and summary of the targets of one joined ``EngineResult``,
    vectorised over the chunk (the tables :meth:`ControlCalibration.effects` / ``.state`` and
    :func:`summarise_effects` give target by target)."""
    from ._controls import log2_effect
    from ._effects import effects_table, state_table

    e = effects_table(res, features, test=test, group_col=gcol)
    st = state_table(res, basis, group_col=gcol)
    if len(st):
        kinds = st["perturbation"].map(lambda n: meta[n][0])
        st["kind"], st["modality"] = kinds.to_numpy(), st["perturbation"].map(lambda n: meta[n][1]).to_numpy()
    st = calib.state(st)
    F = len(features)
    if not len(e) or F == 0 or len(e) % F:
        e = calib.effects(e)
        return e, st, summarise_effects(e, st, alpha=alpha, n_top=n_top, min_effect=min_effect)
    m = len(e) // F
    perts, groups = e["perturbation"].to_numpy()[::F], e[gcol].to_numpy()[::F]
    l2 = log2_effect(e["ctrl_mean"].to_numpy(), e["pert_mean"].to_numpy(), str(e["readout"].iloc[0])).reshape(m, F)
    z, p, q, nc = calib.block_effects(l2, perts, groups, features)
    with np.errstate(invalid="ignore"):
        sig = (q <= calib.alpha) & (np.abs(l2) >= calib.min_effect)
    e["log2fc"] = l2.ravel()
    e["z_vs_controls"] = z.ravel()
    e["p_vs_controls"] = p.ravel()
    e["fdr_vs_controls"] = q.ravel()
    e["significant"] = sig.ravel()
    e["n_controls"] = np.repeat(nc, F)
    fdr = e["fdr"].to_numpy(np.float64).reshape(m, F) if "fdr" in e else None
    summ = _summarise_blocks(perts, groups, gcol, features, l2, e["effect"].to_numpy(np.float64).reshape(m, F),
                             fdr, sig, alpha=alpha, n_top=n_top)
    if len(st) and len(summ):
        summ = summ.merge(st[[c for c in st.columns if c != "n_samples"]], on=["perturbation", gcol], how="left")
    return e, st, summ


def _screen_locked(model, mdata, perts, out, config, genes, peaks, *, eng: EngineOptions, ctl: ControlOptions,
                   outp: OutputOptions, keep: str, chunk: int, tf_peaks, on_unknown, groupby, tfs=None,
                   organism=None):
    from ._effects import build_edits, pca_basis
    from ._spec import resolve_targets

    gcol = group_column(groupby)
    alpha, n_top, min_effect = ctl.alpha, outp.n_top, ctl.min_effect
    done: dict[str, str] = {}
    if out is not None:
        cfg_file = out / _CONFIG
        if outp.resume and cfg_file.exists():
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
        if not outp.resume or not (out / _DONE).exists():  # the index exists before any result
            atomic_write_json(out / _DONE, {"done": {}})
        bad_stems = {stem: why for stem, why in ((s, _damaged(out, s)) for s in dict.fromkeys(done.values())) if why}
        bad = {t: bad_stems[stem] for t, stem in done.items() if stem in bad_stems}
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
    summaries: list[pd.DataFrame] = []
    ctrl_summary = pd.DataFrame()
    if todo:
        from ._controls import ControlCalibration, control_perturbations

        inputs = prepare_inputs(model, mdata, perts[0].source, groupby=groupby, use_labels=eng.use_labels)
        features = peaks if perts[0].source == "rna" else genes
        cperts = control_perturbations(inputs, runnable, resolved, genes, peaks, n=ctl.n_controls, names=ctl.names,
                                       seed=eng.seed, groupby=groupby, tfs=tfs, organism=organism)
        cres = [resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown="report")[0] for p in cperts]
        bar = progress(total=len(runnable), initial=len(runnable) - len(todo), desc="screen", unit="target",
                       disable=not outp.show_progress)
        k_next = _next_chunk(done)
        try:
            edits, kept = build_edits(model, inputs, cperts + todo, cres + [resolved[p.name] for p in todo], groupby)
            cnames = {p.name for p in cperts}
            n_c = sum(1 for p in kept if p.name in cnames)
            meta = {p.name: (p.kind, p.modality) for p in kept}
            it = iter_results(model, inputs, edits, **eng.engine_kwargs(model))
            _, ctrl = next(it)
            basis = pca_basis(ctrl.ctrl_profiles)  # once per screen, shared by every chunk
            tab = dict(gcol=gcol, test=eng.test, meta=meta, alpha=alpha, n_top=n_top, min_effect=min_effect)
            calib = None
            ctrl_res: list = []
            buf: list = []

            def controls_done():
                nonlocal calib, ctrl_summary
                if not ctrl_res:
                    calib = ControlCalibration(None, None, group_col=gcol, alpha=alpha, min_effect=min_effect)
                    return
                from ._effects import effects_table, state_table

                r = _join(ctrl_res)
                ce = effects_table(r, features, test=eng.test, group_col=gcol)
                cs = state_table(r, basis, group_col=gcol)
                if len(cs):
                    cs["kind"] = cs["perturbation"].map(lambda n: meta[n][0]).to_numpy()
                    cs["modality"] = cs["perturbation"].map(lambda n: meta[n][1]).to_numpy()
                calib = ControlCalibration(ce, cs, group_col=gcol, alpha=alpha, min_effect=min_effect)
                # each control against the others: how many features the test calls for a null edit
                ctrl_summary = _chunk_tables(r, calib, basis, features, **tab)[2]
                if out is not None:
                    with atomic_path(out / "controls.parquet") as tmp:
                        ctrl_summary.to_parquet(tmp, index=False)

            def flush():
                nonlocal k_next
                if not buf:
                    return
                e, _, summ = _chunk_tables(_join(buf), calib, basis, features, **tab)
                names = [n for r in buf for n in r.names]
                buf.clear()
                summaries.append(summ)
                if out is not None:
                    stem = f"chunk-{k_next:05d}"
                    kept_e = e if keep == "all" else (e[e["significant"].to_numpy()] if keep == "significant"
                                                      else e.iloc[:0])
                    with atomic_path(out / "effects" / f"{stem}.parquet") as tmp:
                        kept_e.reset_index(drop=True).to_parquet(tmp, index=False)
                    with atomic_path(out / "summary" / f"{stem}.parquet") as tmp:
                        summ.to_parquet(tmp, index=False)
                    done.update({n: stem for n in names})
                    atomic_write_json(out / _DONE, {"done": done})
                    k_next += 1
                bar.update(len(names))

            if n_c == 0:
                controls_done()
            for ei, res in it:  # edits come back in order: the controls first
                if ei < n_c:
                    ctrl_res.append(res)
                    if ei == n_c - 1:
                        controls_done()
                    continue
                buf.append(res)
                if len(buf) >= chunk:
                    flush()
            flush()
        finally:
            bar.close()
    if out is not None:
        summary = load_screen(out, targets=[p.name for p in runnable], _write=True)
    else:
        from ._controls import add_state_fdr

        frames = [f for f in summaries if len(f)]
        summary = add_state_fdr(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), alpha)
        summary.attrs["controls"] = ctrl_summary
    summary.attrs["report"] = report
    return summary


def _read_targets(out: Path, done: dict[str, str], names: Sequence[str], sub: str, what: str) -> pd.DataFrame:
    """The rows of ``names`` in the result files ``<sub>/<stem>.parquet`` (a chunk of several
    targets, or one target's file of an earlier version), each file read once, in the order of ``names``."""
    names = list(names)
    if not names:
        return pd.DataFrame()
    by_stem: dict[str, list[str]] = {}
    for t in names:
        by_stem.setdefault(done[t], []).append(t)
    frames = []
    for stem, ts in by_stem.items():
        label = f"{what} of " + ", ".join(repr(t) for t in ts[:3]) + (" ..." if len(ts) > 3 else "")
        df = _read_result(out / sub / f"{stem}.parquet", label)
        if len(df) and "perturbation" in df:
            held = df["perturbation"].astype(str)
            if not held.isin(ts).all():
                df = df[held.isin(ts).to_numpy()]
        frames.append(df)
    res = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    if len(by_stem) > 1 and len(res) and "perturbation" in res:
        pos = pd.Index(names).get_indexer(res["perturbation"].astype(str))
        if (np.diff(pos) < 0).any():
            res = res.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)
    return res


def load_screen(out_dir: str | os.PathLike, targets: Sequence[str] | None = None, *, _write: bool = False) -> pd.DataFrame:
    """Concatenated per target x cell type summary of a (possibly unfinished) screen directory."""
    out = Path(out_dir)
    done = _read_done(out)
    if not done and not (out / _DONE).exists():
        raise CheckpointError(f"{out} is not a screen directory (no {_DONE})")
    names = [t for t in (targets if targets is not None else done) if t in done]
    summary = _finish_summary(out, _read_targets(out, done, names, "summary", "summary"))
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
    return _read_targets(out, done, names, "effects", "effects")
