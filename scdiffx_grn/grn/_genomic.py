"""Genomic prior: TSS annotation and peak -> gene candidate pairs within a window.

Everything here is model-free and vectorised per chromosome with :func:`numpy.searchsorted`;
no dense peaks x genes matrix is ever built.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

import scdiffx_grn._store as _store
from .._errors import (
    DataFileMissingError,
    InputDataError,
    OptionError,
    ScdxError,
    UnknownFeatureError,
    _fmt_items,
)
from .._validate import symbol_case_hint

__all__ = ["parse_peak_names", "peak_gene_candidates", "peaks_table", "read_tss"]

_PEAK_RE = re.compile(r"^(?P<chrom>[^:_\-\s]+(?:_[^:_\-\s]+)*?)[:_\-](?P<start>\d+)[_\-](?P<end>\d+)$")


def _is_mudata(x) -> bool:
    """True for a MuData-like object (a ``mod`` mapping of modalities)."""
    from collections.abc import Mapping

    return isinstance(getattr(x, "mod", None), Mapping)


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path)


def _normalise_tss(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["gene", "chrom", "tss"] + (["strand"] if "strand" in df else [])].copy()
    out["gene"] = out["gene"].astype(str)
    out["chrom"] = out["chrom"].astype(str)
    out["tss"] = pd.to_numeric(out["tss"], errors="coerce")
    out = out.dropna(subset=["tss"])
    out["tss"] = out["tss"].astype(np.int64)
    if "strand" in out:
        out["strand"] = out["strand"].astype(str).where(out["strand"].isin(["+", "-"]), ".")
    else:
        out["strand"] = "."
    return out.drop_duplicates(["gene", "chrom", "tss"]).reset_index(drop=True)


def read_tss(source, *, format: str | None = None, gene_types: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a TSS annotation into a table ``gene, chrom, tss, strand``.

    Parameters
    ----------
    source
        A path or a DataFrame. Accepted formats:

        - ``"bed"``: CellOracle-style TSS bed (``chrom, start, end, gene, distance, strand``,
          a promoter window whose 5th column is the HOMER distance of the window centre to the
          TSS). The TSS is the window centre corrected by that distance (strand aware); when the
          5th column is not numeric the window centre is used.
        - ``"ensdb"``: a tab-separated ensembldb export with ``seqnames, tss, gene_name,
          strand`` (one row per transcript; every distinct TSS is kept).
        - ``"gtf"``: a GTF file; ``gene`` (or else ``transcript``) records, TSS = ``start`` on
          ``+`` and ``end`` on ``-``, name from the ``gene_name`` attribute (``gene_id`` if absent).
        - a DataFrame with ``gene, chrom, tss`` (optional ``strand``) is returned normalised; a
          DataFrame with bed columns ``chrom, start, end, gene[, score, strand]`` (e.g.
          ``datasets.tss_annotation()``) is read like the bed file.
    format
        Force a format; by default inferred from the suffix / header.
    gene_types
        For ``ensdb`` / ``gtf``: keep only these gene biotypes (e.g. ``["protein_coding"]``).

    Returns
    -------
    DataFrame with columns ``gene, chrom, tss, strand`` (several rows per gene when a gene has
    several TSSs).
    """
    if isinstance(source, pd.DataFrame):
        if "tss" not in source.columns and {"chrom", "start", "end", "gene"} <= set(source.columns):
            # a TSS-window bed as a DataFrame (e.g. datasets.tss_annotation()): same rule as the file
            centre = (source["start"].astype(np.int64) + source["end"].astype(np.int64)) // 2
            dcol = "score" if "score" in source.columns else None
            dist = (pd.to_numeric(source[dcol], errors="coerce").fillna(0).astype(np.int64) if dcol
                    else pd.Series(0, index=source.index))
            strand = source["strand"] if "strand" in source.columns else pd.Series(".", index=source.index)
            tss = np.where(strand == "-", centre + dist, centre - dist)
            return _normalise_tss(pd.DataFrame({"gene": source["gene"], "chrom": source["chrom"], "tss": tss,
                                                "strand": strand}))
        missing = {"gene", "chrom", "tss"} - set(source.columns)
        if missing:
            raise InputDataError(f"TSS table lacks columns {sorted(missing)}; has {list(source.columns)}")
        return _normalise_tss(source)
    path = Path(os.fspath(source))
    if not path.exists():
        raise DataFileMissingError(f"TSS annotation file not found: {path}")
    name = path.name.lower()
    if format is None:
        if ".gtf" in name or ".gff" in name:
            format = "gtf"
        elif ".bed" in name:
            format = "bed"
        else:
            with _open_text(path) as fh:
                head = fh.readline()
            format = "ensdb" if ("gene_name" in head and "tss" in head) else "bed"
    if format == "bed":
        df = pd.read_csv(path, sep="\t", header=None, comment="#")
        if df.shape[1] < 4:
            raise InputDataError(f"{path.name}: a TSS bed needs at least 4 columns (chrom, start, end, gene)")
        chrom, start, end, gene = df[0], df[1].astype(np.int64), df[2].astype(np.int64), df[3]
        centre = (start + end) // 2
        strand = df[5] if df.shape[1] > 5 else pd.Series(".", index=df.index)
        dist = pd.to_numeric(df[4], errors="coerce") if df.shape[1] > 4 else pd.Series(np.nan, index=df.index)
        dist = dist.fillna(0).astype(np.int64)
        tss = np.where(strand == "-", centre + dist, centre - dist)
        out = pd.DataFrame({"gene": gene, "chrom": chrom, "tss": tss, "strand": strand})
    elif format == "ensdb":
        df = pd.read_csv(path, sep="\t")
        need = {"seqnames", "tss", "gene_name"}
        if need - set(df.columns):
            raise InputDataError(f"{path.name}: ensdb table lacks {sorted(need - set(df.columns))}")
        if gene_types is not None and "gene_type" in df:
            df = df[df["gene_type"].isin(list(gene_types))]
        df = df[df["gene_name"].notna() & (df["gene_name"].astype(str) != "")]
        out = pd.DataFrame({"gene": df["gene_name"], "chrom": df["seqnames"].astype(str), "tss": df["tss"],
                            "strand": df["strand"] if "strand" in df else "."})
        out.loc[~out["chrom"].str.startswith("chr"), "chrom"] = "chr" + out.loc[~out["chrom"].str.startswith("chr"), "chrom"]
    elif format == "gtf":
        df = pd.read_csv(path, sep="\t", header=None, comment="#", dtype={0: str},
                         names=["chrom", "src", "feature", "start", "end", "score", "strand", "frame", "attr"])
        feat = "gene" if (df["feature"] == "gene").any() else "transcript"
        df = df[df["feature"] == feat]
        name = df["attr"].str.extract(r'gene_name "([^"]+)"')[0]
        name = name.fillna(df["attr"].str.extract(r'gene_id "([^"]+)"')[0])
        if gene_types is not None:
            bt = df["attr"].str.extract(r'gene_(?:bio)?type "([^"]+)"')[0]
            keep = bt.isin(list(gene_types))
            df, name = df[keep], name[keep]
        tss = np.where(df["strand"] == "-", df["end"], df["start"] - 1)  # 0-based like bed
        out = pd.DataFrame({"gene": name, "chrom": df["chrom"], "tss": tss, "strand": df["strand"]})
        out = out[out["gene"].notna()]
    else:
        raise OptionError(f"unknown TSS format {format!r}; use 'bed', 'ensdb' or 'gtf'")
    return _normalise_tss(out)


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
    centre = ((peaks["start"].to_numpy() + peaks["end"].to_numpy()) // 2).astype(np.int64)
    peak_names = peaks.index.to_numpy()
    peak_chrom = peaks["chrom"].to_numpy()
    parts = []
    for chrom, t in tss.groupby("chrom", sort=False):
        pidx = np.flatnonzero(peak_chrom == chrom)
        if len(pidx) == 0:
            continue
        order = np.argsort(centre[pidx], kind="stable")
        pidx = pidx[order]
        pc = centre[pidx]
        tpos = t["tss"].to_numpy()
        lo = np.searchsorted(pc, tpos - window, side="left")
        hi = np.searchsorted(pc, tpos + window, side="right")
        counts = hi - lo
        if counts.sum() == 0:
            continue
        rep = np.repeat(np.arange(len(t)), counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        pi = pidx[np.repeat(lo, counts) + offs]
        d = centre[pi] - tpos[rep]
        d = np.where(t["strand"].to_numpy()[rep] == "-", -d, d)
        parts.append(pd.DataFrame({"peak": peak_names[pi], "gene": t["gene"].to_numpy()[rep], "distance": d}))
    if not parts:
        out = pd.DataFrame({"peak": pd.Series(dtype=str), "gene": pd.Series(dtype=str),
                            "distance": pd.Series(dtype=np.int64)})
    else:
        out = pd.concat(parts, ignore_index=True)
        out["absd"] = out["distance"].abs()
        out = (out.sort_values(["peak", "gene", "absd"], kind="stable")
                  .drop_duplicates(["peak", "gene"]).drop(columns="absd").reset_index(drop=True))
    out["distance"] = out["distance"].astype(np.int64)
    if key_added is None:
        return out
    target = _store.target(mdata, copy)
    _store.store(target, key_added, {"candidates": out},
                 {"window": window, "n_genes": None if genes is None else len(genes), "n_candidates": len(out)})
    return _store.done(target, copy)
