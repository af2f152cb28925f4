"""Plots (matplotlib). Every function returns the Figure and takes ``save=`` to write it."""

from .._lazy import lazy_namespace

_MAP = {
    "grn_network": "scdiffx_grn.grn",
    "grn_specificity_heatmap": "scdiffx_grn.grn",
    "volcano": "scdiffx_grn.perturb",
    "screen_heatmap": "scdiffx_grn.perturb",
    "regulator_dotplot": "scdiffx_grn.biomarkers",
    "enrichment_barplot": "scdiffx_grn.biomarkers",
    "umap_real_vs_generated": "scdiffx_grn.eval",
    "metric_bars": "scdiffx_grn.eval",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_namespace(__name__, _MAP)
