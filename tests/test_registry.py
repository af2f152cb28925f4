"""The MuData contract (``_registry``), the tl storage contract (``_store``), the TF list and the toy data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdiffx_grn as sx
from scdiffx_grn import _registry as R
from scdiffx_grn import _store as S
from scdiffx_grn import datasets
from scdiffx_grn._errors import InputDataError, MissingLabelError, NotCountsError, OptionError, ScdxError

from conftest import float32_tol


# --------------------------------------------------------------------------- registry
def test_setup_writes_registry_and_reads_back(synthetic_mdata):
    m = synthetic_mdata
    reg = sx.setup_mudata(m, labels="cell_type")
    assert reg == R.registry(m)
    assert reg.labels == ("cell_type",) and reg.modalities == ("rna", "atac")
    assert reg.layer("rna") == "counts" and reg.n_vars == {"rna": m.mod["rna"].n_vars, "atac": m.mod["atac"].n_vars}
    assert reg.features["atac"] == R.fingerprint(m.mod["atac"].var_names)
    # the stored form is plain types (writes with the MuData), the registry's fields and nothing else
    d = m.uns[R.REGISTRY_KEY]
    assert d["layers"] == {"rna": "counts", "atac": "counts"} and d["labels"] == ["cell_type"]
    assert set(d) == {"modalities", "labels", "layers", "n_vars", "features"}
    # the model's registration is the same registry
    sx.ScDiffusionX.setup_mudata(m, labels=["cell_type"], rna_layer="counts")
    assert R.registry(m) == reg


def test_setup_refuses_bad_input(synthetic_mdata):
    m = synthetic_mdata
    with pytest.raises(MissingLabelError, match="tissue"):
        R.setup_mudata(m, labels=["tissue"])
    with pytest.raises(InputDataError, match="layers\\['raw'\\]|'raw' not found"):
        R.setup_mudata(m, rna_layer="raw")
    with pytest.raises(OptionError):
        R.setup_mudata(m, modalities=("atac",))
    m.mod["rna"].layers["counts"] = m.mod["rna"].layers["counts"] * 0.5
    with pytest.raises(NotCountsError):
        R.setup_mudata(m)
    with pytest.raises(ScdxError, match="setup_mudata"):
        R.registry(datasets.toy_multiome(1))
    assert R.registry(datasets.toy_multiome(1), required=False) is None


def test_labels_one_precedence(synthetic_mdata):
    m = synthetic_mdata
    truth = m.obs["cell_type"].astype(str)
    # mdata.obs first
    m.mod["rna"].obs["cell_type"] = "rna-level"
    assert (R.labels(m, "cell_type") == truth.to_numpy()).all()
    # then rna:key, then the modalities' obs (rna before atac)
    m.obs = m.obs.drop(columns=["cell_type"])
    assert (R.labels(m, "cell_type") == "rna-level").all()
    m.obs["rna:cell_type"] = truth.to_numpy()
    assert (R.labels(m, "cell_type").to_numpy() == truth.to_numpy()).all()
    # a modality's cells: aligned by name, not position
    a = m.mod["atac"][::-1].copy()
    got = R.labels(m, "cell_type", adata=a)
    assert (got.index == a.obs_names).all() and (got.to_numpy() == truth.to_numpy()[::-1]).all()
    assert (R.labels(m, None) == "all").all()
    with pytest.raises(MissingLabelError, match="available"):
        R.labels(m, "tissue")
    m.obs.loc[m.obs_names[3], "rna:cell_type"] = np.nan
    with pytest.raises(MissingLabelError, match="no label for 1 cells"):
        R.labels(m, "cell_type")


def test_layers_never_fall_back(synthetic_mdata):
    m = synthetic_mdata
    assert R.counts(m, "rna") is m.mod["rna"].layers["counts"]
    del m.mod["atac"].layers["counts"]
    with pytest.raises(InputDataError, match="'counts' not found"):
        R.counts(m, "atac")
    assert R.counts(m, "atac", layer=None) is m.mod["atac"].X


@pytest.mark.parametrize("X,expected", [
    (np.zeros((0, 3)), True), (sp.csr_matrix((2, 3)), True), (np.array([[0, 2], [1, 5]]), True),
    (np.array([[0.0, 2.0]]), True), (np.array([[0.5, 2.0]]), False), (np.array([[-1, 2]]), False),
    (np.array([[np.nan, 1.0]]), False), (np.array([[True, False]]), True),
])
def test_one_count_detector(X, expected):
    assert R.is_counts(X) is expected
    from scdiffx_grn import pp

    assert pp.is_counts(X) is expected  # the same function, re-exported


def test_log_normalize_matches_reference_on_every_type():
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(7, 11)).astype(np.float32)
    X[2] = 0  # an empty cell stays zero
    tot = X.sum(1, keepdims=True)
    ref = np.log1p(X / np.where(tot == 0, 1, tot) * 1e4)
    # float32 throughout, perhaps in another order of operations and another log1p (a few ulps each)
    tol = float32_tol(ref, 8)
    np.testing.assert_allclose(R.log_normalize(X), ref, rtol=0, atol=tol)
    S_ = R.log_normalize(sp.csr_matrix(X))
    assert sp.isspmatrix_csr(S_) and S_.nnz == np.count_nonzero(X)
    np.testing.assert_allclose(S_.toarray(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(R.log_normalize(torch.from_numpy(X)).numpy(), ref, rtol=0, atol=tol)
    assert not R.log_normalize(X)[2].any()


def test_log_expression_normalises_counts_only(synthetic_mdata):
    m = synthetic_mdata
    ln = R.log_expression(m, "rna")
    np.testing.assert_allclose(ln.toarray(), R.log_normalize(m.mod["rna"].layers["counts"]).toarray())
    m.mod["rna"].X = ln  # an already log-normalised X is used as is
    np.testing.assert_allclose(R.log_expression(m, "rna").toarray(), ln.toarray())


def test_feature_columns():
    assert R.feature_columns(["a", "b"], ["a", "b"]) is None
    assert list(R.feature_columns(["a", "b", "c"], ["c", "a"])) == [2, 0]
    with pytest.raises(sx.FeatureMismatchError, match="'z'"):
        R.feature_columns(["a"], ["a", "z"])


# --------------------------------------------------------------------------- storage contract
def test_store_contract(synthetic_mdata):
    m = synthetic_mdata
    df = pd.DataFrame({"source": ["a"], "target": ["b"], "weight": [1.0]})
    out = S.target(m, copy=True)
    assert out is not m
    S.store(out, "res", {"network": df}, {"groupby": "cell_type", "n": np.int64(3), "keys": ("a", "b")})
    assert "res" not in m.uns and S.done(out, True) is out and S.done(m, False) is None
    assert S.stored_params(out, "res") == {"groupby": "cell_type", "n": 3, "keys": ["a", "b"]}
    assert S.stored_table(out, "res", "network").equals(df)
    out.uns["bare"] = df  # not a stored result: named, not read as one
    with pytest.raises(InputDataError, match=r"uns\['bare'\] holds a DataFrame, not a result.*rerun tl.x"):
        S.stored_table(out, "bare", "network", hint="tl.x")
    with pytest.raises(ScdxError, match="run tl.x first"):
        S.stored(out, "missing", hint="tl.x")
    with pytest.raises(ScdxError, match="no 'effects' table"):
        S.stored_table(out, "res", "effects")


# --------------------------------------------------------------------------- TF list
def test_tf_list_matches_spelling_and_orders_by_targets():
    net = pd.DataFrame({"source": ["SOX2", "SOX2", "PAX6", "GATA1", "SOX2"],
                        "target": ["A", "B", "A", "C", "Z"]})
    genes = ["Sox2", "Pax6", "Gata1", "a", "b"]
    assert datasets.tf_list(genes, network=net) == ["Sox2", "Pax6", "Gata1"]
    assert datasets.tf_list(genes, network=net, min_targets=1) == ["Sox2", "Pax6"]
    assert datasets.tf_list(genes, network=net, order="name") == ["Gata1", "Pax6", "Sox2"]
    assert datasets.tf_list(network=net) == ["SOX2", "GATA1", "PAX6"]
    with pytest.raises(OptionError):
        datasets.tf_list(source="jaspar")


def test_tf_list_from_the_shipped_references():
    tfs = datasets.tf_list(organism="human")
    assert len(tfs) > 500 and len(set(tfs)) == len(tfs) and "TP53" in tfs[:20]
    mouse = datasets.tf_list(["Sox2", "Pax6", "Actb"], organism="mouse", source="dorothea", min_targets=0)
    assert "Actb" not in mouse and {"Sox2", "Pax6"} <= set(mouse)


# --------------------------------------------------------------------------- toy data
def test_toy_multiome_planted_pairs_are_real():
    m = datasets.toy_multiome(0)
    assert m.shape[0] == 300 and set(m.obs["cell_type"]) == {"type0", "type1", "type2"}
    pairs = m.uns["planted_pairs"]
    A = m.mod["atac"].layers["counts"].toarray() > 0
    Y = m.mod["rna"].layers["counts"].toarray()
    genes, peaks = list(m.mod["rna"].var_names), list(m.mod["atac"].var_names)
    for p, g in zip(pairs["peak"], pairs["gene"]):
        on = A[:, peaks.index(p)]
        y = Y[:, genes.index(g)]
        assert y[on].mean() > 5 * y[~on].mean()
    # deterministic, and the seed matters
    assert (datasets.toy_multiome(0).mod["rna"].X != m.mod["rna"].X).nnz == 0
    assert (datasets.toy_multiome(1).mod["rna"].X != m.mod["rna"].X).nnz > 0
    with pytest.raises(OptionError):
        datasets.toy_multiome(n_cells=301)
