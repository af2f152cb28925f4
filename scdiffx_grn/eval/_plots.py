"""Plots of evaluation results (matplotlib; each returns the Figure and takes ``save=``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputDataError
from .._io import atomic_path
from .._vocab import check_option
from ._common import group_labels
from ._space import FeatureSpace

__all__ = ["metric_bars", "umap_real_vs_generated"]


def _save(fig, save) -> None:
    if save:
        suffix = Path(save).suffix or ".png"
        with atomic_path(save, suffix=suffix) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=suffix.lstrip("."))


def _scatter(ax, xy, cats, title, max_legend=20, colors=None):
    cats = pd.Categorical(cats)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, c in enumerate(cats.categories):
        m = np.asarray(cats == c)
        col = colors[i] if colors is not None else cmap(i % 20)
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, color=col, label=str(c), linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(cats.categories) <= max_legend:
        ax.legend(markerscale=3, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))


def umap_real_vs_generated(real, generated, *, groupby: str | None = "cell_type", modality: str = "rna",
                           feature_space: FeatureSpace | None = None, basis: str = "umap",
                           max_cells: int | None = 5000, seed: int = 0, save: str | os.PathLike | None = None,
                           layer: str | None = ..., generated_layer: str | None = None):
    """UMAP of real and generated cells on the joint PCA / LSI fitted on real cells.

    Parameters
    ----------
    real, generated
        AnnData of one modality (see :func:`~scdiffx_grn.eval.evaluate_generation`).
    groupby
        Cell-type column for the second panel (``None``: one panel).
    modality
        ``"rna"`` or ``"atac"``.
    feature_space
        Fitted :class:`~scdiffx_grn.eval.FeatureSpace` (default: fitted on ``real``).
    basis
        ``"umap"`` (umap-learn on the joint embedding) or ``"pca"`` (first two components).
    max_cells
        Subsample each set to at most this many cells (seeded).
    seed
        Seed of subsampling and UMAP.
    save
        Path to save the figure to.
    layer
        Layer of the real cells' counts (default: the feature space's, ``"counts"`` for a new one);
        a missing layer raises.
    generated_layer
        Layer of the generated values (default ``None``: ``X``).

    Returns
    -------
    matplotlib.figure.Figure
        Panels coloured by source (real / generated) and by cell type, side by side.
    """
    import matplotlib.pyplot as plt

    check_option("basis", basis, ("umap", "pca"))
    fs = (feature_space if feature_space is not None
          else FeatureSpace(modality, layer="counts" if layer is ... else layer).fit(real))
    rng = np.random.default_rng(seed)
    ir, ig = np.arange(real.n_obs), np.arange(generated.n_obs)
    if max_cells is not None:
        ir = np.sort(rng.choice(ir, min(max_cells, len(ir)), replace=False))
        ig = np.sort(rng.choice(ig, min(max_cells, len(ig)), replace=False))
    e = np.vstack([fs.transform(real[ir], seed=seed, layer=layer),
                   fs.transform(generated[ig], seed=seed, layer=generated_layer)])
    src = np.r_[np.full(len(ir), "real"), np.full(len(ig), "generated")]
    if basis == "umap":
        import umap

        xy = umap.UMAP(n_neighbors=int(min(15, len(e) - 1)), random_state=seed, n_jobs=1).fit_transform(e)
    else:
        xy = e[:, :2]
    n = 2 if groupby else 1
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.5), squeeze=False)
    _scatter(axes[0, 0], xy, pd.Categorical(src, categories=["real", "generated"]), "source",
             colors=("tab:blue", "tab:red"))
    if groupby:
        ct = np.r_[group_labels(real, groupby, what="real cells")[ir],
                   group_labels(generated, groupby, what="generated cells")[ig]]
        _scatter(axes[0, 1], xy, ct, groupby)
    for ax in axes[0]:
        ax.set_xlabel(f"{basis.upper()}1")
        ax.set_ylabel(f"{basis.upper()}2")
    fig.tight_layout()
    _save(fig, save)
    return fig


def metric_bars(table: pd.DataFrame, *, metrics: Sequence[str] | None = None, scope: str = "all",
                save: str | os.PathLike | None = None, ncols: int = 4):
    """Bar chart (mean ± std over seeds) of each metric, one bar per method.

    Parameters
    ----------
    table
        Tidy table (:func:`~scdiffx_grn.eval.evaluate_model` / ``evaluate_generation``) or a
        summary (:func:`~scdiffx_grn.eval.summarise`).
    metrics
        Metrics to show (default all present).
    scope
        ``"all"`` or ``"cell_type_mean"`` (metrics only present in the other scope are kept).
    save
        Path to save the figure to.
    ncols
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from ._report import summarise

    check_option("scope", scope, ("all", "cell_type_mean"))
    s = table if {"mean", "std", "scope"} <= set(table.columns) else summarise(table)
    s = s.copy()
    for c in ("method", "task", "modality"):
        if c not in s:
            s[c] = "-"
    s["_pref"] = (s["scope"] == scope).astype(int)
    s = s.sort_values("_pref", ascending=False).drop_duplicates(["method", "task", "modality", "metric"])
    s["panel"] = np.where(s["modality"].astype(str) == "-", s["metric"], s["modality"].astype(str) + " " + s["metric"])
    if metrics is not None:
        s = s[s["metric"].isin(list(metrics))]
    panels = list(dict.fromkeys(s["panel"]))
    if not panels:
        raise InputDataError("no metrics to plot")
    methods = list(dict.fromkeys(s["method"]))
    if "model" in methods:
        methods = ["model"] + [m for m in methods if m != "model"]
    ncols = int(min(ncols, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    cmap = __import__("matplotlib").colormaps["tab10"]
    for ax, p in zip(axes.ravel(), panels):
        d = s[s["panel"] == p].set_index("method").reindex(methods)
        ax.bar(range(len(methods)), d["mean"].to_numpy(dtype=float), yerr=d["std"].fillna(0).to_numpy(dtype=float),
               color=[cmap(i % 10) for i in range(len(methods))], capsize=2)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(p, fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, save)
    return fig
