"""Seed-system benchmark on the mouse SNARE-seq data (CPU-sized by default).

    python analyses/benchmark_seed_systems.py --out results/seed_systems

1. DDPM (epsilon diffusion) vs flow matching (scLDM linear interpolants), same autoencoders and
   denoiser size: generation quality vs number of sampler steps (5, 10, 20, 50, 1000) with the
   ``scdiffx_grn.eval`` metrics (RBF-MMD on 30 PCs of the real test cells' feature space, and
   pseudobulk Pearson of log-normalised expression), pooled over cell types, for the samplers
   ``ddpm`` / ``dpm++`` (diffusion) and ``euler`` / ``heun`` (flow). Also the ``atac->rna``
   translation per-cell Pearson of both models.
2. MLP vs attention (set) RNA autoencoder: held-out reconstruction (NB log-likelihood and
   per-cell Pearson of log-normalised expression), training time.
3. Gradient interpolation between two neuron types (classifier-free labels and classifier
   guidance): nearest-type fraction (kNN on real cells' RNA PCA) per weight.

Data: ``datasets.mouse_mop(n_cells)``, the seeded stratified 80/10/10 split and top-peak
selection of ``analyses/train_model.prepare``; models train on ``train`` cells, metrics use
``test`` cells. All timings are CPU wall-clock (single intra-op thread by default) and include
no GPU. Writes ``seed_systems.json`` and ``seed_systems.md`` under ``out``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL = dict(rna_hidden=(128,), atac_hidden=(128,), latent_dim=32, token_dim=4, width=64, n_heads=4, n_layers=2)


def _pooled(tidy, metric):
    sel = tidy[(tidy["metric"] == metric) & (tidy["cell_type"] == "all")]
    return float(sel["value"].mean())


def rna_recon(model, test):
    """Held-out RNA reconstruction: NB log-likelihood per cell and per-cell Pearson (log-norm)."""
    import torch

    from scdiffx_grn.model import nb_log_likelihood

    counts = model._matrix(test, "rna").toarray()
    lib = counts.sum(1)
    rho = model.reconstruct(test, "rna")
    theta = model.module.rna_ae.theta.detach().cpu()
    ll = nb_log_likelihood(torch.as_tensor(counts), torch.as_tensor(rho * lib[:, None]), theta[None]).sum(1).numpy()
    obs_ln = np.log1p(counts / lib[:, None] * 1e4)
    pred_ln = np.log1p(rho * 1e4)
    r = [np.corrcoef(a, b)[0, 1] for a, b in zip(obs_ln, pred_ln)]
    return {"rna_nb_loglik_per_cell": float(np.mean(ll)), "rna_pearson_per_cell": float(np.nanmean(r))}


def main(out: str = "results/seed_systems", n_cells: int = 3000, n_peaks: int = 1000, ae_epochs: int = 10,
         diffusion_steps: int = 2000, batch_size: int = 128, steps: str = "5,10,20,50,1000",
         state_a: str = "L2/3", state_b: str = "L6", n_interp: int = 100, interp_guidance: float = 2.0,
         clf_scale: float = 5.0, threads: int = 1, seed: int = 0):
    """Run the benchmark; see the module docstring."""
    import torch

    from scdiffx_grn import ScDiffusionX, datasets, eval as ev, settings
    from scdiffx_grn.model import interpolate, nearest_type_fractions, train_latent_classifier
    from train_model import prepare

    torch.set_num_threads(int(threads))
    settings.progress = False
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    res = {"device": "cpu (no GPU in this run)", "torch_threads": int(threads), "n_cells": n_cells,
           "n_peaks": n_peaks, "model": MODEL, "train": {"ae_epochs": ae_epochs, "diffusion_steps": diffusion_steps,
                                                         "batch_size": batch_size}}
    mdata = datasets.mouse_mop(n_cells=n_cells, seed=seed)
    prepare(mdata, n_peaks=n_peaks, seed=seed)
    test = mdata[mdata.obs["split"] == "test"].copy()
    train_cells = mdata[mdata.obs["split"] == "train"].copy()
    res["n_train"], res["n_test"] = int(train_cells.n_obs), int(test.n_obs)
    real = test.mod["rna"].copy()
    real.obs["cell_type"] = test.obs["cell_type"].astype(str).to_numpy()
    fs = ev.FeatureSpace("rna").fit(real)
    labels = {"cell_type": real.obs["cell_type"].to_numpy()}
    step_list = [int(s) for s in steps.split(",") if s]

    # ---------------------------------------------------------------- 1. DDPM vs flow matching
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    models, quality = {}, []
    for objective, samplers in (("diffusion", ("ddpm", "dpm++")), ("flow", ("euler", "heun"))):
        model = ScDiffusionX(mdata, objective=objective, seed=seed, **MODEL)
        t = time.perf_counter()
        model.train(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, batch_size=batch_size, lr=1e-3,
                    split_key="split", seed=seed, device="cpu")
        res[f"{objective}_train_seconds"] = time.perf_counter() - t
        res[f"{objective}_timing"] = model.timing
        res[f"{objective}_final_loss"] = model.history["diffusion_loss"][-1]
        models[objective] = model
        for sampler in samplers:
            for n in step_list:
                if sampler in ("dpm++", "heun") and n > 50:
                    continue  # higher-order samplers are for few steps
                t = time.perf_counter()
                g = model.generate(labels, sampler=sampler, n_steps=n, seed=seed, guidance_scale=1.0)
                dt = time.perf_counter() - t
                gen = g.mod["rna"]
                gen.obs["cell_type"] = labels["cell_type"]
                tidy, _ = ev.evaluate_generation(real, gen, metrics=["mmd", "pb_pearson"], per_cell_type_metrics=[],
                                                 seeds=(0,), feature_space=fs)
                row = {"objective": objective, "sampler": sampler, "n_steps": n, "seconds": dt,
                       "cells_per_s": gen.n_obs / dt, "mmd": _pooled(tidy, "mmd"),
                       "pb_pearson": _pooled(tidy, "pb_pearson")}
                quality.append(row)
                print(json.dumps(row), flush=True)
        sampler = samplers[1]
        t = time.perf_counter()
        tr = model.translate(test, "atac->rna", sampler=sampler, n_steps=20, seed=seed)
        obs = model._matrix(test, "rna").toarray()
        obs = np.log1p(obs / obs.sum(1, keepdims=True) * 1e4)
        r = [np.corrcoef(a, b)[0, 1] for a, b in zip(obs, tr.X)]
        res[f"{objective}_translation"] = {"sampler": sampler, "n_steps": 20, "seconds": time.perf_counter() - t,
                                           "atac_to_rna_pearson_per_cell": float(np.nanmean(r))}
        print(objective, res[f"{objective}_translation"], flush=True)
    res["quality_vs_steps"] = quality
    real_ref = mdata.mod["rna"].copy()
    # the training MuData's rna keeps the labels in mdata.obs
    real_ref.obs["cell_type"] = mdata.obs["cell_type"].astype(str).to_numpy()
    ref_train = real_ref[(mdata.obs["split"] == "train").to_numpy()].copy()

    # ---------------------------------------------------------------- 3. interpolation
    interp = {}
    w = [0.0, 0.25, 0.5, 0.75, 1.0]
    for objective, model in models.items():
        t = time.perf_counter()
        sampler = "dpm++" if objective == "diffusion" else "euler"
        out_l = interpolate(model, state_a, state_b, weights=w, n_cells=n_interp, sampler=sampler, n_steps=20,
                            seed=seed, guidance_scale=interp_guidance)
        fr_l = nearest_type_fractions(out_l, ref_train, "cell_type", types=[state_a, state_b])
        interp[f"{objective}_labels"] = {"fraction_" + state_a: fr_l[state_a].round(3).tolist(),
                                         "seconds": time.perf_counter() - t, "guidance_scale": interp_guidance}
        t = time.perf_counter()
        clf = train_latent_classifier(model, mdata, "cell_type", split_key="split", steps=1500, seed=seed,
                                      hidden=(128, 128))
        t_clf = time.perf_counter() - t
        t = time.perf_counter()
        out_c = interpolate(model, state_a, state_b, weights=w, n_cells=n_interp, classifier=clf, scale=clf_scale,
                            sampler=sampler, n_steps=20, seed=seed)
        fr_c = nearest_type_fractions(out_c, ref_train, "cell_type", types=[state_a, state_b])
        interp[f"{objective}_classifier"] = {"fraction_" + state_a: fr_c[state_a].round(3).tolist(),
                                             "classifier_train_seconds": t_clf, "seconds": time.perf_counter() - t,
                                             "scale": clf_scale}
        print(objective, {k: v for k, v in interp.items() if k.startswith(objective)}, flush=True)
    res["interpolation"] = {"state_a": state_a, "state_b": state_b, "weights": w, **interp}

    # ---------------------------------------------------------------- 2. MLP vs attention RNA autoencoder
    rna_only = mdata.copy()
    ScDiffusionX.setup_mudata(rna_only, labels=["cell_type"], modalities=("rna",))
    ae = {}
    for enc in ("mlp", "attention"):
        model = ScDiffusionX(rna_only, rna_encoder=enc, seed=seed, **MODEL)
        t = time.perf_counter()
        model.train(ae_epochs=ae_epochs, diffusion_steps=1, batch_size=batch_size, split_key="split", seed=seed,
                    device="cpu")
        ae[enc] = {"ae_seconds": model.timing["ae_seconds"], "final_train_nll": model.history["ae_loss"][-1],
                   "encoder_params": sum(p.numel() for p in model.module.rna_ae.encoder.parameters()),
                   **rna_recon(model, test)}
        print(enc, ae[enc], flush=True)
    res["rna_autoencoder"] = ae

    (outp / "seed_systems.json").write_text(json.dumps(res, indent=1, default=str))
    lines = ["| objective | sampler | steps | RBF-MMD (30 PCs) | pseudobulk Pearson | seconds | cells/s |",
             "|---|---|---|---|---|---|---|"]
    for r in quality:
        lines.append(f"| {r['objective']} | {r['sampler']} | {r['n_steps']} | {r['mmd']:.4f} | {r['pb_pearson']:.4f} "
                     f"| {r['seconds']:.2f} | {r['cells_per_s']:.0f} |")
    lines += ["", "| RNA encoder | NB log-lik / cell | Pearson / cell | AE train s | encoder params |", "|---|---|---|---|---|"]
    for k, v in ae.items():
        lines.append(f"| {k} | {v['rna_nb_loglik_per_cell']:.1f} | {v['rna_pearson_per_cell']:.4f} | "
                     f"{v['ae_seconds']:.1f} | {v['encoder_params']} |")
    lines += ["", f"Interpolation {state_a} (w=1) <- {state_b} (w=0), weights {w}: fraction nearest {state_a}"]
    for k, v in interp.items():
        lines.append(f"- {k}: {v['fraction_' + state_a]}")
    (outp / "seed_systems.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    import typer

    typer.run(main)
