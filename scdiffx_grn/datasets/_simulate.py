"""A synthetic paired multiome of real shape: real gene symbols and TSSs, 10x-like sparsity, planted links.

:func:`simulate_multiome` builds a MuData shaped like a Cell Ranger ARC ``filtered_feature_bc_matrix``
(default 10,000 cells x 36,000 genes x 150,000 peaks, about 2,575 genes and 10,597 peaks per cell)
without ever holding a dense cells x features matrix: counts are multinomial draws per cell (so a cell's
number of distinct features is set by its library size), built block by block straight into CSR.

- Genes: the real symbols and TSSs of the TSS annotation (:func:`~scdiffx_grn.datasets.tss_annotation`)
  ordered by position; when more genes are asked for than the annotation has, the rest get clone-style
  names (``AC100001.1``...) and no annotated TSS, like the many unannotated features of a real run.
- Peaks: one promoter peak at each annotated TSS (up to 35 % of the peaks), distal peaks around TSSs
  (Laplace offsets, scale 50 kb) and genome-wide background peaks; non-overlapping, 200-1,500 bp wide,
  named ``chr1:1000-1600`` like Cell Ranger ARC.
- Cell types ``type0...``: unequal proportions, marker genes (x8) and marker peaks (x5) per type.
- Planted peak -> gene links: the peak's openness is a per-cell coin flip (a different probability per
  type, so the link is visible within types), and the gene gets extra Poisson counts, ``fold`` times its
  mean, in cells where the peak is open. Listed in ``uns["planted_pairs"]`` (``peak, gene, distance,
  fold``).

:func:`write_10x_h5` writes a MuData as a Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` (read back by
:func:`~scdiffx_grn.datasets.read_multiome`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError

__all__ = ["simulate_multiome", "write_10x_h5"]

#: per-cell sparsity of a typical Cell Ranger ARC human run (median genes and peaks per cell of 36,601 / ~150k)
_GENES_PER_CELL_FRAC = 2575 / 36000
_PEAKS_PER_CELL_FRAC = 10597 / 150000
_MAIN_CHROMS = [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY"]


def _solve_library(p: np.ndarray, target: float) -> float:
    """Library size ``L`` whose multinomial draw hits ``target`` distinct features on average:
    ``sum_j 1 - exp(-L p_j) = target`` (bisection on log L)."""
    lo, hi = np.log(max(target, 1.0)), np.log(max(target, 1.0)) + 12.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.sum(-np.expm1(-np.exp(mid) * p)) < target:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def _genes_table(genome: str, n_genes: int, rng) -> pd.DataFrame:
    """``gene, chrom, tss, strand, annotated``: real genes (one TSS each, main chromosomes) then fillers."""
    from ._refdb import tss_annotation
    from ._tss import read_tss

    tss = read_tss(tss_annotation(genome))
    tss = tss[tss["chrom"].isin(_MAIN_CHROMS)].drop_duplicates("gene").reset_index(drop=True)
    if len(tss) > n_genes:
        tss = tss.iloc[np.sort(rng.choice(len(tss), n_genes, replace=False))].reset_index(drop=True)
    tss = tss.assign(annotated=True)
    n_fill = n_genes - len(tss)
    if n_fill > 0:
        used = set(tss["gene"])
        names, i = [], 100001
        while len(names) < n_fill:
            nm = f"AC{i}.1"
            if nm not in used:
                names.append(nm)
            i += 1
        chroms = rng.choice(np.array(_MAIN_CHROMS[:-1]), n_fill)
        span = tss.groupby("chrom")["tss"].max().reindex(chroms).fillna(5e7).to_numpy()
        fill = pd.DataFrame({"gene": names, "chrom": chroms, "tss": (rng.random(n_fill) * span).astype(np.int64),
                             "strand": rng.choice(np.array(["+", "-"]), n_fill), "annotated": False})
        tss = pd.concat([tss, fill], ignore_index=True)
    order = np.lexsort((tss["tss"].to_numpy(), tss["chrom"].map({c: i for i, c in enumerate(_MAIN_CHROMS)}).to_numpy()))
    return tss.iloc[order].reset_index(drop=True)


def _drop_overlaps(df: pd.DataFrame) -> pd.DataFrame:
    """Remove peaks closer than 50 bp to their left neighbour until none clash (a promoter peak beats a
    distal one)."""
    while True:
        df = df.sort_values(["chrom", "start"], kind="stable")
        same = df["chrom"].to_numpy()[1:] == df["chrom"].to_numpy()[:-1]
        clash = same & (df["start"].to_numpy()[1:] <= df["end"].to_numpy()[:-1] + 50)
        if not clash.any():
            return df
        prom = df["promoter"].to_numpy()
        bad = np.zeros(len(df), bool)
        left_wins = clash & (prom[:-1] | ~prom[1:])
        bad[1:] |= left_wins
        bad[:-1] |= clash & ~left_wins
        df = df[~bad]


def _peaks_table(genes: pd.DataFrame, n_peaks: int, rng) -> pd.DataFrame:
    """Non-overlapping peaks ``chrom, start, end, promoter`` sorted by position, ``n_peaks`` of them."""
    ann = genes[genes["annotated"]]
    chrom_len = (genes.groupby("chrom")["tss"].max() + 1_000_000).to_dict()
    n_prom = min(len(ann), int(0.35 * n_peaks))
    prom = ann.iloc[np.sort(rng.choice(len(ann), n_prom, replace=False))] if n_prom else ann.iloc[:0]
    parts = [pd.DataFrame({"chrom": prom["chrom"].to_numpy(),
                           "centre": prom["tss"].to_numpy() + rng.integers(-150, 150, n_prom), "promoter": True})]
    anchors = ann if len(ann) else genes
    need = n_peaks - n_prom
    for _ in range(20):  # draw distal / background peaks until enough survive the overlap removal
        k = int(need * 1.3) + 100
        near = rng.random(k) < 0.75
        a = anchors.iloc[rng.integers(0, len(anchors), k)]
        chrom = a["chrom"].to_numpy().copy()
        centre = a["tss"].to_numpy() + np.round(rng.laplace(0, 50_000, k)).astype(np.int64)
        bg = ~near
        chrom[bg] = rng.choice(np.array(list(chrom_len)), int(bg.sum()))
        centre[bg] = (rng.random(int(bg.sum())) * np.array([chrom_len[c] for c in chrom[bg]])).astype(np.int64)
        parts.append(pd.DataFrame({"chrom": chrom, "centre": centre, "promoter": False}))
        df = pd.concat(parts, ignore_index=True)
        df["width"] = rng.integers(200, 1500, len(df))
        df["start"] = np.maximum(df["centre"] - df["width"] // 2, 1)
        df["end"] = df["start"] + df["width"]
        df = _drop_overlaps(df)
        prom_ok = df[df["promoter"]]
        distal = df[~df["promoter"]]
        parts = [prom_ok[["chrom", "centre", "promoter"]], distal[["chrom", "centre", "promoter"]]]
        if len(df) >= n_peaks:
            keep_d = np.sort(rng.choice(len(distal), n_peaks - len(prom_ok), replace=False))
            df = pd.concat([prom_ok, distal.iloc[keep_d]])
            break
    else:
        raise OptionError(f"cannot place {n_peaks} non-overlapping peaks around {len(genes)} genes; ask for fewer peaks")
    order = np.lexsort((df["start"].to_numpy(), df["chrom"].map({c: i for i, c in enumerate(_MAIN_CHROMS)}).to_numpy()))
    return df.iloc[order][["chrom", "start", "end", "promoter"]].reset_index(drop=True)


def _draw_block(rng, probs_cum: np.ndarray, lib: np.ndarray, n_features: int) -> sp.csr_matrix:
    """Multinomial counts for a block of cells (``lib[i]`` draws from the cumulative probabilities)."""
    rows = np.repeat(np.arange(len(lib), dtype=np.int32), lib)
    cols = np.searchsorted(probs_cum, rng.random(int(lib.sum())) * probs_cum[-1], side="right")
    cols = np.minimum(cols, n_features - 1).astype(np.int32)
    m = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(lib), n_features)).tocsr()
    m.sum_duplicates()
    return m


def simulate_multiome(n_cells: int = 10_000, n_genes: int = 36_000, n_peaks: int = 150_000, *,
                      genome: str = "hg38", n_types: int = 8, n_links: int = 2000, link_window: int = 100_000,
                      genes_per_cell: float | None = None, peaks_per_cell: float | None = None,
                      block_cells: int = 512, seed: int = 0):
    """A 10x-shaped synthetic paired RNA + ATAC MuData with planted peak -> gene links.

    Parameters
    ----------
    n_cells, n_genes, n_peaks
        Shape (default: a typical Cell Ranger ARC human run).
    genome
        TSS annotation giving the gene symbols and positions (``"hg38"`` or ``"mm10"``).
    n_types
        Cell types ``type0 ... type{n_types-1}`` in ``obs["cell_type"]`` (unequal sizes).
    n_links, link_window
        Planted peak -> gene links: expressed annotated genes, each with a peak within ``link_window`` bp
        of its TSS (1-3 peaks per gene).
    genes_per_cell, peaks_per_cell
        Mean distinct genes / peaks per cell (default: 7.2 % and 7.1 % of the features, as in a real
        run: 2,575 of 36,000 and 10,597 of 150,000).
    block_cells
        Cells drawn at a time (bounds the working memory).
    seed
        Random seed; the data are a deterministic function of all arguments.

    Returns
    -------
    mudata.MuData
        ``rna`` and ``atac`` with raw counts (float32 CSR) in ``X`` and ``layers["counts"]``; RNA var
        ``gene_ids, feature_types, chrom, tss, annotated``; ATAC var ``chrom, start, end, promoter``;
        ``obs["cell_type"]``; ``uns["planted_pairs"]`` (``peak, gene, distance, fold``) and
        ``uns["simulation"]`` (the arguments).
    """
    import anndata as ad
    import mudata

    n_cells, n_genes, n_peaks, n_types = int(n_cells), int(n_genes), int(n_peaks), int(n_types)
    if min(n_cells, n_genes, n_peaks, n_types) < 1 or n_types > n_cells:
        raise OptionError(f"need n_cells >= n_types >= 1 and positive n_genes / n_peaks, got {n_cells} cells, "
                          f"{n_genes} genes, {n_peaks} peaks, {n_types} types")
    gpc = float(genes_per_cell) if genes_per_cell is not None else _GENES_PER_CELL_FRAC * n_genes
    ppc = float(peaks_per_cell) if peaks_per_cell is not None else _PEAKS_PER_CELL_FRAC * n_peaks
    if not (0 < gpc < 0.9 * n_genes and 0 < ppc < 0.9 * n_peaks):
        raise OptionError(f"genes_per_cell / peaks_per_cell must be between 0 and 90 % of the features, got "
                          f"{gpc:g} of {n_genes} and {ppc:g} of {n_peaks}")
    mudata.set_options(pull_on_update=False)
    rng = np.random.default_rng(seed)
    genes = _genes_table(genome, n_genes, rng)
    peaks = _peaks_table(genes, n_peaks, rng)
    peak_names = (peaks["chrom"] + ":" + peaks["start"].astype(str) + "-" + peaks["end"].astype(str)).to_numpy()
    gene_names = genes["gene"].to_numpy()

    # cell types with unequal proportions, rows shuffled
    prop = np.sort(rng.dirichlet(np.full(n_types, 3.0)))[::-1]
    code = rng.choice(n_types, n_cells, p=prop)
    code[rng.permutation(n_cells)[:n_types]] = np.arange(n_types)  # every type present

    # expression and accessibility profiles per type
    g_mu = rng.lognormal(0.0, 1.6, n_genes)
    p_rna = g_mu[None, :] * rng.lognormal(0.0, 0.3, (n_types, n_genes))
    p_mu = rng.lognormal(0.0, 0.8, n_peaks) * np.where(peaks["promoter"].to_numpy(), 3.0, 1.0)
    p_atac = p_mu[None, :] * rng.lognormal(0.0, 0.3, (n_types, n_peaks))
    for t in range(n_types):
        p_rna[t, rng.choice(n_genes, max(1, n_genes // 100), replace=False)] *= 8.0
        p_atac[t, rng.choice(n_peaks, max(1, n_peaks // 20), replace=False)] *= 5.0

    # planted links: expressed annotated genes x peaks within link_window of their TSS
    from ._tss import tss_window_pairs

    ann = genes[genes["annotated"] & (g_mu > np.median(g_mu))]
    cand = tss_window_pairs(pd.DataFrame({"chrom": peaks["chrom"].to_numpy(), "start": peaks["start"].to_numpy(),
                                          "end": peaks["end"].to_numpy()}, index=peak_names),
                            ann[["gene", "chrom", "tss", "strand"]].reset_index(drop=True), link_window)
    links = pd.DataFrame({"peak": [], "gene": [], "distance": [], "fold": []})
    if len(cand) and n_links > 0:
        cand = cand.sample(frac=1.0, random_state=int(rng.integers(2**31))).drop_duplicates("peak")
        per_gene = cand.groupby("gene", sort=False).head(3)  # 1-3 linked peaks per gene
        take = per_gene.iloc[: int(n_links)]
        links = take.assign(fold=rng.uniform(1.0, 3.0, len(take))).reset_index(drop=True)
    pidx = pd.Index(peak_names).get_indexer(links["peak"])
    gidx = pd.Index(gene_names).get_indexer(links["gene"])
    p_open = rng.uniform(0.05, 0.6, (n_types, len(links)))  # per-type openness of each planted peak
    planted = np.zeros(n_peaks, bool)
    planted[pidx] = True

    # library sizes that give the asked-for sparsity
    p_rna /= p_rna.sum(1, keepdims=True)
    p_atac /= p_atac.sum(1, keepdims=True)
    lib_rna = np.array([_solve_library(p_rna[t], gpc) for t in range(n_types)])
    lib_atac = np.array([_solve_library(p_atac[t], ppc) for t in range(n_types)])
    cum_rna = np.cumsum(p_rna, 1)
    cum_atac = np.cumsum(p_atac, 1)
    size = rng.lognormal(0.0, 0.3, n_cells)
    size /= size.mean()

    rna_blocks, atac_blocks = [], []
    for b0 in range(0, n_cells, int(block_cells)):
        cells = np.arange(b0, min(n_cells, b0 + int(block_cells)))
        r_parts, a_parts, order = [], [], []
        for t in np.unique(code[cells]):
            ct = cells[code[cells] == t]
            order.append(ct)
            r_parts.append(_draw_block(rng, cum_rna[t], np.maximum(1, np.round(lib_rna[t] * size[ct])).astype(np.int64),
                                       n_genes))
            a_parts.append(_draw_block(rng, cum_atac[t], np.maximum(1, np.round(lib_atac[t] * size[ct])).astype(np.int64),
                                       n_peaks))
        back = np.argsort(np.concatenate(order), kind="stable")
        rb = sp.vstack(r_parts, format="csr")[back]
        ab = sp.vstack(a_parts, format="csr")[back]
        if len(links):
            # planted peaks: per-cell coin flips replace the multinomial column; linked genes get extra counts
            ab = ab.tocoo()
            keep = ~planted[ab.col]
            opened = rng.random((len(cells), len(links))) < p_open[code[cells]]
            oi, oj = np.nonzero(opened)
            a_rows = np.concatenate([ab.row[keep], oi])
            a_cols = np.concatenate([ab.col[keep], pidx[oj]])
            a_vals = np.concatenate([ab.data[keep], 1.0 + rng.poisson(0.3, len(oi))]).astype(np.float32)
            ab = sp.csr_matrix((a_vals, (a_rows, a_cols)), shape=(len(cells), n_peaks))
            base = p_rna[code[cells][oi], gidx[oj]] * lib_rna[code[cells][oi]] * size[cells][oi]
            extra = rng.poisson(links["fold"].to_numpy()[oj] * np.maximum(base, 0.5)).astype(np.float32)
            nz = extra > 0
            rb = (rb + sp.csr_matrix((extra[nz], (oi[nz], gidx[oj][nz])), shape=(len(cells), n_genes))).tocsr()
        rb.sum_duplicates()
        ab.sum_duplicates()
        rb.sort_indices()
        ab.sort_indices()
        rna_blocks.append(rb.astype(np.float32))
        atac_blocks.append(ab.astype(np.float32))
    X_rna = sp.vstack(rna_blocks, format="csr")
    del rna_blocks
    X_atac = sp.vstack(atac_blocks, format="csr")
    del atac_blocks

    alphabet = np.array(list("ACGT"))
    bc = set()
    barcodes = []
    while len(barcodes) < n_cells:
        s = "".join(alphabet[rng.integers(0, 4, 16)]) + "-1"
        if s not in bc:
            bc.add(s)
            barcodes.append(s)
    types = np.array([f"type{k}" for k in range(n_types)])
    obs = pd.DataFrame({"cell_type": pd.Categorical(types[code], categories=types)}, index=barcodes)
    rvar = pd.DataFrame({"gene_ids": [f"ENSGSIM{i:08d}" for i in range(n_genes)],
                         "feature_types": "Gene Expression", "chrom": genes["chrom"].to_numpy(),
                         "tss": genes["tss"].to_numpy(), "annotated": genes["annotated"].to_numpy()},
                        index=pd.Index(gene_names))
    avar = pd.DataFrame({"gene_ids": peak_names, "feature_types": "Peaks",
                         "chrom": pd.Categorical(peaks["chrom"].to_numpy()), "start": peaks["start"].to_numpy(),
                         "end": peaks["end"].to_numpy(), "promoter": peaks["promoter"].to_numpy()},
                        index=pd.Index(peak_names))
    r = ad.AnnData(X_rna, obs=obs.copy(), var=rvar)
    a = ad.AnnData(X_atac, obs=obs.copy(), var=avar)
    r.layers["counts"] = X_rna.copy()
    a.layers["counts"] = X_atac.copy()
    m = mudata.MuData({"rna": r, "atac": a})
    m.obs["cell_type"] = obs["cell_type"].values
    m.uns["planted_pairs"] = links.astype({"distance": np.int64}) if len(links) else links
    m.uns["simulation"] = dict(n_cells=n_cells, n_genes=n_genes, n_peaks=n_peaks, genome=genome, n_types=n_types,
                               n_links=int(len(links)), link_window=int(link_window), genes_per_cell=gpc,
                               peaks_per_cell=ppc, seed=seed)
    m.uns["values"] = "counts"
    return m


def write_10x_h5(mdata, path, *, layer: str | None = "counts", overwrite: bool = False,
                 compression: str | None = "gzip"):
    """Write a paired MuData as a Cell Ranger ARC ``filtered_feature_bc_matrix.h5``.

    Features are the RNA genes (``Gene Expression``) then the ATAC peaks (``Peaks``); values are the raw
    counts (``layers[layer]``; ``layer=None``: ``X``; a missing layer raises) as int32, written feature-major (the 10x CSC layout) straight
    from the cells x features CSR matrices. Cell labels are not part of the format (keep them in a table
    and pass it to ``read_multiome(labels=...)``).

    Raises
    ------
    OutputError
        ``path`` exists (without ``overwrite``) or is not writable.
    InputDataError
        The counts are not integers.
    """
    import h5py

    from .._io import atomic_path, check_output_file
    from .._registry import layer_matrix

    check_output_file(path, overwrite=overwrite, option="overwrite=True")
    mats = []
    for key in ("rna", "atac"):
        a = mdata.mod[key]
        X = layer_matrix(a, layer, what=f"the {key} modality")
        X = sp.csr_matrix(X)
        if X.nnz and not np.array_equal(X.data, np.round(X.data)):
            raise InputDataError(f"write_10x_h5: the {key} values are not integer counts; 10x files hold counts")
        mats.append(X)
    n_cells = mats[0].shape[0]
    n_feat = mats[0].shape[1] + mats[1].shape[1]
    nnz = np.diff(mats[0].indptr) + np.diff(mats[1].indptr)
    indptr = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    rna_v, atac_v = mdata.mod["rna"].var, mdata.mod["atac"].var
    genes = np.asarray(mdata.mod["rna"].var_names, dtype=object)
    peaks = np.asarray(mdata.mod["atac"].var_names, dtype=object)
    gene_ids = rna_v["gene_ids"].astype(str).to_numpy() if "gene_ids" in rna_v else genes
    if {"chrom", "tss"} <= set(rna_v.columns):
        g_int = (rna_v["chrom"].astype(str) + ":" + rna_v["tss"].astype(str) + "-" +
                 (rna_v["tss"] + 1).astype(str)).to_numpy()
    else:
        g_int = np.full(len(genes), "NA", dtype=object)
    if {"chrom", "start", "end"} <= set(atac_v.columns):
        p_int = (atac_v["chrom"].astype(str) + ":" + atac_v["start"].astype(str) + "-" + atac_v["end"].astype(str)).to_numpy()
    else:
        p_int = peaks
    kw = {"compression": compression, "compression_opts": 1} if compression == "gzip" else {"compression": compression}
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("matrix")
            g.create_dataset("barcodes", data=np.asarray(mdata.obs_names, dtype="S"))
            g.create_dataset("shape", data=np.array([n_feat, n_cells], dtype=np.int32))
            g.create_dataset("indptr", data=indptr)
            d = g.create_dataset("data", shape=(int(indptr[-1]),), dtype=np.int32, **kw)
            ix = g.create_dataset("indices", shape=(int(indptr[-1]),), dtype=np.int64, **kw)
            step = 1024
            for c0 in range(0, n_cells, step):  # merge RNA then ATAC entries per cell, a block at a time
                c1 = min(n_cells, c0 + step)
                blk = sp.hstack([mats[0][c0:c1], mats[1][c0:c1]], format="csr")
                blk.sort_indices()
                lo, hi = int(indptr[c0]), int(indptr[c1])
                d[lo:hi] = blk.data.astype(np.int32)
                ix[lo:hi] = blk.indices.astype(np.int64)
            fg = g.create_group("features")
            fg.create_dataset("_all_tag_keys", data=np.array([b"genome", b"interval"]))
            fg.create_dataset("id", data=np.concatenate([gene_ids, peaks]).astype("S"))
            fg.create_dataset("name", data=np.concatenate([genes, peaks]).astype("S"))
            fg.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes) + [b"Peaks"] * len(peaks)))
            gname = {"hg38": "GRCh38", "mm10": "mm10"}.get(str(mdata.uns.get("simulation", {}).get("genome", "hg38")), "GRCh38")
            fg.create_dataset("genome", data=np.array([gname.encode()] * (len(genes) + len(peaks))))
            fg.create_dataset("interval", data=np.concatenate([g_int, p_int]).astype("S"))
