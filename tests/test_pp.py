"""Tests of scdiffx_grn.pp and scdiffx_grn._validate."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdiffx_grn import pp
from scdiffx_grn._errors import BarcodeMismatchError, InputDataError, MissingLabelError, NotCountsError, OptionError


def _peaks(names):
    return ad.AnnData(np.zeros((2, len(names)), np.float32), var=pd.DataFrame(index=names))


# --------------------------------------------------------------------------- peaks
@pytest.mark.parametrize("name,chrom,start,end", [
    ("chr1-100-200", "chr1", 100, 200),
    ("chr1:100-200", "chr1", 100, 200),
    ("chr1_100_200", "chr1", 100, 200),
    ("1-100-200", "chr1", 100, 200),
    ("X-5-10", "chrX", 5, 10),
    ("chrY:1-2", "chrY", 1, 2),
    ("MT-3-40", "chrM", 3, 40),
    ("chrM_3_40", "chrM", 3, 40),
    ("GL000194.1-100-200", "GL000194.1", 100, 200),
    ("chrUn_KI270742v1-100-200", "chrUn_KI270742v1", 100, 200),
    ("chrUn_KI270742v1_100_200", "chrUn_KI270742v1", 100, 200),
])
def test_parse_peaks_forms(name, chrom, start, end):
    a = _peaks([name])
    pp.parse_peaks(a)
    assert a.var["chrom"].iloc[0] == chrom
    assert a.var["start"].iloc[0] == start and a.var["end"].iloc[0] == end
    assert a.var["start"].dtype.kind == "i"


def test_parse_peaks_errors_and_copy(synthetic_mdata):
    with pytest.raises(InputDataError, match=r"2 of 3 peak names.*'Gata1'.*'chr1-abc-3'"):
        pp.parse_peaks(_peaks(["chr1-1-2", "Gata1", "chr1-abc-3"]))
    with pytest.raises(InputDataError, match="start > end"):
        pp.parse_peaks(_peaks(["chr1-300-200"]))
    a = _peaks(["chr2:10-20"])
    out = pp.parse_peaks(a, copy=True)
    assert "chrom" not in a.var and out.var["chrom"].iloc[0] == "chr2"
    m = synthetic_mdata
    del m.mod["atac"].var["chrom"]
    assert pp.parse_peaks(m) is None and "chrom" in m.mod["atac"].var


def test_filter_peaks(synthetic_mdata):
    m = synthetic_mdata
    pp.filter_peaks(m, min_frac=0.0, top_n=50)
    assert m.mod["atac"].n_vars == 50 and m.shape[1] == 60 + 50
    assert (np.diff(m.mod["atac"].var["start"].to_numpy()) > 0).all()  # original order kept
    kept_frac = m.mod["atac"].var["frac_cells"].min()
    assert kept_frac > 0.1
    out = pp.filter_peaks(m, min_frac=0.3, copy=True)
    assert (out.mod["atac"].var["frac_cells"] >= 0.3).all() and m.mod["atac"].n_vars == 50
    with pytest.raises(InputDataError, match="no peak is open"):
        pp.filter_peaks(m, min_frac=1.0)  # (a fraction above 1 is an OptionError)


# --------------------------------------------------------------------------- qc / hvg
def test_qc_keeps_pairing(synthetic_mdata):
    m = synthetic_mdata
    counts = m.mod["rna"].layers["counts"].tolil()
    counts[:5, :] = 0  # five empty cells
    m.mod["rna"].layers["counts"] = counts.tocsr()
    atac_counts = m.mod["atac"].layers["counts"].tolil()
    atac_counts[:, 119] = 0  # an empty peak
    m.mod["atac"].layers["counts"] = atac_counts.tocsr()
    pp.qc(m, min_genes=5, min_peaks=5, min_cells_gene=3, min_cells_peak=3)
    assert m.n_obs == 295
    assert (m.mod["rna"].obs_names == m.mod["atac"].obs_names).all() and (m.obs_names == m.mod["rna"].obs_names).all()
    assert "chrX-605000-605500" not in m.mod["atac"].var_names
    assert {"n_genes", "n_peaks", "total_counts_rna", "total_counts_atac"} <= set(m.obs)
    assert "cell_type" in m.obs
    with pytest.raises(InputDataError, match="no cell has"):
        pp.qc(m, min_genes=10_000)


def test_qc_unpaired_raises(synthetic_mdata):
    m = synthetic_mdata
    m.mod["atac"].obs_names = [f"x{i}" for i in range(m.n_obs)]
    with pytest.raises(BarcodeMismatchError):
        pp.qc(m)


def test_highly_variable_genes_finds_markers(synthetic_mdata):
    m = synthetic_mdata
    pp.highly_variable_genes(m, n_top_genes=34)
    var = m.mod["rna"].var
    assert var["highly_variable"].sum() == 34
    planted = [g for gs in m.uns["marker_genes"].values() for g in gs] + list(m.uns["planted_pairs"]["gene"])
    assert var.loc[planted, "highly_variable"].mean() > 0.8
    assert m.mod["rna"].uns["hvg"]["flavor"] in ("seurat_v3", "seurat_v3_poly")
    out = pp.highly_variable_genes(m, n_top_genes=20, subset=True, copy=True)
    assert out.mod["rna"].n_vars <= 25 and m.mod["rna"].n_vars == 60
    pp.highly_variable_genes(m, n_top_genes=500)
    assert m.mod["rna"].var["highly_variable"].all()
    m.mod["rna"].layers["counts"] = m.mod["rna"].layers["counts"] * 0.5
    with pytest.raises(NotCountsError):
        pp.highly_variable_genes(m)


# --------------------------------------------------------------------------- atac transforms
def test_binarize_tfidf_lsi(synthetic_mdata):
    m = synthetic_mdata
    pp.binarize(m, layer="counts", key_added="binary")
    B = m.mod["atac"].layers["binary"]
    assert set(np.unique(B.data)) == {1.0} and B.nnz == m.mod["atac"].layers["counts"].nnz
    assert m.mod["atac"].layers["counts"].max() == 2  # counts untouched
    pp.tfidf(m, layer="binary", key_added="tfidf")
    T = m.mod["atac"].layers["tfidf"]
    assert T.shape == B.shape and np.isfinite(T.data).all() and (T.data > 0).all()
    pp.lsi(m, n_comps=10, layer="binary", seed=0)
    Z = m.mod["atac"].obsm["X_lsi"]
    assert Z.shape == (300, 10) and m.obsm["X_lsi"].shape == (300, 10)
    # cell types separate in LSI space (dims 2..)
    ct = m.obs["cell_type"].to_numpy()
    cent = np.stack([Z[ct == t, 1:4].mean(0) for t in np.unique(ct)])
    within = np.mean([np.linalg.norm(Z[ct == t, 1:4] - cent[i], axis=1).mean() for i, t in enumerate(np.unique(ct))])
    between = np.mean([np.linalg.norm(cent[i] - cent[j]) for i in range(3) for j in range(i + 1, 3)])
    assert between > within
    Z2 = pp.lsi(m, n_comps=10, layer="binary", seed=0, copy=True).mod["atac"].obsm["X_lsi"]
    np.testing.assert_allclose(np.abs(Z), np.abs(Z2), atol=1e-4)


def test_binarize_anndata_threshold():
    a = ad.AnnData(sp.csr_matrix(np.array([[0, 1, 3], [2, 0, 0]], np.float32)))
    out = pp.binarize(a, threshold=1.5, copy=True)
    np.testing.assert_array_equal(out.X.toarray(), [[0, 0, 1], [1, 0, 0]])
    assert a.X.max() == 3
    with pytest.raises(InputDataError, match="layer 'nope' not found"):
        pp.binarize(a, layer="nope")


def test_lsi_real_data(mop_small):
    assert mop_small.n_obs == 600 and mop_small.mod["atac"].n_vars == 3000 and mop_small.mod["rna"].n_vars == 1677
    pp.lsi(mop_small, n_comps=20, layer="counts")
    assert mop_small.mod["atac"].obsm["X_lsi"].shape == (600, 20)


# --------------------------------------------------------------------------- splits
def test_split_cells_reproducible_and_stratified(synthetic_mdata):
    m = synthetic_mdata
    pp.split_cells(m, seed=1)
    s1 = m.obs["split"].to_numpy().copy()
    assert list(m.obs["split"].cat.categories) == ["train", "val", "test"]
    assert (m.mod["rna"].obs["split"].to_numpy() == s1).all()
    ctab = pd.crosstab(m.obs["cell_type"], m.obs["split"])
    assert (ctab["train"] == 80).all() and (ctab["val"] == 10).all() and (ctab["test"] == 10).all()
    pp.split_cells(m, seed=1)
    assert (m.obs["split"].to_numpy() == s1).all()
    pp.split_cells(m, seed=2)
    assert not (m.obs["split"].to_numpy() == s1).all()
    out = pp.split_cells(m, fractions=(0.5, 0.5), stratify=None, key_added="half", copy=True)
    assert (out.obs["half"].value_counts() == 150).all() and "half" not in m.obs


def test_split_cells_errors(synthetic_mdata):
    with pytest.raises(OptionError, match="fractions"):
        pp.split_cells(synthetic_mdata, fractions=(0.8, 0.3))
    with pytest.raises(MissingLabelError, match="'celltype'"):
        pp.split_cells(synthetic_mdata, stratify="celltype")


def test_split_real_rare_types(mop_small):
    pp.split_cells(mop_small, seed=0)
    tab = pd.crosstab(mop_small.obs["cell_type"], mop_small.obs["split"])
    assert (tab["train"] >= 1).all()  # single-cell types go to train


def test_stratified_subsample():
    labels = np.array(["a"] * 90 + ["b"] * 9 + ["c"])
    idx = pp.stratified_subsample(labels, 20, seed=0)
    assert len(idx) == 20 and len(set(idx)) == 20
    got = pd.Series(labels[idx]).value_counts()
    assert got["c"] == 1 and got["a"] >= 16
    np.testing.assert_array_equal(idx, pp.stratified_subsample(labels, 20, seed=0))
    assert len(pp.stratified_subsample(labels, 500)) == 100
    with pytest.raises(OptionError, match=r"^n must be an integer >= 0, got -5$"):
        pp.stratified_subsample(labels, -5)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_frac": 1.5}, r"min_frac must be in \[0, 1\], got 1.5"),
    ({"min_frac": -0.1}, r"min_frac must be in \[0, 1\], got -0.1"),
    ({"min_frac": float("nan")}, "min_frac must be finite"),
    ({"top_n": 0}, "top_n must be an integer >= 1, got 0"),
    ({"top_n": 2.5}, "top_n must be a whole number, got 2.5"),
])
def test_filter_peaks_option_ranges(synthetic_mdata, kwargs, match):
    with pytest.raises(OptionError, match=match):
        pp.filter_peaks(synthetic_mdata, copy=True, **kwargs)


def test_split_cells_fraction_values(synthetic_mdata):
    for bad in ((0.8, float("nan"), 0.2), (1.2, -0.2), ("a", "b")):
        with pytest.raises(OptionError, match="fractions must be 2 or 3 non-negative numbers summing to 1"):
            pp.split_cells(synthetic_mdata, fractions=bad, copy=True)


def test_shared_range_validators():
    """One set of range checks (scdiffx_grn._validate) used by the library and so by the CLI."""
    from scdiffx_grn._validate import check_count, check_fraction, check_positive, check_probability

    assert check_probability("alpha", 0.05) == 0.05 and check_count("n", 3.0) == 3
    assert check_fraction("f", 0) == 0.0 and check_fraction("f", 1) == 1.0 and check_positive("w", 0, allow_zero=True) == 0
    for fn, args, match in [
        (check_probability, ("alpha", 2), r"^alpha must be in \(0, 1\), got 2$"),
        (check_probability, ("alpha", 0), r"alpha must be in \(0, 1\)"),
        (check_probability, ("alpha", "x"), "alpha must be a number, got 'x'"),
        (check_fraction, ("min_frac", 1.01), r"min_frac must be in \[0, 1\]"),
        (check_fraction, ("f", 1.0), r"f must be in \[0, 1\)"),
        (check_count, ("n_cells", -5), "n_cells must be an integer >= 0, got -5"),
        (check_count, ("n_steps", 0, 1), "n_steps must be an integer >= 1, got 0"),
        (check_count, ("n", True), "n must be an integer, got True"),
        (check_count, ("n", float("inf")), "n must be finite"),
        (check_positive, ("window", -1), "window must be > 0, got -1"),
    ]:
        kw = {"high_open": True} if args == ("f", 1.0) else {}
        with pytest.raises(OptionError, match=match):
            fn(*args, **kw)


# --------------------------------------------------------------------------- checks
def test_check_counts_messages():
    pp.check_counts(sp.csr_matrix(np.array([[0, 1], [2, 0]], np.float32)))
    pp.check_counts(np.array([[1, 2]], np.int64))
    with pytest.raises(NotCountsError, match=r"1 negative values, e\.g\. -1.0 at row 1, column 0"):
        pp.check_counts(np.array([[0.0, 1.0], [-1.0, 2.0]]), "mine")
    with pytest.raises(NotCountsError, match=r"mine is not raw counts: 1 of .* e\.g\. 0.5 at cell 'c1', feature 'g2'"):
        pp.check_counts(sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0.5]])), "mine", obs_names=["c0", "c1"],
                        var_names=["g0", "g1", "g2"])
    with pytest.raises(InputDataError, match="1 non-finite values \\(1 NaN"):
        pp.check_counts(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputDataError, match="inf"):
        pp.check_finite(sp.csr_matrix(np.array([[np.inf, 1.0]])))
    assert pp.is_counts(np.array([[1.0, 2.0]])) and not pp.is_counts(np.array([[1.5]]))


def test_check_labels(synthetic_mdata):
    pp.check_labels(synthetic_mdata, "cell_type")
    with pytest.raises(MissingLabelError, match="'tissue'.*not found.*'cell_type'"):
        pp.check_labels(synthetic_mdata, ["cell_type", "tissue"])
    obs = synthetic_mdata.obs.copy()
    obs["lab"] = obs["cell_type"].astype(object)
    obs.iloc[:2, obs.columns.get_loc("lab")] = np.nan
    with pytest.raises(MissingLabelError, match="'lab': 2 cells, e.g. 'cell"):
        pp.check_labels(obs, ["lab"])
    pp.check_labels(obs, ["lab"], allow_nan=True)


def test_match_case():
    assert pp.match_case("GATA1", "mouse") == "Gata1"
    assert pp.match_case("Gata1", "human") == "GATA1"
    assert pp.match_case("c1orf112", "hs") == "C1orf112"
    out = pp.match_case(pd.Index(["SOX2", "Pou5f1"]), "mm10")
    assert isinstance(out, pd.Index) and list(out) == ["Sox2", "Pou5f1"]
    assert pp.match_case(["Sox2"], "Homo sapiens") == ["SOX2"]
    with pytest.raises(OptionError, match="unknown organism"):
        pp.match_case("x", "zebrafish")


# --------------------------------------------------------------------------- synthetic fixture
def test_synthetic_planted_structure(synthetic_mdata):
    m = synthetic_mdata
    pairs = m.uns["planted_pairs"]
    assert list(pairs.columns) == ["peak", "gene"] and len(pairs) == 10
    R = m.mod["rna"].layers["counts"].toarray()
    A = m.mod["atac"].layers["counts"].toarray() > 0
    gi = m.mod["rna"].var_names.get_indexer(pairs["gene"])
    pj = m.mod["atac"].var_names.get_indexer(pairs["peak"])
    for g, p in zip(gi, pj):
        assert np.corrcoef(R[:, g], A[:, p])[0, 1] > 0.7
        assert abs(np.corrcoef(R[:, g], A[:, (p + 1) % 120])[0, 1]) < 0.3 or (p + 1) in pj


# --------------------------------------------------------------------------- one contract
def _snapshot(m):
    return (m.shape, {k: m.mod[k].shape for k in m.mod}, sorted(m.obs.columns),
            {k: (sorted(m.mod[k].layers), sorted(m.mod[k].var.columns), sorted(m.mod[k].obsm), sorted(m.mod[k].uns))
             for k in m.mod}, sorted(m.uns), sorted(m.obsm))


@pytest.mark.parametrize("name,kwargs", [
    ("parse_peaks", {}), ("qc", {"min_genes": 5, "min_peaks": 5}), ("highly_variable_genes", {"n_top_genes": 20}),
    ("filter_peaks", {"min_frac": 0.2}), ("binarize", {"layer": "counts", "key_added": "bin"}),
    ("tfidf", {"layer": "counts", "key_added": "tfidf"}), ("lsi", {"n_comps": 5, "layer": "counts"}),
    ("split_cells", {})])
def test_copy_contract(synthetic_mdata, name, kwargs):
    """copy=True: a modified copy, the input untouched; copy=False: in place, None."""
    m = synthetic_mdata
    if name == "parse_peaks":
        m.mod["atac"].var = m.mod["atac"].var.drop(columns=["chrom", "start", "end"], errors="ignore")
    fn = getattr(pp, name)
    before = _snapshot(m)
    X0 = m.mod["atac"].X.copy()
    out = fn(m, copy=True, **kwargs)
    assert out is not None and out is not m and _snapshot(out) != before
    assert _snapshot(m) == before and (m.mod["atac"].X != X0).nnz == 0
    assert fn(m, **kwargs) is None
    assert _snapshot(m) == _snapshot(out)


def test_missing_layer_raises_no_fallback_to_x(synthetic_mdata):
    m = synthetic_mdata
    del m.mod["rna"].layers["counts"]
    for call in (lambda: pp.qc(m), lambda: pp.highly_variable_genes(m)):
        with pytest.raises(InputDataError, match="layer 'counts' not found.*layer=None"):
            call()
    pp.highly_variable_genes(m, layer=None, n_top_genes=10)  # X holds the counts here
    del m.mod["atac"].layers["counts"]
    with pytest.raises(InputDataError, match="layer 'counts' not found"):
        pp.filter_peaks(m)


def test_params_and_options(synthetic_mdata):
    m = synthetic_mdata
    pp.lsi(m, n_comps=5, layer="counts", seed=3)
    assert m.mod["atac"].uns["lsi"]["params"]["seed"] == 3 and m.mod["atac"].uns["lsi"]["n_comps"] == 5
    pp.highly_variable_genes(m, n_top_genes=10)
    assert m.mod["rna"].uns["hvg"]["params"]["n_top_genes"] == 10
    with pytest.raises(OptionError, match="flavor"):
        pp.highly_variable_genes(m, flavor="magic")
    # split_cells stratifies on a label found by the registry's lookup (a modality's obs)
    m.mod["rna"].obs["batchy"] = np.where(np.arange(m.n_obs) % 2, "x", "y")
    pp.split_cells(m, stratify="batchy", key_added="s2")
    tab = pd.crosstab(m.mod["rna"].obs["batchy"], m.obs["s2"])
    assert (tab["train"] == 120).all()
    from scdiffx_grn import _registry

    assert pp.is_counts is _registry.is_counts
