"""Analysis tools: ``tl.f(mdata, *, key_added=..., copy=False)`` write results into MuData.

The storage contract (scanpy's, :mod:`scdiffx_grn._store`): ``copy=False`` writes into the data and
returns ``None``; ``copy=True`` leaves it untouched and returns a modified copy. Results go to
``uns[key_added]`` as ``{"params": ..., <table name>: DataFrame, ...}``, a column of cell groups
named after ``groupby``; ``get.*_df`` read them back. ``tl.screen`` writes to disk instead (its
tables follow the same column rule) and returns its summary.
"""

from .._lazy import lazy_namespace

_MAP = {
    # GRN extraction (scdiffx_grn.grn)
    "select_features": "scdiffx_grn.grn",
    "extract_grn": "scdiffx_grn.grn",
    "show_methods": "scdiffx_grn.grn",
    "peak_gene_candidates": "scdiffx_grn.grn",
    "tf_gene_network": "scdiffx_grn.grn",
    # in-silico perturbation (scdiffx_grn.perturb)
    "perturb": "scdiffx_grn.perturb",
    "screen": "scdiffx_grn.perturb",
    # biomarkers and regulators (scdiffx_grn.biomarkers)
    "regulator_activity": "scdiffx_grn.biomarkers",
    "rank_biomarkers": "scdiffx_grn.biomarkers",
    "enrichment": "scdiffx_grn.biomarkers",
    "grnboost2": "scdiffx_grn.biomarkers",
    "aucell": "scdiffx_grn.biomarkers",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_namespace(__name__, _MAP)
