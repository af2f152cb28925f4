"""Loaders of named paired data sets: the embedded demo data and the shared sets."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from .._errors import InputDataError, _fmt_items
from .._settings import logger
from ._manifest import data_path, manifest
from ._readers import _read_anndata, make_mudata, read_multiome

__all__ = ["mouse_mop", "mouse_mop_links", "bmmc", "load_shared", "SHARED_MULTIOME"]

#: Shared paired data sets loadable by :func:`load_shared` (manifest names)
SHARED_MULTIOME = (
    "mouse_mop_snareseq",
    "bmmc_neurips2021_starter",
    "a549_dex_scicar",
    "pbmc10k_markers_1000cells",
    "pbmc_100cells",
    "h1_snareseq",
)


def check_n_cells(n_cells, n_obs: int | None = None, what: str = "the data") -> int | None:
    """``n_cells`` (a subsample size: ``None`` or an integer >= 1) checked; a size above ``n_obs`` is
    capped, with a warning naming the cap."""
    from .._validate import check_count

    if n_cells is None:
        return None
    n_cells = check_count("n_cells", n_cells, 1)
    if n_obs is not None and n_cells > n_obs:
        logger.warning("n_cells=%s is more than the %s cells of %s: using all of them", f"{n_cells:,}",
                       f"{n_obs:,}", what)
    return n_cells


def _subsample_pair(rna, atac, n_cells: int | None, seed: int, label: str | None):
    n_cells = check_n_cells(n_cells, rna.n_obs)
    if n_cells is None or n_cells >= rna.n_obs:
        return rna, atac
    from ..pp._split import stratified_subsample

    from .._registry import labels as obs_labels

    # stratified by the label when the data has it, else a plain random subsample
    labels = obs_labels(rna, label).to_numpy() if label and label in rna.obs else None
    if labels is None:
        labels = np.zeros(rna.n_obs)
    idx = stratified_subsample(labels, int(n_cells), seed=seed)
    names = rna.obs_names[idx]
    return rna[names].copy(), atac[atac.obs_names.isin(names)].copy()


def _finish(mdata, name: str, m: dict[str, Any]):
    from ..pp import parse_peaks

    parse_peaks(mdata)
    mdata.uns["dataset"] = name
    for k in ("species", "genome"):
        if m.get(k):
            mdata.uns[k] = m[k]
    return mdata


def _pair_files(name: str, rna_file: str, atac_file: str, verify: bool):
    return _read_anndata(data_path(name, rna_file, verify)), _read_anndata(data_path(name, atac_file, verify))


def mouse_mop(n_cells: int | None = None, *, seed: int = 0, verify: bool = True):
    """The embedded default data set: SNARE-seq mouse primary motor cortex (mm10).

    10,309 nuclei with paired RNA (1,677 genes) and ATAC (25,734 peaks) raw counts, labels
    ``cell_type`` (15 types), ``cell_type_fine`` (23) and ``batch`` (12 samples); ATAC var has
    ``chrom``, ``start``, ``end`` and ``linked_gene_GxR`` (the region's linked gene).
    Source: scMoMaT (MIT), see ``datasets.manifest("mouse_mop")``.

    Parameters
    ----------
    n_cells
        Subsample this many cells, stratified by ``cell_type`` (every type keeps at least
        one cell); ``None`` loads all.
    seed
        Seed of the subsample.
    verify
        Check the files' sha256 (cached per process).

    Returns
    -------
    mudata.MuData
        Modalities ``rna`` and ``atac`` with ``layers["counts"]``.
    """
    m = manifest("mouse_mop")
    rna, atac = _pair_files("mouse_mop", "mop_b1_rna.h5ad", "mop_b1_atac.h5ad", verify)
    rna, atac = _subsample_pair(rna, atac, n_cells, seed, "cell_type")
    mdata = make_mudata(rna, atac, labels=["cell_type", "cell_type_fine", "batch"], source="mouse_mop")
    return _finish(mdata, "mouse_mop", m)


def mouse_mop_links(*, verify: bool = True) -> pd.DataFrame:
    """Region -> gene links of the mouse MOp data (scMoMaT's GxR matrix).

    Parameters
    ----------
    verify
        Check the files' sha256.

    Returns
    -------
    pandas.DataFrame
        Columns ``peak`` (ATAC var name), ``gene`` (RNA var name), ``weight`` (matrix value).
    """
    import anndata as ad
    import scipy.sparse as sp

    G = sp.load_npz(data_path("mouse_mop", "GxR_gene_by_region.npz", verify)).tocoo()
    genes = ad.read_h5ad(data_path("mouse_mop", "mop_b1_rna.h5ad", verify), backed="r")
    peaks = ad.read_h5ad(data_path("mouse_mop", "mop_b1_atac.h5ad", verify), backed="r")
    if G.shape != (genes.n_vars, peaks.n_vars):
        raise InputDataError(f"GxR matrix shape {G.shape} does not match genes x peaks "
                             f"({genes.n_vars}, {peaks.n_vars})")
    df = pd.DataFrame({"peak": peaks.var_names[G.col], "gene": genes.var_names[G.row],
                       "weight": G.data.astype(float)})
    genes.file.close()
    peaks.file.close()
    return df.sort_values(["gene", "peak"], ignore_index=True)


def bmmc(n_cells: int | None = None, *, seed: int = 0, verify: bool = True):
    """Human fixture: NeurIPS 2021 BMMC multiome starter subset (hg38).

    500 cells, 600 genes and 600 peaks; raw counts in ``layers["counts"]`` (X is
    normalised in RNA and binary in ATAC, kept as shipped); labels ``cell_type`` (21) and
    ``batch``. Source: openproblems-bio (MIT), see ``datasets.manifest("bmmc")``.

    Parameters
    ----------
    n_cells
        Subsample this many cells, stratified by ``cell_type``.
    seed
        Seed of the subsample.
    verify
        Check the files' sha256.

    Returns
    -------
    mudata.MuData
        Modalities ``rna`` and ``atac`` with ``layers["counts"]``.
    """
    m = manifest("bmmc")
    rna, atac = _pair_files("bmmc", "bmmc_starter_rna.h5ad", "bmmc_starter_atac.h5ad", verify)
    rna, atac = _subsample_pair(rna, atac, n_cells, seed, "cell_type")
    mdata = make_mudata(rna, atac, labels=["cell_type", "batch"], source="bmmc")
    return _finish(mdata, "bmmc", m)


def _strip_suffix(adata, suffix: str):
    names = adata.obs_names.astype(str)
    if names.str.endswith(suffix).all():
        adata.obs_names = names.str[: -len(suffix)]
    return adata


def _load_pair(name, rna_file, atac_file, verify, fix: Callable | None = None):
    rna, atac = _pair_files(name, rna_file, atac_file, verify)
    if fix is not None:
        rna, atac = fix(rna, atac)
    return rna, atac


def _fix_pbmc100(rna, atac):
    rna = _strip_suffix(rna, "_rna")
    atac = _strip_suffix(atac, "_atac")
    for a in (rna, atac):
        if "celltype" in a.obs and "cell_type" not in a.obs:
            a.obs["cell_type"] = a.obs["celltype"].astype(str).astype("category")
    return rna, atac


_SHARED: dict[str, dict[str, Any]] = {
    "mouse_mop_snareseq": dict(files=("mop_b1_rna.h5ad", "mop_b1_atac.h5ad"), labels=["cell_type", "cell_type_fine", "batch"], strat="cell_type"),
    "bmmc_neurips2021_starter": dict(files=("bmmc_starter_rna.h5ad", "bmmc_starter_atac.h5ad"), labels=["cell_type", "batch"], strat="cell_type"),
    "a549_dex_scicar": dict(files=("A549_rna.h5ad", "A549_atac.h5ad"), labels=["dex_time_h"], strat="dex_time_h"),
    "pbmc10k_markers_1000cells": dict(h5mu="test_rna_atac.h5mu", labels=None, strat=None),
    "pbmc_100cells": dict(files=("10xpbmc_rna_subset.h5ad", "10xpbmc_atac_subset.h5ad"), labels=["cell_type"], strat="cell_type", fix=_fix_pbmc100),
    "h1_snareseq": dict(files=("chen_H1_rna.h5ad", "chen_H1_atac.h5ad"), labels=None, strat=None),
}


def load_shared(name: str, *, require_counts: bool = True, n_cells: int | None = None, seed: int = 0,
                join: str = "exact", verify: bool = True):
    """Load a paired data set from the shared data directory by name.

    Names: ``mouse_mop_snareseq``, ``bmmc_neurips2021_starter``, ``a549_dex_scicar``
    (normalised values), ``pbmc10k_markers_1000cells``, ``pbmc_100cells`` (the ``_rna`` /
    ``_atac`` barcode suffixes are stripped; ``celltype`` is copied to ``cell_type``),
    ``h1_snareseq`` (RNA non-integer). See :data:`SHARED_MULTIOME` and each manifest.

    Parameters
    ----------
    name
        Data set name (its manifest name).
    require_counts
        Raise :class:`~scdiffx_grn.NotCountsError` for sets without raw counts; with
        ``False`` they load as shipped and ``mdata.uns["values"] == "normalised"``.
    n_cells
        Subsample this many cells (stratified by the set's main label when it has one).
    seed
        Seed of the subsample.
    join
        Barcode join, see :func:`read_multiome`.
    verify
        Check the files' sha256.

    Returns
    -------
    mudata.MuData
        Modalities ``rna`` and ``atac``; ``uns["dataset"]``, ``uns["species"]``,
        ``uns["genome"]``, ``uns["values"]``.

    Raises
    ------
    DataFileMissingError
        Unknown name, or the shared data directory / a file is missing.
    ChecksumError
        A file differs from its manifest.
    NotCountsError
        ``require_counts`` and the set holds no raw counts.
    """
    from .._errors import DataFileMissingError

    if name not in _SHARED:
        raise DataFileMissingError(f"no shared paired data set named {name!r}; known: {_fmt_items(SHARED_MULTIOME)}")
    spec = _SHARED[name]
    m = manifest(name)
    if "h5mu" in spec:
        path = data_path(name, spec["h5mu"], verify)
        mdata = read_multiome(path, labels=spec["labels"], join=join, require_counts=require_counts)
        n_cells = check_n_cells(n_cells, mdata.n_obs, name)
        if n_cells is not None and n_cells < mdata.n_obs:
            from ..pp._split import stratified_subsample

            strat = np.zeros(mdata.n_obs) if spec["strat"] is None else mdata.obs[spec["strat"]].to_numpy()
            idx = stratified_subsample(strat, n_cells, seed)
            mdata = mdata[mdata.obs_names[idx]].copy()
    else:
        rna, atac = _load_pair(name, *spec["files"], verify, spec.get("fix"))
        rna, atac = _subsample_pair(rna, atac, n_cells, seed, spec["strat"])
        mdata = make_mudata(rna, atac, labels=spec["labels"], join=join, require_counts=require_counts, source=name)
    logger.info("loaded %s: %d cells, %d genes, %d peaks (%s)", name, mdata.n_obs, mdata.mod["rna"].n_vars,
                mdata.mod["atac"].n_vars, mdata.uns["values"])
    return _finish(mdata, name, m)
