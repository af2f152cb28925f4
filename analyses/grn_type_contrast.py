"""Do two cell types get different networks? TF -> gene and peak -> gene contrast of two types (issue 25).

Usage::

    python analyses/grn_type_contrast.py --type L2/3 --type L6 --top-k 500 --out results/grn_contrast

Mirrors ``scdiffx-grn grn -m mouse_mop_demo -d mouse_mop -c L2/3 -c L6 --top-k 500`` (attention
peak -> gene, co-accessibility TF layer over the DoRothEA A-C TFs, 500 cells per type) with the
library calls the CLI makes, and reports for the two types: the edges of each (and shared), the
Pearson correlation of the weights over the union of their edges (a missing edge weighs 0),
whether the ``corr`` column is identical, how many edges have a per-type correlation p < 0.05
(``n_p05``; chance is 5 %) and the overlap of the top-k edges (shared / the smaller set) ranked
by specificity (the default of ``grn_df`` / ``--top-k``) and by |weight|.

The TF layer is built with:

- the earlier definition (pooled TF-target correlation, ``weight = sign(corr) x |motif path|``,
  co-accessibility prior ``min_corr=0.3``, every path in every type);
- the previous default (per-type correlation x |motif path|, the same prior and paths);
- the current default (prior: co-accessibility at FDR 0.1; each type's own paths: peaks
  accessible and TFs expressed in its own cells, ``type_pvalue=0.05``);
- the current prior without the per-type paths (``type_pvalue=None``), to separate the two;
- the current default with ``corr_pvalue=0.05``.

As a noise floor, the same contrast between two halves of the first type's cells (split by
cell name; every step, peak -> gene included, run on the halves as if they were types): a
difference between the two types that is no larger than between two halves of one type is
sampling noise, not type specificity. Writes ``contrast.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: TF layers compared: label -> tf_gene_network options
LAYERS = {
    "tf_gene, earlier definition (pooled corr, sign x motif; prior r >= 0.3)":
        {"per_type": False, "weight": "sign", "min_corr": 0.3, "fdr": None, "type_pvalue": None},
    "tf_gene, previous default (per-type corr x motif; prior r >= 0.3, every path)":
        {"min_corr": 0.3, "fdr": None, "type_pvalue": None},
    "tf_gene, default (prior FDR 0.1; each type's own peaks and TFs)": {},
    "tf_gene, prior FDR 0.1, every path in every type (type_pvalue=None)": {"type_pvalue": None},
    "tf_gene, default with corr_pvalue=0.05": {"corr_pvalue": 0.05},
}


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


def _rows(mdata, model, tss, types, groupby: str, top_k: int, max_cells: int, tfs, seed: int, what: str) -> list:
    from scdiffx_grn import grn

    grn.extract_grn(model, mdata, method="attention", tss=tss, groupby=groupby, cell_types=list(types),
                    max_cells=max_cells, seed=seed, key_added="grn")
    pg = grn.network_table(mdata, "grn")
    rows = [{"contrast": what, "network": "peak_gene (attention)", **_contrast(pg, *types, top_k, groupby)}]
    for label, kw in LAYERS.items():
        grn.tf_gene_network(mdata, "coaccessibility", tfs=tfs, groupby=groupby, key_added="grn_tf", seed=seed, **kw)
        rows.append({"contrast": what, "network": label,
                     **_contrast(grn.network_table(mdata, "grn_tf"), *types, top_k, groupby)})
    return rows


def main(types=("L2/3", "L6"), *, top_k: int = 500, checkpoint: str = "mouse_mop_demo", max_cells: int = 500,
         out: str = "results/grn_contrast", seed: int = 0, halves: bool = True) -> pd.DataFrame:
    from scdiffx_grn import ScDiffusionX, datasets, grn
    from scdiffx_grn._modelio import cell_keys

    model = (ScDiffusionX.load(checkpoint) if Path(checkpoint).exists()
             else ScDiffusionX.load_pretrained(checkpoint))
    mdata = model.subset_to_model(datasets.mouse_mop())
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    tss = grn.read_tss(datasets.tss_annotation("mm10"))
    tfs = datasets.tf_list(mdata.mod["rna"].var_names, organism="mouse", source="dorothea", levels="ABC",
                           min_targets=1)
    rows = _rows(mdata, model, tss, types, "cell_type", top_k, max_cells, tfs, seed, f"{types[0]} vs {types[1]}")
    if halves:
        # noise floor: two halves of the first type's cells, split by cell name, as if they were types
        ct = mdata.obs["cell_type"].astype(str).to_numpy()
        half = cell_keys(np.asarray(mdata.obs_names).astype(str), seed, stream=23) % 2
        lab = np.where(ct == types[0], np.char.add(f"{types[0]}#", (half + 1).astype(str)), ct)
        mdata.obs["half"] = pd.Categorical(lab)
        rows += _rows(mdata, model, tss, (f"{types[0]}#1", f"{types[0]}#2"), "half", top_k, max_cells, tfs, seed,
                      f"two halves of {types[0]}")
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
            out: str = "results/grn_contrast", seed: int = 0,
            halves: bool = typer.Option(True, help="also contrast two halves of the first type (noise floor)")) -> None:
        tab = main(tuple(type), top_k=top_k, checkpoint=checkpoint, max_cells=max_cells, out=out, seed=seed,
                   halves=halves)
        with pd.option_context("display.width", 250, "display.max_colwidth", 80):
            typer.echo(tab.to_string(index=False))

    app()


if __name__ == "__main__":
    _cli()
