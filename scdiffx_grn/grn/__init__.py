"""GRN extraction: genomic prior, model-based peak -> gene scores, TF layer, export, plots.

Public entry points (also re-exported by ``tl`` / ``get`` / ``pl``):

- ``tl.peak_gene_candidates`` / :func:`peak_gene_candidates`: peaks within a window of TSSs
- ``tl.extract_grn`` / :func:`extract_grn`: peak -> gene networks per cell type from the model
  (attention x saliency, integrated gradients or in-silico peak knockout)
- ``tl.tf_gene_network`` / :func:`tf_gene_network`: TF -> gene edges via TF -> peak links
- :func:`read_motifs`, :func:`peak_sequences`, :func:`scan_motifs`: TF -> peak links from motif scanning of a
  genome FASTA
- ``get.grn_df``, ``get.to_networkx``; :func:`write_grn` / :func:`read_grn`
- ``pl.grn_network``, ``pl.grn_specificity_heatmap``; :func:`type_specificity` (per-type scores
  relative to the across-type mean; per-type edge selection)

Validation lives in :mod:`scdiffx_grn.eval.grn`.
"""

from ._export import as_edges, grn_df, read_grn, to_networkx, top_edges, write_grn
from ._extract import METHODS, extract_grn
from ._genomic import parse_peak_names, peak_gene_candidates, peaks_table, read_tss
from ._metacells import metacell_profiles, metacells
from ._motifs import Motif, peak_sequences, read_motifs, scan_motifs
from ._plots import grn_network, grn_specificity_heatmap
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
    tf_gene_network,
    tf_peak_coaccessibility,
    tf_peak_from_base_grn,
    tf_peak_links,
)

__all__ = [
    "METHODS",
    "Motif",
    "as_edges",
    "attention_matrix",
    "attention_scores",
    "close_peaks_effect",
    "extract_grn",
    "grn_df",
    "grn_network",
    "grn_specificity_heatmap",
    "ig_scores",
    "knockout_scores",
    "metacell_profiles",
    "metacells",
    "overlap_intervals",
    "parse_peak_names",
    "peak_gene_candidates",
    "peak_sequences",
    "peaks_table",
    "read_grn",
    "read_motifs",
    "read_tss",
    "saliency_matrices",
    "scan_motifs",
    "tf_gene_network",
    "tf_peak_coaccessibility",
    "tf_peak_from_base_grn",
    "tf_peak_links",
    "to_networkx",
    "top_edges",
    "type_specificity",
    "write_grn",
]
