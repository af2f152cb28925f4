"""Tests of scdiffx_grn.biomarkers (decoupler / pySCENIC / gseapy wrappers and biomarker ranking)."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdiffx_grn import get, pl, tl
from scdiffx_grn._errors import (
    InputDataError,
    MissingLabelError,
    OptionError,
    ScdxError,
    UnknownFeatureError,
)
from scdiffx_grn._store import stored_params, stored_table
from scdiffx_grn.biomarkers import (
    check_regulons,
    compare_networks,
    evaluate_regulator_ranking,
    reference_network,
    regulons_from_network,
)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mouse():
    from scdiffx_grn import datasets

    return datasets.mouse_mop(n_cells=300, seed=0)


def _planted(n_per=60, n_genes=80, seed=0):
    """Counts for groups A, B, C; TF 'Tfb' activates g0..g11 in B; marker genes / peaks per group."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(["A", "B", "C"], n_per)
    genes = [f"g{i}" for i in range(n_genes)] + ["Tfa", "Tfb", "Tfc", "Tfd"]
    lam = np.full((len(groups), len(genes)), 2.0)
    lam[groups == "B", :12] = 12.0            # targets of Tfb up in B
    lam[groups == "A", 40] = 15.0             # marker of A
    lam[groups == "C", 50] = 15.0             # marker of C
    X = rng.poisson(lam).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(groups)}, index=[f"c{i}" for i in range(len(groups))])
    rna = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))
    rna.layers["counts"] = rna.X.copy()
    others = [f"g{i}" for i in range(12, n_genes)]
    net = [("Tfb", f"g{i}", 1.0) for i in range(12)]
    for j, tf in enumerate(["Tfa", "Tfc", "Tfd"]):
        net += [(tf, t, 1.0) for t in rng.choice([o for o in others if o not in ("g40", "g50")], 12,
                                                     replace=False)]
    net += [("Tfa", "g40", 1.0), ("Tfc", "g50", 1.0)]  # planted markers have regulatory evidence
    net = pd.DataFrame(net, columns=["source", "target", "weight"])
    P = rng.random((len(groups), 30)) < 0.1
    P[groups == "C", 7] = rng.random((groups == "C").sum()) < 0.9   # planted open peak in C
    atac = ad.AnnData(sp.csr_matrix(P.astype(np.float32)), obs=obs.copy(),
                      var=pd.DataFrame({"linked_gene": [f"g{i}" if i != 7 else "g50" for i in range(30)]},
                                       index=[f"chr1_{i * 1000}_{i * 1000 + 500}" for i in range(30)]))
    atac.layers["counts"] = atac.X.copy()
    return rna, atac, net


# --------------------------------------------------------------------------- decoupler
def test_regulator_activity_reference_on_mouse(mouse):
    assert tl.regulator_activity(mouse, "dorothea", method="ulm", key_added="reg") is None
    tab = get.regulator_df(mouse, key="reg")
    assert stored_params(mouse, "reg")["method"] == "ulm" and "reg_params" not in mouse.uns
    rna = mouse.mod["rna"]
    assert rna.obsm["reg_score"].shape[0] == mouse.n_obs
    assert {"cell_type", "source", "score", "stat", "padj", "rank"} <= set(tab.columns)
    assert tab["source"].nunique() > 20
    top = get.regulator_df(mouse, key="reg", cell_type="Oligo", top_k=3)
    assert len(top) == 3 and (top["rank"] == [1, 2, 3]).all()
    # oligodendrocyte regulator Sox10 (its DoRothEA targets) is among the most active in Oligo
    olig = get.regulator_df(mouse, key="reg", cell_type="Oligo")
    assert olig.set_index("source").loc["Sox10", "rank"] <= 10


def test_planted_tf_ranks_first_and_pseudobulk():
    rna, _, net = _planted()
    tl.regulator_activity(rna, net, tmin=5)
    tab = get.regulator_df(rna)
    assert list(tab.columns[:2]) == ["cell_type", "source"]
    assert get.regulator_df(tab, cell_type="B")["source"].iat[0] == "Tfb"
    rna.obs["sample"] = np.tile(["s1", "s2", "s3"], rna.n_obs // 3)
    tl.regulator_activity(rna, source=net, pseudobulk_by=["sample", "cell_type"], key_added="pb")
    assert get.regulator_df(rna, key="pb", cell_type="B")["source"].iat[0] == "Tfb"
    assert len(rna.uns["pb"]["pseudobulk"]) == 9
    assert stored_params(rna, "pb")["pseudobulk_by"] == ["sample", "cell_type"]


def test_no_overlap_error_names_the_problem():
    rna, _, net = _planted()
    bad = net.assign(target=net["target"].str.upper())
    with pytest.raises(UnknownFeatureError, match="no overlap.*0 of"):
        tl.regulator_activity(rna, bad)


# --------------------------------------------------------------------------- pySCENIC
def test_grnboost2_deterministic_and_aucell(mouse):
    rna = mouse.mod["rna"]
    tfs = [t for t in reference_network("dorothea")["source"].unique() if t in set(rna.var_names)][:6]
    genes = list(rna.var_names[:5])
    kw = dict(seed=0, genes=genes, regressor_kwargs={"n_estimators": 200})
    assert tl.grnboost2(mouse, tfs, key_added="gb1", **kw) is None
    g1 = stored_table(mouse, "gb1", "network")
    g2 = stored_table(tl.grnboost2(mouse, tfs, copy=True, **kw), "grnboost2", "network")
    assert "grnboost2" not in mouse.uns  # copy=True leaves the input untouched
    assert list(g1.columns) == ["TF", "target", "importance"]
    pd.testing.assert_frame_equal(g1, g2)
    assert set(g1["TF"]) <= set(tfs) and set(g1["target"]) <= set(genes)
    assert (g1["importance"] >= 0).all() and g1["importance"].iloc[0] > 0
    regs = regulons_from_network(reference_network("dorothea"), genes=rna.var_names, min_targets=10)
    assert tl.aucell(mouse, regs[:15]) is None
    auc = mouse.obsm["aucell"]
    assert auc.shape == (mouse.n_obs, 15)
    assert list(stored_table(mouse, "aucell", "regulons")["regulon"]) == [r.name for r in regs[:15]]
    assert list(mouse.mod["rna"].obsm["aucell"].index) == list(rna.obs_names)
    assert np.isfinite(auc.to_numpy()).all() and (auc.to_numpy() >= 0).all()


def test_aucell_keeps_cell_order_on_planted():
    rna, _, net = _planted()
    out = tl.aucell(rna, net, min_targets=5, copy=True)
    assert "aucell" not in rna.obsm and "aucell" not in rna.uns
    auc = out.obsm["aucell"]
    b = rna.obs["cell_type"].to_numpy() == "B"
    assert auc.loc[b, "Tfb(+)"].mean() > 2 * auc.loc[~b, "Tfb(+)"].mean()


def test_regulons_are_gene_names_not_characters():
    import dask
    import dask.dataframe as dd

    from scdiffx_grn.biomarkers._compat import import_ctxcore_genesig, pyscenic_env

    with pyscenic_env():
        assert dask.config.get("dataframe.convert-string") is False
        df = pd.DataFrame({"tf": ["Sox10"], "genes": [["Plp1", "Mbp", "Mag"]]})
        back = dd.from_pandas(df, npartitions=1).compute()
        assert isinstance(back["genes"].iat[0], list)
    net = reference_network("dorothea")
    regs = regulons_from_network(net, min_targets=5)
    targets = net.groupby("source")["target"].apply(set)
    for r in regs:  # whole gene names of that TF's targets (mouse has one-letter genes such as 'T')
        assert set(r.genes) <= targets[r.transcription_factor], r.name
        assert sum(len(g) > 1 for g in r.genes) > len(r.genes) // 2, r.name
    genesig = import_ctxcore_genesig()
    broken = genesig.GeneSignature(name="Sox10(+)", gene2weight="Plp1")  # the silent-wrong-result shape
    with pytest.raises(InputDataError, match="single characters"):
        check_regulons([broken])
    with pytest.raises(InputDataError, match="string"):
        tl.aucell(ad.AnnData(np.ones((3, 3))), {"x": "Plp1"})


def test_network_of_another_organism_is_named():
    """biomarkers --organism human on mouse data said 'Lower tmin' (not a CLI option)."""
    from scdiffx_grn.biomarkers._utils import prepare_net

    genes = [f"Gene{i}" for i in range(60)]  # mouse-style symbols
    net = pd.DataFrame({"source": np.repeat(["TFA", "TFB"], 30), "target": [g.upper() for g in genes]})
    with pytest.raises(UnknownFeatureError, match=r"look human \(e\.g\. 'GENE0'\), the data's mouse.*organism='mouse'"):
        prepare_net(net, genes)
    net.loc[0, "target"] = "Gene0"  # one exact overlap: too few targets per source
    with pytest.raises(InputDataError, match=r"tmin=5.*60 of the network's 60 genes are data genes ignoring case, 1 "
                                             r"exactly.*--organism mouse") as e:
        prepare_net(net, genes)
    assert "Lower tmin" not in str(e.value)
    with pytest.raises(InputDataError, match="Lower tmin, or use a network"):  # same organism, small regulons
        prepare_net(net.assign(target=genes), genes, tmin=31)


# --------------------------------------------------------------------------- gseapy
def test_enrichment_planted_set_top_nes():
    genes = [f"G{i}" for i in range(200)]
    rank = pd.Series(np.linspace(5, -5, 200), index=genes)
    rng = np.random.default_rng(0)
    sets = {"PLANTED": genes[:15]}
    for k in range(5):
        sets[f"RANDOM_{k}"] = list(rng.choice(genes[20:], 15, replace=False))
    res = tl.enrichment(rank, sets, permutation_num=100, seed=0)  # nothing to store it in: returned
    assert res.columns[0] == "cell_type"
    assert res.sort_values("nes", ascending=False)["term"].iat[0] == "PLANTED"
    top = get.enrichment_df(res, top_k=1)
    assert top["term"].iat[0] == "PLANTED" and top["nes"].iat[0] > 1
    with pytest.raises(InputDataError, match="no gene set"):
        tl.enrichment(rank, {"X": ["a", "b", "c", "d", "e", "f"]}, permutation_num=10)
    for kw, match in (({"permutation_num": 0}, "permutation_num must be an integer >= 1, got 0"),
                      ({"min_size": 10, "max_size": 5}, r"max_size \(5\) must be >= min_size \(10\)")):
        with pytest.raises(OptionError, match=match):
            tl.enrichment(rank, sets, **kw)


def test_enrichment_hallmark_mouse_case(mouse):
    rank = pd.Series(np.arange(mouse.mod["rna"].n_vars, 0, -1.0), index=mouse.mod["rna"].var_names)
    assert tl.enrichment(rank, "hallmark", organism="mouse", permutation_num=20, data=mouse) is None
    res = get.enrichment_df(mouse)
    assert res["term"].str.startswith("HALLMARK_").all() and len(res) > 5
    assert stored_params(mouse, "enrichment")["permutation_num"] == 20


# --------------------------------------------------------------------------- biomarkers
def test_rank_biomarkers_planted(tmp_path):
    rna, atac, net = _planted()
    mdata = md.MuData({"rna": rna, "atac": atac})
    grn = pd.concat([net.assign(cell_type=g) for g in ["A", "B", "C"]], ignore_index=True)
    grn.loc[(grn["cell_type"] == "B") & (grn["source"] == "Tfb"), "weight"] = 5.0
    grn.loc[(grn["cell_type"] == "A") & (grn["target"] == "g40"), "weight"] = 5.0
    grn.loc[(grn["cell_type"] == "C") & (grn["target"] == "g50"), "weight"] = 5.0
    assert tl.rank_biomarkers(mdata, grn_key=grn, reference=net, n_markers=15, peak_top=None) is None
    tab = get.biomarker_df(mdata, kind=None)
    assert stored_params(mdata, "biomarkers")["grn_key"] == "<DataFrame>"
    assert {"specificity", "importance", "reference", "combined_score", "rank"} <= set(tab.columns)
    for g, marker in (("A", "g40"), ("C", "g50")):
        genes_g = get.biomarker_df(mdata, cell_type=g, kind="gene").set_index("feature")
        assert genes_g.loc[marker, "rank_specificity"] == 1
        assert genes_g.loc[marker, "rank_importance"] == 1
        assert genes_g.loc[marker, "rank"] == 1
    assert get.biomarker_df(mdata, cell_type="B", kind="tf")["feature"].iat[0] == "Tfb"
    assert get.biomarker_df(mdata, cell_type="C", kind="peak")["feature"].iat[0] == "chr1_7000_7500"
    b = get.biomarker_df(mdata, cell_type="B", kind="tf").set_index("feature")
    assert b.loc["Tfb", "rank_reference"] == 1 and b.loc["Tfb", "rank_importance"] == 1
    # mean of component ranks
    row = b.loc["Tfb"]
    comps = [c for c in ("rank_specificity", "rank_importance", "rank_reference") if np.isfinite(row[c])]
    assert row["combined_score"] == pytest.approx(np.mean([row[c] for c in comps]))
    tl.regulator_activity(rna, net, key_added="reg")
    fig = pl.regulator_dotplot(rna, key="reg", top_k=2, save=tmp_path / "dot.png")
    assert (tmp_path / "dot.png").exists() and fig is not None
    rank = pd.Series(np.linspace(3, -3, rna.n_vars), index=rna.var_names)
    enr = tl.enrichment(rank, {"S1": list(rna.var_names[:10]), "S2": list(rna.var_names[30:45])},
                        permutation_num=20)
    pl.enrichment_barplot(enr, top_k=2, save=tmp_path / "bar.png")
    assert (tmp_path / "bar.png").exists()


# --------------------------------------------------------------------------- evaluation
def test_evaluate_regulator_ranking_metrics():
    ranking = pd.DataFrame({"cell_type": ["A"] * 4, "source": ["t1", "t2", "t3", "t4"], "stat": [4, 3, 2, 1]})
    truth = pd.DataFrame({"cell_type": ["A", "A"], "tf": ["t1", "t5"]})
    ev = evaluate_regulator_ranking(ranking, truth, ks=(1, 2))
    r = ev.iloc[0]
    assert r["auroc"] == 1.0 and r["precision@1"] == 1.0 and r["precision@2"] == 0.5
    assert r["coverage"] == 0.5 and r["best_truth_rank"] == 1


def test_compare_networks_on_mouse(mouse):
    out = compare_networks(mouse, {"collectri": "collectri", "dorothea": "dorothea"}, "cell_type", seed=0)
    assert {"activity", "agreement", "recovery", "truth"} <= set(out)
    ag = out["agreement"]
    assert (ag["n_shared_tfs"] > 5).all()
    assert ag["spearman_stat"].dropna().between(-1, 1).all()
    assert set(out["recovery"]["network"]) == {"collectri", "dorothea"}


def test_de_table_logfc_pseudocount():
    """logFC uses a pseudocount of 1 (normalised scale): a gene absent from the rest is not ~25."""
    from scdiffx_grn.biomarkers._utils import de_table

    rng = np.random.default_rng(0)
    n = 60
    X = rng.poisson(3.0, (n, 4)).astype(float)
    lab = np.array(["a"] * 30 + ["b"] * 30)
    X[:, 0] = 0.0
    X[:3, 0] = 1.0  # barely expressed, only in group a
    X[:30, 1] *= 4  # a real marker of a
    ln = ad.AnnData(np.log1p(X), obs=pd.DataFrame({"ct": lab}, index=[f"c{i}" for i in range(n)]),
                    var=pd.DataFrame(index=[f"g{i}" for i in range(4)]))
    de = de_table(ln, "ct").set_index(["group", "gene"])
    ref = np.log2(X[:30, 1].mean() + 1) - np.log2(X[30:, 1].mean() + 1)
    assert de.loc[("a", "g1"), "logfc"] == pytest.approx(ref)
    assert abs(de.loc[("a", "g0"), "logfc"]) < 0.2
    assert de.loc[("b", "g1"), "logfc"] == pytest.approx(-ref)


# --------------------------------------------------------------------------- contracts
def test_pyscenic_shim_only_during_the_call(monkeypatch):
    """The numpy / pandas aliases pyscenic needs exist during its call only; nothing leaks."""
    import dask

    from scdiffx_grn.biomarkers import _compat

    attrs = [(owner, name) for owner, name, _ in _compat.patched_attributes()]
    before = {(id(o), n): n in vars(o) for o, n in attrs}
    assert not before[(id(np), "object")] and not before[(id(np), "msort")]  # numpy 2 / pandas 2
    assert not before[(id(pd.Series), "iteritems")]
    conv = dask.config.get("dataframe.convert-string", None)
    au = _compat.import_pyscenic("aucell")
    assert {(id(o), n): n in vars(o) for o, n in attrs} == before  # importing leaks nothing either
    seen = {}
    real = au.aucell

    def spy(*args, **kwargs):
        seen.update({(id(o), n): n in vars(o) for o, n in attrs})
        seen["dask"] = dask.config.get("dataframe.convert-string")
        return real(*args, **kwargs)

    monkeypatch.setattr(au, "aucell", spy)
    rna, _, net = _planted()
    tl.aucell(rna, net, min_targets=5)
    assert seen and all(seen[k] for k in before) and seen["dask"] is False
    assert {(id(o), n): n in vars(o) for o, n in attrs} == before
    assert dask.config.get("dataframe.convert-string", None) == conv
    # an attribute that exists beforehand is left as it is; nested blocks restore once
    sentinel = object()
    monkeypatch.setattr(np, "msort", sentinel, raising=False)
    with _compat.pyscenic_env():
        with _compat.pyscenic_env():
            assert np.msort is sentinel and np.object is object
        assert "object" in vars(np)
    assert np.msort is sentinel and "object" not in vars(np)


def test_copy_semantics_and_stored_params():
    rna, atac, net = _planted()
    mdata = md.MuData({"rna": rna, "atac": atac})
    for fn, kw, key in ((tl.regulator_activity, {"net": net}, "regulators"),
                        (tl.rank_biomarkers, {"reference": net, "n_markers": 15}, "biomarkers"),
                        (tl.enrichment, {"gene_sets": {"S1": [f"g{i}" for i in range(12)],
                                                       "S2": [f"g{i}" for i in range(40, 55)]},
                                         "permutation_num": 10}, "enrichment")):
        out = fn(mdata, copy=True, **kw)
        assert out is not mdata and key in out.uns and key not in mdata.uns, fn.__name__
        d = out.uns[key]
        assert set(d) >= {"params"} and len(d) >= 2, d.keys()
        assert d["params"]["groupby"] == "cell_type"
        assert fn(mdata, **kw) is None and key in mdata.uns
        for t in d:  # the copy's tables are the in-place ones
            if t != "params":
                pd.testing.assert_frame_equal(d[t], mdata.uns[key][t])
    tf = get.biomarker_df(mdata, kind="tf", cell_type="B").set_index("feature")
    assert tf.loc["Tfb", "rank_reference"] == 1
    assert get.enrichment_df(mdata, group="B")["term"].iat[0] == "S1"
    assert list(get.enrichment_df(mdata).columns[:2]) == ["cell_type", "term"]
    # a bare DataFrame under uns is not a stored result: the getters and plots say so
    mdata.uns["bare"] = get.regulator_df(mdata)
    with pytest.raises(InputDataError, match=r"uns\['bare'\] holds a DataFrame, not a regulator table"):
        get.regulator_df(mdata, key="bare")
    with pytest.raises(InputDataError, match=r"uns\['bare'\] holds a DataFrame"):
        pl.regulator_dotplot(mdata, key="bare", top_k=1)


def test_rank_biomarkers_reads_stored_grn_with_groupby_column():
    rna, atac, net = _planted()
    rna.obs["ct2"] = rna.obs["cell_type"].astype(str)
    mdata = md.MuData({"rna": rna, "atac": atac})
    grn = pd.concat([net.assign(ct2=g) for g in ["A", "B", "C"]], ignore_index=True)
    grn.loc[(grn["ct2"] == "B") & (grn["source"] == "Tfb"), "weight"] = 5.0
    mdata.uns["grn"] = {"params": {"groupby": "ct2", "group_column": "ct2"}, "network": grn}
    tl.rank_biomarkers(mdata, "ct2", grn_key="grn", reference=None, peaks=False)
    new = get.biomarker_df(mdata, kind="tf")
    assert new.columns[0] == "ct2"
    b = new[new["ct2"] == "B"].set_index("feature")
    assert b.loc["Tfb", "rank_importance"] == 1
    # the same as the DataFrame route (group column named after groupby)
    tl.rank_biomarkers(mdata, "ct2", grn_key=grn, reference=None, peaks=False, key_added="b2")
    pd.testing.assert_frame_equal(get.biomarker_df(mdata, key="b2", kind="tf"), new)
    with pytest.raises(ScdxError, match="no network under uns\\['nope'\\]"):
        tl.rank_biomarkers(mdata, "ct2", grn_key="nope", reference=None)


def test_registry_lookups_raise_and_match():
    from scdiffx_grn._registry import log_normalize
    from scdiffx_grn.biomarkers import _utils

    assert not hasattr(_utils, "looks_like_counts") and not hasattr(_utils, "obs_labels")
    rna, _, net = _planted()
    ln = _utils.lognorm_adata(rna)
    X = rna.X.toarray().astype(np.float64)
    np.testing.assert_allclose(ln.X.toarray(), np.log1p(X / X.sum(1, keepdims=True) * 1e4), rtol=1e-5)
    np.testing.assert_array_equal(ln.X.toarray(), log_normalize(rna.X).toarray())
    with pytest.raises(InputDataError, match=r"layer 'nope' not found.*'counts'"):
        tl.regulator_activity(rna, net, layer="nope")
    with pytest.raises(MissingLabelError, match="'nope' not found.*cell_type"):
        tl.regulator_activity(rna, net, groupby="nope")
    scaled = rna.copy()
    scaled.X = (rna.X.toarray() - 3.0).astype(np.float32)
    with pytest.raises(InputDataError, match="negative values.*layers: 'counts'"):
        tl.regulator_activity(scaled, net)
    tl.regulator_activity(scaled, net, layer="counts")  # explicit
    # labels of the MuData are found for the modality's cells
    mdata = md.MuData({"rna": rna})
    mdata.obs["grp"] = rna.obs["cell_type"].astype(str).to_numpy()
    tl.regulator_activity(mdata, net, groupby="grp")
    assert get.regulator_df(mdata).columns[0] == "grp"


def test_bad_options_raise_option_error():
    rna, _, net = _planted()
    assert issubclass(OptionError, ValueError)
    with pytest.raises(OptionError, match="unknown decoupler method"):
        tl.regulator_activity(rna, net, method="nope")
    with pytest.raises(OptionError, match="not both"):
        tl.regulator_activity(rna, net, source=net)
    with pytest.raises(OptionError, match="unknown reference network"):
        reference_network("nope")
    with pytest.raises(OptionError, match="organism"):
        reference_network("dorothea", organism="fish")
    tl.regulator_activity(rna, net)
    with pytest.raises(OptionError, match="group 'Z' not in the table"):
        get.regulator_df(rna, cell_type="Z")
    tl.rank_biomarkers(rna, reference=net, n_markers=15)
    with pytest.raises(OptionError, match="kind must be"):
        get.biomarker_df(rna, kind="protein")
    with pytest.raises(OptionError, match="gene sets 'nope'"):
        tl.enrichment(rna, "nope")


def test_grnboost2_default_tfs_from_tf_list(mouse):
    from scdiffx_grn.datasets import tf_list

    out = tl.grnboost2(mouse, genes=list(mouse.mod["rna"].var_names[:2]), regressor_kwargs={"n_estimators": 20},
                       copy=True)
    names = list(mouse.mod["rna"].var_names)
    assert stored_params(out, "grnboost2")["tf_names"] == tf_list(names, organism="mouse")
    assert set(stored_table(out, "grnboost2", "network")["TF"]) <= set(tf_list(names, organism="mouse"))
