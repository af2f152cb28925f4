"""Speed of training, generation and translation on this machine (issue: use the hardware).

    OMP_NUM_THREADS=1 python analyses/benchmark_speed.py --old /path/to/older/checkout
    python analyses/benchmark_speed.py --device cuda            # where a GPU is present

For each code tree (this checkout, and ``--old``: the same measurements in a subprocess with that
tree first on ``PYTHONPATH``), on the ``demo`` preset (mouse SNARE-seq, 8,247 training cells,
``analyses/train_model.prepare``), one torch thread on CPU:

- the device's matmul rate (fp32; bf16 too on CUDA) in GFLOP/s;
- one autoencoder epoch (seconds) and ``--steps`` denoiser steps (ms/step), timed around the
  trainer's two phases, with the projected ``demo`` training time (30 epochs + 3,000 steps);
- the denoiser's FLOPs per training step (``torch.utils.flop_counter``) and the busy fraction
  ``FLOPs / time / matmul rate``;
- DPM++ 20-step generation (cells/s) and posterior-mean ATAC->RNA translation of the 1,028
  held-out cells (cells/s);
- a hash of the trained weights (same hash: the two trees train to identical weights).

On CPU the times are the process's CPU time (``time.process_time``, one thread: the machine
may be shared), with the wall time beside them; on CUDA wall time after synchronising.
``--repeats`` alternates the trees and keeps each figure's best run. ``--compile`` adds the
denoiser step under ``torch.compile``, ``--bf16`` under bf16 autocast (both this tree only);
``--full`` trains the whole preset once with this tree. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: today's figures (issue 24, NVIDIA H200; CPU one thread): the references printed beside ours
REFERENCE = {"cpu": {"demo_train_s": 816.0}, "cuda": {"demo_train_s": 182.0, "denoiser_ms_per_step": 54.0,
                                                       "generation_cells_per_s": 1505.0}}


class _Clock:
    """Wall and CPU time of a block (CUDA: synchronised)."""

    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c
        self.s = self.wall if self.cuda else self.cpu  # the figure we report


def matmul_rate(device, dtype_name="float32", n=None, reps=None) -> float:
    """GFLOP/s of an ``n x n`` matmul on ``device``."""
    import torch

    dt = getattr(torch, dtype_name)
    cuda = str(device).startswith("cuda")
    n = n or (8192 if cuda else 1024)
    reps = reps or (20 if cuda else 10)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    a @ b
    with _Clock(device) as c:
        for _ in range(reps):
            a @ b
    return 2 * n**3 * reps / c.s / 1e9


def denoiser_flops(model, batch_size: int) -> float:
    """FLOPs of one denoiser training step (forward + backward) on a demo batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scdiffx_grn.model._trainingplan import TrainingPlan

    m = model.module
    plan = TrainingPlan(m, model.config)
    dev = next(m.parameters()).device
    L = model.config.latent_dim
    z = torch.randn(1024, L, device=dev)
    cond = torch.zeros(1024, len(model.config.label_keys), dtype=torch.long, device=dev)
    d = plan.draw(torch.Generator().manual_seed(0), batch_size, 1024).shard(slice(None), dev)
    b = plan.batch(d, z, z, cond, m.denoiser.labels.null(1, dev))
    with FlopCounterMode(display=False) as fc:
        o_r, o_a = m.denoiser(*b.inputs)
        plan.loss(o_r, o_a, b).loss.backward()
    m.denoiser.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def worker(device: str, steps: int, n_generate: int, compile_: bool, full: bool, bf16: bool = False) -> dict:
    """All measurements with the ``scdiffx_grn`` first on ``sys.path`` (one JSON line on stdout)."""
    import torch

    sys.path.insert(0, str(HERE))
    from train_model import PRESETS, prepare

    import scdiffx_grn
    from scdiffx_grn import ScDiffusionX, datasets
    from scdiffx_grn.model import _train

    if device == "cpu":
        torch.set_num_threads(1)
    out = {"tree": str(Path(scdiffx_grn.__file__).resolve().parents[1]), "device": device,
           "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu, 1 thread",
           "torch": torch.__version__}
    out["matmul_gflops_fp32"] = matmul_rate(device)
    if device.startswith("cuda"):
        out["matmul_gflops_bf16"] = matmul_rate(device, "bfloat16")
    p = PRESETS["demo"]
    mdata = datasets.mouse_mop(seed=0)
    prepare(mdata, n_peaks=p["n_peaks"], seed=0)
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])

    # time the trainer's two phases (both trees have these methods)
    phases = {}

    def timed(name, fn):
        def run(self, *a, **k):
            with _Clock(device) as c:
                r = fn(self, *a, **k)
            phases[name] = c
            return r
        return run

    _train.Trainer._train_ae = timed("ae", _train.Trainer._train_ae)
    _train.Trainer._train_diffusion = timed("diffusion", _train.Trainer._train_diffusion)
    kw = dict(p["train"])
    model = ScDiffusionX(mdata, seed=0, **p["model"])
    model.train(split_key="split", seed=0, device=device, **{**kw, "ae_epochs": 1, "diffusion_steps": steps})
    ae, dif = phases["ae"], phases["diffusion"]
    out["ae_epoch_s"], out["ae_epoch_wall_s"] = ae.s, ae.wall
    out["denoiser_ms_per_step"], out["denoiser_wall_ms_per_step"] = dif.s / steps * 1e3, dif.wall / steps * 1e3
    out["projected_demo_train_s"] = kw["ae_epochs"] * ae.s + kw["diffusion_steps"] * dif.s / steps
    h = hashlib.sha256()
    for k, v in sorted(model.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    out["weights_sha256"] = h.hexdigest()[:16]
    out["denoiser_gflop_per_step"] = denoiser_flops(model, kw["batch_size"]) / 1e9
    rate = out.get("matmul_gflops_bf16" if device.startswith("cuda") else "matmul_gflops_fp32")
    out["denoiser_busy_fraction"] = out["denoiser_gflop_per_step"] / (out["denoiser_ms_per_step"] / 1e3) / rate
    # sampling: DPM++ 20-step generation, posterior-mean translation of the held-out cells
    model.generate(n_cells=64, n_steps=20, seed=0)  # warm-up
    with _Clock(device) as c:
        model.generate(n_cells=n_generate, n_steps=20, seed=0, sampler="dpm++")
    out["generation_cells_per_s"] = n_generate / c.s
    test = mdata[(mdata.obs["split"] == "test").to_numpy()].copy()
    model.translate(test[:64].copy(), "atac->rna")
    with _Clock(device) as c:
        model.translate(test, "atac->rna", seed=0, readout="mean")
    out["translation_mean_cells_per_s"] = test.n_obs / c.s
    if compile_:
        # ms/step from two runs of 3 and 3 + steps steps after a first (warm-up) run that fills the
        # compile caches: both timed runs then trace and load the same cached code, which cancels
        dif = []
        for n in (3, 3, 3 + steps):
            m2 = ScDiffusionX(mdata, seed=0, **p["model"])
            m2.train(split_key="split", seed=0, device=device,
                     **{**kw, "ae_epochs": 0, "diffusion_steps": n, "compile": True})
            dif.append(phases["diffusion"])
        out["compiled_denoiser_ms_per_step"] = (dif[2].s - dif[1].s) / steps * 1e3
        out["compile_s"] = dif[0].wall  # the first run: compile (cold or warm cache) + 3 steps
    if bf16:  # the denoiser step under bf16 autocast (precision="bf16"; this tree only)
        m3 = ScDiffusionX(mdata, seed=0, **p["model"])
        m3.train(split_key="split", seed=0, device=device,
                 **{**kw, "ae_epochs": 0, "diffusion_steps": steps, "precision": "bf16"})
        out["bf16_denoiser_ms_per_step"] = phases["diffusion"].s / steps * 1e3
    if full:
        mf = ScDiffusionX(mdata, seed=0, **p["model"])
        with _Clock(device) as c:
            mf.train(split_key="split", seed=0, device=device, **kw)
        out["full_demo_train_s"], out["full_demo_train_wall_s"] = c.s, c.wall
    return out


def _run_tree(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "SCDX_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "SCDX_THREADS": "1"}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", *args], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"worker for {tree} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


BEST = {"matmul_gflops_fp32": max, "matmul_gflops_bf16": max, "ae_epoch_s": min, "denoiser_ms_per_step": min,
        "projected_demo_train_s": min, "generation_cells_per_s": max, "translation_mean_cells_per_s": max,
        "denoiser_busy_fraction": max}


def main(old: str | None = None, device: str = "cpu", steps: int = 100, n_generate: int = 0, repeats: int = 1,
         compile: bool = False, full: bool = False, out: str | None = None, worker_mode: bool = False,
         bf16: bool = False) -> dict:
    """Measure this tree (and ``old``) on ``device``; returns ``{"new": {...}, "old": {...}}``.

    ``n_generate``: cells generated (0: 1,024 on CPU, 16,384 on CUDA).
    """
    n_generate = int(n_generate) or (16384 if device.startswith("cuda") else 1024)
    args = ["--device", device, "--steps", str(steps), "--n-generate", str(n_generate)]
    if worker_mode:
        res = worker(device, steps, n_generate, compile, full, bf16)
        print(json.dumps(res))
        return res
    trees = {"new": ROOT} | ({"old": Path(old).resolve()} if old else {})
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(int(repeats)):
        for name, tree in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
            extra = ((["--compile"] if compile else []) + (["--full"] if full else []) + (["--bf16"] if bf16 else [])
                     if (name == "new" and r == 0) else [])
            runs[name].append(_run_tree(tree, args + extra))
            print(name, json.dumps(runs[name][-1]), flush=True)
    res = {}
    for name, rs in runs.items():
        best = dict(rs[0])
        for k, f in BEST.items():
            vals = [x[k] for x in rs if k in x]
            if vals:
                best[k] = f(vals)
        res[name] = best
    if "old" in res:
        o, n = res["old"], res["new"]
        res["ratios_old_over_new"] = {k: o[k] / n[k] for k in ("ae_epoch_s", "denoiser_ms_per_step", "projected_demo_train_s")}
        res["ratios_new_over_old"] = {k: n[k] / o[k] for k in ("generation_cells_per_s", "translation_mean_cells_per_s")}
        res["identical_weights"] = o["weights_sha256"] == n["weights_sha256"]
    res["reference"] = REFERENCE["cuda" if device.startswith("cuda") else "cpu"]
    res["command"] = " ".join(["python", "analyses/benchmark_speed.py", *sys.argv[1:]])
    print(json.dumps(res, indent=2))
    if out:
        from scdiffx_grn._io import atomic_write_text

        atomic_write_text(out, json.dumps(res, indent=2))
    return res


def _cli(old: str = None, device: str = "cpu", steps: int = 100, n_generate: int = 0, repeats: int = 1,
         compile: bool = False, full: bool = False, out: str = None, worker: bool = False, bf16: bool = False):
    main(old, device, steps, n_generate, repeats, compile, full, out, worker, bf16)


if __name__ == "__main__":
    import typer

    typer.run(_cli)
