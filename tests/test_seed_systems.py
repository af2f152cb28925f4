"""scDiffusion / scLDM capabilities: RNA-only mode, classifier guidance, interpolation, flow
matching with ODE samplers, the attention (set) RNA encoder."""

from __future__ import annotations

import mudata as md
import numpy as np
import pytest
import torch

from scdiffx_grn import MissingLabelError, ScDiffusionX, ScdxError, settings
from scdiffx_grn.model import (LatentClassifier, ModelConfig, SetEncoder, generate_with_classifier, interpolate,
                               load_classifier, make_scheduler, nearest_type_fractions, train_latent_classifier)

from _helpers import SMALL as TINY, two_type_mdata
from conftest import float32_terms, float32_tol, model_float32_tol

settings.progress = False


def _a_like(gen) -> np.ndarray:
    """Planted type call of generated cells: A markers are genes 0-9, B markers genes 10-19."""
    X = gen.mod["rna"].X.toarray()
    return X[:, :10].mean(1) > X[:, 10:20].mean(1)


def _rna_only(planted):
    r = md.MuData({"rna": planted.mod["rna"].copy()})
    r.obs["cell_type"] = planted.obs["cell_type"].to_numpy()
    return r


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models: one intra-op thread is fastest and avoids oversubscribing shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def planted():
    return two_type_mdata()


@pytest.fixture(scope="module")
def rna_model(planted):
    """Unconditional RNA-only diffusion model (labels come only from classifiers)."""
    r = _rna_only(planted)
    ScDiffusionX.setup_mudata(r, labels=None)
    model = ScDiffusionX(r, **TINY)
    model.train(ae_epochs=20, diffusion_steps=600, batch_size=64, lr=1e-3, device="cpu", seed=0)
    return model, r


@pytest.fixture(scope="module")
def classifier(rna_model):
    model, r = rna_model
    return train_latent_classifier(model, r, "cell_type", steps=300, hidden=(64, 64), batch_size=128, seed=0)


@pytest.fixture(scope="module")
def flow_model(planted):
    """Paired, cell-type conditioned flow-matching model."""
    p = planted.copy()
    ScDiffusionX.setup_mudata(p, labels=["cell_type"])
    model = ScDiffusionX(p, objective="flow", **TINY)
    model.train(ae_epochs=20, diffusion_steps=700, batch_size=64, lr=1e-3, device="cpu", seed=0)
    return model, p


# ----------------------------------------------------------------------------- RNA-only mode
def test_rna_only_train_generate_save_load(rna_model, planted, tmp_path):
    model, r = rna_model
    assert model.config.modalities == ["rna"] and model.module.atac_ae is None
    assert all(not hasattr(b.rna, "cross_attn") and b.atac is None for b in model.module.denoiser.blocks)
    assert model.history["diffusion_loss"][-1] < model.history["diffusion_loss"][0]
    gen = model.generate(80, n_steps=10, seed=0)
    assert list(gen.mod) == ["rna"] and gen.mod["rna"].shape == (80, 40)
    frac = _a_like(gen).mean()
    assert 0.2 < frac < 0.8, frac  # both planted types are generated
    with pytest.raises(ScdxError, match="single-modality"):
        model.translate(planted, "atac->rna")
    with pytest.raises(ScdxError, match="no 'atac'"):
        model.get_latent(planted, "atac")
    # attention maps: RNA self-attention only
    z = torch.randn(3, model.config.latent_dim)
    o_r, o_a, attn = model.module.denoiser(z, z[:, :0], torch.tensor([1, 2, 3]), None,
                                           torch.zeros(3, 0, dtype=torch.long), return_attention=True)
    assert o_r.shape == z.shape and o_a.shape == (3, 0) and set(attn) == {"rna_self"}
    model.save(tmp_path / "m")
    m2 = ScDiffusionX.load(tmp_path / "m", r, device="cpu")
    assert m2.config.modalities == ["rna"] and m2.atac_var_names == []
    g1 = model.generate(6, n_steps=5, seed=3)
    g2 = m2.generate(6, n_steps=5, seed=3)
    np.testing.assert_array_equal(g1.mod["rna"].X.toarray(), g2.mod["rna"].X.toarray())
    # a paired MuData can be registered RNA-only too
    p = planted.copy()
    ScDiffusionX.setup_mudata(p, labels=["cell_type"], modalities=("rna",))
    m3 = ScDiffusionX(p, **TINY)
    assert m3.config.n_peaks == 0 and not m3.config.paired


# ----------------------------------------------------------------------------- classifier guidance
def test_classifier_guidance_shifts_labels(rna_model, classifier, tmp_path):
    model, r = rna_model
    assert classifier.history[-1] < classifier.history[0]
    kw = dict(n_cells=60, n_steps=10, seed=0)
    base = _a_like(generate_with_classifier(model, {"cell_type": (classifier, "A", 0.0)}, **kw)).mean()
    to_a = _a_like(generate_with_classifier(model, {"cell_type": (classifier, "A", 3.0)}, **kw)).mean()
    to_b = _a_like(model.generate(60, classifier_guidance={"cell_type": (classifier, "B", 3.0)},
                                  n_steps=10, seed=0)).mean()
    assert to_a > base + 0.15 and to_a > 0.8, (base, to_a)
    assert to_b < base - 0.15 and to_b < 0.2, (base, to_b)
    # per-cell targets
    g = generate_with_classifier(model, {"cell_type": (classifier, ["A"] * 30 + ["B"] * 30, 3.0)}, **kw)
    call = _a_like(g)
    assert call[:30].mean() > call[30:].mean() + 0.5
    # save / load: same weights, same guided samples; multi-condition guidance sums the terms
    classifier.save(tmp_path / "clf")
    clf2 = load_classifier(tmp_path / "clf")
    assert isinstance(clf2, LatentClassifier) and clf2.classes == ["A", "B"]
    x, t = torch.randn(5, model.config.latent_dim), torch.tensor([0, 10, 100, 500, 900])
    torch.testing.assert_close(clf2(x, t), classifier(x, t))
    half = {"ct1": (classifier, "A", 1.5), "ct2": (clf2, "A", 1.5)}
    g_multi = generate_with_classifier(model, half, **kw)
    g_one = generate_with_classifier(model, {"cell_type": (classifier, "A", 3.0)}, **kw)
    np.testing.assert_allclose(g_multi.mod["rna"].X.toarray(), g_one.mod["rna"].X.toarray())
    with pytest.raises(MissingLabelError, match="does not know"):
        generate_with_classifier(model, {"cell_type": (classifier, "C", 1.0)}, **kw)


def test_interpolation_fractions_monotonic(rna_model, classifier, planted):
    model, r = rna_model
    w = [0.0, 0.25, 0.5, 0.75, 1.0]
    out = interpolate(model, "A", "B", weights=w, classifier=classifier, scale=3.0, n_cells=60, n_steps=10, seed=0)
    assert out.n_obs == 300 and sorted(set(out.obs["interpolation_weight"])) == w
    fr = nearest_type_fractions(out, r, "cell_type", n_pcs=10, k=15)
    assert list(fr.index) == w and list(fr.columns) == ["A", "B"]
    a = fr["A"].to_numpy()
    assert np.all(np.diff(a) > -0.05), a
    assert a[-1] - a[0] > 0.6, a


# ----------------------------------------------------------------------------- flow matching
@pytest.mark.parametrize("sampler,steps", [("euler", 1), ("euler", 10), ("heun", 1), ("heun", 7)])
def test_flow_ode_exact_velocity_lands_on_point_mass(sampler, steps):
    cfg = ModelConfig(n_genes=1, n_peaks=1, objective="flow")
    sched = make_scheduler(sampler, cfg)
    sched.set_timesteps(steps)
    assert len(sched.timesteps) == (steps if sampler == "euler" else 2 * steps - 1)
    target = torch.tensor([[1.5, -0.5, 0.25]])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    # float32 rounding only: at most 5 rounded operations per call (velocity, step), at the scale of |x|
    tol = float32_tol(torch.cat([x.flatten(), target.flatten()]), 5 * len(sched.timesteps))
    for t in sched.timesteps:
        s = float(t) / cfg.n_train_timesteps
        v = (x - target) / s  # exact velocity of a point mass: (x_t - x0) / t
        x = sched.step(v, t, x)
    torch.testing.assert_close(x, target.expand(4, 3), atol=tol, rtol=0)
    # training helpers: interpolant, velocity target, (x0, eps) recovery
    x0, eps, tt = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([100.0, 500.0, 900.0])
    xt = sched.add_noise(x0, eps, tt)
    x0h, epsh = sched.to_x0_eps(sched.target(x0, eps, tt), xt, tt)
    torch.testing.assert_close(x0h, x0)
    torch.testing.assert_close(epsh, eps)


def test_samplers_refuse_the_other_objective():
    flow = ModelConfig(n_genes=1, n_peaks=1, objective="flow")
    with pytest.raises(ScdxError, match="objective='flow'"):
        make_scheduler("ddpm", flow)
    with pytest.raises(ScdxError, match="objective='diffusion'"):
        make_scheduler("heun", ModelConfig(n_genes=1, n_peaks=1))
    with pytest.raises(ScdxError, match="objective"):
        ModelConfig(n_genes=4, n_peaks=4, objective="score").resolve()


def test_flow_model_learns_planted_types_and_translates(flow_model, tmp_path):
    model, p = flow_model
    lab = {"cell_type": ["A"] * 30 + ["B"] * 30}
    for sampler, steps in (("euler", 10), ("heun", 5)):
        g = model.generate(lab, sampler=sampler, n_steps=steps, seed=1)
        call = _a_like(g)
        assert call[:30].mean() > 0.85 and call[30:].mean() < 0.15, (sampler, call[:30].mean(), call[30:].mean())
        pa = g.mod["atac"].layers["prob"]
        assert pa[:30, :20].mean() > pa[30:, :20].mean() + 0.2
    with pytest.raises(ScdxError, match="diffusion sampler"):
        model.generate(lab, sampler="dpm++")
    # translation: the source branch is clean at t = 0
    tr = model.translate(p, "atac->rna", n_samples=1, sampler="euler", n_steps=10, seed=0)
    ct = p.obs["cell_type"].to_numpy()
    acc = np.mean(((tr.X[:, :10].mean(1) - tr.X[:, 10:20].mean(1)) > 0) == (ct == "A"))
    assert acc > 0.85, acc
    tr2 = model.translate(p[:30], "rna->atac", sampler="heun", n_steps=4, method="inpaint", recon_guidance=0.5)
    assert np.isfinite(tr2.X).all()
    # classifier-free guidance, joint and additive (multi-condition) modes
    g1 = model.generate({"cell_type": ["A"] * 4}, sampler="euler", n_steps=5, seed=0, sample_counts=False)
    g2 = model.generate({"cell_type": ["A"] * 4}, sampler="euler", n_steps=5, seed=0, sample_counts=False,
                        guidance_scale=3.0)
    g3 = model.generate({"cell_type": ["A"] * 4}, sampler="euler", n_steps=5, seed=0, sample_counts=False,
                        guidance_scale={"cell_type": 3.0}, guidance_mode="additive")
    assert not np.allclose(g1.mod["atac"].layers["prob"], g2.mod["atac"].layers["prob"])
    # one condition: the two modes are the same arithmetic in another order (5 Euler steps); a
    # probability moves by at most a quarter of its logit's error, at the logits' scale
    p3 = g3.mod["atac"].layers["prob"].astype(np.float64).clip(1e-7, 1 - 1e-7)
    tol = model_float32_tol(np.log(p3 / (1 - p3)) / 4, model, denoiser_calls=5)
    np.testing.assert_allclose(g2.mod["atac"].layers["prob"], g3.mod["atac"].layers["prob"], rtol=0, atol=tol)
    assert np.abs(g1.mod["atac"].layers["prob"] - g2.mod["atac"].layers["prob"]).max() > 2 * tol
    # CFG-label interpolation: w * v(A) + (1 - w) * v(B)
    out = interpolate(model, "A", "B", weights=[0.0, 0.5, 1.0], n_cells=40, n_steps=10, seed=0)
    a = np.array([_a_like(out[out.obs["interpolation_weight"] == w]).mean() for w in (0.0, 0.5, 1.0)])
    assert np.all(np.diff(a) >= -0.05) and a[2] - a[0] > 0.7, a
    # save / load keeps the objective and the samples
    model.save(tmp_path / "flow")
    m2 = ScDiffusionX.load(tmp_path / "flow", p, device="cpu")
    assert m2.config.objective == "flow"
    g4 = m2.generate({"cell_type": ["A"] * 4}, sampler="euler", n_steps=5, seed=0, sample_counts=False)
    np.testing.assert_allclose(g4.mod["atac"].layers["prob"], g1.mod["atac"].layers["prob"], atol=1e-6)


# ----------------------------------------------------------------------------- attention encoder
def test_set_encoder_shapes_and_permutation_invariance():
    torch.manual_seed(0)
    enc = SetEncoder(n_genes=30, latent_dim=8, dim=16, n_inducing=4, n_heads=2, dropout=0.0).eval()
    x = torch.rand(5, 30) * 3
    z, w = enc(x, return_attention=True)
    assert z.shape == (5, 8) and w.shape == (5, 2, 4, 30)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, 2, 4))
    perm = torch.randperm(30)
    # permuted genes change only the order of float32 sums (attention over the 30 genes)
    tol = float32_tol(z.detach(), float32_terms(enc, n_keys=30))
    torch.testing.assert_close(enc(x[:, perm], gene_index=perm), z, atol=tol, rtol=0)
    # same thing by permuting the embedding table itself
    enc2 = SetEncoder(n_genes=30, latent_dim=8, dim=16, n_inducing=4, n_heads=2, dropout=0.0).eval()
    enc2.load_state_dict(enc.state_dict())
    with torch.no_grad():
        enc2.gene_emb.copy_(enc.gene_emb[perm])
    torch.testing.assert_close(enc2(x[:, perm]), z, atol=tol, rtol=0)
    # it is not a bag of values: swapping two genes' values changes the latent
    x2 = x.clone()
    x2[:, [0, 1]] = x[:, [1, 0]]
    assert (enc(x2) - z).abs().max() > 2 * tol


def test_attention_rna_encoder_model_trains(planted, tmp_path):
    r = _rna_only(planted)
    ScDiffusionX.setup_mudata(r, labels=["cell_type"])
    model = ScDiffusionX(r, rna_encoder="attention", set_dim=16, set_inducing=4, set_heads=2, **TINY)
    assert isinstance(model.module.rna_ae.encoder, SetEncoder)
    model.train(ae_epochs=8, diffusion_steps=20, batch_size=64, device="cpu", seed=0)
    assert model.history["ae_loss"][-1] < model.history["ae_loss"][0]
    assert model.get_latent(r).shape == (r.n_obs, model.config.latent_dim)
    model.save(tmp_path / "att")
    m2 = ScDiffusionX.load(tmp_path / "att", device="cpu")
    np.testing.assert_allclose(m2.get_latent(r), model.get_latent(r), atol=1e-5)
