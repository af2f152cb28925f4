"""Core-model benchmark on the mouse SNARE-seq held-out split: training / sampling throughput,
autoencoder reconstruction, and outputs for the generation / translation evaluation.

    python analyses/benchmark_core.py --out results/core --presets demo   (add full on a GPU)

Writes ``core_metrics.json`` (timings, peak GPU memory, reconstruction and translation metrics)
and, per preset, ``<preset>_outputs.npz`` (generated cells and translated RNA of the test cells)
that ``analyses/benchmark_generation.py`` scores against real cells. ``demo`` also saves its
checkpoint under ``<out>/mouse_mop_demo``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def recon_metrics(model, test):
    """Autoencoder reconstruction on held-out cells: NB log-lik, Pearson (log-norm RNA), ATAC AUROC."""
    import torch
    from sklearn.metrics import roc_auc_score

    from scdiffx_grn.model import nb_log_likelihood

    counts = model._matrix(test, "rna").toarray()
    lib = counts.sum(1)
    rho = model.reconstruct(test, "rna")
    mu = rho * lib[:, None]
    theta = model.module.rna_ae.theta.detach().cpu()
    ll = nb_log_likelihood(torch.as_tensor(counts), torch.as_tensor(mu), theta[None]).sum(1).numpy()
    obs_ln = np.log1p(counts / lib[:, None] * 1e4)
    pred_ln = np.log1p(rho * 1e4)
    r = [np.corrcoef(a, b)[0, 1] for a, b in zip(obs_ln, pred_ln)]
    A = (model._matrix(test, "atac").toarray() > 0).astype(np.float32)
    P = model.reconstruct(test, "atac")
    aucs = [roc_auc_score(a, p) for a, p in zip(A, P) if 0 < a.sum() < len(a)]
    return {"rna_nb_loglik_per_cell": float(np.mean(ll)), "rna_pearson_per_cell": float(np.nanmean(r)),
            "atac_auroc_per_cell": float(np.mean(aucs)),
            "atac_auroc_pooled": float(roc_auc_score(A.ravel(), P.ravel()))}


def translation_metrics(model, test, pred_rna, pred_atac):
    from sklearn.metrics import average_precision_score, roc_auc_score

    counts = model._matrix(test, "rna").toarray()
    obs_ln = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    r_cell = [np.corrcoef(a, b)[0, 1] for a, b in zip(obs_ln, pred_rna)]
    ok = obs_ln.std(0) > 0
    r_gene = [np.corrcoef(a, b)[0, 1] for a, b in zip(obs_ln[:, ok].T, pred_rna[:, ok].T)]
    A = (model._matrix(test, "atac").toarray() > 0)
    auc = [roc_auc_score(a, p) for a, p in zip(A, pred_atac) if 0 < a.sum() < len(a)]
    ap = [average_precision_score(a, p) / a.mean() for a, p in zip(A, pred_atac) if 0 < a.sum() < len(a)]
    return {"atac_to_rna_pearson_per_cell": float(np.nanmean(r_cell)),
            "atac_to_rna_pearson_per_gene": float(np.nanmean(r_gene)),
            "rna_to_atac_auroc_per_cell": float(np.mean(auc)),
            "rna_to_atac_auprc_ratio_per_cell": float(np.mean(ap))}


def run_preset(preset, out: Path, seed=0, device=None, overrides=None):
    import torch

    from train_model import train

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    save_dir = out / ("mouse_mop_demo" if preset == "demo" else f"model_{preset}")
    model, mdata = train(preset, save_dir, seed=seed, device=device, overrides=overrides)
    res = {"preset": preset, "model": repr(model), "timing": model.timing,
           "device": str(model.device),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if torch.cuda.is_available():
        res["peak_gpu_mem_gib_train"] = torch.cuda.max_memory_allocated() / 2**30
    test = mdata[mdata.obs["split"] == "test"].copy()
    res["n_test"] = int(test.n_obs)
    res["recon"] = recon_metrics(model, test)
    # generation: as many cells per type as the test split has; sampler throughput
    labels = {"cell_type": test.obs["cell_type"].astype(str).to_numpy()}
    timings = {}
    gens = {}
    for name, (sampler, steps) in {"dpm++20": ("dpm++", 20), "ddim50": ("ddim", 50), "ddpm1000": ("ddpm", 1000)}.items():
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _sync()
        t = time.perf_counter()
        g = model.generate(labels, sampler=sampler, n_steps=steps, seed=seed, batch_size=2048)
        _sync()
        dt = time.perf_counter() - t
        timings[name] = {"seconds": dt, "cells_per_s": test.n_obs / dt}
        if torch.cuda.is_available():
            timings[name]["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        gens[name] = g
    res["generation_timing"] = timings
    t = time.perf_counter()
    tr_rna = model.translate(test, "atac->rna", n_samples=3, sampler="ddim", n_steps=50, seed=seed)
    tr_atac = model.translate(test, "rna->atac", n_samples=1, sampler="ddim", n_steps=50, seed=seed)
    _sync()
    res["translation_seconds"] = time.perf_counter() - t
    res["translation"] = translation_metrics(model, test, tr_rna.X, tr_atac.X)
    arrays = {"test_obs_names": np.asarray(test.obs_names), "cell_type": labels["cell_type"],
              "rna_var_names": np.asarray(model.rna_var_names), "atac_var_names": np.asarray(model.atac_var_names),
              "translated_rna": tr_rna.X.astype(np.float16), "translated_rna_std": tr_rna.layers["std"].astype(np.float16)}
    for name, g in gens.items():
        R = sp.csr_matrix(g.mod["rna"].X)
        A = sp.csr_matrix(g.mod["atac"].X)
        key = name.replace("+", "p")
        arrays[f"gen_{key}_rna_data"], arrays[f"gen_{key}_rna_indices"], arrays[f"gen_{key}_rna_indptr"] = R.data.astype(np.float32), R.indices, R.indptr
        arrays[f"gen_{key}_atac_indices"], arrays[f"gen_{key}_atac_indptr"] = A.indices, A.indptr
    np.savez_compressed(out / f"{preset}_outputs.npz", **arrays)
    return res


def main(out: str = "results/core", presets: str = "full,demo", seed: int = 0, device: str = "auto",
         diffusion_steps: int = 0):
    """Run the core benchmark for the given presets; write JSON + npz outputs under ``out``."""
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    allres = []
    for preset in presets.split(","):
        ov = {"diffusion_steps": diffusion_steps} if diffusion_steps else None
        r = run_preset(preset, outp, seed=seed, device=device, overrides=ov)
        print(json.dumps(r, indent=1, default=str), flush=True)
        allres.append(r)
        (outp / "core_metrics.json").write_text(json.dumps(allres, indent=1, default=str))


if __name__ == "__main__":
    import typer

    typer.run(main)
