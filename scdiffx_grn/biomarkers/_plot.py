"""Plots of regulator activities and enrichment results (matplotlib; return the Figure)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError
from ._utils import stored_result

__all__ = ["regulator_dotplot", "enrichment_barplot"]


def _save(fig, save):
    if save:
        from .._io import atomic_path

        suffix = "." + str(save).rsplit(".", 1)[-1] if "." in str(save) else ".png"
        with atomic_path(save, suffix=suffix) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=suffix[1:])
    return fig


def regulator_dotplot(data, key: str = "regulators", *, top_k: int = 5, color: str = "stat",
                      network: str | None = None, save=None, figsize=None):
    """Dot plot of the top regulators of each group.

    Parameters
    ----------
    data
        AnnData / MuData with ``uns[key]`` from ``tl.regulator_activity`` or ``tl.rank_biomarkers``,
        or one of those tables.
    key
        ``uns`` key.
    top_k
        Regulators shown per group (their union forms the columns).
    color
        Column for the colour: ``"stat"`` (group vs rest) or ``"score"`` (mean activity);
        for a biomarker table ``"combined_score"`` ranks are used.
    network
        For a table with several networks (``compare_networks``), the one to show.
    save
        Path to write the figure (PNG/PDF/SVG by extension).

    Returns
    -------
    matplotlib Figure. Dot size: ``-log10 padj`` (clipped at 10) or, without p-values, ``|stat|``.
    """
    import matplotlib.pyplot as plt

    df = stored_result(data, key, ("activity", "biomarkers"), what="regulator or biomarker table",
                       hint="tl.regulator_activity or tl.rank_biomarkers")
    df = pd.DataFrame(df).copy()
    gcol = df.columns[0]
    if "kind" in df.columns:  # biomarker table -> TF rows, colour by -rank
        df = df[df["kind"] == "tf"].rename(columns={"feature": "source"})
        if df.empty:
            raise InputDataError("the biomarker table has no TF rows")
        df["stat"] = -df["combined_score"]
        color = "stat"
    if network is not None and "network" in df.columns:
        df = df[df["network"] == network]
    elif "network" in df.columns and df["network"].nunique() > 1:
        raise OptionError(f"table holds several networks {sorted(df['network'].unique())}; pass network=")
    if color not in df.columns:
        raise OptionError(f"colour column {color!r} not in the table ({list(df.columns)})")
    groups = sorted(df[gcol].astype(str).unique())
    top = (df.sort_values(["rank"] if "rank" in df.columns else [color], ascending="rank" in df.columns)
           .groupby(gcol, sort=False).head(top_k))
    tfs = list(dict.fromkeys(top.sort_values([gcol, "rank" if "rank" in top.columns else color])["source"]))
    sub = df[df["source"].isin(tfs)]
    C = sub.pivot_table(index=gcol, columns="source", values=color, aggfunc="mean").reindex(index=groups, columns=tfs)
    if "padj" in sub.columns and sub["padj"].notna().any():
        S = -np.log10(sub.pivot_table(index=gcol, columns="source", values="padj", aggfunc="mean")
                      .reindex(index=groups, columns=tfs).clip(lower=1e-10))
        slabel = "-log10 padj"
    else:
        S = C.abs()
        slabel = f"|{color}|"
    S = S.fillna(0).to_numpy(dtype=float)
    sizes = 10 + 190 * (S / S.max() if S.max() > 0 else S)
    fig, ax = plt.subplots(figsize=figsize or (max(4, 0.35 * len(tfs) + 2), max(3, 0.35 * len(groups) + 1.5)))
    yy, xx = np.meshgrid(np.arange(len(groups)), np.arange(len(tfs)), indexing="ij")
    vals = C.to_numpy(dtype=float)
    lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
    sc = ax.scatter(xx.ravel(), yy.ravel(), s=sizes.ravel(), c=vals.ravel(), cmap="RdBu_r", vmin=-lim, vmax=lim,
                    edgecolors="0.3", linewidths=0.3)
    ax.set_xticks(range(len(tfs)), tfs, rotation=90)
    ax.set_yticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(tfs) - 0.4)
    ax.set_ylim(len(groups) - 0.4, -0.6)
    fig.colorbar(sc, ax=ax, label=color, shrink=0.6)
    ax.set_title(f"top {top_k} regulators per {gcol} (size: {slabel})", fontsize=9)
    fig.tight_layout()
    return _save(fig, save)


def enrichment_barplot(df, *, top_k: int = 10, group: str | None = None, key: str = "enrichment", save=None,
                       ncols: int = 3):
    """Bar plot of the gene sets with the highest NES per group.

    Parameters
    ----------
    df
        Table from ``tl.enrichment`` / ``get.enrichment_df`` (or AnnData / MuData with ``uns[key]``).
    top_k
        Sets per group.
    group
        Show only this group (default: one panel per group).
    save
        Path to write the figure.

    Returns
    -------
    matplotlib Figure (bars coloured by FDR < 0.05 / 0.25 / rest).
    """
    import matplotlib.pyplot as plt

    df = stored_result(df, key, ("enrichment",), what="enrichment table", hint="tl.enrichment")
    df = pd.DataFrame(df)
    if df.empty:
        raise InputDataError("the enrichment table is empty")
    gcol = df.columns[0]  # named after groupby (``group`` in tables of earlier versions)
    if group is not None:
        df = df[df[gcol].astype(str) == str(group)]
        if df.empty:
            raise OptionError(f"group {group!r} not in the enrichment table")
    groups = list(dict.fromkeys(df[gcol].astype(str)))
    nc = min(ncols, len(groups))
    nr = int(np.ceil(len(groups) / nc))
    fig, axes = plt.subplots(nr, nc, figsize=(5.5 * nc, 0.3 * top_k * nr + 1.2 * nr), squeeze=False)
    for ax, g in zip(axes.ravel(), groups):
        t = df[df[gcol].astype(str) == g].sort_values("nes", ascending=False).head(top_k)[::-1]
        col = np.where(t["fdr"] < 0.05, "#b2182b", np.where(t["fdr"] < 0.25, "#ef8a62", "#999999"))
        ax.barh([s[:45] for s in t["term"]], t["nes"], color=col)
        ax.axvline(0, color="0.3", lw=0.5)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("NES (normalised enrichment score)")
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes.ravel()[len(groups):]:
        ax.axis("off")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color="#b2182b", label="FDR < 0.05"), Patch(color="#ef8a62", label="FDR < 0.25"),
                        Patch(color="#999999", label="FDR >= 0.25")],
               loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, save)
