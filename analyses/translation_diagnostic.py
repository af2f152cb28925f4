"""Does a checkpoint's translation use its input, and how good is it? Held-out cells, one run.

Usage::

    python analyses/translation_diagnostic.py --checkpoint models/mouse_mop_demo --out results/translation_mouse
    python analyses/translation_diagnostic.py --checkpoint runs/bmmc --dataset bmmc --out results/translation_bmmc

For both directions on the held-out (``test``) cells of ``analyses/train_model.prepare``:

- ``eval.source_dependence`` (posterior-mean readout, and one DDIM sample): own vs shuffled
  source, the denoiser's clean-latent error at t = 950, the ridge / linear-Gaussian reference
  and the verdict -> ``source_dependence.csv``;
- ``eval.translation_scores``: point predictions (posterior mean vs ridge, k-NN, training
  mean, label oracle, autoencoder ceiling) -> ``points.csv``; samples (energy score and PIT
  coverage vs ridge + residual, k-NN neighbours, random training cells) -> ``samples.csv``.

Also writes ``report.md`` with the three tables.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(checkpoint: str = "models/mouse_mop_demo", dataset: str = "mouse_mop",
         out: str = "results/translation_mouse", n_samples: int = 10, n_steps: int = 20,
         source_guidance: float = 1.0, seed: int = 0, threads: int = 1) -> dict:
    """Run both directions on the test split; returns the three tables."""
    import torch

    from train_model import prepare

    from scdiffx_grn import ScDiffusionX, datasets
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import source_dependence, to_markdown, translation_scores

    torch.set_num_threads(int(threads))
    model = ScDiffusionX.load(checkpoint)
    mdata = model.subset_to_model(prepare(getattr(datasets, dataset)(), n_peaks=None, seed=0))
    test = (mdata.obs["split"] == "test").to_numpy()
    train = (mdata.obs["split"] == "train").to_numpy()
    sd, pts, smp = [], [], []
    for direction in ("atac->rna", "rna->atac"):
        for readout in ("mean", "samples"):
            t0 = time.perf_counter()
            r = source_dependence(model, mdata, direction=direction, cells=test, readout=readout, n_steps=n_steps,
                                  seed=seed)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            sd.append(r)
            print(r["verdict"], flush=True)
        t0 = time.perf_counter()
        res = translation_scores(model, mdata, train=train, test=test, direction=direction, n_samples=n_samples,
                                 n_steps=n_steps, source_guidance=source_guidance, seed=seed)
        print(f"{direction}: scores in {time.perf_counter() - t0:.0f} s", flush=True)
        print(res["points"].to_string(index=False), flush=True)
        print(res["samples"].to_string(index=False), flush=True)
        pts.append(res["points"])
        smp.append(res["samples"])
    tables = {"source_dependence": pd.DataFrame(sd), "points": pd.concat(pts, ignore_index=True),
              "samples": pd.concat(smp, ignore_index=True)}
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    for k, t in tables.items():
        atomic_write_text(o / f"{k}.csv", t.to_csv(index=False))
    md = [f"# Translation diagnostic: `{checkpoint}` on `{dataset}` ({int(test.sum())} test cells)", ""]
    for k, t in tables.items():
        md += [f"## {k}", "", to_markdown(t.drop(columns=[c for c in ("verdict",) if c in t]), index=False), ""]
    md += ["## verdicts", ""] + [f"- {v}" for v in tables["source_dependence"]["verdict"]]
    atomic_write_text(o / "report.md", "\n".join(md) + "\n")
    return tables


if __name__ == "__main__":
    import typer

    typer.run(main)
