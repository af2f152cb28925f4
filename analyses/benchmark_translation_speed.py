"""Translation readouts side by side: wall time of the posterior mean vs posterior samples (one run).

    OMP_NUM_THREADS=1 python analyses/benchmark_translation_speed.py --checkpoint models/mouse_mop_demo

Translates the 1,028 held-out mouse cells ATAC->RNA with the posterior-mean readout (K = 1 and 4 noises)
and with 10 DDIM-20 samples, on one torch thread, and prints seconds and cells/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(checkpoint: str = "models/mouse_mop_demo", threads: int = 1) -> list[dict]:
    import torch

    from train_model import prepare

    from scdiffx_grn import ScDiffusionX, datasets

    torch.set_num_threads(int(threads))
    model = ScDiffusionX.load(checkpoint, device="cpu")
    mdata = model.subset_to_model(prepare(datasets.mouse_mop(), n_peaks=None, seed=0))
    test = mdata[(mdata.obs["split"] == "test").to_numpy()].copy()
    runs = [("posterior mean, K = 1", dict(readout="mean", n_noise=1)),
            ("posterior mean, K = 4 (default)", dict(readout="mean", n_noise=4)),
            ("10 samples, DDIM 20", dict(readout="samples", n_samples=10, sampler="ddim", n_steps=20))]
    rows = []
    model.translate(test[:64].copy(), "atac->rna")  # warm-up
    for name, kw in runs:
        t0 = time.perf_counter()
        model.translate(test, "atac->rna", seed=0, **kw)
        dt = time.perf_counter() - t0
        rows.append({"readout": name, "seconds": round(dt, 2), "cells_per_s": round(test.n_obs / dt, 1)})
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    import typer

    typer.run(main)
