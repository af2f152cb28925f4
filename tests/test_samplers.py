"""The one sampler registry: built-ins by kind, custom samplers in generation, translation and the CLI."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from scdiffx_grn import OptionError, ScDiffusionX, settings
from scdiffx_grn.model import (
    SAMPLER_KINDS,
    DDIMScheduler,
    FlowEulerScheduler,
    ModelConfig,
    Sampler,
    get_sampler,
    make_scheduler,
    register_sampler,
    sampler_names,
)

TINY = dict(width=16, n_layers=1, n_heads=2, token_dim=4, latent_dim=8)
settings.progress = False


class CountingDDIM(DDIMScheduler):
    """DDIM that counts its steps: the same arithmetic, so its samples equal DDIM's."""

    calls = 0

    def step(self, *args, **kwargs):
        type(self).calls += 1
        return super().step(*args, **kwargs)


class HalfEuler(FlowEulerScheduler):
    """A flow sampler (for the refusal of the other kind)."""


@pytest.fixture
def registry():
    """The registry as it was before the test (custom registrations are removed afterwards)."""
    from scdiffx_grn import _samplers

    saved = dict(_samplers._REGISTRY)
    CountingDDIM.calls = 0
    yield _samplers
    _samplers._REGISTRY.clear()
    _samplers._REGISTRY.update(saved)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    n, g, p = 60, 20, 40
    ct = np.repeat(["A", "B"], n // 2)
    import anndata as ad
    import mudata as md

    rna = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, (n, g)).astype(np.float32)),
                     obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                     var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    atac = ad.AnnData(sp.csr_matrix((rng.random((n, p)) < 0.3).astype(np.float32)), obs=rna.obs.copy(),
                      var=pd.DataFrame(index=[f"chr1-{j * 1000}-{j * 1000 + 500}" for j in range(p)]))
    rna.layers["counts"], atac.layers["counts"] = rna.X.copy(), atac.X.copy()
    with md.set_options(pull_on_update=False):
        m = md.MuData({"rna": rna, "atac": atac})
    m.obs["cell_type"] = pd.Categorical(ct)
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, **TINY)
    model.train(ae_epochs=1, diffusion_steps=3, batch_size=32, device="cpu", seed=0)
    return model, m


def test_builtin_samplers_by_kind():
    assert SAMPLER_KINDS == ("diffusion", "flow")
    assert sampler_names("diffusion") == ["ddpm", "ddim", "dpm++"]
    assert sampler_names("flow") == ["euler", "heun"]
    assert sampler_names() == ["ddpm", "ddim", "dpm++", "euler", "heun"]
    for name in sampler_names():
        cls = get_sampler(name)
        assert issubclass(cls, Sampler) and cls.name == name
    assert get_sampler("DPMSolver") is get_sampler("dpm++")  # the old aliases
    # the old tables are live views of the registry
    from scdiffx_grn.model._flow import FLOW_SAMPLERS
    from scdiffx_grn.model._schedulers import SAMPLERS

    assert list(SAMPLERS) == sampler_names("diffusion") and list(FLOW_SAMPLERS) == sampler_names("flow")
    assert SAMPLERS["ddim"] is DDIMScheduler and "euler" not in SAMPLERS


def test_a_sampler_of_the_other_kind_names_the_valid_ones(registry, model):
    register_sampler("half-euler", HalfEuler)
    flow = ModelConfig(n_genes=1, n_peaks=1, objective="flow")
    with pytest.raises(OptionError, match=r"'ddim' is a diffusion sampler.*objective='flow'.*'euler', 'heun', "
                                          r"'half-euler'"):
        make_scheduler("ddim", flow)
    assert isinstance(make_scheduler("half-euler", flow), HalfEuler)
    m, data = model
    with pytest.raises(OptionError, match=r"'half-euler' is a flow-matching ODE sampler.*objective='diffusion'.*"
                                          r"'ddpm', 'ddim', 'dpm\+\+'"):
        m.generate({"cell_type": ["A"]}, sampler="half-euler", n_steps=2)
    with pytest.raises(OptionError, match=r"'heun' is a flow-matching ODE sampler.*'ddpm', 'ddim', 'dpm\+\+'"):
        m.translate(data[:4].copy(), "atac->rna", readout="samples", n_samples=1, sampler="heun", n_steps=2)
    with pytest.raises(OptionError, match=r"unknown sampler 'nope'; choose one of 'ddpm', 'ddim', 'dpm\+\+'"):
        m.generate({"cell_type": ["A"]}, sampler="nope", n_steps=2)


def test_register_sampler_checks_its_input(registry):
    with pytest.raises(OptionError, match="registered already"):
        register_sampler("ddim", CountingDDIM)
    assert register_sampler("ddim", CountingDDIM, overwrite=True) is CountingDDIM
    assert get_sampler("ddim") is CountingDDIM
    with pytest.raises(OptionError, match="needs a sampler class"):
        register_sampler("x", CountingDDIM())
    with pytest.raises(OptionError, match="is not a sampler: it has no 'from_config', 'set_timesteps', 'step'"):
        register_sampler("x", int)
    with pytest.raises(OptionError, match="is a 'diffusion' sampler.*kind='flow'"):
        register_sampler("x", CountingDDIM, kind="flow")
    with pytest.raises(OptionError, match="kind must be one of 'diffusion', 'flow'"):
        register_sampler("x", "some.module:Cls", kind="score")
    with pytest.raises(OptionError, match="non-empty string"):
        register_sampler("", CountingDDIM)
    assert "x" not in sampler_names()
    register_sampler("lazy", "scdiffx_grn.model._schedulers:NoSuchSampler", kind="diffusion")
    with pytest.raises(OptionError, match="'lazy' is registered as .*NoSuchSampler.*cannot be imported"):
        get_sampler("lazy")


def test_a_registered_sampler_generates_and_translates(registry, model):
    """A registered sampler is what ``sampler=name`` runs: DDIM's arithmetic under another name gives DDIM's cells."""
    m, data = model
    register_sampler("Counting-DDIM", CountingDDIM)
    assert sampler_names("diffusion")[-1] == "counting-ddim"
    lab = {"cell_type": ["A", "B"] * 3}
    ref = m.generate(lab, sampler="ddim", n_steps=3, seed=1, sample_counts=False)
    got = m.generate(lab, sampler="counting-ddim", n_steps=3, seed=1, sample_counts=False)
    assert CountingDDIM.calls == 3  # one batch, three steps
    np.testing.assert_array_equal(got.mod["atac"].layers["prob"], ref.mod["atac"].layers["prob"])
    assert got.uns["generation"]["sampler"] == "counting-ddim"
    test = data[:10].copy()
    kw = dict(readout="samples", n_samples=2, n_steps=4, seed=0)
    ref_t = m.translate(test, "atac->rna", sampler="ddim", **kw)
    got_t = m.translate(test, "atac->rna", sampler="Counting-DDIM", **kw)
    assert CountingDDIM.calls == 3 + 2 * 4
    np.testing.assert_array_equal(got_t.X, ref_t.X)


def test_the_cli_lists_and_runs_a_registered_sampler(registry, model, tmp_path):
    import mudata as md

    import scdiffx_grn.cli as cli

    m, _ = model
    runner = CliRunner()
    env = {"SCDX_PROGRESS": "0", "SCDX_THREADS": "1"}
    res = runner.invoke(cli.app, ["generate", "--help"], env=env)
    assert "euler" in res.output and "heun" in res.output and "counting-ddim" not in res.output
    register_sampler("counting-ddim", CountingDDIM)
    try:
        cli = importlib.reload(cli)  # the --sampler choices are the registry's names when the CLI is built
        res = runner.invoke(cli.app, ["generate", "--help"], env=env)
        assert res.exit_code == 0 and "counting-ddim" in " ".join(res.output.split())
        m.save(tmp_path / "model")
        out = tmp_path / "gen.h5mu"
        res = runner.invoke(cli.app, ["generate", "-m", str(tmp_path / "model"), "-o", str(out), "-n", "4",
                                      "--sampler", "counting-ddim", "--n-steps", "2", "--device", "cpu"], env=env)
        assert res.exit_code == 0, res.output
        assert CountingDDIM.calls == 2 and md.read_h5mu(out).uns["generation"]["sampler"] == "counting-ddim"
    finally:
        registry._REGISTRY.pop("counting-ddim", None)
        importlib.reload(cli)
