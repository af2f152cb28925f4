"""Peak memory of out-of-core data loading, training and latent extraction vs number of cells.

Cells of the embedded mouse MOp data (``datasets.mouse_mop()``, 10,309 cells, 1,677 genes, the
5,000 most frequently open peaks) are replicated to N cells and written as two on-disk .h5ad files
(raw counts in X, CSR), appended chunk by chunk so the writer never holds the big matrix. Each size
then runs in its own subprocess, which

1. opens both files with ``anndata.read_h5ad(path, backed="r")`` and pairs them in a MuData;
2. ``ScDiffusionX.setup_mudata(..., rna_layer=None, atac_layer=None)`` (streamed validation of all
   N cells);
3. trains a small model for a few steps (``ae_epochs=1`` on a fixed 4,096-cell training split,
   ``diffusion_steps=20``), through the trainer's row sources;
4. ``model.get_latent`` of all N cells (streamed in batches of 1,024).

Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is recorded after each phase; the
baseline is the RSS after importing torch and scdiffx_grn.

    python analyses/benchmark_scale.py --sizes 10000 100000 [1000000] --out results/scale

writes ``scale.csv`` and ``scale.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SCDX_PROGRESS", "0")

N_PEAKS = 5000
TRAIN_CELLS = 4096


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _write_replicated(n_cells: int, d: Path) -> dict:
    """Write rna.h5ad / atac.h5ad with ``n_cells`` replicated MOp cells (chunked appends)."""
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    from scdiffx_grn import datasets, pp

    d.mkdir(parents=True, exist_ok=True)
    done = d / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    m = datasets.mouse_mop()
    pp.filter_peaks(m, min_frac=0.0, top_n=N_PEAKS)
    base_n = m.n_obs
    n_rep = -(-n_cells // base_n)
    t0 = time.perf_counter()
    info = {"n_cells": n_cells}
    for k in ("rna", "atac"):
        a = m.mod[k]
        X = sp.csr_matrix(a.layers["counts"], dtype=np.float32)
        obs = pd.DataFrame({"cell_type": np.tile(a.obs["cell_type"].astype(str).to_numpy(), n_rep)[:n_cells]},
                           index=[f"{b}-{r}" for r in range(n_rep) for b in a.obs_names][:n_cells])
        obs["split"] = np.where(np.arange(n_cells) < TRAIN_CELLS, "train", "rest")
        path = d / f"{k}.h5ad"
        ad.AnnData(X=X[: min(base_n, n_cells)], var=pd.DataFrame(index=a.var_names)).write_h5ad(path)
        with h5py.File(path, "a") as f:
            ds = sparse_dataset(f["X"])
            left = n_cells - min(base_n, n_cells)
            while left > 0:
                take = min(base_n, left)
                ds.append(X[:take])
                left -= take
            del f["obs"]
            write_elem(f, "obs", obs)
        info[f"{k}_features"] = int(X.shape[1])
        info[f"{k}_nnz_per_cell"] = float(X.nnz / X.shape[0])
        info[f"{k}_file_mb"] = path.stat().st_size / 1e6
    info["write_seconds"] = time.perf_counter() - t0
    done.write_text(json.dumps(info))
    return info


def child(d: Path, n_cells: int) -> dict:
    """Run the measured pipeline on the files in ``d`` (call in a fresh process)."""
    import anndata as ad
    import mudata as md
    import numpy as np
    import torch

    from scdiffx_grn import ScDiffusionX, settings

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    settings.progress = False
    md.set_options(pull_on_update=False)
    res = {"n_cells": n_cells, "rss_baseline_mb": _rss_mb()}
    t = time.perf_counter()
    mods = {k: ad.read_h5ad(d / f"{k}.h5ad", backed="r") for k in ("rna", "atac")}
    mdata = md.MuData(mods)
    for c in ("cell_type", "split"):
        mdata.obs[c] = mods["rna"].obs[c].to_numpy()
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"], rna_layer=None, atac_layer=None)
    res["load_setup_s"] = time.perf_counter() - t
    res["rss_after_load_mb"] = _rss_mb()
    t = time.perf_counter()
    model = ScDiffusionX(mdata, seed=0, rna_hidden=(128,), atac_hidden=(128,), latent_dim=32, width=32,
                         n_layers=1, n_heads=2)
    model.train(ae_epochs=1, diffusion_steps=20, batch_size=256, device="cpu", seed=0, split_key="split",
                train_value="train", log_every=10)
    res["train_s"] = time.perf_counter() - t
    res["rss_after_train_mb"] = _rss_mb()
    t = time.perf_counter()
    z = model.get_latent(mdata, "atac", batch_size=1024)
    res["latent_s"] = time.perf_counter() - t
    res["rss_after_latent_mb"] = _rss_mb()
    assert z.shape == (n_cells, 32) and np.isfinite(z).all()
    res["dense_rna_mb_if_densified"] = n_cells * mods["rna"].n_vars * 4 / 1e6
    res["dense_atac_mb_if_densified"] = n_cells * mods["atac"].n_vars * 4 / 1e6
    return res


def _md_table(df) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--data-dir", default="/tmp/scdx_scale")
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(Path(args.data_dir) / str(args.child), args.child)))
        return 0
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        info = _write_replicated(n, Path(args.data_dir) / str(n))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", str(n), "--data-dir", args.data_dir],
                           capture_output=True, text=True)
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {n} failed")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res.update({k: v for k, v in info.items() if k != "n_cells"})
        res["total_child_s"] = time.perf_counter() - t
        rows.append(res)
        print(json.dumps(res), flush=True)
        df = pd.DataFrame(rows)
        df.to_csv(out / "scale.csv", index=False)
        cols = ["n_cells", "rna_file_mb", "atac_file_mb", "rss_baseline_mb", "rss_after_load_mb", "rss_after_train_mb",
                "rss_after_latent_mb", "dense_atac_mb_if_densified", "load_setup_s", "train_s", "latent_s"]
        (out / "scale.md").write_text(
            "# Peak memory vs cells (backed .h5ad, streamed row sources)\n\n"
            + _md_table(df[cols].round(1)) + "\n\n"
            "Peak RSS in MB (ru_maxrss, cumulative). Training: ae_epochs=1 on 4,096 cells + 20 denoiser steps; "
            "latents: all cells, batches of 1,024. `dense_atac_mb_if_densified` is what a dense copy of the "
            "ATAC matrix alone would take.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
