"""Which attention aggregation? Timesteps, heads, layers and ATAC noise, scored on real data.

Each variant of ``tl.extract_grn(method="attention")`` is run on the mouse MOp SNARE-seq data
with one checkpoint and scored the same way as ``analyses/benchmark_grn.py``: peak -> gene
AUROC against the data's region -> gene links (scMoMaT GxR) and TF -> gene AUROC against
DoRothEA A-C with the CellOracle motif prior. The defaults of ``extract_grn`` are chosen from
this table (see BENCHMARKS.md).

Usage::

    python analyses/grn_attention_ablation.py --checkpoint models/mouse_mop_demo --out results/grn_ablation

Writes ``<out>/ablation.csv`` and ``<out>/ablation.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: name -> extract_grn keyword arguments (attention options)
VARIANTS = {
    "t=100,300,500 mean-heads all-layers (default)": dict(timesteps=(100, 300, 500)),
    "t=100": dict(timesteps=(100,)),
    "t=500": dict(timesteps=(500,)),
    "t=900": dict(timesteps=(900,)),
    "max over heads": dict(timesteps=(100, 300, 500), head_reduce="max"),
    "first layer only": dict(timesteps=(100, 300, 500), layers=(0,)),
    "last layer only": dict(timesteps=(100, 300, 500), layers=(-1,)),
    "ATAC noised too": dict(timesteps=(100, 300, 500), noise_atac=True),
}


def main(checkpoint: str = "models/mouse_mop_demo", *, out: str = "results/grn_ablation", max_cells: int = 100,
         n_metacells: int = 20, seed: int = 0) -> pd.DataFrame:
    """Run every variant; returns one row per variant (means over cell types)."""
    from benchmark_grn import _md, _shared_dir, references

    from scdiffx_grn import ScDiffusionX, datasets, grn
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import grn as egrn
    from scdiffx_grn.grn._metacells import metacell_profiles, metacells

    model = ScDiffusionX.load(checkpoint)
    mdata = model.subset_to_model(datasets.mouse_mop())
    cand = grn.peak_gene_candidates(mdata, tss_table=grn.read_tss(datasets.tss_annotation("mm10")))
    links = datasets.mouse_mop_links()
    base = pd.read_parquet(_shared_dir() / "grn" / "celloracle_mm10_promoter_baseGRN_gimmev5_fpr1.parquet")
    genes = list(mdata.mod["rna"].var_names)
    tf_peak = grn.tf_peak_from_base_grn(base, mdata, tfs=genes)
    expr, _, _ = metacell_profiles(mdata, metacells(mdata, "cell_type", n_metacells, seed=seed), peaks=[])
    dorothea = references()["dorothea_ABC"]
    n_layers = int(model.config.n_layers)
    rows = []
    for name, kw in VARIANTS.items():
        kw = dict(kw)
        if "layers" in kw:
            kw["layers"] = tuple(i % n_layers for i in kw["layers"])
        t0 = time.perf_counter()
        grn.extract_grn(model, mdata, method="attention", candidates=cand, max_cells=max_cells, seed=seed,
                        key_added="g", **kw)
        secs = time.perf_counter() - t0
        net = grn.network_table(mdata, "g")
        pg = egrn.peak_gene_metrics(net, links, candidates=cand, method="attention")
        pg = pg[pg["method"] == "attention"]
        tfn = grn.tf_gene_network(net, tf_peak, expr)
        tf = egrn.tf_gene_metrics(tfn, dorothea, tfs_universe=genes, genes_universe=genes, method="attention",
                                  target_degree=False)
        tf = tf[tf["method"] == "attention"]
        rows.append({"variant": name, "peak_gene_auroc_gxr": pg["auroc"].mean(),
                     "peak_gene_auprc_ratio": pg["auprc_ratio"].mean(),
                     "spearman_with_closeness": pg["spearman_distance"].mean(),
                     "tf_gene_auroc_dorothea": tf["auroc"].mean(), "tf_swap_frac": tf["tf_swap_frac"].mean(),
                     "seconds": secs})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp / "ablation.csv", table.to_csv(index=False))
    atomic_write_text(outp / "ablation.md", _md(table) + "\n")
    return table


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(checkpoint: str = "models/mouse_mop_demo", out: str = "results/grn_ablation", max_cells: int = 100,
            n_metacells: int = 20, seed: int = 0) -> None:
        main(checkpoint, out=out, max_cells=max_cells, n_metacells=n_metacells, seed=seed)
        typer.echo(Path(out, "ablation.md").read_text())

    app()


if __name__ == "__main__":
    _cli()
