"""Tests of the posterior-mean perturbation engine (issue 15): exact skipping, statistics over
cells, streaming screens with per-target progress and a directory lock, fast GRN knockout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from scdiffx_grn._errors import CheckpointError, OptionError
from scdiffx_grn.perturb import (
    Edit,
    Perturbation,
    ScreenLock,
    cell_effects,
    changed_rows,
    load_screen_effects,
    perturb,
    prepare_inputs,
    run_mean,
    screen,
)

from _helpers import LATENT, N_GENES, N_PEAKS, LinearStandIn, make_synthetic
from conftest import float32_tol

N_TERMS = N_GENES + N_PEAKS + LATENT  # float32 sums behind one value of the stand-in (encode + decode)


@pytest.fixture(scope="module")
def mdata():
    return make_synthetic()


@pytest.fixture(scope="module")
def model():
    return LinearStandIn()


@pytest.fixture(scope="module")
def tiny():
    """A real (tiny, v-prediction) ScDiffusionX and its data."""
    model_mod = pytest.importorskip("scdiffx_grn.model")
    from scdiffx_grn import settings

    m = make_synthetic(n_cells=120, strength=2.0, seed=3)
    model_mod.ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    mdl = model_mod.ScDiffusionX(m, latent_dim=8, token_dim=4, width=32, n_heads=2, n_layers=1,
                                 rna_hidden=(32,), atac_hidden=(32,))
    old, settings.progress = settings.progress, False
    try:
        mdl.train(ae_epochs=10, diffusion_steps=60, batch_size=64, seed=0, device="cpu")
    finally:
        settings.progress = old
    assert mdl.config.prediction != "epsilon"  # the mean readout is one denoiser call
    return mdl, m


# --------------------------------------------------------------------------- exactness
def test_changed_rows_exact(mdata, model):
    inputs = prepare_inputs(model, mdata, "rna", centroids=False)
    X = inputs.X
    dense = X.toarray()
    for kind, factor in (("knockout", None), ("knockdown", 0.5), ("overexpress", 5.0)):
        e = Edit(name="g3", idx=np.array([3]), kind=kind, factor=factor)
        rows = changed_rows(X, e)
        ref = np.flatnonzero(np.any(e.apply(dense) != dense, axis=1))
        np.testing.assert_array_equal(rows, ref)
    assert len(changed_rows(X, Edit(name="n", idx=np.array([3]), kind="none"))) == 0
    mask = np.zeros(X.shape[0], bool)
    mask[:10] = True
    assert set(changed_rows(X, Edit(name="g3", idx=np.array([3]), kind="knockout"), mask)) <= set(range(10))


@pytest.mark.parametrize("which", ["standin", "tiny"])
def test_null_edit_exactly_zero(which, model, mdata, tiny):
    mdl, m = (model, mdata) if which == "standin" else tiny
    res = perturb(mdl, m, [Perturbation(["g0"], kind="none", name="null"),
                           Perturbation(["g5"], kind="knockout", cells="B", name="ko")], copy=True).uns["perturbation"]
    eff = res["effects"]
    null = eff[eff.perturbation == "null"]
    assert len(null) == 3 * N_PEAKS
    assert (null["effect"] == 0).all() and (null["pval"] == 1).all() and (null["n_changed"] == 0).all()
    st = res["state"].set_index("perturbation").loc["null"]
    assert (st["latent_shift"] == 0).all() and (st["frac_type_changed"] == 0).all()
    assert (eff[eff.perturbation == "ko"].cell_type == "B").all()


def test_skipping_is_exact_real_model(tiny):
    """Skipped cells: a full re-translation gives them 0 difference; the others equal the unskipped engine."""
    mdl, m = tiny
    for src, edit in (("rna", Edit(name="g0", idx=np.array([0]), kind="knockout")),
                      ("atac", Edit(name="p0", idx=np.array([0]), kind="close"))):
        inputs = prepare_inputs(mdl, m, src)
        for K in (1, 3):
            d_skip, changed = cell_effects(mdl, inputs, edit, n_noise=K, seed=2, batch_rows=40)
            d_full, all_rows = cell_effects(mdl, inputs, edit, n_noise=K, seed=2, batch_rows=40, skip_unchanged=False)
            assert all_rows.all() and 0 < changed.sum() < len(changed)
            assert (d_skip[~changed] == 0).all()
            np.testing.assert_allclose(d_full[~changed], 0.0, atol=2e-6)
            np.testing.assert_allclose(d_skip[changed], d_full[changed], atol=2e-6)
            assert np.abs(d_skip[changed]).max() > 1e-4
            a = run_mean(mdl, inputs, [edit], n_noise=K, seed=2)
            b = run_mean(mdl, inputs, [edit], n_noise=K, seed=2, skip_unchanged=False, batch_rows=17)
            np.testing.assert_allclose(a.diff_sum, b.diff_sum, atol=1e-5)
            np.testing.assert_allclose(a.zdiff_sum, b.zdiff_sum, atol=1e-5)
            np.testing.assert_array_equal(a.n_cells, b.n_cells)


def test_mean_engine_matches_translate(tiny):
    """The control arm is model.translate's posterior mean: a cell's edited arm with an edit of
    nothing re-translated alone equals translate(mdata) of that cell (noise keyed by obs name)."""
    mdl, m = tiny
    inputs = prepare_inputs(mdl, m, "atac", centroids=False)
    ref = mdl.translate(m, "atac->rna", readout="mean", n_noise=2, seed=5)
    # knock out nothing but force re-translation: d must be ~0, i.e. edited == control == translate
    d, _ = cell_effects(mdl, inputs, Edit(name="none", idx=np.array([], np.int64), kind="none"), n_noise=2, seed=5,
                        skip_unchanged=False, batch_rows=7)
    np.testing.assert_allclose(d, 0.0, atol=2e-6)
    # a cell's effect does not depend on its row: reversed cell order, same per-cell differences
    e = Edit(name="p1", idx=np.array([1]), kind="close")
    d1, _ = cell_effects(mdl, inputs, e, n_noise=2, seed=5)
    rev = m[::-1].copy()
    d2, _ = cell_effects(mdl, prepare_inputs(mdl, rev, "atac", centroids=False), e, n_noise=2, seed=5)
    np.testing.assert_allclose(d1, d2[::-1], atol=2e-6)
    assert ref.n_obs == m.n_obs


def test_statistics_over_cells(model, mdata):
    """effect / se / t / p / FDR of the posterior-mean engine are the one-sample t-test over cells."""
    from scipy import stats

    from scdiffx_grn.perturb import bh_fdr

    inputs = prepare_inputs(model, mdata, "atac", centroids=False)
    e = Edit(name="chr1-0-50", idx=np.array([0]), kind="close")
    d, changed = cell_effects(model, inputs, e, n_noise=2)
    res = perturb(model, mdata, Perturbation(["chr1-0-50"], kind="close", modality="atac"), n_noise=2,
                  copy=True).uns["perturbation"]
    eff = res["effects"]
    labels = np.asarray(inputs.group_names)[inputs.groups]
    n_tested = 0
    for g in ("A", "B", "C"):
        sub = eff[eff.cell_type == g].set_index("feature")
        dg = d[labels == g].astype(np.float64)
        if not dg.any():  # no cell of the type had the peak open: exactly zero, not tested
            assert (sub["effect"] == 0).all() and (sub["stat"] == 0).all() and (sub["pval"] == 1).all()
            continue
        n_tested += 1
        t = stats.ttest_1samp(dg, 0.0, axis=0)
        np.testing.assert_allclose(sub["effect"].to_numpy(), dg.mean(0), atol=1e-6)
        np.testing.assert_allclose(sub["se"].to_numpy(), dg.std(0, ddof=1) / np.sqrt(len(dg)), rtol=1e-4)
        np.testing.assert_allclose(sub["stat"].to_numpy(), t.statistic, rtol=1e-4)
        np.testing.assert_allclose(sub["pval"].to_numpy(), t.pvalue, rtol=1e-3, atol=1e-12)
        np.testing.assert_allclose(sub["fdr"].to_numpy(), bh_fdr(sub["pval"].to_numpy()))
        assert (sub["n_cells"] == len(dg)).all() and (sub["n_changed"] == changed[labels == g].sum()).all()
    assert n_tested >= 2
    a = eff[eff.cell_type == "A"].set_index("feature")
    assert a.loc["g0", "effect"] < -0.5 and a.loc["g0", "fdr"] < 1e-3


def test_batching_and_streaming_invariance(model, mdata):
    perts = [Perturbation([f"g{i}"], kind="knockout") for i in range(6)]
    a = perturb(model, mdata, perts, batch_rows=1024, copy=True).uns["perturbation"]
    b = perturb(model, mdata, perts, batch_rows=5, n_noise=1, copy=True).uns["perturbation"]
    for col, table in (("effect", "effects"), ("latent_shift", "state")):  # only the order of sums differs
        ref = b[table][col].to_numpy()
        np.testing.assert_allclose(a[table][col], ref, rtol=0, atol=float32_tol(ref, N_TERMS))
    inputs = prepare_inputs(model, mdata, "rna")
    edits = [Edit(name=f"g{i}", idx=np.array([i]), kind="knockout") for i in range(6)]
    r1 = run_mean(model, inputs, edits, max_targets_in_flight=1, batch_rows=9)
    r2 = run_mean(model, inputs, edits, max_targets_in_flight=64)
    # a sum over the cells of per-cell float32 differences
    np.testing.assert_allclose(r1.diff_sum, r2.diff_sum, rtol=0,
                               atol=float32_tol(r2.diff_sum, N_TERMS + inputs.X.shape[0]))
    np.testing.assert_array_equal(r1.new_type, r2.new_type)
    # the sampled engine stays available, with its own statistics
    s = perturb(model, mdata, perts[:2], readout="samples", copy=True).uns["perturbation"]
    assert (s["effects"]["n_samples"] == 5).all() and "n_changed" not in s["effects"]
    with pytest.raises(OptionError, match="wilcoxon"):
        perturb(model, mdata, perts[:1], test="wilcoxon", copy=True)
    with pytest.raises(OptionError, match="readout"):
        perturb(model, mdata, perts[:1], readout="nope", copy=True)
    with pytest.raises(OptionError, match="conflicts"):
        perturb(model, mdata, perts[:1], translate_kwargs={"readout": "samples"}, copy=True)


# --------------------------------------------------------------------------- screens
def test_screen_all_genes_progress_per_target(model, mdata, monkeypatch, tmp_path):
    import scdiffx_grn.perturb._screen as scr

    updates = []
    real = scr.progress

    def spy(*a, **kw):
        bar = real(*a, **kw)
        orig = bar.update

        def upd(k=1):
            updates.append(k)
            return orig(k)

        bar.update = upd
        return bar

    monkeypatch.setattr(scr, "progress", spy)
    summ = screen(model, mdata, "all_genes", out_dir=tmp_path / "s", show_progress=False)
    assert sum(updates) == N_GENES and len(updates) == 1  # one chunk of every gene
    assert len(summ) == N_GENES * 3 and not (tmp_path / "s" / "screen.lock").exists()
    # same numbers as perturbing each gene with tl.perturb
    ref = perturb(model, mdata, [Perturbation([g], kind="knockout") for g in ("g0", "g1")],
                  copy=True).uns["perturbation"]
    got = scr.load_screen_effects(tmp_path / "s", ["g0", "g1"])
    cols = ["perturbation", "cell_type", "feature"]
    pd.testing.assert_frame_equal(got.sort_values(cols).reset_index(drop=True)[ref["effects"].columns],
                                  ref["effects"].sort_values(cols).reset_index(drop=True), check_exact=False,
                                  rtol=N_TERMS * float(np.finfo(np.float32).eps),
                                  atol=float32_tol(ref["effects"]["effect"], N_TERMS),
                                  check_dtype=False, check_categorical=False)
    peaks = screen(model, mdata, "all_peaks", kind="close", modality="atac", show_progress=False)
    assert peaks["perturbation"].nunique() == N_PEAKS


def test_screen_lock_held_and_stale(model, mdata, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ScreenLock.NAME).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                       "started": "then", "argv": "other screen"}))
        with pytest.raises(CheckpointError, match=rf"in use by another run \(pid {holder.pid}.*other screen"):
            screen(model, mdata, ["g0"], out_dir=out, show_progress=False)
        assert (out / ScreenLock.NAME).exists()  # the other run's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over
    summ = screen(model, mdata, ["g0"], out_dir=out, show_progress=False)
    assert len(summ) == 3 and not (out / ScreenLock.NAME).exists()


_LOCK_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from _helpers import LinearStandIn, make_synthetic
from scdiffx_grn.perturb import screen
screen(LinearStandIn(delay={delay}), make_synthetic(), {targets!r}, out_dir={out!r}, batch_rows=8,
       show_progress=False)
"""


def test_two_concurrent_screens_refused(model, mdata, tmp_path):
    """A second screen on a directory in use is refused, naming the first; neither loses targets."""
    out = tmp_path / "two"
    targets = [f"g{i}" for i in range(N_GENES)]
    script = tmp_path / "run.py"
    script.write_text(_LOCK_SCRIPT.format(tests=str(Path(__file__).parent), delay=0.03, targets=targets,
                                          out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "SCDX_PROGRESS": "0"})
    try:
        t0 = time.time()
        while not (out / ScreenLock.NAME).exists() and time.time() - t0 < 60 and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the first screen finished before the second started"
        with pytest.raises(CheckpointError, match=f"pid {proc.pid}"):
            screen(model, mdata, targets, out_dir=out, show_progress=False)
    finally:
        assert proc.wait(timeout=120) == 0
    done = json.loads((out / "done.json").read_text())["done"]
    assert sorted(done) == sorted(targets)
    summ = screen(model, mdata, targets, out_dir=out, batch_rows=8, show_progress=False)  # resume: nothing left
    assert len(summ) == 3 * N_GENES


def test_screen_samples_readout_and_config(model, mdata, tmp_path):
    out = tmp_path / "smp"
    a = screen(model, mdata, ["g0", "g1", "g2"], out_dir=out, readout="samples", n_samples=2, batch_targets=2,
               show_progress=False)
    assert len(a) == 9
    with pytest.raises(CheckpointError, match="readout"):
        screen(model, mdata, ["g0", "g1", "g2"], out_dir=out, n_samples=2, show_progress=False)


# --------------------------------------------------------------------------- GRN knockout / IG
def test_grn_knockout_skip_closed_exact(tiny):
    from scdiffx_grn._errors import ScdxError
    from scdiffx_grn.grn._scores import close_peaks_effect, ig_scores, model_inputs

    mdl, m = tiny
    _, Xa = model_inputs(mdl, m)
    names = np.asarray(m.obs_names)
    groups = [np.array([0]), np.array([1]), np.array([2, 3]), np.array([5])]
    kw = {"cell_names": names, "n_samples": 2, "batch_size": 50}
    fast = close_peaks_effect(mdl, Xa, None, groups, **kw)
    full = close_peaks_effect(mdl, Xa, None, groups, skip_closed=False, **kw)
    np.testing.assert_allclose(fast, full, atol=2e-6)
    assert np.abs(fast).max() > 1e-4
    smp = close_peaks_effect(mdl, Xa, None, groups, readout="samples", n_steps=3, **kw)
    assert np.isfinite(smp).all() and smp.shape == fast.shape
    # noise keyed by obs name: a subset of cells gives those cells the same translation
    sub = np.arange(0, 60)
    a = close_peaks_effect(mdl, Xa[sub], None, groups, cell_names=names[sub], batch_size=7)
    b = close_peaks_effect(mdl, Xa[sub], None, groups, cell_names=names[sub], batch_size=60)
    np.testing.assert_allclose(a, b, atol=2e-6)
    with pytest.raises(ScdxError, match="readout"):
        close_peaks_effect(mdl, Xa, None, groups, readout="nope")
    pairs = pd.DataFrame({"peak": [mdl.atac_var_names[0], mdl.atac_var_names[1]], "gene": ["g0", "g1"]})
    w = ig_scores(mdl, Xa[:20], None, pairs, n_steps=3, batch_size=8, cell_names=names[:20])
    assert np.isfinite(w).all()


# --------------------------------------------------------------------------- one engine behind every path
def _reference_diffs(model, mdata, edited, *, readout: str, K: int, seed: int = 0):
    """Per-cell paired differences ``(S, cells, F)`` of closing peak ``edited``, by hand: translate the edited
    and the unedited ATAC of every cell with ``model.cell_noise(obs name, seed, k)``, read out log1p(1e4 rho)."""
    X = mdata.mod["atac"].layers["counts"].toarray()
    Xe = X.copy()
    Xe[:, edited] = 0.0
    names = np.asarray(mdata.obs_names)
    with torch.no_grad():
        zs = [[model.translate_latent(model.encode("atac", model.atac_tensor(x)), "atac->rna", None,
                                      model.cell_noise(names, seed, k), readout=readout) for k in range(K)]
              for x in (X, Xe)]
        read = lambda z: torch.log1p(1e4 * model.decode_rna(z)).double().numpy()  # noqa: E731
        if readout == "mean":  # K noises averaged in latent space, decoded once
            return (read(torch.stack(zs[1]).mean(0)) - read(torch.stack(zs[0]).mean(0)))[None]
        return np.stack([read(e) - read(c) for c, e in zip(*zs)])


def test_every_engine_path_gives_the_reference_differences(model, mdata, tmp_path):
    """tl.perturb (both readouts), screen, peak_knockout_effect, the GRN knockout scores and cell_effects
    all give, for a planted edit (closing peak 0, which drives gene g0), the per-cell differences of a
    translation done by hand with the model's cell_noise."""
    from scdiffx_grn.grn._scores import close_peaks_effect, knockout_scores, model_inputs
    from scdiffx_grn.perturb import peak_knockout_effect

    peak, K = model.atac_var_names[0], 3
    types = np.asarray(mdata.obs["cell_type"])
    genes = np.asarray(model.rna_var_names)
    ref = {r: _reference_diffs(model, mdata, 0, readout=r, K=K) for r in ("mean", "samples")}
    assert ref["mean"][0, types == "A", 0].mean() < -0.5  # the planted dependency: closing p0 lowers g0
    assert not np.allclose(ref["samples"].mean(0), ref["mean"][0], atol=1e-3)  # the readouts differ
    tol = float32_tol(ref["mean"], N_TERMS + mdata.n_obs)  # float32 translations summed over cells

    def group_means(d):  # (S, cells, F) -> (types, S, F)
        return np.stack([d[:, types == t].mean(1) for t in ("A", "B", "C")])

    def check(effects, readout, *, col="effect", gcol="cell_type", feature="feature"):
        want = group_means(ref[readout]).mean(1)  # mean over cells, then samples
        got = effects.pivot(index=gcol, columns=feature, values=col).loc[["A", "B", "C"], genes].to_numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)

    pert = Perturbation([peak], kind="close", modality="atac", n_samples=K)
    for readout in ("mean", "samples"):
        eff = perturb(model, mdata, pert, readout=readout, n_noise=K, copy=True).uns["perturbation"]["effects"]
        check(eff, readout)
        if readout == "samples":  # statistics over samples: se of the per-sample cell-type means
            se = group_means(ref["samples"]).std(1, ddof=1) / np.sqrt(K)
            got = eff.pivot(index="cell_type", columns="feature", values="se").loc[["A", "B", "C"], genes]
            np.testing.assert_allclose(got.to_numpy(), se, rtol=1e-3, atol=tol)
        pke = peak_knockout_effect(model, mdata, [peak], readout=readout, n_noise=K, n_samples=K, groupby="cell_type")
        check(pke, readout, gcol="cell_type", feature="gene")
        screen(model, mdata, [peak], kind="close", modality="atac", readout=readout, n_noise=K, n_samples=K,
               controls=0, out_dir=tmp_path / readout, show_progress=False)
        check(load_screen_effects(tmp_path / readout, peak), readout)
        # GRN knockout: the mean over every cell (and sample), the score its negative
        _, Xa = model_inputs(model, mdata)
        kw = dict(readout=readout, n_samples=K, cell_names=np.asarray(mdata.obs_names), n_steps=3)
        eff = close_peaks_effect(model, Xa, None, [np.array([0])], **kw)
        np.testing.assert_allclose(eff[0], ref[readout].mean((0, 1)), rtol=0, atol=tol)
        pairs = pd.DataFrame({"peak": [peak, peak], "gene": ["g0", "g3"]})
        np.testing.assert_allclose(knockout_scores(model, Xa, None, pairs, **kw),
                                   -ref[readout].mean((0, 1))[[0, 3]], rtol=0, atol=tol)
    # the engine's own per-cell differences: exactly 0 where the peak was closed already
    inputs = prepare_inputs(model, mdata, "atac", centroids=False)
    d, changed = cell_effects(model, inputs, Edit(name=peak, idx=np.array([0]), kind="close"), n_noise=K)
    np.testing.assert_array_equal(changed, mdata.mod["atac"].layers["counts"].toarray()[:, 0] > 0)
    assert (d[~changed] == 0).all()
    np.testing.assert_allclose(d, ref["mean"][0], rtol=0, atol=float32_tol(ref["mean"], N_TERMS))
    # control readouts kept from the control pass (default) or decoded again per call: the same differences
    for cache_mb in (0.0, 1e-9):
        d2, changed2 = cell_effects(model, inputs, Edit(name=peak, idx=np.array([0]), kind="close"), n_noise=K,
                                    ctrl_cache_mb=cache_mb)
        np.testing.assert_array_equal(changed2, changed)
        np.testing.assert_allclose(d2, d, rtol=0, atol=float32_tol(ref["mean"], N_TERMS))
