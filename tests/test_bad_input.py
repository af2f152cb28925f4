"""Bad input: every case gives a typed ScdxError naming the offending items, or a documented,
tested handling (listed with counts in docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scdiffx_grn import (
    BarcodeMismatchError,
    CheckpointError,
    FeatureMismatchError,
    InputDataError,
    MissingLabelError,
    NotCountsError,
    OptionError,
    ScDiffusionX,
    ScdxError,
    UnknownFeatureError,
    pp,
    settings,
    tl,
)

from _helpers import TINY, make_tiny_mdata as make_mdata
from conftest import float32_terms, float32_tol

settings.progress = False
md.set_options(pull_on_update=False)


def _set(m, mod, fn):
    """Edit a dense copy of a modality's counts layer with ``fn`` and store it back."""
    X = m.mod[mod].layers["counts"].toarray()
    fn(X)
    m.mod[mod].layers["counts"] = sp.csr_matrix(X)
    m.mod[mod].X = m.mod[mod].layers["counts"].copy()
    return m


@pytest.fixture
def data(tiny_mdata):
    """``make_mdata()`` registered with labels ``cell_type``: the session's read-only ``tiny_mdata``."""
    return tiny_mdata


@pytest.fixture
def model(trained_tiny):
    """A tiny model trained on ``data``: the session's read-only ``trained_tiny``."""
    return trained_tiny


@pytest.fixture
def ckpt(tiny_checkpoint):
    """``model`` saved: the session's read-only ``tiny_checkpoint``."""
    return tiny_checkpoint


def _variant(ckpt, tmp_path, fn):
    d = tmp_path / "v"
    shutil.copytree(ckpt, d)
    fn(d)
    return d


# ----------------------------------------------------------------------------- values
def test_non_integer_rna_counts_named():
    m = _set(make_mdata(), "rna", lambda X: X.__setitem__((3, 5), 2.5))
    with pytest.raises(NotCountsError, match=r"2\.5.*cell3.*gene5"):
        ScDiffusionX.setup_mudata(m)


def test_negative_rna_counts_named():
    m = _set(make_mdata(), "rna", lambda X: X.__setitem__((4, 2), -1.0))
    with pytest.raises(NotCountsError, match=r"negative.*cell4.*gene2"):
        ScDiffusionX.setup_mudata(m)


@pytest.mark.parametrize("mod,val", [("rna", np.nan), ("rna", np.inf), ("atac", np.nan), ("atac", -np.inf)])
def test_non_finite_values_named(mod, val):
    m = _set(make_mdata(), mod, lambda X: X.__setitem__((7, 1), val))
    with pytest.raises(InputDataError, match=r"non-finite.*cell7"):
        ScDiffusionX.setup_mudata(m)


def test_negative_atac_named():
    m = _set(make_mdata(), "atac", lambda X: X.__setitem__((2, 3), -2.0))
    with pytest.raises(InputDataError, match=r"negative.*cell2.*chr1-3000-3400"):
        ScDiffusionX.setup_mudata(m)


@pytest.mark.parametrize("direction,mod,val,err", [
    ("atac->rna", "atac", np.nan, InputDataError),
    ("atac->rna", "atac", -1.0, InputDataError),
    ("rna->atac", "rna", np.inf, InputDataError),
    ("rna->atac", "rna", 0.5, NotCountsError),
])
def test_bad_values_at_translate_and_latent(model, direction, mod, val, err):
    """Formerly silent: NaN / negative / normalised values gave NaN or wrong latents."""
    m = _set(make_mdata(), mod, lambda X: X.__setitem__((5, 0), val))
    with pytest.raises(err, match="cell5"):
        model.translate(m, direction=direction, n_steps=2)
    with pytest.raises(err, match="cell5"):
        model.get_latent(m, mod)


def test_all_zero_rna_cell_in_training_named(data):
    m = _set(make_mdata(), "rna", lambda X: X.__setitem__(9, 0.0))
    ScDiffusionX.setup_mudata(m)
    with pytest.raises(InputDataError, match=r"no RNA counts.*cell9"):
        ScDiffusionX(m, **TINY).train(ae_epochs=1, diffusion_steps=1, batch_size=16, device="cpu")


def test_all_zero_atac_everywhere():
    m = _set(make_mdata(), "atac", lambda X: X.__setitem__(slice(None), 0.0))
    ScDiffusionX.setup_mudata(m)
    with pytest.raises(InputDataError, match="no accessible peaks"):
        ScDiffusionX(m, **TINY).train(ae_epochs=1, diffusion_steps=1, batch_size=16, device="cpu")


def test_all_zero_features_train_fine():
    """Documented handling: never-expressed genes / never-open peaks are kept and train finitely."""
    m = make_mdata()
    _set(m, "rna", lambda X: X.__setitem__((slice(None), 3), 0.0))
    _set(m, "atac", lambda X: X.__setitem__((slice(None), 4), 0.0))
    ScDiffusionX.setup_mudata(m)
    mdl = ScDiffusionX(m, **TINY)
    h = mdl.train(ae_epochs=1, diffusion_steps=2, batch_size=16, device="cpu")
    assert np.isfinite(h["ae_loss"]).all() and np.isfinite(h["diffusion_loss"]).all()


def test_all_zero_cell_at_inference_is_finite(model):
    """Documented handling: an all-zero cell is encoded (library clamped to 1), not an error."""
    m = _set(make_mdata(), "rna", lambda X: X.__setitem__(0, 0.0))
    _set(m, "atac", lambda X: X.__setitem__(0, 0.0))
    assert np.isfinite(model.get_latent(m, "rna")).all()
    assert np.isfinite(model.translate(m, n_steps=2).X).all()


# ----------------------------------------------------------------------------- barcodes / names
def _rebuild(m, rna_names=None, atac_names=None, atac_rows=None):
    r, a = m.mod["rna"].copy(), m.mod["atac"].copy()
    if atac_rows is not None:
        a = a[atac_rows].copy()
    if rna_names is not None:
        r.obs_names = rna_names
    if atac_names is not None:
        a.obs_names = atac_names
    out = md.MuData({"rna": r, "atac": a})
    out.obs["cell_type"] = r.obs["cell_type"].to_numpy() if out.n_obs == r.n_obs else None
    return out


def test_mismatched_barcodes_named():
    m = make_mdata()
    names = list(m.mod["atac"].obs_names)
    names[3] = "stranger"
    with pytest.raises(BarcodeMismatchError, match="stranger"):
        ScDiffusionX.setup_mudata(_rebuild(m, atac_names=names), labels="rna:cell_type")


def test_reordered_barcodes():
    m = make_mdata()
    with pytest.raises(BarcodeMismatchError, match="same order"):
        ScDiffusionX.setup_mudata(_rebuild(m, atac_rows=np.r_[1, 0, 2:m.n_obs]), labels=None)


def test_different_cell_counts():
    m = make_mdata()
    with pytest.raises(BarcodeMismatchError, match=r"60 cells.*59 cells"):
        ScDiffusionX.setup_mudata(_rebuild(m, atac_rows=np.arange(59)), labels=None)


def test_duplicated_barcodes_named():
    """Formerly accepted when both modalities held the same duplicates."""
    m = make_mdata()
    names = list(m.mod["rna"].obs_names)
    names[5] = names[4]
    with pytest.raises(BarcodeMismatchError, match=r"duplicated cell barcodes.*cell4"):
        ScDiffusionX.setup_mudata(_rebuild(m, rna_names=names, atac_names=names), labels=None)


@pytest.mark.parametrize("mod", ["rna", "atac"])
def test_duplicated_var_names_named(mod):
    m = make_mdata()
    names = list(m.mod[mod].var_names)
    names[-1] = names[0]
    m.mod[mod].var_names = names
    with pytest.raises(InputDataError, match=f"{mod} has duplicated var names: '{names[0]}'"):
        ScDiffusionX.setup_mudata(m)


def test_missing_counts_layer_named():
    m = make_mdata()
    del m.mod["rna"].layers["counts"]
    with pytest.raises(InputDataError, match="layer 'counts' not found"):
        ScDiffusionX.setup_mudata(m)


# ----------------------------------------------------------------------------- peaks
@pytest.mark.parametrize("bad", ["foo", "chr2:5", "chr1-10", "chr1-a-b", "chr1 1 2", ""])
def test_unparseable_peaks_named(bad):
    a = ad.AnnData(np.zeros((2, 3), np.float32), var=pd.DataFrame(index=["chr1-1-2", bad or " ", "chr2:5-9"]))
    with pytest.raises(InputDataError, match=r"1 of 3 peak names cannot be parsed"):
        pp.parse_peaks(a)


def test_reversed_peak_named():
    a = ad.AnnData(np.zeros((1, 2), np.float32), var=pd.DataFrame(index=["chr1-1-2", "chr1-500-100"]))
    with pytest.raises(InputDataError, match="start > end.*chr1-500-100"):
        pp.parse_peaks(a)


try:
    from hypothesis import HealthCheck, given, settings as hsettings, strategies as hst
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    @hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(hst.lists(hst.text(min_size=1, max_size=25), min_size=1, max_size=6, unique=True))
    def test_parse_peaks_never_crashes(names):
        """Any peak names: parsed into consistent coordinates, or an InputDataError."""
        a = ad.AnnData(np.zeros((1, len(names)), np.float32), var=pd.DataFrame(index=names))
        try:
            pp.parse_peaks(a)
        except InputDataError:
            return
        assert (a.var["start"] <= a.var["end"]).all()
        assert a.var["chrom"].notna().all()


# ----------------------------------------------------------------------------- labels
def test_label_column_missing():
    m = make_mdata()
    with pytest.raises(MissingLabelError, match="'tissue' not found"):
        ScDiffusionX.setup_mudata(m, labels=["tissue"])


def test_nan_labels_named():
    m = make_mdata()
    ct = m.obs["cell_type"].astype(object).to_numpy()
    ct[6] = np.nan
    m.obs["cell_type"] = ct
    with pytest.raises(MissingLabelError, match=r"no label for 1 cells.*cell6"):  # the registry's message
        ScDiffusionX.setup_mudata(m)


def test_generate_unseen_label_named(model):
    with pytest.raises(MissingLabelError, match=r"unseen in training: 'Z'.*known: 'A', 'B'"):
        model.generate({"cell_type": ["A", "Z"]}, n_steps=2)
    with pytest.raises(MissingLabelError, match="unseen"):
        model.generate(pd.DataFrame({"cell_type": ["Q"]}), n_cells=3, n_steps=2)


def test_generate_unknown_label_key(model):
    with pytest.raises(MissingLabelError, match=r"\['tissue'\]"):
        model.generate({"tissue": ["x"]}, n_steps=2)
    with pytest.raises(MissingLabelError, match="tissue"):
        model.generate({"cell_type": ["A"]}, guidance_scale={"tissue": 2.0}, guidance_mode="additive", n_steps=2)


def test_generate_missing_label_value_is_unconditioned(model):
    """Documented handling: a None / NaN label is the null (unconditioned) label."""
    g = model.generate({"cell_type": [None, "A"]}, n_steps=2, seed=0)
    assert g.n_obs == 2
    c = model.condition_indices({"cell_type": [np.nan]})
    assert int(c[0, 0]) == len(model.config.label_categories["cell_type"])


def test_translate_bad_labels(model, data):
    with pytest.raises(MissingLabelError, match="'Z'"):
        model.translate(data, labels={"cell_type": ["Z"] * data.n_obs}, n_steps=2)
    with pytest.raises(InputDataError, match="5 values for 60 cells"):
        model.translate(data, labels={"cell_type": ["A"] * 5}, n_steps=2)


# ----------------------------------------------------------------------------- empty subsets
@pytest.mark.parametrize("labels,n_cells", [(0, None), ({"cell_type": []}, None), ({"cell_type": ["A"]}, 0),
                                            (-3, None)])
def test_generate_zero_cells(model, labels, n_cells):
    with pytest.raises(InputDataError, match="zero cells|>= 0"):
        model.generate(labels, n_cells=n_cells, n_steps=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"ae_epochs": -1}, "ae_epochs must be an integer >= 0, got -1"),  # was: accepted, trained nothing
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),  # was: range() traceback
    ({"lr": -1.0}, "lr must be > 0, got -1.0"),  # was: torch's ValueError
    ({"ae_lr": float("nan")}, "ae_lr must be finite"),
    ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\), got 1.5"),
    ({"diffusion_steps": 2.5}, "diffusion_steps must be a whole number"),
])
def test_train_option_ranges(data, kwargs, match):
    mdl = ScDiffusionX(data, seed=0, **TINY)
    with pytest.raises(OptionError, match=match):
        mdl.train(**{"ae_epochs": 0, "diffusion_steps": 0, "device": "cpu", **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    ({"guidance_scale": -3.0}, "guidance_scale must be >= 0, got -3.0"),  # was: accepted
    ({"guidance_scale": float("nan")}, "guidance_scale must be finite"),  # was: numpy 'lam value too large'
    ({"guidance_scale": {"cell_type": -1.0}, "guidance_mode": "additive"}, "guidance_scale must be >= 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
])
def test_generate_option_ranges(model, kwargs, match):
    with pytest.raises(OptionError, match=match):
        model.generate({"cell_type": ["A"] * 3}, n_steps=2, **kwargs)


def test_zero_cells_translate_and_latent(model, data):
    empty = md.MuData({"rna": data.mod["rna"][:0].copy(), "atac": data.mod["atac"][:0].copy()})
    with pytest.raises(InputDataError, match="no cells"):
        model.translate(empty, n_steps=2)
    z = model.get_latent(empty)  # documented: an empty (0, latent_dim) array
    assert z.shape == (0, model.config.latent_dim)


def test_train_split_without_cells(data):
    m = data.copy()
    m.obs["split"] = "test"
    with pytest.raises(InputDataError, match="only 0 training cells"):
        ScDiffusionX(m, **TINY).train(ae_epochs=1, diffusion_steps=1, split_key="split", device="cpu")
    with pytest.raises(MissingLabelError, match="'nosplit'"):
        ScDiffusionX(m, **TINY).train(ae_epochs=1, diffusion_steps=1, split_key="nosplit", device="cpu")


def test_perturb_cell_type_without_cells(model, data):
    m = data.copy()
    m.obs["cell_type"] = pd.Categorical(m.obs["cell_type"].astype(str), categories=["A", "B", "C"])
    with pytest.raises(MissingLabelError, match=r"\['C'\]"):
        tl.perturb(model, m, {"targets": ["gene0"], "kind": "knockout", "cells": "C"}, copy=True)


def test_perturb_labels_and_options(model, data):
    """Labels come from the registry's one lookup (missing / unlabelled cells raise, naming them);
    bad option values raise OptionError."""
    from scdiffx_grn import OptionError

    ko = {"targets": ["gene0"], "kind": "knockout"}
    with pytest.raises(MissingLabelError, match="'tissue' not found"):
        tl.perturb(model, data, ko, groupby="tissue", copy=True)
    m = data.copy()
    ct = m.obs["cell_type"].astype(object).to_numpy()
    ct[3] = np.nan
    m.obs["cell_type"] = ct
    with pytest.raises(MissingLabelError, match=r"no label for 1 cells.*cell3"):
        tl.perturb(model, m, ko, copy=True)
    for kw, msg in (({"readout": "nope"}, "readout"), ({"test": "anova"}, "test"), ({"n_noise": 0}, "n_noise"),
                    ({"on_unknown": "skip"}, "on_unknown")):
        with pytest.raises(OptionError, match=msg):
            tl.perturb(model, data, ko, copy=True, **kw)
    with pytest.raises(OptionError, match="kind must be one of"):
        tl.perturb(model, data, {"targets": ["gene0"], "kind": "delete"}, copy=True)


def test_extract_grn_cell_type_without_cells(model, data):
    m = data.copy()
    m.obs["cell_type"] = pd.Categorical(m.obs["cell_type"].astype(str), categories=["A", "B", "C"])
    cands = pd.DataFrame({"peak": [m.mod["atac"].var_names[0]], "gene": [m.mod["rna"].var_names[0]]})
    with pytest.raises(MissingLabelError, match="'C'"):
        tl.extract_grn(model, m, cell_types=["C"], candidates=cands, copy=True)


# ----------------------------------------------------------------------------- features
def test_unknown_genes_named(model, data):
    m = data.copy()
    m.mod["rna"].var_names = ["gene0", "alien"] + list(m.mod["rna"].var_names[2:])
    with pytest.raises(FeatureMismatchError, match=r"'gene1'.*'alien'"):
        model.translate(m, direction="rna->atac", n_steps=2)
    with pytest.raises(FeatureMismatchError, match="alien"):
        model.get_latent(m, "rna")


def test_unknown_peaks_named(model, data):
    m = data.copy()
    m.mod["atac"].var_names = ["chrZ-1-2"] + list(m.mod["atac"].var_names[1:])
    with pytest.raises(FeatureMismatchError, match="chrZ-1-2"):
        model.translate(m, n_steps=2)


def test_load_with_other_feature_set(ckpt, data):
    m = data.copy()
    m.mod["rna"].var_names = [f"other{i}" for i in range(m.mod["rna"].n_vars)]
    with pytest.raises(FeatureMismatchError, match=r"'gene0'.*'other0'"):
        ScDiffusionX.load(ckpt, m, device="cpu")


def test_reordered_features_are_mapped(model, data):
    """Documented handling: the model's features in another order are reordered, not an error."""
    m = md.MuData({"rna": data.mod["rna"][:, ::-1].copy(), "atac": data.mod["atac"][:, ::-1].copy()})
    z = model.get_latent(data, "rna")
    # the same values in another memory layout: at most the order of the encoder's float32 sums differs
    np.testing.assert_allclose(model.get_latent(m, "rna"), z, rtol=0,
                               atol=float32_tol(z, float32_terms(model.module.rna_ae.encoder)))


def test_perturbation_targets_not_in_model(model, data):
    with pytest.raises(UnknownFeatureError, match="'nogene'"):
        tl.perturb(model, data, {"targets": ["gene0", "nogene"], "kind": "knockout"}, copy=True)
    with pytest.raises(UnknownFeatureError, match="chr9-1-2"):
        tl.perturb(model, data, {"targets": ["chr9-1-2"], "kind": "close", "modality": "atac"}, copy=True)


# ----------------------------------------------------------------------------- checkpoints
def _rw_json(key_fn):
    def fn(d):
        j = json.loads((d / "config.json").read_text())
        key_fn(j)
        (d / "config.json").write_text(json.dumps(j))
    return fn


CORRUPTIONS = {
    "newer_format": (_rw_json(lambda j: j.__setitem__("format_version", 99)), "upgrade scdiffx_grn"),
    "truncated_model_pt": (lambda d: open(d / "model.pt", "r+b").truncate(100), "model.pt could not be read"),
    "empty_model_pt": (lambda d: open(d / "model.pt", "w").close(), "model.pt could not be read"),
    "garbage_model_pt": (lambda d: (d / "model.pt").write_bytes(b"not a torch file" * 20), "model.pt could not be read"),
    "truncated_config": (lambda d: open(d / "config.json", "r+").truncate(40), "not valid JSON"),
    "config_not_object": (lambda d: (d / "config.json").write_text("[1, 2]"), "holds a JSON list"),
    "config_bad_value": (_rw_json(lambda j: j["config"].__setitem__("latent_dim", "abc")), "bad model config"),
    "config_unknown_key": (_rw_json(lambda j: j["config"].__setitem__("foo", 1)), r"unknown model config keys: \['foo'\]"),
    "config_no_config": (_rw_json(lambda j: j.pop("config")), "bad model config"),
    "missing_model_pt": (lambda d: os.remove(d / "model.pt"), r"missing \['model.pt'\]"),
    "missing_rna_names": (lambda d: os.remove(d / "rna_var_names.txt"), r"missing \['rna_var_names.txt'\]"),
    "missing_atac_names": (lambda d: os.remove(d / "atac_var_names.txt"), "atac_var_names.txt"),
    "short_var_names": (lambda d: (d / "rna_var_names.txt").write_text("a\nb\n"), "feature counts"),
    "binary_var_names": (lambda d: (d / "rna_var_names.txt").write_bytes(b"\xff\xfe\x00" * 9), "not UTF-8"),
    "wrong_shapes": (lambda d: torch.save({k: torch.zeros(3, 3) if v.ndim == 2 else v for k, v in
                                           torch.load(d / "model.pt").items()}, d / "model.pt"),
                     "does not match its config"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_checkpoints(ckpt, tmp_path, case):
    fn, msg = CORRUPTIONS[case]
    d = _variant(ckpt, tmp_path, fn)
    with pytest.raises(CheckpointError, match=msg):
        ScDiffusionX.load(d, device="cpu")


def test_checkpoint_dir_missing_and_no_overwrite(model, ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="no model directory"):
        ScDiffusionX.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        model.save(ckpt)


def test_corrupt_training_checkpoint_on_resume(data, tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="last.ckpt could not be read"):
        ScDiffusionX(data, **TINY).train(ae_epochs=1, diffusion_steps=1, batch_size=16, device="cpu",
                                         checkpoint_dir=tmp_path, resume=True)


def test_every_error_is_a_scdx_error():
    for e in (BarcodeMismatchError, CheckpointError, FeatureMismatchError, InputDataError, MissingLabelError,
              NotCountsError, UnknownFeatureError):
        assert issubclass(e, ScdxError)
