"""Do two cell types get different networks? TF -> gene and peak -> gene contrast of two types (issue 25).

Usage::

    python analyses/grn_type_contrast.py --type L2/3 --type L6 --top-k 500 --out results/grn_contrast

Mirrors ``scdiffx-grn grn -m mouse_mop_demo -d mouse_mop -c L2/3 -c L6 --top-k 500`` (attention
peak -> gene, co-accessibility TF layer over the DoRothEA A-C TFs, 500 cells per type) with the
library calls the CLI makes, and reports for the two types: the Pearson correlation of the
weights over the shared edges, whether the ``corr`` column is identical, and the overlap of the
top-k edges ranked by specificity (the default) and by |weight|. The TF layer is built twice:
with the current defaults (per-type TF-target correlation, ``weight = corr * |motif path|``) and
with the earlier definition (``per_type=False, weight="sign"``), and keeping per type only edges
with a per-type correlation p < 0.05 (``corr_pvalue=0.05``; ``n_p05`` counts them, chance would be
5 % of the edges). Weight correlation over the union of the two types' edges (a missing edge
weighs 0). Writes ``contrast.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _contrast(net: pd.DataFrame, a: str, b: str, k: int, gcol: str = "cell_type") -> dict:
    from scdiffx_grn import grn

    x = net[net[gcol] == a].set_index(["source", "target"])
    y = net[net[gcol] == b].set_index(["source", "target"])
    idx = x.index.intersection(y.index)
    union = x.index.union(y.index)
    wx, wy = x["weight"].reindex(union).fillna(0.0), y["weight"].reindex(union).fillna(0.0)
    out = {"edges a / b (shared)": f"{len(x)} / {len(y)} ({len(idx)})",
           "weight_r": float(np.corrcoef(wx, wy)[0, 1])}
    if "corr" in x and len(idx) > 2:
        out["corr_identical"] = bool(np.allclose(x.loc[idx, "corr"], y.loc[idx, "corr"]))
        out["corr_r"] = float(np.corrcoef(x.loc[idx, "corr"], y.loc[idx, "corr"])[0, 1])
    if "corr_p" in x:
        out["n_p05 a / b"] = f"{int((x['corr_p'] < 0.05).sum())} / {int((y['corr_p'] < 0.05).sum())}"
    for kk in (k, 100):
        for rank in ("specificity", "weight"):
            top = grn.grn_df(net, top_k=kk, rank_by=rank)
            sa = set(map(tuple, top[top[gcol] == a][["source", "target"]].to_numpy()))
            sb = set(map(tuple, top[top[gcol] == b][["source", "target"]].to_numpy()))
            out[f"top{kk}_shared_by_{rank}"] = len(sa & sb) / max(1, min(len(sa), len(sb)))
    return out


def main(types=("L2/3", "L6"), *, top_k: int = 500, checkpoint: str = "mouse_mop_demo", max_cells: int = 500,
         out: str = "results/grn_contrast", seed: int = 0) -> pd.DataFrame:
    from scdiffx_grn import ScDiffusionX, datasets, grn

    model = (ScDiffusionX.load(checkpoint) if Path(checkpoint).exists()
             else ScDiffusionX.load_pretrained(checkpoint))
    mdata = model.subset_to_model(datasets.mouse_mop())
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    tss = grn.read_tss(datasets.tss_annotation("mm10"))
    grn.extract_grn(model, mdata, method="attention", tss=tss, cell_types=list(types), max_cells=max_cells,
                    seed=seed, key_added="grn")
    tfs = datasets.tf_list(mdata.mod["rna"].var_names, organism="mouse", source="dorothea", levels="ABC",
                           min_targets=1)
    rows = []
    pg = grn.network_table(mdata, "grn")
    rows.append({"network": "peak_gene (attention)", **_contrast(pg, *types, top_k)})
    for label, kw in (("tf_gene, earlier definition (pooled corr, sign x motif)",
                       {"per_type": False, "weight": "sign"}),
                      ("tf_gene, per-type corr x motif (default: every edge)", {}),
                      ("tf_gene, per-type corr x motif, corr_pvalue=0.05", {"corr_pvalue": 0.05})):
        grn.tf_gene_network(mdata, "coaccessibility", tfs=tfs, key_added="grn_tf", seed=seed, **kw)
        rows.append({"network": label, **_contrast(grn.network_table(mdata, "grn_tf"), *types, top_k)})
    tab = pd.DataFrame(rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    tab.to_csv(Path(out) / "contrast.csv", index=False)
    return tab


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(type: list[str] = typer.Option(["L2/3", "L6"], help="the two cell types (repeat)"),
            top_k: int = 500, checkpoint: str = "mouse_mop_demo", max_cells: int = 500,
            out: str = "results/grn_contrast", seed: int = 0) -> None:
        tab = main(tuple(type), top_k=top_k, checkpoint=checkpoint, max_cells=max_cells, out=out, seed=seed)
        typer.echo(tab.to_string(index=False))

    app()


if __name__ == "__main__":
    _cli()
