"""Train a scDiffusion-X model on a multiome data set (rebuilds the shipped checkpoint).

    python analyses/train_model.py --preset demo --out scdiffx_grn/pretrained/mouse_mop_demo
    python analyses/train_model.py --preset full --out runs/mouse_mop_full   # GPU recommended
    python analyses/train_model.py --head-only --out scdiffx_grn/pretrained/mouse_mop_demo  # refit the head only
    python analyses/train_model.py --preset demo --out runs/mouse_mop_demo_6k --diffusion-steps 6000  # variants

``demo`` is the small checkpoint shipped in ``models/`` (all 1,677 genes, the 3,000 most frequent
peaks of the training cells, small networks, weights stored as float16). ``full`` uses every peak
and the default (feature-scaled) sizes. Both train on the ``train`` cells of a seeded, cell-type
stratified 80/10/10 split (``obs['split']``) so the held-out cells stay unseen. After training, the
RNA->ATAC readout head (``calibrate_translation(method="head")``: fitted on the train cells, stopped on
the val cells) is fitted and saved with the checkpoint; ``translate(..., calibrated=True)`` uses it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


from scdiffx_grn.model._config import PRESETS  # noqa: E402  (the recipes live in the package)


def prepare(mdata, *, n_peaks: int | None, seed: int = 0, split_key: str = "split"):
    """Split cells (seeded, stratified by cell type) and keep the most frequent peaks of train cells."""
    from scdiffx_grn import pp

    if split_key not in mdata.obs:
        pp.split_cells(mdata, fractions=(0.8, 0.1, 0.1), seed=seed, stratify="cell_type", key_added=split_key)
    if n_peaks is not None and n_peaks < mdata.mod["atac"].n_vars:
        # peaks are selected on training cells only: held-out cells do not shape the features
        pp.filter_peaks(mdata, min_frac=0.0, top_n=n_peaks, cells=(mdata.obs[split_key] == "train").to_numpy())
    return mdata


def train(preset: str = "demo", out: str | None = None, *, seed: int = 0, device: str | None = None,
          n_cells: int | None = None, overrides: dict | None = None, half: bool | None = None,
          split_seed: int = 0, model_overrides: dict | None = None):
    """Train a model with a preset on its embedded data set (mouse SNARE-seq, or BMMC for ``bmmc``).

    ``overrides`` / ``model_overrides`` replace entries of the preset's training / model options.
    Returns (model, mdata) with ``mdata.obs['split']`` and the model's features.
    """
    from scdiffx_grn import ScDiffusionX, datasets

    p = PRESETS[preset]
    # the split (and so the peak subset) depends on split_seed only: models trained with other
    # seeds share the same held-out cells and features
    mdata = getattr(datasets, p.get("dataset", "mouse_mop"))(n_cells=n_cells, seed=split_seed)
    prepare(mdata, n_peaks=p["n_peaks"], seed=split_seed)
    ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    model = ScDiffusionX(mdata, seed=seed, **{**p["model"], **(model_overrides or {})})
    kw = dict(p["train"])
    kw.update(overrides or {})
    t = time.perf_counter()
    model.train(split_key="split", seed=seed, device=device, **kw)
    model.timing["total_seconds"] = time.perf_counter() - t
    split = mdata.obs["split"].astype(str)
    # the split travels with the checkpoint: held-out cells can be found again without this script
    model.setup["split"] = {"key": "split", "seed": int(split_seed), "fractions": [0.8, 0.1, 0.1],
                            "stratify": "cell_type", "counts": split.value_counts().to_dict(),
                            "test_cells": split.index[split == "test"].tolist(),
                            "val_cells": split.index[split == "val"].tolist()}
    model.setup["training"] = {"preset": preset, "seed": int(seed), "train": kw,
                               "seconds": round(float(model.timing["total_seconds"]), 1),
                               "torch_threads": int(__import__("torch").get_num_threads())}
    half = (preset == "demo") if half is None else half
    if model.config.n_peaks:  # the head reads the weights as they are saved and loaded (float16 for the demo)
        ref = _as_saved_half(model) if (half and out is not None) else model
        model.translation_calibration["rna->atac"] = ref.calibrate_translation(mdata, "rna->atac", method="head",
                                                                               seed=seed)
    if out is not None:
        model.save(out, overwrite=True, half=half)
        Path(out, "training.json").write_text(json.dumps({"preset": preset, "seed": seed, "train": kw,
                                                          "model_overrides": model_overrides or {},
                                                          "timing": model.timing}, indent=2, default=str))
    return model, mdata


def _as_saved_half(model):
    """A copy of ``model`` whose floating-point weights are rounded to float16 and back: what ``load`` gives
    after ``save(half=True)``."""
    import copy

    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for t in m.module.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))
    return m


def add_readout_head(path: str, *, seed: int = 0):
    """Fit the RNA->ATAC readout head of a saved mouse checkpoint (its stored split: train cells, stopped on
    the val cells) and save the checkpoint in place. The weights are kept as they are, and so is every other
    file of the folder the save does not write (``training.json``, a user's notes); a folder with subfolders
    is refused before any work."""
    from scdiffx_grn import ScDiffusionX, datasets

    sub = [f.name for f in Path(path).iterdir() if f.is_dir()] if Path(path).is_dir() else []
    if sub:
        raise SystemExit(f"{path} holds folders ({', '.join(sub)}) that re-saving the checkpoint would drop; "
                         "move them out first")
    model = ScDiffusionX.load(path)
    split_seed = int(model.setup.get("split", {}).get("seed", 0))
    mdata = model.subset_to_model(prepare(datasets.mouse_mop(), n_peaks=None, seed=split_seed))
    if set(mdata.obs_names[(mdata.obs["split"] == "test").to_numpy()]) != set(model.setup["split"]["test_cells"]):
        raise SystemExit("the re-made split differs from the checkpoint's stored split")
    rec = model.calibrate_translation(mdata, "rna->atac", method="head", seed=seed)
    keep = {f.name: f.read_bytes() for f in Path(path).iterdir() if f.is_file()}
    model.save(path, overwrite=True)
    for name, b in keep.items():
        if not Path(path, name).exists():  # not one the save wrote
            Path(path, name).write_bytes(b)
    return rec


def main(preset: str = "demo", out: str = "scdiffx_grn/pretrained/mouse_mop_demo", seed: int = 0, device: str = "auto",
         translate_cond_dropout: float = -1.0, head_only: bool = False, diffusion_steps: int = 0, n_layers: int = 0):
    """Command-line entry: train a preset and save it (``--translate-cond-dropout`` >= 0 sets that model option;
    ``--diffusion-steps`` / ``--n-layers`` > 0 replace the preset's denoiser steps / DCA blocks; ``--head-only``:
    refit the readout head of the checkpoint at ``--out`` and nothing else)."""
    if head_only:
        rec = add_readout_head(out, seed=seed)
        print(f"readout head: scale {rec['scale']:.3f}, best epoch {rec['best_epoch']} of {rec['epochs']}, val "
              f"log-likelihood {rec['loglik_before']:.4f} -> {rec['loglik_after']:.4f}")
        return
    mo = {"translate_cond_dropout": translate_cond_dropout} if translate_cond_dropout >= 0 else {}
    if n_layers > 0:
        mo["n_layers"] = n_layers
    ov = {"diffusion_steps": diffusion_steps} if diffusion_steps > 0 else None
    model, _ = train(preset, out, seed=seed, device=device, model_overrides=mo or None, overrides=ov)
    print(model)
    print(json.dumps(model.timing, indent=2, default=str))


if __name__ == "__main__":
    import typer

    typer.run(main)
