"""Benchmark GRNs on the mouse MOp SNARE-seq data against references and model-free baselines.

Peak -> gene: model scores vs the data's region -> gene links (scMoMaT GxR), with distance,
metacell correlation, accessibility and target-degree baselines.
TF -> gene: the CellOracle mm10 base GRN (motif prior; academic licence, benchmark use only)
maps TFs onto peaks; networks are scored against DoRothEA A-C, CollecTRI (mouse by case) and
TRRUST, with the TF-swap control, the target-degree baseline and the same TF layer applied to
the model-free peak -> gene baselines.

Writes ``<out>/peak_gene_metrics.csv``, ``<out>/tf_gene_metrics.csv``, ``<out>/stability.csv``
and ``<out>/benchmark_grn.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def _shared_dir() -> Path:
    env = os.environ.get("SCDX_DATA_DIR")
    if env:
        return Path(env)
    try:
        from scdiffx_grn import datasets

        return Path(datasets.shared_data_dir())
    except Exception:  # noqa: BLE001
        return Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _mouse_case(ref: pd.DataFrame) -> pd.DataFrame:
    cap = lambda s: s.astype(str).str.capitalize()
    return ref.assign(source=cap(ref["source"]), target=cap(ref["target"]))


def references() -> dict[str, pd.DataFrame]:
    """Mouse reference networks: DoRothEA A-C, CollecTRI (human mapped by case), TRRUST."""
    from scdiffx_grn import datasets

    return {"dorothea_ABC": datasets.dorothea("mouse", "ABC"),
            "collectri_mouse_case": _mouse_case(datasets.collectri("human")),
            "trrust": datasets.trrust("mouse")}


def main(grn_files: dict[str, str] | None = None, *, out: str = "results/grn_benchmark", n_cells: int | None = None,
         n_metacells: int = 20, top_k: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Run the benchmark; returns the combined metrics table.

    Parameters
    ----------
    grn_files
        ``{name: path}`` of peak -> gene networks written by ``analyses/extract_grn.py``
        (names like ``attention_seed0``). ``None``: only the model-free baselines are scored.
    n_metacells
        Metacells per cell type for the correlation baselines and TF signs.
    top_k
        k of the top-k Jaccard stability between networks of the same method.
    """
    from scdiffx_grn import datasets, grn
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import grn as egrn

    outp = Path(out)
    mdata = datasets.mouse_mop(n_cells=n_cells, seed=seed)
    tss = grn.read_tss(datasets.tss_annotation("mm10"))
    nets = {k: grn.read_grn(v) for k, v in (grn_files or {}).items()}
    if nets:
        # score every method on the same candidate pairs: those of the peaks the networks cover
        # (a model trained on a peak subset cannot rank peaks it never saw)
        covered = set().union(*(set(n["source"].astype(str)) for n in nets.values()))
        keep = mdata.mod["atac"].var_names.isin(list(covered))
        mdata.mod["atac"] = mdata.mod["atac"][:, keep].copy()
        mdata.update()
    cand = grn.peak_gene_candidates(mdata, tss_table=tss)
    links = datasets.mouse_mop_links()
    originals = list(nets)
    nets = with_variants(nets, cand)
    baselines = egrn.peak_gene_baselines(mdata, cand, "cell_type", n_metacells, seed=seed)

    # ---- peak -> gene
    pg_rows = []
    for name, net in (nets or {"metacell_correlation": baselines["metacell_correlation"]}).items():
        bl = {k: v for k, v in baselines.items() if k != name}
        pg_rows.append(egrn.peak_gene_metrics(net, links, candidates=cand, baselines=bl, method=name))
    pg = pd.concat(pg_rows, ignore_index=True)

    # ---- TF -> gene (CellOracle base GRN as the motif prior)
    base = pd.read_parquet(_shared_dir() / "grn" / "celloracle_mm10_promoter_baseGRN_gimmev5_fpr1.parquet")
    genes = list(mdata.mod["rna"].var_names)
    tf_peak = grn.tf_peak_from_base_grn(base, mdata, tfs=genes)
    from scdiffx_grn.grn._metacells import metacell_profiles, metacells

    expr, _, _ = metacell_profiles(mdata, metacells(mdata, "cell_type", n_metacells, seed=seed), peaks=[])
    tf_nets = {name: grn.tf_gene_network(net, tf_peak, expr) for name, net in nets.items()}
    # baseline weights may be negative (-|distance|, negative correlations): use within-cell-type
    # percentile ranks so that "larger = stronger" holds before the TF layer multiplies them
    tf_base = {f"tf_{k}": grn.tf_gene_network(
                   v.assign(weight=v.groupby("cell_type")["weight"].rank(pct=True).to_numpy()), tf_peak, expr)
               for k, v in baselines.items() if k != "target_degree"}
    tf_base.update(tf_prior_baselines(cand, tf_peak, expr))
    tf_rows = []
    for ref_name, ref in references().items():
        for name, net in (tf_nets or {"tf_metacell_correlation": tf_base["tf_metacell_correlation"]}).items():
            t = egrn.tf_gene_metrics(net, ref, tfs_universe=genes, genes_universe=genes,
                                     baselines={k: v for k, v in tf_base.items() if k != name}, method=name)
            tf_rows.append(t.assign(reference=ref_name))
    tf = pd.concat(tf_rows, ignore_index=True)

    # ---- stability across seeds (names "<method>_seed<k>")
    by_method: dict[str, dict] = {}
    for name in originals:
        by_method.setdefault(name.split("_seed")[0], {})[name] = nets[name]
    stab = pd.concat([egrn.stability(v, k=top_k).assign(method=m) for m, v in by_method.items() if len(v) > 1]
                     or [pd.DataFrame(columns=["a", "b", "cell_type", "k", "jaccard", "method"])], ignore_index=True)

    outp.mkdir(parents=True, exist_ok=True)
    for df, f in ((pg, "peak_gene_metrics.csv"), (tf, "tf_gene_metrics.csv")):
        atomic_write_text(outp / f, df.to_csv(index=False))

    # ---- how much of the GxR truth is distance, and what each score adds beyond distance
    truth = gxr_distance_summary(cand, links)
    strat = pd.DataFrame([{"method": name, "cell_type": ct, "auroc_within_distance_bins": a}
                          for name, net in {**nets, **baselines}.items()
                          for ct, a in distance_stratified_auroc(net, links, cand).items()])
    multi = pd.DataFrame([{"method": name, "cell_type": ct, "auroc_multi_candidate_peaks": a}
                          for name, net in {**nets, **baselines}.items()
                          for ct, a in multi_candidate_auroc(net, links, cand).items()])
    strat = strat.merge(multi, on=["method", "cell_type"], how="outer")
    between = pd.DataFrame([{"method": name, "between_type_spearman": between_type_spearman(net)}
                            for name, net in nets.items() if "+" not in name and "|" not in name])

    outp.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp / "gxr_vs_distance.csv", pd.DataFrame([truth]).to_csv(index=False))
    # the model-free TF -> gene networks, for the biomarker report's extracted-network control
    (outp / "tf_baselines").mkdir(parents=True, exist_ok=True)
    for k, v in tf_base.items():
        grn.write_grn(v, outp / "tf_baselines" / f"{k}.parquet")
    atomic_write_text(outp / "distance_stratified.csv", strat.to_csv(index=False))
    atomic_write_text(outp / "between_type.csv", between.to_csv(index=False))
    for df, f in ((pg, "peak_gene_metrics.csv"), (tf, "tf_gene_metrics.csv"), (stab, "stability.csv")):
        atomic_write_text(outp / f, df.to_csv(index=False))
    md = ["# GRN benchmark (mouse MOp SNARE-seq)", "", "## Peak -> gene vs GxR links", "",
          _md(pg.groupby(["method", "is_baseline"], as_index=False)[["auroc", "auprc_ratio", "epr"]].mean()), "",
          "## TF -> gene vs references (CellOracle motif prior)", "",
          _md(tf.groupby(["reference", "method", "is_baseline"], as_index=False)[
              ["auroc", "auprc_ratio", "epr", "tf_swap_frac"]].mean()), "",
          "## Peak -> gene AUROC per cell type", "",
          _md(pg.pivot_table(index="cell_type", columns="method", values="auroc").reset_index()), "",
          "## TF -> gene AUROC vs DoRothEA A-C per cell type", "",
          _md(tf[tf["reference"] == "dorothea_ABC"].pivot_table(index="cell_type", columns="method",
                                                                  values="auroc").reset_index()), "",
          "## How much the GxR truth is distance", "", _md(pd.DataFrame([truth])), "",
          "## Peak -> gene AUROC within distance deciles (information beyond distance; 0.5 = none)", "",
          _md(strat.groupby("method", as_index=False)[["auroc_within_distance_bins",
                                                       "auroc_multi_candidate_peaks"]].mean()), "",
          "## Between-cell-type Spearman of each network's weights (1 = every type the same)", "",
          _md(between), "",
          "Rows with `beats_baselines == False` in the CSVs are networks that do not beat the best baseline.", ""]
    if len(stab):
        md += ["## Stability (top-k Jaccard across seeds)", "",
               _md(stab.groupby("method", as_index=False)["jaccard"].mean()), ""]
    atomic_write_text(outp / "benchmark_grn.md", "\n".join(md))
    return pd.concat([pg.assign(level="peak_gene"), tf.assign(level="tf_gene")], ignore_index=True)


def tf_prior_baselines(cand: pd.DataFrame, tf_peak: pd.DataFrame, expr: pd.DataFrame) -> dict:
    """Model-free TF -> gene baselines: the motif prior alone (every candidate peak -> gene pair
    weight 1, so a TF -> gene weight counts the TF's motif peaks near the gene), the hub-target
    prior (a gene's number of motif-prior regulators, for every TF) and TF-target co-expression
    (|Spearman| across all metacells, every TF x gene pair, independent of peaks)."""
    import numpy as np

    from scdiffx_grn import grn
    from scdiffx_grn.grn._tf import pair_corr

    ones = cand.rename(columns={"peak": "source", "gene": "target"})[["source", "target"]].assign(
        weight=1.0, cell_type="all")
    motif = grn.tf_gene_network(ones, tf_peak, None, sign=False)
    hub = motif.assign(weight=motif.groupby("target")["source"].transform("nunique").astype(float))
    tfs = sorted(set(tf_peak["tf"]) & set(expr.columns))
    genes = list(expr.columns)
    src = np.repeat(tfs, len(genes))
    tgt = np.tile(genes, len(tfs))
    corr = np.nan_to_num(pair_corr(expr, expr, src, tgt, "spearman"))
    coexp = pd.DataFrame({"source": src, "target": tgt, "weight": np.abs(corr), "cell_type": "all"})
    coexp = coexp[coexp["source"] != coexp["target"]]
    return {"tf_motif_prior_only": motif, "tf_hub_target_prior": hub, "tf_coexpression": coexp}


def gxr_distance_summary(cand: pd.DataFrame, links: pd.DataFrame) -> dict:
    """How far the GxR truth is built from distance: coverage, distance AUROC, fraction of GxR
    links that go to the peak's closest candidate gene (vs that fraction among all candidate pairs)."""
    from scdiffx_grn.eval.grn import _edges, ranking_metrics

    links = _edges(links)
    c = cand.rename(columns={"source": "peak", "target": "gene"}).drop_duplicates(["peak", "gene"]).copy()
    c["d"] = c["distance"].abs()
    c["closest"] = c["d"] == c.groupby("peak")["d"].transform("min")
    key = c["peak"].astype(str) + "\t" + c["gene"].astype(str)
    y = key.isin(set(links["source"].astype(str) + "\t" + links["target"].astype(str))).to_numpy()
    peaks_with_link = c.loc[y, "peak"].nunique()
    m = ranking_metrics(y, -c["d"].to_numpy(float))
    return {"candidate_pairs": len(c), "gxr_true_pairs": int(y.sum()),
            "peaks_with_a_gxr_link": int(peaks_with_link), "candidate_peaks": int(c["peak"].nunique()),
            "distance_auroc": m["auroc"], "distance_epr": m["epr"],
            "gxr_links_to_closest_gene": float(c.loc[y, "closest"].mean()),
            "candidates_to_closest_gene": float(c["closest"].mean()),
            "median_distance_gxr": float(c.loc[y, "d"].median()),
            "median_distance_other": float(c.loc[~y, "d"].median())}


def distance_stratified_auroc(net: pd.DataFrame, links: pd.DataFrame, cand: pd.DataFrame,
                              n_bins: int = 10) -> dict:
    """Per cell type: AUROC of the score vs GxR within distance deciles (mean over deciles with
    both classes, weighted by size) -- what the score adds beyond distance (0.5 = nothing)."""
    import numpy as np

    from scdiffx_grn.eval.grn import _edges, ranking_metrics

    links = _edges(links)
    net = _edges(net)
    c = cand.rename(columns={"source": "peak", "target": "gene"}).drop_duplicates(["peak", "gene"]).copy()
    key = c["peak"].astype(str) + "\t" + c["gene"].astype(str)
    y = key.isin(set(links["source"].astype(str) + "\t" + links["target"].astype(str))).to_numpy()
    bins = pd.qcut(c["distance"].abs().rank(method="first"), n_bins, labels=False).to_numpy()
    out = {}
    n = net.assign(cell_type=net["cell_type"].astype(str) if "cell_type" in net else "all")
    for ct, sub in n.groupby("cell_type"):
        s = pd.Series(sub["weight"].to_numpy(float), index=sub["source"].astype(str) + "\t" + sub["target"].astype(str))
        s = s[~s.index.duplicated()]
        score = s.reindex(key).fillna(s.min() - 1 if len(s) else 0).to_numpy()
        vals, wts = [], []
        for b in range(n_bins):
            k = bins == b
            if y[k].any() and (~y[k]).any():
                vals.append(ranking_metrics(y[k], score[k])["auroc"])
                wts.append(k.sum())
        out[ct] = float(np.average(vals, weights=wts)) if vals else float("nan")
    return out


def multi_candidate_auroc(net: pd.DataFrame, links: pd.DataFrame, cand: pd.DataFrame) -> dict:
    """Per cell type: AUROC vs GxR on the peaks with >= 2 candidate genes only (which of a
    peak's genes is the linked one - the part of the task not decided by whether a peak has a
    link at all)."""
    c = cand.rename(columns={"source": "peak", "target": "gene"}).drop_duplicates(["peak", "gene"])
    multi = c[c.groupby("peak")["gene"].transform("size") >= 2]
    return distance_stratified_auroc(net, links, multi, n_bins=1)


def between_type_spearman(net: pd.DataFrame) -> float:
    """Mean pairwise Spearman of edge weights between cell types (1: every type ranks edges alike)."""
    import numpy as np

    if "cell_type" not in net or net["cell_type"].nunique() < 2:
        return float("nan")
    M = net.pivot_table(index=["source", "target"], columns="cell_type", values="weight", aggfunc="first")
    R = M.rank().corr().to_numpy()
    return float(R[np.triu_indices_from(R, 1)].mean())


def with_variants(nets: dict, cand: pd.DataFrame) -> dict:
    """Add, for every network, ``<name>|abs|`` (rank by ``|weight|``; for signed scorers such as
    integrated gradients and knockout) and ``<name>+distance`` (mean of the within-cell-type
    percentile ranks of the score and of TSS closeness: does the model add to the genomic prior?)."""
    out = {}
    closeness = pd.Series(-cand["distance"].abs().to_numpy(float),
                          index=cand["peak"].astype(str) + "\t" + cand["gene"].astype(str))
    closeness = closeness[~closeness.index.duplicated()]
    for name, net in nets.items():
        out[name] = net
        if (net["weight"] < 0).any():
            out[f"{name}|abs|"] = net.assign(weight=net["weight"].abs())
        key = net["source"].astype(str) + "\t" + net["target"].astype(str)
        close = closeness.reindex(key).to_numpy()
        r_model = net.assign(_w=net["weight"].abs()).groupby("cell_type")["_w"].rank(pct=True).to_numpy()
        r_close = net.assign(_c=close).groupby("cell_type")["_c"].rank(pct=True).to_numpy()
        out[f"{name}+distance"] = net.assign(weight=(r_model + r_close) / 2)
    return out


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(grn: list[str] = typer.Option([], help="name=path of a peak -> gene network (repeatable)"),
            out: str = "results/grn_benchmark", n_cells: int | None = None, n_metacells: int = 20,
            top_k: int = 1000, seed: int = 0) -> None:
        files = dict(g.split("=", 1) for g in grn)
        main(files or None, out=out, n_cells=n_cells, n_metacells=n_metacells, top_k=top_k, seed=seed)
        typer.echo(f"wrote {out}")

    app()


if __name__ == "__main__":
    _cli()
