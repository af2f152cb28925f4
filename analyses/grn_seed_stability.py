"""Stability of extracted peak -> gene networks across training seeds (top-k Jaccard per cell type).

Usage::

    python analyses/grn_seed_stability.py --net seed0=results/grn_v/mouse_mop_demo \
        --net seed1=results/grn_v/demo_v_s1 --net seed2=results/grn_v/demo_v_s2 \
        --method attention --method knockout --out results/grn_stability_v

Each ``--net`` is a directory written by ``analyses/extract_grn.py`` (``<method>.parquet``).
Edges with weight exactly 0 are dropped first (see ``main``). For every method, the pairwise top-k Jaccard (``scdiffx_grn.eval.grn.stability``) of the
networks ranked by ``|weight|`` and, when several cell types are present, by the cell-type
``specificity`` score (``grn.type_specificity``), with the random expectation for k of n pairs.
Writes ``<out>/stability.csv`` and ``<out>/stability.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def random_jaccard(k: int, n: int) -> float:
    """Expected Jaccard of two random k-subsets of n items."""
    inter = k * k / n
    return inter / (2 * k - inter)


def main(nets: dict[str, str], methods=("attention", "knockout"), ks=(200, 1000),
         out: str = "results/grn_stability_v") -> pd.DataFrame:
    from scdiffx_grn import grn
    from scdiffx_grn.eval import grn as egrn

    rows = []
    for m in methods:
        tabs = {}
        for name, d in nets.items():
            p = Path(d) / f"{m}.parquet"
            if p.exists():
                tabs[name] = grn.read_grn(p)
        if len(tabs) < 2:
            continue
        # exact zeros (knockout / IG: the peak is closed in every sampled cell of the type) are the
        # same in every seed by construction (same cells); they are dropped so that they neither
        # fill a top-k nor inflate its overlap, and the random expectation uses the non-zero count
        tabs = {k: v[v["weight"] != 0] for k, v in tabs.items()}
        per_type_n = next(iter(tabs.values())).groupby("cell_type").size()
        n_pairs = int(per_type_n.median())
        rankings = {"|weight|": tabs}
        if next(iter(tabs.values()))["cell_type"].nunique() > 1:
            rankings["specificity"] = {k: grn.type_specificity(v).assign(weight=lambda x: x["specificity"])
                                       for k, v in tabs.items()}
        for rk, t in rankings.items():
            for k in ks:
                st = egrn.stability(t, k=k)
                rows.append({"method": m, "ranking": rk, "k": k, "n_networks": len(t),
                             "jaccard_mean": st["jaccard"].mean(), "jaccard_min": st["jaccard"].min(),
                             "jaccard_max": st["jaccard"].max(),
                             "pair_means": "; ".join(f"{a}-{b} {j:.3f}" for (a, b), j in
                                                     st.groupby(["a", "b"])["jaccard"].mean().items()),
                             "random": float(sum(random_jaccard(min(k, n), n) for n in per_type_n) / len(per_type_n)),
                             "nonzero_pairs_per_type": n_pairs})
    df = pd.DataFrame(rows)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    df.to_csv(outp / "stability.csv", index=False)
    cols = list(df.columns)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
           for r in df.itertuples(index=False)]
    (outp / "stability.md").write_text("\n".join(md) + "\n")
    print(df.to_string())
    return df


if __name__ == "__main__":
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(net: list[str] = typer.Option(..., help="name=directory of extract_grn outputs (repeatable)"),
            method: list[str] = typer.Option(["attention", "knockout"], help="repeatable"),
            k: list[int] = typer.Option([200, 1000], help="top-k (repeatable)"),
            out: str = "results/grn_stability_v") -> None:
        main(dict(x.split("=", 1) for x in net), methods=tuple(method), ks=tuple(k), out=out)

    app()
