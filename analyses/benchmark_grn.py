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
          "Rows with `beats_baselines == False` in the CSVs are networks that do not beat the best baseline.", ""]
    if len(stab):
        md += ["## Stability (top-k Jaccard across seeds)", "",
               _md(stab.groupby("method", as_index=False)["jaccard"].mean()), ""]
    atomic_write_text(outp / "benchmark_grn.md", "\n".join(md))
    return pd.concat([pg.assign(level="peak_gene"), tf.assign(level="tf_gene")], ignore_index=True)


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
