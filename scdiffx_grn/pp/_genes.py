"""Gene symbol case conversion between human and mouse."""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pandas as pd

from .._errors import OptionError

__all__ = ["match_case", "normalize_organism"]

_HUMAN = {"human", "hs", "hsa", "homo sapiens", "homo_sapiens", "hg19", "hg38", "grch38", "grch37"}
_MOUSE = {"mouse", "mm", "mmu", "mus musculus", "mus_musculus", "mm10", "mm39", "grcm38", "grcm39"}
_ORF = re.compile(r"^(C(?:\d+|X|Y))ORF(\d+.*)$")


def normalize_organism(organism: str) -> str:
    """Map an organism / genome name to ``"human"`` or ``"mouse"``.

    Parameters
    ----------
    organism
        E.g. ``"human"``, ``"hs"``, ``"Homo sapiens"``, ``"hg38"``, ``"mouse"``, ``"mm10"``.

    Returns
    -------
    str
        ``"human"`` or ``"mouse"``.

    Raises
    ------
    OptionError
        For any other organism.
    """
    o = str(organism).strip().lower()
    if o in _HUMAN:
        return "human"
    if o in _MOUSE:
        return "mouse"
    raise OptionError(f"unknown organism {organism!r}; use 'human' or 'mouse'")


def _one(g: str, org: str) -> str:
    if not isinstance(g, str) or not g:
        return g
    if org == "human":
        up = g.upper()
        m = _ORF.match(up)
        return f"{m.group(1)}orf{m.group(2)}" if m else up
    return g[:1].upper() + g[1:].lower()


def match_case(genes: str | Iterable[str], organism: str):
    """Convert gene symbols to the case convention of an organism.

    Human symbols are upper case (``GATA1``; ``C1ORF112`` -> ``C1orf112``); mouse symbols
    are capitalised (``Gata1``). This is orthology by symbol case: it is right for most
    one-to-one orthologues with the same name, wrong for genes named differently in the
    two species.

    Parameters
    ----------
    genes
        One symbol or an iterable of symbols.
    organism
        Target organism (``"human"`` / ``"mouse"`` or an alias, see :func:`normalize_organism`).

    Returns
    -------
    str, pandas.Index or list of str
        Same kind as the input: a string for a string, an Index for an Index, else a list.
    """
    org = normalize_organism(organism)
    if isinstance(genes, str):
        return _one(genes, org)
    out = [_one(g, org) for g in genes]
    if isinstance(genes, pd.Index):
        return pd.Index(out, name=genes.name)
    if isinstance(genes, pd.Series):
        return pd.Series(out, index=genes.index, name=genes.name)
    if isinstance(genes, np.ndarray):
        return np.asarray(out, dtype=object)
    return out
