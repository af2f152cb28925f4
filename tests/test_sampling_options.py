"""The sampling settings of ``generate`` / ``translate`` / ``interpolate``: one checked object
(``model._options.SamplingOptions``) built at the facade and passed down."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from scdiffx_grn import OptionError, ScdxError
from scdiffx_grn.model import ModelConfig, ScDiffusionX
from scdiffx_grn.model._options import SamplingOptions


def test_each_option_is_checked_naming_the_accepted_values():
    cfg = ModelConfig()
    assert SamplingOptions().checked(cfg) == SamplingOptions()
    bad = [({"readout": "median"}, "readout must be one of 'mean', 'samples', got 'median'"),
           ({"guidance_mode": "sum"}, "guidance_mode must be one of 'joint', 'additive', got 'sum'"),
           ({"method": "paste"}, "translation method must be one of 'conditional', 'inpaint', got 'paste'"),
           ({"n_steps": 0}, "n_steps must be an integer >= 1, got 0"),
           ({"n_steps": 2.5}, "n_steps"),
           ({"guidance_scale": -1.0}, "guidance_scale must be >= 0"),
           ({"guidance_scale": {"cell_type": -2.0}}, "guidance_scale must be >= 0"),
           ({"source_guidance": float("nan")}, "source_guidance"),
           ({"recon_guidance": -0.5}, "recon_guidance must be >= 0"),
           ({"readout": "samples", "sampler": "nope"}, r"unknown sampler 'nope'; choose one of 'ddpm', 'ddim', 'dpm\+\+'")]
    for change, msg in bad:
        with pytest.raises(OptionError, match=msg):
            SamplingOptions(**change).checked(cfg)


def test_the_sampler_is_checked_against_the_objective_when_it_is_used():
    flow = ModelConfig(objective="flow")
    SamplingOptions(sampler="ddim", readout="mean").checked(flow)  # the mean readout uses no sampler
    with pytest.raises(OptionError, match=r"'ddim' is a diffusion sampler.*objective='flow'.*'euler', 'heun'"):
        SamplingOptions(sampler="ddim", readout="samples").checked(flow)
    SamplingOptions(sampler="heun", readout="samples").checked(flow)


def test_options_are_frozen_and_spell_the_tensor_api_keywords():
    o = SamplingOptions(sampler="dpm++", n_steps=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.n_steps = 3
    assert o.replace(n_steps=3).n_steps == 3 and o.n_steps == 7
    kw = o.translate_kwargs()
    assert kw["sampler"] == "dpm++" and kw["n_steps"] == 7
    params = inspect.signature(ScDiffusionX.translate_latent).parameters
    assert set(kw) <= {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


@pytest.fixture(scope="module")
def tiny():
    from scdiffx_grn.datasets import toy_multiome

    mdata = toy_multiome(0)[:12].copy()
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    model = ScDiffusionX(mdata, seed=0, width=16, n_layers=1, latent_dim=8, token_dim=4, n_heads=2,
                         rna_hidden=[16], atac_hidden=[16])
    return model, mdata


def test_untrained_models_refuse_to_sample(tiny):
    model, mdata = tiny
    for call in (lambda: model.generate({"cell_type": ["t0"]}), lambda: model.translate(mdata),
                 lambda: model.get_latent(mdata)):
        with pytest.raises(ScdxError, match="not trained yet"):
            call()


def test_the_facades_check_the_settings_before_sampling(tiny):
    model, mdata = tiny
    model.module.fitted.fill_(1)
    try:
        cat = model.config.label_categories["cell_type"][0]
        with pytest.raises(OptionError, match="guidance_mode must be one of 'joint', 'additive'"):
            model.generate({"cell_type": [cat]}, guidance_mode="sum")
        with pytest.raises(OptionError, match="n_steps must be an integer >= 1"):
            model.translate(mdata, n_samples=1, n_steps=0)
        with pytest.raises(OptionError, match="guidance_scale must be >= 0"):
            model.translate_latent(model.cell_noise(["a"], 0)[:, :8], "rna->atac", None, model.cell_noise(["a"], 0),
                                   guidance_scale=-1.0)
        g = model.generate({"cell_type": [cat] * 2}, sampler="ddim", n_steps=3, seed=1)
        assert g.uns["generation"] == {"sampler": "ddim", "n_steps": 3, "seed": 1, "guidance_scale": 1.0,
                                       "guidance_mode": "joint"}
    finally:
        model.module.fitted.fill_(0)


def test_no_module_of_model_calls_private_members_of_the_facade():
    """Checks of the model's state are functions of ``model._access``: the dependency goes one way."""
    root = Path(__file__).resolve().parents[1] / "scdiffx_grn" / "model"
    calls = []
    for p in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_require"):
                calls.append(f"{p.name}:{node.lineno} .{node.attr}")
    assert not calls, calls
