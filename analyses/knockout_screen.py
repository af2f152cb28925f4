"""In-silico TF knockout screen on the mouse motor cortex SNARE-seq data, with throughput.

Every TF (DoRothEA mouse A-C sources that are among the model's genes, or ``--targets``;
``--targets all_genes`` for every model gene) is knocked out in RNA (counts -> 0), re-encoded
and translated RNA -> ATAC with paired noise; effects per TF x cell type are summarised by
:func:`scdiffx_grn.tl.screen`, which writes one parquet per finished TF and resumes after an
interruption. ``--readout mean`` (default) uses the posterior-mean engine (one denoiser call
per changed cell, unchanged cells skipped exactly, ``--n-noise`` noises, statistics over
cells); ``--readout samples`` the sampled engine (``--n-samples`` DDIM ``--n-steps`` samples,
statistics over samples).

Usage (CPU, small)::

    python analyses/knockout_screen.py --n-cells 400 --n-targets 16 --out-dir results/knockout_screen_cpu
    python analyses/knockout_screen.py --readout samples --n-cells 400 --n-targets 8   # the sampled engine

GPU (the lead), with a trained model::

    python analyses/knockout_screen.py --model-path models/mop --n-cells 0 --n-targets 0 \
        --n-samples 5 --n-steps 50 --batch-targets 32 --batch-size 512 --out-dir results/knockout_screen

Writes ``summary.csv``, ``timing.json``, ``heatmap_n_sig.png``, ``heatmap_frac_type_changed.png``
into ``--out-dir`` (plus the screen's resumable ``effects/``, ``summary/``, ``done.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _md(df) -> str:
    """A DataFrame as a markdown table (no tabulate dependency)."""
    cols = list(df.columns)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def _tfs(genes: list[str]) -> list[str]:
    from scdiffx_grn import datasets

    return datasets.tf_list(genes, organism="mouse", source="dorothea", levels="ABC", count_in="network")


def train_tiny(mdata, *, ae_epochs: int = 5, diffusion_steps: int = 300, seed: int = 0, device: str | None = None):
    """A small model for CPU throughput checks (not a biologically useful fit)."""
    from scdiffx_grn import ScDiffusionX

    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    model = ScDiffusionX(mdata, latent_dim=16, token_dim=4, width=64, n_heads=4, n_layers=2)
    model.train(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, batch_size=128, seed=seed, device=device)
    return model


def main(model_path: str | None = None, n_cells: int = 400, n_targets: int = 16, targets: str | None = None,
         out_dir: str = "results/knockout_screen_cpu", n_samples: int = 3, n_steps: int = 20,
         batch_targets: int = 8, batch_size: int = 256, ae_epochs: int = 5, diffusion_steps: int = 300,
         device: str | None = None, seed: int = 0, resume: bool = True, readout: str = "mean",
         n_noise: int = 1, keep_effects: str = "all") -> dict:
    """Run the screen and return the timing record.

    Parameters
    ----------
    model_path
        Saved model directory (``ScDiffusionX.save``); ``None`` trains a tiny model first.
    n_cells
        Cells sampled from the data (0: all 10,309).
    n_targets
        First TFs (by number of DoRothEA targets) to screen (0: all); ignored with ``targets``.
    targets
        Comma-separated list of genes instead of DoRothEA TFs, or ``all_genes``.
    readout, n_noise
        ``mean`` (posterior-mean engine, ``n_noise`` noises per cell) or ``samples`` (sampled
        engine, ``n_samples`` x DDIM ``n_steps``).
    n_samples, n_steps
        Paired noise samples and DDIM steps.
    batch_targets, batch_size
        Knockouts stacked per translation call and cells per batch.
    """
    import scdiffx_grn as scdx
    from scdiffx_grn import ScDiffusionX, datasets, pl, tl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mdata = datasets.mouse_mop(n_cells=n_cells or None, seed=seed)
    t0 = time.perf_counter()
    if model_path:
        model = ScDiffusionX.load(model_path, device=device)
        ScDiffusionX.setup_mudata(mdata, labels=list(model.config.label_keys))
    else:
        model = train_tiny(mdata, ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, seed=seed, device=device)
    t_model = time.perf_counter() - t0
    genes = list(model.rna_var_names)
    if targets == "all_genes":
        tlist = list(genes)
    else:
        tlist = [t.strip() for t in targets.split(",")] if targets else _tfs(genes)
    if n_targets and not targets:
        tlist = tlist[:n_targets]
    scdx.settings.progress = True
    t1 = time.perf_counter()
    summary = tl.screen(model, mdata, tlist, kind="knockout", modality="rna", groupby="cell_type",
                        out_dir=out / "screen", resume=resume, batch_targets=batch_targets, batch_size=batch_size,
                        n_samples=n_samples, seed=seed, translate_kwargs={"n_steps": n_steps}, readout=readout,
                        n_noise=n_noise, keep_effects=keep_effects)
    t_screen = time.perf_counter() - t1
    summary.to_csv(out / "summary.csv", index=False)
    rep = summary.attrs.get("report")
    if rep is not None:
        rep.to_csv(out / "report.csv", index=False)
    for value in ("n_sig", "frac_type_changed", "latent_shift"):
        if value in summary and len(summary):
            pl.screen_heatmap(summary, value=value, save=out / f"heatmap_{value}.png")
    import torch

    timing = {"n_cells": int(mdata.n_obs), "n_genes": len(genes), "n_peaks": len(model.atac_var_names),
              "n_targets": len(tlist), "n_cell_types": int(mdata.obs["cell_type"].nunique()),
              "readout": readout, "n_noise": n_noise if readout == "mean" else None,
              "n_samples": n_samples if readout == "samples" else None,
              "n_steps": n_steps if readout == "samples" else None, "batch_targets": batch_targets, "batch_size": batch_size,
              "device": str(model.device), "torch_threads": torch.get_num_threads(),
              "model_seconds": round(t_model, 2), "screen_seconds": round(t_screen, 2),
              "targets_per_s": round(len(tlist) / t_screen, 4) if t_screen > 0 else None,
              "note": "resumed screens count only newly computed targets in screen_seconds"}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    top = summary.sort_values("n_sig", ascending=False).head(10) if len(summary) else summary
    md = ["# In-silico TF knockout screen (mouse MOp SNARE-seq)", "",
          f"- cells {timing['n_cells']}, genes {timing['n_genes']}, peaks {timing['n_peaks']}, "
          f"TFs {timing['n_targets']}, cell types {timing['n_cell_types']}",
          f"- device {timing['device']}, readout {readout} "
          + (f"(noises {n_noise})" if readout == "mean" else f"(samples {n_samples}, DDIM steps {n_steps})"),
          f"- screen time {timing['screen_seconds']} s -> **{timing['targets_per_s']} targets/s**", "",
          "Top TF x cell type by number of significant peaks (BH FDR <= 0.05 across peaks; over "
          + ("cells" if readout == "mean" else "samples") + "):", "",
          _md(top[["perturbation", "cell_type", "n_sig", "latent_shift", "frac_type_changed"]])
          if len(top) else "(none)"]
    (out / "README.md").write_text("\n".join(md) + "\n")
    print(json.dumps(timing, indent=2))
    return timing


if __name__ == "__main__":
    import typer

    typer.run(main)
