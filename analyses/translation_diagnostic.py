"""Does a checkpoint's translation use its input? ``eval.source_dependence`` on held-out cells.

Usage::

    python analyses/translation_diagnostic.py --checkpoint models/mouse_mop_demo --out results/source_dependence
    python analyses/translation_diagnostic.py --checkpoint runs/bmmc --dataset bmmc --out results/source_dependence_bmmc

Evaluates the held-out (``test``) cells of ``analyses/train_model.prepare`` in both directions,
the classifier being fitted on the other cells; writes ``<out>/source_dependence.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(checkpoint: str = "models/mouse_mop_demo", dataset: str = "mouse_mop", out: str = "results/source_dependence",
         n_steps: int = 20, seed: int = 0) -> pd.DataFrame:
    """Run both directions on the test split; returns one row per direction."""
    from train_model import prepare

    from scdiffx_grn import ScDiffusionX, datasets
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import source_dependence

    model = ScDiffusionX.load(checkpoint)
    mdata = model.subset_to_model(prepare(getattr(datasets, dataset)(), n_peaks=None, seed=0))
    test = (mdata.obs["split"] == "test").to_numpy()
    rows = []
    for direction in ("atac->rna", "rna->atac"):
        rows.append(source_dependence(model, mdata, direction=direction, cells=test, n_steps=n_steps, seed=seed))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "source_dependence.csv", table.to_csv(index=False))
    return table


if __name__ == "__main__":
    import typer

    typer.run(main)
