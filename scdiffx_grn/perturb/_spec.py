"""Perturbation specifications, screen files and target resolution."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError, ScdxError, UnknownFeatureError, _fmt_items
from .._vocab import other_modality

__all__ = ["Perturbation", "read_screen", "resolve_targets", "KINDS", "MODALITIES"]

KINDS = ("knockout", "knockdown", "overexpress", "close", "open", "none")
MODALITIES = ("rna", "atac", "tf")
_RNA_KINDS = {"knockout", "knockdown", "overexpress", "none"}
_ATAC_KINDS = {"close", "open", "none"}
_DEFAULT_FACTOR = {"knockdown": 0.5, "overexpress": 5.0}


@dataclass
class Perturbation:
    """One in-silico perturbation.

    All ``targets`` are edited together (a combinatorial perturbation); a screen makes one
    :class:`Perturbation` per target.

    Parameters
    ----------
    targets
        Genes (``modality="rna"``), peaks (``"atac"``) or transcription factors (``"tf"``: the
        TF's motif-bearing peaks from a TF -> peak table are edited).
    kind
        ``"knockout"`` (RNA counts -> 0), ``"knockdown"`` (counts * ``factor``),
        ``"overexpress"`` (counts * ``factor``, or set to the gene's ``quantile`` of counts when
        ``overexpress_mode="quantile"``), ``"close"`` (peaks -> 0), ``"open"`` (peaks -> 1), or
        ``"none"`` (no edit: a null control whose effect is exactly zero).
    modality
        ``"rna"``, ``"atac"`` or ``"tf"``. RNA edits are read out in ATAC (rna->atac), ATAC / TF
        edits in RNA (atac->rna).
    factor
        Knock-down factor in [0, 1) (default 0.5) or over-expression fold > 1 (default 5).
    cells
        Which cells to perturb: ``None`` (all), a cell-type name or list of names (values of
        the ``groupby`` column), or a boolean mask over cells.
    n_samples
        Number of diffusion noise draws (paired between control and perturbed arms).
    name
        Label of the perturbation in result tables (default: targets joined by ``+``).
    overexpress_mode
        ``"factor"`` or ``"quantile"``.
    quantile
        Quantile of the gene's counts over all cells used when ``overexpress_mode="quantile"``.
    """

    targets: list[str]
    kind: Literal["knockout", "knockdown", "overexpress", "close", "open", "none"] = "knockout"
    modality: Literal["rna", "atac", "tf"] = "rna"
    factor: float | None = None
    cells: Any = None
    n_samples: int = 5
    name: str | None = None
    overexpress_mode: Literal["factor", "quantile"] = "factor"
    quantile: float = 0.99
    meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        try:
            self.targets = [str(t).strip() for t in self.targets]
        except TypeError as err:
            raise InputDataError(f"targets must be a list of names, got {type(self.targets).__name__}") from err
        if not self.targets or any(t == "" for t in self.targets):
            raise InputDataError(f"a perturbation needs non-empty target names, got {self.targets!r}")
        dup = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if dup:
            raise InputDataError(f"duplicated targets: {_fmt_items(dup)}")
        self.kind = str(self.kind).lower()
        self.modality = str(self.modality).lower()
        if self.kind not in KINDS:
            raise OptionError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.modality not in MODALITIES:
            raise OptionError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        allowed = _RNA_KINDS if self.modality == "rna" else _ATAC_KINDS
        if self.kind not in allowed:
            raise OptionError(
                f"kind {self.kind!r} does not apply to modality {self.modality!r}; use one of {sorted(allowed)}"
                + (" (peaks and TF motif peaks are 'close'd or 'open'ed)" if self.modality != "rna" else
                   " (genes are knocked out, knocked down or over-expressed)"))
        if self.factor is None or (isinstance(self.factor, float) and np.isnan(self.factor)):
            self.factor = _DEFAULT_FACTOR.get(self.kind)
        if self.factor is not None:
            self.factor = float(self.factor)
            if not np.isfinite(self.factor):
                raise OptionError(f"factor must be finite, got {self.factor}")
        if self.kind == "knockdown" and not (0.0 <= self.factor < 1.0):
            raise OptionError(f"a knockdown factor must be in [0, 1), got {self.factor}")
        if self.kind == "overexpress":
            if self.overexpress_mode not in ("factor", "quantile"):
                raise OptionError(f"overexpress_mode must be 'factor' or 'quantile', got {self.overexpress_mode!r}")
            if self.overexpress_mode == "factor" and not self.factor > 1.0:
                raise OptionError(f"an over-expression fold must be > 1, got {self.factor}")
            if not 0.0 < float(self.quantile) <= 1.0:
                raise OptionError(f"quantile must be in (0, 1], got {self.quantile}")
        try:
            self.n_samples = int(self.n_samples)
        except (TypeError, ValueError) as err:
            raise OptionError(f"n_samples must be an integer, got {self.n_samples!r}") from err
        if self.n_samples < 1:
            raise OptionError(f"n_samples must be >= 1, got {self.n_samples}")
        if isinstance(self.cells, str):
            self.cells = [self.cells]
        elif self.cells is not None and not isinstance(self.cells, (list, tuple, np.ndarray, pd.Series)):
            raise InputDataError(f"cells must be None, cell-type name(s) or a boolean mask, got {type(self.cells).__name__}")
        if isinstance(self.cells, (np.ndarray, pd.Series)) and np.asarray(self.cells).dtype != bool:
            self.cells = [str(c) for c in np.asarray(self.cells)]
        if self.name is None:
            self.name = "+".join(self.targets)
        self.name = str(self.name)

    @property
    def source(self) -> str:
        """The modality that is edited (``"rna"`` or ``"atac"``)."""
        return "rna" if self.modality == "rna" else "atac"

    @property
    def readout(self) -> str:
        """The modality the effect is read out in (the other one; the translation's target)."""
        return other_modality(self.source)

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.readout}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.cells, np.ndarray):
            d["cells"] = f"<mask of {int(np.sum(self.cells))} cells>"
        d.pop("meta", None)
        return d


def _split_targets(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    s = str(value)
    for sep in (";", "+", "|"):
        if sep in s:
            return [t.strip() for t in s.split(sep) if t.strip()]
    return [s.strip()]


def read_screen(path: str | os.PathLike, **defaults: Any) -> list[Perturbation]:
    """Read perturbations from a YAML or CSV screen file.

    Parameters
    ----------
    path
        ``.yaml`` / ``.yml``: a list of mappings (or a mapping with key ``perturbations`` and
        optional ``defaults``). ``.csv`` / ``.tsv``: one perturbation per row with columns
        ``targets`` (several joined by ``;`` or ``+``) and optionally ``kind``, ``modality``,
        ``factor``, ``cells`` (``;``-separated names), ``n_samples``, ``name``.
    **defaults
        Values for fields that an entry does not give.

    Returns
    -------
    list of Perturbation

    Raises
    ------
    InputDataError, OptionError
        If the file is malformed (an unknown field or option value: ``OptionError``); the message
        names the entry (row number) at fault.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ScdxError(f"screen file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        import yaml

        with open(path) as fh:
            doc = yaml.safe_load(fh)
        if isinstance(doc, dict):
            defaults = {**(doc.get("defaults") or {}), **defaults}
            doc = doc.get("perturbations")
        if not isinstance(doc, list):
            raise InputDataError(f"{path}: expected a list of perturbations (or a 'perturbations:' key)")
        entries = doc
    elif ext in (".csv", ".tsv", ".txt"):
        df = pd.read_csv(path, sep="\t" if ext == ".tsv" else ",", dtype=str, keep_default_na=False)
        df.columns = [c.strip() for c in df.columns]
        entries = [{k: v for k, v in row.items() if v != ""} for row in df.to_dict("records")]
    else:
        raise OptionError(f"{path}: screen files must be .yaml/.yml or .csv/.tsv, got {ext!r}")
    known = {"targets", "target", "kind", "modality", "factor", "cells", "n_samples", "name",
             "overexpress_mode", "quantile"}
    out = []
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            entry = {"targets": entry}
        if not isinstance(entry, dict):
            raise InputDataError(f"{path}: entry {i} is not a mapping: {entry!r}")
        entry = {**defaults, **entry}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise OptionError(f"{path}: entry {i} has unknown fields {unknown}; known: {sorted(known)}")
        if "target" in entry:
            entry["targets"] = entry.pop("target")
        if "targets" not in entry:
            raise InputDataError(f"{path}: entry {i} has no 'targets'")
        entry["targets"] = _split_targets(entry["targets"])
        if "cells" in entry and isinstance(entry["cells"], str):
            entry["cells"] = [c.strip() for c in entry["cells"].split(";") if c.strip()]
        for key, typ in (("factor", float), ("n_samples", int), ("quantile", float)):
            if key in entry and entry[key] is not None:
                try:
                    entry[key] = typ(float(entry[key])) if typ is int else typ(entry[key])
                except ValueError as err:
                    raise OptionError(f"{path}: entry {i}: {key}={entry[key]!r} is not a number") from err
        try:
            out.append(Perturbation(**entry))
        except ScdxError as err:  # the same type (InputDataError, OptionError), naming the entry
            raise type(err)(f"{path}: entry {i}: {err}") from err
    return out


def tf_peak_map(tf_peaks: pd.DataFrame | None) -> dict[str, list[str]]:
    """TF -> list of peaks from a TF -> peak table (columns ``tf`` and ``peak``)."""
    if tf_peaks is None:
        return {}
    if isinstance(tf_peaks, dict):
        return {str(k): [str(p) for p in v] for k, v in tf_peaks.items()}
    cols = {c.lower(): c for c in tf_peaks.columns}
    tf_col = cols.get("tf", cols.get("source"))
    peak_col = cols.get("peak", cols.get("target"))
    if tf_col is None or peak_col is None:
        raise InputDataError(f"a TF -> peak table needs columns 'tf' and 'peak', got {list(tf_peaks.columns)}")
    return {str(k): list(dict.fromkeys(map(str, v))) for k, v in tf_peaks.groupby(tf_col, sort=False)[peak_col]}


def resolve_targets(
    pert: Perturbation,
    genes: Sequence[str],
    peaks: Sequence[str],
    tf_peaks: pd.DataFrame | dict | None = None,
    on_unknown: Literal["raise", "report"] = "raise",
) -> tuple[np.ndarray, pd.DataFrame]:
    """Map a perturbation's targets to feature indices of the edited modality.

    Parameters
    ----------
    pert
        The perturbation.
    genes, peaks
        The model's feature names.
    tf_peaks
        TF -> peak table (``tf``, ``peak``), needed for ``modality="tf"``.
    on_unknown
        ``"raise"``: raise :class:`UnknownFeatureError` naming every unknown target.
        ``"report"``: keep going with the known ones; unknown targets are listed in the report.

    Returns
    -------
    idx
        Sorted unique feature indices to edit.
    report
        One row per target: ``perturbation, target, modality, status, n_features, reason``.
    """
    if on_unknown not in ("raise", "report"):
        raise OptionError(f"on_unknown must be 'raise' or 'report', got {on_unknown!r}")
    rows, idx = [], []
    if pert.modality == "tf":
        if tf_peaks is None:
            raise InputDataError(f"perturbation {pert.name!r} edits TFs but no TF -> peak table (tf_peaks=) was given")
        tmap = tf_peak_map(tf_peaks)
        pos = {p: i for i, p in enumerate(map(str, peaks))}
        for t in pert.targets:
            if t not in tmap:
                rows.append((t, "unknown", 0, "TF not in the TF -> peak table"))
                continue
            hit = [pos[p] for p in tmap[t] if p in pos]
            if not hit:
                rows.append((t, "unknown", 0, "TF has no motif peaks among the model's peaks"))
                continue
            idx.extend(hit)
            rows.append((t, "ok", len(hit), ""))
    else:
        names = genes if pert.modality == "rna" else peaks
        pos = {p: i for i, p in enumerate(map(str, names))}
        what = "gene" if pert.modality == "rna" else "peak"
        for t in pert.targets:
            if t in pos:
                idx.append(pos[t])
                rows.append((t, "ok", 1, ""))
            else:
                rows.append((t, "unknown", 0, f"not among the model's {what}s"))
    report = pd.DataFrame(rows, columns=["target", "status", "n_features", "reason"])
    report.insert(0, "perturbation", pert.name)
    report.insert(2, "modality", pert.modality)
    bad = report.loc[report.status != "ok", "target"].tolist()
    if bad and on_unknown == "raise":
        reasons = "; ".join(f"{t!r}: {r}" for t, r in zip(bad, report.loc[report.status != "ok", "reason"]))
        raise UnknownFeatureError(
            f"perturbation {pert.name!r}: unknown {pert.modality} target(s) {_fmt_items(bad)} ({reasons}); "
            "pass on_unknown='report' to list them and continue with the rest")
    return np.unique(np.asarray(idx, dtype=np.int64)), report


def check_targets(perts: Sequence[Perturbation], genes: Sequence[str], peaks: Sequence[str],
                  tf_peaks: pd.DataFrame | dict | None = None, on_unknown: str = "raise") -> None:
    """Raise :class:`UnknownFeatureError` before any work when no perturbation has a known target
    (whatever ``on_unknown``: there is nothing to run), or when any target is unknown and
    ``on_unknown="raise"``. The message names the unknown targets, the model's spelling of those
    that differ only in case, and the fix."""
    bad, n_targets, modality = [], 0, "rna"
    n_runnable = 0
    for p in perts:
        idx, rep = resolve_targets(p, genes, peaks, tf_peaks=tf_peaks, on_unknown="report")
        n_targets += len(rep)
        modality = p.modality
        n_runnable += bool(len(idx)) or p.kind == "none"
        bad += [t for t in rep.loc[rep.status != "ok", "target"].astype(str) if t not in bad]
    if not bad or (n_runnable and on_unknown != "raise"):
        return
    what = {"rna": "gene", "atac": "peak", "tf": "TF"}.get(modality, modality)
    names = genes if modality == "rna" else (peaks if modality == "atac" else ())
    low = {str(g).lower(): str(g) for g in names}
    near = [f"{t!r} -> {low[t.lower()]!r}" for t in bad if t.lower() in low and low[t.lower()] != t][:3]
    hint = f" (case differs: {', '.join(near)})" if near else ""
    where = {"rna": f"the model's {len(genes):,} genes", "atac": f"the model's {len(peaks):,} peaks",
             "tf": "the TF -> peak table (tf_peaks) with peaks among the model's"}.get(modality, "the model")
    if not n_runnable:
        raise UnknownFeatureError(f"none of the {n_targets} target(s) is known: {_fmt_items(bad)} not among {where}"
                                  f"{hint}; nothing to run")
    raise UnknownFeatureError(f"unknown {what} target(s) {_fmt_items(bad)}: not among {where}{hint}; fix them, or "
                              "pass on_unknown='report' to skip them (they are listed in the report)")
