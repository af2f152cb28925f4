"""Cell-type-specific networks: planted type-specific links survive a per-type scale."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from scdiffx_grn import grn
from scdiffx_grn._errors import OptionError, ScdxError


def _planted(seed: int = 0) -> pd.DataFrame:
    """40 shared edges in 3 types; type B has 10x larger weights everywhere (a per-type scale);
    edges 0-4 are planted strong in A only, edges 5-9 strong in C only."""
    rng = np.random.default_rng(seed)
    edges = [(f"TF{i % 8}", f"g{i}") for i in range(40)]
    rows = []
    for ct, scale in (("A", 1.0), ("B", 10.0), ("C", 1.0)):
        w = rng.uniform(0.5, 1.0, len(edges))
        if ct == "A":
            w[:5] = 4.0
        if ct == "C":
            w[5:10] = 4.0
        for (s, t), x in zip(edges, w * scale):
            rows.append((s, t, float(x), ct))
    return pd.DataFrame(rows, columns=["source", "target", "weight", "cell_type"])


def test_abs_weight_ranking_picks_scale_not_specificity():
    # the failure the fix addresses: by |weight| every type's top edges are the same pairs and
    # type B dominates every row
    d = _planted()
    piv = d.pivot_table(index="target", columns="cell_type", values="weight")
    assert (piv.idxmax(axis=1) == "B").all()


def test_type_specificity_recovers_planted_links():
    d = _planted()
    s = grn.type_specificity(d, top_k=5)
    top = {ct: set(sub["target"]) for ct, sub in s.groupby("cell_type")}
    assert top["A"] == {f"g{i}" for i in range(5)}
    assert top["C"] == {f"g{i}" for i in range(5, 10)}
    planted = {f"g{i}" for i in range(10)}
    assert not (top["B"] & planted)  # B's scale does not make it take the planted edges
    full = grn.type_specificity(d)
    assert len(full) == len(d)
    # in B the planted edges are negative (strong in another type)
    b = full[(full["cell_type"] == "B") & full["target"].isin([f"g{i}" for i in range(10)])]
    assert (b["specificity"] < 0).all()


def test_specificity_heatmap_shows_planted_types_not_scale():
    import matplotlib.pyplot as plt

    d = _planted()
    fig = grn.grn_specificity_heatmap(d, top_k=5, level="edge")
    ax = fig.axes[0]
    Z = np.asarray(ax.images[0].get_array())
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    peak = {r: cols[int(np.argmax(z))] for r, z in zip(rows, Z)}
    for i in range(5):
        assert peak[f"TF{i % 8} -> g{i}"] == "A"
    for i in range(5, 10):
        assert peak[f"TF{i % 8} -> g{i}"] == "C"
    # not one column pattern: rows peak in more than one type
    assert len(set(peak.values())) >= 2
    plt.close(fig)


def test_type_specificity_needs_two_types():
    d = _planted()
    with pytest.raises(ScdxError, match="two cell types"):
        grn.type_specificity(d[d["cell_type"] == "A"])
    with pytest.raises(ScdxError, match="two cell types"):
        grn.grn_specificity_heatmap(d[d["cell_type"] == "A"])
    with pytest.raises(OptionError, match="level"):
        grn.grn_specificity_heatmap(d, level="gene")


def test_specificity_follows_the_group_column():
    """A network grouped by another label column (named after groupby) gives the same specificity."""
    d = _planted()
    by_ct = grn.type_specificity(d, top_k=5)
    other = d.rename(columns={"cell_type": "lineage"})
    other.attrs["group_column"] = "lineage"
    by_lin = grn.type_specificity(other, top_k=5)
    pd.testing.assert_frame_equal(by_lin.rename(columns={"lineage": "cell_type"}), by_ct)
    # stored as the tl functions store it: the group column comes from the params
    from types import SimpleNamespace

    Holder = SimpleNamespace(uns={"grn": {"params": {"group_column": "lineage"},
                                          "network": d.rename(columns={"cell_type": "lineage"})}})
    pd.testing.assert_frame_equal(grn.type_specificity(Holder, top_k=5).rename(columns={"lineage": "cell_type"}),
                                  by_ct)
    # without a known group column there is nothing to compare
    with pytest.raises(ScdxError, match="two cell types"):
        grn.type_specificity(d.rename(columns={"cell_type": "lineage"}))
    assert len(grn.type_specificity(d.rename(columns={"cell_type": "lineage"}), groupby="lineage")) == len(d)


def test_add_specificity_keeps_rows_and_order():
    from scdiffx_grn.grn._specific import add_specificity

    d = _planted().sample(frac=1.0, random_state=0).reset_index(drop=True)
    out = add_specificity(d)
    pd.testing.assert_frame_equal(out.drop(columns="specificity"), d)
    a = out[(out["cell_type"] == "A") & (out["target"] == "g0")]["specificity"].iloc[0]
    assert a > 1.0


def test_peak_set_enrichment_scaled_specificity_ignores_type_scale():
    from scdiffx_grn.eval import grn as egrn

    rng = np.random.default_rng(1)
    peaks = [f"chr1-{1000 * i}-{1000 * i + 500}" for i in range(300)]
    in_a = rng.random(300) < 0.3
    mem = pd.DataFrame({"A": in_a, "B": rng.random(300) < 0.3}, index=peaks)
    # type a: planted set-A peaks; type b: 20x the scale, random
    imp = pd.DataFrame({"a": 1.0 + 1.5 * in_a + 0.3 * rng.random(300), "b": 20.0 * (1.0 + rng.random(300))},
                       index=peaks)
    tab = egrn.peak_set_enrichment({"net": imp}, mem, {"a": "A", "b": "B"})
    got = tab.set_index(["cell_type", "ranking"])["auroc"]
    assert got[("a", "specificity_scaled")] > 0.95
    assert got[("a", "specificity_scaled")] > got[("a", "specificity")] + 0.1


def _one_type_regulation(seed: int = 0, n_per_type: int = 300, n_genes: int = 80):
    """Two types A, B; TF ``t0`` drives target ``g1`` in A only (in B ``g1`` is independent of it).

    Every TF -> peak -> gene path and every peak -> gene weight is the same in both types, so only
    the types' own cells can tell them apart."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = 2 * n_per_type
    ct = np.repeat(["A", "B"], n_per_type)
    tf = rng.gamma(2.0, 3.0, n)                       # TF expression level, varies within each type
    lam = np.full((n, n_genes), 4.0)
    lam[:, 0] = tf
    lam[:, 1] = np.where(ct == "A", 0.5 + 2.0 * tf, rng.gamma(4.0, 3.0, n))  # g1 follows t0 in A only
    R = rng.poisson(lam).astype(np.float32)
    genes = ["t0"] + [f"g{i}" for i in range(1, n_genes)]
    peaks = [f"chr1_{1000 * (i + 1)}_{1000 * (i + 1) + 500}" for i in range(n_genes)]
    A = (rng.uniform(size=(n, n_genes)) < 0.4).astype(np.float32)
    obs = pd.DataFrame({"cell_type": ct}, index=[f"c{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(R), obs=obs.copy(), var=pd.DataFrame(index=genes))
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(), var=pd.DataFrame(index=peaks))
    rna.layers["counts"] = rna.X.copy()
    atac.layers["counts"] = atac.X.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = ct
    # the same peak -> gene weights in both types; t0 binds every peak
    pg = pd.DataFrame([(p, g, 1.0, c) for c in ("A", "B") for p, g in zip(peaks, genes)],
                      columns=["source", "target", "weight", "cell_type"])
    mdata.uns["grn"] = {"params": {"groupby": "cell_type", "group_column": "cell_type"}, "network": pg}
    tp = pd.DataFrame({"tf": "t0", "peak": peaks})
    return mdata, tp


def test_tf_layer_planted_one_type_regulation():
    mdata, tp = _one_type_regulation()
    net = grn.tf_gene_network(mdata, tp, tfs=["t0"], copy=True).uns["grn_tf"]["network"]
    e = net[(net.source == "t0") & (net.target == "g1")].set_index("cell_type")
    # the TF -> target correlation comes from each type's own cells: strong in A, none in B
    assert e.loc["A", "corr"] > 0.5 and e.loc["A", "corr"] - e.loc["B", "corr"] > 0.5, e
    assert e.loc["A", "weight"] > 2 * abs(e.loc["B", "weight"])
    # corr_pvalue: a type keeps the edges its own cells support (per-type correlation p < 0.05)
    kept = grn.tf_gene_network(mdata, tp, tfs=["t0"], corr_pvalue=0.05, copy=True).uns["grn_tf"]["network"]
    k1 = kept[kept.target == "g1"]
    assert list(k1.cell_type) == ["A"] and (kept.corr_p < 0.05).all()
    assert kept.groupby("cell_type").size().max() < 0.5 * (mdata["rna"].n_vars - 1)
    # the planted edge is among A's 3 most specific edges (of 79) and is not selected for B
    top = grn.grn_df(net, top_k=3)
    assert "g1" in set(top[top.cell_type == "A"].target) and "g1" not in set(top[top.cell_type == "B"].target)
    # per_type=False is the pooled correlation (one value for both types), weight="sign" the earlier weights
    pooled = grn.tf_gene_network(mdata, tp, tfs=["t0"], per_type=False, weight="sign", copy=True)
    pooled = pooled.uns["grn_tf"]["network"]
    p = pooled[(pooled.source == "t0") & (pooled.target == "g1")].set_index("cell_type")
    assert p.loc["A", "corr"] == p.loc["B", "corr"] and p.loc["A", "weight"] == p.loc["B", "weight"]
    with pytest.raises(OptionError, match="weight"):
        grn.tf_gene_network(mdata, tp, tfs=["t0"], weight="rank")
    with pytest.raises(OptionError, match="rank_by"):
        grn.grn_df(net, top_k=1, rank_by="corr")
