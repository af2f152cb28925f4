"""Post-hoc calibration of the RNA->ATAC posterior-mean translation (``model.calibrate_translation``).

Planted truths: observed peaks drawn from the model's own logits moved by a known offset, or with
their deviations from each peak's mean shrunk by a known factor, must give that offset / the
inverse factor back within four standard errors (from the fit's Fisher information); the offset
must leave every AUROC unchanged; the calibration must survive save / load and never use test cells.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scdiffx_grn import CheckpointError, InputDataError, OptionError, ScDiffusionX, ScdxError, settings
from scdiffx_grn.eval._metrics import rowwise_auroc
from scdiffx_grn.model._calibration import apply_logit_calibration, fit_logit_calibration

settings.progress = False


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _se(w, x) -> float:
    """Standard error of one logistic coefficient of regressor ``x`` (weights ``w = mu (1 - mu)``)."""
    return float(1.0 / np.sqrt(np.sum(w * x * x)))


# ----------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("factor", [0.25, 0.5, 2.0])
def test_amplitude_of_shrunk_logits_is_the_inverse_factor(factor):
    rng = np.random.default_rng(0)
    n, p = 3000, 40
    centre = rng.normal(-2.0, 1.0, p)
    dev = rng.normal(0.0, 1.0, (n, p))
    truth = centre + dev
    Y = rng.random((n, p)) < _sig(truth)
    pred = centre + factor * dev  # the predictions' deviations are the truth's times ``factor``
    rec = fit_logit_calibration(pred, Y, "amplitude")
    assert rec["offset"] == 0.0 and rec["prior_weight"] == 1.0
    a = 1.0 / factor
    D = pred - pred.mean(0)
    mu = _sig(apply_logit_calibration(pred, rec))
    assert abs(rec["amplitude"] - a) < 4 * _se(mu * (1 - mu), D)
    assert rec["loglik_after"] >= rec["loglik_before"]


def test_offset_of_shifted_logits_and_affine_recovers_all_three():
    rng = np.random.default_rng(1)
    n, p = 3000, 40
    centre = rng.normal(-2.0, 1.0, p)
    dev = rng.normal(0.0, 1.0, (n, p))
    pred = centre + dev
    Y = rng.random((n, p)) < _sig(pred + 1.5)
    rec = fit_logit_calibration(pred, Y, "offset")
    mu = _sig(pred + rec["offset"])
    assert abs(rec["offset"] - 1.5) < 4 * _se(mu * (1 - mu), np.ones_like(pred))
    assert rec["prior_weight"] == rec["amplitude"] == 1.0
    # affine: truth = 0.5 + 0.8 c + 1.7 (pred - c)
    c = pred.mean(0)
    Y = rng.random((n, p)) < _sig(0.5 + 0.8 * c + 1.7 * (pred - c))
    rec = fit_logit_calibration(pred, Y, "affine")
    mu = _sig(apply_logit_calibration(pred, rec))
    w = mu * (1 - mu)
    assert abs(rec["amplitude"] - 1.7) < 4 * _se(w, pred - c)
    assert abs(rec["prior_weight"] - 0.8) < 8 * _se(w, np.broadcast_to(c, pred.shape))  # offset and c correlate


def test_fit_refuses_bad_arrays():
    with pytest.raises(OptionError, match="method"):
        fit_logit_calibration(np.zeros((5, 3)), np.ones((5, 3)), "spline")
    with pytest.raises(InputDataError, match="one shape"):
        fit_logit_calibration(np.zeros((5, 3)), np.ones((5, 4)))
    with pytest.raises(InputDataError, match="all open or all closed"):
        fit_logit_calibration(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(InputDataError, match="non-finite"):
        fit_logit_calibration(np.full((5, 3), np.inf), np.eye(5, 3))


# ----------------------------------------------------------------------------- the model
@pytest.fixture
def model(tiny_checkpoint):
    """A private copy of the tiny model (the shared one is read-only)."""
    return ScDiffusionX.load(tiny_checkpoint)


@pytest.fixture
def data(tiny_mdata):
    """The tiny cells with a split: 10 test cells (first 5 of each type), the rest val."""
    m = tiny_mdata.copy()
    split = np.array(["val"] * m.n_obs, dtype=object)
    split[[0, 1, 2, 3, 4, 30, 31, 32, 33, 34]] = "test"
    m.obs["split"] = pd.Categorical(split)
    return m


def _logits(model, m, seed=0):
    res = model.translate(m, "rna->atac", readout="mean", seed=seed)
    with torch.no_grad():
        return model.module.decode_atac_logits(torch.as_tensor(res.obsm["latent"])).double().numpy()


def _replicated(model, data, k: int = 40):
    """``k`` copies of the val cells under new names (their translations differ only by the noise)."""
    import mudata as md

    val = data[(data.obs["split"] == "val").to_numpy()].copy()
    parts = []
    for r in range(k):
        v = val.copy()
        names = [f"{x}_r{r}" for x in val.obs_names]
        for mod in v.mod.values():
            mod.obs_names = names
        v.obs_names = names
        parts.append(v)
    mods = {m: __import__("anndata").concat([p.mod[m] for p in parts]) for m in ("rna", "atac")}
    out = md.MuData(mods)
    out.obs["cell_type"] = mods["rna"].obs["cell_type"].to_numpy()
    out.obs["split"] = "val"
    return out


def _plant_atac(m, probs, seed=0):
    Y = (np.random.default_rng(seed).random(probs.shape) < probs).astype(np.float32)
    m.mod["atac"].layers["counts"] = sp.csr_matrix(Y)
    m.mod["atac"].X = sp.csr_matrix(Y)
    return Y


def test_model_offset_recovers_a_planted_shift(model, data):
    big = _replicated(model, data)
    L = _logits(model, big)
    _plant_atac(big, _sig(L + 1.2))
    rec = model.calibrate_translation(big, "rna->atac", cells="val", method="offset")
    mu = _sig(L + rec["offset"])
    assert abs(rec["offset"] - 1.2) < 4 * _se(mu * (1 - mu), np.ones_like(L))
    assert rec["n_cells"] == big.n_obs and rec["readout"] == "mean"
    assert model.translation_calibration["rna->atac"] is rec


def test_model_amplitude_recovers_a_planted_shrink_factor(model, data):
    big = _replicated(model, data)
    L = _logits(model, big)
    c = L.mean(0)
    # the tiny model's logits barely vary between cells (rms ~ 0.002), like the shipped model's
    # flat RNA->ATAC posterior mean: the truth is its deviations scaled up to rms 0.5
    factor = float(np.sqrt(np.mean((L - c) ** 2))) / 0.5
    _plant_atac(big, _sig(c + (L - c) / factor))
    rec = model.calibrate_translation(big, "rna->atac", method="amplitude")
    mu = _sig(apply_logit_calibration(L, rec))
    se = _se(mu * (1 - mu), L - c)
    assert se < 0.05 / factor  # the planted amplitude is identifiable: the check below can fail
    assert abs(rec["amplitude"] - 1 / factor) < 4 * se


def test_calibrated_translation_is_off_by_default_and_offset_keeps_every_auroc(model, data):
    test = data[(data.obs["split"] == "test").to_numpy()].copy()
    before = model.translate(test, "rna->atac").X
    rec = model.calibrate_translation(data, "rna->atac")
    assert np.array_equal(model.translate(test, "rna->atac").X, before)  # off unless asked for
    cal = model.translate(test, "rna->atac", calibrated=True)
    assert cal.uns["translation"]["calibrated"] is True
    L = _logits(model, test)
    ref = _sig(L + rec["offset"])
    assert np.abs(cal.X - ref).max() < 8 * np.finfo(np.float32).eps
    Y = test.mod["atac"].layers["counts"].toarray() > 0
    np.testing.assert_allclose(rowwise_auroc(Y, cal.X), rowwise_auroc(Y, before), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rowwise_auroc(Y.T, cal.X.T), rowwise_auroc(Y.T, before.T), rtol=0, atol=1e-12)


def test_calibration_survives_save_and_load(model, data, tmp_path):
    rec = model.calibrate_translation(data, "rna->atac", method="affine")
    test = data[(data.obs["split"] == "test").to_numpy()].copy()
    ref = model.translate(test, "rna->atac", calibrated=True).X
    model.save(tmp_path / "m")
    back = ScDiffusionX.load(tmp_path / "m")
    got = back.translation_calibration["rna->atac"]
    assert {k: got[k] for k in rec} == rec
    np.testing.assert_array_equal(back.translate(test, "rna->atac", calibrated=True).X, ref)


def test_checkpoint_without_calibration_loads_and_a_bad_one_is_refused(tiny_checkpoint, tmp_path):
    m = ScDiffusionX.load(tiny_checkpoint)
    assert m.translation_calibration == {}
    with pytest.raises(ScdxError, match="calibrate_translation"):
        m.translate(None, "rna->atac", calibrated=True)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["translation_calibration"] = {"rna->atac": {"method": "offset", "offset": 1.0, "prior_weight": 1.0,
                                                      "amplitude": 1.0, "centre": [0.0, 1.0]}}
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="centre must hold"):
        ScDiffusionX.load(bad)


def test_calibration_refuses_test_cells_and_bad_options(model, data):
    test_pos = np.flatnonzero((data.obs["split"] == "test").to_numpy())
    with pytest.raises(OptionError, match="test cells"):
        model.calibrate_translation(data, cells="test")
    mask = np.ones(data.n_obs, bool)
    with pytest.raises(InputDataError, match="10 of the calibration cells are test cells"):
        model.calibrate_translation(data, cells=mask)
    with pytest.raises(InputDataError, match="test cells"):
        model.calibrate_translation(data, cells=test_pos[:3].tolist() + list(range(10, 20)))
    with pytest.raises(OptionError, match="only rna->atac"):
        model.calibrate_translation(data, direction="atac->rna")
    with pytest.raises(OptionError, match="direction"):
        model.calibrate_translation(data, direction="rna->protein")
    with pytest.raises(OptionError, match="method"):
        model.calibrate_translation(data, method="isotonic")
    with pytest.raises(InputDataError, match="at least 10"):
        model.calibrate_translation(data, cells=[10, 11, 12])
    nosplit = data.copy()
    del nosplit.obs["split"]
    with pytest.raises(InputDataError, match="split column"):
        model.calibrate_translation(nosplit)
    noval = data.copy()
    noval.obs["split"] = pd.Categorical(np.where(noval.obs["split"] == "test", "test", "train"))
    with pytest.raises(InputDataError, match="no cell"):
        model.calibrate_translation(noval)
    assert model.translation_calibration == {}
    model.calibrate_translation(data)
    with pytest.raises(OptionError, match="readout"):
        model.translate(data, "rna->atac", readout="samples", n_samples=2, n_steps=2, calibrated=True)
    with pytest.raises(ScdxError, match="no translation calibration for 'atac->rna'"):
        model.translate(data, "atac->rna", calibrated=True)


# ----------------------------------------------------------------------------- the readout head
def test_readout_head_recovers_what_the_decoder_misses():
    """Planted: the truth uses all latent directions, the decoder's logits half of them; the head fitted
    on 2,000 cells and stopped on 1,000 must close most of the held-out log-likelihood gap and raise both
    AUROCs on 1,000 fresh cells (a head that learned nothing leaves the gap and the AUROCs as they are)."""
    from scdiffx_grn.model._calibration import bernoulli_loglik, calibrated_logits, fit_readout_head

    rng = np.random.default_rng(3)
    n, d, p = 4000, 8, 60
    Z = rng.normal(size=(n, d)).astype(np.float32)
    Wt = rng.normal(0.0, 0.7, (d, p))
    centre = rng.normal(-2.0, 0.8, p)
    truth = centre + Z @ Wt
    base = centre + Z[:, :4] @ Wt[:4]  # the decoder misses half of the latent directions
    Y = rng.random((n, p)) < _sig(truth)
    rec = fit_readout_head(Z, base, Y, np.arange(2000), np.arange(2000, 3000), seed=0)
    new = slice(3000, n)
    fitted = calibrated_logits(base[new], None, rec, Z[new])
    ll = {k: bernoulli_loglik(v, Y[new]) for k, v in (("base", base[new]), ("head", fitted), ("truth", truth[new]))}
    assert ll["truth"] - ll["head"] < 0.2 * (ll["truth"] - ll["base"])
    assert rec["loglik_after"] > rec["loglik_before"] and 1 <= rec["best_epoch"] <= rec["epochs"]
    for t in (False, True):  # per cell, then per peak
        obs, head, dec = (m.T if t else m for m in (Y[new], fitted, base[new]))
        assert np.mean(rowwise_auroc(obs, head)) > np.mean(rowwise_auroc(obs, dec)) + 0.02
    # seeded: the same call gives the same head
    again = fit_readout_head(Z, base, Y, np.arange(2000), np.arange(2000, 3000), seed=0)
    np.testing.assert_array_equal(again["weight"], rec["weight"])
    with pytest.raises(InputDataError, match="overlap"):
        fit_readout_head(Z, base, Y, np.arange(2000), np.arange(1990, 3000))
    with pytest.raises(InputDataError, match="one row per cell"):
        fit_readout_head(Z[:10], base, Y, np.arange(5), np.arange(5, 10))
    with pytest.raises(OptionError, match="latents"):
        apply_logit_calibration(base, rec)


def test_model_readout_head_is_applied_saved_and_loaded(model, data, tmp_path):
    big = _replicated(model, data, k=20)
    res = model.translate(big, "rna->atac", readout="mean")
    z = res.obsm["latent"]
    with torch.no_grad():
        L = model.module.decode_atac_logits(torch.as_tensor(z)).double().numpy()
    w = np.random.default_rng(0).normal(0.0, 2.0, (z.shape[1], L.shape[1]))
    _plant_atac(big, _sig(L + (z - z.mean(0)) / (z.std(0) + 1e-6) @ w * 0.3))
    half = np.arange(big.n_obs) % 2 == 0
    rec = model.calibrate_translation(big, "rna->atac", method="head", cells=half, val_cells=~half)
    assert rec["method"] == "head" and rec["n_cells"] == half.sum() and rec["n_val_cells"] == (~half).sum()
    assert rec["loglik_after"] > rec["loglik_before"]
    test = data[(data.obs["split"] == "test").to_numpy()].copy()
    got = model.translate(test, "rna->atac", calibrated=True)
    zt = torch.as_tensor(got.obsm["latent"])
    with torch.no_grad():
        ref = torch.sigmoid(rec["scale"] * model.module.decode_atac_logits(zt).float() + zt @ torch.as_tensor(
            rec["weight"]) + torch.as_tensor(rec["bias"])).numpy()
    assert np.abs(got.X - ref).max() < 8 * np.finfo(np.float32).eps
    assert not np.allclose(got.X, model.translate(test, "rna->atac").X)  # the head changes the output
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "translation_head.pt").exists()
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["translation_calibration"]["rna->atac"]
    assert "weight" not in stored and stored["method"] == "head"
    back = ScDiffusionX.load(tmp_path / "m")
    np.testing.assert_array_equal(back.translation_calibration["rna->atac"]["weight"], rec["weight"])
    np.testing.assert_array_equal(back.translate(test, "rna->atac", calibrated=True).X, got.X)
    (tmp_path / "m" / "translation_head.pt").unlink()
    with pytest.raises(CheckpointError, match="translation_head.pt"):
        ScDiffusionX.load(tmp_path / "m")
    with pytest.raises(InputDataError, match="overlap"):
        model.calibrate_translation(big, method="head", cells=half, val_cells=half)
    with pytest.raises(OptionError, match="test cells"):
        model.calibrate_translation(data, method="head", cells="val", val_cells="test")
    with pytest.raises(InputDataError, match="test cells"):  # stopping on test cells would bias their scores
        model.calibrate_translation(data, method="head", cells="val",
                                    val_cells=(data.obs["split"] == "test").to_numpy())
