"""Preprocessing of paired RNA + ATAC data (scanpy style).

Every function that changes its input takes ``copy``: ``copy=False`` (default) modifies the data
in place and returns ``None``; ``copy=True`` leaves the input untouched and returns a modified
copy. Layers are read with :func:`scdiffx_grn._registry.layer_matrix`: a missing layer raises
(naming the layers there) instead of silently using ``X``; ``layer=None`` reads ``X``.

- :func:`parse_peaks`: peak names -> ``var["chrom", "start", "end"]``
- :func:`qc`: paired cell filtering and feature filtering
- :func:`highly_variable_genes`: HVGs on counts (seurat_v3, with a fallback)
- :func:`filter_peaks`: keep frequently open peaks
- :func:`binarize`, :func:`tfidf`, :func:`lsi`: ATAC transforms and embedding
- :func:`split_cells`: reproducible stratified train / val / test split
- :func:`stratified_subsample`: proportional subsample indices
- :func:`match_case`: human / mouse gene symbol case
- :func:`check_counts`, :func:`check_finite`, :func:`check_labels`, :func:`check_paired`,
  :func:`is_counts` (the registry's one count detector): input checks raising the package's typed errors
"""

from .._registry import is_counts
from .._validate import check_counts, check_finite, check_labels, check_paired
from ._atac import binarize, lsi, tfidf
from ._genes import match_case, normalize_organism
from ._peaks import filter_peaks, parse_peaks
from ._qc import highly_variable_genes, qc
from ._split import split_cells, stratified_subsample

__all__ = [
    "parse_peaks",
    "qc",
    "highly_variable_genes",
    "filter_peaks",
    "binarize",
    "tfidf",
    "lsi",
    "split_cells",
    "stratified_subsample",
    "match_case",
    "normalize_organism",
    "check_counts",
    "check_finite",
    "check_labels",
    "check_paired",
    "is_counts",
]
