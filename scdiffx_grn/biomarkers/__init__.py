"""Biomarkers and regulators ranked against reference GRN databases.

- :func:`regulator_activity` / :func:`regulator_df`: TF activity with decoupler 2.2 (CollecTRI,
  DoRothEA, TRRUST or an extracted network), per cell or per pseudobulk.
- :func:`compare_networks`: agreement of activities from several networks and recovery of
  data-derived cell-type regulators.
- :func:`grnboost2`, :func:`regulons_from_network`, :func:`aucell`: the pySCENIC path (offline:
  no cisTarget databases; our motif / peak evidence replaces ctx pruning).
- :func:`enrichment` / :func:`enrichment_df`: gseapy prerank on local GMT files.
- :func:`rank_biomarkers` / :func:`biomarker_df`: genes, peaks and TFs per cell type.
- :func:`evaluate_regulator_ranking`, :func:`marker_tf_truth`: evaluation against data-derived truth.
- :func:`regulator_dotplot`, :func:`enrichment_barplot`: plots.
"""

from ._activity import compare_networks, regulator_activity, regulator_df
from ._enrich import enrichment, enrichment_df
from ._eval import evaluate_regulator_ranking, marker_tf_truth, split_cells, summarise_evaluation
from ._plot import enrichment_barplot, regulator_dotplot
from ._rank import biomarker_df, rank_biomarkers
from ._refs import gene_sets, reference_network, to_mouse_symbols
from ._scenic import aucell, check_regulons, grnboost2, regulons_from_network

__all__ = [
    "regulator_activity", "regulator_df", "compare_networks",
    "grnboost2", "regulons_from_network", "check_regulons", "aucell",
    "enrichment", "enrichment_df",
    "rank_biomarkers", "biomarker_df",
    "evaluate_regulator_ranking", "marker_tf_truth", "split_cells", "summarise_evaluation",
    "regulator_dotplot", "enrichment_barplot",
    "reference_network", "gene_sets", "to_mouse_symbols",
]
