"""GRN extraction: genomic prior, model-based peak -> gene scores, TF layer, export, plots.

Public entry points (also re-exported by ``tl`` / ``get`` / ``pl``):

- ``tl.peak_gene_candidates`` / :func:`peak_gene_candidates`: peaks within a window of TSSs
- ``tl.extract_grn`` / :func:`extract_grn`: peak -> gene networks per cell type from the model, the
  one runner of the scoring methods (:class:`Method` kernels in :data:`METHODS`: attention x
  saliency, integrated gradients, in-silico peak knockout, and ``consensus``: an evidence table
  with a combination chosen by held-out prediction; :func:`show_methods` lists them)
- ``tl.tf_gene_network`` / :func:`tf_gene_network`: TF -> gene edges via TF -> peak links
- :func:`read_motifs`, :func:`peak_sequences`, :func:`scan_motifs`: TF -> peak links from motif scanning of a
  genome FASTA
- ``get.grn_df``, ``get.to_networkx``, :func:`network_table` (the table of a result from a MuData
  key or a DataFrame); :func:`write_grn` / :func:`read_grn`
- ``pl.grn_network``, ``pl.grn_specificity_heatmap``; :func:`type_specificity` (per-type scores
  relative to the across-type mean; per-type edge selection)

Storage (scanpy's contract, :mod:`scdiffx_grn._store`): ``copy=False`` writes into the data and
returns ``None``, ``copy=True`` returns a modified copy; results are ``uns[key_added] =
{"params": {...}, "network": df}`` (``"candidates"`` for :func:`peak_gene_candidates`); the column
holding cell groups is named after ``groupby`` (``group`` with value ``"all"`` for ``groupby=None``).

Validation lives in :mod:`scdiffx_grn.eval.grn` (``eval.grn_predictive``: held-out prediction of any
network against degree-preserving rewirings; its engine is :mod:`scdiffx_grn.grn._predictive`).
"""

from ._export import as_edges, grn_df, read_grn, to_networkx, top_edges, write_grn
from ._extract import extract_grn
from ._genomic import parse_peak_names, peak_gene_candidates, peaks_table, read_tss
from ._metacells import metacell_profiles, metacells
from ._methods import METHODS, Method, Param, methods, register_method, show_methods
from ._motifs import Motif, peak_sequences, read_motifs, scan_motifs
from ._network import group_column, network_table
from ._plots import grn_network, grn_specificity_heatmap
from ._select import select_features
from ._scores import (
    attention_matrix,
    attention_scores,
    close_peaks_effect,
    ig_scores,
    knockout_scores,
    saliency_matrices,
)
from ._specific import type_specificity
from ._tf import (
    overlap_intervals,
    resolve_tfs,
    tf_gene_network,
    tf_peak_coaccessibility,
    tf_peak_from_base_grn,
    tf_peak_links,
)

__all__ = [
    "select_features",
    "METHODS",
    "Method",
    "Motif",
    "Param",
    "as_edges",
    "attention_matrix",
    "attention_scores",
    "close_peaks_effect",
    "extract_grn",
    "grn_df",
    "grn_network",
    "grn_specificity_heatmap",
    "group_column",
    "ig_scores",
    "knockout_scores",
    "metacell_profiles",
    "metacells",
    "methods",
    "network_table",
    "overlap_intervals",
    "parse_peak_names",
    "peak_gene_candidates",
    "peak_sequences",
    "peaks_table",
    "read_grn",
    "read_motifs",
    "read_tss",
    "register_method",
    "resolve_tfs",
    "saliency_matrices",
    "scan_motifs",
    "show_methods",
    "tf_gene_network",
    "tf_peak_coaccessibility",
    "tf_peak_from_base_grn",
    "tf_peak_links",
    "to_networkx",
    "top_edges",
    "type_specificity",
    "write_grn",
]
