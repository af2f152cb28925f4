"""Tidy getters for results stored by ``tl`` functions."""

from .._lazy import lazy_namespace

_MAP = {
    "grn_df": "scdiffx_grn.grn",
    "to_networkx": "scdiffx_grn.grn",
    "network_table": "scdiffx_grn.grn",
    "perturbation_df": "scdiffx_grn.perturb",
    "biomarker_df": "scdiffx_grn.biomarkers",
    "regulator_df": "scdiffx_grn.biomarkers",
    "enrichment_df": "scdiffx_grn.biomarkers",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_namespace(__name__, _MAP)
