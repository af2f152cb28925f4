"""GRN plots: network view of top regulators and a cell-type specificity heatmap."""

from __future__ import annotations

import numpy as np

from .._errors import OptionError, ScdxError
from ._export import as_edges, grn_df
from ._network import group_column

__all__ = ["grn_network", "grn_specificity_heatmap"]


def _save(fig, save):
    if save:
        from pathlib import Path

        from .._io import atomic_path

        p = Path(save)
        with atomic_path(p, suffix=p.suffix or ".png") as tmp:
            fig.savefig(tmp, bbox_inches="tight", format=(p.suffix.lstrip(".") or "png"))
    return fig


def grn_network(df, cell_type=None, *, top_regulators: int = 5, top_targets: int = 10, key: str = "grn_tf",
                layout: str = "spring", seed: int = 0, ax=None, save=None):
    """Draw the top regulators of a (TF ->) gene network and their strongest targets.

    Parameters
    ----------
    df
        GRN DataFrame (``source, target, weight[, cell_type, sign]``) or a MuData (``uns[key]``).
    cell_type
        Cell type to draw (required when the table holds several).
    top_regulators
        Sources with the largest summed |weight| to draw.
    top_targets
        Strongest targets per regulator.
    layout
        ``"spring"`` or ``"shell"`` (networkx layouts).
    save
        Path to write the figure to.

    Returns
    -------
    matplotlib Figure. Regulator nodes are coloured, edge width ~ |weight|, edge colour by sign
    (red activation, blue repression, grey unsigned).
    """

    import matplotlib.pyplot as plt
    import networkx as nx

    if layout not in ("spring", "shell"):
        raise OptionError(f"layout must be 'spring' or 'shell', got {layout!r}")
    d = grn_df(df, key=key, cell_type=cell_type)
    gcol = group_column(d)
    if gcol is not None and d[gcol].nunique() > 1:
        raise ScdxError(f"the network holds several groups in {gcol!r} ({sorted(d[gcol].astype(str).unique())[:5]}"
                        "...); pass cell_type=")
    if len(d) == 0:
        raise ScdxError("the network is empty")
    strength = d.assign(a=d["weight"].abs()).groupby("source")["a"].sum().sort_values(ascending=False)
    regs = list(strength.index[:top_regulators])
    sub = d[d["source"].isin(regs)].assign(a=lambda x: x["weight"].abs())
    sub = sub.sort_values("a", ascending=False).groupby("source", sort=False).head(top_targets)
    G = nx.DiGraph()
    for r in sub.itertuples(index=False):
        G.add_edge(str(r.source), str(r.target), weight=float(r.weight))
    pos = nx.shell_layout(G, [regs, [n for n in G if n not in regs]]) if layout == "shell" \
        else nx.spring_layout(G, seed=seed, k=1.5 / np.sqrt(max(len(G), 1)))
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    w = np.array([abs(G[u][v]["weight"]) for u, v in G.edges()])
    widths = 0.5 + 3.5 * w / (w.max() if len(w) and w.max() > 0 else 1)
    signed = "sign" in d or (d["weight"] < 0).any()
    colors = [("tab:red" if G[u][v]["weight"] >= 0 else "tab:blue") if signed else "grey" for u, v in G.edges()]
    ncol = ["tab:orange" if n in regs else "lightgrey" for n in G.nodes()]
    nx.draw_networkx_nodes(G, pos, ax=ax, node_color=ncol, node_size=[500 if n in regs else 200 for n in G])
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, edge_color=colors, arrows=True, arrowsize=10,
                           connectionstyle="arc3,rad=0.05")
    nx.draw_networkx_labels(G, pos, ax=ax, font_size=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="tab:orange", ms=9, label="regulator (TF)"),
               Line2D([], [], marker="o", ls="", color="lightgrey", ms=6, label="target gene")]
    if signed:
        handles += [Line2D([], [], color="tab:red", lw=2, label="activation (weight > 0)"),
                    Line2D([], [], color="tab:blue", lw=2, label="repression (weight < 0)")]
    else:
        handles.append(Line2D([], [], color="grey", lw=2, label="edge (unsigned)"))
    handles.append(Line2D([], [], color="0.4", lw=0.5, label="edge width ~ |weight|"))
    ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, bbox_to_anchor=(0.0, -0.02))
    ct = cell_type if cell_type is not None else (d[gcol].iloc[0] if gcol is not None else "")
    ax.set_title(f"GRN {ct}: top {len(regs)} regulators")
    ax.axis("off")
    return _save(fig, save)


def grn_specificity_heatmap(df, *, top_k: int = 10, level: str = "source", key: str = "grn_tf",
                            cmap: str = "RdBu_r", ax=None, save=None):
    """Heatmap of regulators (``level="source"``) or edges (``"edge"``) x cell types, z-scored per row.

    The ``top_k`` most specific rows per cell type (highest z-score of summed |weight|) are shown.
    Each cell type's |weight| is first divided by that type's mean |weight|, so a type whose
    weights are all larger (a per-type scale) does not make every row peak in that type; what
    remains is how a regulator / edge ranks in one type relative to the others (see
    :func:`scdiffx_grn.grn.type_specificity`).

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if level not in ("source", "edge"):
        raise OptionError(f"level must be 'source' or 'edge', got {level!r}")
    d = as_edges(grn_df(df, key=key))
    gcol = group_column(d)
    if gcol is None or d[gcol].nunique() < 2:
        raise ScdxError("a specificity heatmap needs a network with at least two cell types")
    from ._specific import _type_scaled

    d = d.assign(a=_type_scaled(d, gcol))
    if level == "source":
        d["row"] = d["source"].astype(str)
    else:
        d["row"] = d["source"].astype(str) + " -> " + d["target"].astype(str)
    M = d.pivot_table(index="row", columns=gcol, values="a", aggfunc="sum", fill_value=0.0)
    Z = M.sub(M.mean(1), axis=0).div(M.std(1).replace(0, 1), axis=0)
    rows = []
    for ct in Z.columns:
        rows += [r for r in Z[ct].sort_values(ascending=False).index[:top_k] if r not in rows]
    Z = Z.loc[rows]
    if ax is None:
        fig, ax = plt.subplots(figsize=(2 + 0.55 * Z.shape[1], 1.2 + 0.28 * Z.shape[0]))
    else:
        fig = ax.figure
    lim = float(np.nanmax(np.abs(Z.to_numpy()))) or 1.0
    im = ax.imshow(Z.to_numpy(), aspect="auto", cmap=cmap, vmin=-lim, vmax=lim)
    ax.set_xticks(range(Z.shape[1]), Z.columns, rotation=90, fontsize=10)
    ax.set_yticks(range(Z.shape[0]), Z.index, fontsize=9)
    fig.colorbar(im, ax=ax, label="z-score of |weight|")
    ax.set_title(f"{'regulator' if level == 'source' else 'edge'} specificity")
    return _save(fig, save)
