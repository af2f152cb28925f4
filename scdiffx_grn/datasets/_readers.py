"""Readers of paired RNA + ATAC data into a :class:`mudata.MuData`.

The result always has modalities ``"rna"`` and ``"atac"`` holding the same cells in the
same order, raw counts in ``layers["counts"]`` and the cell labels in ``mdata.obs`` (and
in each modality's obs).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import BarcodeMismatchError, InputDataError, OptionError, _fmt_items
from .._settings import logger
from .._registry import is_counts
from .._validate import check_counts, check_finite, check_labels

__all__ = ["read_multiome", "make_mudata"]

_RNA_ALIASES = ("rna", "gex", "RNA", "GEX", "Gene Expression", "expression")
_ATAC_ALIASES = ("atac", "peaks", "ATAC", "Peaks", "chromatin", "accessibility")


def _mudata():
    import mudata

    mudata.set_options(pull_on_update=False)
    return mudata


def _as_float_csr(X) -> sp.csr_matrix:
    """Raw counts as a float32 CSR matrix (copy)."""
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        out = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    out.sum_duplicates()
    out.sort_indices()
    return out


# a reader can load other values (tools that need counts then refuse them, saying so)
_READER_COUNTS_FIX = "pass the raw count matrix (e.g. layers['counts']) or load with require_counts=False"


def _find_counts(adata, modality: str, source: str, require_counts: bool) -> str:
    """Put raw counts into ``adata.layers['counts']``; return 'counts' or 'normalised'."""
    if "counts" in adata.layers:
        if require_counts:
            check_counts(adata.layers["counts"], f"{source}: {modality} layers['counts']",
                         obs_names=adata.obs_names, var_names=adata.var_names, fix=_READER_COUNTS_FIX)
        elif not is_counts(adata.layers["counts"]):
            return "normalised"
        adata.layers["counts"] = _as_float_csr(adata.layers["counts"])
        return "counts"
    if is_counts(adata.X):
        adata.layers["counts"] = _as_float_csr(adata.X)
        return "counts"
    if require_counts:
        check_counts(adata.X, f"{source}: {modality} X (no layers['counts'])",
                     obs_names=adata.obs_names, var_names=adata.var_names, fix=_READER_COUNTS_FIX)
    check_finite(adata.X, f"{source}: {modality} X", obs_names=adata.obs_names, var_names=adata.var_names)
    return "normalised"


def _align(rna, atac, join: str, source: str):
    """Return (rna, atac) holding the same cells in the same order."""
    for name, a in (("RNA", rna), ("ATAC", atac)):
        if not a.obs_names.is_unique:
            dup = a.obs_names[a.obs_names.duplicated()].unique()
            raise InputDataError(f"{source}: {len(dup)} duplicated {name} barcodes, e.g. {_fmt_items(dup, 5)}")
    r, a = rna.obs_names, atac.obs_names
    if len(r) == len(a) and (r == a).all():
        return rna, atac
    only_r = r.difference(a, sort=False)
    only_a = a.difference(r, sort=False)
    if len(only_r) == 0 and len(only_a) == 0:
        logger.info("%s: ATAC cells reordered to the RNA barcode order", source)
        return rna, atac[r].copy()
    common = r[r.isin(a)]
    if join == "inner":
        if len(common) == 0:
            raise BarcodeMismatchError(
                f"{source}: RNA ({len(r)} cells) and ATAC ({len(a)} cells) share no barcode; "
                f"e.g. RNA {_fmt_items(r[:3])}, ATAC {_fmt_items(a[:3])}"
            )
        logger.warning(
            "%s: keeping the %d barcodes shared by RNA (%d cells) and ATAC (%d cells); dropped %d "
            "RNA-only and %d ATAC-only cells", source, len(common), len(r), len(a), len(only_r), len(only_a)
        )
        return rna[common].copy(), atac[common].copy()
    raise BarcodeMismatchError(
        f"{source}: RNA has {len(r)} cells and ATAC {len(a)}, {len(common)} shared; "
        f"{len(only_r)} only in RNA (e.g. {_fmt_items(only_r, 3)}), {len(only_a)} only in ATAC "
        f"(e.g. {_fmt_items(only_a, 3)}). Pass join='inner' to keep the shared cells, or fix the barcodes."
    )


def _labels_frame(labels, index: pd.Index, source: str) -> pd.DataFrame | None:
    if labels is None or isinstance(labels, (str, list, tuple)):
        return None
    if isinstance(labels, os.PathLike):
        labels = pd.read_csv(labels, index_col=0)
    if isinstance(labels, pd.Series):
        labels = labels.to_frame()
    if not isinstance(labels, pd.DataFrame):
        raise InputDataError(f"{source}: labels must be column names or a DataFrame indexed by barcode")
    missing = index.difference(labels.index)
    if len(missing):
        raise BarcodeMismatchError(
            f"{source}: {len(missing)} of {len(index)} cells have no row in the labels table, "
            f"e.g. {_fmt_items(missing, 3)}"
        )
    return labels.loc[index]


def make_mudata(rna, atac, *, labels=None, join: str = "exact", require_counts: bool = True,
                source: str = "input"):
    """Pair an RNA and an ATAC AnnData into a MuData following the package conventions.

    Parameters
    ----------
    rna, atac
        AnnData objects (cells x genes, cells x peaks). They are copied.
    labels
        ``None`` (keep every obs column), a list of obs column names that must exist, or a
        DataFrame indexed by barcode whose columns are added as labels.
    join
        ``"exact"``: the two must hold the same barcodes (order may differ);
        ``"inner"``: keep the shared barcodes, with a logged warning.
    require_counts
        Raise :class:`~scdiffx_grn.NotCountsError` when a modality holds no raw counts.
        With ``False`` such data load as they are and ``mdata.uns["values"]`` says
        ``"normalised"``.
    source
        Name used in messages (a file name).

    Returns
    -------
    mudata.MuData
        Modalities ``rna`` and ``atac``; ``layers["counts"]`` (float32 CSR) where counts
        exist; labels in ``mdata.obs`` and each modality's obs; ``uns["values"]``
        (``"counts"`` or ``"normalised"``) and ``uns["values_by_modality"]``.

    Raises
    ------
    BarcodeMismatchError
        Barcodes differ and ``join="exact"``, or nothing is shared with ``join="inner"``.
    NotCountsError
        ``require_counts`` and a modality's values are not non-negative integers.
    MissingLabelError
        A label column named in ``labels`` is missing or has NaN.
    """
    if join not in ("exact", "inner"):
        raise OptionError(f"join must be 'exact' or 'inner', not {join!r}")
    mudata = _mudata()
    rna = rna.copy()
    atac = atac.copy()
    rna.obs_names = rna.obs_names.astype(str)
    atac.obs_names = atac.obs_names.astype(str)
    rna.var_names = rna.var_names.astype(str)
    atac.var_names = atac.var_names.astype(str)
    if not rna.var_names.is_unique:
        rna.var_names_make_unique()
        logger.warning("%s: RNA gene names were not unique; made unique with suffixes", source)
    if not atac.var_names.is_unique:
        atac.var_names_make_unique()
        logger.warning("%s: ATAC peak names were not unique; made unique with suffixes", source)
    rna, atac = _align(rna, atac, join, source)
    values = {
        "rna": _find_counts(rna, "rna", source, require_counts),
        "atac": _find_counts(atac, "atac", source, require_counts),
    }
    # cell labels: RNA obs, plus ATAC-only columns, plus an external table
    obs = rna.obs.copy()
    for c in atac.obs.columns:
        if c not in obs.columns:
            obs[c] = atac.obs[c].to_numpy()
    extra = _labels_frame(labels, rna.obs_names, source)
    if extra is not None:
        for c in extra.columns:
            obs[c] = extra[c].to_numpy()
    rna.obs = obs.copy()
    atac.obs = obs.copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not unique.*")
        mdata = mudata.MuData({"rna": rna, "atac": atac})
    for c in obs.columns:
        mdata.obs[c] = obs[c].to_numpy() if not isinstance(obs[c].dtype, pd.CategoricalDtype) else obs[c].values
    overall = "counts" if all(v == "counts" for v in values.values()) else "normalised"
    mdata.uns["values"] = overall
    mdata.uns["values_by_modality"] = dict(values)
    if overall != "counts":
        logger.warning("%s: values are not raw counts (%s); loaded as they are", source, values)
    if isinstance(labels, str):
        labels = [labels]
    if isinstance(labels, (list, tuple)):
        check_labels(mdata, labels)
    return mdata


def _read_10x(path: Path, rna_type: str = "Gene Expression", atac_type: str = "Peaks"):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.is_dir():
            adata = sc.read_10x_mtx(path, var_names="gene_symbols", gex_only=False)
        else:
            adata = _read_hdf5(path, lambda q: sc.read_10x_h5(q, gex_only=False),
                               "a 10x .h5 (filtered_feature_bc_matrix.h5)")
    if "feature_types" not in adata.var.columns:
        raise InputDataError(f"{path}: 10x input has no feature types; cannot split RNA and ATAC")
    ft = adata.var["feature_types"].astype(str)
    if not (ft == rna_type).any() or not (ft == atac_type).any():
        raise InputDataError(
            f"{path}: expected feature types {rna_type!r} and {atac_type!r}, found {_fmt_items(ft.unique())}"
        )
    rna = adata[:, (ft == rna_type).to_numpy()].copy()
    atac = adata[:, (ft == atac_type).to_numpy()].copy()
    return rna, atac


def _pick_mod(mods: Mapping, wanted: str | None, aliases: Sequence[str], path) -> str:
    if wanted is not None:
        if wanted not in mods:
            raise InputDataError(f"{path}: no modality {wanted!r}; it has {_fmt_items(mods)}")
        return wanted
    for a in aliases:
        if a in mods:
            return a
    raise InputDataError(f"{path}: cannot tell which modality is {aliases[0]!r}; it has {_fmt_items(mods)}"
                         f" (pass mod_keys=(rna_name, atac_name))")


def _read_hdf5(path: Path, read: Callable, what: str):
    """``read(path)`` for an HDF5-based format (``what``: "an .h5ad", "an .h5mu", "a 10x .h5"); a file that is
    not HDF5, or HDF5 without that format's layout, raises a one-line :class:`InputDataError`
    naming the file and what was expected (never the reader's traceback)."""
    import h5py

    from .._errors import ScdxError

    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
        kind = "an empty file" if not head else ("a zip archive" if head[:2] == b"PK" else "not an HDF5 file")
        raise InputDataError(f"{str(path)!r} is {kind}: expected {what} file (HDF5); check the path, or "
                             "re-write the file (a copy interrupted part-way?)")
    try:
        return read(path)
    except ScdxError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputDataError(f"{str(path)!r} is an HDF5 file but not {what} file ({type(e).__name__}: "
                             f"{reason}); check that it was written as one") from None


def _read_anndata(p) -> "anndata.AnnData":  # noqa: F821
    import anndata as ad

    if isinstance(p, ad.AnnData):
        return p
    p = Path(p)
    if not p.exists():
        from .._errors import DataFileMissingError

        raise DataFileMissingError(f"file {str(p)!r} does not exist")
    with warnings.catch_warnings():
        # files written by old anndata versions read fine; their format warning is noise
        warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
        return _read_hdf5(p, ad.read_h5ad, "an .h5ad")


def read_multiome(path_or_paths=None, *, rna=None, atac=None, labels=None, join: str = "exact",
                  require_counts: bool = True, mod_keys: tuple[str, str] | None = None):
    """Read paired RNA + ATAC data into a MuData.

    Parameters
    ----------
    path_or_paths
        One of: an ``.h5mu`` file; a pair ``(rna_path, atac_path)`` of ``.h5ad`` files (or
        AnnData objects) or a dict with keys ``"rna"`` and ``"atac"``; a 10x
        ``filtered_feature_bc_matrix.h5`` holding ``Gene Expression`` and ``Peaks`` features;
        or a 10x matrix directory (``matrix.mtx.gz``, ``features.tsv.gz``, ``barcodes.tsv.gz``).
        Leave ``None`` to give the two files as ``rna=`` and ``atac=``.
    rna, atac
        Paths of ``.h5ad`` files (or AnnData objects), used when ``path_or_paths`` is ``None``.
    labels
        ``None`` (keep all obs columns), list of obs columns that must exist (checked), or a
        DataFrame (or a ``pathlib.Path`` to a CSV) indexed by barcode with label columns to add.
    join
        ``"exact"`` (barcode sets must match; order is aligned to RNA) or ``"inner"``.
    require_counts
        Require raw counts (taken from ``layers["counts"]`` when present, else ``X``).
    mod_keys
        Names of the RNA and ATAC modalities inside an ``.h5mu`` (default: detected among
        ``rna/gex`` and ``atac/peaks``).

    Returns
    -------
    mudata.MuData
        See :func:`make_mudata`.

    Raises
    ------
    DataFileMissingError
        A file does not exist.
    BarcodeMismatchError
        RNA and ATAC barcodes differ (message gives counts and examples on each side).
    NotCountsError
        Counts are required but missing.
    InputDataError
        The input cannot be understood.
    """
    if path_or_paths is None:
        if rna is None or atac is None:
            raise InputDataError("give path_or_paths, or both rna= and atac=")
        path_or_paths = (rna, atac)
    if isinstance(path_or_paths, Mapping):
        path_or_paths = (path_or_paths["rna"], path_or_paths["atac"])
    if isinstance(path_or_paths, (list, tuple)):
        if len(path_or_paths) != 2:
            raise InputDataError(f"expected (rna, atac), got {len(path_or_paths)} items")
        r, a = (_read_anndata(p) for p in path_or_paths)
        src = " + ".join(Path(p).name if not hasattr(p, "obs") else "AnnData" for p in path_or_paths)
        return make_mudata(r, a, labels=labels, join=join, require_counts=require_counts, source=src)
    path = Path(path_or_paths)
    if not path.exists():
        from .._errors import DataFileMissingError

        raise DataFileMissingError(f"file {str(path)!r} does not exist")
    name = path.name
    if path.is_dir():
        r, a = _read_10x(path)
    elif name.endswith(".h5mu"):
        mudata = _mudata()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not created by muon/mudata.*")
            warnings.filterwarnings("ignore", message=".*without encoding metadata.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            md = _read_hdf5(path, mudata.read_h5mu, "an .h5mu")
        rk = _pick_mod(md.mod, mod_keys[0] if mod_keys else None, _RNA_ALIASES, path)
        ak = _pick_mod(md.mod, mod_keys[1] if mod_keys else None, _ATAC_ALIASES, path)
        r, a = md.mod[rk], md.mod[ak]
        # global obs columns not in the modalities are labels too
        for c in md.obs.columns:
            base = c.split(":", 1)[-1]
            if base not in r.obs.columns and ":" not in c:
                r.obs[c] = md.obs.loc[r.obs_names, c].to_numpy()
    elif name.endswith(".h5"):
        r, a = _read_10x(path)
    elif name.endswith(".h5ad"):
        raise InputDataError(f"{path}: a single .h5ad holds one modality; pass (rna_path, atac_path)")
    else:
        raise InputDataError(f"{path}: unknown input format (expected .h5mu, .h5, a 10x mtx directory "
                             "or a pair of .h5ad files)")
    return make_mudata(r, a, labels=labels, join=join, require_counts=require_counts, source=name)
