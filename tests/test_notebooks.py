"""Execute every tutorial notebook (``SCDX_FAST=1``: small data, few steps) with nbclient.

The notebooks find their model through ``$SCDX_DEMO_MODEL``; here it points at a very small model
trained once per session (conftest's ``tiny_mop_checkpoint``), so the test neither needs nor waits on the shipped checkpoint. All five
notebooks together take about two to four minutes on 2 CPU cores (marked ``slow``; deselect with
``-m "not slow"``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_are_built_and_cleared():
    """Notebooks match notebooks/_build.py and hold no outputs."""
    assert NOTEBOOKS == ["01_quickstart.ipynb", "02_train_your_own.ipynb", "03_cell_type_grns.ipynb",
                         "04_knockout_screen.ipynb", "05_biomarkers.ipynb"]
    sys.path.insert(0, str(NB_DIR))
    try:
        import _build
    finally:
        sys.path.remove(str(NB_DIR))
    assert _build.main(["--check"]) == 0, "notebooks differ from notebooks/_build.py: rebuild them"
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name} has outputs"
        src = "\n".join(c.source for c in nb.cells)
        assert "SCDX_FAST" in src


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tiny_mop_checkpoint, monkeypatch, tmp_path):
    from nbclient import NotebookClient

    monkeypatch.setenv("SCDX_FAST", "1")
    monkeypatch.setenv("SCDX_DEMO_MODEL", str(tiny_mop_checkpoint))
    monkeypatch.setenv("SCDX_PROGRESS", "0")
    monkeypatch.setenv("SCDX_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()
    # every code cell ran; figures were produced where plots are made
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    pngs = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    assert pngs >= 1, f"{name} produced no figure"
    # the executed copy is not written back: the repository keeps cleared notebooks
    assert os.path.exists(NB_DIR / name)
