"""TF -> peak links by scanning peak sequences for TF motifs (needs a genome FASTA).

- :func:`read_motifs`: JASPAR, gimmemotifs ``.pfm`` (+ ``motif2factors``) and pando ``.json`` motif files
- :func:`peak_sequences`: peak sequences from a FASTA (:mod:`pyfaidx`) or a ``{chrom: sequence}`` dict
- :func:`scan_motifs`: log-odds PSSM scan of both strands (Biopython's C scorer) with a per-motif
  threshold at a given p-value; the result is a ``tf, peak`` table for :func:`tf_gene_network`

Sequences are read peak by peak and scanned in chunks of concatenated peaks, so memory stays
at the size of the peak sequences plus one chunk of scores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DataFileMissingError, InputDataError, OptionError, _fmt_items

__all__ = ["Motif", "peak_sequences", "read_motifs", "scan_motifs"]

FORMATS = ("jaspar", "pfm", "json")
_ALPHABET = "ACGT"
_CHUNK_BP = 1 << 22  # peaks are concatenated into chunks of ~4 Mbp for scanning
_FREQ_SITES = 100.0  # a frequency matrix (columns sum to 1) is read as counts from this many sites
_TF_SPLIT = re.compile(r"::|/")
_VARIANT = re.compile(r"\s*\(var\.\s*\d+\)$", re.IGNORECASE)
_ID_PREFIX = re.compile(r"^[A-Z]{2}\d{4}\.\d+\.")  # gimmemotifs JASPAR2022 factors read "MA0004.1.Arnt"


@dataclass(frozen=True, eq=False)
class Motif:
    """A DNA motif: a position count matrix and the TFs that bind it.

    Attributes
    ----------
    id
        Motif identifier (e.g. ``MA0002.3``).
    name
        Motif name (e.g. ``Runx1``; the identifier when the file has no separate name).
    tfs
        Names of the TFs binding the motif (both partners for a dimer such as ``Ahr::Arnt``).
    counts
        Read-only array of shape ``(4, width)``, rows ``A, C, G, T`` (counts or frequencies).
    """

    id: str
    name: str
    tfs: tuple[str, ...]
    counts: np.ndarray

    def __post_init__(self):
        c = np.array(self.counts, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != 4 or c.shape[1] < 1:
            raise InputDataError(f"motif {self.id!r}: counts must have shape (4, width), got {c.shape}")
        if not np.isfinite(c).all() or (c < 0).any():
            raise InputDataError(f"motif {self.id!r}: counts must be finite and non-negative")
        if (c.sum(axis=0) <= 0).any():
            raise InputDataError(f"motif {self.id!r}: a position has no counts")
        c.setflags(write=False)
        object.__setattr__(self, "counts", c)
        object.__setattr__(self, "id", str(self.id))
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "tfs", tuple(dict.fromkeys(str(t) for t in self.tfs)))

    @property
    def width(self) -> int:
        """Number of positions."""
        return int(self.counts.shape[1])

    def __repr__(self) -> str:
        return f"Motif(id={self.id!r}, name={self.name!r}, tfs={self.tfs!r}, width={self.width})"


# ----------------------------------------------------------------------------- reading motifs
def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path)


def _tfs_from_name(name: str) -> tuple[str, ...]:
    """``Ahr::Arnt`` -> ``("Ahr", "Arnt")``, ``FOXF1/FOXS1`` -> both, ``NR2F1(var.2)`` -> ``("NR2F1",)``."""
    parts = [_VARIANT.sub("", p).strip() for p in _TF_SPLIT.split(str(name))]
    return tuple(dict.fromkeys(p for p in parts if p)) or (str(name),)


def _guess_format(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".jaspar", "jaspar"), (".pfm", "pfm"), (".json", "json")):
        if name.endswith(suffix):
            return fmt
    try:  # sniff the first meaningful lines
        with _open_text(path) as fh:
            lines = []
            for line in fh:
                s = line.strip()
                if s and not s.startswith("#"):
                    lines.append(s)
                if len(lines) == 2:
                    break
    except (OSError, UnicodeDecodeError):
        return None
    if not lines:
        return None
    if lines[0][0] in "[{":
        return "json"
    if lines[0].startswith(">") and len(lines) > 1:
        return "jaspar" if re.match(r"^[ACGT]\s*\[", lines[1], re.IGNORECASE) else "pfm"
    return None


def _parse_jaspar(path: Path) -> list[tuple[str, str, np.ndarray]]:
    out, header, rows = [], None, {}

    def flush(lineno):
        if header is None:
            return
        if set(rows) != set(_ALPHABET):
            raise InputDataError(f"{path.name}: motif {header[0]!r} (before line {lineno}) needs rows A, C, G, T; "
                                 f"has {sorted(rows)}")
        widths = {len(v) for v in rows.values()}
        if len(widths) != 1:
            raise InputDataError(f"{path.name}: motif {header[0]!r} (before line {lineno}) has rows of unequal "
                                 f"lengths {sorted(widths)}")
        out.append((header[0], header[1], np.array([rows[b] for b in _ALPHABET], dtype=np.float64)))

    with _open_text(path) as fh:
        lineno = 0
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith(">"):
                flush(lineno)
                fields = s[1:].split(None, 1)
                if not fields:
                    raise InputDataError(f"{path.name}: line {lineno}: empty motif header")
                header, rows = (fields[0], fields[1].strip() if len(fields) > 1 else fields[0]), {}
                continue
            m = re.match(r"^([ACGTacgt])\s*\[?([^\]]*)\]?$", s)
            if header is None or m is None:
                raise InputDataError(f"{path.name}: line {lineno}: not JASPAR format: {s[:60]!r}")
            try:
                rows[m.group(1).upper()] = [float(v) for v in m.group(2).split()]
            except ValueError:
                raise InputDataError(f"{path.name}: line {lineno}: non-numeric counts: {s[:60]!r}") from None
        flush(lineno + 1)
    return out


def _parse_pfm(path: Path) -> list[tuple[str, str, np.ndarray]]:
    out, mid, rows = [], None, []

    def flush(lineno):
        if mid is None:
            return
        if not rows:
            raise InputDataError(f"{path.name}: motif {mid!r} (before line {lineno}) has no positions")
        out.append((mid, mid, np.array(rows, dtype=np.float64).T))

    with _open_text(path) as fh:
        lineno = 0
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith(">"):
                flush(lineno)
                mid, rows = s[1:].split()[0] if s[1:].split() else None, []
                if mid is None:
                    raise InputDataError(f"{path.name}: line {lineno}: empty motif header")
                continue
            fields = s.split()
            if mid is None or len(fields) != 4:
                raise InputDataError(f"{path.name}: line {lineno}: expected 4 counts (A C G T) after a '>' header, "
                                     f"got {s[:60]!r}")
            try:
                rows.append([float(v) for v in fields])
            except ValueError:
                raise InputDataError(f"{path.name}: line {lineno}: non-numeric counts: {s[:60]!r}") from None
        flush(lineno + 1)
    return out


def _parse_json(path: Path) -> list[tuple[str, str, np.ndarray]]:
    try:
        with _open_text(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path.name}: not a JSON motif file ({exc})") from None
    if isinstance(data, dict):
        data = data.get("motifs", [data])
    if not isinstance(data, list):
        raise InputDataError(f"{path.name}: expected a JSON list of motifs")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "counts" not in rec:
            raise InputDataError(f"{path.name}: motif #{i} lacks 'counts'")
        mid = str(rec.get("ID", rec.get("id", rec.get("name", f"motif{i}"))))
        try:
            counts = np.asarray(rec["counts"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputDataError(f"{path.name}: motif {mid!r}: counts are not a numeric matrix") from None
        if counts.ndim != 2 or 4 not in counts.shape:
            raise InputDataError(f"{path.name}: motif {mid!r}: counts must be 4 x width, got shape {counts.shape}")
        if counts.shape[0] != 4:  # width x 4
            counts = counts.T
        out.append((mid, str(rec.get("name", mid)), counts))
    return out


def _read_motif2factors(source) -> dict[str, tuple[str, ...]]:
    """Motif -> TFs from a table (``Motif, Factor`` or ``motif, tf``; else its first two columns)."""
    if isinstance(source, Mapping):
        return {str(k): (v,) if isinstance(v, str) else tuple(map(str, v)) for k, v in source.items()}
    if isinstance(source, pd.DataFrame):
        df, label = source, "motif2factors table"
    else:
        p = Path(os.fspath(source))
        if not p.exists():
            raise DataFileMissingError(f"motif2factors file {str(p)!r} does not exist")
        try:
            df = pd.read_csv(p, sep="\t", comment="#", dtype=str)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise InputDataError(f"{p.name}: cannot read the motif2factors table ({exc})") from None
        label = p.name
    cols = {str(c).lower(): c for c in df.columns}
    mcol = next((cols[c] for c in ("motif", "motif_id", "id") if c in cols), None)
    fcol = next((cols[c] for c in ("factor", "tf", "gene") if c in cols), None)
    if mcol is None or fcol is None:
        if df.shape[1] < 2:
            raise InputDataError(f"{label}: needs motif and factor columns; has {list(df.columns)}")
        mcol, fcol = df.columns[0], df.columns[1]
    d = df[[mcol, fcol]].dropna().astype(str)
    out: dict[str, list[str]] = {}
    for m, f in zip(d[mcol], d[fcol]):
        f = _ID_PREFIX.sub("", f.strip())
        if f:
            out.setdefault(m.strip(), []).append(f)
    return {m: tuple(dict.fromkeys(v)) for m, v in out.items()}


def _sibling_motif2factors(path: Path) -> Path | None:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = name.rsplit(".", 1)[0]
    for cand in (f"{stem}.motif2factors.txt", f"{stem}.motif2factors.txt.gz"):
        if (path.parent / cand).exists():
            return path.parent / cand
    return None


def read_motifs(path, *, fmt: str | None = None, motif2factors=None) -> list[Motif]:
    """Read a motif database into a list of :class:`Motif`.

    Parameters
    ----------
    path
        A motif file, plain or gzipped.
    fmt
        ``"jaspar"`` (``>MA0002.3<TAB>Runx1`` headers then ``A [ ... ]`` rows), ``"pfm"``
        (gimmemotifs: ``>id`` then one ``A C G T`` row per position) or ``"json"`` (pando: a list
        of ``{"ID", "name", "counts": [[A...], [C...], [G...], [T...]]}``). ``None``: from the
        file name (``.jaspar``, ``.pfm``, ``.json``, optionally ``.gz``), else from the content.
    motif2factors
        Motif -> TF table: a path or DataFrame with columns ``Motif, Factor`` (gimmemotifs) or
        ``motif, tf`` (pando), or a ``{motif id: TFs}`` mapping. ``None``: for ``pfm`` files the
        sibling ``<stem>.motif2factors.txt(.gz)`` when present. Motifs absent from the table
        (and all motifs without a table) take their TFs from the motif name, split at ``::``
        and ``/`` (``Ahr::Arnt`` -> ``Ahr``, ``Arnt``; a ``(var.2)`` suffix is dropped).

    Returns
    -------
    list of :class:`Motif`, in file order.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataFileMissingError(f"motif file {str(p)!r} does not exist")
    if fmt is None:
        fmt = _guess_format(p)
        if fmt is None:
            raise InputDataError(f"cannot tell the motif format of {p.name}; pass fmt= one of {list(FORMATS)}")
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise OptionError(f"unknown motif format {fmt!r} for {p.name}; use one of {list(FORMATS)}")
    try:
        raw = {"jaspar": _parse_jaspar, "pfm": _parse_pfm, "json": _parse_json}[fmt](p)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputDataError(f"{p.name}: cannot read as a {fmt} motif file ({exc})") from None
    if not raw:
        raise InputDataError(f"{p.name}: no motifs found in this {fmt} file")
    if motif2factors is None and fmt == "pfm":
        motif2factors = _sibling_motif2factors(p)
    table = _read_motif2factors(motif2factors) if motif2factors is not None else {}
    out = []
    for mid, name, counts in raw:
        tfs = table.get(mid) or table.get(name) or _tfs_from_name(name)
        try:
            out.append(Motif(mid, name, tfs, counts))
        except InputDataError as exc:
            raise InputDataError(f"{p.name}: {exc}") from None
    return out


# ----------------------------------------------------------------------------- sequences
class _Genome:
    """Random access to chromosome sequences of a FASTA path or a ``{chrom: sequence}`` mapping."""

    def __init__(self, fasta):
        self._fa = None
        if isinstance(fasta, (str, os.PathLike)):
            import pyfaidx

            p = Path(os.fspath(fasta))
            if not p.exists():
                raise DataFileMissingError(f"FASTA file {str(p)!r} does not exist")
            kw = {}
            fai = Path(str(p) + ".fai")
            if not fai.exists() and not os.access(p.parent, os.W_OK):  # index next to the FASTA impossible
                digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:16]
                kw["indexname"] = str(Path(tempfile.gettempdir()) / f"scdx_{digest}_{p.name}.fai")
            try:
                self._fa = pyfaidx.Fasta(str(p), as_raw=True, sequence_always_upper=True, **kw)
            except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, UnicodeDecodeError,
                    ValueError) as exc:
                raise InputDataError(f"cannot index FASTA {p.name} ({type(exc).__name__}: {exc}); gzipped "
                                     "FASTA must be bgzip-compressed") from None
            self.source, self.label = self._fa, p.name
        elif isinstance(fasta, Mapping) or (hasattr(fasta, "keys") and hasattr(fasta, "__getitem__")):
            self.source, self.label = fasta, "the FASTA mapping"
        else:
            raise InputDataError(f"fasta must be a path or a {{chrom: sequence}} mapping, got {type(fasta).__name__}")
        self.chroms = list(map(str, self.source.keys()))  # iterating a pyfaidx.Fasta yields records

    def resolve(self, chroms) -> dict[str, str]:
        """Map peak chromosome names to FASTA names (also trying with / without a ``chr`` prefix)."""
        have = set(self.chroms)
        out, missing = {}, []
        for c in chroms:
            cands = [c, c[3:] if c.startswith("chr") else "chr" + c]
            cands += {"chrM": ["MT"], "MT": ["chrM"], "M": ["chrM", "MT"]}.get(c, [])
            hit = next((x for x in cands if x in have), None)
            if hit is None:
                missing.append(c)
            else:
                out[c] = hit
        if missing:
            raise InputDataError(f"{len(missing)} peak chromosome(s) are not in {self.label}: "
                                 f"{_fmt_items(missing, 5)} (it has {len(self.chroms)} sequences: "
                                 f"{_fmt_items(self.chroms, 5)})")
        return out

    def length(self, chrom: str) -> int:
        return len(self.source[chrom])

    def fetch(self, chrom: str, start: int, end: int) -> str:
        return str(self.source[chrom][start:end]).upper()

    def close(self):
        if self._fa is not None:
            self._fa.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _iter_sequences(peaks, fasta):
    """Yield ``(peak name, sequence)`` after checking chromosomes and bounds of every peak."""
    table = _peaks_checked(peaks)
    with _Genome(fasta) as genome:
        names = genome.resolve(pd.unique(table["chrom"]))
        lengths = {c: genome.length(f) for c, f in names.items()}
        over = table.index[(table["end"].to_numpy() > table["chrom"].map(lengths).to_numpy())]
        if len(over):
            raise InputDataError(f"{len(over)} peak(s) extend past the end of their chromosome in {genome.label} "
                                 f"(another genome assembly?): {_fmt_items(over, 5)}")
        for name, c, s, e in zip(table.index, table["chrom"], table["start"], table["end"]):
            yield name, genome.fetch(names[c], int(s), int(e))


def _peaks_checked(peaks) -> pd.DataFrame:
    """:func:`peaks_table` plus a check of the coordinates (0-based, half-open, non-empty)."""
    from ._genomic import peaks_table

    table = peaks_table(peaks)
    if len(table) == 0:
        raise InputDataError("no peaks given")
    bad = table.index[(table["start"].to_numpy() < 0) | (table["end"].to_numpy() <= table["start"].to_numpy())]
    if len(bad):
        raise InputDataError(f"{len(bad)} peak(s) have start < 0 or end <= start: {_fmt_items(bad, 5)}")
    return table


def peak_sequences(peaks, fasta) -> dict[str, str]:
    """Genomic sequences of peaks.

    Parameters
    ----------
    peaks
        Peak names (``chr1-100-200``, ``chr1:100-200``, ``chr1_100_200``), a DataFrame with
        ``chrom, start, end`` (index = peak names) or an AnnData / MuData (the ATAC var); see
        :func:`peaks_table`. Coordinates are 0-based and half-open like BED: ``chr1:100-200`` is
        ``sequence[100:200]``.
    fasta
        A FASTA path (plain or bgzipped, indexed with :mod:`pyfaidx`; the ``.fai`` index is built
        when missing) or a mapping ``{chrom: sequence}``. Chromosomes are matched also with / without
        a ``chr`` prefix.

    Returns
    -------
    dict peak name -> upper-case sequence, in peak order.
    """
    return dict(_iter_sequences(peaks, fasta))


# ----------------------------------------------------------------------------- scanning
def _background(background, base_counts: np.ndarray | None = None) -> np.ndarray | None:
    """Background frequencies of A, C, G, T; ``None`` for ``"peaks"`` before the bases are counted."""
    if isinstance(background, str):
        if background == "uniform":
            return np.full(4, 0.25)
        if background == "peaks":
            if base_counts is None:
                return None
            if base_counts.sum() == 0:
                raise InputDataError("background='peaks': the peak sequences hold no A/C/G/T bases")
            sym = base_counts + base_counts[::-1]  # both strands are scanned: A = T, C = G
            return sym / sym.sum()
        raise OptionError(f"background must be 'uniform', 'peaks' or 4 frequencies (A, C, G, T), got {background!r}")
    bg = np.asarray(background, dtype=np.float64)
    if bg.shape != (4,) or not np.isfinite(bg).all() or (bg <= 0).any():
        raise OptionError(f"background must be 4 positive frequencies (A, C, G, T), got {background!r}")
    return bg / bg.sum()


def _pssm(motif: Motif, bg: np.ndarray, pseudocount: float):
    """Biopython log2-odds PSSM: ``log2(((counts + pseudocount) / column total) / background)``."""
    from Bio import motifs as bm

    counts = motif.counts
    if counts.sum(axis=0).max() <= 1.01:  # frequencies
        counts = counts * _FREQ_SITES
    m = bm.Motif(alphabet=_ALPHABET, counts={b: counts[i].tolist() for i, b in enumerate(_ALPHABET)})
    pssm = m.counts.normalize(pseudocounts=pseudocount).log_odds(dict(zip(_ALPHABET, bg.tolist())))
    lo = np.array([pssm[b] for b in _ALPHABET], dtype=np.float64)
    if not np.isfinite(lo).all():
        raise InputDataError(f"motif {motif.id!r} has zero counts; use pseudocount > 0")
    return pssm, lo


def _threshold_fpr(lo: np.ndarray, bg: np.ndarray, pvalue: float, precision: int = 10**3) -> float:
    """Log-odds threshold whose false-positive rate under ``bg`` is ``pvalue``.

    The dynamic programme of Biopython's ``ScoreDistribution`` (``pssm.distribution(background,
    precision).threshold_fpr(pvalue)``), same grid, rounding and result, vectorised with numpy:
    Biopython's pure-Python loops take ~0.4 s per motif (minutes for a motif database).
    """
    width = lo.shape[1]
    min_score = min(0.0, float(sum(lo[:, j].min() for j in range(width))))
    interval = max(0.0, float(sum(lo[:, j].max() for j in range(width)))) - min_score
    n = precision * width
    step = interval / (n - 1)

    def index_diff(x):
        return int((x + 0.5 * step) // step)

    dens = np.zeros(n)
    dens[-index_diff(min_score)] = 1.0
    idx = np.arange(n)
    for j in range(width):
        new = np.zeros(n)
        for k in range(4):
            new += np.bincount(np.clip(idx + index_diff(lo[k, j]), 0, n - 1), weights=dens * bg[k], minlength=n)
        dens = new
    reached = np.cumsum(dens[::-1]) >= pvalue  # Biopython sums the bins from the top one by one
    i = n - 1 - int(np.argmax(reached)) if reached.any() else 0
    return min_score + i * step


def _chunks(seqs, chunk_bp: int):
    """Concatenate sequences (``N``-separated) into chunks; yields ``(bytes, offsets, peak indices)``."""
    buf, offs, idx, pos = [], [], [], 0
    for i, s in seqs:
        if pos and pos + len(s) > chunk_bp:
            yield b"N".join(buf), np.asarray(offs, dtype=np.int64), np.asarray(idx, dtype=np.int64)
            buf, offs, idx, pos = [], [], [], 0
        buf.append(s.encode("ascii", "replace"))
        offs.append(pos)
        idx.append(i)
        pos += len(s) + 1
    if buf:
        yield b"N".join(buf), np.asarray(offs, dtype=np.int64), np.asarray(idx, dtype=np.int64)


def scan_motifs(peaks, fasta, motifs, *, pvalue: float = 1e-4, tfs=None, background="uniform",
                pseudocount: float = 0.8, progress: bool = True, organism: str | None = None) -> pd.DataFrame:
    """TF -> peak links from motif occurrences in the peak sequences.

    Each motif is turned into a log2-odds PSSM (Biopython: ``counts + pseudocount`` per base,
    normalised per position, against ``background``) and scored on both strands of every peak
    with Biopython's C scorer. A position is a hit when its score reaches the motif's threshold
    at false-positive rate ``pvalue`` under the background (Biopython's score-distribution
    ``threshold_fpr``, precision 1000). Windows overlapping an ``N`` (or any non-ACGT letter)
    never score.

    Parameters
    ----------
    peaks
        Peaks as accepted by :func:`peak_sequences` (names, ``chrom, start, end`` DataFrame,
        AnnData / MuData).
    fasta
        Genome FASTA path or ``{chrom: sequence}`` mapping (see :func:`peak_sequences`).
    motifs
        A list of :class:`Motif` or a motif file path (read with :func:`read_motifs`).
    pvalue
        Per-position false-positive rate of the motif thresholds.
    tfs
        Keep only motifs bound by one of these TFs, compared case-insensitively (mouse ``Gata1``
        matches human ``GATA1``); TFs are reported under the spelling given here. A reference
        name (``"collectri"``, ``"dorothea"``, ``"trrust"``, ``"union"``) takes the one TF list,
        :func:`scdiffx_grn.datasets.tf_list` (among the RNA genes when ``peaks`` is a MuData).
        ``None``: every motif.
    background
        ``"uniform"``, ``"peaks"`` (base composition of the scanned peaks, made strand-symmetric)
        or 4 frequencies of ``A, C, G, T``. Used for the log-odds and the thresholds.
    pseudocount
        Added to each base count of every position (matrices of frequencies, columns summing to
        1, are first read as counts from 100 sites).
    progress
        Show a progress bar over the motifs (also subject to ``settings.progress``).
    organism
        Organism of a reference TF list (``None``: the data's ``uns["species"]``, else human).

    Returns
    -------
    DataFrame ``tf, peak, motif, score, n_hits, weight, evidence``: one row per (TF, peak, motif)
    with at least one hit; ``score`` is the best log-odds in the peak over both strands,
    ``n_hits`` the number of hit positions (both strands counted), ``weight`` = 1 and
    ``evidence`` = ``"motif"``. A dimer motif gives a row for each partner and a TF with several
    motifs one row per motif. Pass it as ``tf_peak`` to :func:`tf_gene_network`.
    """
    from .._settings import logger, settings
    from .._settings import progress as _progress

    from .._validate import check_probability

    check_probability("pvalue", pvalue)
    if not pseudocount >= 0:
        raise OptionError(f"pseudocount must be >= 0, got {pseudocount!r}")
    bg = _background(background)  # validate before reading anything
    count_bases = bg is None
    if isinstance(motifs, (str, os.PathLike)):
        motifs = read_motifs(motifs)
    elif isinstance(motifs, Motif):
        motifs = [motifs]
    motifs = list(motifs) if isinstance(motifs, Iterable) else motifs
    if not isinstance(motifs, list) or not all(isinstance(m, Motif) for m in motifs):
        raise InputDataError("motifs must be a motif file path or a list of Motif (see read_motifs)")
    # motif -> TFs to report
    if tfs is not None:
        from ._genomic import _is_mudata
        from ._tf import resolve_tfs

        genes = peaks.mod["rna"].var_names if _is_mudata(peaks) and "rna" in peaks.mod else None
        tfs = resolve_tfs(tfs, genes, organism=organism, data=peaks)
        lookup: dict[str, str] = {}
        for t in map(str, tfs):
            lookup.setdefault(t.lower(), t)
        jobs = []
        for m in motifs:
            names = tuple(dict.fromkeys(lookup[t.lower()] for t in m.tfs if t.lower() in lookup))
            if names:
                jobs.append((m, names))
        found = {t for _, names in jobs for t in names}
        if not jobs:
            raise InputDataError(f"none of the {len(lookup)} TFs given has a motif among the {len(motifs)} motifs "
                                 f"(TFs: {_fmt_items(tfs, 5)})")
        if len(found) < len(lookup):
            logger.info("scan_motifs: %d of %d TFs have no motif: %s", len(lookup) - len(found), len(lookup),
                        _fmt_items(sorted(set(lookup.values()) - found)))
    else:
        jobs = [(m, m.tfs) for m in motifs]
    if not jobs:
        raise InputDataError("no motifs to scan")

    # sequences, concatenated into chunks (kept: they are scanned once per motif)
    peak_names: list[str] = []
    base_counts = np.zeros(4, dtype=np.int64)

    def numbered():
        for name, s in _iter_sequences(peaks, fasta):
            peak_names.append(name)
            if count_bases:
                b = np.frombuffer(s.encode("ascii", "replace"), dtype=np.uint8)
                base_counts[:] += [(b == ord(x)).sum() for x in _ALPHABET]
            yield len(peak_names) - 1, s

    chunks = list(_chunks(numbered(), _CHUNK_BP))
    if count_bases:
        bg = _background(background, base_counts)

    parts = []
    it = _progress(jobs, desc="scanning motifs", total=len(jobs), disable=not (progress and settings.progress))
    for motif, names in it:
        pssm, lo = _pssm(motif, bg, pseudocount)
        thr = _threshold_fpr(lo, bg, float(pvalue))
        rc = pssm.reverse_complement()
        for seq, offs, idx in chunks:
            if len(seq) < motif.width:
                continue
            fwd = np.atleast_1d(pssm.calculate(seq))
            rev = np.atleast_1d(rc.calculate(seq))
            hf, hr = fwd >= thr, rev >= thr  # nan (N in the window) is never a hit
            pos = np.flatnonzero(hf | hr)
            if len(pos) == 0:
                continue
            which = np.searchsorted(offs, pos, side="right") - 1
            best = np.fmax(fwd[pos], rev[pos]).astype(np.float64)
            uniq, inv = np.unique(which, return_inverse=True)
            score = np.full(len(uniq), -np.inf)
            np.maximum.at(score, inv, best)
            n_hits = np.bincount(inv, weights=hf[pos].astype(np.int64) + hr[pos], minlength=len(uniq))
            parts.append((motif.id, names, idx[uniq], score, n_hits.astype(np.int64)))

    cols = ["tf", "peak", "motif", "score", "n_hits", "weight", "evidence"]
    if not parts:
        return pd.DataFrame({"tf": [], "peak": [], "motif": [], "score": np.zeros(0),
                             "n_hits": np.zeros(0, np.int64), "weight": np.zeros(0), "evidence": []},
                            columns=cols).astype({"tf": object, "peak": object})
    peak_arr = np.asarray(peak_names, dtype=object)
    frames = []
    for mid, names, pidx, score, n_hits in parts:
        for tf in names:
            frames.append(pd.DataFrame({"tf": tf, "peak": peak_arr[pidx], "motif": mid, "score": score,
                                        "n_hits": n_hits}))
    out = pd.concat(frames, ignore_index=True)
    out["weight"] = 1.0
    out["evidence"] = "motif"
    return out[cols]
