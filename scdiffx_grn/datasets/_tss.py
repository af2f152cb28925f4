"""TSS tables: one reader (:func:`read_tss`) for BED / GTF / tables / DataFrames, giving
``gene, chrom, tss, strand`` (re-exported as :func:`scdiffx_grn.grn.read_tss`)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DataFileMissingError, InputDataError, OptionError

__all__ = ["read_tss", "tss_window_pairs"]


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


def tss_window_pairs(peaks: pd.DataFrame, tss: pd.DataFrame, window: int) -> pd.DataFrame:
    """Every (peak, gene) pair whose peak centre lies within ``window`` bp of the gene's TSS.

    ``peaks``: ``chrom, start, end`` indexed by peak name; ``tss``: :func:`read_tss`'s table. Returns
    ``peak, gene, distance`` (peak centre minus TSS, sign flipped for ``-`` strand genes; the
    closest TSS of a gene per pair), vectorised per chromosome with :func:`numpy.searchsorted`.
    """
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
    return out
