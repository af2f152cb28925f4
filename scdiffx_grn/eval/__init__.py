"""Evaluation of generation, translation (and, in ``eval.grn``, of inferred GRNs).

The generation / translation protocol follows CFGen's public evaluation so that figures are
comparable; see :mod:`scdiffx_grn.eval._protocol` for the full description:

- :class:`FeatureSpace`: fitted on real cells only. RNA: 2,000 HVGs (seurat_v3 on counts when
  scikit-misc is installed, else seurat on log data), 1e4 total + log1p, PCA 30 (generated cells
  projected). ATAC: binarise, top variable peaks, TF-IDF with the real cells' IDF, LSI 30
  (first component dropped when it correlates with depth, |r| > 0.5).
- :func:`evaluate_generation`: RBF-MMD (gammas 0.01-100, biased), W1 / W2 (POT exact OT),
  energy distance, pseudobulk Pearson / Spearman, 1-NN accuracy, random-forest AUC, iLISI,
  kNN cell-type classifier, marker correlation; pooled and per cell type over seeds.
- :func:`evaluate_translation`: paired per-cell / per-gene Pearson (RNA), AUROC / AUPRC (ATAC),
  plus distribution metrics.
- :func:`evaluate_model`: model vs baselines (:class:`CellTypeMeanBaseline`,
  :class:`ResampleBaseline`, :class:`KNNTranslator`, :class:`RidgeTranslator`) in one table;
  :func:`summarise`, :func:`comparison_table`, :func:`write_report` turn it into reports. What it
  calls on a translator is the :class:`Translator` protocol (``translate`` and the readouts it declares).
- :func:`source_dependence`: does the translation use its input? (own vs shuffled source
  profiles, classified and compared with the observed target, the denoiser's clean-latent error
  at high noise, a ridge / linear-Gaussian reference and a plain verdict; run it before
  trusting GRNs).
- :func:`translation_scores`: point predictions (posterior mean; per-gene Pearson / per-peak
  AUROC) beside ridge, k-NN, the training mean, the label oracle and the autoencoder ceiling;
  samples by the energy score against samplers that also sample; calibration (PIT coverage).
- :func:`recentre`: the per-feature re-centring applied to every predictor before classifier
  accuracies (``accuracy_recentred``), so output calibration does not decide them.
- :class:`MultiVITranslator` (optional, ``pip install -e ".[peers]"``): scvi-tools' MultiVI
  behind the baselines' translator interface, for ``translation_scores(peers=...)``.
- Plots: :func:`umap_real_vs_generated`, :func:`metric_bars`.

``eval.grn`` (GRN validation) is imported lazily on first access; :func:`grn_predictive` (GRaNPA-style
held-out prediction of any network against degree-preserving rewirings) is re-exported from it.
"""

from __future__ import annotations

import importlib

from ._baselines import (CellTypeMeanBaseline, KNNTranslator, ResampleBaseline, RidgeTranslator,
                         memorisation_distance)
from ._common import Translator, translation_readouts
from ._metrics import (auprc, auroc, colwise_pearson, energy_distance, ilisi, knn_label_transfer,
                       marker_correlation, marker_features, mmd_rbf, one_nn_accuracy, pseudobulk_correlation,
                       rf_auc, rowwise_auprc, rowwise_auroc, rowwise_pearson, wasserstein)
from ._diagnostics import source_dependence
from ._scoring import energy_score, observed_target, pit_coverage, recentre, translation_scores
from ._plots import metric_bars, umap_real_vs_generated
from ._protocol import (GENERATION_METRICS, PER_CELL_TYPE_METRICS, FeatureSpace, evaluate_generation,
                        evaluate_model, evaluate_translation, model_split, summarise_generation)
from ._report import METRIC_DIRECTION, comparison_table, summarise, to_markdown, write_report

__all__ = [
    "FeatureSpace", "evaluate_generation", "evaluate_translation", "evaluate_model", "model_split",
    "summarise_generation",
    "GENERATION_METRICS", "PER_CELL_TYPE_METRICS", "METRIC_DIRECTION",
    "summarise", "comparison_table", "to_markdown", "write_report",
    "CellTypeMeanBaseline", "ResampleBaseline", "KNNTranslator", "RidgeTranslator", "memorisation_distance",
    "Translator", "translation_readouts",
    "mmd_rbf", "wasserstein", "energy_distance", "pseudobulk_correlation", "one_nn_accuracy", "rf_auc",
    "ilisi", "knn_label_transfer", "marker_features", "marker_correlation", "rowwise_pearson",
    "colwise_pearson", "rowwise_auroc", "rowwise_auprc", "auroc", "auprc",
    "umap_real_vs_generated", "metric_bars", "source_dependence", "translation_scores", "energy_score",
    "pit_coverage", "observed_target", "recentre", "MultiVITranslator", "grn", "grn_predictive",
]


def __getattr__(name: str):
    if name == "MultiVITranslator":  # optional peer: its module imports scvi-tools only when used
        from ._peers import MultiVITranslator

        return MultiVITranslator
    if name == "grn":
        return importlib.import_module("scdiffx_grn.eval.grn")
    if name == "grn_predictive":
        return importlib.import_module("scdiffx_grn.eval.grn").grn_predictive
    raise AttributeError(f"module 'scdiffx_grn.eval' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
