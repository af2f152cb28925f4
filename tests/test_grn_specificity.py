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


def _two_type_regulation(seed: int = 0, n_per_type: int = 300, n_targets: int = 20):
    """Types A and B with different planted regulation: ``t0`` drives ``a1..a20`` through peaks open in A,
    ``t1`` drives ``b1..b20`` through peaks open in B; ``t0`` is expressed in A only, ``t1`` in B only.

    The TF -> peak prior (both TFs bind every peak) and the peak -> gene weights (peak k -> its gene,
    weight 1) are the same in both types: only the types' own cells tell them apart."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = 2 * n_per_type
    ct = np.repeat(["A", "B"], n_per_type)
    in_a = ct == "A"
    t0 = np.where(in_a, rng.gamma(2.0, 3.0, n), 0.02)
    t1 = np.where(~in_a, rng.gamma(2.0, 3.0, n), 0.02)
    targets = [f"a{i}" for i in range(1, n_targets + 1)] + [f"b{i}" for i in range(1, n_targets + 1)]
    genes = ["t0", "t1"] + targets + [f"x{i}" for i in range(20)]
    lam = np.full((n, len(genes)), 4.0)
    lam[:, 0], lam[:, 1] = t0, t1
    for j in range(n_targets):
        lam[:, 2 + j] = np.where(in_a, 0.5 + 2.0 * t0, rng.gamma(4.0, 3.0, n))                # a_j follows t0 in A
        lam[:, 2 + n_targets + j] = np.where(~in_a, 0.5 + 2.0 * t1, rng.gamma(4.0, 3.0, n))   # b_j follows t1 in B
    R = rng.poisson(lam).astype(np.float32)
    peaks = [f"chr1_{1000 * (i + 1)}_{1000 * (i + 1) + 500}" for i in range(len(targets))]
    open_p = np.where(np.arange(len(targets))[None, :] < n_targets, np.where(in_a, 0.4, 0.02)[:, None],
                      np.where(in_a, 0.02, 0.4)[:, None])
    A = (rng.uniform(size=(n, len(peaks))) < open_p).astype(np.float32)
    obs = pd.DataFrame({"cell_type": ct}, index=[f"c{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(R), obs=obs.copy(), var=pd.DataFrame(index=genes))
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(), var=pd.DataFrame(index=peaks))
    rna.layers["counts"] = rna.X.copy()
    atac.layers["counts"] = atac.X.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = ct
    pg = pd.DataFrame([(p, g, 1.0, c) for c in ("A", "B") for p, g in zip(peaks, targets)],
                      columns=["source", "target", "weight", "cell_type"])
    mdata.uns["grn"] = {"params": {"groupby": "cell_type", "group_column": "cell_type"}, "network": pg}
    tp = pd.DataFrame([(t, p) for t in ("t0", "t1") for p in peaks], columns=["tf", "peak"])
    return mdata, tp, targets[:n_targets], targets[n_targets:]


def test_tf_layer_default_two_types_with_different_regulation_differ_in_top_edges():
    mdata, tp, a_targets, b_targets = _two_type_regulation()
    net = grn.tf_gene_network(mdata, tp, tfs=["t0", "t1"], copy=True).uns["grn_tf"]["network"]
    edges = {c: set(zip(d.source, d.target)) for c, d in net.groupby("cell_type")}
    # each type's edges come from its own cells: its own TF, through the peaks open in it
    assert edges["A"] == {("t0", g) for g in a_targets}, sorted(edges["A"])
    assert edges["B"] == {("t1", g) for g in b_targets}, sorted(edges["B"])
    # and its top edges by |weight| are its planted regulation, none shared with the other type
    top = grn.grn_df(net, top_k=10, rank_by="weight")
    ta = set(zip(top[top.cell_type == "A"].source, top[top.cell_type == "A"].target))
    tb = set(zip(top[top.cell_type == "B"].source, top[top.cell_type == "B"].target))
    assert ta <= {("t0", g) for g in a_targets} and tb <= {("t1", g) for g in b_targets} and not ta & tb
    assert (net["corr"] > 0.5).all(), net
    # a TF that is not a gene of the data cannot be tested: its paths are filtered by their peaks only
    extra = pd.concat([tp, pd.DataFrame({"tf": ["tX"], "peak": [tp.peak.iloc[0]]})], ignore_index=True)
    nx_ = grn.tf_gene_network(mdata, extra, tfs=["t0", "t1", "tX"], copy=True).uns["grn_tf"]["network"]
    assert set(nx_[nx_.source == "tX"].cell_type) == {"A"}
    # type_pvalue=None: every path of the prior in every type (the same 80 edges in both), weights alone differ
    every = grn.tf_gene_network(mdata, tp, tfs=["t0", "t1"], type_pvalue=None, copy=True).uns["grn_tf"]["network"]
    sets = [set(zip(d.source, d.target)) for _, d in every.groupby("cell_type")]
    assert sets[0] == sets[1] and len(sets[0]) == 2 * (len(a_targets) + len(b_targets))
    with pytest.raises(OptionError, match="type_pvalue"):
        grn.tf_gene_network(mdata, tp, type_pvalue=0.0)


def test_depletion_test_matches_a_reference_two_proportion_test():
    from scipy.stats import norm

    from scdiffx_grn.grn._tf import _depleted

    rng = np.random.default_rng(3)
    inside = rng.uniform(size=500) < 0.3
    X = (rng.uniform(size=(500, 6)) < np.array([0.1, 0.25, 0.3, 0.05, 0.2, 0.0])).astype(float)
    X[inside, 1] = (rng.uniform(size=inside.sum()) < 0.01)       # feature 1 depleted inside
    X[inside, 2] = (rng.uniform(size=inside.sum()) < 0.6)        # feature 2 enriched inside
    got = _depleted(X, inside, 0.05)
    for j in range(6):
        k1, n1, k0, n0 = X[inside, j].sum(), inside.sum(), X[~inside, j].sum(), (~inside).sum()
        pp = (k1 + k0) / (n1 + n0)
        se = np.sqrt(pp * (1 - pp) * (1 / n1 + 1 / n0))
        ref = bool(se > 0 and norm.cdf((k1 / n1 - k0 / n0) / se) < 0.05)
        assert got[j] == ref, j
    assert got[1] and not got[2] and not got[5]
