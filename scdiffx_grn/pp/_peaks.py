"""Peak coordinates and peak filtering."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .._errors import InputDataError, _fmt_items
from .._settings import logger
from ._utils import get_matrix, nnz_per_col, open_modality, update

__all__ = ["parse_peaks", "filter_peaks"]

# chrom, separator (: - _), start, separator (- _), end; chrom is matched lazily so that
# scaffold names with '_' (chrUn_KI270742v1_100_200) resolve by backtracking
_PEAK_RE = re.compile(r"^(?P<chrom>[^\s:]+?)[:\-_](?P<start>\d+)[\-_](?P<end>\d+)$")
_BARE = re.compile(r"^(\d+|X|Y|M|MT)$", re.IGNORECASE)


def _norm_chrom(c: str) -> str:
    if _BARE.match(c):
        c = c.upper()
        return "chrM" if c in ("M", "MT") else f"chr{c}"
    if c.lower() == "chrmt":
        return "chrM"
    return c


def parse_peaks(data, *, copy: bool = False):
    """Parse peak names into ``var["chrom"]``, ``var["start"]``, ``var["end"]``.

    Accepted forms: ``chr1-100-200``, ``chr1:100-200``, ``chr1_100_200``, ``1-100-200``
    (bare chromosome numbers and X/Y/M/MT get a ``chr`` prefix; MT becomes chrM), and
    scaffolds such as ``GL000194.1-100-200`` or ``chrUn_KI270742v1-100-200``.

    Parameters
    ----------
    data
        AnnData of peaks, or a MuData (its ``"atac"`` modality is used).
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.

    Raises
    ------
    InputDataError
        Naming unparseable peak names (and how many), or peaks with start > end.
    """
    data, adata = open_modality(data, "atac", copy)
    names = pd.Series(adata.var_names.astype(str), index=adata.var_names)
    parts = names.str.extract(_PEAK_RE)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        raise InputDataError(
            f"{int(bad.sum())} of {len(names)} peak names cannot be parsed as chrom-start-end, e.g. "
            f"{_fmt_items(names[bad], 5)}; expected forms like 'chr1-100-200', 'chr1:100-200' or 'chr1_100_200'"
        )
    start = parts["start"].astype(np.int64).to_numpy()
    end = parts["end"].astype(np.int64).to_numpy()
    rev = start > end
    if rev.any():
        raise InputDataError(f"{int(rev.sum())} peaks have start > end, e.g. {_fmt_items(names[rev], 5)}")
    chrom = [_norm_chrom(c) for c in parts["chrom"].to_numpy()]
    adata.var["chrom"] = pd.Categorical(chrom)
    adata.var["start"] = start
    adata.var["end"] = end
    return data if copy else None


def filter_peaks(data, *, min_frac: float = 0.01, top_n: int | None = None, layer: str | None = "counts",
                 cells=None, copy: bool = False):
    """Keep peaks accessible in enough cells.

    The fraction of cells with a non-zero value is stored in ``var["frac_cells"]``.

    Parameters
    ----------
    data
        AnnData of peaks, or a MuData (its ``"atac"`` modality is filtered).
    min_frac
        Keep peaks open in at least this fraction of cells.
    top_n
        Then keep only the ``top_n`` most frequently open peaks (original order is kept;
        ties are broken by position).
    layer
        Layer to count from (``None``: ``X``); a missing layer raises
        :class:`~scdiffx_grn.InputDataError` naming the layers there.
    cells
        Count open fractions on these cells only (boolean mask over the cells, e.g.
        ``mdata.obs["split"] == "train"``): select peaks on training cells so that held-out cells
        do not shape the model's features. Default: all cells.
    copy
        ``True``: return a filtered copy, the input untouched; ``False``: filter in place, return ``None``.

    Returns
    -------
    None or AnnData / MuData
        The copy when ``copy=True``.

    Raises
    ------
    InputDataError
        When no peak passes.
    """
    from .._validate import check_count, check_fraction

    min_frac = check_fraction("min_frac", min_frac)
    if top_n is not None:
        top_n = check_count("top_n", top_n, 1)
    data, adata = open_modality(data, "atac", copy)
    X = get_matrix(adata, layer, what="the ATAC data")
    if cells is not None:
        mask = np.asarray(cells, dtype=bool)
        if mask.shape != (adata.n_obs,):
            raise InputDataError(f"cells must be a boolean mask over the {adata.n_obs} cells, got shape {mask.shape}")
        if not mask.any():
            raise InputDataError("cells selects no cell: nothing to count peak frequencies on")
        X = X[np.flatnonzero(mask)]
    frac = nnz_per_col(X) / max(X.shape[0], 1)
    keep = frac >= float(min_frac)
    if top_n is not None:
        idx = np.flatnonzero(keep)
        if len(idx) > int(top_n):
            order = idx[np.argsort(-frac[idx], kind="stable")][: int(top_n)]
            keep = np.zeros_like(keep)
            keep[order] = True
    if not keep.any():
        raise InputDataError(
            f"no peak is open in >= {min_frac:.3g} of {adata.n_obs} cells (max fraction {frac.max(initial=0):.3g})"
        )
    adata.var["frac_cells"] = frac
    logger.info("filter_peaks: keeping %d of %d peaks", int(keep.sum()), adata.n_vars)
    if not keep.all():
        adata._inplace_subset_var(keep)
        update(data)
    return data if copy else None
