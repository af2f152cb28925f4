"""Nothing lost, nothing silent (issue 18): writers never delete or replace files they did not write,
refuse existing outputs without --overwrite, check writability before the work, turn OS errors into
one-line messages; bad networks, labels, feature names and barcodes give clear errors."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import scdiffx_grn
from scdiffx_grn import (
    BarcodeMismatchError,
    FeatureMismatchError,
    InputDataError,
    OutputError,
    ScDiffusionX,
    ScdxError,
    settings,
)
from scdiffx_grn._io import MANIFEST, atomic_dir, atomic_path, output_dir
from scdiffx_grn.cli import app

from conftest import write_synthetic_files

settings.progress = False
md.set_options(pull_on_update=False)
runner = CliRunner()


def _run(args, **env):
    return runner.invoke(app, [str(a) for a in args], env={"SCDX_PROGRESS": "0", "SCDX_THREADS": "1", **env})


def _one_line_error(res):
    """Exit code 2 and one ``error:`` line (progress lines before it are fine), no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert len(lines) == 1 and res.stderr.rstrip().endswith(lines[0]), res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    return lines[0]



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    m = write_synthetic_files(d)
    peaks = [p.split("-") for p in m.mod["atac"].var_names]  # TSS of gene i in peak i
    (d / "tss.bed").write_text("".join(f"{c}\t{s}\t{e}\t{g}\t0\t+\n"
                                       for (c, s, e), g in zip(peaks, m.mod["rna"].var_names)))
    return d


@pytest.fixture(scope="module")
def trained(files):
    import torch

    torch.set_num_threads(1)
    out = files / "model"
    res = _run(["train", "--data", files / "syn.h5mu", "--out", out, "--ae-epochs", "2", "--diffusion-steps", "20",
                "--batch-size", "64", "--model-option", "width=16", "--model-option", "n_layers=1",
                "--model-option", "n_heads=2", "--model-option", "latent_dim=8", "--model-option", "token_dim=2",
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def project(files, tmp_path):
    """A user's project folder holding their input files."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for f in ("rna.h5ad", "atac.h5ad"):
        (proj / f).write_bytes((files / f).read_bytes())
    (proj / "notes.txt").write_text("my notes")
    return proj


def _user_files_intact(proj, files):
    assert (proj / "notes.txt").read_text() == "my notes"
    for f in ("rna.h5ad", "atac.h5ad"):
        assert (proj / f).read_bytes() == (files / f).read_bytes()


# ----------------------------------------------------------------------------- folder writers
def _grn_args(trained, files, out, *extra):
    return ["grn", "-m", trained, "--data", files / "syn.h5mu", "--max-cells", "8", "--tss", files / "tss.bed",
            "--tf", "Gene0,Gene1",
            "-o", out, "--device", "cpu", *extra]


def test_grn_refuses_a_users_folder_and_keeps_its_files(files, trained, project):
    line = _one_line_error(_run(_grn_args(trained, files, project)))
    assert "--overwrite" in line and "not a scdiffx-grn" in line
    _user_files_intact(project, files)
    res = _run(_grn_args(trained, files, project, "--overwrite"))
    assert res.exit_code == 0, res.output
    _user_files_intact(project, files)
    assert (project / "peak_gene.csv").exists()
    own = set(json.loads((project / MANIFEST).read_text())["files"])
    assert "peak_gene.csv" in own and not own & {"rna.h5ad", "atac.h5ad", "notes.txt"}
    # the folder now holds our manifest: a rerun needs no --overwrite and still keeps the user's files;
    # a file of the first run that the second does not produce is removed (ours), the others stay
    assert (project / "tf_gene.csv").exists()
    res = _run(_grn_args(trained, files, project, "--tf-prior", "none"))
    assert res.exit_code == 0, res.output
    _user_files_intact(project, files)
    assert (project / "peak_gene.csv").exists() and not (project / "tf_gene.csv").exists()


def test_a_new_file_named_like_a_users_file_is_refused(files, trained, project):
    (project / "peak_gene.csv").write_text("the user's own table")
    line = _one_line_error(_run(_grn_args(trained, files, project, "--overwrite")))
    assert "peak_gene.csv" in line and "nothing was changed" in line
    assert (project / "peak_gene.csv").read_text() == "the user's own table"
    _user_files_intact(project, files)


def test_evaluate_refuses_a_users_folder(files, trained, project):
    line = _one_line_error(_run(["evaluate", "-m", trained, "--data", files / "syn.h5mu", "-o", project,
                                 "--n-steps", "2", "--no-baselines", "--task", "translation"]))
    assert "--overwrite" in line
    _user_files_intact(project, files)
    assert not (project / "table.csv").exists()


def test_biomarkers_refuses_a_users_folder(files, project):
    line = _one_line_error(_run(["biomarkers", "--data", files / "syn.h5mu", "-o", project]))
    assert "--overwrite" in line
    _user_files_intact(project, files)


def test_train_refuses_a_users_folder_and_overwrite_keeps_its_files(files, project):
    args = ["train", "--data", files / "syn.h5mu", "--out", project, "--ae-epochs", "1", "--diffusion-steps", "2",
            "--model-option", "width=16", "--model-option", "n_layers=1", "--model-option", "n_heads=2",
            "--model-option", "latent_dim=8", "--model-option", "token_dim=2", "--device", "cpu"]
    line = _one_line_error(_run(args))
    assert "--overwrite" in line
    res = _run(args + ["--overwrite"])
    assert res.exit_code == 0, res.output
    _user_files_intact(project, files)
    ScDiffusionX.load(project, device="cpu")


def test_demo_keeps_a_file_added_to_an_earlier_report(tmp_path):
    from scdiffx_grn.report import run_demo

    out = tmp_path / "report"
    run_demo(out=str(out), model=str(tmp_path / "missing_model"))
    assert (out / "report.html").exists() and (out / MANIFEST).exists()
    (out / "my_notes.txt").write_text("keep me")
    (out / "tables" / "my_table.csv").write_text("a,b\n1,2\n")
    run_demo(out=str(out), model=str(tmp_path / "missing_model"))
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert (out / "tables" / "my_table.csv").exists()
    assert (out / "report.html").exists()


def test_demo_recognises_an_old_report_without_manifest(tmp_path):
    from scdiffx_grn.report import run_demo

    out = tmp_path / "old"
    (out / "tables").mkdir(parents=True)
    (out / "report.html").write_text("<html></html>")
    (out / "sections.json").write_text("[]")
    (out / "tables" / "x.csv").write_text("a\n")
    run_demo(out=str(out), model=str(tmp_path / "missing_model"))
    assert "missing_model" in (out / "report.html").read_text()


# ----------------------------------------------------------------------------- file writers
def test_translate_refuses_an_existing_file_and_a_folder(files, trained, tmp_path, monkeypatch):
    out = tmp_path / "pred.h5ad"
    out.write_text("precious")
    base = ["translate", "-m", trained, "--data", files / "syn.h5mu", "--n-cells", "20", "--n-steps", "2"]
    line = _one_line_error(_run(base + ["-o", out]))
    assert "--overwrite" in line and "pred.h5ad" in line
    assert out.read_text() == "precious"
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(_run(base + ["-o", "."]))
    assert "folder" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no '..old.*' / temporary leftovers
    res = _run(base + ["-o", out, "--overwrite"])
    assert res.exit_code == 0, res.output
    pred = ad.read_h5ad(out)
    assert "cell_type" in pred.obs  # the cells' annotations are kept
    assert set(pred.obs["cell_type"].astype(str)) <= {"type0", "type1", "type2"}


def test_generate_refuses_an_existing_file(trained, tmp_path):
    out = tmp_path / "g.h5mu"
    out.write_text("precious")
    line = _one_line_error(_run(["generate", "-m", trained, "-o", out, "-n", "3", "--n-steps", "2"]))
    assert "--overwrite" in line
    assert out.read_text() == "precious"


def test_translate_use_labels_without_label_column(files, trained, tmp_path):
    m = md.read_h5mu(files / "syn.h5mu")
    for a in [m, *m.mod.values()]:
        a.obs = a.obs.drop(columns=[c for c in a.obs.columns if "cell_type" in c])
    m.write(tmp_path / "nolab.h5mu")
    line = _one_line_error(_run(["translate", "-m", trained, "--data", tmp_path / "nolab.h5mu", "-o",
                                 tmp_path / "p.h5ad", "--use-labels", "--n-steps", "2"]))
    assert "cell_type" in line and "--use-labels" in line
    assert not (tmp_path / "p.h5ad").exists()


# ----------------------------------------------------------------------------- an output never replaces an input
def _digests(*paths):
    """sha256 of every file under ``paths`` (files or folders)."""
    import hashlib

    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("how", ["same", "symlinked_input", "symlinked_output", "hard_link", "metrics"])
def test_translate_never_writes_onto_its_input(files, trained, tmp_path, overwrite, how):
    rna, atac = tmp_path / "rna.h5ad", tmp_path / "atac.h5ad"
    for f in (rna, atac):
        f.write_bytes((files / f.name).read_bytes())
    before = _digests(rna, atac)
    given, out, extra = rna, rna, []
    if how == "symlinked_input":
        given = tmp_path / "link.h5ad"
        given.symlink_to(rna)
    elif how == "symlinked_output":
        out = tmp_path / "link.h5ad"
        out.symlink_to(rna)
    elif how == "hard_link":
        out = tmp_path / "hard.h5ad"
        os.link(rna, out)
    elif how == "metrics":
        out, extra = tmp_path / "pred.h5ad", ["--metrics", atac]
    args = ["translate", "-m", trained, "--rna", given, "--atac", atac, "-o", out, "--n-cells", "20",
            "--device", "cpu", *extra] + (["--overwrite"] if overwrite else [])
    line = _one_line_error(_run(args))
    assert ("--atac" if how == "metrics" else "--rna") in line and "choose another" in line, line
    assert _digests(rna, atac) == before  # the raw counts are byte-identical
    assert not (tmp_path / "pred.h5ad").exists()


def _refused_cases(files, model, proj):
    data = proj / "syn.h5mu"
    tss = ["--tss", files / "tss.bed", "--max-cells", "8", "--tf", "Gene0,Gene1"]
    return {
        "grn_onto_model_folder": (["grn", "-m", model, "--data", data, *tss, "-o", model], "--model"),
        "grn_around_data": (["grn", "-m", model, "--data", data, *tss, "-o", proj, "--overwrite"], "--data"),
        "grn_onto_tss": (["grn", "-m", model, "--data", data, *tss, "-o", files / "tss.bed"], "--tss"),
        "biomarkers_around_data": (["biomarkers", "--data", data, "-o", proj, "--overwrite"], "--data"),
        "evaluate_onto_model": (["evaluate", "-m", model, "--data", data, "-o", model, "--overwrite",
                                 "--n-steps", "2", "--no-baselines"], "--model"),
        "screen_around_targets": (["screen", "-m", model, "--data", files / "syn.h5mu", "-t", f"@{proj / 't.txt'}",
                                   "-o", proj, "--overwrite"], "--target"),
        "train_around_data": (["train", "--data", data, "-o", proj, "--overwrite", "--ae-epochs", "1",
                               "--diffusion-steps", "2"], "--data"),
        "generate_onto_model_file": (["generate", "-m", model, "-o", model / "model.pt", "--overwrite",
                                      "-n", "3", "--n-steps", "2"], "--model"),
        "generate_onto_config": (["generate", "-m", model, "--config", proj / "c.json", "-o", proj / "c.json",
                                  "--overwrite"], "--config"),
        "demo_onto_model": (["demo", "-m", model, "-o", model, "--overwrite", "--section", "generation"], "--model"),
    }


@pytest.mark.parametrize("case", [
    "grn_onto_model_folder", "grn_around_data", "grn_onto_tss", "biomarkers_around_data", "evaluate_onto_model",
    "screen_around_targets", "train_around_data", "generate_onto_model_file", "generate_onto_config",
    "demo_onto_model"])
def test_writers_never_write_onto_or_around_their_inputs(files, trained, tmp_path, case):
    """Every writer refuses an output that is one of its inputs, a file of an input folder (the model),
    or a folder holding an input, with or without --overwrite; the inputs stay byte-identical."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained, model)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "syn.h5mu").write_bytes((files / "syn.h5mu").read_bytes())
    (proj / "t.txt").write_text("Gene1\n")
    (proj / "c.json").write_text('{"n_steps": 2, "n_cells": 3}')
    args, opt = _refused_cases(files, model, proj)[case]
    before = _digests(model, proj, files / "tss.bed")
    line = _one_line_error(_run(args))
    assert opt in line and "choose another --out" in line, line
    assert _digests(model, proj, files / "tss.bed") == before
    assert sorted(p.name for p in proj.iterdir()) == ["c.json", "syn.h5mu", "t.txt"]


# ----------------------------------------------------------------------------- permissions, OS errors
def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as t:
            t.write_text("x")
        with atomic_dir(tmp_path / "d") as t:
            (t / "a.txt").write_text("x")
            with atomic_path(t / "b.txt") as t2:
                t2.write_text("y")
        os.umask(0o002)
        with atomic_path(tmp_path / "g.txt") as t:
            t.write_text("x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "f.txt") == 0o644
    assert mode(tmp_path / "d") == 0o755
    assert mode(tmp_path / "d" / "a.txt") == 0o644 and mode(tmp_path / "d" / "b.txt") == 0o644
    assert mode(tmp_path / "g.txt") == 0o664


def test_cli_model_is_group_readable_and_has_training_json(trained):
    assert stat.S_IMODE(trained.stat().st_mode) & 0o055 == 0o055 & ~os.umask(os.umask(0))
    for f in ("model.pt", "config.json"):
        assert stat.S_IMODE((trained / f).stat().st_mode) & 0o044 == 0o044 & ~os.umask(os.umask(0))
    tj = json.loads((trained / "training.json").read_text())
    assert tj["train"]["diffusion_steps"] == 20 and tj["n_cells"] == 300


def test_unwritable_output_fails_before_training(files, tmp_path, monkeypatch):
    import tempfile

    import scdiffx_grn._io as io_mod

    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        if str(k.get("prefix", "")).startswith(".scdx-write-test."):
            raise OSError(errno.EROFS, "Read-only file system", str(k.get("dir")))
        return real(*a, **k)

    monkeypatch.setattr(io_mod.tempfile, "mkstemp", mkstemp)
    called = []
    monkeypatch.setattr(ScDiffusionX, "train", lambda self, *a, **k: called.append(1))
    line = _one_line_error(_run(["train", "--data", files / "syn.h5mu", "--out", tmp_path / "m", "--device", "cpu"]))
    assert "read-only" in line.lower() and str(tmp_path / "m") in line
    assert not called  # refused before the work


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_fails_before_training(files, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = _one_line_error(_run(["train", "--data", files / "syn.h5mu", "--out", ro / "m"]))
        assert str(ro) in line
    finally:
        ro.chmod(0o755)


def test_disk_full_at_save_is_one_line(files, tmp_path, monkeypatch):
    import scdiffx_grn.model._model as model_mod

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(model_mod.torch, "save", full)
    out = tmp_path / "m"
    line = _one_line_error(_run(["train", "--data", files / "syn.h5mu", "--out", out, "--ae-epochs", "1",
                                 "--diffusion-steps", "1", "--model-option", "width=16", "--model-option",
                                 "n_layers=1", "--model-option", "n_heads=2", "--model-option", "token_dim=2",
                                 "--device", "cpu"]))
    assert "cannot write" in line and "m" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written folder, no temporary leftovers


def test_disk_full_writing_a_file_is_one_line_and_keeps_the_old_file(files, trained, tmp_path, monkeypatch):
    out = tmp_path / "pred.h5ad"
    out.write_text("old")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write", full)
    line = _one_line_error(_run(["translate", "-m", trained, "--data", files / "syn.h5mu", "--n-cells", "10",
                                 "--n-steps", "2", "-o", out, "--overwrite"]))
    assert "disk is full" in line and "pred.h5ad" in line
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.h5ad"]


def test_output_dir_api(tmp_path):
    user = tmp_path / "u"
    user.mkdir()
    (user / "data.txt").write_text("x")
    with pytest.raises(OutputError, match="not a scdiffx-grn"):
        with output_dir(user):
            pass
    with output_dir(user, overwrite=True) as t:
        (t / "res.csv").write_text("1")
    assert (user / "data.txt").exists() and (user / "res.csv").exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        with output_dir(f):
            pass
    assert issubclass(OutputError, ScdxError) and issubclass(OutputError, OSError)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("content,needle", [
    ("source,target\nGene0,Gene5\nGene1,Gene6\n", "weight"),
    ("source,target,weight\nGene0,Gene5,strong\nGene1,Gene6,weak\n", "not numbers"),
    ("regulator_name,gene_x\nA,B\n", "source"),
])
def test_bad_network_files_are_named(files, tmp_path, content, needle):
    p = tmp_path / "net.csv"
    p.write_text(content)
    line = _one_line_error(_run(["biomarkers", "--data", files / "syn.h5mu", "--grn", p, "-o", tmp_path / "bm"]))
    assert needle in line and "net.csv" in line
    assert not (tmp_path / "bm").exists()


def test_network_aliases_and_tsv(tmp_path):
    """tf, gene, mor columns in a TSV file: mapped to source, target, weight."""
    from scdiffx_grn.biomarkers._rank import model_network
    from scdiffx_grn.cli import _read_table

    p = tmp_path / "net.tsv"
    p.write_text("tf\tgene\tmor\nGene0\tGene5\t1\nGene1\tGene6\t-1\n")
    net = model_network(_read_table(p, "net"))
    assert list(net[["source", "target", "weight"]].itertuples(index=False, name=None)) == [
        ("Gene0", "Gene5", 1.0), ("Gene1", "Gene6", -1.0)]


def test_rank_biomarkers_rejects_weightless_or_text_weights(synthetic_mdata):
    from scdiffx_grn import tl

    for net, needle in ((pd.DataFrame({"source": ["Gene0"], "target": ["Gene5"]}), "weight"),
                        (pd.DataFrame({"source": ["Gene0"], "target": ["Gene5"], "weight": ["strong"]}),
                         "not numbers")):
        with pytest.raises(InputDataError, match=needle):
            tl.rank_biomarkers(synthetic_mdata, grn_key=net, reference=None)


def test_biomarkers_with_tsv_network_of_tf_gene_mor(tmp_path):
    p = tmp_path / "net.tsv"
    p.write_text("tf\tgene\tmor\nSox10\tPlp1\t1\nOlig2\tMbp\t1\n")
    res = _run(["biomarkers", "--data", "mouse_mop", "--n-cells", "150", "--grn", p, "-o", tmp_path / "bm"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bm" / "biomarkers.csv").exists()


# ----------------------------------------------------------------------------- grn
def test_grn_tf_prior_file_without_tf_option(files, trained, tmp_path):
    atac = ad.read_h5ad(files / "atac.h5ad")
    prior = tmp_path / "prior.tsv"
    prior.write_text("tf\tpeak\n" + "".join(f"Gene0\t{p}\n" for p in atac.var_names[:30]))
    out = tmp_path / "g"
    res = _run(["grn", "-m", trained, "--data", files / "syn.h5mu", "--max-cells", "8", "--tss", files / "tss.bed",
                "--tf-prior", prior,
                "-o", out, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (out / "tf_gene.csv").exists()


def test_grn_single_cell_type_writes_the_networks(files, trained, tmp_path):
    out = tmp_path / "g1"
    res = _run(["grn", "-m", trained, "--data", files / "syn.h5mu", "--max-cells", "8", "--tss", files / "tss.bed",
            "--tf", "Gene0,Gene1",
                "-c", "type0", "-o", out, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (out / "peak_gene.csv").exists() and (out / "tf_gene.csv").exists()
    assert not (out / "tf_specificity.png").exists() and "two cell types" in res.stderr


def test_grn_unknown_cell_type_fails_before_the_work(files, trained, tmp_path):
    line = _one_line_error(_run(["grn", "-m", trained, "--data", files / "syn.h5mu", "-c", "L2/3", "--tss",
                                 files / "tss.bed",
                                 "-o", tmp_path / "g", "--device", "cpu"]))
    assert "L2/3" in line and "type0" in line


# ----------------------------------------------------------------------------- screen
def test_unknown_target_error_names_the_report_option(files, trained, tmp_path):
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1,NotAGene",
                                 "-o", tmp_path / "scr"]))
    assert "NotAGene" in line and "--on-unknown report" in line
    assert not (tmp_path / "scr").exists()


def test_all_unknown_screen_with_report_leaves_no_folder(files, trained, tmp_path):
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Nope1,Nope2",
                                 "--on-unknown", "report", "-o", tmp_path / "scr"]))
    assert "none of the 2" in line and "Nope1" in line
    assert not (tmp_path / "scr").exists()


def test_screen_points_to_summary_csv(files, trained, tmp_path):
    out = tmp_path / "scr"
    res = _run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1", "-o", out, "--n-steps", "2",
                "--n-samples", "1", "--n-cells", "60", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert str(out / "summary.csv") in res.stderr and (out / "summary.csv").exists()


def test_screen_refuses_a_users_folder(files, trained, project):
    line = _one_line_error(_run(["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", "Gene1",
                                 "-o", project]))
    assert "--overwrite" in line
    _user_files_intact(project, files)
    assert not (project / "done.json").exists()


def test_screen_killed_before_its_first_target_resumes_without_overwrite(files, trained, tmp_path):
    """kill -9 of `screen` once it has started writing its folder: the rerun of the same command resumes
    there without --overwrite and gives the results of an uninterrupted run."""
    import signal
    import time

    out, ref = tmp_path / "s_kill", tmp_path / "s_ref"
    genes = ",".join(f"Gene{i}" for i in range(60))
    args = ["screen", "-m", trained, "--data", files / "syn.h5mu", "-t", genes, "--device", "cpu"]
    env = {**os.environ, "SCDX_PROGRESS": "0", "SCDX_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(scdiffx_grn.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "scdiffx_grn.cli", *map(str, args), "-o", str(out)], env=env)
    try:
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 300 and not (out / "config.json").exists():
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the screen ended before it could be interrupted"
    assert (out / "screen.lock").exists() and not (out / "summary.csv").exists()
    res = _run(args + ["-o", out])
    assert res.exit_code == 0, res.output
    assert not (out / "screen.lock").exists()
    assert _run(args + ["-o", ref]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(ref / "summary.csv"))


# ----------------------------------------------------------------------------- feature names, barcodes
def test_upper_case_genes_hint_at_case(trained, files):
    model = ScDiffusionX.load(trained, device="cpu")
    m = md.read_h5mu(files / "syn.h5mu")
    m.mod["rna"].var_names = [g.upper() for g in m.mod["rna"].var_names]
    with pytest.raises(FeatureMismatchError, match="differ only in upper / lower case"):
        model.subset_to_model(m)
    with pytest.raises(FeatureMismatchError, match="upper / lower case"):
        model._check_features(m, ("rna",))


@pytest.mark.parametrize("fmt", ["{c}:{s}-{e}", "{c}_{s}_{e}"])
def test_peak_name_formats_are_mapped(trained, files, fmt):
    model = ScDiffusionX.load(trained, device="cpu")
    m = md.read_h5mu(files / "syn.h5mu")
    names = [fmt.format(c=c, s=s, e=e) for c, s, e in (p.split("-") for p in m.mod["atac"].var_names)]
    m.mod["atac"].var_names = names
    with pytest.raises(FeatureMismatchError, match="another format"):
        model._check_features(m, ("atac",))
    sub = model.subset_to_model(m)
    assert list(sub.mod["atac"].var_names) == list(model.atac_var_names)
    ScDiffusionX.setup_mudata(sub, labels=["cell_type"])
    pred = model.translate(sub, direction="atac->rna", seed=0)
    assert pred.n_obs == m.n_obs


def test_unrelated_peak_names_are_named(trained, files):
    model = ScDiffusionX.load(trained, device="cpu")
    m = md.read_h5mu(files / "syn.h5mu")
    m.mod["atac"].var_names = [f"peak{i}" for i in range(m.mod["atac"].n_vars)]
    with pytest.raises(FeatureMismatchError, match="not chrom-start-end"):
        model.subset_to_model(m)


def test_duplicated_barcodes_in_one_modality_api(trained, files):
    model = ScDiffusionX.load(trained, device="cpu")
    m = md.read_h5mu(files / "syn.h5mu")
    names = list(m.mod["atac"].obs_names)
    names[1] = names[0]
    m.mod["atac"].obs_names = names
    with pytest.raises(BarcodeMismatchError, match="duplicated"):
        model.subset_to_model(m)
    with pytest.raises(BarcodeMismatchError, match="duplicated"):
        model.translate(m, direction="atac->rna")


# ----------------------------------------------------------------------------- CLI hints, settings, API
def test_cli_does_not_suggest_python_only_options(files, tmp_path):
    bad = ad.read_h5ad(files / "rna.h5ad")
    bad.X = np.log1p(bad.X.toarray() * 1.5)
    del bad.layers["counts"]
    bad.write(tmp_path / "rna_norm.h5ad")
    line = _one_line_error(_run(["train", "--rna", tmp_path / "rna_norm.h5ad", "--atac", files / "atac.h5ad",
                                 "--out", tmp_path / "m"]))
    assert "load with require_counts=False" not in line and "command line needs raw counts" in line
    atac = ad.read_h5ad(files / "atac.h5ad")
    atac[:250].copy().write(tmp_path / "atac_part.h5ad")
    line = _one_line_error(_run(["train", "--rna", files / "rna.h5ad", "--atac", tmp_path / "atac_part.h5ad",
                                 "--out", tmp_path / "m"]))
    assert "Pass join='inner'" not in line and "in Python" in line


def test_scdx_threads_is_read_by_the_python_api():
    code = ("import scdiffx_grn as s, torch; assert s.settings.threads == 3, s.settings.threads; "
            "s.ScDiffusionX; from scdiffx_grn._settings import get_device; get_device('cpu'); "
            "print(torch.get_num_threads())")
    env = {**os.environ, "SCDX_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_scdx_threads_survive_an_openmp_reset_by_another_library():
    # numba's OpenMP layer (decoupler's kernels) resets the process's thread count to the number of
    # cores; training, translation and the engines put settings.threads back when they start
    code = ("import scdiffx_grn as s, torch; from scdiffx_grn._settings import get_device, _apply_threads; "
            "get_device('cpu'); torch.set_num_threads(2); _apply_threads(); print(torch.get_num_threads())")
    env = {**os.environ, "SCDX_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    import inspect

    from scdiffx_grn.model import _train, _translate
    from scdiffx_grn.perturb import _engine

    for fn in (_train.Trainer.run, _translate.translate_cells, _engine.PairedEngine.__init__):
        assert "_apply_threads()" in inspect.getsource(fn), fn


def test_report_is_an_attribute():
    assert scdiffx_grn.report.run_demo is not None
    assert "report" in dir(scdiffx_grn)


def test_figures_have_legends_and_readable_ticks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scdiffx_grn import pl
    from scdiffx_grn.biomarkers import enrichment_barplot
    from scdiffx_grn.grn import grn_network, grn_specificity_heatmap

    net = pd.DataFrame({"source": ["A", "A", "B", "B"] * 2, "target": ["x", "y", "x", "z"] * 2,
                        "weight": [1.0, -0.5, 0.7, 0.2, 0.3, 0.1, 0.9, -0.4],
                        "cell_type": ["c1"] * 4 + ["c2"] * 4})
    fig = grn_network(net[net.cell_type == "c1"], cell_type="c1")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("activation" in t for t in labels) and any("repression" in t for t in labels)
    plt.close(fig)
    fig = grn_specificity_heatmap(net, key=None)
    assert min(t.get_fontsize() for t in fig.axes[0].get_yticklabels()) >= 9
    plt.close(fig)
    enr = pd.DataFrame({"group": ["g"] * 3, "term": ["t1", "t2", "t3"], "nes": [2.0, 1.0, -1.0],
                        "fdr": [0.01, 0.1, 0.5]})
    fig = enrichment_barplot(enr)
    assert fig.legends and "FDR < 0.05" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    summ = pd.DataFrame({"perturbation": ["p1", "p2"], "cell_type": ["c1", "c1"], "n_sig": [3, 4]})
    fig = pl.screen_heatmap(summ)
    assert min(t.get_fontsize() for t in fig.axes[0].get_xticklabels()) >= 9
    plt.close(fig)
