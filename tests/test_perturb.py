"""Tests of scdiffx_grn.perturb: specs, paired-seed engine, effects/FDR, resumable screens, plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
import mudata as md  # noqa: E402

from scdiffx_grn import UnknownFeatureError  # noqa: E402
from scdiffx_grn._errors import CheckpointError, InputDataError, OptionError  # noqa: E402
from scdiffx_grn.perturb import (  # noqa: E402
    Perturbation,
    bh_fdr,
    load_screen,
    load_screen_effects,
    paired_stats,
    peak_knockout_effect,
    perturb,
    perturbation_df,
    read_screen,
    screen,
    screen_heatmap,
    volcano,
)
from scdiffx_grn.perturb import ControlOptions, EngineOptions, OutputOptions  # noqa: E402

from _helpers import LATENT, N_GENES, N_PEAKS, LinearStandIn, make_synthetic  # noqa: E402
from conftest import float32_tol  # noqa: E402


# --------------------------------------------------------------------------- fixtures
def test_standin_implements_the_tensor_api():
    from scdiffx_grn.model import TranslationModel

    assert isinstance(LinearStandIn(), TranslationModel)


@pytest.fixture(scope="module")
def mdata():
    return make_synthetic()


@pytest.fixture(scope="module")
def model():
    return LinearStandIn()


# --------------------------------------------------------------------------- spec
def test_spec_validation():
    p = Perturbation(["g0"], kind="knockdown")
    assert p.factor == 0.5 and p.readout == "atac" and p.name == "g0"
    assert Perturbation("NR3C1", kind="open", modality="tf").direction == "atac->rna"
    with pytest.raises(OptionError, match="kind must be one of"):
        Perturbation(["g0"], kind="delete")
    with pytest.raises(OptionError, match="does not apply to modality 'atac'"):
        Perturbation(["p"], kind="knockout", modality="atac")
    with pytest.raises(OptionError, match="knockdown factor"):
        Perturbation(["g0"], kind="knockdown", factor=1.5)
    with pytest.raises(OptionError, match="over-expression fold"):
        Perturbation(["g0"], kind="overexpress", factor=0.5)
    with pytest.raises(OptionError, match="n_samples"):
        Perturbation(["g0"], n_samples=0)
    with pytest.raises(InputDataError, match="non-empty"):
        Perturbation([])
    with pytest.raises(InputDataError, match="duplicated"):
        Perturbation(["g0", "g0"])


def test_read_screen_yaml_and_csv(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text(textwrap.dedent("""
        defaults: {n_samples: 3}
        perturbations:
          - {targets: [g0, g1], kind: knockdown, factor: 0.2, cells: A}
          - {targets: NR3C1, kind: open, modality: tf, name: GR_up}
          - g5
    """))
    ps = read_screen(y)
    assert [p.name for p in ps] == ["g0+g1", "GR_up", "g5"]
    assert ps[0].factor == 0.2 and ps[0].cells == ["A"] and all(p.n_samples == 3 for p in ps)
    c = tmp_path / "s.csv"
    c.write_text("targets,kind,modality,factor,cells,n_samples\n"
                 "g0;g1,knockout,rna,,A;B,4\n"
                 "chr1-0-50,close,atac,,,\n"
                 "g2,overexpress,rna,10,,\n")
    ps = read_screen(c)
    assert ps[0].targets == ["g0", "g1"] and ps[0].cells == ["A", "B"] and ps[0].n_samples == 4
    assert ps[1].modality == "atac" and ps[1].kind == "close"
    assert ps[2].factor == 10.0
    bad = tmp_path / "bad.csv"
    bad.write_text("targets,kind,colour\ng0,knockout,red\n")
    with pytest.raises(OptionError, match="entry 1 has unknown fields"):
        read_screen(bad)
    bad.write_text("targets,kind\ng0,knockout\ng1,close\n")
    with pytest.raises(OptionError, match="entry 2"):
        read_screen(bad)


def test_unknown_targets_named(model, mdata):
    with pytest.raises(UnknownFeatureError, match="'FOO'.*'BAR'"):
        perturb(model, mdata, Perturbation(["g0", "FOO", "BAR"], n_samples=2), copy=True)
    res = perturb(model, mdata, Perturbation(["g0", "FOO"], n_samples=2), on_unknown="report",
                  copy=True).uns["perturbation"]
    rep = res["report"].set_index("target")
    assert rep.loc["FOO", "status"] == "unknown" and rep.loc["g0", "status"] == "ok"
    tfp = pd.DataFrame({"tf": ["TF1", "TF2"], "peak": ["chr1-0-50", "chr9-1-2"]})
    with pytest.raises(UnknownFeatureError, match="TF2.*no motif peaks"):
        perturb(model, mdata, Perturbation(["TF1", "TF2", "TF3"], kind="close", modality="tf", n_samples=2),
                tf_peaks=tfp, copy=True)
    res = perturb(model, mdata, Perturbation(["TF1", "TF2", "TF3"], kind="close", modality="tf", n_samples=2),
                  tf_peaks=tfp, on_unknown="report", copy=True).uns["perturbation"]
    assert set(res["report"].query("status == 'unknown'").target) == {"TF2", "TF3"}
    assert len(res["effects"]) == 3 * N_GENES


# --------------------------------------------------------------------------- engine / effects
def test_null_perturbation_is_exactly_zero(model, mdata):
    res = perturb(model, mdata, Perturbation(["g0"], kind="none", n_samples=3), copy=True).uns["perturbation"]
    eff, st = res["effects"], res["state"]
    assert len(eff) == 3 * N_PEAKS
    assert (eff["effect"] == 0).all() and (eff["pval"] == 1).all() and (eff["fdr"] == 1).all()
    assert (st["latent_shift"] == 0).all() and (st["frac_type_changed"] == 0).all()


def test_planted_dependency_sign_standin(model, mdata):
    perturb(model, mdata, Perturbation(["chr1-0-50"], kind="close", modality="atac", n_samples=4),
            key_added="close_p0")
    df = perturbation_df(mdata, "close_p0", cell_type="A").set_index("feature")
    assert df.loc["g0", "effect"] < -0.5 and df.loc["g0", "fdr"] < 0.05
    assert df["effect"].idxmin() == "g0"  # others rise: compositional softmax
    # knocking out gene g1 lowers peak p1 (RNA -> ATAC readout)
    res = perturb(model, mdata, Perturbation(["g1"], kind="knockout", n_samples=4), copy=True).uns["perturbation"]
    b = perturbation_df(res, cell_type="B").set_index("feature")
    assert b.loc["chr1-100-150", "effect"] < 0 and b["effect"].idxmin() == "chr1-100-150"
    # over-expressing g1 raises it; opening a peak raises its gene
    res = perturb(model, mdata, Perturbation(["g1"], kind="overexpress", overexpress_mode="quantile", n_samples=3),
                  copy=True).uns["perturbation"]
    assert perturbation_df(res, cell_type="A").set_index("feature").loc["chr1-100-150", "effect"] > 0
    st = perturb(model, mdata, Perturbation(["chr1-0-50"], kind="close", modality="atac", cells="A", n_samples=3),
                 copy=True).uns["perturbation"]["state"]
    assert list(st["cell_type"]) == ["A"] and st["latent_shift"].iloc[0] > 0
    assert 0 <= st["frac_type_changed"].iloc[0] <= 1


def test_batching_invariance(model, mdata):
    perts = [Perturbation([f"chr1-{100 * i}-{100 * i + 50}"], kind="close", modality="atac", n_samples=3)
             for i in range(5)]
    a = perturb(model, mdata, perts, batch_size=7, batch_targets=1, copy=True).uns["perturbation"]
    b = perturb(model, mdata, perts, batch_size=64, batch_targets=8, copy=True).uns["perturbation"]
    # batches change only the order of float32 sums (encode, decode: N_GENES + N_PEAKS + LATENT terms)
    n_terms = N_GENES + N_PEAKS + LATENT
    for col, table in (("effect", "effects"), ("latent_shift", "state")):
        ref = b[table][col].to_numpy()
        np.testing.assert_allclose(a[table][col], ref, rtol=0, atol=float32_tol(ref, n_terms))
    c = perturb(model, mdata, perts, seed=1, copy=True).uns["perturbation"]
    assert not np.allclose(a["effects"]["effect"], c["effects"]["effect"])


def test_fdr_matches_scipy():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    for n in (1, 5, 200):
        p = np.concatenate([rng.uniform(size=n), rng.uniform(0, 1e-3, size=n // 3)])
        np.testing.assert_allclose(bh_fdr(p), false_discovery_control(p, method="bh"), rtol=1e-12)
    p = np.array([0.01, np.nan, 0.04, 0.5])
    q = bh_fdr(p)
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], false_discovery_control(p[[0, 2, 3]]))


def test_paired_stats_against_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1, size=(6, 20))
    d[:, 0] = 0.0
    mean, se, t, p = paired_stats(d)
    ref = stats.ttest_1samp(d[:, 1:], 0.0, axis=0)
    np.testing.assert_allclose(t[1:], ref.statistic)
    np.testing.assert_allclose(p[1:], ref.pvalue)
    assert p[0] == 1.0 and t[0] == 0.0
    _, _, _, pw = paired_stats(d, test="wilcoxon")
    np.testing.assert_allclose(pw[1:], stats.wilcoxon(d[:, 1:], axis=0).pvalue)


def test_peak_knockout_effect_for_grn(model, mdata):
    df = peak_knockout_effect(model, mdata, ["chr1-0-50", "chr1-100-150"], genes=["g0", "g1", "g2"], n_samples=2)
    assert list(df.columns) == ["peak", "gene", "group", "effect", "se"] and len(df) == 6  # groupby=None
    w = df.pivot(index="peak", columns="gene", values="effect")
    assert w.loc["chr1-0-50", "g0"] < 0 and w.loc["chr1-100-150", "g1"] < 0
    with pytest.raises(UnknownFeatureError, match="chrX"):
        peak_knockout_effect(model, mdata, ["chrX-1-2"])


def test_plots(model, mdata, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = perturb(model, mdata, Perturbation(["chr1-0-50"], kind="close", modality="atac", n_samples=3),
                  copy=True).uns["perturbation"]
    fig = volcano(res["effects"], cell_type="A", save=tmp_path / "v.png")
    assert (tmp_path / "v.png").exists() and fig.axes
    summ = pd.DataFrame({"perturbation": ["x", "x", "y"], "cell_type": ["A", "B", "A"], "n_sig": [1, 2, 3]})
    fig = screen_heatmap(summ, value="n_sig", save=tmp_path / "h.png")
    assert (tmp_path / "h.png").exists()
    with pytest.raises(InputDataError, match="several cell_type"):
        volcano(res["effects"])


# --------------------------------------------------------------------------- screens
_SCREEN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from _helpers import LinearStandIn, make_synthetic
from scdiffx_grn.perturb import screen
m = make_synthetic()
screen(LinearStandIn(delay={delay}), m, {targets!r}, kind="close", modality="atac", out_dir={out!r},
       batch_targets=1, n_samples=2, show_progress=False, chunk_targets=1)
"""


def _assert_frames_close(a, b, n_terms):
    """Frames equal up to float32 sums in another order: each float column within
    ``float32_tol`` of its own scale, every other column exactly."""
    pd.testing.assert_index_equal(a.columns, b.columns)
    for c in a.columns:
        if pd.api.types.is_float_dtype(b[c]):
            ref = b[c].to_numpy(np.float64)
            finite = ref[np.isfinite(ref)]
            atol = float32_tol(finite, n_terms) if finite.size else 0.0
            np.testing.assert_allclose(a[c].to_numpy(np.float64), ref, rtol=0, atol=atol, err_msg=c)
        else:
            pd.testing.assert_series_equal(a[c], b[c])


def _screen_targets():
    return [f"chr1-{100 * i}-{100 * i + 50}" for i in range(10)]


def test_screen_in_memory_and_unknown(model, mdata):
    summ = screen(model, mdata, _screen_targets()[:3] + ["chrZ-1-2"], kind="close", modality="atac",
                  n_samples=2, show_progress=False, on_unknown="report")
    assert len(summ) == 3 * 3
    assert summ.attrs["report"].query("status != 'ok'").target.tolist() == ["chrZ-1-2"]
    a = summ.query("perturbation == 'chr1-0-50' and cell_type == 'A'").iloc[0]
    # 12 readout genes x 13 control peaks cannot reach FDR 0.05 against the controls (p floor 1/157, BH
    # over 12 genes): the planted peak still has the largest effect of the type (planted truths called
    # against controls: tests/test_perturb_controls.py)
    in_a = summ.query("cell_type == 'A'")
    assert a["max_abs_log2fc"] == in_a["max_abs_log2fc"].max() and a["n_sig_t"] > 0


def test_screen_unknown_targets_raise_like_the_cli(model, mdata, tmp_path):
    """tl.screen(targets=["Foxp3x"]) returned an empty, column-less table with a log warning only."""
    out = tmp_path / "s"
    with pytest.raises(UnknownFeatureError, match=r"unknown gene target\(s\) 'g0x'.*on_unknown='report'"):
        screen(model, mdata, ["g0", "g0x"], out_dir=out, show_progress=False)
    assert not (out / "summary.parquet").exists() and not (out / "effects").exists()  # before any work
    # every target unknown: nothing to screen, whatever on_unknown says; the case hint names the model's spelling
    for on_unknown in ("raise", "report"):
        with pytest.raises(UnknownFeatureError, match=r"none of the 2 target\(s\) is known.*'G0' -> 'g0'.*nothing"):
            screen(model, mdata, ["G0", "Foxp3x"], on_unknown=on_unknown, show_progress=False)
    with pytest.raises(UnknownFeatureError, match="none of the 1 target"):
        screen(model, mdata, ["chrZ-1-2"], kind="close", modality="atac", on_unknown="report", show_progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 2}, r"alpha must be in \(0, 1\), got 2"),
    ({"alpha": 0}, r"alpha must be in \(0, 1\), got 0"),
    ({"n_top": -1}, "n_top must be an integer >= 0"),
    ({"min_effect": -0.5}, "min_effect must be >= 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_rows": -3}, "batch_rows must be an integer >= 1"),
])
def test_screen_option_ranges(model, mdata, tmp_path, kwargs, match):
    """screen(alpha=2) called every peak significant; out-of-range options raise before any work."""
    with pytest.raises(OptionError, match=match):
        screen(model, mdata, ["g0"], out_dir=tmp_path / "s", show_progress=False, **kwargs)
    assert not (tmp_path / "s").exists()


def test_summarise_effects_and_perturb_option_ranges(model, mdata):
    from scdiffx_grn.perturb import summarise_effects

    with pytest.raises(OptionError, match=r"alpha must be in \(0, 1\), got 1.5"):
        summarise_effects(pd.DataFrame(columns=["perturbation", "cell_type", "feature", "effect", "fdr"]), alpha=1.5)
    with pytest.raises(OptionError, match="batch_size must be an integer >= 1, got 0"):
        perturb(model, mdata, Perturbation(["g0"]), batch_size=0, copy=True)


def test_screen_resume_after_kill(tmp_path, mdata):
    out = tmp_path / "scr"
    script = tmp_path / "run.py"
    script.write_text(_SCREEN_SCRIPT.format(tests=str(Path(__file__).parent), delay=0.05,
                                            targets=_screen_targets(), out=str(out)))
    env = {**os.environ, "SCDX_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    done_file = out / "done.json"
    t0 = time.time()
    n_done = 0
    while time.time() - t0 < 60:
        if done_file.exists():
            try:
                n_done = len(json.loads(done_file.read_text())["done"])
            except ValueError:
                n_done = 0
            if n_done >= 3:
                break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = json.loads(done_file.read_text())["done"]
    assert 3 <= len(finished) < 10, f"interruption came too late/early: {len(finished)} done"
    stamps = {t: (out / "effects" / f"{s}.parquet").stat().st_mtime_ns for t, s in finished.items()}
    # resume in-process with the same settings
    model = LinearStandIn()
    summ = screen(model, mdata, _screen_targets(), kind="close", modality="atac", out_dir=out,
                  batch_targets=1, n_samples=2, show_progress=False, chunk_targets=1)
    for t, s in finished.items():  # no finished target recomputed
        assert (out / "effects" / f"{s}.parquet").stat().st_mtime_ns == stamps[t]
    assert len(json.loads(done_file.read_text())["done"]) == 10
    ref_dir = tmp_path / "ref"
    ref = screen(model, mdata, _screen_targets(), kind="close", modality="atac", out_dir=ref_dir,
                 batch_targets=3, n_samples=2, show_progress=False)
    # other target batches (and another process for the first targets): only the order of float32
    # sums differs (encode, decode; the PCA projection of the shift sums over the features again)
    n_terms = N_GENES + N_PEAKS + LATENT
    _assert_frames_close(summ.drop(columns=["pca_shift"]), ref.drop(columns=["pca_shift"]), n_terms)
    np.testing.assert_allclose(summ["pca_shift"], ref["pca_shift"], rtol=0,
                               atol=float32_tol(ref["pca_shift"], n_terms + N_GENES + N_PEAKS))
    e1, e2 = load_screen_effects(out), load_screen_effects(ref_dir)
    e1 = e1.sort_values(["perturbation", "cell_type", "feature"]).reset_index(drop=True)
    e2 = e2.sort_values(["perturbation", "cell_type", "feature"]).reset_index(drop=True)
    _assert_frames_close(e1, e2, n_terms)
    assert len(load_screen(out)) == 30
    with pytest.raises(CheckpointError, match="other settings"):
        screen(model, mdata, _screen_targets(), kind="close", modality="atac", out_dir=out, n_samples=3,
               show_progress=False)


def test_screen_resumes_from_every_interrupted_state(model, mdata, tmp_path):
    """Each state a kill can leave (lock only; lock + settings; + empty index and report; some targets
    finished with temporary files of interrupted atomic writes) is recognised as a screen folder and
    resumed to the result of an uninterrupted run, leaving no temporary file behind."""
    from scdiffx_grn.perturb._screen import is_screen_dir

    targets = _screen_targets()[:5]
    kw = dict(kind="close", modality="atac", show_progress=False)
    full = tmp_path / "full"
    ref = screen(model, mdata, targets, out_dir=full, **kw)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is no longer running: the lock of a killed run
    lock = json.dumps({"pid": gone.pid, "host": os.uname().nodename, "started": "then", "argv": "killed"})
    done = json.loads((full / "done.json").read_text())["done"]
    two = {t: done[t] for t in targets[:2]}
    base = {"screen.lock": lock}
    cfg = {**base, "config.json": (full / "config.json").read_text()}
    idx = {**cfg, "done.json": '{"done": {}}', "report.parquet": (full / "report.parquet").read_bytes()}
    part = {**idx, "done.json": json.dumps({"done": two}), ".done.json.k2j4x8a1.tmp": '{"do',
            f"effects/.{two[targets[1]]}.parquet.a8x2kq0z.tmp": b"PAR1 half",
            **{f"{d}/{stem}.parquet": (full / d / f"{stem}.parquet").read_bytes()
               for stem in two.values() for d in ("effects", "summary")}}
    for name, state in {"lock": base, "lock_config": cfg, "index": idx, "partial": part}.items():
        out = tmp_path / name
        for f, content in state.items():
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_bytes(content if isinstance(content, bytes) else content.encode())
        assert is_screen_dir(out), name
        summ = screen(model, mdata, targets, out_dir=out, **kw)
        pd.testing.assert_frame_equal(summ, ref, obj=name)
        assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")], name
        assert not (out / "screen.lock").exists()
    # a folder of the user's is not one
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"my": "settings"}')
    assert not is_screen_dir(tmp_path / "mine")
    (full / "notes.txt").write_text("mine")
    assert not is_screen_dir(full)


def test_screen_recomputes_a_damaged_result_file(model, mdata, tmp_path):
    """A truncated, garbled or missing per-target file of a finished target is recomputed on resume with a
    warning naming it (not a pyarrow traceback); the result equals the uninterrupted run's."""
    targets = _screen_targets()[:5]
    kw = dict(kind="close", modality="atac", show_progress=False, chunk_targets=1)  # one target per result file
    out = tmp_path / "scr"
    ref = screen(model, mdata, targets, out_dir=out, **kw)
    ref_eff = load_screen_effects(out)
    done = json.loads((out / "done.json").read_text())["done"]
    truncated = out / "effects" / f"{done[targets[0]]}.parquet"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (out / "summary" / f"{done[targets[1]]}.parquet").write_bytes(b"not a parquet file")
    (out / "summary" / f"{done[targets[2]]}.parquet").unlink()
    kept = out / "effects" / f"{done[targets[3]]}.parquet"
    stamp = kept.stat().st_mtime_ns
    with pytest.warns(UserWarning, match="3 finished target.*recomputed") as rec:
        again = screen(model, mdata, targets, out_dir=out, **kw)
    msg = str(rec[0].message)
    assert all(t in msg for t in targets[:3]) and targets[3] not in msg
    pd.testing.assert_frame_equal(again, ref)
    pd.testing.assert_frame_equal(load_screen_effects(out), ref_eff)
    assert kept.stat().st_mtime_ns == stamp  # intact targets are not recomputed
    # the readers name a damaged file and the way out
    done = json.loads((out / "done.json").read_text())["done"]  # recomputed targets went to a new chunk
    (out / "effects" / f"{done[targets[0]]}.parquet").write_bytes(b"PAR1")
    with pytest.raises(CheckpointError, match=r"effects of 'chr1-0-50'.*damaged.*rerun the screen"):
        load_screen_effects(out)
    (out / "config.json").write_text('{"kind": ')  # the settings cannot be compared: named, not a JSON traceback
    with pytest.raises(CheckpointError, match=r"settings .*config.json are damaged"):
        screen(model, mdata, targets, out_dir=out, **kw)


# --------------------------------------------------------------------------- real tiny model
def test_real_tiny_model_paired_and_sign(tmp_path):
    model_mod = pytest.importorskip("scdiffx_grn.model")
    m = make_synthetic(n_cells=150, strength=2.0)
    model_mod.ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = model_mod.ScDiffusionX(m, latent_dim=8, token_dim=4, width=32, n_heads=2, n_layers=1,
                                   rna_hidden=(32,), atac_hidden=(32,))
    from scdiffx_grn import settings

    old, settings.progress = settings.progress, False
    try:
        model.train(ae_epochs=30, diffusion_steps=150, batch_size=64, seed=0, device="cpu")
    finally:
        settings.progress = old
    tk = {"n_steps": 10}
    null = perturb(model, m, Perturbation(["chr1-0-50"], kind="none", modality="atac", n_samples=2),
                   translate_kwargs=tk, copy=True).uns["perturbation"]
    assert (null["effects"]["effect"] == 0).all()
    res = perturb(model, m, Perturbation(["chr1-0-50"], kind="close", modality="atac", cells="A", n_samples=3),
                  translate_kwargs=tk, copy=True).uns["perturbation"]
    eff = res["effects"].set_index("feature")
    g0 = float(eff.loc["g0", "effect"])
    rank = int((eff["effect"].abs() >= abs(g0)).sum())
    print(f"\n[real tiny model] close p0 in A: g0 LFC={g0:.3f} (rank {rank}/{len(eff)} by |effect|), "
          f"fdr={eff.loc['g0', 'fdr']:.3g}")
    assert np.isfinite(g0)
    # The engine's sign is tested exactly with the stand-in above; a 150-step tiny model learns the
    # planted link most of the time (g0 LFC -0.02 .. -0.11, usually rank 1), not always.
    if g0 >= 0:
        pytest.xfail(f"tiny model did not learn the planted peak -> gene link this run (LFC={g0:.3f})")


# --------------------------------------------------------------------------- storage contract
def test_perturb_storage_contract(model, mdata, tmp_path):
    """copy=True: a modified copy, input untouched; copy=False: in place, None; uns[key] = params + tables."""
    from scdiffx_grn import MissingLabelError

    m = mdata.copy()
    pert = Perturbation(["chr1-0-50"], kind="close", modality="atac")
    out = perturb(model, m, pert, key_added="ko", copy=True)
    assert isinstance(out, md.MuData) and out is not m
    assert "ko" not in m.uns and "ko" in out.uns
    res = out.uns["ko"]
    assert set(res) == {"params", "effects", "state", "report"}
    assert res["params"]["groupby"] == "cell_type" and res["params"]["readout"] == "mean"
    assert list(res["params"]["perturbations"]) == ["chr1-0-50"]
    assert perturb(model, m, pert, key_added="ko") is None
    pd.testing.assert_frame_equal(perturbation_df(m, "ko"), perturbation_df(out, "ko"))
    # the legacy result dict (what copy=True returned before) is still read
    legacy = {k: res[k] for k in ("effects", "state", "report")}
    pd.testing.assert_frame_equal(perturbation_df(legacy, cell_type="A"), perturbation_df(out, "ko", cell_type="A"))
    with pytest.raises(OptionError, match="table must be one of"):
        perturbation_df(out, "ko", table="nope")
    # the result is written with the MuData and read back
    out.write(tmp_path / "r.h5mu")
    back = md.read_h5mu(tmp_path / "r.h5mu")
    pd.testing.assert_frame_equal(perturbation_df(back, "ko"), perturbation_df(out, "ko"), check_dtype=False,
                                  check_categorical=False)
    with pytest.raises(MissingLabelError, match="'tissue' not found"):
        perturb(model, m, pert, groupby="tissue")
    with pytest.raises(OptionError, match="collides"):
        perturb(model, m, pert, groupby="feature")
    with pytest.raises(OptionError, match="unknown perturbation field"):
        perturb(model, m, {"targets": ["g0"], "colour": "red"})


def test_group_column_named_after_groupby(model, mdata, tmp_path):
    m = mdata.copy()
    # a label found by the registry's lookup in a modality's obs (not in mdata.obs)
    m.mod["rna"].obs["state"] = np.where(m.obs["cell_type"].astype(str) == "A", "s1", "s2")
    pert = Perturbation(["chr1-0-50"], kind="close", modality="atac")
    res = perturb(model, m, pert, groupby="state", copy=True).uns["perturbation"]
    for t in ("effects", "state"):
        assert list(res[t].columns[:2]) == ["perturbation", "state"] and "cell_type" not in res[t]
    assert set(res["effects"]["state"]) == {"s1", "s2"}
    assert set(perturbation_df(res, cell_type="s1")["state"]) == {"s1"}
    volcano(res["effects"], cell_type="s1")
    one = perturb(model, m, pert, groupby=None, copy=True).uns["perturbation"]["effects"]
    assert set(one["group"]) == {"all"} and "cell_type" not in one
    summ = screen(model, m, ["chr1-0-50", "chr1-100-150"], kind="close", modality="atac", groupby="state",
                  out_dir=tmp_path / "s", show_progress=False)
    assert list(summ.columns[:2]) == ["perturbation", "state"]
    assert list(pd.read_parquet(tmp_path / "s" / "summary.parquet").columns[:2]) == ["perturbation", "state"]
    assert list(load_screen_effects(tmp_path / "s").columns[:2]) == ["perturbation", "state"]
    screen_heatmap(summ, value="n_sig")


def test_bad_options_raise_option_error(model, mdata, tmp_path):
    from scdiffx_grn import MissingLabelError

    with pytest.raises(MissingLabelError, match="'tissue' not found"):
        screen(model, mdata, ["g0"], groupby="tissue", out_dir=tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x").exists()  # checked before the screen folder is made
    with pytest.raises(OptionError, match="on_unknown"):
        perturb(model, mdata, Perturbation(["g0"]), on_unknown="ignore", copy=True)
    with pytest.raises(OptionError, match="targets must be a list"):
        screen(model, mdata, "all_things", show_progress=False)
    with pytest.raises(OptionError, match="keep_effects"):
        screen(model, mdata, ["g0"], keep_effects="some", show_progress=False)
    with pytest.raises(OptionError, match="batch_targets"):
        screen(model, mdata, ["g0"], batch_targets=0, show_progress=False)
    with pytest.raises(OptionError, match="kind must be 'close' or 'open'"):
        peak_knockout_effect(model, mdata, ["chr1-0-50"], kind="knockout")
    with pytest.raises(UnknownFeatureError, match="nogene"):
        peak_knockout_effect(model, mdata, ["chr1-0-50"], genes=["g0", "nogene"])


def test_all_tfs_from_the_one_tf_list(model, mdata):
    from scdiffx_grn.perturb._screen import _all_tfs

    tfp = pd.DataFrame({"tf": ["G1", "g0", "TFX"], "peak": ["chr1-0-50", "chr1-100-150", "chr1-0-50"]})
    assert _all_tfs("rna", model.rna_var_names, tfp, None, None) == ["g0", "g1"]  # the genes' spelling
    assert _all_tfs("rna", ["Sox2"], None, ["Sox2"], None) == ["Sox2"]


# --------------------------------------------------------------------------- chunks and option groups
def test_screen_chunk_resume_after_kill(model, mdata, tmp_path, monkeypatch):
    """A run killed after its second chunk resumes at chunk granularity: the finished chunks'
    files are not rewritten, only the remaining targets are computed, and the final tables equal
    an uninterrupted run's."""
    import scdiffx_grn.perturb._screen as scr

    targets = _screen_targets()
    kw = dict(kind="close", modality="atac", show_progress=False, chunk_targets=3)
    ref_dir = tmp_path / "ref"
    ref = screen(model, mdata, targets, out_dir=ref_dir, **kw)
    assert sorted(p.name for p in (ref_dir / "effects").iterdir()) == [f"chunk-{k:05d}.parquet" for k in range(4)]
    real = scr._chunk_tables
    seen: list[list[str]] = []

    def spy(res, calib, *a, **k):
        names = [n for n in res.names if not n.startswith("control:")]
        if names:
            seen.append(names)
            if kill_after is not None and len(seen) > kill_after:
                raise KeyboardInterrupt("killed")
        return real(res, calib, *a, **k)

    kill_after = 2
    monkeypatch.setattr(scr, "_chunk_tables", spy)
    out = tmp_path / "scr"
    with pytest.raises(KeyboardInterrupt):
        screen(model, mdata, targets, out_dir=out, **kw)
    done = json.loads((out / "done.json").read_text())["done"]
    assert list(done) == targets[:6] and set(done.values()) == {"chunk-00000", "chunk-00001"}
    assert scr.is_screen_dir(out)
    stamps = {f: f.stat().st_mtime_ns for f in (out / "effects").iterdir()}
    seen.clear()
    kill_after = None
    summ = screen(model, mdata, targets, out_dir=out, **kw)
    assert seen == [targets[6:9], targets[9:]]  # only the rest, in chunks
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())  # finished chunks untouched
    pd.testing.assert_frame_equal(summ, ref)
    pd.testing.assert_frame_equal(load_screen_effects(out), load_screen_effects(ref_dir))
    pd.testing.assert_frame_equal(load_screen_effects(out, targets[7]),
                                  load_screen_effects(ref_dir, targets[7]))
    # chunks of one target, and the whole screen in one chunk, give the same tables
    one = screen(model, mdata, targets, out_dir=tmp_path / "one", **{**kw, "chunk_targets": 1})
    pd.testing.assert_frame_equal(one, ref)
    mem = screen(model, mdata, targets, **{**kw, "chunk_targets": 100})
    pd.testing.assert_frame_equal(mem.drop(columns=[]), ref, check_like=False)


def test_screen_chunk_statistics_equal_per_target_tables(model, mdata, tmp_path):
    """The vectorised per-chunk summaries equal summarise_effects of the stored calibrated effects,
    and ControlCalibration.block_effects equals ControlCalibration.effects row by row (a target
    that is also a control left out of its own controls)."""
    from scdiffx_grn.perturb._controls import ControlCalibration
    from scdiffx_grn.perturb._screen import summarise_effects

    targets = _screen_targets()
    out = tmp_path / "s"
    summ = screen(model, mdata, targets, kind="close", modality="atac", show_progress=False, chunk_targets=4,
                  keep_effects="all", out_dir=out, controls=5, min_effect=0.01)
    eff = load_screen_effects(out)
    ref = summarise_effects(eff, alpha=0.05, n_top=5, min_effect=0.01)
    assert eff["significant"].any() and eff["n_controls"].gt(0).any()
    pd.testing.assert_frame_equal(summ[ref.columns], ref)
    # block_effects vs effects on planted control and target effects
    rng = np.random.default_rng(0)
    F, feats = 40, [f"f{i}" for i in range(40)]

    def table(names, group, scale):
        n = len(names)
        c = rng.uniform(0.5, 2.0, (n, F))
        return pd.DataFrame({"perturbation": np.repeat(names, F), "cell_type": group, "feature": feats * n,
                             "readout": "rna", "ctrl_mean": c.ravel(),
                             "pert_mean": (c + rng.normal(0, scale, (n, F))).ravel(), "n_changed": 3})

    ctrl = pd.concat([table([f"c{i}" for i in range(6)], "A", 0.1), table([f"c{i}" for i in range(2)], "B", 0.1)],
                     ignore_index=True)
    cal = ControlCalibration(ctrl, None, group_col="cell_type", alpha=0.05, min_effect=0.1)
    tgt = pd.concat([table(["t0", "c3", "t1"], "A", 0.5), table(["t2"], "B", 0.5), table(["t3"], "Z", 0.5)],
                    ignore_index=True)
    by_row = cal.effects(tgt)
    from scdiffx_grn.perturb._controls import log2_effect

    l2 = log2_effect(tgt["ctrl_mean"], tgt["pert_mean"], "rna").reshape(-1, F)
    z, p, q, nc = cal.block_effects(l2, tgt["perturbation"][::F], tgt["cell_type"][::F], feats)
    np.testing.assert_array_equal(z.ravel(), by_row["z_vs_controls"])
    np.testing.assert_array_equal(p.ravel(), by_row["p_vs_controls"])
    np.testing.assert_array_equal(q.ravel(), by_row["fdr_vs_controls"])
    np.testing.assert_array_equal(np.repeat(nc, F), by_row["n_controls"])
    assert np.isfinite(q[:3]).all() and np.isnan(q[3:]).all()  # group B has 2 controls, Z none


@pytest.mark.parametrize("make, match", [
    (lambda: EngineOptions(readout="median"), "readout"),
    (lambda: EngineOptions(n_noise=0), "n_noise"),
    (lambda: EngineOptions(batch_rows=0), "batch_rows"),
    (lambda: EngineOptions(batch_targets=0), "batch_targets"),
    (lambda: EngineOptions(readout="mean", test="wilcoxon"), "wilcoxon"),
    (lambda: EngineOptions(skip_unchanged="yes"), "skip_unchanged"),
    (lambda: EngineOptions(translate_kwargs=[1]), "translate_kwargs"),
    (lambda: ControlOptions(alpha=1.5), "alpha"),
    (lambda: ControlOptions(min_effect=-1), "min_effect"),
    (lambda: ControlOptions(controls=-2), "controls"),
    (lambda: OutputOptions(keep_effects="some"), "keep_effects"),
    (lambda: OutputOptions(chunk_targets=0), "chunk_targets"),
    (lambda: OutputOptions(n_top=-1), "n_top"),
])
def test_option_dataclasses_reject_bad_values(make, match):
    with pytest.raises(OptionError, match=match):
        make()


def test_screen_option_objects_equal_keywords(model, mdata, tmp_path):
    targets = _screen_targets()[:3]
    kw = dict(kind="close", modality="atac")
    flat = screen(model, mdata, targets, seed=3, alpha=0.1, n_top=2, show_progress=False,
                  out_dir=tmp_path / "flat", **kw)
    obj = screen(model, mdata, targets, engine=EngineOptions(seed=3), control=ControlOptions(alpha=0.1),
                 output=OutputOptions(out_dir=tmp_path / "obj", n_top=2, show_progress=False), **kw)
    pd.testing.assert_frame_equal(flat, obj)
    cfg = json.loads((tmp_path / "obj" / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["alpha"] == 0.1 and cfg["keep_effects"] == "all"  # "auto" resolved
    with pytest.raises(OptionError, match="seed.*both"):
        screen(model, mdata, targets, seed=5, engine=EngineOptions(seed=3), **kw)
    with pytest.raises(OptionError, match="EngineOptions"):
        screen(model, mdata, targets, engine={"seed": 3}, **kw)
    assert EngineOptions(seed=3).to_dict()["seed"] == 3 and OutputOptions(out_dir=tmp_path).to_dict()["out_dir"] == str(tmp_path)
