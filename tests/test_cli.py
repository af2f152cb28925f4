"""The ``scdiffx-grn`` command line: help texts, one-line errors with exit code 2, a round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scdiffx_grn import settings
from scdiffx_grn.cli import app

from conftest import write_synthetic_files

settings.progress = False
runner = CliRunner()

COMMAND_OPTIONS = {
    "train": ["--out", "--data", "--rna", "--atac", "--label", "--ae-epochs", "--diffusion-steps", "--model-option", "--precision"],
    "generate": ["--model", "--out", "--n-cells", "--cell-type", "--sampler", "--n-steps", "--guidance-scale"],
    "translate": ["--model", "--out", "--direction", "--n-samples", "--n-steps", "--metrics", "--calibrated"],
    "grn": ["--model", "--out", "--method", "--groupby", "--genome", "--window", "--tf-prior"],
    "screen": ["--model", "--target", "--out", "--kind", "--n-samples", "--on-unknown", "--resume"],
    "biomarkers": ["--out", "--groupby", "--reference", "--organism", "--grn", "--gene-sets"],
    "evaluate": ["--model", "--out", "--split-key", "--task", "--baselines"],
    "demo": ["--out", "--n-cells", "--model", "--n-steps", "--basis", "--section"],
}
COMMON = ["--config", "--seed", "--debug", "--no-progress"]


def _run(args):
    return runner.invoke(app, [str(a) for a in args], env={"SCDX_PROGRESS": "0", "SCDX_THREADS": "1"})


def _one_line_error(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_help_lists_options(command):
    res = _run([command, "--help"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for opt in COMMAND_OPTIONS[command] + COMMON:
        if command == "biomarkers" and opt == "--device":
            continue
        assert opt in text, f"{command} --help does not mention {opt}"
    assert "[default:" in text or "default" in text


def test_top_level_help_and_version():
    res = _run(["--help"])
    assert res.exit_code == 0
    for c in COMMAND_OPTIONS:
        assert c in res.output
    res = _run(["--version"])
    assert res.exit_code == 0 and res.output.strip()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Synthetic paired data as .h5mu and as two .h5ad, plus a non-count RNA file."""
    d = tmp_path_factory.mktemp("cli")
    m = write_synthetic_files(d)
    bad = m.mod["rna"].copy()
    bad.X = np.log1p(bad.X.toarray() * 1.5)  # normalised-looking, no counts layer
    del bad.layers["counts"]
    bad.write(d / "rna_norm.h5ad")
    return d


@pytest.fixture(scope="module")
def trained(files):
    """A tiny model trained through the CLI (with a --config file)."""
    import torch

    torch.set_num_threads(1)
    cfg = files / "train.yaml"
    cfg.write_text("ae_epochs: 2\ndiffusion_steps: 20\nbatch_size: 64\nmodel_option: [width=16, n_layers=1, "
                   "n_heads=2, latent_dim=8, token_dim=2]\n")
    out = files / "model"
    res = _run(["train", "--data", files / "syn.h5mu", "--out", out, "--config", cfg, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().endswith(str(out))
    assert (out / "model.pt").exists() and (out / "config.json").exists()
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["width"] == 16
    return out


def test_train_generate_translate_roundtrip(files, trained):
    import anndata as ad
    import mudata as md

    gen = files / "gen.h5mu"
    res = _run(["generate", "-m", trained, "-o", gen, "-c", "type0=7,type1", "-n", "5", "--n-steps", "3",
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    g = md.read_h5mu(gen)
    assert g.n_obs == 12
    assert set(g.mod) >= {"rna", "atac"}
    assert g.mod["rna"].n_vars == 60 and g.mod["atac"].n_vars == 120
    assert sorted(g.obs["cell_type"].astype(str).value_counts().to_dict().items()) == [("type0", 7), ("type1", 5)]
    x = g.mod["rna"].X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    assert (x >= 0).all() and np.allclose(x, np.round(x))

    out = files / "pred.h5ad"
    metrics = files / "metrics.csv"
    res = _run(["translate", "-m", trained, "--rna", files / "rna.h5ad", "--atac", files / "atac.h5ad", "-o", out,
                "--direction", "atac->rna", "--n-steps", "3", "--n-samples", "2", "--metrics", metrics,
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    p = ad.read_h5ad(out)
    src = ad.read_h5ad(files / "rna.h5ad")
    assert list(p.obs_names) == list(src.obs_names)
    assert p.n_vars == 60 and "std" in p.layers
    assert metrics.exists() and "cell_pearson_mean" in metrics.read_text()

    out2 = files / "pred_atac.h5ad"
    res = _run(["translate", "-m", trained, "--data", files / "syn.h5mu", "-o", out2, "--direction", "rna->atac",
                "--n-steps", "2", "--n-cells", "40"])
    assert res.exit_code == 0, res.output
    p2 = ad.read_h5ad(out2)
    assert p2.shape == (40, 120)
    assert np.nanmin(p2.X) >= 0 and np.nanmax(p2.X) <= 1
    # --calibrated without a fitted calibration: one line naming the fix
    line = _one_line_error(_run(["translate", "-m", trained, "--data", files / "syn.h5mu", "-o", files / "c.h5ad",
                                 "--direction", "rna->atac", "--n-cells", "10", "--calibrated"]))
    assert "calibrate_translation" in line


def test_translate_calibrated_uses_the_shipped_readout_head(tmp_path):
    import anndata as ad

    from scdiffx_grn import ScDiffusionX, datasets

    model = ScDiffusionX.load_pretrained("mouse_mop_demo")
    assert model.translation_calibration["rna->atac"]["method"] == "head"
    out = tmp_path / "head.h5ad"
    res = _run(["translate", "-m", "mouse_mop_demo", "-d", "mouse_mop", "--n-cells", "30", "-o", out,
                "--direction", "rna->atac", "--calibrated"])
    assert res.exit_code == 0, res.output
    got = ad.read_h5ad(out)
    assert got.uns["translation"]["calibrated"]
    mdata = model.subset_to_model(datasets.mouse_mop(n_cells=30, seed=0))
    ref = model.translate(mdata[got.obs_names].copy(), "rna->atac", calibrated=True).X
    np.testing.assert_allclose(got.X, ref, rtol=0, atol=8 * np.finfo(np.float32).eps)


def test_missing_file_is_one_line_error(files, trained, tmp_path):
    line = _one_line_error(_run(["translate", "-m", trained, "--data", tmp_path / "nope.h5mu",
                                 "-o", tmp_path / "x.h5ad"]))
    assert "nope.h5mu" in line
    line = _one_line_error(_run(["translate", "-m", trained, "--rna", tmp_path / "r.h5ad",
                                 "--atac", files / "atac.h5ad", "-o", tmp_path / "x.h5ad"]))
    assert "r.h5ad" in line
    line = _one_line_error(_run(["generate", "-m", tmp_path / "no_model", "-o", tmp_path / "g.h5mu"]))
    assert "no_model" in line
    assert not (tmp_path / "x.h5ad").exists() and not (tmp_path / "g.h5mu").exists()


def test_non_count_data_is_one_line_error(files, tmp_path):
    line = _one_line_error(_run(["train", "--rna", files / "rna_norm.h5ad", "--atac", files / "atac.h5ad",
                                 "--out", tmp_path / "m", "--ae-epochs", "1", "--diffusion-steps", "1"]))
    assert "count" in line.lower()
    assert not (tmp_path / "m").exists()


def test_debug_shows_traceback(files, tmp_path):
    res = _run(["translate", "-m", tmp_path / "no_model", "--data", files / "syn.h5mu", "-o", tmp_path / "x.h5ad",
                "--debug"])
    assert res.exit_code != 0
    assert res.exception is not None and not isinstance(res.exception, SystemExit)


def test_unknown_gene_target_in_screen(files, trained, tmp_path):
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1,NotAGene",
                                 "-o", tmp_path / "scr"]))
    assert "NotAGene" in line


def test_out_of_range_options_are_one_line_errors(files, trained, tmp_path):
    """--alpha 2 called every peak significant; --n-cells -5 was numpy's traceback."""
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1",
                                 "-o", tmp_path / "scr", "--alpha", "2"]))
    assert "alpha must be in (0, 1), got 2" in line
    assert not (tmp_path / "scr").exists()
    for cmd in (["screen", "-m", trained, "-t", "Gene1", "-o", tmp_path / "scr2"],
                ["evaluate", "-m", trained, "-o", tmp_path / "ev"],
                ["biomarkers", "-o", tmp_path / "bm"]):
        line = _one_line_error(_run(cmd + ["--data", files / "syn.h5mu", "--n-cells", "-5"]))
        assert "--n-cells must be an integer >= 1, got -5" in line


def test_n_cells_above_the_data_says_so(files, trained, tmp_path):
    res = _run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1", "-o", tmp_path / "scr",
                "--n-cells", "1000000000", "--n-steps", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "--n-cells 1,000,000,000 is more than the 300 cells" in res.stderr and "using all 300" in res.stderr


def test_input_that_is_not_hdf5_is_one_line_error(files, trained, tmp_path):
    bad = tmp_path / "notafile.h5mu"
    bad.write_text("not a MuData\n")
    line = _one_line_error(_run(["biomarkers", "-d", bad, "-o", tmp_path / "bm"]))
    assert "notafile.h5mu' is not an HDF5 file: expected an .h5mu file" in line
    (tmp_path / "r.h5ad").write_bytes(b"")
    line = _one_line_error(_run(["translate", "-m", trained, "--rna", tmp_path / "r.h5ad", "--atac",
                                 files / "atac.h5ad", "-o", tmp_path / "x.h5ad"]))
    assert "r.h5ad' is an empty file: expected an .h5ad file" in line


def test_unknown_data_name_lists_the_built_in_ones(tmp_path):
    line = _one_line_error(_run(["biomarkers", "-d", "mouse_mopp", "-o", tmp_path / "bm"]))
    assert "not a built-in data set name (built-in: mouse_mop, bmmc); did you mean 'mouse_mop'?" in line


def test_python_only_advice_is_given_in_command_line_terms():
    from scdiffx_grn import InputDataError, UnknownFeatureError
    from scdiffx_grn.cli import _one_line

    line = _one_line(InputDataError("no source of the network 'x' has >= tmin=5 targets among the data genes "
                                    "(3 edges overlap; largest regulon 2 targets). Lower tmin, or use a network "
                                    "with more of the data's genes."))
    assert "Lower tmin" not in line and "--reference" in line
    line = _one_line(UnknownFeatureError("unknown TF target(s) 'X': not among the TF -> peak table; fix them, or "
                                         "pass on_unknown='report' to skip them (they are listed in the report)"))
    assert "on_unknown=" not in line and "pass --on-unknown report to skip them" in line


def test_bad_usage_and_config(files, trained, tmp_path):
    # both --data and --rna
    _one_line_error(_run(["translate", "-m", trained, "--data", files / "syn.h5mu", "--rna", files / "rna.h5ad",
                          "--atac", files / "atac.h5ad", "-o", tmp_path / "x.h5ad"]))
    # unknown key in a config file: usage error (exit 2) naming the key
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"n_steps": 2, "bogus_option": 1}))
    res = _run(["generate", "-m", trained, "-o", tmp_path / "g.h5mu", "--config", cfg])
    assert res.exit_code == 2 and "bogus_option" in res.output
    # an unseen cell type
    line = _one_line_error(_run(["generate", "-m", trained, "-o", tmp_path / "g.h5mu", "-c", "NoSuchType",
                                 "--n-steps", "2"]))
    assert "NoSuchType" in line
    # grn --rank-by takes specificity or weight only
    line = _one_line_error(_run(["grn", "-m", trained, "--data", files / "syn.h5mu", "--rank-by", "corr",
                                 "-o", tmp_path / "g"]))
    assert "--rank-by" in line


def test_config_values_are_used_and_cli_wins(files, trained, tmp_path):
    import mudata as md

    cfg = tmp_path / "g.yaml"
    cfg.write_text("n_cells: 9\nn_steps: 2\nguidance_scale: 1.0\n")
    res = _run(["generate", "-m", trained, "-o", tmp_path / "g.h5mu", "--config", cfg])
    assert res.exit_code == 0, res.output
    assert md.read_h5mu(tmp_path / "g.h5mu").n_obs == 9
    res = _run(["generate", "-m", trained, "-o", tmp_path / "g2.h5mu", "--config", cfg, "-n", "4"])
    assert res.exit_code == 0, res.output
    assert md.read_h5mu(tmp_path / "g2.h5mu").n_obs == 4


def test_screen_and_evaluate_commands(files, trained, tmp_path):
    import pandas as pd

    out = tmp_path / "scr"
    res = _run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1", "-t", "Gene30",
                "-o", out, "--n-steps", "2", "--n-samples", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summ = pd.read_csv(out / "summary.csv")
    assert set(summ["perturbation"]) == {"Gene1", "Gene30"}
    assert set(summ["cell_type"]) == {"type0", "type1", "type2"}
    assert (out / "heatmap.png").exists()
    # significance is called against matched controls and an effect floor, and said in words
    assert {"n_sig", "n_sig_t", "n_controls", "p_state_vs_controls", "fdr_state_vs_controls"} <= set(summ.columns)
    assert "against" in res.output and "|log2 fold change| >= 0.1" in res.output
    eff = pd.concat([pd.read_parquet(f) for f in (out / "effects").glob("*.parquet")])
    assert {"log2fc", "z_vs_controls", "fdr_vs_controls", "significant"} <= set(eff.columns)
    assert not (eff["significant"] & (eff["log2fc"].abs() < 0.1)).any()
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1", "-o",
                                 tmp_path / "bad", "--controls", "-3"]))
    assert "controls" in line
    # resumable: a second run re-uses the finished targets
    res = _run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1,Gene30", "-o", out,
                "--n-steps", "2", "--n-samples", "1"])
    assert res.exit_code == 0, res.output
    ev = tmp_path / "ev"
    res = _run(["evaluate", "-m", trained, "--data", files / "syn.h5mu", "-o", ev, "--n-steps", "2",
                "--no-baselines", "--task", "translation"])
    assert res.exit_code == 0, res.output
    assert (ev / "table.csv").exists() and (ev / "report.md").exists()


def _with_split(trained, out, test_cells):
    """A copy of the trained model that carries a stored split with these test cells."""
    import shutil

    shutil.copytree(trained, out)
    meta = json.loads((out / "config.json").read_text())
    meta["setup"]["split"] = {"key": "split", "seed": 0, "test_cells": list(test_cells), "val_cells": []}
    (out / "config.json").write_text(json.dumps(meta))
    return out


def test_evaluate_uses_the_models_stored_split(files, trained, tmp_path):
    """--n-cells subsamples; a fresh split of the subsample would hold the model's training cells."""
    import mudata as md

    names = md.read_h5mu(files / "syn.h5mu").obs_names
    m = _with_split(trained, tmp_path / "m", names[::10])
    ev = tmp_path / "ev"
    res = _run(["evaluate", "-m", m, "--data", files / "syn.h5mu", "-o", ev, "--n-steps", "2", "--n-cells", "150",
                "--no-baselines", "--task", "translation", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    import re

    n_held = re.search(r"held-out cells: the (\d+) of the model's 30 stored test cells", res.stderr)
    assert n_held and 5 < int(n_held.group(1)) < 30, res.stderr
    # a model whose held-out cells are not in the data: refused, naming the split and --no-model-split
    m2 = _with_split(trained, tmp_path / "m2", ["not_a_cell_1", "not_a_cell_2"])
    res = _run(["evaluate", "-m", m2, "--data", files / "syn.h5mu", "-o", tmp_path / "ev2", "--n-steps", "2",
                "--no-baselines", "--task", "translation", "--device", "cpu"])
    line = _one_line_error(res)
    assert "2 test cells" in line and "--no-model-split" in line
    res = _run(["evaluate", "-m", m2, "--data", files / "syn.h5mu", "-o", tmp_path / "ev3", "--n-steps", "2",
                "--no-baselines", "--task", "translation", "--device", "cpu", "--no-model-split"])
    assert res.exit_code == 0, res.output


def test_biomarkers_command(tmp_path):
    import pandas as pd

    out = tmp_path / "bm"
    res = _run(["biomarkers", "--data", "mouse_mop", "--n-cells", "150", "-o", out])
    assert res.exit_code == 0, res.output
    tab = pd.read_csv(out / "biomarkers.csv")
    assert {"cell_type", "kind", "feature", "rank"} <= set(tab.columns)
    assert {"gene", "tf"} <= set(tab["kind"])
    assert (out / "regulators.csv").exists() and (out / "regulator_dotplot.png").exists()


def test_grn_command_with_motif_scan(files, trained, tmp_path):
    """`grn --fasta --motifs`: TF -> peak links from scanning a genome, TF -> gene edges exported."""
    import anndata as ad

    rng = np.random.default_rng(0)
    atac = ad.read_h5ad(files / "atac.h5ad")
    rna = ad.read_h5ad(files / "rna.h5ad")
    peaks = [p.split("-") for p in atac.var_names]
    size = max(int(e) for _, _, e in peaks) + 1000
    seqs = {c: bytearray(rng.choice(list(b"ACGT"), size).tobytes()) for c in sorted({c for c, _, _ in peaks})}
    site = b"AGATAAGATAAG"
    planted = []
    for j, (c, s, _) in enumerate(peaks[:40]):
        if j % 2 == 0:
            seqs[c][int(s) + 100:int(s) + 100 + len(site)] = site
            planted.append(atac.var_names[j])
    fasta = tmp_path / "genome.fa"
    fasta.write_text("".join(f">{c}\n{s.decode()}\n" for c, s in seqs.items()))
    motif = tmp_path / "motifs.jaspar"
    cols = {"A": [1, 97, 1, 97, 97, 1], "C": [1, 1, 1, 1, 1, 1], "G": [97, 1, 1, 1, 1, 97], "T": [1, 1, 97, 1, 1, 1]}
    motif.write_text(">M1\tGene0\n" + "".join(f"{b}  [ {' '.join(map(str, v))} ]\n" for b, v in cols.items()))
    # TSS of gene i at the centre of peak i
    tss = tmp_path / "tss.bed"
    tss.write_text("".join(f"{c}\t{s}\t{e}\t{g}\t0\t+\n" for (c, s, e), g in zip(peaks, rna.var_names)))
    out = tmp_path / "grn_out"
    res = _run(["grn", "-m", trained, "--data", files / "syn.h5mu", "--tss", tss, "--fasta", fasta,
                "--motifs", motif, "--tf", "Gene0,Gene1", "--max-cells", "10", "--out", out, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    tg = pd.read_csv(out / "tf_gene.csv")
    assert len(tg) > 0 and set(tg["source"]) == {"Gene0"}
    assert (out / "peak_gene.csv").exists() and (out / "tf_gene.graphml").exists()
    res = _run(["grn", "-m", trained, "--data", files / "syn.h5mu", "--tss", tss, "--fasta", tmp_path / "no.fa",
                "--tf", "Gene0", "--out", tmp_path / "x", "--device", "cpu"])
    assert res.exit_code == 2 and "no.fa" in res.output


def test_train_bad_precision_fails_before_reading_data(tmp_path):
    line = _one_line_error(_run(["train", "-o", tmp_path / "m", "--precision", "fp16"]))
    assert "precision" in line and not (tmp_path / "m").exists()
