"""Held-out predictive validation (GRaNPA-style) of model and model-free peak -> gene networks (issue 25).

Usage::

    python analyses/benchmark_grn_predictive.py --checkpoint mouse_mop_demo --out results/grn_predictive

On the mouse MOp data and the shipped checkpoint: extracts attention, integrated gradients,
knockout and consensus peak -> gene networks, builds the model-free ones (distance prior,
per-type metacell correlation, accessibility in the type; correlation and accessibility from the
model's train cells only, so the test cells are unseen by every network), and scores each with
:func:`scdiffx_grn.eval.grn_predictive`: the ``top_k`` edges (ranked by weight; a per-type network by
its mean weight over types), targets predicted from their linked peaks on the model's test cells
pooled into pseudo-cells of ``pool`` cells, against ``n_random`` degree-preserving rewirings.
``--per-type`` scores each type on its own cells instead (the model's test split leaves ~70 test
cells per type, too few pseudo-cells for most types). Also scores every network against the GxR links (AUROC, as in BENCHMARKS.md).

Writes ``<out>/predictive.csv`` (per network and type), ``<out>/summary.csv`` (mean over types;
``delta_r2_se``: bootstrap standard error of the gain over targets), ``<out>/gxr.csv``,
``<out>/consensus_weights.csv``, ``<out>/consensus_cv.csv`` (cross-validated gain of every
evidence subset on the train cells), ``<out>/consensus_choice.txt`` and the networks
(``<name>.parquet``). ``--reuse knockout`` (repeatable) reads a network of an earlier run from
``<out>`` instead of extracting it again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd


def main(checkpoint: str = "mouse_mop_demo", *, out: str = "results/grn_predictive", max_cells: int = 200,
         ig_cells: int = 100, ig_steps: int = 8, top_k: int = 500, n_random: int = 20, pool: int | None = 30,
         groupby: str | None = None, methods=("attention", "knockout", "integrated_gradients", "consensus"), seed: int = 0,
         reuse=()) -> pd.DataFrame:
    from scdiffx_grn import ScDiffusionX, datasets, grn
    from scdiffx_grn.eval import grn as egrn

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    model = (ScDiffusionX.load(checkpoint) if Path(checkpoint).exists()
             else ScDiffusionX.load_pretrained(checkpoint))
    mdata = model.subset_to_model(datasets.mouse_mop())
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    tss = grn.read_tss(datasets.tss_annotation("mm10"))
    cand = grn.peak_gene_candidates(mdata, tss_table=tss, window=150_000)
    nets, timing = {}, {}
    for m in methods:
        if m in reuse and (outdir / f"{m}.parquet").exists():  # a network of an earlier run of the same settings
            nets[m] = grn.read_grn(outdir / f"{m}.parquet")
            continue
        t0 = time.perf_counter()
        kw = {"ig_steps": ig_steps, "batch_size": 16} if m == "integrated_gradients" else {}
        grn.extract_grn(model, mdata, method=m, candidates=cand, max_cells=ig_cells if m == "integrated_gradients"
                        else max_cells, seed=seed, key_added=f"grn_{m}", **kw)
        timing[m] = time.perf_counter() - t0
        nets[m] = grn.network_table(mdata, f"grn_{m}")
        grn.write_grn(nets[m], outdir / f"{m}.parquet")
        if m == "consensus":  # the cross-validated gain of every evidence subset, and the choice
            par = mdata.uns[f"grn_{m}"]["params"]["consensus"]
            pd.DataFrame(par["cv"]).T.rename_axis("evidence").to_csv(outdir / "consensus_cv.csv")
            (outdir / "consensus_choice.txt").write_text(
                f"{par.get('carried_by')}: {par.get('rule')} ({par.get('n_units')} cross-validation units)\n")
    test = egrn.heldout_cells(mdata, model=model)
    train = mdata[~test].copy()
    t0 = time.perf_counter()
    nets["distance"] = egrn.distance_baseline(cand)
    nets["metacell_correlation"] = egrn.metacell_correlation(train, cand, "cell_type", 20, per_group=True, seed=seed)
    nets["accessibility"] = egrn.accessibility_baseline(train, cand, "cell_type")
    timing["baselines"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tab = egrn.grn_predictive(mdata, nets, model=model, groupby=groupby, top_k=top_k, rank_by="weight",
                              n_random=n_random, pool=pool, seed=seed)
    timing["grn_predictive"] = time.perf_counter() - t0
    tab.to_csv(outdir / "predictive.csv", index=False)
    gcol = "cell_type" if groupby == "cell_type" else "group"
    summ = tab.groupby("network", sort=False).agg(
        n_groups=(gcol, "size"), median_r2=("median_r2", "mean"), random_median_r2=("random_median_r2", "mean"),
        delta_r2=("delta_r2", "mean"), delta_r2_se=("delta_r2_se", "mean"),
        frac_targets_improved=("frac_targets_improved", "mean"),
        types_beating_random=("beats_random", "sum"), n_test=("n_test", "sum")).reset_index()
    summ.to_csv(outdir / "summary.csv", index=False)
    # GxR agreement, as in BENCHMARKS.md's peak -> gene table
    links = egrn.links_from_var(mdata.mod["atac"].var)
    rows = []
    for name, net in nets.items():
        if name == "distance":
            continue
        t = egrn.peak_gene_metrics(net, links, candidates=cand, method=name)
        rows.append(t[t.method == name][["method", "cell_type", "auroc"]])
    rows.append(egrn.peak_gene_metrics(nets[methods[0]], links, candidates=cand).query("method == 'distance'")
                [["method", "cell_type", "auroc"]])
    gxr = pd.concat(rows).groupby("method", sort=False)["auroc"].mean().reset_index()
    gxr.to_csv(outdir / "gxr.csv", index=False)
    if "consensus" in nets:
        c = nets["consensus"]
        wcols = [k for k in c.columns if k.startswith("w_")] + ["carried_by"]
        c.groupby("cell_type")[wcols].first().to_csv(outdir / "consensus_weights.csv")
    pd.Series(timing).to_csv(outdir / "timing.csv")
    return summ.merge(gxr.rename(columns={"method": "network", "auroc": "gxr_auroc"}), on="network", how="left")


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(checkpoint: str = "mouse_mop_demo", out: str = "results/grn_predictive", max_cells: int = 200,
            ig_cells: int = 100, ig_steps: int = 8, top_k: int = 500, n_random: int = 20, pool: int = 30,
            per_type: bool = typer.Option(False, help="score per cell type (default: all cells, mean weights)"),
            method: list[str] = typer.Option(["attention", "knockout", "integrated_gradients", "consensus"]),
            seed: int = 0,
            reuse: list[str] = typer.Option([], help="read this method's network from <out>/<method>.parquet "
                                                     "when it exists (an earlier run with the same settings)")) -> None:
        summ = main(checkpoint, out=out, max_cells=max_cells, ig_cells=ig_cells, ig_steps=ig_steps, top_k=top_k,
                    n_random=n_random, pool=pool or None, groupby="cell_type" if per_type else None,
                    methods=tuple(method), seed=seed, reuse=tuple(reuse))
        with pd.option_context("display.width", 200):
            typer.echo(summ.round(4).to_string(index=False))

    app()


if __name__ == "__main__":
    _cli()
