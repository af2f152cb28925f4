"""Core model: modules, schedulers, training, generation, translation, save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import torch

from scdiffx_grn import (
    CheckpointError,
    FeatureMismatchError,
    MissingLabelError,
    NotCountsError,
    OptionError,
    ScDiffusionX,
    ScdxError,
    settings,
)
from scdiffx_grn.model import ModelConfig, TranslationModel, make_scheduler, nb_log_likelihood
from scdiffx_grn.model._modules import DCADenoiser

from _helpers import SMALL as TINY, two_type_mdata
from conftest import model_float32_tol

settings.progress = False


@pytest.fixture(scope="module")
def planted():
    return two_type_mdata()


@pytest.fixture(scope="module")
def trained(planted):
    torch.manual_seed(0)
    ScDiffusionX.setup_mudata(planted, labels=["cell_type", "batch"])
    model = ScDiffusionX(planted, **TINY)
    model.train(ae_epochs=40, diffusion_steps=1500, batch_size=64, lr=1e-3, device="cpu", seed=0)
    return model


# ----------------------------------------------------------------------------- units
def test_nb_log_likelihood_matches_scipy():
    x = torch.tensor([0.0, 1.0, 5.0, 30.0])
    mu = torch.tensor([0.5, 2.0, 4.0, 20.0])
    theta = torch.tensor([1.0, 3.0, 0.5, 10.0])
    ours = nb_log_likelihood(x, mu, theta).numpy()
    p = (theta / (theta + mu)).numpy()
    ref = st.nbinom.logpmf(x.numpy(), theta.numpy(), p)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 1000), ("ddpm", 50), ("ddim", 20), ("dpm++", 10)])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_samplers_converge_to_point_mass(sampler, steps, prediction):
    """With the exact denoiser of a point mass, every sampler must land on that point."""
    cfg = ModelConfig(n_genes=1, n_peaks=1, prediction=prediction)
    sched = make_scheduler(sampler, cfg)
    sched.set_timesteps(steps)
    target = torch.tensor([[1.5, -0.5, 0.25]])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g)
    for t in sched.timesteps:
        a = float(sched.alphas_cumprod[int(t)])
        eps = (x - a**0.5 * target) / (1 - a) ** 0.5
        out = eps if prediction == "epsilon" else a**0.5 * eps - (1 - a) ** 0.5 * target
        x = sched.step(out, t, x, g)
    np.testing.assert_allclose(x.numpy(), target.expand(4, 3).numpy(), atol=1e-3)


def test_denoiser_attention_maps_same_path():
    cfg = ModelConfig(n_genes=10, n_peaks=20, latent_dim=16, token_dim=4, width=16, n_heads=2, n_layers=3,
                      label_keys=["ct"], label_categories={"ct": ["a", "b"]}).resolve()
    den = DCADenoiser(cfg)
    for p in den.parameters():  # break adaLN-zero so attention actually matters
        torch.nn.init.normal_(p, std=0.2)
    zr, za = torch.randn(5, 16), torch.randn(5, 16)
    t = torch.tensor([0, 10, 500, 999, 3])
    c = torch.tensor([[0], [1], [2], [0], [1]])
    o1 = den(zr, za, t, t, c)
    o_r, o_a, attn = den(zr, za, t, t, c, return_attention=True)
    torch.testing.assert_close(o1[0], o_r)
    torch.testing.assert_close(o1[1], o_a)
    assert set(attn) == {"rna_self", "atac_self", "rna_to_atac", "atac_to_rna"}
    assert len(attn["rna_to_atac"]) == 3
    assert attn["rna_to_atac"][0].shape == (5, 2, 4, 4)
    torch.testing.assert_close(attn["atac_to_rna"][1].sum(-1), torch.ones(5, 2, 4))
    # cross-attention is real: changing ATAC changes the RNA output
    o2 = den(zr, za + 1.0, t, t, c)
    assert (o2[0] - o1[0]).abs().max() > 1e-4


def test_config_validation():
    with pytest.raises(ScdxError, match="multiple of token_dim"):
        ModelConfig(n_genes=10, n_peaks=10, latent_dim=10, token_dim=4).resolve()
    big = ModelConfig(n_genes=20000, n_peaks=100000).resolve()
    assert big.rna_hidden == (512, 304) or big.rna_hidden[0] == 512
    # 100,000 peaks: the first ATAC layer is bounded (model._config.WIDE_LAYER_WEIGHTS), not 1,024 wide
    from scdiffx_grn.model._config import WIDE_LAYER_WEIGHTS

    assert big.atac_hidden[0] * 100000 <= WIDE_LAYER_WEIGHTS and big.latent_dim == 100


# ----------------------------------------------------------------------------- setup / errors
def test_setup_rejects_non_counts(planted):
    bad = planted.copy()
    bad.mod["rna"].layers["counts"] = bad.mod["rna"].layers["counts"] * 0.5
    with pytest.raises(NotCountsError):
        ScDiffusionX.setup_mudata(bad, labels=["cell_type"])
    with pytest.raises(MissingLabelError, match="nope"):
        ScDiffusionX.setup_mudata(planted.copy(), labels=["nope"])


# ----------------------------------------------------------------------------- end to end
def test_end_to_end(trained, planted, tmp_path):
    model = trained
    assert model.history["ae_loss"][-1] < model.history["ae_loss"][0]
    assert model.history["diffusion_loss"][-1] < model.history["diffusion_loss"][0]
    gen = model.generate({"cell_type": ["A"] * 30 + ["B"] * 30}, sampler="dpm++", n_steps=15, seed=1)
    assert gen.mod["rna"].shape == (60, 40) and gen.mod["atac"].shape == (60, 80)
    assert list(gen.obs["cell_type"].astype(str)[:2]) == ["A", "A"]
    X = gen.mod["rna"].X.toarray()
    assert np.all(X >= 0) and np.allclose(X, np.round(X))
    # generated cell types carry their planted markers
    a, b = X[:30], X[30:]
    assert a[:, :10].mean() > 2 * b[:, :10].mean()
    assert b[:, 10:20].mean() > 2 * a[:, 10:20].mean()
    pa, pb = gen.mod["atac"].layers["prob"][:30], gen.mod["atac"].layers["prob"][30:]
    assert pa[:, :20].mean() > pb[:, :20].mean() + 0.2

    # translation keeps pairing and recovers the planted cell-type programme from ATAC alone
    tr = model.translate(planted, "atac->rna", n_samples=3, seed=0, sampler="ddim", n_steps=20)
    assert list(tr.obs_names) == list(planted.obs_names)
    ct = planted.obs["cell_type"].to_numpy()
    score = tr.X[:, :10].mean(1) - tr.X[:, 10:20].mean(1)
    acc = np.mean((score > 0) == (ct == "A"))
    assert acc > 0.9, acc
    assert tr.layers["std"].shape == tr.shape and tr.layers["std"].max() > 0
    tr2 = model.translate(planted, "rna->atac", n_samples=1, seed=0, sampler="dpm++", n_steps=10)
    sa = tr2.X[:, :20].mean(1) - tr2.X[:, 20:40].mean(1)
    assert np.mean((sa > 0) == (ct == "A")) > 0.9

    # paired seeds: same seed -> identical, other seed -> different
    t1 = model.translate(planted[:20], "atac->rna", seed=5, n_steps=5).X
    t2 = model.translate(planted[:20], "atac->rna", seed=5, n_steps=5, batch_size=7).X
    t3 = model.translate(planted[:20], "atac->rna", seed=6, n_steps=5).X
    # another batch size changes only the order of float32 sums (mean readout: one denoiser call per
    # noise, 4 noises averaged); another seed is what batch-dependent noise would look like, and it
    # must exceed the tolerance with room to spare
    tol = model_float32_tol(t1, model, denoiser_calls=1, extra_terms=4)
    np.testing.assert_allclose(t1, t2, rtol=0, atol=tol)
    assert np.abs(t1 - t3).max() > 2 * tol

    # save -> load round trip (weights_only) gives identical outputs
    path = tmp_path / "model"
    model.save(path)
    state = torch.load(path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    m2 = ScDiffusionX.load(path, planted, device="cpu")
    np.testing.assert_allclose(m2.translate(planted[:20], "atac->rna", seed=5, n_steps=5).X, t1, atol=1e-6)
    g2 = m2.generate({"cell_type": ["A"] * 5}, n_steps=5, seed=3)
    g1 = model.generate({"cell_type": ["A"] * 5}, n_steps=5, seed=3)
    np.testing.assert_array_equal(g1.mod["rna"].X.toarray(), g2.mod["rna"].X.toarray())
    with pytest.raises(CheckpointError, match="exists"):
        model.save(path)


def test_guidance_modes(trained):
    lab = {"cell_type": ["A"] * 4, "batch": ["b1"] * 4}
    g1 = trained.generate(lab, guidance_scale=1.0, n_steps=5, seed=0, sample_counts=False)
    g2 = trained.generate(lab, guidance_scale=3.0, n_steps=5, seed=0, sample_counts=False)
    g3 = trained.generate(lab, guidance_scale={"cell_type": 3.0, "batch": 1.0}, guidance_mode="additive",
                          n_steps=5, seed=0, sample_counts=False)
    assert not np.allclose(g1.mod["atac"].layers["prob"], g2.mod["atac"].layers["prob"])
    assert g3.mod["rna"].shape == (4, 40)
    g4 = trained.generate(20, n_steps=5, seed=0)  # labels drawn from training frequencies
    assert set(g4.obs["cell_type"].astype(str)) <= {"A", "B"}
    with pytest.raises(MissingLabelError, match="'C'"):
        trained.generate({"cell_type": ["C"]})


def test_inpainting_translation(trained, planted):
    tr = trained.translate(planted[:40], "atac->rna", method="inpaint", recon_guidance=0.5, n_steps=10, seed=0)
    assert tr.shape == (40, 40) and np.isfinite(tr.X).all()


def test_load_refuses_mismatched_features(trained, planted, tmp_path):
    path = tmp_path / "m"
    trained.save(path)
    other = planted[:, :].copy()
    other.mod["rna"] = other.mod["rna"][:, 2:].copy()
    with pytest.raises(FeatureMismatchError, match="gene0"):
        ScDiffusionX.load(path, other)
    with pytest.raises(FeatureMismatchError):
        trained.translate(other, "rna->atac")
    # corrupt / truncated / newer-format checkpoints
    raw = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ScDiffusionX.load(path)
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer"):
        ScDiffusionX.load(path)
    with pytest.raises(CheckpointError, match="no model directory"):
        ScDiffusionX.load(tmp_path / "absent")


def test_resume_from_midrun_checkpoint_is_identical(planted, tmp_path):
    ScDiffusionX.setup_mudata(planted, labels=["cell_type"])
    kw = dict(batch_size=32, device="cpu", seed=3, checkpoint_every=10)
    full = ScDiffusionX(planted, **TINY)
    full.train(ae_epochs=2, diffusion_steps=30, checkpoint_dir=tmp_path / "a", **kw)

    class Stop(Exception):
        pass

    # interrupt a run right after its step-20 checkpoint is written
    from scdiffx_grn.model import _train

    orig = _train.Trainer._save
    def save_then_stop(self, state):
        orig(self, state)
        if state["phase"] == "diffusion" and state["step"] == 20:
            raise Stop

    _train.Trainer._save = save_then_stop
    try:
        with pytest.raises(Stop):
            ScDiffusionX(planted, **TINY).train(ae_epochs=2, diffusion_steps=30, checkpoint_dir=tmp_path / "b", **kw)
    finally:
        _train.Trainer._save = orig
    resumed = ScDiffusionX(planted, **TINY)
    resumed.train(ae_epochs=2, diffusion_steps=30, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    ref, got = full.module.state_dict(), resumed.module.state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], msg=k)


def test_translate_cond_dropout_option(planted, tmp_path):
    """The label dropout of the conditional examples is a saved config option, validated, and trains."""
    with pytest.raises(OptionError, match="translate_cond_dropout"):
        ModelConfig(n_genes=10, n_peaks=10, translate_cond_dropout=1.5).resolve()
    ScDiffusionX.setup_mudata(planted, labels=["cell_type"])
    m = ScDiffusionX(planted, **{**TINY, "translate_cond_dropout": 0.5})
    m.train(ae_epochs=1, diffusion_steps=3, batch_size=32, device="cpu", seed=0)
    m.save(tmp_path / "m")
    assert ScDiffusionX.load(tmp_path / "m").config.translate_cond_dropout == 0.5
    # None (the default) keeps the old behaviour: the same random draws as an explicit value equal to
    # cond_dropout, so both train to identical weights
    a = ScDiffusionX(planted, **TINY)
    b = ScDiffusionX(planted, **{**TINY, "translate_cond_dropout": a.config.cond_dropout})
    for x in (a, b):
        x.train(ae_epochs=1, diffusion_steps=3, batch_size=32, device="cpu", seed=0)
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_source_dependence(trained, planted):
    """A model that learned the planted ATAC -> RNA programme depends on its own ATAC; shuffled ATAC does not."""
    from scdiffx_grn.eval import source_dependence

    for direction in ("atac->rna", "rna->atac"):
        d = source_dependence(trained, planted, direction=direction, n_cells=60, n_steps=10, n_pcs=10, seed=0)
        assert d["n_cells"] == 60 and d["accuracy_observed"] > 0.9
        assert d["accuracy_translated"] > 0.85, d
        assert d["accuracy_translated"] - d["accuracy_shuffled_source"] > 0.25, d
        assert d["cell_agreement_own"] > d["cell_agreement_shuffled"], d
    with pytest.raises(MissingLabelError, match="nope"):
        source_dependence(trained, planted, groupby="nope")
    with pytest.raises(OptionError, match="direction"):
        source_dependence(trained, planted, direction="rna->rna")


def test_model_implements_the_tensor_api(trained):
    """The facade is a TranslationModel; its pipeline holds the schedulers' forward process."""
    assert isinstance(trained, TranslationModel)
    pipe = trained.pipeline
    sched = pipe.training_scheduler
    z, eps = torch.randn(3, 4), torch.randn(3, 4)
    t = pipe.timesteps(500, 3)
    assert t.dtype == torch.long
    a = sched.alpha_bar(t, z)
    torch.testing.assert_close(pipe.add_noise(z, eps, t), a.sqrt() * z + (1 - a).sqrt() * eps)
    torch.testing.assert_close(sched.snr(t), (a / (1 - a)).view(-1))
    # the guidance objects compose: a mix at weight 1 is its first term
    from scdiffx_grn.model import LabelGuidance, MixGuidance, WithConditions

    lab = {"cell_type": ["A"] * 3}
    cond_b = trained.condition_indices({"cell_type": ["B"] * 3})
    g1 = trained.generate(lab, n_steps=3, seed=0, sample_counts=False)
    g2 = trained.generate(lab, n_steps=3, seed=0, sample_counts=False,
                          guidance=MixGuidance(LabelGuidance(), WithConditions(cond_b), 1.0))
    np.testing.assert_array_equal(g1.mod["atac"].layers["prob"], g2.mod["atac"].layers["prob"])


@pytest.fixture(scope="module")
def flow_tiny(planted):
    """A flow-matching model trained for a few steps on every 4th planted cell, and those cells
    (read-only: the tests below only run it)."""
    p = planted[::4].copy()
    ScDiffusionX.setup_mudata(p, labels=["cell_type"])
    model = ScDiffusionX(p, objective="flow", **TINY)
    model.train(ae_epochs=1, diffusion_steps=3, batch_size=32, device="cpu", seed=0)
    return model, p


def test_attention_scores_run_on_a_flow_model(flow_tiny):
    """GRN attention extraction uses the model's own forward process: it runs on flow-matching models."""
    from scdiffx_grn.grn import _scores

    model, p = flow_tiny
    assert _scores.forward_process(model).timestep_dtype == torch.float32
    X_rna, X_atac = _scores.model_inputs(model, p)
    cond = _scores.cond_for(model, p, np.arange(p.n_obs))
    pairs = pd.DataFrame({"gene": ["gene0", "gene12"], "peak": ["chr1-0-400", "chr1-25000-25400"]})
    A = _scores.attention_matrix(model, X_rna, X_atac, cond, timesteps=(100, 900), batch_size=16, noise_atac=True)
    n_tok = model.config.n_tokens
    assert A.shape == (n_tok, n_tok) and np.isfinite(A).all()
    np.testing.assert_allclose(A.sum(1), 1.0, rtol=1e-5)  # rows of attention maps sum to one
    s = _scores.attention_scores(model, X_rna, X_atac, cond, pairs, timesteps=(500,), batch_size=16)
    assert s.shape == (2,) and np.isfinite(s).all()


def _generation_arrays(model, sampler, batch_size, lab):
    g = model.generate(lab, sampler=sampler, n_steps=4, seed=7, batch_size=batch_size, guidance_scale=2.0)
    return g.mod["atac"].layers["prob"], g.mod["rna"].X.toarray(), g.mod["atac"].X.toarray()


def _assert_batch_size_invariant(model, lab):
    from scdiffx_grn.model._flow import FLOW_SAMPLERS
    from scdiffx_grn.model._schedulers import SAMPLERS

    names = sorted(FLOW_SAMPLERS if model.config.objective == "flow" else SAMPLERS)
    # a row's float32 matmuls may be blocked differently in another batch size: a few ulps of the
    # latent, scaled by the steps; counts are drawn from the decoded means and must then agree
    tol = 64 * np.finfo(np.float32).eps
    for sampler in names:
        ref = _generation_arrays(model, sampler, 1024, lab)
        for bs in (64, 7):
            got = _generation_arrays(model, sampler, bs, lab)
            np.testing.assert_allclose(got[0], ref[0], rtol=tol, atol=tol, err_msg=f"{sampler}, batch_size={bs}")
            np.testing.assert_array_equal(got[1], ref[1], err_msg=f"{sampler}, batch_size={bs}")
            np.testing.assert_array_equal(got[2], ref[2], err_msg=f"{sampler}, batch_size={bs}")
    return names


def test_generate_invariant_to_batch_size(trained, flow_tiny):
    """Every sampler (ddpm's per-step noise included) gives the same cells for any batch size."""
    lab = {"cell_type": ["A", "B"] * 35}  # 70 cells: one batch of 1024, 64 + 6, ten of 7
    assert _assert_batch_size_invariant(trained, lab) == ["ddim", "ddpm", "dpm++"]
    flow = flow_tiny[0]
    assert _assert_batch_size_invariant(flow, lab) == ["euler", "heun"]


def test_training_precision_and_ema(planted):
    """``precision`` is validated; "auto" is float32 on CPU (the same weights as "fp32"), "bf16" autocast
    trains too; the EMA update over parameter lists is the per-parameter lerp."""
    from scdiffx_grn.model import TrainingPlan

    ScDiffusionX.setup_mudata(planted, labels=["cell_type"])
    kw = dict(ae_epochs=1, diffusion_steps=3, batch_size=32, device="cpu", seed=0)
    with pytest.raises(OptionError, match="precision"):
        ScDiffusionX(planted, **TINY).train(precision="fp16", **kw)
    models = {p: ScDiffusionX(planted, **TINY) for p in ("auto", "fp32", "bf16")}
    for p, m in models.items():
        m.train(precision=p, **kw)
    sa, sf, sb = (models[p].module.state_dict() for p in ("auto", "fp32", "bf16"))
    assert all(torch.equal(sa[k], sf[k]) for k in sa)
    assert np.isfinite(models["bf16"].history["diffusion_loss"]).all()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)
    # EMA: one foreach call over lists == lerp of each parameter (reference), warm-up decay included
    den = models["fp32"].module.denoiser
    ema = DCADenoiser(models["fp32"].config)
    ref = [p.detach().clone() for p in ema.parameters()]
    plan = TrainingPlan(models["fp32"].module, models["fp32"].config, ema_decay=0.999)
    plan.ema_update(list(ema.parameters()), list(den.parameters()), step=5)
    d = min(0.999, 6 / 15)
    for r, pe, p in zip(ref, ema.parameters(), den.parameters()):
        torch.testing.assert_close(pe.detach(), r + (1 - d) * (p.detach() - r), rtol=0,
                                   atol=4 * float(np.finfo(np.float32).eps) * float(r.abs().max() + p.detach().abs().max()))
