"""Translation core: objectives, source conditioning, readouts and honest yardsticks.

The planted data set has a WEAK cross-modal signal: one factor ``f`` drives ATAC strongly and
explains only ~10 % of the RNA variance; two RNA-only factors explain the rest. A translation
that ignores its input (the failure of epsilon-trained models: their loss barely weighs the
high-noise regime where the source is the only information) predicts the population mean; a
working one must beat it.
"""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

from scdiffx_grn import ScDiffusionX, ScdxError, settings
from scdiffx_grn.eval import energy_score, pit_coverage, source_dependence, translation_scores
from scdiffx_grn.model import ModelConfig, make_scheduler

from _helpers import N_F_GENES, weak_signal_mdata
from conftest import float32_tol, model_float32_tol

settings.progress = False
TINY = dict(width=32, n_layers=2, n_heads=2, token_dim=4, latent_dim=16, rna_hidden=(64,), atac_hidden=(64,))


def _train(mdata, **cfg):
    torch.manual_seed(0)
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    model = ScDiffusionX(mdata, seed=0, **{**TINY, **cfg})
    model.train(ae_epochs=25, diffusion_steps=1200, batch_size=128, lr=2e-3, device="cpu", seed=0,
                split_key="split")
    return model


@pytest.fixture(scope="module")
def weak():
    return weak_signal_mdata()


@pytest.fixture(scope="module")
def vmodel(weak):
    return _train(weak)


def _test_cells(mdata):
    return (mdata.obs["split"] == "test").to_numpy()


# ----------------------------------------------------------------------------- the failure this guards
def test_posterior_mean_beats_the_no_source_mean_on_a_weak_signal(vmodel, weak):
    """Per-gene Pearson of the f-driven genes and the latent error must beat the population mean."""
    test = weak[_test_cells(weak)].copy()
    tr = vmodel.translate(test, "atac->rna")
    assert tr.uns["translation"]["readout"] == "mean"
    X = test.mod["rna"].layers["counts"].toarray()
    obs = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    r = [np.corrcoef(obs[:, j], tr.X[:, j])[0, 1] for j in range(N_F_GENES)]
    assert np.mean(r) > 0.12, r
    # in the latent: error of the posterior mean below that of the latent mean (0 after normalisation)
    z_true = vmodel.get_latent(test, "rna")
    err = ((tr.obsm["latent"] - z_true) ** 2).mean()
    err0 = (z_true ** 2).mean()
    assert err < 0.99 * err0, (err, err0)
    d = source_dependence(vmodel, weak, direction="atac->rna", cells=_test_cells(weak), n_pcs=10, seed=0)
    assert d["latent_error_own"] < d["latent_error_mean_predictor"], d
    assert d["latent_error_own"] < d["latent_error_shuffled"], d
    assert d["cell_agreement_own"] > d["cell_agreement_shuffled"], d
    assert d["verdict"].startswith("uses its input:")


def test_epsilon_objective_fails_the_same_check(weak):
    """The old objective on the same data and budget: its translation is no better than the mean."""
    model = _train(weak.copy(), prediction="epsilon", source_conditioning=False, source_dropout=0.0)
    test = weak[_test_cells(weak)].copy()
    tr = model.translate(test, "atac->rna")
    z_true = model.get_latent(test, "rna")
    assert ((tr.obsm["latent"] - z_true) ** 2).mean() > (z_true ** 2).mean()


def test_source_path_is_wired_and_zero_initialised(weak):
    """A new denoiser starts as if the source path did not exist; the gate closes it for noised sources."""
    from scdiffx_grn.model._modules import DCADenoiser

    cfg = ModelConfig(n_genes=4, n_peaks=4, latent_dim=8, token_dim=4, width=16, n_heads=2, n_layers=1).resolve()
    den = DCADenoiser(cfg)
    assert cfg.source_conditioning and hasattr(den, "src_r")
    zr, za = torch.randn(3, 8), torch.randn(3, 8)
    t0, tt = torch.zeros(3, dtype=torch.long), torch.tensor([10, 500, 999])
    cond = torch.zeros(3, 0, dtype=torch.long)
    base = den(zr, za, tt, t0, cond)[0]
    for p in den.src_r.parameters():
        torch.nn.init.normal_(p, std=0.5)
    for p in den.parameters():  # break adaLN-zero so the conditioning matters
        if p.dim() == 2 and not any(p is q for q in den.src_r.parameters()):
            torch.nn.init.normal_(p, std=0.2)
    a = den(zr, za, tt, t0, cond)[0]
    b = den(zr, za + 1.0, tt, t0, cond)[0]
    assert not torch.allclose(a, b)  # the observed ATAC latent changes the RNA output
    # when ATAC is noised (t > 0) the source path is closed: only cross-attention sees it
    c1 = den.src_r(za, tt)
    assert torch.count_nonzero(c1) == 0
    assert base.shape == (3, 8)
    legacy = ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                    if k not in ("source_conditioning", "source_dropout")})
    assert legacy.source_conditioning is False and legacy.source_dropout == 0.0


# ----------------------------------------------------------------------------- readouts
def test_mean_readout_is_one_denoiser_call(vmodel, weak):
    """The mean readout equals the clean-latent estimate of one call at the noisiest timestep."""
    test = weak[_test_cells(weak)][:25].copy()
    z_src = torch.as_tensor(vmodel.get_latent(test, "atac"))
    from scdiffx_grn._modelio import cell_noise

    L = z_src.shape[1]
    noise = cell_noise(test.obs_names, 2 * L, 3, 0)
    z = vmodel.translate_latent(z_src, "atac->rna", None, noise, readout="mean")
    sched = make_scheduler("ddim", vmodel.config)
    T = torch.full((25,), sched.posterior_mean_timestep, dtype=torch.long)
    den = vmodel.module.denoiser
    with torch.no_grad():
        o, _ = den(noise[:, :L], z_src, T, torch.zeros_like(T), den.labels.null(25, "cpu"))
    ref = sched.to_x0_eps(o, noise[:, :L], T)[0]
    # another code path (and batch) around the same denoiser call: only the order of float32 sums differs
    tol = model_float32_tol(ref, vmodel, denoiser_calls=1)
    torch.testing.assert_close(z.detach(), ref, atol=tol, rtol=0)
    tr1 = vmodel.translate(test, "atac->rna", seed=3, n_noise=1)
    np.testing.assert_allclose(tr1.obsm["latent"], ref.numpy(), rtol=0, atol=tol)
    tr4 = vmodel.translate(test, "atac->rna", seed=3, n_noise=4)
    assert np.corrcoef(tr1.X.ravel(), tr4.X.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("kw", [dict(), dict(readout="samples", n_samples=2, sampler="ddim", n_steps=4),
                                dict(readout="samples", n_samples=2, sampler="ddpm", n_steps=4)])
def test_translation_of_a_cell_does_not_depend_on_its_row_or_batch_mates(vmodel, weak, kw):
    test = weak[_test_cells(weak)][:30].copy()
    full = vmodel.translate(test, "atac->rna", seed=1, batch_size=512, **kw)
    rev = test[::-1].copy()
    part = vmodel.translate(rev, "atac->rna", seed=1, batch_size=7, **kw)
    # other batches change only the order of float32 sums: chained denoiser calls (one for the mean
    # readout), then the average over noises or samples
    tol = model_float32_tol(full.X, vmodel, denoiser_calls=kw.get("n_steps", 1), extra_terms=4)
    np.testing.assert_allclose(part.X[::-1], full.X, rtol=0, atol=tol)
    one = vmodel.translate(test[4:5].copy(), "atac->rna", seed=1, **kw)
    np.testing.assert_allclose(one.X[0], full.X[4], rtol=0, atol=tol)
    # batch-keyed noise would move a cell as much as another seed does: more than the tolerance
    other = vmodel.translate(test, "atac->rna", seed=2, batch_size=512, **kw)
    assert np.abs(other.X - full.X).max() > 2 * tol


def test_samples_are_averaged_in_latent_space_not_decoded_space(vmodel, weak):
    test = weak[_test_cells(weak)][:20].copy()
    tr = vmodel.translate(test, "atac->rna", readout="samples", n_samples=4, n_steps=5, seed=0, return_samples=True)
    S = tr.uns["samples"]
    assert S.shape == (4, 20, weak.mod["rna"].n_vars)
    with torch.no_grad():
        dec = torch.log1p(1e4 * vmodel.decode_rna(torch.as_tensor(tr.obsm["latent"]))).numpy()
    np.testing.assert_allclose(tr.X, dec, rtol=0, atol=model_float32_tol(dec, vmodel))  # decoder: same sums, maybe other batches
    assert np.abs(tr.X - S.mean(0)).max() > 1e-3  # not the decoded average
    # a float32 standard deviation over 4 samples: sums of 4 values and of 4 squares
    np.testing.assert_allclose(tr.layers["std"], S.std(0), rtol=0, atol=float32_tol(S, 2 * 4))
    with pytest.raises(ScdxError, match="readout"):
        vmodel.translate(test, "atac->rna", readout="median")


def test_source_guidance(vmodel, weak):
    test = weak[_test_cells(weak)][:20].copy()
    base = vmodel.translate(test, "atac->rna", seed=0).X
    same = vmodel.translate(test, "atac->rna", seed=0, source_guidance=1.0).X
    np.testing.assert_array_equal(base, same)
    g = vmodel.translate(test, "atac->rna", seed=0, source_guidance=3.0).X
    assert np.abs(g - base).max() > 1e-4
    # w = 0 is the null-source prediction: the same for every source
    u1 = vmodel.translate(test, "atac->rna", seed=0, source_guidance=0.0, n_noise=1)
    shuffled = test[np.random.default_rng(0).permutation(20)].copy()
    shuffled.obs_names = test.obs_names
    for m in shuffled.mod.values():
        m.obs_names = test.obs_names
    u2 = vmodel.translate(shuffled, "atac->rna", seed=0, source_guidance=0.0, n_noise=1)
    # other batch-mates: only the order of float32 sums of the one denoiser call differs
    np.testing.assert_allclose(u1.X, u2.X, rtol=0, atol=model_float32_tol(u1.X, vmodel, denoiser_calls=1))


def test_source_guidance_needs_source_dropout(weak):
    m = weak.copy()
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, seed=0, source_dropout=0.0, **TINY)
    model.train(ae_epochs=1, diffusion_steps=2, batch_size=64, device="cpu", seed=0)
    with pytest.raises(ScdxError, match="source_dropout"):
        model.translate(m[:5].copy(), "atac->rna", source_guidance=2.0)


# ----------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("prediction,weighting", [("x0", "none"), ("v", "min_snr"), ("epsilon", "none")])
def test_other_objectives_train_and_translate(weak, prediction, weighting):
    m = weak[:200].copy()
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, seed=0, prediction=prediction, loss_weighting=weighting, **TINY)
    model.train(ae_epochs=2, diffusion_steps=20, batch_size=64, device="cpu", seed=0)
    assert np.isfinite(model.history["diffusion_loss"]).all()
    tr = model.translate(m[:10].copy(), "atac->rna", n_steps=3)
    assert np.isfinite(tr.X).all()


def test_loss_weights_match_their_definitions():
    cfg = ModelConfig(n_genes=1, n_peaks=1)
    t = torch.tensor([0, 100, 500, 999])
    for pred in ("epsilon", "v", "x0"):
        sched = make_scheduler("ddim", ModelConfig(n_genes=1, n_peaks=1, prediction=pred))
        snr = sched.snr(t)
        w = sched.loss_weight(t, "min_snr", 5.0)
        # weight x (error of the target) == min(SNR, 5) x (error of the clean latent)
        factor = {"epsilon": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[pred]  # |x0 err|^2 = |target err|^2 / factor
        torch.testing.assert_close(w * factor, snr.clamp(max=5.0))
        torch.testing.assert_close(sched.loss_weight(t, "none"), torch.ones(4))
    assert cfg.prediction == "v"


def test_diffusion_loss_matches_the_masked_mean():
    from scdiffx_grn.model import LossOutput, diffusion_loss

    sched = make_scheduler("ddim", ModelConfig(n_genes=1, n_peaks=1))
    g = torch.Generator().manual_seed(0)
    z, n, o = (torch.randn(6, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 5, 50, 500, 900, 999])
    m = torch.tensor([True, False, True, True, False, True])
    out = diffusion_loss(sched, o, o, z, z, n, n, t, t, m, ~m)
    assert isinstance(out, LossOutput) and out.n_examples == {"rna": 4, "atac": 2}
    lr, la = out.components["rna"], out.components["atac"]
    torch.testing.assert_close(out.loss, lr + la)
    ref = ((o - sched.target(z, n, t)) ** 2)
    torch.testing.assert_close(lr, ref[m].sum() / (m.sum() * 4))
    torch.testing.assert_close(la, ref[~m].sum() / ((~m).sum() * 4))


# ----------------------------------------------------------------------------- yardsticks
def test_energy_score_matches_its_formula_and_prefers_the_truth():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(5, 7, 3))
    y = rng.normal(size=(7, 3))
    ref = np.array([np.mean([np.linalg.norm(S[j, i] - y[i]) for j in range(5)])
                    - 0.5 * np.mean([np.linalg.norm(S[j, i] - S[k, i]) for j in range(5) for k in range(5)])
                    for i in range(7)])
    np.testing.assert_allclose(energy_score(S, y), ref)
    # a sampler from the true distribution beats a shifted and a too-narrow one
    y = rng.normal(size=(400, 2))
    good = rng.normal(size=(20, 400, 2))
    assert energy_score(good, y).mean() < energy_score(good + 1.0, y).mean()
    assert energy_score(good, y).mean() < energy_score(0.2 * good, y).mean()
    cov = pit_coverage(good, y)
    assert abs(cov[0.5] - 0.5) < 0.05 and abs(cov[0.9] - 0.9) < 0.04
    narrow = pit_coverage(0.2 * good, y)
    assert narrow[0.9] < 0.6


def test_translation_scores_tables(vmodel, weak):
    test = _test_cells(weak)
    res = translation_scores(vmodel, weak, train=~test, test=test, direction="atac->rna", n_samples=4,
                             n_steps=4, n_comps=8, seed=0)
    pts = res["points"].set_index("predictor")
    assert {"model (posterior mean)", "ridge", "k-NN", "training mean", "label oracle",
            "autoencoder reconstruction"} <= set(pts.index)
    assert pts.loc["model (posterior mean)", "per_feature"] > 0.05
    assert pts.loc["autoencoder reconstruction", "per_feature"] > pts.loc["model (posterior mean)", "per_feature"]
    smp = res["samples"].set_index("sampler")
    assert len(smp) == 4 and (smp["energy_score"] > 0).all()
    assert smp["energy_score"].min() < smp.loc["random training cells", "energy_score"]
    res2 = translation_scores(vmodel, weak, train=~test, test=test, direction="rna->atac", n_comps=8,
                              include_samples=False)
    assert 0.4 < res2["points"].set_index("predictor").loc["model (posterior mean)", "per_cell"] <= 1


def test_translation_scores_scores_peers_with_the_same_code(vmodel, weak):
    """A peer = ridge + a per-gene offset: same per-gene r and re-centred accuracy as ridge, its samples scored."""
    from scdiffx_grn.eval import RidgeTranslator

    test = _test_cells(weak)
    ridge = RidgeTranslator(n_comps=8, seed=0).fit(weak[~test].copy())
    offset = np.where(np.arange(weak.mod["rna"].n_vars) % 2 == 0, 6.0, -6.0)

    class Peer:
        def translate(self, mdata, direction="atac->rna", **_):
            out = ridge.translate(mdata, direction)
            out.X = out.X + offset[None, :].astype(np.float32)
            return out

        def sample(self, mdata, direction, n_samples, seed=0):
            return np.stack([np.asarray(self.translate(mdata, direction).X, np.float64)] * n_samples)

    res = translation_scores(vmodel, weak, train=~test, test=test, direction="atac->rna", n_samples=2, n_steps=2,
                             n_comps=8, seed=0, peers={"offset ridge": Peer()})
    pts = res["points"].set_index("predictor")
    assert pts.loc["offset ridge", "role"] == "peer"
    tol = 1e3 * np.finfo(np.float32).eps
    assert abs(pts.loc["offset ridge", "per_feature"] - pts.loc["ridge", "per_feature"]) < tol
    assert pts.loc["offset ridge", "accuracy_recentred"] == pts.loc["ridge", "accuracy_recentred"]
    assert pts.loc["offset ridge", "accuracy"] < pts.loc["ridge", "accuracy"] - 0.1, pts
    assert (pts["seconds"].notna() == pts["role"].isin(["model", "peer", "baseline"])).all()
    assert "offset ridge samples" in set(res["samples"]["sampler"])

    class Shuffled(Peer):  # features in another order must not be scored against the wrong ones
        def translate(self, mdata, direction="atac->rna", **_):
            return super().translate(mdata, direction)[:, ::-1].copy()

    with pytest.raises(ScdxError, match="features differ"):
        translation_scores(vmodel, weak, train=~test, test=test, direction="atac->rna", n_comps=8,
                           include_samples=False, peers={"shuffled": Shuffled()})


# ----------------------------------------------------------------------------- checkpoints and training messages
def test_float16_checkpoint_is_resaved_at_the_same_size(vmodel, tmp_path):
    vmodel.save(tmp_path / "half", half=True)
    again = ScDiffusionX.load(tmp_path / "half", device="cpu")
    again.save(tmp_path / "again")  # half=None keeps the precision it was loaded with
    a, b = (tmp_path / "half" / "model.pt").stat().st_size, (tmp_path / "again" / "model.pt").stat().st_size
    assert abs(a - b) < 0.05 * a, (a, b)
    vmodel.save(tmp_path / "full")  # a model built here stays float32
    assert (tmp_path / "full" / "model.pt").stat().st_size > 1.6 * a


def test_training_says_how_long_it_will_take(weak, caplog):
    import logging

    m = weak[:200].copy()
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, seed=0, **TINY)
    with caplog.at_level(logging.INFO, logger="scdiffx_grn"):
        model.train(ae_epochs=3, diffusion_steps=60, batch_size=64, device="cpu", seed=0)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(s.startswith("autoencoders:") and "min for 3 epochs" in s for s in msgs), msgs
    assert any(s.startswith("denoiser:") and "min for 60 steps" in s for s in msgs), msgs


def test_source_dependence_names_partly_overlapping_barcodes(vmodel, weak):
    from scdiffx_grn import InputDataError

    rna = weak.mod["rna"][:300].copy()
    atac = weak.mod["atac"][100:400].copy()
    with md.set_options(pull_on_update=False):
        bad = md.MuData({"rna": rna, "atac": atac})
    bad.obs["cell_type"] = pd.concat([rna.obs["cell_type"], atac.obs["cell_type"]]).groupby(level=0).first() \
        .reindex(bad.obs_names).to_numpy()
    with pytest.raises(InputDataError, match="intersect_obs"):
        source_dependence(vmodel, bad, n_cells=50)


def test_option_errors_are_value_errors(vmodel, weak):
    from scdiffx_grn import OptionError

    test = weak[:5].copy()
    for kw in (dict(direction="rna->rna"), dict(readout="median"), dict(readout="samples", sampler="nope")):
        with pytest.raises(OptionError) as e:
            vmodel.translate(test, **kw)
        assert isinstance(e.value, ValueError) and isinstance(e.value, ScdxError)
    with pytest.raises(OptionError, match="prediction"):
        ModelConfig(n_genes=2, n_peaks=2, prediction="eps").resolve()
