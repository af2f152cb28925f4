"""Translation side by side: the shipped checkpoint vs MultiVI, ridge and k-NN, one run, the same scoring code.

    pip install -e ".[peers]"          # scvi-tools 1.4.2 (not needed by the README commands or CI)
    python analyses/benchmark_peers.py --out results/peers_mouse            # trains MultiVI once, caches it
    python analyses/benchmark_peers.py --out results/peers_mouse --multivi runs/peers/multivi_mouse

Data: the mouse SNARE-seq cells in the shipped checkpoint's features (1,677 genes, 3,000 peaks)
and its seeded split (``analyses/train_model.prepare``): MultiVI is trained on the same
``train`` cells with the ``val`` cells for its early stopping (documented defaults: 500 epochs
at most, patience 50), and never sees the 1,028 ``test`` cells. Its translation is inductive:
each test cell's target modality is zeroed, so MultiVI encodes the source alone.

Per direction, on the test cells:

- ``eval.translation_scores`` with ``peers={"MultiVI": ...}``: per-gene Pearson / per-peak
  AUROC, per-cell Pearson / AUROC, classifier accuracy raw and after the per-feature
  re-centring (every method's predictions shifted so that their per-feature mean over the test
  cells is the training cells' observed mean: the raw accuracy rewards calibration as much as
  content), energy score and PIT coverage of samples for the methods that sample;
- ``eval.source_dependence`` (mean readout) for the model, MultiVI and k-NN (ridge is its
  built-in reference): accuracy from the own vs shuffled source, raw and re-centred;
- train and inference wall time of each method (the machine may be shared: times are upper
  bounds, ratios come from the same run).

``--extra-noise`` adds rows of the model's posterior mean averaged over more noises (no retraining).

scikit-misc arrives with scvi-tools and would switch the baselines' HVG flavour; it is hidden so
that ridge / k-NN score exactly as in the package's default install.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.modules.setdefault("skmisc", None)  # the baselines' HVG flavour of the default install (see above)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_data(checkpoint: str = "mouse_mop_demo"):
    """The model and the mouse cells in its features with the shipped split (``obs['split']``)."""
    from train_model import prepare

    from scdiffx_grn import ScDiffusionX, datasets

    model = ScDiffusionX.load_pretrained(checkpoint) if "/" not in checkpoint else ScDiffusionX.load(checkpoint)
    mdata = model.subset_to_model(prepare(datasets.mouse_mop(), n_peaks=None, seed=0))
    test = (mdata.obs["split"] == "test").to_numpy()
    shipped = model.setup.get("split", {}).get("test_cells")
    if shipped is not None and set(mdata.obs_names[test]) != set(shipped):
        raise SystemExit("the test cells differ from the checkpoint's shipped split")
    return model, mdata


def multivi(mdata, path: str = "runs/peers/multivi_mouse", *, max_epochs: int = 500, max_time: str | None = None,
            threads: int = 1, seed: int = 0):
    """Load the cached MultiVI from ``path``, or train it (train cells, val for early stopping) and save it."""
    import json

    from scdiffx_grn.eval._peers import MultiVITranslator

    train = (mdata.obs["split"] == "train").to_numpy()
    val = (mdata.obs["split"] == "val").to_numpy()
    p = Path(path)
    if (p / "model.pt").exists():
        return MultiVITranslator.load(p, mdata, train=train, val=val, threads=threads)
    t0 = time.perf_counter()
    c0 = time.process_time()
    mv = MultiVITranslator(max_epochs=max_epochs, max_time=max_time, seed=seed, threads=threads).fit(
        mdata, train=train, val=val)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    mv.save(p)
    (p / "timing.json").write_text(json.dumps({"train_wall_s": wall, "train_cpu_s": cpu, "epochs": mv.epochs_,
                                               "max_epochs": max_epochs, "max_time": max_time,
                                               "threads": threads}))
    print(f"MultiVI: {mv.epochs_} epochs in {wall:.0f} s wall, {cpu:.0f} CPU-s", flush=True)
    return mv


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--train-multivi-only":
    import os

    os.environ.setdefault("SCDX_PROGRESS", "0")
    _, mdata = load_data()
    multivi(mdata, max_time=(sys.argv[2] if len(sys.argv) > 2 else None))
    raise SystemExit(0)
