"""Plots of perturbation results (matplotlib; every function returns the Figure)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError
from ._base import group_column_of

__all__ = ["volcano", "screen_heatmap"]


def _save(fig, save):
    if save:
        fig.savefig(os.fspath(save), bbox_inches="tight", dpi=150)
    return fig


def volcano(df_or_mdata, target: str | None = None, cell_type: str | None = None, *,
            key: str = "perturbation", alpha: float = 0.05, n_labels: int = 10, use: str = "pval",
            ax=None, save: str | os.PathLike | None = None):
    """Volcano plot of one perturbation in one cell type: effect vs -log10 p.

    Parameters
    ----------
    df_or_mdata
        Effects table (``get.perturbation_df``) or a MuData with ``uns[key]``.
    target, cell_type
        Which perturbation and group (a value of the table's group column, which is named after
        ``groupby``; either may be omitted when the table holds only one).
    alpha
        Points with ``fdr <= alpha`` are highlighted (red up, blue down). A control-calibrated
        screen table (column ``significant``) plots ``log2fc`` against ``p_vs_controls`` /
        ``fdr_vs_controls`` and highlights its ``significant`` features instead.
    n_labels
        Label this many significant features with the largest absolute effect.
    use
        ``"pval"`` or ``"fdr"`` on the y axis.
    save
        Write the figure here.
    """
    import matplotlib.pyplot as plt

    from ._effects import perturbation_df

    if use not in ("pval", "fdr"):
        raise OptionError(f"use must be 'pval' or 'fdr', got {use!r}")
    df = df_or_mdata if isinstance(df_or_mdata, pd.DataFrame) else perturbation_df(df_or_mdata, key)
    gcol = group_column_of(df)
    for col, val in (("perturbation", target), (gcol, cell_type)):
        if col is None:
            continue
        if val is not None:
            df = df[df[col].astype(str) == str(val)]
        elif col in df and df[col].nunique() > 1:
            raise InputDataError(f"the table holds several {col} values {sorted(df[col].unique())[:10]}; pick one")
    if df.empty:
        raise InputDataError(f"no effects for target={target!r}, cell_type={cell_type!r}")
    calibrated = "significant" in df  # a control-calibrated screen table: effects against the controls
    ycol = {"pval": "p_vs_controls", "fdr": "fdr_vs_controls"}[use] if calibrated else use
    y = -np.log10(np.clip(df[ycol].to_numpy(float), 1e-300, 1))
    x = df["log2fc" if calibrated else "effect"].to_numpy(float)
    sig = df["significant"].to_numpy(bool) if calibrated else (df["fdr"] <= alpha).to_numpy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    else:
        fig = ax.figure
    ax.scatter(x[~sig], y[~sig], s=6, c="0.7", lw=0)
    ax.scatter(x[sig & (x > 0)], y[sig & (x > 0)], s=8, c="tab:red", lw=0, label="up")
    ax.scatter(x[sig & (x < 0)], y[sig & (x < 0)], s=8, c="tab:blue", lw=0, label="down")
    if n_labels and sig.any():
        top = np.argsort(-np.abs(np.where(sig, x, 0)))[:n_labels]
        for i in top:
            if sig[i]:
                ax.annotate(str(df["feature"].iloc[i]), (x[i], y[i]), fontsize=7)
    readout = df["readout"].iloc[0] if "readout" in df else "rna"
    if calibrated:
        ax.set_xlabel("log2 fold change of expression" if readout == "rna" else "log2 odds ratio of accessibility")
    else:
        ax.set_xlabel("mean log-fold change" if readout == "rna" else "difference in accessibility")
    ax.set_ylabel(f"-log10 {ycol}")
    name = df["perturbation"].iloc[0] if "perturbation" in df else ""
    ct = df[gcol].iloc[0] if gcol is not None and gcol in df else ""
    ax.set_title(f"{name} in {ct}", fontsize=9)
    ax.axvline(0, c="0.5", lw=0.5)
    return _save(fig, save)


def screen_heatmap(summary: pd.DataFrame, value: str = "n_sig", *, max_targets: int = 60, cmap: str = "viridis",
                   ax=None, save: str | os.PathLike | None = None):
    """Heatmap of a screen summary: targets (rows) x cell types (columns) coloured by ``value``.

    Parameters
    ----------
    summary
        From :func:`~scdiffx_grn.tl.screen` / ``load_screen`` (columns: the groups of its group
        column, named after the screen's ``groupby``).
    value
        A numeric column (``n_sig``, ``latent_shift``, ``pca_shift``, ``frac_type_changed``...).
    max_targets
        Show the targets with the largest row maximum only.
    """
    import matplotlib.pyplot as plt

    if value not in summary.columns:
        raise OptionError(f"summary has no column {value!r}; columns: {list(summary.columns)}")
    gcol = group_column_of(summary)
    if gcol is None:
        raise InputDataError(f"summary has no group column after 'perturbation' (columns: {list(summary.columns)})")
    mat = summary.pivot_table(index="perturbation", columns=gcol, values=value, aggfunc="mean")
    if len(mat) > max_targets:
        mat = mat.loc[mat.max(axis=1).sort_values(ascending=False).index[:max_targets]]
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.0 + 0.45 * mat.shape[1], 1.2 + 0.28 * mat.shape[0]))
    else:
        fig = ax.figure
    im = ax.imshow(mat.to_numpy(float), aspect="auto", cmap=cmap)
    ax.set_xticks(range(mat.shape[1]), mat.columns, rotation=90, fontsize=10)
    ax.set_yticks(range(mat.shape[0]), mat.index, fontsize=9)
    ax.set_xlabel(gcol.replace("_", " "))
    ax.set_ylabel("perturbation")
    fig.colorbar(im, ax=ax, label=value, shrink=0.7)
    return _save(fig, save)
