"""Benchmark generation and translation of a trained ScDiffusionX model against baselines.

Loads a paired data set (``.h5mu`` or anything :func:`scdiffx_grn.datasets.read_multiome`
reads) with a split column, loads the model from its checkpoint directory, runs
:func:`scdiffx_grn.eval.evaluate_model` and writes to ``out``:
``table.csv`` (tidy), ``summary.csv``, ``comparison.csv``, ``report.md`` (markdown table) and
PNG plots (metric bars, UMAPs of real vs generated RNA and ATAC cells).

Usage (once the model lands)::

    python analyses/benchmark_generation.py DATA.h5mu CHECKPOINT_DIR OUT_DIR --seeds 0 --seeds 1
    python analyses/benchmark_generation.py mouse_mop models/mouse_mop_demo results/generation_mouse

``mouse_mop`` / ``bmmc`` name the embedded data sets: they get the seeded, cell-type stratified
80/10/10 split of ``analyses/train_model.prepare`` (the one the shipped model was trained on) and
are restricted to the model's features.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional


def main(dataset: str, checkpoint: Path, out: Path, *, split_key: str = "split", test_value: str = "test",
         groupby: str = "cell_type", seeds: Optional[List[int]] = None, n_samples: int = 5,
         sampler: str = "dpm++", n_steps: int = 20, guidance_scale: float = 2.0,
         n_cells: Optional[int] = None, device: Optional[str] = None, umap: bool = True) -> Path:
    """Run the benchmark and write tables, plots and a markdown report to ``out``.

    Parameters
    ----------
    dataset
        ``.h5mu`` file (or a path ``read_multiome`` understands) with ``split_key`` and ``groupby``.
    checkpoint
        Model checkpoint directory (``ScDiffusionX.save``).
    out
        Output directory.
    split_key, test_value
        Test cells are ``obs[split_key] == test_value``; the rest train the baselines.
    groupby
        Cell-type column.
    seeds
        Generation / translation seeds (default ``[0, 1, 2]``).
    n_samples
        Translation samples averaged per cell.
    sampler, n_steps, guidance_scale
        Generation settings passed to ``model.generate``.
    n_cells
        Subsample of cells per seed in the generation metrics.
    device
        Model device (default: ``settings.device``).
    umap
        Draw UMAPs (else the first two PCA / LSI components).

    Returns
    -------
    pathlib.Path
        The markdown report.
    """
    import matplotlib

    matplotlib.use("Agg")
    from scdiffx_grn import ScDiffusionX
    from scdiffx_grn import eval as ev
    from scdiffx_grn.datasets._readers import read_multiome

    seeds = list(seeds) if seeds else [0, 1, 2]
    model = ScDiffusionX.load(checkpoint, mdata=None, device=device)
    if str(dataset) in ("mouse_mop", "bmmc"):
        import sys

        from scdiffx_grn import datasets

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_model import prepare

        mdata = getattr(datasets, str(dataset))()
        prepare(mdata, n_peaks=None, seed=0, split_key=split_key)
        mdata = model.subset_to_model(mdata)
    else:
        mdata = read_multiome(dataset, require_counts=True)
    gen_kw = {"sampler": sampler, "n_steps": n_steps, "guidance_scale": guidance_scale}
    table = ev.evaluate_model(model, mdata, split_key=split_key, test_value=test_value, groupby=groupby,
                              seeds=seeds, n_samples=n_samples, generate_kwargs=gen_kw, n_cells=n_cells)
    figures = {"metric_bars_generation": ev.metric_bars(table[table.task == "generation"]),
               "metric_bars_translation": ev.metric_bars(table[table.task == "translation"])}
    # UMAPs of the model's generated cells (first seed) vs the test cells
    from scdiffx_grn._registry import labels as obs_labels

    test = mdata[(obs_labels(mdata, split_key) == str(test_value)).to_numpy()].copy()
    labels = obs_labels(test, groupby).to_numpy()
    gen = model.generate({groupby: list(labels)}, seed=seeds[0], **gen_kw)
    for m in ("rna", "atac"):
        real = test.mod[m]
        real.obs[groupby] = labels
        if groupby not in gen.mod[m].obs:
            gen.mod[m].obs[groupby] = labels
        figures[f"umap_{m}"] = ev.umap_real_vs_generated(real, gen.mod[m], groupby=groupby, modality=m,
                                                        basis="umap" if umap else "pca", seed=seeds[0])
    paths = ev.write_report(table, out, figures=figures, title=f"Benchmark: {Path(str(dataset)).name}")
    return paths["report"]


def _cli() -> None:
    import typer

    typer.run(main)


if __name__ == "__main__":
    _cli()
