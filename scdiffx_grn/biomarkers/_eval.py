"""Evaluation of regulator rankings against data-derived truth.

Truth is derived from the data only (no curated lists): a TF is a *known regulator* of a cell
type when the TF gene itself is among the top ``n_top`` differentially expressed genes of that
cell type (Wilcoxon, one vs rest, log fold change >= ``min_logfc``, adjusted p <= ``max_padj``)
and is a regulator (a source) in the reference networks. Activity methods score a TF from the
expression of its *targets*, not of the TF itself, so this truth is independent of the way the
activity is computed; to avoid scoring a method on the cells that define its truth,
:func:`split_cells` splits the cells into two stratified halves (truth from one, rankings from
the other).

Metrics per cell type, over the *candidate* TFs (those the ranking scored):
precision@k (fraction of the top k that are truth TFs; chance level = ``n_truth_scored /
n_candidates``), AUROC of the ranking score for truth vs other candidates (0.5 = chance),
``best_truth_rank`` and ``coverage`` (fraction of the cell type's truth TFs that the network can
score at all, i.e. present with >= tmin targets among the data genes). Candidates are restricted
to TFs measured in the data (``candidates``), since truth TFs are measured by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputDataError
from ._utils import de_table

__all__ = ["split_cells", "marker_tf_truth", "evaluate_regulator_ranking", "summarise_evaluation"]


def split_cells(labels: pd.Series, *, seed: int = 0, frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of cells into two halves (boolean masks ``a, b``)."""
    labels = pd.Series(np.asarray(labels).astype(str))
    rng = np.random.default_rng(seed)
    a = np.zeros(len(labels), dtype=bool)
    for _, idx in labels.groupby(labels).groups.items():
        idx = np.asarray(list(idx))
        pick = rng.permutation(idx)[: int(round(len(idx) * frac))]
        a[pick] = True
    return a, ~a


def marker_tf_truth(ln, groupby: str, tfs, *, n_top: int = 50, min_logfc: float = 0.5,
                    max_padj: float = 0.05, de: pd.DataFrame | None = None) -> pd.DataFrame:
    """Data-derived known regulators: TFs that are top DE markers of a cell type.

    Parameters
    ----------
    ln
        Log-normalised AnnData with ``obs[groupby]`` (see ``_utils.lognorm_adata``).
    groupby
        Cell-type column.
    tfs
        Candidate regulator names (e.g. the sources of the reference networks).
    n_top, min_logfc, max_padj
        A TF is truth for a cell type when among its ``n_top`` best DE genes with these thresholds.
    de
        A precomputed DE table (``group, gene, score, logfc, padj, de_rank``).

    Returns
    -------
    DataFrame ``<groupby>, tf, de_rank, logfc, padj``.
    """
    de = de_table(ln, groupby) if de is None else de
    tfs = set(map(str, tfs))
    sel = de[(de["de_rank"] <= n_top) & (de["logfc"] >= min_logfc) & (de["padj"] <= max_padj)
             & de["gene"].isin(tfs)]
    out = sel.rename(columns={"group": groupby, "gene": "tf"})[[groupby, "tf", "de_rank", "logfc", "padj"]]
    return out.sort_values([groupby, "de_rank"]).reset_index(drop=True)


def evaluate_regulator_ranking(ranking: pd.DataFrame, truth: pd.DataFrame, *, groupby: str | None = None,
                               ks=(5, 10), score_col: str = "stat", feature_col: str = "source",
                               truth_col: str = "tf", candidates=None) -> pd.DataFrame:
    """Precision@k and AUROC of a per-group regulator ranking against a truth table.

    Parameters
    ----------
    ranking
        Tidy table with a group column (``groupby``, default: the first column), ``feature_col``
        and ``score_col`` (higher = stronger regulator of the group), e.g. from ``get.regulator_df``
        or ``get.biomarker_df(kind="tf")``.
    truth
        Table with the group column and ``truth_col`` (from :func:`marker_tf_truth`).
    ks
        Cut-offs for precision@k.
    candidates
        Restrict the ranking to these features before scoring (e.g. the TFs measured in the data:
        the truth can only contain measured TFs, so unmeasured candidates would bias the metrics).

    Returns
    -------
    One row per group: ``<groupby>, n_candidates, n_truth, n_truth_scored, coverage, auroc,
    precision@k..., chance_precision, best_truth_rank, truth_tfs, top_tfs``.
    """
    from sklearn.metrics import roc_auc_score

    groupby = ranking.columns[0] if groupby is None else groupby
    for col, df, what in ((groupby, ranking, "ranking"), (feature_col, ranking, "ranking"),
                          (score_col, ranking, "ranking"), (groupby, truth, "truth"), (truth_col, truth, "truth")):
        if col not in df.columns:
            raise InputDataError(f"{what} table lacks column {col!r}; has {list(df.columns)}")
    rows = []
    for g, t in ranking.groupby(groupby, observed=True):
        t = t.dropna(subset=[score_col]).sort_values(score_col, ascending=False)
        t = t.drop_duplicates(feature_col)
        if candidates is not None:
            t = t[t[feature_col].astype(str).isin(set(map(str, candidates)))]
        cands = t[feature_col].astype(str).to_numpy()
        true_all = set(truth.loc[truth[groupby].astype(str) == str(g), truth_col].astype(str))
        y = np.isin(cands, list(true_all))
        row = {groupby: g, "n_candidates": len(cands), "n_truth": len(true_all),
               "n_truth_scored": int(y.sum()),
               "coverage": (y.sum() / len(true_all)) if true_all else np.nan}
        row["auroc"] = roc_auc_score(y, t[score_col].to_numpy()) if 0 < y.sum() < len(y) else np.nan
        for k in ks:
            row[f"precision@{k}"] = y[:k].mean() if (len(cands) and y.sum()) else np.nan
        row["chance_precision"] = y.mean() if (len(cands) and y.sum()) else np.nan
        row["best_truth_rank"] = int(np.argmax(y) + 1) if y.any() else np.nan
        row["truth_tfs"] = ",".join(sorted(true_all))
        row["top_tfs"] = ",".join(cands[: max(ks)])
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_evaluation(ev: pd.DataFrame, by: str | None = "network") -> pd.DataFrame:
    """Mean of the metrics over groups that have at least one scored truth TF."""
    ev = ev[ev["n_truth_scored"] > 0]
    num = [c for c in ev.columns if c == "auroc" or c.startswith("precision@")
           or c in ("chance_precision", "coverage", "best_truth_rank")]
    if by is not None and by in ev.columns:
        out = ev.groupby(by)[num].mean()
        out["n_groups_evaluated"] = ev.groupby(by).size()
        return out.reset_index()
    out = ev[num].mean().to_frame().T
    out["n_groups_evaluated"] = len(ev)
    return out
