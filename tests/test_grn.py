"""Tests of GRN extraction (scdiffx_grn.grn) and its validation (scdiffx_grn.eval.grn)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdiffx_grn import grn
from scdiffx_grn._errors import (
    InputDataError,
    MissingLabelError,
    OptionError,
    ScdxError,
    UnknownFeatureError,
)
from scdiffx_grn.eval import grn as egrn

from _helpers import StandInInputs
from conftest import model_float32_tol


# ----------------------------------------------------------------------------- fixtures
def _random_peaks(rng, n, chroms=("chr1", "chr2", "chrX"), span=2_000_000):
    chrom = rng.choice(chroms, n)
    start = rng.integers(0, span, n)
    end = start + rng.integers(50, 3000, n)
    names = [f"{c}_{s}_{e}" for c, s, e in zip(chrom, start, end)]
    return pd.DataFrame({"chrom": chrom, "start": start, "end": end}, index=names).loc[lambda d: ~d.index.duplicated()]


def _planted_mdata(seed=0, n_cells=600, n_genes=30, n_peaks=60, n_types=3):
    """Cells of 3 types; gene g_k (k < 10) is driven by peak p_k's accessibility."""
    import anndata as ad
    import mudata as md

    rng = np.random.default_rng(seed)
    ct = rng.integers(0, n_types, n_cells)
    # per-cell-type peak open probabilities with within-type variability
    base = rng.uniform(0.05, 0.6, (n_types, n_peaks))
    state = rng.uniform(0.3, 1.7, (n_cells, 1))  # continuous state shared by all peaks
    prob = np.clip(base[ct] * state * rng.uniform(0.5, 1.5, (n_cells, n_peaks)), 0, 0.95)
    A = (rng.uniform(size=(n_cells, n_peaks)) < prob).astype(np.float32)
    lam = np.full((n_cells, n_genes), 2.0)
    lam[:, :10] = 0.5 + 8.0 * prob[:, :10] + 4.0 * A[:, :10]
    R = rng.poisson(lam).astype(np.float32)
    genes = [f"g{i}" for i in range(n_genes)]
    peaks = [f"chr1_{100_000 * (i + 1)}_{100_000 * (i + 1) + 500}" for i in range(n_peaks)]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"T{c}" for c in ct])}, index=[f"c{i}" for i in range(n_cells)])
    rna = ad.AnnData(sp.csr_matrix(R), obs=obs.copy(), var=pd.DataFrame(index=genes))
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(), var=pd.DataFrame(index=peaks))
    rna.layers["counts"] = rna.X.copy()
    atac.layers["counts"] = atac.X.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = obs["cell_type"].to_numpy()
    # candidates: every gene paired with its own peak and 3 decoys
    rows = []
    for g in range(n_genes):
        for p in {g % n_peaks, (g + 17) % n_peaks, (g + 29) % n_peaks, (g + 41) % n_peaks}:
            rows.append((peaks[p], genes[g], 1000 * (p - g)))
    cand = pd.DataFrame(rows, columns=["peak", "gene", "distance"])
    truth = pd.DataFrame({"source": peaks[:10], "target": genes[:10]})
    return mdata, cand, truth


# ----------------------------------------------------------------------------- genomic prior
def test_candidates_match_bruteforce():
    rng = np.random.default_rng(1)
    peaks = _random_peaks(rng, 800)
    genes = [f"G{i}" for i in range(120)]
    tss = pd.DataFrame({"gene": np.r_[genes, genes[:30]], "chrom": rng.choice(["chr1", "chr2", "chr3"], 150),
                        "tss": rng.integers(0, 2_000_000, 150), "strand": rng.choice(["+", "-"], 150)})
    window = 100_000
    got = grn.peak_gene_candidates(peaks, genes[:100], tss, window=window)
    centre = (peaks["start"] + peaks["end"]) // 2
    best = {}
    for t in tss.itertuples():
        if t.gene not in genes[:100]:
            continue
        for p, c, ch in zip(peaks.index, centre, peaks["chrom"]):
            if ch == t.chrom and abs(c - t.tss) <= window:
                d = (c - t.tss) * (-1 if t.strand == "-" else 1)
                if (p, t.gene) not in best or abs(d) < abs(best[(p, t.gene)]):
                    best[(p, t.gene)] = d
    exp = pd.DataFrame([(p, g, d) for (p, g), d in best.items()], columns=["peak", "gene", "distance"])
    key = ["peak", "gene"]
    a = got.sort_values(key).reset_index(drop=True)
    b = exp.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_read_tss_formats(tmp_path):
    bed = tmp_path / "tss.bed"
    bed.write_text("chr3\t12795672\t12796772\tCAND2\t-458\t+\nchr7\t130668658\t130669758\tCOPG2\t-450\t-\n")
    t = grn.read_tss(bed)
    assert dict(zip(t.gene, t.tss)) == {"CAND2": 12796680, "COPG2": 130668758}
    gtf = tmp_path / "a.gtf"
    gtf.write_text('1\tx\tgene\t101\t500\t.\t+\t.\tgene_id "E1"; gene_name "A";\n'
                   '1\tx\tgene\t1001\t2000\t.\t-\t.\tgene_id "E2"; gene_name "B";\n')
    g = grn.read_tss(gtf)
    assert dict(zip(g.gene, g.tss)) == {"A": 100, "B": 2000}
    assert set(g.strand) == {"+", "-"}
    with pytest.raises(UnknownFeatureError, match="G1"):
        grn.peak_gene_candidates(["chr1_1_10"], ["G1"], t)


def test_overlap_and_base_grn_mapping():
    rng = np.random.default_rng(2)
    a = _random_peaks(rng, 300)
    b = _random_peaks(rng, 300)
    got = grn.overlap_intervals(a, b)
    exp = {(i, j) for i, (ca, sa, ea) in a.iterrows() for j, (cb, sb, eb) in b.iterrows()
           if ca == cb and min(ea, eb) - max(sa, sb) >= 1}
    assert set(zip(got["a"], got["b"])) == exp
    base = pd.DataFrame({"peak_id": ["chr1_100_200", "chr1_1000_1100", "chr2_50_80"], "gene_short_name": "x",
                         "Tf1": [1.0, 0.0, 1.0], "Tf2": [1.0, 1.0, 0.0]})
    data = grn.parse_peak_names(["chr1_150_160", "chr1_1050_2000", "chr2_80_90", "chr3_1_5"])
    tp = grn.tf_peak_from_base_grn(base, data)
    assert set(zip(tp.tf, tp.peak)) == {("Tf1", "chr1_150_160"), ("Tf2", "chr1_150_160"), ("Tf2", "chr1_1050_2000")}
    assert (tp.evidence == "motif").all()


# ----------------------------------------------------------------------------- metrics
def test_ranking_metrics_known_answers():
    rng = np.random.default_rng(3)
    y = np.zeros(1000, bool)
    y[:50] = True
    perfect = grn_m = egrn.ranking_metrics(y, -np.arange(1000.0))
    assert perfect["auroc"] == pytest.approx(1.0)
    assert perfect["auprc"] == pytest.approx(1.0)
    assert perfect["epr"] == pytest.approx(1 / 0.05)
    assert grn_m["auprc_ratio"] == pytest.approx(20.0)
    aucs = [egrn.ranking_metrics(y, rng.normal(size=1000))["auroc"] for _ in range(20)]
    assert abs(np.mean(aucs) - 0.5) < 0.03
    ties = egrn.ranking_metrics(y, np.zeros(1000))
    assert ties["auroc"] == pytest.approx(0.5) and ties["epr"] == pytest.approx(1.0)
    from sklearn.metrics import average_precision_score

    s = rng.normal(size=1000) + y
    assert egrn.ranking_metrics(y, s)["auprc"] == pytest.approx(average_precision_score(y, s))


def _planted_tf_network(rng, n_tfs=8, n_genes=200, n_targets=20, noise=0.0):
    tfs = [f"TF{i}" for i in range(n_tfs)]
    genes = [f"G{i}" for i in range(n_genes)]
    ref, pred = [], []
    for t in tfs:
        tg = rng.choice(genes, n_targets, replace=False)
        ref += [(t, g) for g in tg]
        for g in genes:
            pred.append((t, g, (1.0 if g in set(tg) else 0.0) + noise * rng.normal()))
    return (pd.DataFrame(pred, columns=["source", "target", "weight"]),
            pd.DataFrame(ref, columns=["source", "target"]), tfs, genes)


def test_tf_gene_metrics_and_swap_control():
    rng = np.random.default_rng(4)
    pred, ref, tfs, genes = _planted_tf_network(rng, noise=0.3)
    pred["cell_type"] = "A"
    tab = egrn.tf_gene_metrics(pred, ref, tfs_universe=tfs, genes_universe=genes)
    row = tab.set_index("method").loc["model"]
    assert row["auroc"] > 0.9 and row["tf_swap_frac"] == 1.0 and bool(row["beats_baselines"])
    assert "target_degree" in set(tab["method"])
    # a network that only knows "which genes are regulated" fails the swap control
    hub = ref.groupby("target").size()
    lazy = pd.DataFrame([(t, g, float(hub.get(g, 0))) for t in tfs for g in genes],
                        columns=["source", "target", "weight"])
    sw = egrn.tf_swap_control(lazy, ref, tfs_universe=tfs, genes_universe=genes)
    assert sw["own_beats_swapped"].mean() < 0.8
    # a shuffled network does not beat the baseline -> visible in the table
    bad = pred.assign(weight=rng.permutation(pred["weight"].to_numpy()))
    t2 = egrn.tf_gene_metrics(bad, ref, tfs_universe=tfs, genes_universe=genes,
                              baselines={"truth": pred.assign(cell_type="all")})
    assert not bool(t2.set_index("method").loc["model", "beats_baselines"])


def test_topk_jaccard():
    a = pd.DataFrame({"source": list("abcd"), "target": list("wxyz"), "weight": [4, 3, 2, 1]})
    assert egrn.topk_jaccard(a, a, 2) == 1.0
    b = a.assign(weight=[1, 2, 3, 4])
    assert egrn.topk_jaccard(a, b, 2) == 0.0
    st = egrn.stability({0: a, 1: b, 2: a}, k=2)
    assert len(st) == 3


# ----------------------------------------------------------------------------- TF layer + export
def test_tf_gene_network_and_export_roundtrip(tmp_path):
    pg = pd.DataFrame({"source": ["p1", "p2", "p3", "p1"], "target": ["A", "A", "B", "C"],
                       "weight": [1.0, 2.0, 0.5, 1.0], "cell_type": ["T1", "T1", "T1", "T2"], "distance": [1, 2, 3, 4]})
    tp = pd.DataFrame({"tf": ["X", "X", "Y"], "peak": ["p1", "p2", "p3"]})
    expr = pd.DataFrame({"X": [1, 2, 3, 4.0], "Y": [1, 2, 3, 4.0], "A": [1, 2, 3, 5.0], "B": [4, 3, 2, 1.0],
                         "C": [1, 3, 2, 4.0]})
    net = grn.tf_gene_network(pg, tp, expr)
    d = {(r.source, r.target, r.cell_type): r for r in net.itertuples()}
    assert d[("X", "A", "T1")].weight == pytest.approx(3.0) and d[("X", "A", "T1")].n_peaks == 2
    assert d[("Y", "B", "T1")].sign == -1 and d[("Y", "B", "T1")].weight == pytest.approx(-0.5)
    mx = grn.tf_gene_network(pg, tp, aggregate="max", sign=False)
    assert mx.set_index(["source", "target", "cell_type"]).loc[("X", "A", "T1"), "weight"] == pytest.approx(2.0)
    for suffix in (".csv", ".parquet", ".graphml"):
        p = tmp_path / f"net{suffix}"
        grn.write_grn(net, p)
        back = grn.read_grn(p)
        key = ["source", "target", "cell_type"]
        a = net.sort_values(key).reset_index(drop=True)
        b = back[a.columns].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    files = grn.write_grn(net, tmp_path / "per.graphml", per_cell_type=True)
    assert len(files) == 2
    G = grn.to_networkx(net, cell_type="T1")
    assert G["X"]["A"]["weight"] == pytest.approx(3.0)
    assert grn.grn_df(net, cell_type="T2", top_k=1).shape[0] == 1
    for bad in (0, -1, 2.5):  # was: head(-1) silently dropped the last edge of each type
        with pytest.raises(OptionError, match="top_k must be"):
            grn.grn_df(net, top_k=bad)


# ----------------------------------------------------------------------------- model-free recovery
def test_planted_peak_gene_recovered_by_metacell_correlation():
    mdata, cand, truth = _planted_mdata()
    mc = egrn.metacell_correlation(mdata, cand, "cell_type", n_metacells=15)
    tab = egrn.peak_gene_metrics(mc, truth, candidates=cand, method="metacell_correlation",
                                 baselines={"accessibility": egrn.accessibility_baseline(mdata, cand)})
    row = tab[tab.method == "metacell_correlation"].iloc[0]
    assert row["auroc"] > 0.9, tab
    assert {"distance", "accessibility"} <= set(tab.method)
    # baselines bundle + coaccessibility TF fallback + plotting run on the same data
    bl = egrn.peak_gene_baselines(mdata, cand, n_metacells=5)
    assert set(bl) == {"distance", "metacell_correlation", "accessibility", "target_degree"}
    tp = grn.tf_peak_coaccessibility(mdata, ["g0", "g1", "nope"], min_corr=0.2, n_metacells=8)
    assert (tp.evidence == "coaccessibility").all() and set(tp.tf) <= {"g0", "g1"}
    # a peak -> gene network stored as the tl functions store it
    mdata.uns["grn"] = {"params": {"groupby": "cell_type", "group_column": "cell_type"},
                        "network": mc.assign(cell_type="T0").pipe(
                            lambda d: pd.concat([d, d.assign(cell_type="T1", weight=d.weight[::-1].to_numpy())]))}
    # storage contract: copy=True leaves the input untouched and returns the modified copy
    out = grn.tf_gene_network(mdata, tp, tfs=["g0", "g1"], n_metacells=5, copy=True)
    assert "grn_tf" not in mdata.uns and "grn_tf" in out.uns
    assert grn.tf_gene_network(mdata, tp, tfs=["g0", "g1"], n_metacells=5) is None
    assert set(mdata.uns["grn_tf"]) == {"params", "network"}
    net = grn.network_table(mdata, "grn_tf")
    pd.testing.assert_frame_equal(net, grn.network_table(out, "grn_tf"))
    assert mdata.uns["grn_tf"]["params"]["group_column"] == "cell_type"
    assert mdata.uns["grn_tf"]["params"]["tfs"] == ["g0", "g1"]
    assert {"sign", "corr"} <= set(net.columns) and set(net.cell_type) == {"T0", "T1"}
    with pytest.raises(OptionError, match="aggregate"):
        grn.tf_gene_network(mdata, tp, aggregate="mean")
    with pytest.raises(OptionError, match="coaccessibility"):
        grn.tf_gene_network(mdata, "motifs")
    import matplotlib

    matplotlib.use("Agg")
    fig = grn.grn_network(net, cell_type="T0", top_regulators=2)
    fig2 = grn.grn_specificity_heatmap(mdata.uns["grn"], top_k=3, level="edge")
    assert fig is not None and fig2 is not None


# ----------------------------------------------------------------------------- model path
class _StandInModule:
    """Tensor-API stand-in: linear encoders, a 'translator' that copies the ATAC latent, DCA-like attention."""

    def __init__(self, n_genes, n_peaks, latent, token_dim, W):
        import torch

        self.training = False
        g = torch.Generator().manual_seed(0)
        self.Wa = torch.zeros(n_peaks, latent)
        self.Wa[: latent, :] = torch.eye(latent)  # peak k -> latent k
        self.Wr_dec = W  # latent -> gene logits
        self.Wr_enc = torch.randn(n_genes, latent, generator=g) * 0.1
        self.token_dim = token_dim
        self.q = torch.randn(token_dim, 4, generator=g)
        self.denoiser = self._denoiser

    def eval(self):
        self.training = False
        return self

    def train(self, mode=True):
        self.training = mode
        return self

    def _denoiser(self, z_r, z_a, t_r, t_a, cond, return_attention=False):
        import torch

        b = z_r.shape[0]
        tr = z_r.view(b, -1, self.token_dim) @ self.q
        ta = z_a.view(b, -1, self.token_dim) @ self.q
        A = torch.softmax(tr @ ta.transpose(1, 2), -1)[:, None]  # B,1,T,T
        return z_r, z_a, {"rna_to_atac": [A, A], "atac_to_rna": [A, A], "rna_self": [], "atac_self": []}


class StandInModel(StandInInputs):
    def __init__(self, mdata, latent=8, token_dim=2):
        from types import SimpleNamespace

        import torch

        n_genes, n_peaks = mdata["rna"].n_vars, mdata["atac"].n_vars
        W = torch.zeros(latent, n_genes)
        for k in range(latent):
            W[k, k] = 3.0  # gene k depends on latent k = peak k
        self.module = _StandInModule(n_genes, n_peaks, latent, token_dim, W)
        self.config = SimpleNamespace(token_dim=token_dim, latent_dim=latent, label_keys=[], n_train_timesteps=1000,
                                      beta_schedule="linear", prediction="epsilon")
        self.rna_var_names = list(mdata["rna"].var_names)
        self.atac_var_names = list(mdata["atac"].var_names)
        self.setup = {"layers": {"rna": "counts", "atac": "counts"}}
        self.device = torch.device("cpu")

    def encode(self, modality, x):
        return x @ (self.module.Wr_enc if modality == "rna" else self.module.Wa)

    def decode_rna(self, z):
        import torch

        return torch.softmax(z @ self.module.Wr_dec, -1)

    def decode_atac(self, z):
        import torch

        return torch.sigmoid(z @ self.module.Wa.T)

    def condition_indices(self, labels, n=None):
        import torch

        return torch.zeros((n, 0), dtype=torch.long)

    def translate_latent(self, z_src, direction, cond, noise, sampler="ddim", n_steps=10, **kw):
        return z_src + 0.0 * noise


def test_standin_implements_the_tensor_api():
    from scdiffx_grn.model import TranslationModel

    mdata, _, _ = _planted_mdata(n_cells=30)
    assert isinstance(StandInModel(mdata), TranslationModel)


_METHOD_KW = {"attention": {"timesteps": (10, 500)}, "integrated_gradients": {"ig_steps": 8}, "knockout": {}}


@pytest.mark.parametrize("method", ["attention", "integrated_gradients", "knockout"])
def test_extract_grn_standin(method):
    mdata, cand, truth = _planted_mdata(n_cells=90)
    model = StandInModel(mdata)
    out = grn.extract_grn(model, mdata, method=method, candidates=cand, max_cells=20, batch_size=16,
                          copy=True, **_METHOD_KW[method])
    # copy=True: a modified copy comes back, the input is untouched
    assert out is not mdata and "grn" not in mdata.uns and set(out.uns["grn"]) == {"params", "network"}
    res = grn.network_table(out, "grn")
    assert res.attrs["group_column"] == "cell_type"
    assert set(res.cell_type) == {"T0", "T1", "T2"}
    assert len(res) == 3 * len(cand) and np.isfinite(res.weight).all()
    assert {"source", "target", "weight", "cell_type", "distance", "method", "specificity"} <= set(res.columns)
    params = grn.METHODS[method].resolve(_METHOD_KW[method])
    stored = out.uns["grn"]["params"]
    assert stored["method"] == method and stored["groupby"] == "cell_type" and stored["max_cells"] == 20
    assert {k: stored[k] for k in params} == {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    if method != "attention":
        # peak k drives gene k for k < latent dim in the stand-in: those pairs must rank on top
        t = truth.iloc[:8]
        tab = egrn.peak_gene_metrics(res[res.cell_type == "T0"], t, candidates=cand)
        assert tab.set_index("method").loc["model", "auroc"] > 0.95, tab
    # copy=False: written into the data, None returned; same numbers as the copy
    assert grn.extract_grn(model, mdata, method=method, candidates=cand, max_cells=20, batch_size=16,
                           **_METHOD_KW[method]) is None
    pd.testing.assert_frame_equal(grn.network_table(mdata, "grn"), res)
    # a Method instance runs the same kernel
    again = grn.extract_grn(model, mdata, method=grn.METHODS[method], candidates=cand, max_cells=20,
                            batch_size=16, copy=True, **_METHOD_KW[method])
    np.testing.assert_array_equal(grn.network_table(again, "grn")["weight"], res["weight"])
    with pytest.raises(OptionError, match="nope"):
        grn.extract_grn(model, mdata, method="nope", candidates=cand)


def test_tss_of_another_genome_is_named():
    """An hg38 TSS table on mouse data said 'no candidate pair' with no hint of the genome."""
    mdata, _, _ = _planted_mdata(n_cells=30)
    model = StandInModel(mdata)
    genes = list(mdata.mod["rna"].var_names)
    human = pd.DataFrame({"gene": [g.upper() for g in genes], "chrom": "chr1",
                          "tss": [100_000 * (i + 1) for i in range(len(genes))], "strand": "+"})
    with pytest.raises(UnknownFeatureError, match=r"look human \(e\.g\. 'G0'\), the data's mouse.*--genome mm10"):
        grn.peak_gene_candidates(mdata, tss_table=human)
    mdata.uns["genome"] = "mm10"
    far = human.assign(gene=genes, chrom="chr2")  # right genes, coordinates of another assembly
    with pytest.raises(ScdxError, match=r"no peak lies within 1,000 bp.*30 of the 30 genes are in the TSS annotation; "
                                        r"check that it is of the peaks' genome assembly.*genome is 'mm10'"):
        grn.extract_grn(model, mdata, tss=far, window=1000)


def test_extract_grn_method_keywords_checked():
    mdata, cand, _ = _planted_mdata(n_cells=60)
    model = StandInModel(mdata)
    kw = {"candidates": cand, "max_cells": 10, "cell_types": ["T1"]}
    # a keyword of another method names its owner and the valid options
    with pytest.raises(OptionError, match=r"'timesteps' is an option of 'attention'.*knockout_group"):
        grn.extract_grn(model, mdata, method="knockout", timesteps=(10,), **kw)
    with pytest.raises(OptionError, match="'bogus' is not an option"):
        grn.extract_grn(model, mdata, method="attention", bogus=1, **kw)
    with pytest.raises(OptionError, match="head_reduce"):
        grn.extract_grn(model, mdata, method="attention", head_reduce="median", **kw)
    with pytest.raises(OptionError, match="readout"):
        grn.extract_grn(model, mdata, method="knockout", readout="mode", **kw)
    with pytest.raises(OptionError, match="ig_steps"):
        grn.extract_grn(model, mdata, method="integrated_gradients", ig_steps=0, **kw)
    with pytest.raises(OptionError, match="timesteps"):
        grn.extract_grn(model, mdata, method="attention", timesteps=[], **kw)
    assert "grn" not in mdata.uns  # nothing written by a refused call
    tab = grn.show_methods()
    assert list(tab.columns) == ["name", "description", "parameters"]
    assert list(tab["name"]) == ["attention", "integrated_gradients", "knockout", "consensus"] == list(grn.methods())
    assert "timesteps=(100, 300, 500)" in tab.set_index("name").loc["attention", "parameters"]


def test_custom_method_kernel():
    """A user kernel wrapped as a Method runs through the same runner, with its own options checked."""
    mdata, cand, _ = _planted_mdata(n_cells=60)
    model = StandInModel(mdata)
    seen = {}

    def kernel(model, X_atac, cond, pairs, *, scale, batch_size, seed):
        seen.update(n=X_atac.shape[0], batch_size=batch_size, seed=seed)
        return scale * np.arange(len(pairs), dtype=float)

    m = grn.Method("ramp", kernel, (grn.Param("scale", 1.0, "multiplier"),), "a ramp", inputs=("atac",))
    out = grn.extract_grn(model, mdata, method=m, candidates=cand, groupby=None, max_cells=7, scale=2.0,
                          batch_size=5, seed=3, copy=True)
    net = grn.network_table(out, "grn")
    assert seen == {"n": 7, "batch_size": 5, "seed": 3}
    np.testing.assert_array_equal(net["weight"], 2.0 * np.arange(len(cand)))
    assert set(net["method"]) == {"ramp"}
    with pytest.raises(OptionError, match="scale"):
        grn.extract_grn(model, mdata, method=m, candidates=cand, shift=1)
    with pytest.raises(OptionError, match="options of extract_grn"):
        grn.Method("bad", kernel, (grn.Param("seed", 0),))


def test_group_column_named_after_groupby():
    mdata, cand, _ = _planted_mdata(n_cells=90)
    lineage = np.where(mdata.obs["cell_type"].astype(str) == "T0", "L0", "L1")
    mdata.obs["lineage"] = lineage
    model = StandInModel(mdata)
    kw = {"candidates": cand, "max_cells": 10, "timesteps": (10,)}
    grn.extract_grn(model, mdata, groupby="lineage", key_added="lin", **kw)
    net = grn.network_table(mdata, "lin")
    assert "lineage" in net and "cell_type" not in net and set(net["lineage"]) == {"L0", "L1"}
    assert mdata.uns["lin"]["params"]["group_column"] == "lineage"
    # every reader picks the stored group column
    assert set(grn.grn_df(mdata, key="lin", cell_type="L1")["lineage"]) == {"L1"}
    assert len(grn.grn_df(mdata, key="lin", top_k=2)) == 4
    G = grn.to_networkx(mdata, key="lin")
    assert G.is_multigraph() and {k for _, _, k in G.edges(keys=True)} == {"L0", "L1"}
    spec = grn.type_specificity(mdata, key="lin", top_k=3)
    assert len(spec) == 6 and "specificity" in spec
    with pytest.raises(MissingLabelError, match="L9"):
        grn.grn_df(mdata, key="lin", cell_type="L9")
    # readers that expect cell_type switch with one call
    ct = grn.network_table(mdata, "lin", group="cell_type")
    assert set(ct["cell_type"]) == {"L0", "L1"} and "lineage" not in ct
    # groupby=None: one group "all" in a column "group"
    grn.extract_grn(model, mdata, groupby=None, key_added="all", **kw)
    one = grn.network_table(mdata, "all")
    assert set(one["group"]) == {"all"} and "specificity" not in one and one["n_cells"].iloc[0] == 10
    with pytest.raises(OptionError, match="collides with a column of the network"):
        mdata.obs["weight"] = lineage
        grn.extract_grn(model, mdata, groupby="weight", **kw)
    with pytest.raises(MissingLabelError, match="nolabel"):
        grn.extract_grn(model, mdata, groupby="nolabel", **kw)


def test_network_table_reads_stored_results_only():
    """A stored result or a DataFrame is read; anything else under uns (a bare DataFrame, a dict of
    tables without params) raises, naming what is there."""
    df = pd.DataFrame({"source": ["p1", "p2"], "target": ["A", "B"], "weight": [1.0, 2.0], "cell_type": ["X", "Y"]})

    from types import SimpleNamespace

    Holder = SimpleNamespace(uns={"bare": df, "per_type": {"X": df.drop(columns="cell_type").iloc[:1],
                                                           "Y": df.drop(columns="cell_type").iloc[1:]},
                                  "ok": {"params": {"group_column": "cell_type"}, "network": df}})
    t = grn.network_table(Holder, "ok")
    assert t.attrs["group_column"] == "cell_type" and t.equals(df)
    with pytest.raises(InputDataError, match=r"uns\['bare'\] holds a DataFrame, not a GRN result"):
        grn.network_table(Holder, "bare")
    with pytest.raises(InputDataError, match=r"uns\['per_type'\] is not a stored GRN result.*'X', 'Y'"):
        grn.network_table(Holder, "per_type")
    assert grn.network_table(df) is not df and grn.network_table(df).equals(df)
    with pytest.raises(ScdxError, match="nokey"):
        grn.network_table(Holder, "nokey")
    with pytest.raises(InputDataError):
        grn.network_table(42)


def test_peak_gene_candidates_storage_contract():
    mdata, cand, _ = _planted_mdata(n_cells=60)
    model = StandInModel(mdata)
    peaks = mdata["atac"].var_names
    tss = pd.DataFrame({"gene": [f"g{i}" for i in range(30)], "chrom": "chr1",
                        "tss": [100_000 * (i + 1) + 250 for i in range(30)], "strand": "+"})
    table = grn.peak_gene_candidates(mdata, tss_table=tss, window=150_000)
    assert isinstance(table, pd.DataFrame) and "cands" not in mdata.uns and set(table["peak"]) <= set(peaks)
    out = grn.peak_gene_candidates(mdata, tss_table=tss, window=150_000, key_added="cands", copy=True)
    assert "cands" not in mdata.uns and out.uns["cands"]["params"]["window"] == 150_000
    assert grn.peak_gene_candidates(mdata, tss_table=tss, window=150_000, key_added="cands") is None
    pd.testing.assert_frame_equal(grn.network_table(mdata, "cands", table="candidates"), table)
    # extract_grn reads stored candidates by key
    grn.extract_grn(model, mdata, candidates="cands", max_cells=10, cell_types=["T0"], timesteps=(10,))
    net = grn.network_table(mdata, "grn")
    assert len(net) == len(table) and mdata.uns["grn"]["params"]["candidates"] == "cands"
    with pytest.raises(OptionError, match="MuData"):
        grn.peak_gene_candidates(mdata["atac"].var_names, grn.read_tss(tss)["gene"], tss, key_added="x")


def _tiny_candidates(mdata, genes):
    """Peak -> gene candidates of the shared tiny data: gene k with peaks k, k + 17 and k + 29 (modulo the
    number of peaks) and their distance."""
    peaks = list(mdata["atac"].var_names)
    rows = [(peaks[p], f"gene{k}", 1000 * (p - k)) for k in genes for p in ((k + d) % len(peaks) for d in (0, 17, 29))]
    return pd.DataFrame(rows, columns=["peak", "gene", "distance"])


@pytest.mark.slow
def test_extract_grn_real_tiny_model(trained_tiny, tiny_mdata):
    """Plumbing against the real ScDiffusionX (tiny, barely trained): every method runs and is finite."""
    model, mdata = trained_tiny, tiny_mdata
    small = _tiny_candidates(mdata, [0, 1])
    kw = {"attention": {"timesteps": (10,)}, "knockout": {"translate_steps": 2},
          "integrated_gradients": {"ig_steps": 2, "translate_steps": 2}}
    for method in ("attention", "knockout", "integrated_gradients"):
        out = grn.extract_grn(model, mdata, method=method, candidates=small, cell_types=["A"], max_cells=6,
                              batch_size=6, copy=True, **kw[method])
        res = grn.network_table(out, "grn")
        assert len(res) == len(small) and np.isfinite(res.weight).all()


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_ig_jacobian_engine_matches_captum(baseline, trained_tiny, tiny_mdata):
    """The all-genes-at-once IG engine equals captum's IntegratedGradients run gene by gene."""
    from scdiffx_grn.grn._scores import cond_for, ig_scores, model_inputs

    model, mdata = trained_tiny, tiny_mdata
    idx = np.r_[0:5, 30:34]  # 9 cells of both types
    _, Xa = model_inputs(model, mdata)
    cond = cond_for(model, mdata, idx)
    small = _tiny_candidates(mdata, [0, 1, 15])  # genes of both expression levels
    kw = dict(baseline=baseline, n_steps=5, translate_steps=3, batch_size=4)
    fast = ig_scores(model, Xa[idx], cond, small, **kw)
    ref = ig_scores(model, Xa[idx], cond, small, engine="captum", **kw)
    assert np.abs(ref).max() > 0
    # the same float32 arithmetic in another order (all genes at once vs one by one): the forward and
    # backward passes through 3 translation steps, then the sum over 5 integration steps
    tol = model_float32_tol(ref, model, denoiser_calls=2 * 3, extra_terms=5)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=tol)
    with pytest.raises(ScdxError, match="engine"):
        ig_scores(model, Xa[idx], cond, small, engine="nope")


def test_peak_set_enrichment_planted(tmp_path):
    """Peaks a cell type's network relies on that lie in its own region set rank first."""
    import gzip

    rng = np.random.default_rng(0)
    peaks = [f"chr1-{1000 * i}-{1000 * i + 500}" for i in range(200)]
    in_a = rng.random(200) < 0.4
    in_b = rng.random(200) < 0.4
    # set A as a DataFrame, set B as a gzipped BED file (intervals overlapping their peaks by 100 bp)
    set_a = pd.DataFrame({"chrom": "chr1", "start": [1000 * i + 400 for i in np.flatnonzero(in_a)],
                          "end": [1000 * i + 700 for i in np.flatnonzero(in_a)]})
    bed = tmp_path / "b.bed.gz"
    with gzip.open(bed, "wt") as fh:
        for i in np.flatnonzero(in_b):
            fh.write(f"chr1\t{1000 * i + 100}\t{1000 * i + 200}\tp{i}\t0\n")
    mem = egrn.peak_set_membership(peaks, {"A": set_a, "B": bed})
    assert (mem["A"].to_numpy() == in_a).all() and (mem["B"].to_numpy() == in_b).all()
    # network: type "a" weights peaks of set A, type "b" random
    rows = []
    for i, p in enumerate(peaks):
        rows.append({"source": p, "target": "g1", "weight": (2.0 if in_a[i] else 0.0) + rng.random(),
                     "cell_type": "a"})
        rows.append({"source": p, "target": "g2", "weight": -rng.random(), "cell_type": "b"})
    imp = egrn.peak_importance(pd.DataFrame(rows))
    assert imp.shape == (200, 2) and (imp.to_numpy() >= 0).all()
    tab = egrn.peak_set_enrichment({"net": imp}, mem, {"a": "A", "b": "B"})
    got = tab.set_index(["cell_type", "ranking"])["auroc"]
    assert got[("a", "importance")] > 0.95 and got[("a", "specificity")] > 0.95
    assert abs(got[("b", "importance")] - 0.5) < 0.15
    with pytest.raises(InputDataError, match="peak sets"):
        egrn.peak_set_enrichment({"net": imp}, mem, {"a": "C"})
    with pytest.raises(ScdxError, match="reduce"):
        egrn.peak_importance(pd.DataFrame(rows), reduce="mean")


def test_extract_grn_group_invariant_to_other_groups():
    """A group's subsample is chosen by cell name and seed: its network does not depend on which other
    groups run (cell_types=) nor on the row order."""
    mdata, cand, _ = _planted_mdata(n_cells=150)
    model = StandInModel(mdata)
    kw = dict(method="knockout", candidates=cand, max_cells=12, batch_size=16, seed=4, copy=True)
    cols = ["source", "target", "weight", "distance", "method", "n_cells"]
    full = grn.network_table(grn.extract_grn(model, mdata, **kw), "grn")
    perm = np.random.default_rng(0).permutation(mdata.n_obs)
    shuffled = grn.network_table(grn.extract_grn(model, mdata[perm].copy(), **kw), "grn")
    for g in ("T0", "T1", "T2"):
        one = grn.network_table(grn.extract_grn(model, mdata, cell_types=[g], **kw), "grn")
        part = full[full.cell_type == g].reset_index(drop=True)
        assert part["n_cells"].iloc[0] == 12
        pd.testing.assert_frame_equal(one[cols].reset_index(drop=True), part[cols])
        pd.testing.assert_frame_equal(shuffled[shuffled.cell_type == g][cols].reset_index(drop=True), part[cols])
    other = grn.network_table(grn.extract_grn(model, mdata, **{**kw, "seed": 5}), "grn")
    assert not np.array_equal(other["weight"], full["weight"])  # the seed does choose the cells


# ----------------------------------------------------------------------------- closed-form / sparse scorers
@pytest.fixture(scope="module")
def tiny_trained():
    """A tiny, briefly trained ScDiffusionX on the planted data, its ATAC inputs and candidate pairs."""
    from scdiffx_grn.grn._scores import cond_for, model_inputs

    model_mod = pytest.importorskip("scdiffx_grn.model")
    mdata, cand, _ = _planted_mdata(n_cells=40)
    model_mod.ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    model = model_mod.ScDiffusionX(mdata, width=16, n_layers=1, n_heads=2, latent_dim=8, token_dim=2)
    model.train(ae_epochs=2, diffusion_steps=20, batch_size=32, seed=0, device="cpu")
    idx = np.arange(9)
    _, Xa = model_inputs(model, mdata)
    small = cand[cand.gene.isin(["g0", "g1", "g5", "g7"])].reset_index(drop=True)
    return model, Xa[idx], cond_for(model, mdata, idx), small, np.asarray(mdata.obs_names)[idx]


def _ig_reference(model, X_atac, cond, pairs, *, baseline, n_steps, translate_steps, names):
    """The previous all-genes IG: per latent dimension a backward pass and a forward-mode product, the
    (rows x pairs) products gathered densely; the reference of the closed form."""
    import torch
    from captum.attr._utils.approximation_methods import approximation_parameters

    from scdiffx_grn._modelio import dense_rows, eval_mode, translate_inputs as translate
    from scdiffx_grn.grn._scores import _decoder_jvp, _ig_baseline, _pair_index, _translate_kw

    gpos, ppos = _pair_index(model, pairs)
    kw = _translate_kw("mean", "ddim", translate_steps)
    step_fn, alpha_fn = approximation_parameters("gausslegendre")
    steps = torch.tensor(step_fn(n_steps), dtype=torch.float32)
    alphas = torch.tensor(alpha_fn(n_steps), dtype=torch.float32)
    genes = np.unique(gpos)
    gi = torch.as_tensor(pd.Index(genes).get_indexer(gpos))
    pp = torch.as_tensor(ppos)
    acc = np.zeros(len(pairs))
    with eval_mode(model):
        x = model.atac_tensor(dense_rows(X_atac, np.arange(X_atac.shape[0])))
        b = x.shape[0]
        xb = _ig_baseline(model, X_atac, baseline)
        base = torch.zeros_like(x) if xb is None else xb.expand_as(x)
        m = len(alphas)
        xin = (base[None] + alphas[:, None, None] * (x - base)[None]).reshape(m * b, -1).requires_grad_(True)
        nin = model.cell_noise(names, 0, 0).repeat(m, 1)
        cin = cond.repeat(m, 1) if cond is not None else None
        w = (steps[:, None, None] * (x - base)[None]).reshape(m * b, -1)[:, pp]
        with torch.enable_grad():
            z = translate(model, "atac", xin, cin, nin, kw)
            for d in range(z.shape[1]):
                (gd,) = torch.autograd.grad(z[:, d].sum(), xin, retain_graph=True)
                Dd = _decoder_jvp(model, z.detach(), torch.as_tensor(genes), d)
                acc += (Dd[:, gi] * gd[:, pp] * w).sum(0).detach().double().numpy()
    return acc / b


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_ig_closed_form_equals_reference_and_chunking(tiny_trained, baseline):
    """The closed-form IG (low-rank product read at (cell, pair) entries) equals the dense per-latent-dim
    reference; cell chunks, entry chunks and the memory budget do not change the scores."""
    from scdiffx_grn.grn._scores import ig_scores

    model, Xa, cond, small, names = tiny_trained
    kw = dict(baseline=baseline, n_steps=5, translate_steps=3, cell_names=names)
    ref = _ig_reference(model, Xa, cond, small, baseline=baseline, n_steps=5, translate_steps=3, names=names)
    fast = ig_scores(model, Xa, cond, small, batch_size=4, **kw)
    assert np.abs(ref).max() > 0
    # the same float32 terms summed in another order: through both autoencoders and one denoiser call
    # (posterior mean), the latent sum (8 terms) and the quadrature (5)
    tol = model_float32_tol(ref, model, denoiser_calls=1, extra_terms=8 + 5)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=tol)
    for opts in ({"batch_size": 1, "pair_chunk": 1}, {"batch_size": 9, "pair_chunk": 7},
                 {"batch_size": 64, "mem_budget_mb": 1e-6}):
        np.testing.assert_allclose(ig_scores(model, Xa, cond, small, **opts, **kw), fast, rtol=0, atol=tol)
    # a cell's score does not depend on its batch-mates: one cell alone == its share of the batch
    one = ig_scores(model, Xa[2:3], cond[2:3], small, n_steps=5, translate_steps=3, cell_names=names[2:3],
                    baseline="zeros")
    ref1 = _ig_reference(model, Xa[2:3], cond[2:3], small, baseline="zeros", n_steps=5, translate_steps=3,
                         names=names[2:3])
    np.testing.assert_allclose(one, ref1, rtol=0, atol=tol)


@pytest.mark.parametrize("which", ["standin", "tiny"])
def test_knockout_sparse_blocks_equal_dense(tiny_trained, which):
    """Sparse-block knockout (only open (cell, peak) edits, rows built per call) equals the dense reference
    (every peak closed in every cell through close_peaks_effect); call sizes do not change it."""
    from conftest import float32_tol

    from scdiffx_grn.grn._scores import cond_for, knockout_scores, model_inputs

    if which == "tiny":
        model, Xa, cond, small, names = tiny_trained
        # an effect is a difference of two readouts log1p(1e4 rho) <= log1p(1e4): float32 noise at that scale
        tol = model_float32_tol(np.log1p(1e4), model, denoiser_calls=1)
    else:  # the stand-in: peak k drives gene k strongly (effects of order 1)
        mdata, cand, _ = _planted_mdata(n_cells=30)
        model = StandInModel(mdata)
        _, Xa = model_inputs(model, mdata)
        cond, names = cond_for(model, mdata, np.arange(30)), np.asarray(mdata.obs_names)
        small = cand[cand.gene.isin(["g0", "g1", "g5", "g20"])].reset_index(drop=True)
        tol = float32_tol(np.log1p(1e4), Xa.shape[1] + 2 * model.config.latent_dim + len(model.rna_var_names))
    kw = dict(cell_names=names, n_steps=3)
    dense = knockout_scores(model, Xa, cond, small, skip_closed=False, **kw)
    sparse = knockout_scores(model, Xa, cond, small, **kw)
    assert np.abs(dense).max() > (100 * tol if which == "standin" else 0)
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=tol)
    for opts in ({"batch_rows": 1}, {"batch_rows": 5, "batch_size": 2}, {"mem_budget_mb": 1e-6}):
        np.testing.assert_allclose(knockout_scores(model, Xa, cond, small, **opts, **kw), sparse, rtol=0, atol=tol)
    # a peak closed in every cell has no effect: exactly 0
    closed = np.asarray((Xa > 0).sum(0)).ravel() == 0
    peaks = np.asarray(model.atac_var_names)
    if closed.any():
        assert (sparse[small.peak.isin(peaks[closed]).to_numpy()] == 0).all()
    with pytest.raises(OptionError, match="engine"):
        knockout_scores(model, Xa, cond, small, engine="nope")


def test_knockout_linear_is_first_order(tiny_trained):
    """engine='linear' is x_p * dy_g/dx_p at the cell's input (the first-order effect of closing p), from
    the full per-cell Jacobian by autograd."""
    import torch

    from scdiffx_grn._modelio import dense_rows, eval_mode, translate_inputs as translate
    from scdiffx_grn.grn._scores import _log_expr, _pair_index, _translate_kw, knockout_scores

    model, Xa, cond, small, names = tiny_trained
    lin = knockout_scores(model, Xa, cond, small, engine="linear", cell_names=names, n_steps=3)
    gpos, ppos = _pair_index(model, small)
    kw = _translate_kw("mean", "ddim", 3)
    ref = np.zeros(len(small))
    with eval_mode(model):
        for i in range(Xa.shape[0]):
            x = model.atac_tensor(dense_rows(Xa, [i]))
            f = lambda xx: _log_expr(model.decode_rna(translate(model, "atac", xx, cond[i:i + 1],
                                                                model.cell_noise(names[i:i + 1], 0, 0), kw)))[0]
            J = torch.autograd.functional.jacobian(f, x)[:, 0]  # genes x peaks
            ref += (x[0, ppos] * J[gpos, ppos]).double().numpy()
    ref /= Xa.shape[0]
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(lin, ref, rtol=0, atol=model_float32_tol(ref, model, denoiser_calls=1, extra_terms=8))
    with pytest.raises(OptionError, match="n_samples"):
        knockout_scores(model, Xa, cond, small, engine="linear", n_samples=2)


def test_encode_closed_equals_encoding_the_edited_rows(tiny_trained):
    """The model's rank-one hook: latents of rows with one peak closed, without building those rows, equal
    ``encode`` of the edited rows (float32 rounding of the first layer's sum); RNA is refused."""
    import torch

    from conftest import float32_tol

    from scdiffx_grn._modelio import dense_rows, eval_mode

    model, Xa, _, _, _ = tiny_trained
    x = model.atac_tensor(dense_rows(Xa, np.arange(6)))
    rows = torch.tensor([0, 0, 3, 5, 5, 2])
    cols = torch.stack([torch.nonzero(x[r])[k % 2, 0] for k, r in enumerate(rows.tolist())])  # open peaks
    cols[-1] = int(torch.nonzero(x[2] == 0)[0, 0])  # closing a closed peak changes nothing
    edited = x[rows].clone()
    edited[torch.arange(len(rows)), cols] = 0.0
    with eval_mode(model), torch.no_grad():
        fast = model.encode_closed("atac", x, rows, cols)
        ref = model.encode("atac", edited)
        base = model.encode("atac", x[rows])
    assert (fast[:-1] - base[:-1]).abs().max() > 1e-3  # the edits move the latents
    tol = float32_tol(float(ref.abs().max()), x.shape[1] + 2 * int(model.config.latent_dim))
    np.testing.assert_allclose(fast.numpy(), ref.numpy(), rtol=0, atol=tol)
    with pytest.raises(OptionError, match="ATAC"):
        model.encode_closed("rna", x, rows, cols)
