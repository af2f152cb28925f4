"""Control-calibrated screens (issue 25): a planted target is recovered, a null edit calls nothing,
every call clears the effect floor, and the statistics equal a by-hand computation from the
controls run through ``tl.perturb``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from conftest import LinearTensorAPI  # noqa: E402
from scdiffx_grn._errors import OptionError, UnknownFeatureError  # noqa: E402
from scdiffx_grn.perturb import Perturbation, perturb, prepare_inputs, screen  # noqa: E402
from scdiffx_grn.perturb._controls import choose_controls, log2_effect, panel_test  # noqa: E402

TYPES = ("A", "B", "C")
N_GENES, N_PEAKS, LATENT = 40, 120, 8
PEAK0 = "p0"


def make_data(n_cells: int = 150, seed: int = 0):
    """Paired counts with N_GENES genes / N_PEAKS peaks; gene g11 is expressed by no cell."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    ct = np.array([TYPES[i % 3] for i in range(n_cells)])
    mu = rng.gamma(2.0, 3.0, size=N_GENES)[None, :] * np.ones((n_cells, 1))
    mu[:, 0] = np.where(ct == "A", 40.0, 20.0)
    rna = rng.poisson(mu).astype(np.float32)
    rna[:, 11] = 0
    atac = (rng.random((n_cells, N_PEAKS)) < 0.3).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=[f"c{i}" for i in range(n_cells)])
    r = ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    a = ad.AnnData(sp.csr_matrix(atac), obs=obs.copy(), var=pd.DataFrame(index=[f"p{i}" for i in range(N_PEAKS)]))
    r.layers["counts"] = r.X.copy()
    a.layers["counts"] = a.X.copy()
    m = md.MuData({"rna": r, "atac": a})
    m.obs["cell_type"] = obs["cell_type"]
    return m


class WideStandIn(LinearTensorAPI):
    """Deterministic linear stand-in (the TranslationModel tensor API) with a planted effect:
    gene g0 feeds latent dim 0, which opens peak p0 (weight 3); every other gene feeds the latent
    with small random weights, so knocking it out is a null edit like the controls'."""

    def __init__(self, seed: int = 0):
        from types import SimpleNamespace

        g = torch.Generator().manual_seed(seed)
        self.rna_var_names = [f"g{i}" for i in range(N_GENES)]
        self.atac_var_names = [f"p{i}" for i in range(N_PEAKS)]
        self.Wr = 0.1 * torch.randn(N_GENES, LATENT, generator=g)
        self.Wa = 0.1 * torch.randn(N_PEAKS, LATENT, generator=g)
        self.Dr = 0.1 * torch.randn(LATENT, N_GENES, generator=g)
        self.Da = 0.1 * torch.randn(LATENT, N_PEAKS, generator=g)
        self.Wr[0, 0], self.Da[0, 0] = 1.0, 3.0
        self.device = torch.device("cpu")
        self.setup = {"layers": {"rna": "counts", "atac": "counts"}}
        self.config = SimpleNamespace(latent_dim=LATENT, token_dim=1, label_keys=[])

    def translate_latent(self, z_src, direction, cond, noise, **kw):
        return z_src + 0.3 * noise


def test_wide_standin_implements_the_tensor_api():
    from scdiffx_grn.model import TranslationModel

    assert isinstance(WideStandIn(), TranslationModel)


@pytest.fixture(scope="module")
def mdata():
    return make_data()


@pytest.fixture(scope="module")
def model():
    return WideStandIn()


@pytest.fixture(scope="module")
def result(model, mdata):
    # g0 drives peak p0 (planted); g5 is like any other gene (a null target); g11 is never expressed
    return screen(model, mdata, ["g0", "g5", "g11"], show_progress=False)


def test_planted_target_recovered_null_calls_nothing(result, model, mdata):
    s = result
    g0 = s[s.perturbation == "g0"]
    assert (g0["n_sig"] > 0).all()
    assert all(PEAK0 in row.split(";") for row in g0["top_down"])  # peak 0 falls in every type
    for t in ("g5", "g11"):
        assert (s.loc[s.perturbation == t, "n_sig"] == 0).all(), t
    # the old default (t-test over cells, no effect floor) flags the null target g5 in every type
    assert (s.loc[s.perturbation == "g5", "n_sig_t"] > 0).all()
    # target level: g0 moves cells more than its controls, the others do not
    assert s.loc[s.perturbation == "g0", "moves_state"].all()
    assert not s.loc[s.perturbation != "g0", "moves_state"].any()
    assert (s.loc[s.perturbation == "g11", "p_state_vs_controls"] == 1.0).all()  # moves no cell
    # each control tested against the others: under the complete null BH keeps the chance of any
    # call in a control's family of features at or below alpha (0.05)
    ctrl = result.attrs["controls"]
    assert len(ctrl) == 60 and (ctrl["n_sig"] > 0).mean() <= 2 * 0.05
    assert set(panel_test(s)["n_targets"]) == {3}


@pytest.fixture(scope="module")
def screen_dir(model, mdata, tmp_path_factory):
    d = tmp_path_factory.mktemp("scr")
    summ = screen(model, mdata, ["g0", "g5", "g11"], show_progress=False, min_effect=0.5, out_dir=d)
    return d, summ


def test_every_call_clears_floor_and_fdr(result, screen_dir):
    from scdiffx_grn.perturb import load_screen_effects

    d, s = screen_dir
    assert 0 < s["n_sig"].sum() < result["n_sig"].sum()  # a higher floor calls less
    e = load_screen_effects(d)
    for col in ("log2fc", "z_vs_controls", "p_vs_controls", "fdr_vs_controls", "significant", "pval", "fdr"):
        assert col in e
    sig = e[e["significant"]]
    assert len(sig) and (sig["log2fc"].abs() >= 0.5).all() and (sig["fdr_vs_controls"] <= 0.05).all()
    assert len(e[(e["fdr"] <= 0.05) & (e["log2fc"].abs() < 0.5)])  # what the t-test alone would call


def test_statistics_equal_by_hand(result, screen_dir, model, mdata):
    """z, p and FDR of one target x type from the controls' effects computed with tl.perturb."""
    from scipy.stats import false_discovery_control

    ctrl = result.attrs["controls"]
    g = "B"
    names = ctrl.loc[ctrl.cell_type == g, "perturbation"].tolist()
    assert len(names) == 20
    genes = [n.split(":")[1].split("@")[0] for n in names]
    assert not {"g0", "g5", "g11"} & set(genes)  # targets are not their own controls
    perts = [Perturbation([x], kind="knockout", cells=[g], name=x) for x in genes] + \
        [Perturbation(["g0"], kind="knockout", name="g0")]
    res = perturb(model, mdata, perts, copy=True, controls=genes).uns["perturbation"]
    eff = res["effects"]
    eff = eff[eff.cell_type == g]
    L = {p: log2_effect(d["ctrl_mean"], d["pert_mean"], "atac") for p, d in eff.groupby("perturbation")}
    C = np.stack([L[x] for x in genes])
    x = L["g0"]
    n = len(genes)
    sd = C.std(0, ddof=1)
    s0 = np.median(sd)
    z = (x - C.mean(0)) / np.sqrt(sd ** 2 + s0 ** 2)
    null = []
    for i in range(n):
        o = np.delete(C, i, axis=0)
        null.append((C[i] - o.mean(0)) / np.sqrt(o.std(0, ddof=1) ** 2 + s0 ** 2))
    null = np.abs(np.concatenate(null))
    p = (1 + (null[None, :] >= np.abs(z)[:, None]).sum(1)) / (1 + null.size)
    q = false_discovery_control(p)

    from scdiffx_grn.perturb import load_screen_effects

    got = load_screen_effects(screen_dir[0], "g0")
    got = got[got.cell_type == g].set_index("feature").loc[eff.loc[eff.perturbation == "g0", "feature"]]
    tol = 1e3 * np.finfo(np.float32).eps  # the per-cell differences are float32
    np.testing.assert_allclose(got["log2fc"], x, atol=tol, rtol=tol)
    np.testing.assert_allclose(got["z_vs_controls"], z, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got["p_vs_controls"], p, atol=2 / (1 + null.size))
    np.testing.assert_allclose(got["fdr_vs_controls"], q, atol=1e-2)
    # tl.perturb(controls=...) tests the same way
    mine = eff[eff.perturbation == "g0"]
    np.testing.assert_allclose(mine["z_vs_controls"], z, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mine["fdr_vs_controls"], q, atol=1e-2)
    assert mine["significant"].any() and (res["effects"].query("cell_type != @g")["n_controls"] == 0).all()
    with pytest.raises(OptionError, match="controls"):
        perturb(model, mdata, perts[:2], copy=True, controls=["g0"])


def test_controls_choice_deterministic_and_order_free(mdata, model):
    inputs = prepare_inputs(model, mdata, "rna")
    a = choose_controls(inputs, model.rna_var_names, ["g0"], n=4, seed=0)
    perm = np.random.default_rng(1).permutation(mdata.n_obs)
    inputs_p = prepare_inputs(model, mdata[perm].copy(), "rna")
    b = choose_controls(inputs_p, model.rna_var_names, ["g0"], n=4, seed=0)
    assert a == b and all(len(v) == 4 and "g0" not in v for v in a.values())
    c = choose_controls(inputs, model.rna_var_names, ["g0"], n=4, exclude=["g2", "G3"])
    assert not {"g2", "g3"} & {x for v in c.values() for x in v}


def test_controls_options(model, mdata):
    s = screen(model, mdata, ["g0"], controls=["g2", "g3", "g4", "g6"], show_progress=False)
    assert (s["n_controls"] == 4).all()
    none = screen(model, mdata, ["g0"], controls=0, show_progress=False)
    assert (none["n_sig"] == 0).all() and (none["n_sig_t"] > 0).all()
    with pytest.raises(OptionError, match="controls"):
        screen(model, mdata, ["g0"], controls=-1, show_progress=False)
    with pytest.raises(UnknownFeatureError, match="nope"):
        screen(model, mdata, ["g0"], controls=["nope", "g2"], show_progress=False)


def test_tf_motif_screen_controls_are_random_peak_sets(model, mdata):
    tf_peaks = pd.DataFrame({"tf": ["TF1"] * 5 + ["TF2"] * 5, "peak": [f"p{i}" for i in (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)]})
    s = screen(model, mdata, ["TF1", "TF2"], kind="close", modality="tf", tf_peaks=tf_peaks, controls=8,
               show_progress=False)
    assert (s["n_controls"] == 8).all() and s["p_state_vs_controls"].notna().all()
    ctrl = s.attrs["controls"]
    assert len(ctrl) == 8 * 3 and ctrl["perturbation"].str.startswith("control:set").all()


def test_sign_flip_test_exact():
    from scdiffx_grn.perturb import sign_flip_test

    assert sign_flip_test([1.0, 1.0, 1.0]) == 1 / 8  # only the observed signs reach the mean
    assert sign_flip_test([1.0, -1.0]) == 3 / 4
