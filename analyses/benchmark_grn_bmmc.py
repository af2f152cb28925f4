"""Human validation of GRN extraction: BMMC multiome vs ENCODE cell-type regulatory regions.

The NeurIPS 2021 BMMC starter (hg38) is the human paired set shipped with the project; it
comes with no region -> gene links, so the check is the one scDiffusion-X's regulation
evaluation uses: do the peaks a cell type's network relies on fall in that cell type's ENCODE
H3K27ac / open-chromatin regions (B cells, CD4 T, CD8 T, NK, myeloid; ``../shared/data/
ground_truth/encode_celltype_peaks``)? BMMC cell types are pooled into these five groups.

Per group and method, peaks are ranked by their importance in the group's network (sum of
``|weight|`` over candidate genes) and by their specificity (importance minus the mean over
the other groups); AUROC / AUPRC ratio against membership of the group's ENCODE set. The
accessibility baseline ranks peaks by the fraction of the group's cells where they are open
(and its specificity the same way). ``consensus`` is the evidence combination of
``extract_grn(method="consensus")``. Held-out prediction of the targets (``eval.grn_predictive``)
of every network and of the distance / correlation / accessibility baselines goes to
``grn_predictive.csv``. Also writes TF -> gene metrics against CollecTRI,
DoRothEA A-C and TRRUST with the co-accessibility TF layer (no human motif-peak table ships
with the data).

Usage::

    python analyses/train_model.py --preset bmmc --out runs/bmmc
    python analyses/benchmark_grn_bmmc.py --checkpoint runs/bmmc --out results/grn_bmmc

Writes ``<out>/encode_enrichment.csv``, ``<out>/tf_gene_metrics.csv``, the networks
(``<method>.parquet``) and ``<out>/benchmark_grn_bmmc.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

#: BMMC cell types pooled into the ENCODE cell-type groups.
GROUPS = {
    "B_cell": ["Naive CD20+ B", "B1 B", "Transitional B"],
    "CD4": ["CD4+ T naive", "CD4+ T activated"],
    "CD8": ["CD8+ T"],
    "NK": ["NK"],
    "myeloid": ["CD14+ Mono", "CD16+ Mono", "cDC2"],
}


def encode_peak_sets() -> dict[str, Path]:
    """Paths of the ENCODE cell-type peak BED files (checked against their manifest)."""
    from scdiffx_grn import datasets

    return {g: datasets.data_path("encode_celltype_peaks", f"ground_truth/encode_celltype_peaks/{g}.bed.gz")
            for g in GROUPS}


def main(checkpoint: str, *, out: str = "results/grn_bmmc",
         methods=("attention", "integrated_gradients", "knockout", "consensus"),
         window: int = 150_000, max_cells: int | None = None, translate_steps: int = 10, ig_steps: int = 16,
         seed: int = 0) -> pd.DataFrame:
    """Run the benchmark; returns the ENCODE enrichment table.

    Parameters
    ----------
    checkpoint
        A model trained on the BMMC starter (``analyses/train_model.py --preset bmmc``).
    methods
        Peak -> gene scorers to compare.
    max_cells
        Cells per group (``None``: all).
    """
    import numpy as np

    from scdiffx_grn import ScDiffusionX, datasets, grn
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import grn as egrn

    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    model = ScDiffusionX.load(checkpoint)
    mdata = model.subset_to_model(datasets.bmmc())
    to_group = {ct: g for g, cts in GROUPS.items() for ct in cts}
    mdata.obs["encode_group"] = mdata.obs["cell_type"].astype(str).map(to_group).fillna("other").to_numpy()
    for m in mdata.mod.values():
        m.obs["encode_group"] = mdata.obs.loc[m.obs_names, "encode_group"].to_numpy()
    tss = grn.read_tss(datasets.tss_annotation("hg38"))
    cand = grn.peak_gene_candidates(mdata, tss_table=tss, window=window)
    membership = egrn.peak_set_membership(mdata, encode_peak_sets())
    mapping = {g: g for g in GROUPS}

    nets, timing = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        # each method takes only its own options (extract_grn refuses another method's keywords)
        opts = {k: v for k, v in {"translate_steps": translate_steps, "ig_steps": ig_steps}.items()
                if k in grn.METHODS[method].defaults}
        grn.extract_grn(model, mdata, method=method, candidates=cand, groupby="encode_group", cell_types=list(GROUPS),
                        max_cells=max_cells, seed=seed, key_added=f"grn_{method}", **opts)
        timing[method] = time.perf_counter() - t0
        # the group column is named after groupby ("encode_group"); the eval readers expect cell_type
        nets[method] = grn.network_table(mdata, f"grn_{method}", group="cell_type")
        grn.write_grn(nets[method], outp / f"{method}.parquet")

    importance = {m: egrn.peak_importance(n) for m, n in nets.items()}
    acc = egrn.accessibility_baseline(mdata, cand, "encode_group")
    importance["accessibility (baseline)"] = acc.pivot_table(index="source", columns="cell_type", values="weight",
                                                             aggfunc="first")
    # every peak of the data, not only the candidate ones, for the accessibility ranking of all peaks
    A = mdata.mod["atac"].layers["counts"] if "counts" in mdata.mod["atac"].layers else mdata.mod["atac"].X
    A = (A > 0).astype(np.float32)
    lab = mdata.mod["atac"].obs["encode_group"].to_numpy()
    importance["accessibility, all peaks (baseline)"] = pd.DataFrame(
        {g: np.asarray(A[lab == g].mean(0)).ravel() for g in GROUPS}, index=mdata.mod["atac"].var_names)
    rng = np.random.default_rng(seed)
    importance["random (baseline)"] = pd.DataFrame(rng.random((len(membership), len(GROUPS))),
                                                   index=membership.index, columns=list(GROUPS))
    cand_peaks = pd.unique(cand["peak"].astype(str))
    enr_all = egrn.peak_set_enrichment(importance, membership, mapping).assign(peaks="all")
    enr_cand = egrn.peak_set_enrichment(importance, membership.loc[cand_peaks], mapping).assign(peaks="candidate")
    enr = pd.concat([enr_all, enr_cand], ignore_index=True)

    # TF -> gene with the co-accessibility TF layer, vs human references
    genes = list(mdata.mod["rna"].var_names)
    refs = {"collectri": datasets.collectri("human"), "dorothea_ABC": datasets.dorothea("human", "ABC"),
            "trrust": datasets.trrust("human")}
    tf_rows = []
    for method, net in nets.items():
        grn.tf_gene_network(mdata, "coaccessibility", peak_gene_key=f"grn_{method}", key_added=f"tf_{method}",
                            groupby="encode_group", tfs=genes, seed=seed)
        tfn = grn.network_table(mdata, f"tf_{method}", group="cell_type")
        for rname, ref in refs.items():
            try:
                t = egrn.tf_gene_metrics(tfn, ref, tfs_universe=genes, genes_universe=genes, method=method)
            except Exception as e:  # noqa: BLE001 - e.g. no TF of the data in a reference
                print(f"{method} vs {rname}: {e}")
                continue
            tf_rows.append(t.assign(reference=rname))
    tf = pd.concat(tf_rows, ignore_index=True) if tf_rows else pd.DataFrame()

    # held-out prediction of the targets (no reference): all cells, the model's test cells pooled by 5
    test = egrn.heldout_cells(mdata, model=model)
    pred_nets = dict(nets)
    pred_nets["distance (baseline)"] = egrn.distance_baseline(cand)
    pred_nets["metacell correlation (baseline, train cells)"] = egrn.metacell_correlation(
        mdata[~test].copy(), cand, "encode_group", 10, seed=seed)
    pred_nets["accessibility (baseline, train cells)"] = egrn.accessibility_baseline(mdata[~test].copy(), cand,
                                                                                     "encode_group")
    try:
        pred = egrn.grn_predictive(mdata, pred_nets, model=model, groupby=None, top_k=max(10, len(cand) // 3),
                                   n_random=20, pool=5, seed=seed)
    except Exception as e:  # noqa: BLE001 - too few test cells: reported, not fatal
        print(f"grn_predictive: {e}")
        pred = pd.DataFrame()
    atomic_write_text(outp / "grn_predictive.csv", pred.to_csv(index=False))

    atomic_write_text(outp / "encode_enrichment.csv", enr.to_csv(index=False))
    atomic_write_text(outp / "tf_gene_metrics.csv", tf.to_csv(index=False))
    summ = enr.groupby(["peaks", "ranking", "method"], as_index=False)[["auroc", "auprc_ratio"]].mean()
    md = ["# GRN benchmark, human BMMC vs ENCODE cell-type regions", "",
          f"{mdata.n_obs} cells, {mdata.mod['rna'].n_vars} genes, {mdata.mod['atac'].n_vars} peaks; "
          f"{len(cand)} candidate pairs ({len(cand_peaks)} peaks) within {window // 1000} kb of a TSS.", "",
          "Group sizes: " + ", ".join(f"{g} {int((mdata.obs['encode_group'] == g).sum())}" for g in GROUPS), "",
          "ENCODE set membership of the peaks: "
          + ", ".join(f"{g} {membership[g].mean():.2f}" for g in GROUPS), "",
          "## Mean over the five groups", "", _md(summ), "",
          "## Per group (candidate peaks)", "",
          _md(enr_cand.pivot_table(index=["ranking", "method"], columns="cell_type", values="auroc").reset_index()), "",
          "## Extraction time (s, all five groups)", "",
          _md(pd.DataFrame({"method": list(timing), "seconds": list(timing.values())})), ""]
    if len(tf):
        md += ["## TF -> gene (co-accessibility TF layer) vs references, mean over groups", "",
               _md(tf.groupby(["reference", "method"], as_index=False)[["auroc", "auprc_ratio", "epr",
                                                                          "tf_swap_frac"]].mean()), ""]
    if len(pred):
        md += ["## Held-out prediction of the targets (eval.grn_predictive; all cells, pseudo-cells of 5)", "",
               _md(pred.drop(columns=["group", "kind"], errors="ignore")), ""]
    atomic_write_text(outp / "benchmark_grn_bmmc.md", "\n".join(md))
    return enr


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(checkpoint: str = typer.Option(..., help="model trained on the BMMC starter"),
            out: str = "results/grn_bmmc",
            method: list[str] = typer.Option(["attention", "integrated_gradients", "knockout", "consensus"],
                                             help="repeatable"),
            window: int = 150_000, max_cells: int | None = None, translate_steps: int = 10, ig_steps: int = 16,
            seed: int = 0) -> None:
        main(checkpoint, out=out, methods=tuple(method), window=window, max_cells=max_cells,
             translate_steps=translate_steps, ig_steps=ig_steps, seed=seed)
        typer.echo(Path(out, "benchmark_grn_bmmc.md").read_text())

    app()


if __name__ == "__main__":
    _cli()
