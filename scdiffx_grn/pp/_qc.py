"""Cell and feature quality control, highly variable genes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError
from .._registry import labels, log_normalize
from .._settings import logger
from .._store import store
from .._validate import check_counts
from ._utils import get_matrix, nnz_per_col, nnz_per_row, open_modality, sum_rows, update

__all__ = ["qc", "highly_variable_genes"]

_HVG_FLAVORS = ("seurat_v3", "seurat", "cell_ranger")


def qc(mdata, *, min_genes: int = 10, min_peaks: int = 10, min_cells_gene: int = 3, min_cells_peak: int = 3,
       max_genes: int | None = None, max_peaks: int | None = None, layer: str | None = "counts",
       copy: bool = False):
    """Filter cells and features of a paired MuData, keeping the two modalities paired.

    A cell is kept only when it passes the thresholds of both modalities; features are then
    filtered on the kept cells. The defaults are mild, to suit small gene panels. QC metrics
    are written to ``obs`` (``n_genes``, ``n_peaks``, ``total_counts_rna``,
    ``total_counts_atac``, in ``mdata.obs`` and each modality) and ``var["n_cells"]``.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac``.
    min_genes, max_genes
        Bounds on the number of detected genes per cell.
    min_peaks, max_peaks
        Bounds on the number of open peaks per cell.
    min_cells_gene
        Keep genes detected in at least this many kept cells.
    min_cells_peak
        Keep peaks open in at least this many kept cells.
    layer
        Layer holding counts in both modalities (``None``: ``X``); a missing layer raises
        :class:`~scdiffx_grn.InputDataError` naming the layers there.
    copy
        ``True``: return a filtered copy, the input untouched; ``False``: filter in place, return ``None``.

    Returns
    -------
    None or MuData
        The copy when ``copy=True``.

    Raises
    ------
    InputDataError
        When ``mdata`` is not paired or no cell / feature survives.
    """
    from .._validate import check_paired

    check_paired(mdata)
    if copy:
        mdata = mdata.copy()
    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    Xr = get_matrix(rna, layer, what="modality 'rna'")
    Xa = get_matrix(atac, layer, what="modality 'atac'")
    metrics = pd.DataFrame({
        "n_genes": nnz_per_row(Xr), "n_peaks": nnz_per_row(Xa),
        "total_counts_rna": sum_rows(Xr), "total_counts_atac": sum_rows(Xa),
    }, index=rna.obs_names)
    keep = (metrics["n_genes"] >= min_genes) & (metrics["n_peaks"] >= min_peaks)
    if max_genes is not None:
        keep &= metrics["n_genes"] <= max_genes
    if max_peaks is not None:
        keep &= metrics["n_peaks"] <= max_peaks
    keep = keep.to_numpy()
    if not keep.any():
        raise InputDataError(
            f"qc: no cell has >= {min_genes} genes and >= {min_peaks} peaks (median {metrics['n_genes'].median():g} "
            f"genes, {metrics['n_peaks'].median():g} peaks)"
        )
    for c in metrics.columns:
        for a in (rna, atac):
            a.obs[c] = metrics[c].to_numpy()
        mdata.obs[c] = metrics[c].to_numpy()
    n0 = rna.n_obs
    if not keep.all():
        for a in (rna, atac):
            a._inplace_subset_obs(keep)
    feats = {}
    for name, a, mn in (("genes", rna, min_cells_gene), ("peaks", atac, min_cells_peak)):
        nc = nnz_per_col(get_matrix(a, layer))
        a.var["n_cells"] = nc
        fk = nc >= mn
        if not fk.any():
            raise InputDataError(f"qc: no {name[:-1]} is detected in >= {mn} of the {a.n_obs} kept cells")
        feats[name] = (int(fk.sum()), a.n_vars)
        if not fk.all():
            a._inplace_subset_var(fk)
    update(mdata)
    logger.info("qc: kept %d of %d cells, %d of %d genes, %d of %d peaks", int(keep.sum()), n0,
                *feats["genes"], *feats["peaks"])
    return mdata if copy else None


def _seurat_v3_poly(X, n_top: int) -> pd.DataFrame:
    """Seurat v3 (VST) gene variability with a quadratic fit instead of loess.

    Fits log10(variance) on log10(mean) with a degree-2 polynomial, standardises the counts
    with the fitted variance, clips at sqrt(n_cells) and ranks genes by the variance of the
    standardised values. Used when scikit-misc (loess) is not installed.
    """
    import scipy.sparse as sp

    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, np.float64))
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    var = var * n / max(n - 1, 1)
    ok = (var > 0) & (mean > 0)
    reg_std = np.zeros_like(mean)
    if ok.sum() >= 3:
        coef = np.polyfit(np.log10(mean[ok]), np.log10(var[ok]), deg=2)
        reg_std[ok] = np.sqrt(10 ** np.polyval(coef, np.log10(mean[ok])))
    clip = np.sqrt(n)
    norm_var = np.zeros_like(mean)
    Xc = X.tocsc()
    for j in np.flatnonzero(ok):
        col = np.zeros(n)
        lo, hi = Xc.indptr[j], Xc.indptr[j + 1]
        col[Xc.indices[lo:hi]] = Xc.data[lo:hi]
        z = np.minimum((col - mean[j]) / reg_std[j], clip)
        norm_var[j] = z.var(ddof=1)
    order = np.argsort(-norm_var, kind="stable")
    rank = np.empty(len(order), dtype=float)
    rank[order] = np.arange(len(order))
    hv = np.zeros(len(order), bool)
    hv[order[:n_top]] = True
    return pd.DataFrame({"highly_variable": hv, "means": mean, "variances": var,
                         "variances_norm": norm_var, "highly_variable_rank": np.where(hv, rank, np.nan)})


def highly_variable_genes(data, n_top_genes: int = 2000, *, flavor: str = "seurat_v3", layer: str | None = "counts",
                          batch_key: str | None = None, subset: bool = False, copy: bool = False):
    """Mark highly variable genes (``var["highly_variable"]``), optionally subsetting.

    ``flavor="seurat_v3"`` works on raw counts and needs scikit-misc (loess); when that is
    not installed the same variance-stabilising ranking is computed with a quadratic
    mean-variance fit instead of loess (``"seurat_v3_poly"``), and logged. The flavour
    used is in ``uns["hvg"]["flavor"]``.

    Parameters
    ----------
    data
        AnnData of genes, or a MuData (its ``"rna"`` modality is used).
    n_top_genes
        Number of genes to mark; all genes when the data have fewer.
    flavor
        ``"seurat_v3"`` (counts), ``"seurat"`` or ``"cell_ranger"`` (on log-normalised counts).
        Only ``"seurat_v3"`` (and its fallback) needs no scanpy normalisation.
    layer
        Layer with raw counts (``None``: ``X``); a missing layer raises
        :class:`~scdiffx_grn.InputDataError` naming the layers there.
    batch_key
        Optional obs column: select genes variable within batches.
    subset
        Keep only the highly variable genes.
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.

    Raises
    ------
    NotCountsError
        When the counts matrix is not raw counts.
    OptionError
        For an unknown ``flavor``.
    """
    import scanpy as sc

    if flavor not in _HVG_FLAVORS:
        raise OptionError(f"flavor must be one of {_HVG_FLAVORS}, got {flavor!r}")
    data, adata = open_modality(data, "rna", copy)
    X = get_matrix(adata, layer, what="the RNA data")
    check_counts(X, "highly_variable_genes input", fix="pass the raw count matrix (layer='counts'): every flavour "
                 "normalises it itself")
    n_top = int(min(n_top_genes, adata.n_vars))
    obs = None
    if batch_key:  # the registry's label lookup (MuData obs, "rna:<key>", the modality's obs)
        obs = pd.DataFrame({batch_key: labels(data, batch_key, adata=adata).to_numpy()}, index=adata.obs_names)
    tmp = sc.AnnData(X.copy(), obs=obs)
    tmp.var_names = adata.var_names
    used = flavor
    res = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flavor == "seurat_v3":
            try:
                res = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat_v3", batch_key=batch_key,
                                                  inplace=False)
            except ImportError:
                used = "seurat_v3_poly"
                logger.info("highly_variable_genes: scikit-misc not installed; seurat_v3 with a quadratic fit")
            except Exception as e:  # loess can fail on tiny or degenerate data
                used = "seurat_v3_poly"
                logger.info("highly_variable_genes: seurat_v3 failed (%s); using a quadratic fit", e)
            if res is None:
                res = _seurat_v3_poly(X, n_top)
        if res is None:
            tmp.X = log_normalize(tmp.X)  # the package's one log1p-CP10k
            tmp.uns["log1p"] = {"base": None}
            res = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor=used, batch_key=batch_key, inplace=False)
    res.index = adata.var_names
    for c in res.columns:
        adata.var[c] = res[c].to_numpy()
    if n_top >= adata.n_vars:
        adata.var["highly_variable"] = True
    store(adata, "hvg", {"flavor": used, "n_top_genes": n_top},
          {"n_top_genes": n_top_genes, "flavor": flavor, "layer": layer, "batch_key": batch_key, "subset": subset})
    logger.info("highly_variable_genes: %d genes marked (flavor %s)", int(adata.var["highly_variable"].sum()), used)
    if subset:
        adata._inplace_subset_var(adata.var["highly_variable"].to_numpy().astype(bool))
        update(data)
    return data if copy else None
