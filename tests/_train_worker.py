"""Training worker for the interruption / DDP tests (run as a subprocess or under torchrun).

python tests/_train_worker.py OUT [--ckpt DIR] [--resume] [--slow-saves S] [--steps N]

Trains the tiny model (``_helpers.TINY`` on ``_helpers.make_tiny_mdata()``, seed 0) and writes the
final module state_dict to OUT (rank 0 only; every rank writes OUT.rank<k> under torchrun). Run as
a script, the tests folder is the first entry of ``sys.path``: ``_helpers`` imports from there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("SCDX_PROGRESS", "0")


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
    from _helpers import TINY, make_tiny_mdata
    from scdiffx_grn import ScDiffusionX, settings
    from scdiffx_grn.model import _train

    settings.progress = False
    if args.slow_saves:  # widen the window in which the test kills us (numerics unchanged)
        orig = _train.Trainer._save

        def slow_save(self, state):
            orig(self, state)
            time.sleep(args.slow_saves)

        _train.Trainer._save = slow_save
    m = make_tiny_mdata()
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
