"""The one transcription-factor list: which genes count as TFs, from a curated reference network."""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from .._errors import OptionError

__all__ = ["tf_list"]

_SOURCES = ("collectri", "dorothea", "trrust", "union")


def tf_list(genes: Sequence[str] | None = None, *, organism: str = "human", source: str = "collectri",
            levels: str | Iterable[str] = "ABC", network: pd.DataFrame | None = None,
            order: str = "targets", min_targets: int = 0, count_in: str = "genes") -> list[str]:
    """Transcription factors of a reference network, optionally restricted to ``genes``.

    Parameters
    ----------
    genes
        Restrict to these genes, matched case-insensitively and returned in their own spelling
        (mouse ``Sox2`` vs the human symbol ``SOX2``). ``None``: every TF of the source.
    organism
        ``"human"`` or ``"mouse"``.
    source
        ``"collectri"`` (default), ``"dorothea"`` (confidence ``levels``), ``"trrust"`` or
        ``"union"`` of the three.
    network
        A ``source, target`` table to take the TFs from instead (``source`` is then ignored).
    order
        ``"targets"``: most targets first (targets counted among ``genes`` when given; ties by
        name), ``"name"``: alphabetical.
    min_targets
        Keep TFs with at least this many targets (counted as ``count_in`` says).
    count_in
        ``"genes"``: targets are counted among ``genes`` (when given); ``"network"``: all the
        TF's targets in the network.

    Returns
    -------
    list of str
    """
    from ._refdb import collectri, dorothea, trrust

    if count_in not in ("genes", "network"):
        raise OptionError(f"count_in must be 'genes' or 'network', got {count_in!r}")
    if order not in ("targets", "name"):
        raise OptionError(f"order must be 'targets' or 'name', got {order!r}")
    if network is None:
        if source not in _SOURCES:
            raise OptionError(f"source must be one of {_SOURCES}, got {source!r}")
        read = {"collectri": lambda: collectri(organism),
                "dorothea": lambda: dorothea(organism, levels=levels),
                "trrust": lambda: trrust(organism)}
        nets = [read[s]() for s in (("collectri", "dorothea", "trrust") if source == "union" else (source,))]
        network = pd.concat([n[["source", "target"]] for n in nets], ignore_index=True)
    net = network[["source", "target"]].astype(str)
    if genes is not None and count_in == "network":
        spell = {}
        for g in map(str, genes):
            spell.setdefault(g.upper(), g)
        n_targets = net.drop_duplicates().assign(source=net["source"].str.upper().map(spell)).dropna(subset=["source"])
        tfs = set(n_targets["source"])
    elif genes is not None:
        spell = {}
        for g in map(str, genes):
            spell.setdefault(g.upper(), g)
        net = net.assign(source=net["source"].str.upper().map(spell), target=net["target"].str.upper().map(spell))
        n_targets = net.dropna(subset=["target"]).dropna(subset=["source"]).drop_duplicates()
        tfs = set(net["source"].dropna())
    else:
        n_targets = net.drop_duplicates()
        tfs = set(net["source"])
    size = n_targets.groupby("source").size().reindex(sorted(tfs), fill_value=0)
    size = size[size >= int(min_targets)]
    tfs = set(size.index)
    if order == "name":
        return sorted(tfs)
    size = size.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    return [str(t) for t in size.index]
