"""The HTML report builder and a fast, reduced run of the demo (``scdiffx-grn demo``)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from scdiffx_grn import settings

settings.progress = False

# every figure / table the demo report must hold, by section
EXPECTED_FIGURES = {
    "data": ["qc_hist"],
    "generation": ["umap_rna", "umap_atac"],
    "translation": ["translation_per_type"],
    "grn": ["grn_network", "grn_specificity"],
    "screen": ["screen_heatmap", "volcano"],
    "biomarkers": ["regulator_dotplot"],
}
EXPECTED_TABLES = {
    "data": ["data_summary", "cell_types", "model"],
    "generation": ["generation_metrics"],
    "translation": ["translation_metrics"],
    "grn": ["grn_sizes", "grn_top_edges"],  # grn_predictive: only when the run has enough test cells
    "screen": ["screen_summary"],
    "biomarkers": ["biomarkers_tf", "biomarkers_gene"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Parsed(HTMLParser):
    """Collects sections, their figures (<img> data URIs) and tables, and external references."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.figure: str | None = None
        self.external: list[str] = []
        self.tables_total = 0
        self.errors: dict[str, str] = {}
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key)
            if v and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(v)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "section":
            self.current = a.get("data-section")
            self.sections[self.current] = {"status": a.get("data-status"), "figures": {}, "tables": [], "imgs": 0}
        elif tag == "figure" and self.current:
            self.figure = a.get("data-figure")
        elif tag == "img" and self.current:
            self.sections[self.current]["imgs"] += 1
            if self.figure:
                self.sections[self.current]["figures"][self.figure] = a.get("src", "")
        elif tag == "div" and "data-table" in a and self.current:
            self.sections[self.current]["tables"].append(a["data-table"])
        elif tag == "table":
            self.tables_total += 1
        elif tag == "div" and a.get("class") == "error":
            self._in_error = True

    def handle_endtag(self, tag):
        if tag == "figure":
            self.figure = None
        if tag == "div":
            self._in_error = False

    def handle_data(self, data):
        if self._in_error and self.current:
            self.errors[self.current] = self.errors.get(self.current, "") + data


def _parse(path) -> _Parsed:
    p = _Parsed()
    p.feed(path.read_text())
    return p


def _is_png_uri(src: str) -> bool:
    prefix = "data:image/png;base64,"
    if not src.startswith(prefix):
        return False
    return base64.b64decode(src[len(prefix):])[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- builder
def test_report_builder_self_contained(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scdiffx_grn.report import Report

    rep = Report("t <title>", "sub")
    with rep.section("a", "Section A") as s:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        s.figure(fig, "a line", name="line")
        s.table(pd.DataFrame({"x": [1.0, np.nan], "name": ["<b>", "y"]}), "tab", name="tab")
        s.text("plain & simple")
    with rep.section("b", "Section B") as s:
        s.text("before the error")
        raise ValueError("boom <here>")
    with rep.section("c", "Section C") as s:
        s.text("after the error")
    assert [x.key for x in rep.failed] == ["b"]
    out = rep.write(tmp_path / "r" / "report.html")
    html = out.read_text()
    assert "&lt;b&gt;" in html and "<td class=\"l\"><b>" not in html
    assert "<title>t &lt;title&gt;</title>" in html
    p = _parse(out)
    assert not p.external
    assert p.sections["a"]["status"] == "ok" and p.sections["b"]["status"] == "failed"
    assert p.sections["c"]["status"] == "ok"
    assert _is_png_uri(p.sections["a"]["figures"]["line"])
    assert p.sections["a"]["tables"] == ["tab"]
    assert "ValueError: boom <here>" in p.errors["b"]
    assert "1 of 3 sections failed" in html


# ----------------------------------------------------------------------------- reduced demo
@pytest.fixture
def tiny_mop_model(tiny_mop_checkpoint):
    """A very small model on 300 mouse cells, all genes and the 400 most frequent peaks: the
    session's read-only ``tiny_mop_checkpoint``."""
    return tiny_mop_checkpoint


FAST = dict(n_cells=240, n_generate=90, n_translate=60, n_steps=2, n_tfs=2, n_cell_types=2, grn_cells=15,
            screen_cells=12, n_samples=1, basis="pca", device="cpu", dpi=50)


def test_demo_report_has_every_section(tiny_mop_model, tmp_path):
    from scdiffx_grn.report import SECTIONS, run_demo

    out = tmp_path / "demo_report"
    res = run_demo(out=str(out), model=str(tiny_mop_model), **FAST)
    p = _parse(res.report)
    assert res.report == out / "report.html" and res.report.exists()
    assert res.failed == [], p.errors
    assert not p.external, p.external
    assert list(p.sections) == list(SECTIONS)
    for key in SECTIONS:
        sec = p.sections[key]
        assert sec["status"] == "ok", (key, p.errors.get(key))
        for fig in EXPECTED_FIGURES[key]:
            assert fig in sec["figures"], f"figure {fig!r} missing from section {key!r}"
            assert _is_png_uri(sec["figures"][fig]), f"figure {fig!r} is not an inline PNG"
        for tab in EXPECTED_TABLES[key]:
            assert tab in sec["tables"], f"table {tab!r} missing from section {key!r}"
    assert p.tables_total >= sum(len(v) for v in EXPECTED_TABLES.values())
    # side outputs
    status = json.loads((out / "sections.json").read_text())
    assert [s["status"] for s in status] == ["ok"] * len(SECTIONS)
    for tabs in EXPECTED_TABLES.values():
        for t in tabs:
            assert (out / "tables" / f"{t}.csv").exists()
    # running again replaces the previous report in place
    res2 = run_demo(out=str(out), model=str(tiny_mop_model), sections=("data",), **FAST)
    p2 = _parse(res2.report)
    assert p2.sections["generation"]["status"] == "skipped"


def test_demo_section_failure_is_shown_and_exit_nonzero(tiny_mop_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scdiffx_grn.cli import app
    from scdiffx_grn.report import _demo

    def broken(*a, **k):
        raise RuntimeError("GRN module exploded")

    monkeypatch.setattr(_demo, "_grn_section", broken)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--model", str(tiny_mop_model), "--n-cells", "200",
                                   "--n-steps", "2", "--n-generate", "60", "--n-translate", "40",
                                   "--section", "grn", "--section", "biomarkers", "--device", "cpu"],
                             env={"SCDX_PROGRESS": "0"})
    assert res.exit_code == 1, res.output
    assert "grn" in res.stderr and "report:" in res.stdout
    p = _parse(out / "report.html")
    assert p.sections["grn"]["status"] == "failed"
    assert "GRN module exploded" in p.errors["grn"]
    assert p.sections["biomarkers"]["status"] == "ok"  # later sections still ran
    assert p.sections["generation"]["status"] == "skipped"


def test_demo_unusable_model_and_unsafe_out(tmp_path):
    from scdiffx_grn import ScdxError
    from scdiffx_grn.report import run_demo

    res = run_demo(out=str(tmp_path / "r"), model=str(tmp_path / "missing_model"), **FAST)
    assert res.failed == ["data"]
    p = _parse(res.report)
    assert "missing_model" in p.errors["data"]
    assert all(p.sections[k]["status"] == "skipped" for k in ("generation", "screen"))
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "thesis.tex").write_text("x")
    with pytest.raises(ScdxError, match="not a scdiffx-grn report"):
        run_demo(out=str(keep), model=str(tmp_path / "missing_model"))
    assert (keep / "thesis.tex").exists()
    # out-of-range sizes raise before anything is written (was: a failed "data" section)
    from scdiffx_grn import OptionError

    for k in ("n_cells", "n_generate", "n_steps"):
        with pytest.raises(OptionError, match=f"{k} must be an integer >= 1, got -5"):
            run_demo(out=str(tmp_path / "r2"), model=str(tmp_path / "missing_model"), **{**FAST, k: -5})
    assert not (tmp_path / "r2").exists()


def test_grn_command_exports_cytoscape_files(tiny_mop_model, tmp_path):
    import networkx as nx
    from typer.testing import CliRunner

    from scdiffx_grn.cli import app

    out = tmp_path / "grn"
    res = CliRunner().invoke(app, ["grn", "-m", str(tiny_mop_model), "--data", "mouse_mop", "--n-cells", "150",
                                   "--max-cells", "8", "-c", "L2/3", "-c", "L6", "-o", str(out), "--device", "cpu"],
                             env={"SCDX_PROGRESS": "0"})
    assert res.exit_code == 0, res.output
    pg = pd.read_csv(out / "peak_gene.csv")
    tg = pd.read_csv(out / "tf_gene.csv")
    assert len(pg) and len(tg)
    assert set(tg["cell_type"]) <= {"L2/3", "L6"}
    g = nx.read_graphml(out / "tf_gene.graphml")
    assert g.number_of_edges() == len(tg)
    assert (out / "tf_gene.L2_3.graphml").exists()


def test_demo_organism_follows_the_genome(monkeypatch):
    """An hg genome makes the report's TF lists and reference networks human (mouse otherwise), and the
    CLI's demo takes --genome."""
    from typer.testing import CliRunner

    from scdiffx_grn.cli import app
    from scdiffx_grn.report import _demo

    assert _demo._organism(_demo.DemoConfig(genome="hg38")) == "human"
    assert _demo._organism(_demo.DemoConfig()) == "mouse"
    import scdiffx_grn.datasets as ds

    seen = {}
    monkeypatch.setattr(ds, "tf_list", lambda genes, **kw: seen.update(kw) or ["X"])
    assert _demo._demo_tfs(["X"], _demo._organism(_demo.DemoConfig(genome="hg38"))) == ["X"]
    assert seen["organism"] == "human"
    assert "--genome" in CliRunner().invoke(app, ["demo", "--help"]).output
