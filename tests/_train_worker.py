"""Training worker for the interruption / DDP tests (run as a subprocess or under torchrun).

python tests/_train_worker.py OUT [--ckpt DIR] [--resume] [--slow-saves S] [--steps N]

Trains a tiny model on deterministic synthetic data (seed 0) and writes the final module
state_dict to OUT (rank 0 only; every rank writes OUT.rank<k> under torchrun).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("SCDX_PROGRESS", "0")


def build_mdata(n=64, g=16, p=24, seed=0):
    import anndata as ad
    import mudata as md
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    md.set_options(pull_on_update=False)
    rng = np.random.default_rng(seed)
    ct = np.repeat(["A", "B"], n // 2)
    X = rng.poisson(np.where(ct == "A", 1.0, 3.0)[:, None] * np.ones(g)).astype(np.float32)
    X[:, 0] += 1
    A = (rng.random((n, p)) < 0.3).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=[f"c{i}" for i in range(n)])
    r = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(g)]))
    a = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(), var=pd.DataFrame(index=[f"chr1-{i * 100}-{i * 100 + 50}" for i in range(p)]))
    r.layers["counts"] = r.X.copy()
    a.layers["counts"] = a.X.copy()
    m = md.MuData({"rna": r, "atac": a})
    m.obs["cell_type"] = obs["cell_type"]
    return m


TINY = dict(width=16, n_layers=1, n_heads=2, token_dim=4)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--slow-saves", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--ae-epochs", type=int, default=3)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from scdiffx_grn import ScDiffusionX, settings
    from scdiffx_grn.model import _train

    settings.progress = False
    if args.slow_saves:  # widen the window in which the test kills us (numerics unchanged)
        orig = _train.Trainer._save

        def slow_save(self, state):
            orig(self, state)
            time.sleep(args.slow_saves)

        _train.Trainer._save = slow_save
    m = build_mdata()
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, seed=0, **TINY)
    model.train(ae_epochs=args.ae_epochs, diffusion_steps=args.steps, batch_size=16, device="cpu", seed=0,
                checkpoint_dir=args.ckpt, checkpoint_every=args.every, resume=args.resume, log_every=10)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    out = args.out if world == 1 else f"{args.out}.rank{rank}"
    torch.save({k: v.detach().cpu() for k, v in model.module.state_dict().items()}, out)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
