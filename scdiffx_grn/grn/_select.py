"""Feature selection for regulation: the genes that matter and every peak near them.

Keeping the most variable genes and the most frequently open peaks (``highly_variable_genes`` +
``filter_peaks(top_n=...)``) is fine for a latent space but ruins a GRN: the frequent peaks are mostly
promoters of housekeeping genes, and few of them lie near the kept genes (2,000 HVGs x the top 3,000 of
150,000 peaks leave a few hundred candidate pairs). :func:`select_features` keeps the genes (HVGs + TFs
+ the user's genes) and **every** peak within ``window`` of their TSSs, plus the most frequently open
peaks for the latent space, and records the choice and its counts in ``uns``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import OptionError, UnknownFeatureError, _fmt_items
from .._settings import logger
import scdiffx_grn._store as _store
from ..pp._utils import get_matrix, update

__all__ = ["select_features"]

_ORGANISM = {"hg38": "human", "hg19": "human", "mm10": "mouse", "mm39": "mouse"}


def _frac_open(X) -> np.ndarray:
    """Fraction of cells with a non-zero value per column, without copying a large sparse matrix."""
    if sp.issparse(X):
        X = X if X.format in ("csr", "csc") else sp.csr_matrix(X)
        if X.format == "csc":
            n = np.array([np.count_nonzero(X.data[X.indptr[j]:X.indptr[j + 1]]) for j in range(X.shape[1])])
        else:
            n = np.bincount(X.indices[X.data != 0], minlength=X.shape[1])
    else:
        n = np.count_nonzero(np.asarray(X), axis=0)
    return n / max(X.shape[0], 1)


def select_features(mdata, *, n_top_genes: int = 2000, tfs: bool | Iterable[str] = True,
                    genes: Iterable[str] | None = None, window: int = 150_000, n_latent_peaks: int = 5000,
                    min_frac: float = 0.0, genome: str = "hg38", tss_table=None, layer: str | None = "counts",
                    subset: bool = True, key_added: str = "select_features", copy: bool = False):
    """Keep HVGs + TFs + chosen genes, every peak within ``window`` of their TSSs and the top peaks.

    Parameters
    ----------
    mdata
        Paired MuData (``rna``, ``atac`` with peak coordinates or parseable peak names), raw counts.
    n_top_genes
        Highly variable genes (:func:`~scdiffx_grn.pp.highly_variable_genes`, seurat_v3 on counts).
    tfs
        ``True``: every transcription factor of the reference list (:func:`~scdiffx_grn.datasets.tf_list`,
        CollecTRI) among the genes; a list: these TFs; ``False``: none.
    genes
        Genes the user wants kept whatever their variability (names not in the data raise
        :class:`~scdiffx_grn.UnknownFeatureError`).
    window
        Keep every peak whose centre lies within this many bp of a kept gene's TSS (the same rule as
        :func:`~scdiffx_grn.grn.peak_gene_candidates`, so every candidate pair of the kept genes survives).
    n_latent_peaks
        Also keep the peaks open in the most cells (for the latent space), whatever their position.
    min_frac
        Window peaks must be open in more than this fraction of cells (peaks open in no cell are always
        dropped).
    genome, tss_table
        TSS annotation: ``tss_table`` (anything :func:`~scdiffx_grn.grn.read_tss` reads) or the shipped
        annotation of ``genome`` (:func:`~scdiffx_grn.datasets.tss_annotation`).
    layer
        Layer holding raw counts in both modalities (``None``: ``X``).
    subset
        Subset the modalities to the selection (``False``: only mark ``var["selected"]``).
    key_added, copy
        Storage contract of the ``tl`` functions: ``mdata.uns[key_added] = {"params": ..., "counts": ...,
        "candidates": ...}``, where ``candidates`` (``peak, gene, distance``) are the peak -> gene pairs of
        the kept features (``tl.extract_grn(candidates=key_added)`` reads it) and ``counts`` the numbers of
        genes by reason, peaks by reason and candidate pairs.

    Returns
    -------
    None or MuData
        The copy when ``copy=True``.
    """
    from ..datasets import tf_list
    from ..datasets._refdb import tss_annotation
    from ..pp._qc import highly_variable_genes
    from ._genomic import peak_gene_candidates, peaks_table, read_tss

    if int(window) < 0:
        raise OptionError(f"window must be >= 0 bp, got {window!r}")
    if int(n_top_genes) < 0 or int(n_latent_peaks) < 0:
        raise OptionError(f"n_top_genes and n_latent_peaks must be >= 0, got {n_top_genes!r}, {n_latent_peaks!r}")
    if not 0.0 <= float(min_frac) < 1.0:
        raise OptionError(f"min_frac must be in [0, 1), got {min_frac!r}")
    target = _store.target(mdata, copy)
    rna, atac = target.mod["rna"], target.mod["atac"]
    names = pd.Index(rna.var_names.astype(str))

    # genes: HVGs + TFs + the user's genes
    hvg = np.zeros(rna.n_vars, bool)
    if int(n_top_genes) > 0:
        highly_variable_genes(rna, n_top_genes=int(n_top_genes), layer=layer)
        hvg = rna.var["highly_variable"].to_numpy().astype(bool)
    if tfs is True:
        tf_names = tf_list(list(names), organism=_ORGANISM.get(genome, "human"))
    elif tfs is False or tfs is None:
        tf_names = []
    else:
        tf_names = [str(t) for t in tfs]
    is_tf = names.isin(tf_names)
    user = [str(g) for g in genes] if genes is not None else []
    missing = [g for g in user if g not in names]
    if missing:
        raise UnknownFeatureError(f"select_features: {len(missing)} of the genes= are not in the RNA data: "
                                  f"{_fmt_items(missing)}")
    is_user = names.isin(user)
    keep_gene = hvg | is_tf | is_user
    kept_genes = names[keep_gene]

    # peaks: every peak within the window of a kept gene's TSS, plus the most frequently open
    tss = read_tss(tss_table if tss_table is not None else tss_annotation(genome))
    frac = _frac_open(get_matrix(atac, layer, what="the ATAC data"))
    pk = peaks_table(atac)
    cand = peak_gene_candidates(pk, genes=kept_genes, tss_table=tss, window=int(window)) if len(kept_genes) else \
        pd.DataFrame({"peak": [], "gene": [], "distance": []})
    pos = pd.Index(pk.index).get_indexer(cand["peak"])
    ok = (frac[pos] > float(min_frac)) & (frac[pos] > 0)
    cand = cand[ok].reset_index(drop=True)
    in_window = np.zeros(atac.n_vars, bool)
    in_window[pos[ok]] = True
    latent = np.zeros(atac.n_vars, bool)
    n_lat = min(int(n_latent_peaks), int((frac > 0).sum()))
    if n_lat:
        latent[np.argsort(-frac, kind="stable")[:n_lat]] = True
    keep_peak = in_window | latent
    no_tss = int((~kept_genes.isin(tss["gene"])).sum())
    counts = {
        "genes": int(keep_gene.sum()), "genes_hvg": int(hvg.sum()), "genes_tf": int(is_tf.sum()),
        "genes_user": int(is_user.sum()), "genes_without_tss": no_tss, "genes_total": int(rna.n_vars),
        "peaks": int(keep_peak.sum()), "peaks_in_window": int(in_window.sum()), "peaks_latent": int(latent.sum()),
        "peaks_latent_only": int((latent & ~in_window).sum()), "peaks_total": int(atac.n_vars),
        "candidate_pairs": int(len(cand)),
    }
    rna.var["selected"] = keep_gene
    atac.var["selected"] = keep_peak
    atac.var["in_window"] = in_window
    atac.var["frac_cells"] = frac
    logger.info("select_features: %d genes (%d HVG, %d TF, %d user; %d without a TSS), %d peaks (%d in the "
                "%d bp windows, %d top peaks), %d candidate pairs", counts["genes"], counts["genes_hvg"],
                counts["genes_tf"], counts["genes_user"], no_tss, counts["peaks"], counts["peaks_in_window"],
                int(window), counts["peaks_latent"], counts["candidate_pairs"])
    if subset:
        rna._inplace_subset_var(keep_gene)
        atac._inplace_subset_var(keep_peak)
        update(target)
    _store.store(target, key_added, {"counts": counts, "candidates": cand},
                 {"n_top_genes": n_top_genes, "tfs": tfs if isinstance(tfs, bool) else list(tf_names),
                  "genes": user, "window": int(window), "n_latent_peaks": n_latent_peaks, "min_frac": min_frac,
                  "genome": genome, "tss_table": None if tss_table is None else "given", "layer": layer,
                  "subset": subset})
    return _store.done(target, copy)
