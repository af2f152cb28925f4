"""The package's shape: no import cycles, small model files, each lookup written once.

These read the source (``ast`` and text), so they fail when a change re-introduces a cycle or a
second copy of a lookup that the registry (``scdiffx_grn._registry``) owns.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "scdiffx_grn"
SOURCES = sorted(ROOT.rglob("*.py"))


def _module(p: Path) -> str:
    parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    base = ROOT.parent / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def import_graph() -> nx.DiGraph:
    """Edges module -> imported package module, for every import (top level or inside functions)."""
    g = nx.DiGraph()
    for p in SOURCES:
        m = _module(p)
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        g.add_node(m)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    tgt = ".".join(base + ([node.module] if node.module else []))
                else:
                    tgt = node.module or ""
                if not tgt.startswith("scdiffx_grn"):
                    continue
                for t in [tgt] + [f"{tgt}.{a.name}" for a in node.names]:
                    if _exists(t) and t != m:
                        g.add_edge(m, t)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("scdiffx_grn") and _exists(a.name) and a.name != m:
                        g.add_edge(m, a.name)
    return g


def test_no_import_cycles():
    g = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_packages_are_layered():
    """Between sub-packages too: the registry and the leaf modules import no analysis package, and
    no two packages import each other."""
    g = import_graph()

    def top(m: str) -> str:
        parts = m.split(".")
        return parts[1] if len(parts) > 1 else "scdiffx_grn"

    h = nx.DiGraph((top(a), top(b)) for a, b in g.edges if top(a) != top(b))
    cycles = [sorted(c) for c in nx.strongly_connected_components(h) if len(c) > 1]
    assert not cycles, f"package-level import cycles: {cycles}"
    for leaf in ("_errors", "_validate", "_matrix", "_registry", "_store", "_io", "_settings", "_vocab", "_samplers"):
        allowed = {"_errors", "_validate", "_matrix", "_settings", "_vocab"}
        assert set(h.successors(leaf)) <= allowed if leaf in h else True, (leaf, sorted(h.successors(leaf)))


def test_the_cycle_check_can_fail(tmp_path):
    g = nx.DiGraph([("a", "b"), ("b", "a")])
    assert [c for c in nx.strongly_connected_components(g) if len(c) > 1]


@pytest.mark.parametrize("path", sorted((ROOT / "model").glob("*.py")), ids=lambda p: p.name)
def test_model_files_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= 520, f"{path.name} has {n} lines: split it along module / plan / pipeline / facade lines"


def _code_lines(pattern: str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for p in SOURCES:
        rel = str(p.relative_to(ROOT))
        if rel in exclude:
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if rx.search(code) and "``" not in code and not code.strip().startswith(('"', "'", "-", "*")):
                hits.append(f"{rel}:{i}: {line.strip()}")
    return hits


def test_log_normalisation_written_once():
    # log1p of counts per 10k lives in _registry.log_normalize only
    hits = _code_lines(r"log1p\(.*1e4|1e4.*log1p\(|log1p\(.*target_sum|log1p\(.*\* *scale\[", exclude=("_registry.py",))
    # decoding rho (proportions) to log1p(1e4 rho) is a readout of the model, not a normalisation
    hits = [h for h in hits if "rho" not in h and "decode_rna" not in h]
    assert not hits, "log1p-CP10k re-implemented:\n" + "\n".join(hits)


def test_no_silent_layer_fallback():
    hits = _code_lines(r"in \w+\.layers else \w+\.X|layers\[[^\]]+\] if .* in .*layers else")
    assert not hits, "missing layer silently replaced by X:\n" + "\n".join(hits)


def test_one_count_detector_and_one_label_lookup():
    assert not _code_lines(r"def looks_like_counts|def _is_counts\b"), "a second count detector"
    defs = _code_lines(r"def (_?obs_labels|_labels_of|_obs_labels|_cell_labels)\(")
    assert not defs, "label lookup re-implemented:\n" + "\n".join(defs)


def test_no_source_tree_relative_paths():
    hits = _code_lines(r"__file__\)\.(resolve\(\)\.)?parents\[[1-9]")
    assert not hits, "paths relative to the source tree break non-editable installs:\n" + "\n".join(hits)


def test_installed_copy_finds_its_data_from_any_folder(tmp_path):
    """A non-editable install (the wheel's files, nothing of the source tree) loads the shipped
    checkpoint and the embedded data from an unrelated working folder."""
    import os
    import subprocess
    import sys

    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    import shutil

    src = tmp_path / "src"  # a clean copy: no stale build/ folder can leak into the wheel
    shutil.copytree(ROOT, src / "scdiffx_grn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT.parent / f, src / f)
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheels)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                        *map(str, wheels.glob("*.whl"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import scdiffx_grn, pathlib; from scdiffx_grn import ScDiffusionX, datasets;"
            "assert pathlib.Path(scdiffx_grn.__file__).is_relative_to(pathlib.Path(r'%s'));"
            "m = ScDiffusionX.load_pretrained('mouse_mop_demo'); d = datasets.mouse_mop(n_cells=50, seed=0);"
            "from scdiffx_grn.report._demo import default_model_path; assert 'site' in str(default_model_path());"
            "print(m.config.latent_dim, d.n_obs)") % site
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "SCDX_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "50"
