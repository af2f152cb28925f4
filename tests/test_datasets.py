"""Tests of scdiffx_grn.datasets: manifests, checksums, multiome readers and loaders."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from scdiffx_grn import datasets, settings
from scdiffx_grn._errors import (
    BarcodeMismatchError,
    ChecksumError,
    DataFileMissingError,
    InputDataError,
    MissingLabelError,
    NotCountsError,
    OptionError,
    UnknownFeatureError,
)
from scdiffx_grn.datasets import _manifest

REQUIRED_FIELDS = {"name", "description", "where", "files", "source", "licence", "species", "genome", "shape",
                   "labels", "values"}


# --------------------------------------------------------------------------- manifests
def test_every_manifest_is_complete():
    names = datasets.list_manifests()
    assert {"mouse_mop", "bmmc", "dorothea_mm", "trrust_human", "collectri_human", "mm10_tss"} <= set(names)
    assert set(datasets.SHARED_MULTIOME) <= set(names)
    for n in names:
        m = datasets.manifest(n)
        assert REQUIRED_FIELDS <= set(m), n
        assert m["name"] == n
        assert m["where"] in ("vendored", "shared")
        for f in m["files"]:
            assert len(f["sha256"]) == 64 and f["bytes"] > 0


def test_vendored_files_match_manifests_and_are_small():
    total = 0
    for n in datasets.list_manifests():
        m = datasets.manifest(n)
        if m["where"] == "vendored":
            for f in m["files"]:
                p = datasets.data_path(n, f["path"])
                assert p.is_file()
                total += p.stat().st_size
    assert total < 14e6


def test_shared_manifests_verify(shared_data_dir):
    # every shared file exists with the recorded sha256 (hashes are cached per process)
    for n in datasets.list_manifests():
        if datasets.manifest(n)["where"] == "shared":
            assert datasets.data_path(n).exists()


def test_data_path_single_and_multi():
    p = datasets.data_path("dorothea_mm")
    assert p.name == "dorothea_mm.tsv.gz"
    d = datasets.data_path("mouse_mop")
    assert d.is_dir() and (d / "mop_b1_rna.h5ad").is_file()
    with pytest.raises(UnknownFeatureError, match="no file"):
        datasets.data_path("mouse_mop", "nope.h5ad")
    with pytest.raises(DataFileMissingError, match="no data manifest named 'nope'"):
        datasets.manifest("nope")


@pytest.fixture
def corrupt_manifest(tmp_path, monkeypatch):
    """A temporary manifest dir with one vendored-style manifest pointing at a tmp copy."""
    src = datasets.data_path("trrust_mouse")
    man = datasets.manifest("trrust_mouse")
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    copy = tmp_path / "trrust_copy.tsv.gz"
    shutil.copy(src, copy)
    entry = {k: v for k, v in man.items() if not k.startswith("_")}
    entry.update(name="tmp_trrust", where="shared",
                 files=[{"path": copy.name, "sha256": man["files"][0]["sha256"], "bytes": man["files"][0]["bytes"]}])
    (mdir / "tmp_trrust.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("SCDX_MANIFEST_DIR", str(mdir))
    monkeypatch.setattr(settings, "data_dir", str(tmp_path))
    return copy


def test_checksum_ok_then_mismatch(corrupt_manifest):
    assert datasets.data_path("tmp_trrust") == corrupt_manifest.resolve()
    # corrupt one byte, same size -> sha256 mismatch names file and manifest
    raw = bytearray(corrupt_manifest.read_bytes())
    raw[100] ^= 0xFF
    corrupt_manifest.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=r"sha256 of data file .*trrust_copy.*manifest 'tmp_trrust"):
        datasets.data_path("tmp_trrust")
    # verify=False skips the check
    assert datasets.data_path("tmp_trrust", verify=False).is_file()


def test_checksum_truncated_and_missing(corrupt_manifest):
    corrupt_manifest.write_bytes(corrupt_manifest.read_bytes()[:50])
    with pytest.raises(ChecksumError, match="bytes but manifest"):
        datasets.data_path("tmp_trrust")
    corrupt_manifest.unlink()
    with pytest.raises(DataFileMissingError, match="trrust_copy.*missing"):
        datasets.data_path("tmp_trrust")


def test_sha256_cache(tmp_path, monkeypatch):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    h1 = datasets.sha256sum(f)
    calls = []
    real = _manifest.hashlib.sha256
    monkeypatch.setattr(_manifest.hashlib, "sha256", lambda: calls.append(1) or real())
    assert datasets.sha256sum(f) == h1 and not calls  # cached
    f.write_bytes(b"abcd")  # size changes -> rehash
    assert datasets.sha256sum(f) != h1 and calls


def test_shared_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "data_dir", str(tmp_path))
    assert datasets.shared_data_dir() == tmp_path.resolve()
    monkeypatch.setattr(settings, "data_dir", str(tmp_path / "absent"))
    with pytest.raises(DataFileMissingError, match="settings.data_dir"):
        datasets.shared_data_dir()
    assert datasets.shared_data_dir(required=False) is None
    monkeypatch.setattr(settings, "data_dir", None)
    monkeypatch.setenv("SCDX_DATA_DIR", str(tmp_path))
    assert datasets.shared_data_dir() == tmp_path.resolve()
    # nothing configured and nothing found
    monkeypatch.delenv("SCDX_DATA_DIR")
    monkeypatch.setattr(_manifest, "_REPO_ROOT", tmp_path / "a" / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataFileMissingError, match="shared data directory not found"):
        datasets.shared_data_dir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    sub = tmp_path / "x" / "y"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert datasets.shared_data_dir() == (tmp_path / "shared" / "data").resolve()


# --------------------------------------------------------------------------- readers
def _pair(n=20, n_genes=5, n_peaks=6, seed=0, counts=True):
    import anndata as ad

    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"cell_type": rng.choice(["a", "b"], n)}, index=[f"bc{i}" for i in range(n)])
    Xr = rng.poisson(2, (n, n_genes)).astype(np.float32)
    if not counts:
        Xr = np.log1p(Xr) + 0.1
    r = ad.AnnData(sp.csr_matrix(Xr), obs=obs.copy(), var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1, (n, n_peaks)).astype(np.float32)), obs=obs[[]].copy(),
                   var=pd.DataFrame(index=[f"chr1-{100 * i}-{100 * i + 50}" for i in range(n_peaks)]))
    return r, a


def test_read_two_h5ad_aligns_order(tmp_path):
    r, a = _pair()
    a = a[a.obs_names[::-1]].copy()
    r.write_h5ad(tmp_path / "r.h5ad")
    a.write_h5ad(tmp_path / "a.h5ad")
    for m in (datasets.read_multiome((tmp_path / "r.h5ad", tmp_path / "a.h5ad")),
              datasets.read_multiome(rna=tmp_path / "r.h5ad", atac=tmp_path / "a.h5ad", labels=["cell_type"])):
        assert list(m.mod) == ["rna", "atac"]
        assert (m.mod["atac"].obs_names == m.mod["rna"].obs_names).all()
        assert "counts" in m.mod["rna"].layers and "counts" in m.mod["atac"].layers
        assert "cell_type" in m.obs and "cell_type" in m.mod["atac"].obs
        assert m.uns["values"] == "counts"
        np.testing.assert_array_equal(m.mod["atac"].layers["counts"].toarray(), a[m.obs_names].X.toarray())


def test_read_h5mu_roundtrip(tmp_path):
    r, a = _pair()
    m = datasets.make_mudata(r, a)
    m.write_h5mu(tmp_path / "x.h5mu")
    m2 = datasets.read_multiome(tmp_path / "x.h5mu", labels=["cell_type"])
    assert m2.shape == m.shape and (m2.obs["cell_type"] == m.obs["cell_type"]).all()


def test_barcode_mismatch_and_inner_join(caplog):
    r, a = _pair()
    a.obs_names = [f"bc{i}" for i in range(3, 23)]
    with pytest.raises(BarcodeMismatchError) as e:
        datasets.make_mudata(r, a)
    msg = str(e.value)
    assert "3 only in RNA" in msg and "'bc0'" in msg and "3 only in ATAC" in msg and "'bc22'" in msg
    with caplog.at_level("WARNING", logger="scdiffx_grn"):
        m = datasets.make_mudata(r, a, join="inner")
    assert m.n_obs == 17 and "keeping the 17 barcodes" in caplog.text
    a.obs_names = [f"x{i}" for i in range(20)]
    with pytest.raises(BarcodeMismatchError, match="share no barcode"):
        datasets.make_mudata(r, a, join="inner")
    with pytest.raises(OptionError, match="join must be"):
        datasets.make_mudata(r, a, join="outer")


def test_not_counts_and_require_counts_false():
    r, a = _pair(counts=False)
    with pytest.raises(NotCountsError, match=r"rna X .*not integers, e\.g\. .* at cell 'bc"):
        datasets.make_mudata(r, a)
    m = datasets.make_mudata(r, a, require_counts=False)
    assert m.uns["values"] == "normalised"
    assert m.uns["values_by_modality"] == {"rna": "normalised", "atac": "counts"}
    assert "counts" not in m.mod["rna"].layers and "counts" in m.mod["atac"].layers


def test_after_require_counts_false_the_advice_is_not_require_counts_false():
    """Loaded with require_counts=False, tools that need counts said 'load with require_counts=False'."""
    from scdiffx_grn import NotCountsError, ScDiffusionX, pp

    r, a = _pair(counts=False)
    with pytest.raises(NotCountsError, match="or load with require_counts=False"):  # the reader: it helps
        datasets.make_mudata(r, a)
    m = datasets.make_mudata(r, a, require_counts=False)
    with pytest.raises(NotCountsError, match=r"the model needs raw RNA counts.*require_counts=False, cannot be used") as e:
        ScDiffusionX.setup_mudata(m, labels=[], rna_layer=None)
    assert "or load with require_counts=False" not in str(e.value)
    with pytest.raises(NotCountsError, match="every flavour normalises it itself") as e:
        pp.highly_variable_genes(m, layer=None)
    assert "require_counts" not in str(e.value)


def test_counts_taken_from_layer():
    r, a = _pair()
    r.layers["counts"] = r.X.copy()
    r.X = sp.csr_matrix(np.log1p(r.X.toarray()))
    m = datasets.make_mudata(r, a)
    np.testing.assert_array_equal(m.mod["rna"].layers["counts"].toarray(), r.layers["counts"].toarray())
    r.layers["counts"] = r.X.copy()  # a bad counts layer is an error
    with pytest.raises(NotCountsError, match="layers\\['counts'\\]"):
        datasets.make_mudata(r, a)


def test_labels_checks_and_table():
    r, a = _pair()
    with pytest.raises(MissingLabelError, match="'celltype'.*not found"):
        datasets.make_mudata(r, a, labels=["celltype"])
    tab = pd.DataFrame({"grp": [f"g{i % 3}" for i in range(20)]}, index=[f"bc{i}" for i in range(20)][::-1])
    m = datasets.make_mudata(r, a, labels=tab)
    assert m.obs.loc["bc0", "grp"] == "g1"  # aligned by barcode, not position
    with pytest.raises(BarcodeMismatchError, match="no row in the labels table"):
        datasets.make_mudata(r, a, labels=tab.iloc[:5])


def _write_10x_h5(path, X, barcodes, names, types):
    import h5py

    M = sp.csc_matrix(X.T.astype(np.int32))  # features x cells, stored CSC over cells
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array(barcodes, dtype="S")
        g["data"], g["indices"], g["indptr"] = M.data, M.indices, M.indptr
        g["shape"] = np.array(M.shape)
        ft = g.create_group("features")
        ft["id"] = np.array(names, dtype="S")
        ft["name"] = np.array(names, dtype="S")
        ft["feature_type"] = np.array(types, dtype="S")
        ft["genome"] = np.array(["GRCh38"] * len(names), dtype="S")
        ft["_all_tag_keys"] = np.array([b"genome"])


def test_read_10x_h5_and_mtx(tmp_path):
    import scipy.io

    rng = np.random.default_rng(1)
    n, g, p = 15, 4, 6
    X = rng.poisson(1.5, (n, g + p))
    bcs = [f"AAAC{i:02d}-1" for i in range(n)]
    names = [f"GENE{i}" for i in range(g)] + [f"chr2:{1000 * i}-{1000 * i + 300}" for i in range(p)]
    types = ["Gene Expression"] * g + ["Peaks"] * p
    _write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", X, bcs, names, types)
    m = datasets.read_multiome(tmp_path / "filtered_feature_bc_matrix.h5")
    assert m.mod["rna"].shape == (n, g) and m.mod["atac"].shape == (n, p)
    np.testing.assert_array_equal(m.mod["atac"].layers["counts"].toarray(), X[:, g:])

    d = tmp_path / "mtx"
    d.mkdir()
    with gzip.open(d / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(X.T))
    with gzip.open(d / "features.tsv.gz", "wt") as fh:
        fh.writelines(f"{nm}\t{nm}\t{t}\n" for nm, t in zip(names, types))
    with gzip.open(d / "barcodes.tsv.gz", "wt") as fh:
        fh.writelines(b + "\n" for b in bcs)
    m2 = datasets.read_multiome(d)
    np.testing.assert_array_equal(m2.mod["rna"].layers["counts"].toarray(), X[:, :g])

    _write_10x_h5(tmp_path / "gex_only.h5", X, bcs, names, ["Gene Expression"] * (g + p))
    with pytest.raises(InputDataError, match="expected feature types"):
        datasets.read_multiome(tmp_path / "gex_only.h5")


def test_read_multiome_bad_inputs(tmp_path):
    with pytest.raises(DataFileMissingError):
        datasets.read_multiome(tmp_path / "nope.h5mu")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(InputDataError, match="unknown input format"):
        datasets.read_multiome(tmp_path / "x.csv")
    with pytest.raises(InputDataError, match="rna= and atac="):
        datasets.read_multiome()


def test_files_that_are_not_hdf5_or_not_the_format_named(tmp_path):
    """A text file, an empty file or an .h5ad renamed .h5mu: a one-line InputDataError naming the file
    and the format expected (was: mudata's / h5py's traceback)."""
    import anndata as ad

    txt = tmp_path / "notafile.h5mu"
    txt.write_text("hello\n")
    with pytest.raises(InputDataError, match=r"'.*notafile\.h5mu' is not an HDF5 file: expected an \.h5mu file"):
        datasets.read_multiome(txt)
    (tmp_path / "empty.h5mu").write_bytes(b"")
    with pytest.raises(InputDataError, match="is an empty file: expected an .h5mu"):
        datasets.read_multiome(tmp_path / "empty.h5mu")
    ad.AnnData(np.ones((3, 2), np.float32)).write_h5ad(tmp_path / "one.h5ad")
    shutil.copy(tmp_path / "one.h5ad", tmp_path / "renamed.h5mu")
    with pytest.raises(InputDataError, match=r"renamed\.h5mu' is an HDF5 file but not an \.h5mu file"):
        datasets.read_multiome(tmp_path / "renamed.h5mu")
    (tmp_path / "bad.h5ad").write_text("x")
    with pytest.raises(InputDataError, match=r"bad\.h5ad' is not an HDF5 file: expected an \.h5ad file"):
        datasets.read_multiome(rna=tmp_path / "bad.h5ad", atac=tmp_path / "one.h5ad")
    (tmp_path / "bad.h5").write_text("x")
    with pytest.raises(InputDataError, match=r"bad\.h5' is not an HDF5 file: expected a 10x \.h5"):
        datasets.read_multiome(tmp_path / "bad.h5")
    for case in (txt, tmp_path / "renamed.h5mu"):
        with pytest.raises(InputDataError) as e:
            datasets.read_multiome(case)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- loaders
def test_mouse_mop_full():
    m = datasets.mouse_mop()
    assert m.shape == (10309, 1677 + 25734)
    assert m.obs["cell_type"].nunique() == 15
    atac = m.mod["atac"]
    assert {"chrom", "start", "end", "linked_gene_GxR"} <= set(atac.var)
    assert atac.var["start"].dtype.kind == "i"
    for mod in m.mod.values():
        X = mod.layers["counts"]
        assert X.nnz > 0 and np.all(X.data == np.round(X.data)) and X.data.min() > 0
    assert m.uns["genome"] == "mm10" and m.uns["values"] == "counts"


def test_mouse_mop_subsample_stratified_reproducible():
    a = datasets.mouse_mop(n_cells=300, seed=3)
    b = datasets.mouse_mop(n_cells=300, seed=3)
    c = datasets.mouse_mop(n_cells=300, seed=4)
    assert a.n_obs == 300 and (a.obs_names == b.obs_names).all() and not (a.obs_names == c.obs_names).all()
    assert a.obs["cell_type"].nunique() == 15  # rare types (19 Peri) kept
    full = datasets.mouse_mop().obs["cell_type"].value_counts(normalize=True)
    sub = a.obs["cell_type"].value_counts(normalize=True)
    assert abs(sub["L2/3"] - full["L2/3"]) < 0.02


def test_mouse_mop_links():
    links = datasets.mouse_mop_links()
    assert list(links.columns) == ["peak", "gene", "weight"] and len(links) > 20000
    assert (links["gene"] == "Rgs20").any()


def test_bmmc():
    m = datasets.bmmc()
    assert m.shape == (500, 1200) and m.uns["genome"] == "hg38"
    assert m.obs["cell_type"].nunique() == 21
    assert np.all(m.mod["rna"].layers["counts"].data % 1 == 0)


@pytest.mark.parametrize("name", ["mouse_mop_snareseq", "bmmc_neurips2021_starter", "pbmc10k_markers_1000cells",
                                  "pbmc_100cells"])
def test_shared_counts_sets_load(shared_data_dir, name):
    m = datasets.load_shared(name, n_cells=200 if name == "mouse_mop_snareseq" else None)
    assert list(m.mod) == ["rna", "atac"] and m.uns["values"] == "counts"
    assert m.mod["rna"].layers["counts"].nnz > 0 and m.mod["atac"].layers["counts"].nnz > 0
    chrom = m.mod["atac"].var["chrom"].astype(str)
    assert chrom.str.startswith("chr").mean() > 0.99  # real scaffolds (GL000205.2) occur
    assert m.uns["dataset"] == name
    if name == "pbmc_100cells":
        assert m.n_obs == 100 and "cell_type" in m.obs and not m.obs_names.str.endswith("_rna").any()


def test_load_shared_subsample_h5mu(shared_data_dir):
    m = datasets.load_shared("pbmc10k_markers_1000cells", n_cells=100, seed=0)
    assert m.n_obs == 100 and (m.mod["rna"].obs_names == m.mod["atac"].obs_names).all()


@pytest.mark.parametrize("name,rna_vals,atac_vals", [("a549_dex_scicar", "normalised", "normalised"),
                                                     ("h1_snareseq", "normalised", "counts")])
def test_shared_normalised_sets(shared_data_dir, name, rna_vals, atac_vals):
    with pytest.raises(NotCountsError, match=f"{name}: rna X .*not raw counts"):
        datasets.load_shared(name)
    m = datasets.load_shared(name, require_counts=False)
    assert m.uns["values"] == "normalised"
    assert m.uns["values_by_modality"] == {"rna": rna_vals, "atac": atac_vals}
    if name == "a549_dex_scicar":
        assert m.mod["atac"].var["chrom"].iloc[0] == "chr1"  # '1-9963-10665'
        assert {"FKBP5", "TSC22D3", "PER1"} <= set(m.mod["rna"].var_names)
        assert sorted(m.obs["dex_time_h"].astype(str).unique().tolist()) == ["0", "1", "3"]


def test_load_shared_unknown(shared_data_dir):
    with pytest.raises(DataFileMissingError, match="no shared paired data set named 'x'"):
        datasets.load_shared("x")
