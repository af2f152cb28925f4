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

from .._errors import CheckpointError, InputDataError, ScdxError
from .._io import atomic_path, atomic_write_json
from .._settings import logger, progress
from ._effects import run_perturbations
from ._engine import model_features, prepare_inputs
from ._spec import Perturbation, tf_peak_map

__all__ = ["screen", "load_screen", "load_screen_effects", "summarise_effects"]

_DONE = "done.json"
_CONFIG = "config.json"


def _stem(target: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", target)[:60]
    return f"{safe}-{hashlib.sha1(target.encode()).hexdigest()[:8]}"


def summarise_effects(effects: pd.DataFrame, state: pd.DataFrame | None = None, *, alpha: float = 0.05,
                      n_top: int = 5, min_effect: float = 0.0) -> pd.DataFrame:
    """Per perturbation x cell type summary of an effects table (and state table).

    Columns: ``perturbation, cell_type, n_features, n_sig, n_up, n_down, top_up, top_down``
    (``;``-joined significant features with the largest positive / negative effects),
    ``max_abs_effect`` plus the state columns (``latent_shift``, ``pca_shift``,
    ``frac_type_changed``, ``top_new_type``...). A feature is significant when
    ``fdr <= alpha`` and ``|effect| >= min_effect``.
    """
    rows = []
    for (pert, ct), df in effects.groupby(["perturbation", "cell_type"], sort=False, observed=True):
        sig = df[(df["fdr"] <= alpha) & (df["effect"].abs() >= min_effect)] if "fdr" in df else df.iloc[:0]
        up = sig[sig["effect"] > 0].nlargest(n_top, "effect")
        down = sig[sig["effect"] < 0].nsmallest(n_top, "effect")
        rows.append({"perturbation": pert, "cell_type": ct, "n_features": len(df), "n_sig": len(sig),
                     "n_up": int((sig["effect"] > 0).sum()), "n_down": int((sig["effect"] < 0).sum()),
                     "top_up": ";".join(map(str, up["feature"])), "top_down": ";".join(map(str, down["feature"])),
                     "max_abs_effect": float(df["effect"].abs().max()) if len(df) else np.nan})
    summ = pd.DataFrame(rows)
    if state is not None and len(state) and len(summ):
        cols = [c for c in state.columns if c not in ("n_samples",)]
        summ = summ.merge(state[cols], on=["perturbation", "cell_type"], how="left")
    return summ


def _all_tfs(modality: str, genes: Sequence[str], tf_peaks, tfs, organism: str | None) -> list[str]:
    if tfs is not None:
        return [str(t) for t in tfs]
    if modality == "tf":
        if tf_peaks is None:
            raise InputDataError("targets='all_tfs' with modality='tf' needs a TF -> peak table (tf_peaks=)")
        return sorted(tf_peak_map(tf_peaks))
    if tf_peaks is not None:
        cand = set(tf_peak_map(tf_peaks))
    else:
        try:
            from .. import datasets

            net = datasets.collectri(organism or "human")
        except Exception as err:  # noqa: BLE001 - we re-raise with a clear message
            raise InputDataError("targets='all_tfs' needs a TF list: pass tfs=, tf_peaks=, or make "
                                 f"datasets.collectri({organism!r}) available ({err})") from err
        cand = set(map(str, net["source"]))
    gset = {g.upper(): g for g in genes}
    return sorted({gset[t.upper()] for t in cand if t.upper() in gset})


def _read_done(out: Path) -> dict[str, str]:
    f = out / _DONE
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())["done"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"screen index {f} is corrupt ({err}); delete it to start over") from err


def screen(
    model,
    mdata,
    targets: Sequence[str] | Literal["all_tfs"] = "all_tfs",
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
    on_unknown: Literal["raise", "report"] = "report",
    test: Literal["t", "wilcoxon"] = "t",
    alpha: float = 0.05,
    n_top: int = 5,
    min_effect: float = 0.0,
    keep_effects: Literal["all", "significant", "none"] = "all",
    translate_kwargs: dict | None = None,
    use_labels: bool = False,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Perturb every target on its own and summarise every target x cell type.

    Parameters
    ----------
    model
        Trained model with the tensor API.
    mdata
        Paired MuData (raw counts, ``obs[groupby]``).
    targets
        List of genes / peaks / TFs, or ``"all_tfs"`` (``tfs=``; else the TFs of ``tf_peaks``;
        else CollecTRI sources via ``datasets.collectri(organism)``, intersected with the genes).
    kind, modality, factor
        As in :class:`~scdiffx_grn.perturb.Perturbation`.
    groupby
        Cell-type column.
    out_dir
        Directory for results: ``effects/<target>.parquet`` and ``summary/<target>.parquet`` for
        each finished target (written atomically), then ``done.json`` (atomic) naming the finished
        targets; ``report.parquet`` lists unknown targets; ``summary.parquet`` is the final
        concatenation. ``None`` keeps everything in memory.
    resume
        Skip targets listed in ``done.json`` (their files are never rewritten). The screen's
        settings must match ``config.json``. ``False`` starts over.
    batch_targets
        Targets stacked in one translation call (and per written chunk).
    batch_size, n_samples, seed, test, translate_kwargs, use_labels
        Engine settings (see :func:`~scdiffx_grn.tl.perturb`).
    on_unknown
        ``"report"`` (default): unknown targets go to the report (and a warning); ``"raise"``.
    alpha, n_top, min_effect
        Significance level on the BH FDR, number of top features listed per direction, and the
        smallest |effect| counted as significant (paired sampling noise cancels, so tiny
        consistent effects reach any FDR).
    keep_effects
        Which effect rows to write per target.

    Returns
    -------
    pandas.DataFrame
        Summary per target x cell type (see :func:`summarise_effects`), also in
        ``out_dir/summary.parquet``; the report of unknown targets is in ``.attrs["report"]``.
    """
    genes, peaks = model_features(model)
    if isinstance(targets, str):
        if targets != "all_tfs":
            raise InputDataError(f"targets must be a list or 'all_tfs', got {targets!r}")
        targets = _all_tfs(modality, genes, tf_peaks, tfs, organism)
    targets = list(dict.fromkeys(str(t) for t in targets))
    if not targets:
        raise InputDataError("the screen has no targets")
    if batch_targets < 1:
        raise InputDataError(f"batch_targets must be >= 1, got {batch_targets}")
    perts = [Perturbation([t], kind=kind, modality=modality, factor=factor, n_samples=n_samples, name=t)
             for t in targets]
    config = {"kind": kind, "modality": modality, "factor": perts[0].factor, "groupby": groupby,
              "n_samples": n_samples, "seed": seed, "test": test, "alpha": alpha, "n_top": n_top, "min_effect": min_effect,
              "keep_effects": keep_effects, "translate_kwargs": translate_kwargs or {}, "use_labels": use_labels,
              "n_cells": int(mdata.n_obs)}
    out = Path(out_dir) if out_dir is not None else None
    done: dict[str, str] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cfg_file = out / _CONFIG
        if resume and cfg_file.exists():
            old = json.loads(cfg_file.read_text())
            diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(config)).items() if old.get(k) != v}
            if diff:
                raise CheckpointError(f"screen in {out} was run with other settings {diff}; "
                                      "use another out_dir or resume=False")
            done = _read_done(out)
        atomic_write_json(cfg_file, config)
        if not resume:
            atomic_write_json(out / _DONE, {"done": {}})
    # unknown targets: resolved up front so they are reported, never silently skipped
    from ._spec import resolve_targets

    reports, runnable = [], []
    for p in perts:
        idx, rep = resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown=on_unknown)
        reports.append(rep)
        if len(idx):
            runnable.append(p)
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
    if todo:
        inputs = prepare_inputs(model, mdata, perts[0].source, groupby=groupby, use_labels=use_labels)
        basis = None
        bar = progress(total=len(runnable), initial=len(runnable) - len(todo), desc="screen",
                       disable=not show_progress)
        try:
            for c0 in range(0, len(todo), batch_targets):
                chunk = todo[c0:c0 + batch_targets]
                res = run_perturbations(model, mdata, chunk, groupby=groupby, tf_peaks=tf_peaks,
                                        on_unknown="report", seed=seed, test=test, batch_size=batch_size,
                                        batch_targets=batch_targets, translate_kwargs=translate_kwargs,
                                        inputs=inputs, basis=basis)
                basis = res["basis"]
                eff, state = res["effects"], res["state"]
                for p in chunk:
                    e = eff[eff["perturbation"] == p.name]
                    s = state[state["perturbation"] == p.name]
                    summ = summarise_effects(e, s, alpha=alpha, n_top=n_top, min_effect=min_effect)
                    summaries[p.name] = summ
                    if out is None:
                        continue
                    stem = _stem(p.name)
                    keep = e if keep_effects == "all" else (e[e["fdr"] <= alpha] if keep_effects == "significant"
                                                            else e.iloc[:0])
                    with atomic_path(out / "effects" / f"{stem}.parquet") as tmp:
                        keep.reset_index(drop=True).to_parquet(tmp, index=False)
                    with atomic_path(out / "summary" / f"{stem}.parquet") as tmp:
                        summ.to_parquet(tmp, index=False)
                    done[p.name] = stem
                    atomic_write_json(out / _DONE, {"done": done})
                    bar.update(1)
                if out is None:
                    bar.update(len(chunk))
        finally:
            bar.close()
    if out is not None:
        summary = load_screen(out, targets=[p.name for p in runnable], _write=True)
    else:
        frames = [summaries[p.name] for p in runnable if p.name in summaries]
        summary = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary.attrs["report"] = report
    return summary


def load_screen(out_dir: str | os.PathLike, targets: Sequence[str] | None = None, *, _write: bool = False) -> pd.DataFrame:
    """Concatenated per target x cell type summary of a (possibly unfinished) screen directory."""
    out = Path(out_dir)
    done = _read_done(out)
    if not done and not (out / _DONE).exists():
        raise CheckpointError(f"{out} is not a screen directory (no {_DONE})")
    names = [t for t in (targets if targets is not None else done) if t in done]
    frames = [pd.read_parquet(out / "summary" / f"{done[t]}.parquet") for t in names]
    summary = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if _write:
        with atomic_path(out / "summary.parquet") as tmp:
            summary.to_parquet(tmp, index=False)
    if (out / "report.parquet").exists():
        summary.attrs["report"] = pd.read_parquet(out / "report.parquet")
    return summary


def load_screen_effects(out_dir: str | os.PathLike, target: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Effect table(s) of finished targets of a screen directory."""
    out = Path(out_dir)
    done = _read_done(out)
    names = list(done) if target is None else ([target] if isinstance(target, str) else list(target))
    missing = [t for t in names if t not in done]
    if missing:
        raise ScdxError(f"targets not finished in {out}: {missing[:10]}")
    frames = [pd.read_parquet(out / "effects" / f"{done[t]}.parquet") for t in names]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
