"""Which denoiser objective gives the best held-out posterior mean? (autoencoders fixed, one run)

    OMP_NUM_THREADS=1 python analyses/objective_ablation.py --checkpoint models/mouse_mop_demo --steps 1000 \
        --out results/objective_ablation

Takes the checkpoint's trained autoencoders, trains a fresh denoiser for ``--steps`` steps with each
objective (same seed, batches and budget) and scores the posterior-mean translation of the held-out
cells: ATAC->RNA per-gene Pearson and classifier accuracy own vs shuffled source, RNA->ATAC
per-cell AUROC, and the denoiser's clean-latent error at t = 950 (own / shuffled / mean predictor).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "v, uniform weights (default)": dict(prediction="v", loss_weighting="none"),
    "v, min-SNR-5": dict(prediction="v", loss_weighting="min_snr"),
    "x0, uniform weights": dict(prediction="x0", loss_weighting="none"),
    "epsilon, uniform weights (+ source path)": dict(prediction="epsilon", loss_weighting="none"),
}


def main(checkpoint: str = "models/mouse_mop_demo", steps: int = 1000, out: str = "results/objective_ablation",
         seed: int = 0, variants: str = "") -> pd.DataFrame:
    import torch

    from train_model import PRESETS, prepare

    from scdiffx_grn import ScDiffusionX, datasets
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import source_dependence, to_markdown, translation_scores
    from scdiffx_grn.model import ModelConfig

    torch.set_num_threads(1)
    base = ScDiffusionX.load(checkpoint, device="cpu")
    mdata = base.subset_to_model(prepare(datasets.mouse_mop(), n_peaks=None, seed=0))
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    test = (mdata.obs["split"] == "test").to_numpy()
    train = (mdata.obs["split"] == "train").to_numpy()
    kw = dict(PRESETS["demo"]["train"])
    names = [v for v in VARIANTS if not variants or any(s.strip() and s.strip() in v for s in variants.split(","))]
    rows = []
    for name in names:
        cfg = ModelConfig.from_dict({**base.config.to_dict(), **VARIANTS[name]})
        model = ScDiffusionX(mdata, config=cfg, seed=seed)
        ae_state = {k: v for k, v in base.module.state_dict().items() if k.startswith(("rna_ae.", "atac_ae."))}
        model.module.load_state_dict(ae_state, strict=False)
        t0 = time.perf_counter()
        model.train(ae_epochs=0, diffusion_steps=steps, batch_size=kw["batch_size"], lr=kw["lr"], seed=seed,
                    split_key="split", device="cpu")
        secs = time.perf_counter() - t0
        row = {"objective": name, "steps": steps, "train_seconds": round(secs, 1)}
        for direction in ("atac->rna", "rna->atac"):
            d = source_dependence(model, mdata, direction=direction, cells=test, seed=seed)
            p = translation_scores(model, mdata, train=train, test=test, direction=direction, seed=seed,
                                   include_samples=False)["points"].set_index("predictor")
            tag = "a2r" if direction == "atac->rna" else "r2a"
            row.update({f"{tag}_acc_own": d["accuracy_translated"], f"{tag}_acc_shuffled": d["accuracy_shuffled_source"],
                        f"{tag}_per_feature": p.loc["model (posterior mean)", "per_feature"],
                        f"{tag}_per_cell": p.loc["model (posterior mean)", "per_cell"],
                        f"{tag}_ridge_per_feature": p.loc["ridge", "per_feature"],
                        f"{tag}_ridge_per_cell": p.loc["ridge", "per_cell"],
                        f"{tag}_latent_err_own": d.get("latent_error_own"),
                        f"{tag}_latent_err_shuffled": d.get("latent_error_shuffled"),
                        f"{tag}_latent_err_mean": d.get("latent_error_mean_predictor")})
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "objective_ablation.csv", table.to_csv(index=False))
    atomic_write_text(Path(out) / "objective_ablation.md", to_markdown(table, index=False))
    return table


if __name__ == "__main__":
    import typer

    typer.run(main)
