"""Summary tables and report files for evaluation results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .._errors import InputDataError
from .._io import atomic_path, atomic_write_text
from .._vocab import check_option
from ._protocol import summarise_generation

__all__ = ["METRIC_DIRECTION", "summarise", "comparison_table", "to_markdown", "write_report"]

#: "higher" / "lower" is better, or a target value (0.5 for two-sample classifiers)
METRIC_DIRECTION: dict[str, str | float] = {
    "mmd": "lower", "w1": "lower", "w2": "lower", "energy": "lower",
    "pb_pearson": "higher", "pb_spearman": "higher", "1nn_acc": 0.5, "rf_auc": 0.5, "ilisi": "higher",
    "knn_acc": "higher", "knn_f1": "higher", "marker_corr": "higher",
    "cell_pearson_mean": "higher", "cell_pearson_median": "higher",
    "gene_pearson_mean": "higher", "gene_pearson_median": "higher",
    "cell_auroc_mean": "higher", "cell_auroc_median": "higher",
    "cell_auprc_mean": "higher", "cell_auprc_median": "higher",
    "auroc_pooled": "higher", "auprc_pooled": "higher",
    "mem_frac_closer_train": 0.5, "mem_median_ratio": 1.0, "mem_frac_copies": "lower",
}


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds for each (method, task, modality, metric, scope).

    Parameters
    ----------
    table
        Tidy table of :func:`~scdiffx_grn.eval.evaluate_model` or
        :func:`~scdiffx_grn.eval.evaluate_generation` / ``evaluate_translation``.

    Returns
    -------
    pandas.DataFrame
        ``[method, task, modality,] metric, scope, mean, std, n_seeds`` (scope ``"all"``: pooled
        cells; ``"cell_type_mean"``: per-cell-type values averaged within a seed).
    """
    need = {"metric", "cell_type", "seed", "value"}
    if not need <= set(table.columns):
        raise InputDataError(f"table lacks columns {sorted(need - set(table.columns))}")
    return summarise_generation(table, by=("method", "task", "modality"))


def comparison_table(summary: pd.DataFrame, *, scope: str = "all", fmt: str = "{:.3f}",
                     numeric: bool = False) -> pd.DataFrame:
    """Pivot a summary to rows (task, modality, metric) x columns method.

    Parameters
    ----------
    summary
        Output of :func:`summarise`.
    scope
        ``"all"`` or ``"cell_type_mean"``; metrics only present in the other scope (e.g.
        ``marker_corr``) are taken from it.
    fmt
        Number format of ``"mean ± std"`` cells.
    numeric
        Return the means as numbers instead of formatted strings.

    Returns
    -------
    pandas.DataFrame
    """
    check_option("scope", scope, ("all", "cell_type_mean"))
    s = summary.copy()
    for c in ("method", "task", "modality"):
        if c not in s:
            s[c] = "-"
    s["_pref"] = (s["scope"] == scope).astype(int)
    s = s.sort_values("_pref", ascending=False).drop_duplicates(["method", "task", "modality", "metric"])
    if numeric:
        s["cell"] = s["mean"]
    else:
        s["cell"] = [fmt.format(m) + (f" ± {fmt.format(sd)}" if n > 1 else "")
                     for m, sd, n in zip(s["mean"], s["std"], s["n_seeds"])]
    out = s.pivot_table(index=["task", "modality", "metric"], columns="method", values="cell",
                        aggfunc="first", sort=False)
    cols = list(out.columns)
    if "model" in cols:
        out = out[["model"] + [c for c in cols if c != "model"]]
    out.columns.name = None
    return out


def to_markdown(df: pd.DataFrame, *, index: bool = True) -> str:
    """Render a DataFrame as a GitHub-flavoured markdown table (no tabulate needed)."""
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, out_dir: str | os.PathLike, *,
                 figures: Mapping[str, object] | None = None, title: str = "Evaluation") -> dict[str, Path]:
    """Write ``table.csv``, ``summary.csv``, ``comparison.csv``, ``report.md`` and figures.

    Parameters
    ----------
    table
        Tidy results (:func:`~scdiffx_grn.eval.evaluate_model`).
    out_dir
        Output directory (created).
    figures
        Name -> matplotlib Figure, saved as ``<name>.png``.
    title
        Heading of the markdown report.

    Returns
    -------
    dict
        Name -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(table)
    comp = comparison_table(summary)
    paths = {}
    for name, df, idx in (("table", table, False), ("summary", summary, False), ("comparison", comp, True)):
        p = out / f"{name}.csv"
        with atomic_path(p, suffix=".csv") as tmp:
            df.to_csv(tmp, index=idx)
        paths[name] = p
    md = [f"# {title}\n", "Mean ± std over seeds; pooled cells (`marker_corr`: mean over cell types).",
          "Better: " + ", ".join(f"`{k}` {'→ ' + str(v) if not isinstance(v, str) else v}"
                                 for k, v in METRIC_DIRECTION.items()) + ".\n",
          to_markdown(comp)]
    for name, fig in (figures or {}).items():
        p = out / f"{name}.png"
        with atomic_path(p, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
        paths[name] = p
        md.append(f"\n![{name}]({name}.png)\n")
    atomic_write_text(out / "report.md", "\n".join(md))
    paths["report"] = out / "report.md"
    return paths
