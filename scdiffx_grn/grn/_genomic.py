"""Genomic prior: TSS annotation and peak -> gene candidate pairs within a window.

Everything here is model-free and vectorised per chromosome with :func:`numpy.searchsorted`;
no dense peaks x genes matrix is ever built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

import scdiffx_grn._store as _store
from .._errors import (
    InputDataError,
    OptionError,
    ScdxError,
    UnknownFeatureError,
    _fmt_items,
)
from .._validate import symbol_case_hint
from ..datasets._tss import read_tss, tss_window_pairs

__all__ = ["parse_peak_names", "peak_gene_candidates", "peaks_table", "read_tss"]

_PEAK_RE = re.compile(r"^(?P<chrom>[^:_\-\s]+(?:_[^:_\-\s]+)*?)[:_\-](?P<start>\d+)[_\-](?P<end>\d+)$")


def _is_mudata(x) -> bool:
    """True for a MuData-like object (a ``mod`` mapping of modalities)."""
    from collections.abc import Mapping

    return isinstance(getattr(x, "mod", None), Mapping)


def parse_peak_names(names: Iterable[str]) -> pd.DataFrame:
    """Parse peak names like ``chr1_100_200``, ``chr1:100-200`` or ``chr1-100-200``.

    Returns a DataFrame indexed by the names with ``chrom, start, end``; unparsable names raise
    :class:`InputDataError` naming them.
    """
    names = pd.Index([str(n) for n in names])
    m = names.str.extract(_PEAK_RE)
    bad = names[m["chrom"].isna().to_numpy()]
    if len(bad):
        raise InputDataError(f"cannot parse {len(bad)} peak names as chrom:start-end: {_fmt_items(bad)}")
    out = pd.DataFrame({"chrom": m["chrom"].to_numpy(), "start": m["start"].astype(np.int64).to_numpy(),
                        "end": m["end"].astype(np.int64).to_numpy()}, index=names)
    return out


def peaks_table(peaks) -> pd.DataFrame:
    """Coordinates of peaks as a DataFrame ``chrom, start, end`` indexed by peak name.

    ``peaks`` may be a DataFrame with these columns (e.g. an ATAC ``var`` after
    ``pp.parse_peaks``), an AnnData / MuData (the ``atac`` modality's ``var``) or peak names.
    """
    if _is_mudata(peaks):
        peaks = peaks.mod["atac"]
    if hasattr(peaks, "var") and hasattr(peaks, "obs"):
        peaks = peaks.var if {"chrom", "start", "end"} <= set(peaks.var.columns) else peaks.var_names
    if isinstance(peaks, pd.DataFrame):
        if {"chrom", "start", "end"} <= set(peaks.columns):
            out = peaks[["chrom", "start", "end"]].copy()
            out.index = out.index.astype(str)
            out["chrom"] = out["chrom"].astype(str)
            out["start"] = out["start"].astype(np.int64)
            out["end"] = out["end"].astype(np.int64)
            return out
        if "peak" in peaks.columns:
            return parse_peak_names(peaks["peak"])
        return parse_peak_names(peaks.index)
    return parse_peak_names(list(peaks))


_TSS_FIX = ("use the TSS annotation of the data's genome (--genome {genome} on the command line, "
            "tss=datasets.tss_annotation({genome!r}) in Python)")


def _genome_of(mdata) -> str | None:
    g = getattr(mdata, "uns", {}).get("genome") if mdata is not None else None
    return str(g) if g else None


def tss_hint(tss: pd.DataFrame, genes, genome: str | None = None, window: int | None = None) -> str:
    """Why a TSS annotation gives no candidate pair for ``genes``: gene symbols of another organism
    (the TSS table of another genome), the data's genome (``uns["genome"]``) to pick the right
    annotation, or a window to widen."""
    genes = pd.Index([str(g) for g in genes])
    hint = symbol_case_hint(tss["gene"], genes, "the TSS annotation's", _TSS_FIX)
    n_in = int(genes.isin(set(tss["gene"].astype(str))).sum())
    if not hint:
        hint = (f" {n_in:,} of the {len(genes):,} genes are in the TSS annotation; check that it is of the peaks' "
                "genome assembly" + (f" or widen the window (now {int(window):,} bp)" if window is not None else "")
                + ".")
    if genome:
        hint += f" The data's genome is {genome!r} (uns['genome'])."
    return hint


def peak_gene_candidates(peaks_var, genes=None, tss_table=None, window: int = 150_000, *,
                         key_added: str | None = None, copy: bool = False):
    """Candidate peak -> gene pairs: peaks whose centre lies within ``window`` bp of a gene's TSS.

    Parameters
    ----------
    peaks_var
        Peak coordinates: a DataFrame with ``chrom, start, end`` (index = peak names), peak names,
        or a MuData (its ``atac`` var; then ``genes`` defaults to the ``rna`` var names).
    genes
        Genes to consider (e.g. the RNA var names). ``None``: every gene of ``tss_table``.
    tss_table
        A table from :func:`read_tss` (or anything it accepts, e.g. a path).
    window
        Maximal absolute distance (bp) between the peak centre and the TSS.
    key_added
        With a MuData input: store the table instead of returning it, following the storage
        contract of the ``tl`` functions: ``mdata.uns[key_added] = {"params": {...},
        "candidates": df}`` (``tl.extract_grn(candidates=key_added)`` reads it). ``None``
        (default): only return the table.
    copy
        With ``key_added``: ``False`` writes into ``mdata`` and returns ``None``; ``True`` leaves
        ``mdata`` untouched and returns a modified copy.

    Returns
    -------
    DataFrame ``peak, gene, distance`` (``source``/``target`` aliases are not added; use
    :func:`scdiffx_grn.grn.as_edges`), or with a MuData and ``key_added``: ``None`` / the copy.
    ``distance`` is peak centre minus TSS, multiplied by -1 for genes on the ``-`` strand (so
    negative = upstream). A gene with several TSSs keeps the closest one. Only peaks and TSSs on
    the same chromosome are paired.
    """
    mdata = peaks_var if _is_mudata(peaks_var) else None
    if key_added is not None and mdata is None:
        raise OptionError("key_added= needs a MuData input (the table is stored in its uns)")
    if tss_table is None:
        raise ScdxError("peak_gene_candidates needs a TSS annotation (tss_table=...; see grn.read_tss)")
    if int(window) < 0:
        raise OptionError(f"window must be >= 0 bp, got {window!r}")
    if genes is None and mdata is not None:
        genes = mdata.mod["rna"].var_names
    tss_all = tss = read_tss(tss_table)
    peaks = peaks_table(peaks_var)
    if genes is not None:
        genes = pd.Index([str(g) for g in genes])
        tss = tss[tss["gene"].isin(genes)]
        if len(tss) == 0:
            raise UnknownFeatureError(f"none of the genes is in the TSS annotation (first genes: {_fmt_items(genes)})."
                                      + tss_hint(tss_all, genes, _genome_of(mdata)))
    out = tss_window_pairs(peaks, tss, window)
    if key_added is None:
        return out
    target = _store.target(mdata, copy)
    _store.store(target, key_added, {"candidates": out},
                 {"window": window, "n_genes": None if genes is None else len(genes), "n_candidates": len(out)})
    return _store.done(target, copy)
