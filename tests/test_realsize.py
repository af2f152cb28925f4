"""Real-shape data path: the 10x-shaped simulator, feature selection for regulation, bounded model sizes,
the automatic preset and the real-size benchmark script (at a small scale)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import scdiffx_grn as scdx
from scdiffx_grn.datasets import simulate_multiome, write_10x_h5



def _has_hg38() -> bool:
    try:
        scdx.datasets.data_path("hg38_tss", verify=False)
        return True
    except Exception:
        return False


hg38 = pytest.mark.skipif(not _has_hg38(), reason="hg38 TSS annotation (shared data) not available")


@pytest.fixture(scope="module")
def sim():
    return simulate_multiome(300, 2000, 5000, n_types=4, n_links=150, seed=3)


@hg38
def test_simulate_shape_sparsity_and_annotation(sim):
    rna, atac = sim.mod["rna"], sim.mod["atac"]
    assert rna.shape == (300, 2000) and atac.shape == (300, 5000)
    for a in (rna, atac):
        assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
        assert np.array_equal(a.X.data, np.round(a.X.data)) and (a.X.data > 0).all()
        assert (a.layers["counts"] != a.X).nnz == 0
    # per-cell sparsity near the asked-for 7.2 % / 7.1 % (planted links add a little)
    g = np.diff(rna.X.indptr).mean() / 2000
    p = np.diff(atac.X.indptr).mean() / 5000
    assert 0.05 < g < 0.12 and 0.05 < p < 0.12
    # real symbols at their annotated TSS
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    ann = rna.var[rna.var["annotated"]]
    assert len(ann) == 2000  # the annotation has more genes than asked for: all real
    m = ann.reset_index(names="gene").merge(tss, on=["gene", "chrom", "tss"])
    assert set(m["gene"]) == set(ann.index)
    # peaks: non-overlapping, sorted per chromosome, names parse to the stored coordinates
    v = atac.var
    for _, d in v.groupby("chrom", observed=True):
        assert (d["start"].to_numpy()[1:] > d["end"].to_numpy()[:-1]).all()
    parsed = scdx.grn.parse_peak_names(v.index)
    assert (parsed["start"].to_numpy() == v["start"].to_numpy()).all()
    assert sim.obs["cell_type"].nunique() == 4


@hg38
def test_simulate_planted_links_are_real_and_visible(sim):
    rna, atac = sim.mod["rna"], sim.mod["atac"]
    links = sim.uns["planted_pairs"]
    assert len(links) == 150 and links[["peak", "gene"]].duplicated().sum() == 0
    assert (links["distance"].abs() <= 100_000).all()
    # the distance is the package's candidate-pair distance
    cand = scdx.grn.peak_gene_candidates(atac.var, genes=links["gene"].unique(),
                                         tss_table=rna.var.reset_index(names="gene")[["gene", "chrom", "tss"]],
                                         window=100_000)
    m = links.merge(cand, on=["peak", "gene"], suffixes=("", "_c"))
    assert len(m) == len(links)
    # gene counts are higher where the linked peak is open, for nearly every link
    A = atac.X.tocsc()
    R = rna.X.tocsc()
    up = 0
    for p, gname in zip(links["peak"], links["gene"]):
        o = A[:, atac.var_names.get_loc(p)].toarray().ravel() > 0
        y = R[:, rna.var_names.get_loc(gname)].toarray().ravel()
        up += y[o].mean() > y[~o].mean()
    assert up >= 0.95 * len(links)


@hg38
def test_simulate_is_deterministic_and_fills_unannotated_genes():
    a = simulate_multiome(40, 30_000, 3000, n_types=2, n_links=20, seed=1)
    b = simulate_multiome(40, 30_000, 3000, n_types=2, n_links=20, seed=1)
    assert (a.mod["atac"].X != b.mod["atac"].X).nnz == 0 and (a.mod["rna"].X != b.mod["rna"].X).nnz == 0
    assert a.mod["rna"].var_names.is_unique
    n_ann = int(a.mod["rna"].var["annotated"].sum())
    assert 20_000 < n_ann < 30_000  # the hg38 annotation's main-chromosome genes, then filler names
    assert a.uns["planted_pairs"]["gene"].isin(a.mod["rna"].var_names[a.mod["rna"].var["annotated"]]).all()


@hg38
def test_write_10x_h5_round_trip(sim, tmp_path):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(sim, path)
    back = scdx.datasets.read_multiome(path, labels=sim.obs[["cell_type"]])
    assert list(back.obs_names) == list(sim.obs_names)
    for k in ("rna", "atac"):
        assert list(back.mod[k].var_names) == list(sim.mod[k].var_names)
        assert (back.mod[k].layers["counts"] != sim.mod[k].layers["counts"]).nnz == 0
    assert (back.obs["cell_type"].astype(str).to_numpy() == sim.obs["cell_type"].astype(str).to_numpy()).all()
    with pytest.raises(scdx.OutputError, match="exists"):
        write_10x_h5(sim, path)


@hg38
def test_select_features_keeps_every_window_peak_and_the_planted_pairs(sim):
    links = sim.uns["planted_pairs"]
    user = list(links["gene"].unique()[:5])
    m = simulate_multiome(300, 2000, 5000, n_types=4, n_links=150, seed=3)
    scdx.tl.select_features(m, n_top_genes=200, tfs=True, genes=user, window=50_000, n_latent_peaks=300)
    res = m.uns["select_features"]
    c = res["counts"]
    rna0, atac0 = sim.mod["rna"], sim.mod["atac"]
    kept = m.mod["rna"].var_names
    # genes: HVG | TF | user, counted right
    tfs = set(scdx.datasets.tf_list(list(rna0.var_names)))
    assert set(user) <= set(kept) and set(tfs) <= set(kept)
    assert c["genes"] == len(kept) and c["genes_tf"] == len(tfs) and c["genes_user"] == len(user)
    assert c["genes_hvg"] == 200 and len(kept) <= 200 + len(tfs) + len(user)
    # peaks: exactly the open peaks within the window of a kept gene, plus the most frequently open
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    ref = scdx.grn.peak_gene_candidates(atac0.var, genes=kept, tss_table=tss, window=50_000)
    open_ = np.asarray((atac0.X > 0).sum(0)).ravel()
    ref = ref[open_[atac0.var_names.get_indexer(ref["peak"])] > 0]
    top = atac0.var_names[np.argsort(-open_, kind="stable")[:300]]
    assert set(m.mod["atac"].var_names) == set(ref["peak"]) | set(top)
    assert c["peaks_in_window"] == ref["peak"].nunique() and c["candidate_pairs"] == len(ref)
    assert c["peaks"] == m.mod["atac"].n_vars and c["peaks_latent"] == 300
    # the stored candidates are the pairs of the kept features, and planted pairs of kept genes survive
    cand = res["candidates"]
    assert set(zip(cand["peak"], cand["gene"])) == set(zip(ref["peak"], ref["gene"]))
    mine = links[links["gene"].isin(kept) & (links["distance"].abs() <= 50_000)]
    assert len(mine) >= 5
    assert set(zip(mine["peak"], mine["gene"])) <= set(zip(cand["peak"], cand["gene"]))
    assert res["params"]["window"] == 50_000 and res["params"]["genes"] == user


@hg38
def test_select_features_covers_more_pairs_than_top_peaks(sim):
    """The old recipe (HVGs x most open peaks) loses most candidate pairs; the window rule keeps them all."""
    m = sim.copy()
    scdx.tl.select_features(m, n_top_genes=200, tfs=False, window=150_000, n_latent_peaks=0, subset=False)
    kept = m.mod["rna"].var_names[m.mod["rna"].var["selected"]]
    tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
    old = sim.copy()
    scdx.pp.filter_peaks(old, top_n=int(m.mod["atac"].var["selected"].sum()), min_frac=0.0)
    n_old = len(scdx.grn.peak_gene_candidates(old.mod["atac"].var, genes=kept, tss_table=tss, window=150_000))
    assert m.uns["select_features"]["counts"]["candidate_pairs"] > n_old


@hg38
def test_select_features_bad_input(sim):
    with pytest.raises(scdx.UnknownFeatureError, match="NOT_A_GENE"):
        scdx.tl.select_features(sim, genes=["NOT_A_GENE"], copy=True)
    with pytest.raises(scdx.OptionError, match="window"):
        scdx.tl.select_features(sim, window=-1, copy=True)


# ----------------------------------------------------------------------------- bounded model size
def _old_auto_hidden(n, big, floor):
    scale = min(1.0, n / (4 * big[0]))
    return tuple(max(floor, int(round(h * scale / 8)) * 8) for h in big)


def test_default_model_size_is_bounded_at_real_shape():
    from scdiffx_grn.model import ModelConfig
    from scdiffx_grn.model._autopreset import model_size

    cfg = ModelConfig(n_genes=36_000, n_peaks=150_000).resolve()  # built on the meta device: no 150k-wide weights
    size = model_size(cfg)
    assert size["n_parameters"] < 30_000_000 and size["checkpoint_bytes"] < 150 * 2**20
    # the old rule gave ~350 M parameters at this shape
    old = ModelConfig(n_genes=36_000, n_peaks=150_000, rna_hidden=_old_auto_hidden(36_000, (512, 300), 32),
                      atac_hidden=_old_auto_hidden(150_000, (1024, 512), 32)).resolve()
    assert model_size(old)["n_parameters"] > 300_000_000


def test_model_sizes_of_shipped_data_are_unchanged():
    from scdiffx_grn.model import ModelConfig

    for n_genes, n_peaks in [(1677, 25_734), (1677, 3000), (600, 600), (8595, 32_768), (20_000, 5000)]:
        cfg = ModelConfig(n_genes=n_genes, n_peaks=n_peaks).resolve()
        assert cfg.rna_hidden == _old_auto_hidden(n_genes, (512, 300), 32)
        assert cfg.atac_hidden == _old_auto_hidden(n_peaks, (1024, 512), 32)


def test_model_size_counts_the_real_module():
    import torch

    from scdiffx_grn.model import ModelConfig
    from scdiffx_grn.model._autopreset import model_size
    from scdiffx_grn.model._modules import ScDXModule

    cfg = ModelConfig(n_genes=40_000, n_peaks=33_000, width=16, n_layers=1, n_heads=2).resolve()
    assert cfg.atac_hidden[0] < 1024 and cfg.rna_hidden[0] < 512  # both wide inputs are bounded
    real = ScDXModule(cfg)
    n = sum(p.numel() for p in real.parameters())
    assert model_size(cfg)["n_parameters"] == n
    assert model_size(cfg)["checkpoint_bytes"] == 4 * (n + sum(b.numel() for b in real.buffers()))
    del real
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


# ----------------------------------------------------------------------------- automatic preset
def test_plan_training_fits_the_budget():
    from scdiffx_grn.model._autopreset import FULL_RECIPE, plan_training

    t = {"ae_step_s": 0.5, "diffusion_step_s": 0.1}
    full = plan_training(10_000, 250, t, time_budget=None, device="cuda")
    assert (full["ae_epochs"], full["diffusion_steps"]) == (FULL_RECIPE["ae_epochs"], FULL_RECIPE["diffusion_steps"])
    # 40 epochs x 20 s + 6 s + 20,000 x 0.1 s = 2,806 s
    assert abs(full["estimated_seconds"] - 2806.0) < 1e-6
    p = plan_training(10_000, 250, t, time_budget=600, device="cpu")
    assert p["fits_budget"] and p["estimated_seconds"] <= 600
    assert p["ae_epochs"] == 14 and p["diffusion_steps"] == (600 - 14 * 20 - 6) // 0.1
    # slow denoiser (1 s / step): its minimum (200 steps) is kept and the epochs give way:
    # half the budget would give 7 epochs (346 s in all); (300 - 6 - 200) // 20 = 4 epochs, then 214 steps
    short = plan_training(10_000, 250, {"ae_step_s": 0.5, "diffusion_step_s": 1.0}, time_budget=300, device="cpu")
    assert (short["ae_epochs"], short["diffusion_steps"]) == (4, 214) and short["fits_budget"]
    tiny = plan_training(10_000, 250, t, time_budget=5, device="cpu")
    assert (tiny["ae_epochs"], tiny["diffusion_steps"]) == (1, 200) and not tiny["fits_budget"]
    with pytest.raises(scdx.OptionError, match="time_budget"):
        plan_training(10, 5, t, time_budget=0, device="cpu")


@hg38
def test_train_preset_auto_prints_an_estimate_and_leaves_the_model_alone(sim, caplog):
    import logging

    import torch

    from scdiffx_grn import ScDiffusionX

    m = sim[:96].copy()
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    tiny = dict(width=16, n_layers=1, n_heads=2, latent_dim=8, token_dim=4, rna_hidden=(16,), atac_hidden=(16,))
    a = ScDiffusionX(m, seed=0, **tiny)
    with caplog.at_level(logging.INFO, logger="scdiffx_grn"):
        a.train(preset="auto", time_budget=0.5, log_every=50)
    plan = a.train_plan
    assert any("estimated" in r.getMessage() and "preset 'auto'" in r.getMessage() for r in caplog.records)
    assert plan["estimated_seconds"] > 0 and plan["n_parameters"] > 0
    assert plan["batch_size"] == 32 and plan["ae_epochs"] >= 1 and plan["diffusion_steps"] >= 200
    assert plan["estimated_seconds"] == pytest.approx(
        plan["ae_epochs"] * plan["ae_epoch_s"] + 0.3 * plan["ae_epoch_s"]
        + plan["diffusion_steps"] * plan["diffusion_step_s"])
    # the calibration ran on a copy: the same recipe given explicitly trains the same weights
    b = ScDiffusionX(m, seed=0, **tiny)
    b.train(ae_epochs=plan["ae_epochs"], diffusion_steps=plan["diffusion_steps"], batch_size=32, log_every=50)
    for (k, x), (_, y) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)
    with pytest.raises(scdx.OptionError, match="unknown preset"):
        a.train(preset="nonsense")


# ----------------------------------------------------------------------------- the benchmark script, small
@hg38
def test_benchmark_realsize_runs_end_to_end_at_small_scale(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "analyses" / "benchmark_realsize.py"
    spec = importlib.util.spec_from_file_location("benchmark_realsize", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--cells", "120", "--genes", "800", "--peaks", "2000", "--types", "2", "--links", "60",
                    "--n-top-genes", "100", "--n-latent-peaks", "200", "--time-budget", "1", "--grn-cells", "8",
                    "--grn-timeout", "0", "--methods", "attention", "knockout", "--screen-tfs", "3",
                    "--screen-timeout", "0", "--model-option", "width=16", "n_layers=1", "n_heads=2", "--out", str(tmp_path)])
    steps = [r["step"] for r in res["steps"]]
    assert steps[:4] == ["simulate + write h5 (not part of the workflow)", "read_multiome (10x h5)", "pp.qc",
                         "tl.select_features"]
    assert all(r["peak_rss_mb"] > 0 and r["seconds"] >= 0 for r in res["steps"])
    assert [g["status"] for g in res["grn"]] == ["done", "done"]
    assert res["selection"]["candidate_pairs"] == res["recovery"][0]["n_pairs"]
    assert res["training"]["estimated_seconds"] > 0 and res["training"]["measured_seconds"] > 0
    assert {r["scorer"] for r in res["recovery"]} >= {"distance baseline (-|distance|)", "knockout"}
    assert json.loads((tmp_path / "realsize.json").read_text())["shape"]["cells"] == 120
    assert (tmp_path / "realsize.md").read_text().startswith("| step |")
    scr = res["screen"]  # three TFs, every type, summaries and control calls, in this process
    assert (scr["status"], scr["n_tfs"], scr["n_done"]) == ("done", 3, 3)
    assert scr["summary_rows"] == 3 * 2 and scr["output_mb"] > 0 and "| TF screen |" in (tmp_path / "realsize.md").read_text()
    # the screen alone, in its own process, resumes the finished folder (nothing recomputed)
    alone = mod.main(["--screen-only", "--screen-tfs", "3", "--screen-timeout", "600", "--out", str(tmp_path)])
    assert (alone["screen"]["status"], alone["screen"]["n_done"]) == ("done", 3)
    # the GRN steps alone on the saved model and data: every scorer (closed-form IG, first-order knockout)
    again = mod.main(["--grn-only", "--grn-cells", "8", "--grn-types", "1", "--grn-timeout", "0", "--methods",
                      "integrated_gradients", "knockout:knockout_engine=linear", "--out", str(tmp_path)])
    assert [(g["status"], g["n_types"]) for g in again["grn"]] == [("done", 1), ("done", 1)]
    assert {r["scorer"] for r in again["recovery"]} >= {"integrated_gradients", "knockout:knockout_engine=linear"}


@hg38
def test_cli_train_preset(sim, tmp_path):
    import json

    from typer.testing import CliRunner

    from scdiffx_grn.cli import app

    def run(args):
        return CliRunner().invoke(app, [str(a) for a in args], env={"SCDX_PROGRESS": "0", "SCDX_THREADS": "1"})

    assert "--preset" in run(["train", "--help"]).output
    data = tmp_path / "d.h5mu"
    sim[:96].copy().write(data)
    small = ["--model-option", "width=16", "--model-option", "n_layers=1", "--model-option", "n_heads=2",
             "--model-option", "latent_dim=8", "--model-option", "rna_hidden=[16]", "--model-option", "atac_hidden=[16]"]
    res = run(["train", "--data", data, "--out", tmp_path / "m", "--preset", "auto", "--time-budget", "0.5",
               "--device", "cpu", *small])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "training.json").read_text())
    plan = meta["train"]["plan"]
    assert meta["train"]["preset"] == "auto" and plan["estimated_seconds"] > 0
    assert meta["train"]["ae_epochs"] == plan["ae_epochs"] and meta["train"]["diffusion_steps"] == plan["diffusion_steps"]
    # --preset auto without a denoiser size sizes it for the device: no size trains 2,000 steps in 0.25 s
    res = run(["train", "--data", data, "--out", tmp_path / "m3", "--preset", "auto", "--time-budget", "0.5",
               "--device", "cpu", *small[6:]])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "m3" / "config.json").read_text())["config"]
    assert (cfg["width"], cfg["n_layers"], cfg["n_heads"]) == (32, 2, 2)
    bad = run(["train", "--data", data, "--out", tmp_path / "m2", "--preset", "nonsense", "--device", "cpu", *small])
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "unknown preset" in lines[0]


# ----------------------------------------------------------------------------- denoiser sized for the device
def test_denoiser_size_takes_the_largest_size_that_trains_long_enough(sim, monkeypatch):
    from scdiffx_grn.model import _sizing

    m = sim[:96].copy()
    scdx.ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    # planted seconds per denoiser step by (width, blocks); autoencoder batches of 0.01 s (3 per epoch at
    # batch 32): the auto plan of 1,000 s gives 40 epochs (1.2 s) and (1000 - 1.2 - 0.009) // step_s steps
    planted = {(128, 4): 1.0, (64, 3): 0.4, (64, 2): 0.3, (32, 2): 0.1}
    seen = []

    def fake(model, mdata, *, batch_size, **kw):
        seen.append((model.config.width, model.config.n_layers, batch_size, model.config.latent_dim))
        return {"ae_step_s": 0.01, "diffusion_step_s": planted[(model.config.width, model.config.n_layers)]}

    monkeypatch.setattr(_sizing, "calibrate", fake)
    size = scdx.model.denoiser_size(m, time_budget=1000, min_steps=2000, latent_dim=8)
    assert size == {"width": 64, "n_heads": 4, "n_layers": 3}  # 998 steps, then 2,496
    assert [s[:2] for s in seen] == [(128, 4), (64, 3)] and {s[2:] for s in seen} == {(32, 8)}  # batch as "auto"
    last = scdx.model.denoiser_size.last
    assert [t["diffusion_steps"] for t in last["tried"]] == [998, 2496] and last["choice"] == size
    assert scdx.model.denoiser_size(m, time_budget=1000, min_steps=9000)["width"] == 32  # 9,988 steps
    assert scdx.model.denoiser_size(m, time_budget=1000, min_steps=990)["width"] == 128
    # none is fast enough: the smallest
    assert scdx.model.denoiser_size(m, time_budget=100)["width"] == 32
    # no budget on a CPU: one hour (3,598 steps of the default size, 8,996 of the next)
    assert scdx.model.denoiser_size(m, device="cpu")["width"] == 128
    assert scdx.model.denoiser_size(m, device="cpu", min_steps=5000) == {"width": 64, "n_heads": 4, "n_layers": 3}
    with pytest.raises(scdx.OptionError, match="width"):
        scdx.model.denoiser_size(m, time_budget=10, width=64)
    with pytest.raises(scdx.OptionError, match="time_budget"):
        scdx.model.denoiser_size(m, time_budget=0)
