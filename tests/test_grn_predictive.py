"""Held-out predictive validation of networks (eval.grn_predictive) and the consensus evidence method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scdiffx_grn import datasets, grn
from scdiffx_grn import eval as ev
from scdiffx_grn._errors import OptionError
from scdiffx_grn.grn._predictive import RidgeR2, rewire


@pytest.fixture(scope="module")
def toy():
    mdata = datasets.toy_multiome(0, n_cells=600)
    pp = pd.DataFrame(mdata.uns["planted_pairs"])
    truth = pd.DataFrame({"source": pp["peak"].astype(str), "target": pp["gene"].astype(str), "weight": 1.0})
    return mdata, truth


def test_rewire_keeps_degrees_and_avoids_duplicates():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 30, 400)
    tgt = rng.integers(0, 60, 400)
    keep = ~pd.Series(src * 1000 + tgt).duplicated().to_numpy()
    src, tgt = src[keep], tgt[keep]
    new = rewire(src, tgt, np.random.default_rng(1))
    assert np.array_equal(np.bincount(new, minlength=30), np.bincount(src, minlength=30))  # out-degrees
    assert not pd.Series(new * 1000 + tgt).duplicated().any()
    assert np.mean(new != src) > 0.8


def test_ridge_r2_matches_a_reference_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    Y = X[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(120, 4))
    tr, te = slice(0, 90), slice(90, None)
    src = np.array([0, 1, 2, 3, 4, 0, 5])
    tgt = np.array([0, 0, 1, 2, 2, 3, 3])
    fit = RidgeR2(X[tr], X[te], Y[tr], Y[te], alpha=0.1)
    got = fit.r2(src, tgt)
    for t in range(4):
        cols = src[tgt == t]
        mu, sd = X[tr][:, cols].mean(0), X[tr][:, cols].std(0)
        A, B = (X[tr][:, cols] - mu) / sd, (X[te][:, cols] - mu) / sd
        y = Y[tr][:, t] - Y[tr][:, t].mean()
        beta = np.linalg.solve(A.T @ A + 0.1 * 90 * np.eye(len(cols)), A.T @ y)
        pred = B @ beta + Y[tr][:, t].mean()
        ref = 1 - ((Y[te][:, t] - pred) ** 2).sum() / ((Y[te][:, t] - Y[te][:, t].mean()) ** 2).sum()
        assert got[t] == pytest.approx(ref, rel=1e3 * np.finfo(float).eps, abs=1e3 * np.finfo(float).eps)


def test_planted_network_beats_rewired_random_network_does_not(toy):
    mdata, truth = toy
    rng = np.random.default_rng(1)
    peaks, genes = np.asarray(mdata.mod["atac"].var_names), np.asarray(mdata.mod["rna"].var_names)
    rand = pd.DataFrame({"source": rng.choice(peaks, 30), "target": rng.choice(genes, 30), "weight": 1.0})
    tab = ev.grn_predictive(mdata, {"truth": truth, "random": rand}, n_random=30, pool=None)
    t, r = tab[tab.network == "truth"], tab[tab.network == "random"]
    assert len(t) == 3 and t["beats_random"].all() and (t["median_r2"] > 0.3).all()
    assert (t["frac_targets_improved"] == 1.0).all()
    # the gain's bootstrap standard error (over targets): finite, and the planted gain is many of them
    assert (t["delta_r2_se"] > 0).all() and (t["delta_r2"] > 3 * t["delta_r2_se"]).all(), t
    assert not r["beats_random"].any() and (r["median_r2"] < 0.1).all()
    assert set(tab["kind"]) == {"peak_gene"}
    # the split is keyed by cell name: reordering the cells changes nothing
    perm = mdata[np.random.default_rng(2).permutation(mdata.n_obs)].copy()
    tab2 = ev.grn_predictive(perm, {"truth": truth, "random": rand}, n_random=30, pool=None)
    key = ["network", "cell_type"]
    a, b = tab.sort_values(key).reset_index(drop=True), tab2.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["median_r2"], b["median_r2"], rtol=1e2 * np.finfo(np.float32).eps)
    with pytest.raises(OptionError, match="n_random"):
        ev.grn_predictive(mdata, truth, n_random=0)


def test_consensus_evidence_table_and_cross_validated_choice():
    from test_grn import StandInModel, _planted_mdata

    from scdiffx_grn.eval import grn as egrn

    mdata, cand, truth = _planted_mdata(n_cells=450)
    model = StandInModel(mdata)
    out = grn.extract_grn(model, mdata, method="consensus", candidates=cand, max_cells=None, copy=True)
    net = grn.network_table(out, "grn")
    ev = ["ev_distance", "ev_correlation", "ev_accessibility", "ev_model"]
    wcols = ["w_distance", "w_correlation", "w_accessibility", "w_model"]
    assert set(ev) <= set(net.columns) and "carried_by" in net
    w = net.groupby("cell_type")[wcols].first()
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=10 * np.finfo(float).eps)
    # one choice for the whole network (weights_by="network"): the same in every group, recorded in the params
    par = out.uns["grn"]["params"]["consensus"]
    carried = net.groupby("cell_type")["carried_by"].first()
    assert carried.nunique() == 1 and carried.iloc[0] == par["carried_by"]
    assert (w.nunique() == 1).all()
    # carried_by names exactly the evidences with a weight, and they weigh the same
    chosen = par["carried_by"].split("+")
    assert {c[2:] for c in wcols if w.iloc[0][c] > 0} == set(chosen)
    np.testing.assert_allclose(w.iloc[0][[f"w_{c}" for c in chosen]], 1.0 / len(chosen))
    assert par["weights"] == {k: (1.0 / len(chosen) if k in chosen else 0.0) for k in par["weights"]}
    # the cross-validated gain of every non-empty evidence subset (15 for 4 evidences) over 5 folds of all cells
    assert len(par["cv"]) == 15 and par["n_units"] == 5
    # the weight is the weighted mean of the evidences' percentile ranks
    from scipy.stats import rankdata

    t0 = net[net.cell_type == "T0"]
    ranks = np.column_stack([rankdata(t0[c], method="average") / len(t0) for c in ev])
    np.testing.assert_allclose(t0["weight"], ranks @ w.loc["T0"].to_numpy(), rtol=1e3 * np.finfo(float).eps)
    # the stand-in model knows 8 of the 10 planted links exactly (peak k -> gene k) and metacell
    # correlation finds them in the data; cross-validation keeps one of them (accessibility and
    # distance, blind to the planted links, do not carry the network), and planted links rank high
    assert set(chosen) <= {"model", "correlation"}, par
    gain = {k: v["gain"] for k, v in par["cv"].items()}
    assert gain["model"] > max(gain["accessibility"], gain["distance"]) + 0.1, gain
    tab = egrn.peak_gene_metrics(t0, truth, candidates=cand)
    assert tab.set_index("method").loc["model", "auroc"] > 0.85, tab
    pred = egrn.grn_predictive(out, {"consensus": net}, top_k=10, n_random=20, pool=None)
    assert pred["beats_random"].all(), pred
    # one choice per group: each group's own folds, listed in the params
    pg = grn.extract_grn(model, mdata, method="consensus", candidates=cand, max_cells=None, weights_by="group",
                         copy=True)
    per = pg.uns["grn"]["params"]["consensus"]["per_group"]
    by_group = grn.network_table(pg, "grn").groupby("cell_type")["carried_by"].first()
    assert set(per) == {"T0", "T1", "T2"} and all(per[g]["carried_by"] == c for g, c in by_group.items())
    assert all(per[g]["n_units"] == 5 and len(per[g]["cv"]) == 15 for g in per)
    # data evidence only: no model column, the choice among three evidences
    nm = grn.network_table(grn.extract_grn(model, mdata, method="consensus", model_evidence="none",
                                           candidates=cand, max_cells=None, cell_types=["T1"], copy=True), "grn")
    assert "ev_model" not in nm and "w_model" not in nm
    with pytest.raises(OptionError, match="model_evidence"):
        grn.extract_grn(model, mdata, method="consensus", model_evidence="gradients", candidates=cand)
    with pytest.raises(OptionError, match="weights_by"):
        grn.extract_grn(model, mdata, method="consensus", weights_by="type", candidates=cand)


def test_consensus_never_uses_test_cells_and_reads_every_cell_of_the_group():
    from test_grn import StandInModel, _planted_mdata

    mdata, cand, _ = _planted_mdata(n_cells=450)
    model = StandInModel(mdata)
    names = np.asarray(mdata.obs_names)
    model.setup["split"] = {"test_cells": list(names[::4])}
    kw = dict(method="consensus", candidates=cand, max_cells=None, copy=True)
    net = grn.network_table(grn.extract_grn(model, mdata, **kw), "grn")
    # scramble the RNA of the test cells: nothing of the consensus may change
    other = mdata.copy()
    rna = other.mod["rna"]
    test = np.isin(rna.obs_names, names[::4])
    X = rna.layers["counts"].toarray()
    X[test] = np.random.default_rng(0).permutation(X[test].ravel()).reshape(X[test].shape)
    import scipy.sparse as sp

    rna.layers["counts"] = sp.csr_matrix(X)
    out2 = grn.extract_grn(model, other, **kw)
    pd.testing.assert_frame_equal(net, grn.network_table(out2, "grn"))
    # max_cells subsamples the cells the model runs on; the data evidence reads every cell of the group
    small = grn.network_table(grn.extract_grn(model, mdata, **{**kw, "max_cells": 40}), "grn")
    np.testing.assert_array_equal(small["ev_correlation"], net["ev_correlation"])
    np.testing.assert_array_equal(small["ev_accessibility"], net["ev_accessibility"])
    assert not np.allclose(small["ev_model"], net["ev_model"])
    assert (small.groupby("cell_type")["n_cells"].first() == 40).all()


def test_consensus_choice_falls_back_to_the_best_single_evidence():
    from scdiffx_grn.grn._consensus import choose

    rng = np.random.default_rng(0)
    units = np.full(20, 30)
    noise = rng.normal(0, 0.01, 20)
    base = {"distance": 0.001, "correlation": 0.004, "accessibility": 0.0, "model": 0.005}
    gains = {k: v + rng.normal(0, 0.002, 20) for k, v in base.items()}
    from itertools import combinations

    for r in (2, 3, 4):
        for c in combinations(base, r):
            gains["+".join(c)] = np.mean([gains[k] for k in c], axis=0)
    # a combination that beats the best single evidence by far more than its standard error is kept
    gains["correlation+model"] = gains["model"] + 0.01 + 0.001 * noise
    got = choose(units, dict(gains), list(base))
    assert got["subset"] == ("correlation", "model"), got["rule"]
    # one that beats it by less than the standard error of their difference is not: the best single evidence
    gains["correlation+model"] = gains["model"] + 0.002 + noise
    got = choose(units, dict(gains), list(base))
    assert got["subset"] == ("model",) and "does not beat" in got["rule"], got["rule"]
    # the reported gain and standard error are the unit-weighted mean and its standard error
    t = got["table"]["model"]
    x = gains["model"]
    assert t["gain"] == pytest.approx(x.mean(), rel=1e3 * np.finfo(float).eps)
    assert t["se"] == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=1e3 * np.finfo(float).eps)
    # no cross-validation unit: every evidence with the same weight
    assert choose([], {}, list(base))["subset"] == ("distance", "correlation", "accessibility", "model")
