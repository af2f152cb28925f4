"""Real-shape data path: the 10x-shaped simulator, feature selection for regulation, bounded model sizes,
the automatic preset and the real-size benchmark script (at a small scale)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdiffx_grn as scdx
from scdiffx_grn.datasets import simulate_multiome, write_10x_h5



def _has_hg38() -> bool:
    try:
        scdx.datasets.data_path("hg38_tss", verify=False)
        return True
    except Exception:
        return False


hg38 = pytest.mark.skipif(not _has_hg38(), reason="hg38 TSS annotation (shared data) not available")


@pytest.fixture(scope="module")
def sim():
    return simulate_multiome(300, 2000, 5000, n_types=4, n_links=150, seed=3)


@hg38
def test_simulate_shape_sparsity_and_annotation(sim):
    rna, atac = sim.mod["rna"], sim.mod["atac"]
    assert rna.shape == (300, 2000) and atac.shape == (300, 5000)
    for a in (rna, atac):
        assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
        assert np.array_equal(a.X.data, np.round(a.X.data)) and (a.X.data > 0).all()
        assert (a.layers["counts"] != a.X).nnz == 0
    # per-cell sparsity near the asked-for 7.2 % / 7.1 % (planted links add a little)
    g = np.diff(rna.X.indptr).mean() / 2000
    p = np.diff(atac.X.indptr).mean() / 5000
    assert 0.05 < g < 0.12 and 0.05 < p < 0.12
    # real symbols at their annotated TSS
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    ann = rna.var[rna.var["annotated"]]
    assert len(ann) == 2000  # the annotation has more genes than asked for: all real
    m = ann.reset_index(names="gene").merge(tss, on=["gene", "chrom", "tss"])
    assert set(m["gene"]) == set(ann.index)
    # peaks: non-overlapping, sorted per chromosome, names parse to the stored coordinates
    v = atac.var
    for _, d in v.groupby("chrom", observed=True):
        assert (d["start"].to_numpy()[1:] > d["end"].to_numpy()[:-1]).all()
    parsed = scdx.grn.parse_peak_names(v.index)
    assert (parsed["start"].to_numpy() == v["start"].to_numpy()).all()
    assert sim.obs["cell_type"].nunique() == 4


@hg38
def test_simulate_planted_links_are_real_and_visible(sim):
    rna, atac = sim.mod["rna"], sim.mod["atac"]
    links = sim.uns["planted_pairs"]
    assert len(links) == 150 and links[["peak", "gene"]].duplicated().sum() == 0
    assert (links["distance"].abs() <= 100_000).all()
    # the distance is the package's candidate-pair distance
    cand = scdx.grn.peak_gene_candidates(atac.var, genes=links["gene"].unique(),
                                         tss_table=rna.var.reset_index(names="gene")[["gene", "chrom", "tss"]],
                                         window=100_000)
    m = links.merge(cand, on=["peak", "gene"], suffixes=("", "_c"))
    assert len(m) == len(links)
    # gene counts are higher where the linked peak is open, for nearly every link
    A = atac.X.tocsc()
    R = rna.X.tocsc()
    up = 0
    for p, gname in zip(links["peak"], links["gene"]):
        o = A[:, atac.var_names.get_loc(p)].toarray().ravel() > 0
        y = R[:, rna.var_names.get_loc(gname)].toarray().ravel()
        up += y[o].mean() > y[~o].mean()
    assert up >= 0.95 * len(links)


@hg38
def test_simulate_is_deterministic_and_fills_unannotated_genes():
    a = simulate_multiome(40, 30_000, 3000, n_types=2, n_links=20, seed=1)
    b = simulate_multiome(40, 30_000, 3000, n_types=2, n_links=20, seed=1)
    assert (a.mod["atac"].X != b.mod["atac"].X).nnz == 0 and (a.mod["rna"].X != b.mod["rna"].X).nnz == 0
    assert a.mod["rna"].var_names.is_unique
    n_ann = int(a.mod["rna"].var["annotated"].sum())
    assert 20_000 < n_ann < 30_000  # the hg38 annotation's main-chromosome genes, then filler names
    assert a.uns["planted_pairs"]["gene"].isin(a.mod["rna"].var_names[a.mod["rna"].var["annotated"]]).all()


@hg38
def test_write_10x_h5_round_trip(sim, tmp_path):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(sim, path)
    back = scdx.datasets.read_multiome(path, labels=sim.obs[["cell_type"]])
    assert list(back.obs_names) == list(sim.obs_names)
    for k in ("rna", "atac"):
        assert list(back.mod[k].var_names) == list(sim.mod[k].var_names)
        assert (back.mod[k].layers["counts"] != sim.mod[k].layers["counts"]).nnz == 0
    assert (back.obs["cell_type"].astype(str).to_numpy() == sim.obs["cell_type"].astype(str).to_numpy()).all()
    with pytest.raises(scdx.OutputError, match="exists"):
        write_10x_h5(sim, path)


@hg38
def test_select_features_keeps_every_window_peak_and_the_planted_pairs(sim):
    links = sim.uns["planted_pairs"]
    user = list(links["gene"].unique()[:5])
    m = simulate_multiome(300, 2000, 5000, n_types=4, n_links=150, seed=3)
    scdx.pp.select_features(m, n_top_genes=200, tfs=True, genes=user, window=50_000, n_latent_peaks=300)
    res = m.uns["select_features"]
    c = res["counts"]
    rna0, atac0 = sim.mod["rna"], sim.mod["atac"]
    kept = m.mod["rna"].var_names
    # genes: HVG | TF | user, counted right
    tfs = set(scdx.datasets.tf_list(list(rna0.var_names)))
    assert set(user) <= set(kept) and set(tfs) <= set(kept)
    assert c["genes"] == len(kept) and c["genes_tf"] == len(tfs) and c["genes_user"] == len(user)
    assert c["genes_hvg"] == 200 and len(kept) <= 200 + len(tfs) + len(user)
    # peaks: exactly the open peaks within the window of a kept gene, plus the most frequently open
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    ref = scdx.grn.peak_gene_candidates(atac0.var, genes=kept, tss_table=tss, window=50_000)
    open_ = np.asarray((atac0.X > 0).sum(0)).ravel()
    ref = ref[open_[atac0.var_names.get_indexer(ref["peak"])] > 0]
    top = atac0.var_names[np.argsort(-open_, kind="stable")[:300]]
    assert set(m.mod["atac"].var_names) == set(ref["peak"]) | set(top)
    assert c["peaks_in_window"] == ref["peak"].nunique() and c["candidate_pairs"] == len(ref)
    assert c["peaks"] == m.mod["atac"].n_vars and c["peaks_latent"] == 300
    # the stored candidates are the pairs of the kept features, and planted pairs of kept genes survive
    cand = res["candidates"]
    assert set(zip(cand["peak"], cand["gene"])) == set(zip(ref["peak"], ref["gene"]))
    mine = links[links["gene"].isin(kept) & (links["distance"].abs() <= 50_000)]
    assert len(mine) >= 5
    assert set(zip(mine["peak"], mine["gene"])) <= set(zip(cand["peak"], cand["gene"]))
    assert res["params"]["window"] == 50_000 and res["params"]["genes"] == user


@hg38
def test_select_features_covers_more_pairs_than_top_peaks(sim):
    """The old recipe (HVGs x most open peaks) loses most candidate pairs; the window rule keeps them all."""
    m = sim.copy()
    scdx.pp.select_features(m, n_top_genes=200, tfs=False, window=150_000, n_latent_peaks=0, subset=False)
    kept = m.mod["rna"].var_names[m.mod["rna"].var["selected"]]
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    old = sim.copy()
    scdx.pp.filter_peaks(old, top_n=int(m.mod["atac"].var["selected"].sum()), min_frac=0.0)
    n_old = len(scdx.grn.peak_gene_candidates(old.mod["atac"].var, genes=kept, tss_table=tss, window=150_000))
    assert m.uns["select_features"]["counts"]["candidate_pairs"] > n_old


@hg38
def test_select_features_bad_input(sim):
    with pytest.raises(scdx.UnknownFeatureError, match="NOT_A_GENE"):
        scdx.pp.select_features(sim, genes=["NOT_A_GENE"], copy=True)
    with pytest.raises(scdx.OptionError, match="window"):
        scdx.pp.select_features(sim, window=-1, copy=True)
