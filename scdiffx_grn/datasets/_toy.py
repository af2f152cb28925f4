"""Toy paired multiome data with planted truth (decoupler's ``ds.toy``): for tests, examples and docs.

:func:`toy_multiome` builds a small paired MuData (raw counts, ``obs['cell_type']``, parsed peak
coordinates) whose structure is known: marker genes and marker peaks per cell type, and peak ->
gene dependencies (the gene's mean is 0.5 with its peak closed, 8.5 with it open) listed in
``uns['planted_pairs']``. Deterministic given ``seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import OptionError

__all__ = ["toy_multiome"]


def toy_multiome(seed: int = 0, *, n_cells: int = 300, n_types: int = 3, n_genes: int = 60, n_peaks: int = 120,
                 n_marker_genes: int = 8, n_marker_peaks: int = 20, n_planted: int = 10):
    """Small paired RNA + ATAC MuData with planted markers and peak -> gene pairs.

    Parameters
    ----------
    seed
        Random seed (the data are a deterministic function of all arguments).
    n_cells, n_types
        Cells (a multiple of ``n_types``; types interleaved in row order) and cell types
        ``type0 ... type{n_types-1}`` in ``obs['cell_type']``; a random ``obs['batch']``.
    n_genes, n_peaks
        Features. The first ``n_types * n_marker_genes`` genes are markers (~6x in their type), the
        first ``n_types * n_marker_peaks`` peaks are marker peaks (open in 70 % vs 8 % of cells).
    n_planted
        Peak -> gene dependencies on the next (non-marker) genes and peaks: peak ``j`` open in 40 %
        of cells independently; gene mean 0.5 when closed, 8.5 when open.

    Returns
    -------
    mudata.MuData
        Modalities ``rna`` (Poisson counts) and ``atac`` (counts 1-2), raw counts in ``X`` and
        ``layers['counts']``; ``uns['planted_pairs']`` (``peak, gene``), ``uns['marker_genes']`` and
        ``uns['marker_peaks']`` (type -> names).
    """
    N_CELLS, N_TYPES, N_GENES, N_PEAKS = int(n_cells), int(n_types), int(n_genes), int(n_peaks)
    N_MARKER_GENES, N_MARKER_PEAKS, N_PLANTED = int(n_marker_genes), int(n_marker_peaks), int(n_planted)
    if N_TYPES < 1 or N_CELLS % N_TYPES:
        raise OptionError(f"n_cells ({N_CELLS}) must be a positive multiple of n_types ({N_TYPES})")
    if N_TYPES * N_MARKER_GENES + N_PLANTED > N_GENES or N_TYPES * N_MARKER_PEAKS + N_PLANTED > N_PEAKS:
        raise OptionError("n_genes / n_peaks too small for the markers and planted pairs asked for: need "
                          f"n_genes >= {N_TYPES * N_MARKER_GENES + N_PLANTED} and "
                          f"n_peaks >= {N_TYPES * N_MARKER_PEAKS + N_PLANTED}")
    import anndata as ad
    import mudata

    mudata.set_options(pull_on_update=False)
    rng = np.random.default_rng(seed)
    types = np.array([f"type{k}" for k in range(N_TYPES)])
    ct = np.repeat(types, N_CELLS // N_TYPES)
    code = np.repeat(np.arange(N_TYPES), N_CELLS // N_TYPES)
    barcodes = np.array([f"cell{i:04d}" for i in range(N_CELLS)])
    perm = rng.permutation(N_CELLS)  # cell types interleaved
    ct, code, barcodes = ct[perm], code[perm], barcodes

    # ATAC: baseline openness, marker peaks (first N_TYPES*N_MARKER_PEAKS) open in their type
    p_open = np.full((N_CELLS, N_PEAKS), 0.08)
    for k in range(N_TYPES):
        cols = slice(k * N_MARKER_PEAKS, (k + 1) * N_MARKER_PEAKS)
        p_open[code == k, cols] = 0.7
    atac = (rng.random((N_CELLS, N_PEAKS)) < p_open).astype(np.float32)
    atac *= rng.integers(1, 3, size=atac.shape)  # counts 1-2

    # RNA: Poisson with type markers (first N_TYPES*N_MARKER_GENES genes)
    lam = np.tile(rng.lognormal(0.0, 0.8, size=N_GENES), (N_CELLS, 1))  # background, varied means
    lam[:, : N_TYPES * N_MARKER_GENES] = 1.0
    for k in range(N_TYPES):
        lam[code == k, k * N_MARKER_GENES:(k + 1) * N_MARKER_GENES] = 6.0
    # planted peak -> gene dependencies on non-marker genes / peaks
    gene_idx = np.arange(N_TYPES * N_MARKER_GENES, N_TYPES * N_MARKER_GENES + N_PLANTED)
    peak_idx = np.arange(N_TYPES * N_MARKER_PEAKS, N_TYPES * N_MARKER_PEAKS + N_PLANTED)
    p_open[:, peak_idx] = 0.4
    acc = (rng.random((N_CELLS, N_PLANTED)) < 0.4).astype(np.float32)
    atac[:, peak_idx] = acc * rng.integers(1, 3, size=acc.shape)
    lam[:, gene_idx] = 0.5 + 8.0 * (atac[:, peak_idx] > 0)
    rna = rng.poisson(lam).astype(np.float32)

    chroms = np.array(["chr1", "chr2", "chr3", "chrX"])
    peak_names = []
    for j in range(N_PEAKS):
        c = chroms[j % 4]
        s = 10_000 + 5_000 * j
        peak_names.append(f"{c}-{s}-{s + 500}")
    gene_names = [f"Gene{i}" for i in range(N_GENES)]
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct), "batch": pd.Categorical(rng.choice(["b1", "b2"], N_CELLS))},
                       index=barcodes)
    r = ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=gene_names))
    a = ad.AnnData(sp.csr_matrix(atac), obs=obs.copy(), var=pd.DataFrame(index=peak_names))
    r.layers["counts"] = r.X.copy()
    a.layers["counts"] = a.X.copy()
    from ..pp import parse_peaks

    parse_peaks(a)
    m = mudata.MuData({"rna": r, "atac": a})
    for c in obs.columns:
        m.obs[c] = obs[c].values
    m.uns["planted_pairs"] = pd.DataFrame({"peak": np.array(peak_names)[peak_idx], "gene": np.array(gene_names)[gene_idx]})
    m.uns["marker_genes"] = {t: gene_names[k * N_MARKER_GENES:(k + 1) * N_MARKER_GENES] for k, t in enumerate(types)}
    m.uns["marker_peaks"] = {t: peak_names[k * N_MARKER_PEAKS:(k + 1) * N_MARKER_PEAKS] for k, t in enumerate(types)}
    m.uns["values"] = "counts"
    return m
