"""Tests of scdiffx_grn.eval (generation / translation metrics, protocol, baselines, plots)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

anndata = pytest.importorskip("anndata")
mudata = pytest.importorskip("mudata")

from scdiffx_grn import (  # noqa: E402
    FeatureMismatchError,
    InputDataError,
    MissingLabelError,
    OptionError,
)
from scdiffx_grn import eval as ev  # noqa: E402

from conftest import float32_tol  # noqa: E402


# --------------------------------------------------------------------------------------------
# synthetic paired data with planted structure
# --------------------------------------------------------------------------------------------
def _paired(n_per_type=40, n_types=3, n_genes=120, n_peaks=200, seed=0, prefix="c"):
    """RNA counts and ATAC counts driven by a shared per-cell latent (type + continuous)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(123)  # same programme across calls
    Wg = base.normal(size=(n_types + 2, n_genes))
    Wp = base.normal(size=(n_types + 2, n_peaks))
    types = np.repeat([f"T{i}" for i in range(n_types)], n_per_type)
    onehot = (types[:, None] == np.array([f"T{i}" for i in range(n_types)])[None, :]).astype(float)
    cont = rng.normal(size=(len(types), 2))
    Z = np.hstack([2 * onehot, cont])
    rate = np.exp(0.5 * Z @ Wg / np.sqrt(3))
    rate = rate / rate.sum(1, keepdims=True) * rng.integers(800, 1500, size=(len(types), 1))
    rna_c = rng.poisson(rate).astype(np.float32)
    p = 1 / (1 + np.exp(-(Z @ Wp / 1.5 - 1.0)))
    atac_c = (rng.random(p.shape) < p) * rng.integers(1, 3, size=p.shape)
    names = [f"{prefix}{i}" for i in range(len(types))]
    obs = pd.DataFrame({"cell_type": pd.Categorical(types)}, index=names)
    rna = anndata.AnnData(sp.csr_matrix(rna_c), obs=obs.copy(),
                          var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    rna.layers["counts"] = rna.X.copy()
    atac = anndata.AnnData(sp.csr_matrix(atac_c.astype(np.float32)), obs=obs.copy(),
                           var=pd.DataFrame(index=[f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(n_peaks)]))
    atac.layers["counts"] = atac.X.copy()
    md = mudata.MuData({"rna": rna, "atac": atac})
    md.obs["cell_type"] = types
    return md


@pytest.fixture(scope="module")
def data():
    train = _paired(seed=0, prefix="tr")
    test = _paired(seed=1, prefix="te")
    return train, test


# --------------------------------------------------------------------------------------------
# distribution metrics
# --------------------------------------------------------------------------------------------
def test_identical_sets_zero_distance():
    x = np.random.default_rng(0).normal(size=(60, 5))
    assert ev.mmd_rbf(x, x) == pytest.approx(0, abs=1e-12)
    assert ev.energy_distance(x, x) == pytest.approx(0, abs=1e-9)
    assert ev.wasserstein(x, x, p=1) == pytest.approx(0, abs=1e-9)
    assert ev.wasserstein(x, x, p=2) == pytest.approx(0, abs=1e-6)
    r, rho = ev.pseudobulk_correlation(x + 3, x + 3)
    assert r == pytest.approx(1) and rho == pytest.approx(1)


def test_distances_monotonic_in_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4))
    y0 = rng.normal(size=(80, 4))
    shifts = [0.0, 0.5, 1.5, 4.0]
    for fn in (lambda a, b: ev.mmd_rbf(a, b, gammas=(0.1, 1.0)), ev.energy_distance,
               lambda a, b: ev.wasserstein(a, b, p=1), lambda a, b: ev.wasserstein(a, b, p=2)):
        vals = [fn(x, y0 + s) for s in shifts]
        assert all(b > a for a, b in zip(vals, vals[1:])), vals


def test_mmd_matches_double_loop():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1, size=(9, 3))
    gammas = (0.01, 0.1, 1.0, 10.0, 100.0)

    def k(a, b, g):
        return np.exp(-g * np.sum((a - b) ** 2))

    ref_b, ref_u = [], []
    for g in gammas:
        kxx = sum(k(a, b, g) for a in x for b in x)
        kyy = sum(k(a, b, g) for a in y for b in y)
        kxy = sum(k(a, b, g) for a in x for b in y)
        n, m = len(x), len(y)
        ref_b.append(kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m))
        ref_u.append((kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2 * kxy / (n * m))
    assert ev.mmd_rbf(x, y) == pytest.approx(np.mean(ref_b), rel=1e-9)
    assert ev.mmd_rbf(x, y, reduce="sum") == pytest.approx(np.sum(ref_b), rel=1e-9)
    assert ev.mmd_rbf(x, y, estimator="unbiased") == pytest.approx(np.mean(ref_u), rel=1e-9)


def test_wasserstein_and_energy_match_scipy_1d():
    from scipy.stats import energy_distance, wasserstein_distance

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.gamma(2.0, size=50)
    assert ev.wasserstein(a[:, None], b[:, None], p=1) == pytest.approx(wasserstein_distance(a, b), rel=1e-6)
    w2 = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))  # 1-D W2 = L2 between quantile functions
    assert ev.wasserstein(a[:, None], b[:, None], p=2) == pytest.approx(w2, rel=1e-6)
    assert ev.energy_distance(a[:, None], b[:, None]) == pytest.approx(energy_distance(a, b) ** 2, rel=1e-6)


def test_two_sample_classifiers_and_ilisi():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(150, 5)), rng.normal(size=(150, 5))
    far = y + 8.0
    assert abs(ev.one_nn_accuracy(x, y) - 0.5) < 0.12
    assert ev.one_nn_accuracy(x, far) == pytest.approx(1.0)
    assert abs(ev.rf_auc(x, y, n_estimators=50) - 0.5) < 0.12
    assert ev.rf_auc(x, far, n_estimators=50) > 0.99
    mixed, sep = ev.ilisi(x, y, k=20), ev.ilisi(x, far, k=20)
    assert mixed > 0.8 and sep == pytest.approx(0.0) and mixed > sep
    assert ev.ilisi(x, y, k=20, normalise=False) == pytest.approx(1 + mixed)


def test_label_transfer_and_markers():
    rng = np.random.default_rng(5)
    lab = np.repeat(["a", "b", "c"], 30)
    centres = {"a": 0.0, "b": 5.0, "c": 10.0}
    x = rng.normal(size=(90, 6)) + np.array([centres[c] for c in lab])[:, None] * np.eye(6)[0]
    acc, f1 = ev.knn_label_transfer(x, lab, x + 0.01, lab)
    assert acc == pytest.approx(1.0) and f1 == pytest.approx(1.0)
    acc_bad, _ = ev.knn_label_transfer(x, lab, x, np.roll(lab, 30))
    assert acc_bad < 0.1
    expr = np.abs(rng.normal(size=(90, 40)))
    for i, c in enumerate("abc"):
        expr[lab == c, i * 5:(i + 1) * 5] += 3
    mk = ev.marker_features(expr, lab, n_markers=5)
    assert set(mk["b"]) == set(range(5, 10))
    mc = ev.marker_correlation(expr, lab, expr, lab, n_markers=5)
    assert all(v == pytest.approx(1.0) for v in mc.values())


def test_paired_metric_primitives():
    rng = np.random.default_rng(6)
    y = (rng.random((20, 50)) < 0.3).astype(float)
    assert np.nanmean(ev.rowwise_auroc(y, y)) == pytest.approx(1.0)
    assert np.nanmean(ev.rowwise_auprc(y, y)) == pytest.approx(1.0)
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = rng.random((20, 50))
    assert ev.auroc(y.ravel(), s.ravel()) == pytest.approx(roc_auc_score(y.ravel(), s.ravel()))
    assert ev.auprc(y.ravel(), s.ravel()) == pytest.approx(average_precision_score(y.ravel(), s.ravel()))
    assert ev.rowwise_auroc(y, s)[0] == pytest.approx(roc_auc_score(y[0], s[0]))
    a = rng.normal(size=(10, 8))
    assert np.allclose(ev.rowwise_pearson(a, 2 * a + 1), 1.0)
    assert np.allclose(ev.colwise_pearson(a, -a), -1.0)


# --------------------------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------------------------
def test_feature_space_rna_and_atac(data):
    _, test = data
    fs = ev.FeatureSpace("rna", n_features=50, n_comps=10).fit(test["rna"])
    assert len(fs.var_names_) == 50 and fs.hvg_flavor_ in ("seurat_v3", "seurat")
    e = fs.transform(test["rna"])
    assert e.shape == (test.n_obs, 10)
    # projection of a column-permuted AnnData by name gives the same embedding
    perm = test["rna"][:, np.random.default_rng(0).permutation(test["rna"].n_vars)].copy()
    assert np.allclose(fs.transform(perm), e, atol=1e-4)
    fa = ev.FeatureSpace("atac", n_features=150, n_comps=10).fit(test["atac"])
    ea = fa.transform(test["atac"])
    assert ea.shape == (test.n_obs, 10) and isinstance(fa.dropped_first_, (bool, np.bool_))
    with pytest.raises(FeatureMismatchError, match=r"lacks \d+ features"):
        fs.transform(test["rna"][:, :10].copy())


def test_evaluate_generation_identical_vs_shuffled(data):
    train, test = data
    real = test["rna"]
    metrics = ["mmd", "w2", "energy", "pb_pearson", "1nn_acc", "knn_acc", "marker_corr"]
    tidy, summ = ev.evaluate_generation(real, real.copy(), seeds=(0, 1), metrics=metrics, min_cells=10)
    assert {"metric", "cell_type", "seed", "value"} <= set(tidy.columns)
    allv = tidy[tidy.cell_type == "all"].groupby("metric")["value"].mean()
    assert allv["mmd"] == pytest.approx(0, abs=1e-9) and allv["pb_pearson"] == pytest.approx(1)
    assert allv["knn_acc"] == pytest.approx(1.0)
    assert set(tidy.cell_type) >= {"T0", "T1", "T2"}
    assert set(summ.scope) == {"all", "cell_type_mean"} and (summ.n_seeds == 2).all()
    # wrong labels on generated cells: classifier and marker metrics collapse, MMD per type grows
    wrong = train["rna"].copy()
    wrong.obs["cell_type"] = np.roll(wrong.obs["cell_type"].astype(str).to_numpy(), 40)
    good_t, _ = ev.evaluate_generation(real, train["rna"], seeds=(0,), metrics=metrics)
    bad_t, _ = ev.evaluate_generation(real, wrong, seeds=(0,), metrics=metrics)
    g = good_t.groupby(["metric"])["value"].mean()
    b = bad_t.groupby(["metric"])["value"].mean()
    assert g["knn_acc"] > 0.9 > b["knn_acc"]
    assert g["marker_corr"] > b["marker_corr"]
    g_ct = good_t[(good_t.metric == "mmd") & (good_t.cell_type != "all")]["value"].mean()
    b_ct = bad_t[(bad_t.metric == "mmd") & (bad_t.cell_type != "all")]["value"].mean()
    assert b_ct > g_ct


def test_evaluate_generation_atac_probabilities(data):
    train, test = data
    gen = ev.CellTypeMeanBaseline().fit(train).generate({"cell_type": test.obs["cell_type"].tolist()}, seed=0)
    tidy, _ = ev.evaluate_generation(test["atac"], gen["atac"], modality="atac", seeds=(0,),
                                     metrics=["mmd", "pb_pearson", "1nn_acc"])
    v = tidy[tidy.cell_type == "all"].set_index("metric")["value"]
    assert v["pb_pearson"] > 0.9 and 0 <= v["1nn_acc"] <= 1


def _observed_pred(adata):
    from scdiffx_grn.eval._common import lognormalise

    pred = anndata.AnnData(lognormalise(adata.layers["counts"]).toarray(), obs=adata.obs.copy(),
                           var=adata.var.copy())
    return pred


def test_translation_perfect_and_shuffled(data):
    _, test = data
    obs = test["rna"]
    pred = _observed_pred(obs)
    t = ev.evaluate_translation(obs, pred, modality="rna", distribution=True)
    v = t[t.cell_type == "all"].set_index("metric")["value"]
    assert v["cell_pearson_mean"] == pytest.approx(1, abs=1e-5) and v["gene_pearson_mean"] == pytest.approx(1, abs=1e-5)
    assert v["mmd"] == pytest.approx(0, abs=1e-6)
    shuf = pred.copy()
    shuf.X = pred.X[np.random.default_rng(0).permutation(pred.n_obs)]
    v2 = ev.evaluate_translation(obs, shuf, modality="rna", distribution=False).set_index(
        ["metric", "cell_type"])["value"]
    assert abs(v2[("gene_pearson_mean", "all")]) < 0.5  # type structure still correlates genes a bit
    # ATAC
    oa = test["atac"]
    pa = anndata.AnnData((oa.layers["counts"].toarray() > 0).astype(np.float32), obs=oa.obs.copy(), var=oa.var.copy())
    va = ev.evaluate_translation(oa, pa, modality="atac", distribution=False).set_index(["metric", "cell_type"])["value"]
    assert va[("auroc_pooled", "all")] == pytest.approx(1) and va[("cell_auroc_mean", "T1")] == pytest.approx(1)
    assert va[("auprc_pooled", "all")] == pytest.approx(1)
    rnd = pa.copy()
    rnd.X = np.random.default_rng(1).random(pa.shape).astype(np.float32)
    vr = ev.evaluate_translation(oa, rnd, modality="atac", distribution=False).set_index(["metric", "cell_type"])["value"]
    assert abs(vr[("auroc_pooled", "all")] - 0.5) < 0.05 and abs(vr[("cell_auroc_mean", "all")] - 0.5) < 0.05


def test_translation_misaligned_raises(data):
    _, test = data
    obs = test["rna"]
    pred = _observed_pred(obs)
    with pytest.raises(InputDataError, match="different order"):
        ev.evaluate_translation(obs, pred[::-1].copy(), modality="rna")
    other = pred.copy()
    other.obs_names = [f"x{i}" for i in range(other.n_obs)]
    with pytest.raises(InputDataError, match="te0"):
        ev.evaluate_translation(obs, other, modality="rna")


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------
def test_generation_baselines_shapes_and_memorisation(data):
    train, test = data
    labels = {"cell_type": ["T0"] * 5 + ["T2"] * 7}
    for B in (ev.CellTypeMeanBaseline, ev.ResampleBaseline):
        g = B().fit(train).generate(labels, seed=0)
        assert g["rna"].shape == (12, train["rna"].n_vars) and g["atac"].shape == (12, train["atac"].n_vars)
        assert list(g["rna"].obs["cell_type"].astype(str)) == labels["cell_type"]
        assert "counts" in g["rna"].layers and "prob" in g["atac"].layers
        g2 = B().fit(train).generate(labels, seed=0)
        assert (g["rna"].X != g2["rna"].X).nnz == 0  # seeded
    with pytest.raises(MissingLabelError, match="nope"):
        ev.CellTypeMeanBaseline().fit(train).generate({"cell_type": ["nope"]})
    n = {"cell_type": test.obs["cell_type"].tolist()}
    res = ev.ResampleBaseline().fit(train).generate(n, seed=0)["rna"]
    d = ev.memorisation_distance(res, train["rna"], test["rna"], balance=False)
    assert d["is_copy"].all() and (d["d_train"] < 1e-4).all()
    ctm = ev.CellTypeMeanBaseline().fit(train).generate(n, seed=0)["rna"]
    d2 = ev.memorisation_distance(ctm, train["rna"], test["rna"])
    assert not d2["is_copy"].any() and 0.2 < d2["closer_to_train"].mean() < 0.8


class _ShapeDependentPCA:
    """A PCA projection computed like a BLAS that picks its float32 kernel by matrix shape (as
    OpenBLAS does per CPU type and thread count): few rows are summed feature by feature in
    reverse order, many rows by the library's matmul. Both are legitimate float32 results."""

    def __init__(self, pca):
        self.pca, self.mean_, self.components_ = pca, pca.mean_, pca.components_

    def transform(self, F):
        Xc = (np.asarray(F, dtype=np.float32) - self.mean_).astype(np.float32)
        if len(Xc) >= 64:
            return self.pca.transform(F)
        acc = np.zeros((len(Xc), len(self.components_)), np.float32)
        for i in range(Xc.shape[1] - 1, -1, -1):
            acc += Xc[:, i:i + 1] * self.components_[:, i][None, :]
        return acc


def test_memorisation_copies_flagged_whatever_the_float32_kernel(data):
    """An exact copy of a training cell is a copy on any CPU: the tolerance is the projection's
    rounding bound (from the embedding dtype's eps and the cell's norm), not a constant."""
    train, test = data
    fs = ev.FeatureSpace("rna").fit(test["rna"])
    assert fs.transform(train["rna"]).dtype == np.float32
    # the bound holds for every summation order of the float32 projection
    E, err = fs.transform_with_error(train["rna"])
    F = fs.features(train["rna"]).toarray()
    Xc = F - fs.pca_.mean_
    exact = Xc.astype(np.float64) @ fs.pca_.components_.T.astype(np.float64)
    reverse = _ShapeDependentPCA(fs.pca_).transform(F[:32])
    for other, rows in ((exact, slice(None)), (exact.astype(np.float32), slice(None)), (reverse, slice(0, 32))):
        assert (np.linalg.norm(E[rows] - other, axis=1) <= err[rows]).all()
    # copies projected by another kernel than their source cells are still copies
    fs.pca_ = _ShapeDependentPCA(fs.pca_)
    res = ev.ResampleBaseline().fit(train).generate({"cell_type": ["T0"] * 10 + ["T1"] * 10}, seed=0)["rna"]
    d = ev.memorisation_distance(res, train["rna"], test["rna"], feature_space=fs, balance=False)
    assert (d["d_train_all"] > 0).any()  # the two kernels do round differently
    assert d["is_copy"].all()
    # a cell one count away from a training cell is not a copy
    near = res.copy()
    X = near.layers["counts"].toarray()
    X[np.arange(len(X)), X.argmax(1)] += 1
    near.X = sp.csr_matrix(X)
    d = ev.memorisation_distance(near, train["rna"], test["rna"], feature_space=fs, balance=False)
    assert not d["is_copy"].any() and (d["d_train_all"] < 0.2 * d["d_test"]).all()


class _RandomTranslator(ev.KNNTranslator):
    """Floor: a random training cell's target."""

    def _predict(self, z, src, tgt):
        idx = np.random.default_rng(0).integers(0, self.targets_[tgt].shape[0], size=len(z))
        return self.targets_[tgt][idx].toarray()


def test_translators_beat_random(data):
    train, test = data
    knn = ev.KNNTranslator(k=10, n_comps=10).fit(train)
    ridge = ev.RidgeTranslator(n_comps=10).fit(train)
    rnd = _RandomTranslator(n_comps=10).fit(train)
    scores = {}
    for name, m in (("knn", knn), ("ridge", ridge), ("random", rnd)):
        p = m.translate(test, direction="atac->rna", n_samples=3, seed=0)
        assert p.shape == test["rna"].shape and list(p.obs_names) == list(test.obs_names)
        t = ev.evaluate_translation(test["rna"], p, modality="rna", distribution=False)
        pa = m.translate(test, direction="rna->atac")
        assert pa.X.min() >= 0 and pa.X.max() <= 1
        ta = ev.evaluate_translation(test["atac"], pa, modality="atac", distribution=False)
        s = pd.concat([t, ta]).query("cell_type == 'all'").set_index("metric")["value"]
        scores[name] = s
    for name in ("knn", "ridge"):
        assert scores[name]["gene_pearson_mean"] > scores["random"]["gene_pearson_mean"] + 0.1
        assert scores[name]["auroc_pooled"] > scores["random"]["auroc_pooled"]


# --------------------------------------------------------------------------------------------
# model vs baselines, report, plots
# --------------------------------------------------------------------------------------------
class _FakeModel:
    """Implements the model contract's generate / translate with the baselines."""

    def __init__(self, train):
        self._gen = ev.CellTypeMeanBaseline().fit(train)
        self._tr = ev.KNNTranslator(k=5, n_comps=10).fit(train)
        self.calls = []

    def generate(self, labels, *, sampler="dpm++", n_steps=20, guidance_scale=2.0, seed=0):
        self.calls.append(("generate", seed, n_steps))
        g = self._gen.generate(labels, seed=seed)
        del g["rna"].obs["cell_type"]  # the contract does not promise labels in obs
        return g

    def translate(self, mdata, direction="atac->rna", n_samples=5, seed=0, return_samples=False):
        self.calls.append(("translate", direction, n_samples))
        return self._tr.translate(mdata, direction=direction)


def test_evaluate_model_report_and_plots(data, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    train, test = data
    md = mudata.concat([train, test]) if hasattr(mudata, "concat") else None
    if md is None:  # pragma: no cover
        pytest.skip("mudata.concat unavailable")
    md.obs["split"] = ["train"] * train.n_obs + ["test"] * test.n_obs
    md.obs["cell_type"] = list(train.obs["cell_type"]) + list(test.obs["cell_type"])
    model = _FakeModel(train)
    table = ev.evaluate_model(model, md, seeds=(0,), n_samples=2, generate_kwargs={"n_steps": 7},
                              metrics=["mmd", "pb_pearson", "1nn_acc", "knn_acc"],
                              per_cell_type_metrics=["mmd"])
    assert list(table.columns) == ["method", "task", "modality", "metric", "cell_type", "seed", "value"]
    assert set(table.method) == {"model", "celltype_mean", "resample", "knn", "ridge"}
    assert set(table.modality) == {"rna", "atac", "atac->rna", "rna->atac"}
    assert ("generate", 0, 7) in model.calls and ("translate", "rna->atac", 2) in model.calls
    s = ev.summarise(table)
    comp = ev.comparison_table(s)
    assert comp.columns[0] == "model"
    mem = s[(s.metric == "mem_frac_copies") & (s.scope == "all")].set_index("method")["mean"]
    assert mem["resample"] > 0.9 and mem["model"] < 0.1
    fig1 = ev.metric_bars(table[table.task == "translation"])
    fig2 = ev.umap_real_vs_generated(test["rna"], train["rna"], basis="pca", save=tmp_path / "u.png")
    assert (tmp_path / "u.png").exists() and len(fig2.axes) >= 2
    paths = ev.write_report(table, tmp_path / "rep", figures={"bars": fig1})
    md_text = paths["report"].read_text()
    assert "| task | modality | metric | model |" in md_text.splitlines()[3] or "model" in md_text
    assert (tmp_path / "rep" / "bars.png").exists() and (tmp_path / "rep" / "summary.csv").exists()
    import matplotlib.pyplot as plt

    plt.close("all")


class _SplitModel(_FakeModel):
    """A model that carries the split it was trained with and records the cells it translates."""

    def __init__(self, train, test_cells, val_cells=()):
        super().__init__(train)
        self.setup = {"split": {"key": "split", "seed": 0, "test_cells": list(test_cells),
                                "val_cells": list(val_cells)}}
        self.seen = []

    def translate(self, mdata, **kw):
        self.seen.append(list(mdata.obs_names))
        return super().translate(mdata, **kw)


def test_evaluate_model_uses_the_models_stored_split(data):
    """A fresh split of the data (e.g. of a subsample) would score the model on its training cells."""
    train, test = data
    md = mudata.concat([train, test])
    md.obs["cell_type"] = list(train.obs["cell_type"]) + list(test.obs["cell_type"])
    # the data's own split marks 30 of the model's training cells as test cells
    md.obs["split"] = ["test" if i % 4 == 0 else "train" for i in range(md.n_obs)]
    stored_test, stored_val = list(test.obs_names[::2]), list(test.obs_names[1::2][:10])
    model = _SplitModel(train, stored_test, stored_val)
    assert (ev.model_split(model, md) == "test").sum() == len(stored_test)
    ev.evaluate_model(model, md, seeds=(0,), tasks=("translation",), baselines=False)
    assert model.seen and all(sorted(s) == sorted(stored_test) for s in model.seen)
    # val cells are held out too (neither test nor the baselines' training cells)
    assert ev.model_split(model, md)[md.obs_names.isin(stored_val)].tolist() == ["val"] * len(stored_val)
    # data holding none of the model's test cells: refused, naming the split and the way out
    with pytest.raises(InputDataError, match=r"carries the split.*60 test cells.*use_model_split=False"):
        ev.evaluate_model(model, train, seeds=(0,), tasks=("translation",), baselines=False)
    # the data's split, when asked for
    model.seen.clear()
    ev.evaluate_model(model, md, seeds=(0,), tasks=("translation",), baselines=False, use_model_split=False)
    assert sorted(model.seen[0]) == sorted(md.obs_names[md.obs["split"] == "test"])



class _ReadoutModel(_FakeModel):
    """A model that declares its readouts (eval.Translator) and records what it is asked for."""

    translation_readouts = ("mean", "samples")

    def translate(self, mdata, direction="atac->rna", seed=0, **kw):
        self.calls.append(("translate", direction, kw))
        return self._tr.translate(mdata, direction=direction)


class _UndeclaredReadoutModel(_FakeModel):
    """A ``readout`` parameter alone declares nothing: the signature is not read."""

    def translate(self, mdata, direction="atac->rna", readout="mean", n_samples=5, seed=0):
        self.calls.append(("translate", direction, readout, n_samples))
        return self._tr.translate(mdata, direction=direction)


def test_evaluate_model_asks_translators_by_their_declared_readouts(data):
    from scdiffx_grn import ScDiffusionX
    from scdiffx_grn.eval._common import translate_call_kwargs

    train, test = data
    md = mudata.concat([train, test])
    md.obs["split"] = ["train"] * train.n_obs + ["test"] * test.n_obs
    md.obs["cell_type"] = list(train.obs["cell_type"]) + list(test.obs["cell_type"])
    kw = dict(seeds=(0,), tasks=("translation",), baselines=False, n_samples=3)
    declared = _ReadoutModel(train)
    ev.evaluate_model(declared, md, **kw)
    assert ev.translation_readouts(declared) == ("mean", "samples") and isinstance(declared, ev.Translator)
    assert [c[2] for c in declared.calls] == [{"readout": "mean"}] * 2
    declared.calls.clear()
    ev.evaluate_model(declared, md, translate_kwargs={"readout": "samples", "n_steps": 4}, **kw)
    assert [c[2] for c in declared.calls] == [{"readout": "samples", "n_steps": 4, "n_samples": 3}] * 2
    undeclared = _UndeclaredReadoutModel(train)
    ev.evaluate_model(undeclared, md, **kw)
    assert ev.translation_readouts(undeclared) == () and undeclared.calls[0][2:] == ("mean", 3)
    for name, obj in (("knn", ev.KNNTranslator()), ("ridge", ev.RidgeTranslator()), ("model", ScDiffusionX)):
        assert ev.translation_readouts(obj) == (() if name != "model" else ("mean", "samples"))
    assert translate_call_kwargs(ev.KNNTranslator(), {"n_steps": 2}, 5) == {"n_steps": 2, "n_samples": 5}
    with pytest.raises(OptionError, match="readout must be one of 'mean', 'samples', got 'median'"):
        translate_call_kwargs(declared, {"readout": "median"}, 5)
    bad = _ReadoutModel(train)
    bad.translation_readouts = ("median",)
    with pytest.raises(OptionError, match="translation_readouts entry must be one of 'mean', 'samples'"):
        ev.translation_readouts(bad)


@pytest.mark.parametrize("kwargs, match", [({"n_samples": 0}, "n_samples must be an integer >= 1, got 0"),
                                           ({"n_cells": -5}, "n_cells must be an integer >= 1, got -5"),
                                           ({"seeds": (-1,)}, "seeds must be an integer >= 0, got -1")])
def test_evaluate_option_ranges(data, kwargs, match):
    train, test = data
    md = mudata.concat([train, test])
    md.obs["split"] = ["train"] * train.n_obs + ["test"] * test.n_obs
    with pytest.raises(OptionError, match=match):
        ev.evaluate_model(_FakeModel(train), md, baselines=False, **kwargs)
    if "n_cells" in kwargs:
        with pytest.raises(OptionError, match=match):
            ev.evaluate_generation(test["rna"], train["rna"], seeds=(0,), metrics=["mmd"], **kwargs)


def test_grn_is_lazy():
    import subprocess
    import sys

    code = ("import sys, scdiffx_grn.eval as e; assert 'scdiffx_grn.eval.grn' not in sys.modules; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# the registry contract: one normalisation, one label lookup, no silent fallbacks
# --------------------------------------------------------------------------------------------
def test_lognormalise_and_observed_target_match_log1p_cp10k(data):
    from scdiffx_grn.eval._common import lognormalise

    _, test = data
    X = test["rna"].layers["counts"].toarray().astype(np.float64)
    ref = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1e-12) * 1e4)
    L = lognormalise(test["rna"].layers["counts"])
    assert sp.issparse(L) and L.dtype == np.float32
    # float32 against a float64 reference: the divide, the scaling and log1p (a few ulps) round
    tol = float32_tol(ref, 8)
    np.testing.assert_allclose(L.toarray(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(ev.observed_target(test["rna"], "rna"), ref, rtol=0, atol=tol)
    # non-count input is taken as already log-normalised, negative values raise
    np.testing.assert_array_equal(lognormalise(ref.astype(np.float32)).toarray(), ref.astype(np.float32))
    with pytest.raises(InputDataError, match="negative"):
        lognormalise(-np.ones((2, 2)))


def test_missing_layer_and_label_raise(data):
    train, test = data
    rna = test["rna"].copy()
    del rna.layers["counts"]
    with pytest.raises(InputDataError, match=r"layer 'counts' not found.*layers: \(none\)"):
        ev.FeatureSpace("rna").fit(rna)
    with pytest.raises(InputDataError, match="layer 'counts' not found"):
        ev.observed_target(rna, "rna")
    with pytest.raises(InputDataError, match="layer 'counts' not found"):
        ev.evaluate_translation(rna, _observed_pred(test["rna"]), modality="rna", distribution=False)
    # layer=None reads X explicitly (here the same counts)
    fs = ev.FeatureSpace("rna", layer=None, n_features=50, n_comps=5).fit(rna)
    ref = ev.FeatureSpace("rna", n_features=50, n_comps=5).fit(test["rna"])
    np.testing.assert_allclose(fs.transform(rna), ref.transform(test["rna"]), atol=1e-4)
    # labels: one lookup, a missing column names what is there
    with pytest.raises(MissingLabelError, match="'nope' not found.*cell_type"):
        ev.evaluate_generation(test["rna"], train["rna"], groupby="nope", seeds=(0,), metrics=["mmd"])
    with pytest.raises(MissingLabelError, match="'nope'"):
        ev.CellTypeMeanBaseline(groupby="nope").fit(train)
    # MuData-level labels are found for the modalities' cells
    t2 = train.copy()
    del t2.mod["rna"].obs["cell_type"]
    del t2.mod["atac"].obs["cell_type"]
    g = ev.ResampleBaseline().fit(t2).generate({"cell_type": ["T1"] * 3}, seed=0)
    assert (train.obs["cell_type"].to_numpy()[g["rna"].obs["source_index"].to_numpy()] == "T1").all()


def test_bad_options_raise_option_error(data):
    train, test = data
    assert issubclass(OptionError, ValueError)
    with pytest.raises(OptionError, match="modality"):
        ev.FeatureSpace("protein")
    with pytest.raises(OptionError, match="unknown metrics"):
        ev.evaluate_generation(test["rna"], train["rna"], metrics=["nope"])
    with pytest.raises(OptionError, match="direction"):
        ev.KNNTranslator(n_comps=5).fit(train).translate(test, direction="rna->rna")
    with pytest.raises(OptionError, match="modality"):
        ev.evaluate_translation(test["rna"], _observed_pred(test["rna"]), modality="protein")
    with pytest.raises(OptionError, match="basis"):
        ev.umap_real_vs_generated(test["rna"], train["rna"], basis="tsne")
    with pytest.raises(OptionError, match="feature_space_fit"):
        ev.evaluate_model(None, test, feature_space_fit="both")
    with pytest.raises(OptionError, match="p must be"):
        ev.wasserstein(np.zeros((3, 2)), np.zeros((3, 2)), p=3)


def test_eval_has_no_import_cycles():
    """No module of scdiffx_grn.eval imports the package itself, and the submodules form no cycle."""
    import ast
    from pathlib import Path

    import scdiffx_grn.eval as pkg

    root = Path(pkg.__file__).parent
    graph = {}
    for f in root.glob("*.py"):
        if f.name == "__init__.py":
            continue
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is None:
                    deps.add("__init__")  # `from . import x` goes through the package
                else:
                    deps.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 2 and node.module in (None, "eval"):
                deps.add("__init__")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scdiffx_grn.eval"):
                rest = node.module[len("scdiffx_grn.eval"):].lstrip(".")
                deps.add(rest.split(".")[0] if rest else "__init__")
        graph[f.stem] = deps
    assert not [m for m, d in graph.items() if "__init__" in d], graph

    def reach(start):
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += list(graph.get(m, ()))
        return seen

    cyclic = [m for m in graph if m in reach(m)]
    assert not cyclic, {m: graph[m] for m in cyclic}
