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

Also, no retraining: the model's samples readout as two more point predictors (latent mean and
decoded mean of the samples), and ``spread_check``: each point predictor's between-cell spread in
the classifier's space and its accuracy once that spread is matched to the observed cells', and
``paired_differences``: ours minus each peer per gene / peak / cell with its paired standard error.

Rows of the model: the posterior mean; for RNA->ATAC also with its one-offset calibration (fitted on
the val cells) and with its readout head (``calibrate_translation(method="head")``: fitted on the
train cells, stopped on the val cells; the shipped checkpoint carries the same head).

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


class CalibratedModel:
    """The shipped model with an RNA->ATAC calibration (``calibrate_translation(method=...)``: the
    ``"offset"`` fitted on the val cells, or the readout ``"head"`` fitted on the train cells and stopped
    on the val cells): ``translate(..., calibrated=True)`` for RNA->ATAC, the plain posterior mean for
    ATAC->RNA."""

    translation_readouts = ("mean",)

    def __init__(self, model, mdata, seed: int = 0, method: str = "offset"):
        import copy

        self.model = copy.copy(model)  # the shipped object keeps no calibration
        self.model.translation_calibration = {}
        self.record = self.model.calibrate_translation(mdata, "rna->atac", method=method, seed=seed)

    def translate(self, mdata, direction="rna->atac", *, seed=0, readout="mean", n_noise=4, **_):
        return self.model.translate(mdata, direction, readout="mean", n_noise=n_noise, seed=seed,
                                    calibrated=direction == "rna->atac")


def _fmt_pair(a, b):
    return f"{100 * a:.1f} / {100 * b:.1f}"


def summary(points, samples, sd, timing) -> "pd.DataFrame":
    """The issue's table: one row per method, the columns that decide who wins."""
    import pandas as pd

    pts = points.set_index(["direction", "predictor"])
    smp = samples.set_index(["direction", "sampler"])
    rows = []
    names = {"shipped model": ("model (posterior mean)", "model samples", "model"),
             "MultiVI": ("MultiVI", "MultiVI samples", "MultiVI"),
             "MultiVI (region factors)": ("MultiVI (region factors)", "MultiVI (region factors) samples",
                                          "MultiVI (region factors)"),
             "shipped model, RNA->ATAC calibrated": ("model, RNA->ATAC calibrated", None,
                                                     "model, RNA->ATAC calibrated"),
             "shipped model, RNA->ATAC readout head": ("model, RNA->ATAC readout head", None,
                                                       "model, RNA->ATAC readout head"),
             "ridge": ("ridge", "ridge + training residual", "ridge"),
             "k-NN": ("k-NN", "k-NN neighbours", "k-NN")}
    preds = list(points["predictor"].unique())
    for prefix, label in (("model (latent mean of", "shipped model, samples' latent mean"),
                          ("model (decoded mean of", "shipped model, samples' decoded mean")):
        names[label] = (next(p for p in preds if p.startswith(prefix)), None, None)
    for label, (pred, sampler, sdk) in names.items():
        r = {"method": label}
        for d, short in (("atac->rna", "A->R"), ("rna->atac", "R->A")):
            p = pts.loc[(d, pred)]
            r[f"{short} per-{'gene r' if d == 'atac->rna' else 'peak AUROC'}"] = round(p["per_feature"], 3)
            r[f"{short} per-cell {'r' if d == 'atac->rna' else 'AUROC'}"] = round(p["per_cell"], 3)
            r[f"{short} acc (test-split classifier) raw / re-centred"] = _fmt_pair(p["accuracy"],
                                                                                   p["accuracy_recentred"])
            s = sd[(sd["method"] == sdk) & (sd["direction"] == d)]
            s = s.iloc[0] if len(s) else None
            r[f"{short} acc own / shuffled"] = _fmt_pair(s["own"], s["shuffled"]) if s is not None else ""
            r[f"{short} re-centred own / shuffled"] = (_fmt_pair(s["own_rc"], s["shuffled_rc"])
                                                        if s is not None else "")
            r[f"{short} gap (re-centred)"] = (round(100 * (s["own_rc"] - s["shuffled_rc"]), 1)
                                              if s is not None else float("nan"))
            es = [v for k, v in smp.loc[d, "energy_score"].items() if sampler and k.startswith(sampler)]
            r[f"{short} energy score"] = round(es[0], 2) if es else float("nan")
        r["train s"] = timing.get(label, timing.get(label.split(",")[0].split(" (")[0], {})).get("train")
        r["inference s (both directions)"] = round(
            pts.loc[("atac->rna", pred), "seconds"] + pts.loc[("rna->atac", pred), "seconds"], 1)
        rows.append(r)
    return pd.DataFrame(rows)


def spread_check(model, peers, mdata, train, test, direction: str, seed: int = 0, n_comps: int = 30):
    """Why a classifier misses a point predictor: the spread of its re-centred predictions between cells.

    In the classifier space of ``translation_scores`` (PCA of the observed target fitted on training
    cells, logistic regression on them): total variance of each predictor's re-centred test predictions
    over the observed test cells' variance, the re-centred accuracy, and the accuracy once the
    predictions' deviations from their mean are scaled by one number so that their total variance
    equals the observed one (the content of the prediction without its amplitude).
    """
    import numpy as np
    import pandas as pd
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from scdiffx_grn.eval import KNNTranslator, RidgeTranslator, observed_target, recentre
    from scdiffx_grn._vocab import split_direction
    from scdiffx_grn.eval._common import counts_layer

    tgt = split_direction(direction)[1]
    m_tr, m_te = mdata[train].copy(), mdata[test].copy()
    layer = counts_layer(mdata, tgt)
    Y_tr, Y_te = observed_target(m_tr.mod[tgt], tgt, layer), observed_target(m_te.mod[tgt], tgt, layer)
    y_tr = m_tr.obs["cell_type"].astype(str).to_numpy()
    y_te = m_te.obs["cell_type"].astype(str).to_numpy()
    pca = PCA(n_components=n_comps, random_state=seed).fit(Y_tr)
    clf = LogisticRegression(max_iter=2000).fit(pca.transform(Y_tr), y_tr)
    preds = {"shipped model": model.translate(m_te, direction, readout="mean", seed=seed).X}
    preds.update({k: p.translate(m_te, direction, seed=seed).X for k, p in peers.items()})
    preds["ridge"] = RidgeTranslator(n_comps=n_comps, seed=seed).fit(m_tr).translate(m_te, direction).X
    preds["k-NN"] = KNNTranslator(n_comps=n_comps, seed=seed).fit(m_tr).translate(m_te, direction).X
    preds["observed"] = Y_te
    mean_tr = Y_tr.mean(0)
    obs_var = pca.transform(Y_te).var(0).sum()
    rows, per = [], {}
    for name, P in preds.items():
        P = np.asarray(P, np.float64)
        Z = pca.transform(recentre(P, mean_tr))
        ratio = Z.var(0).sum() / obs_var
        Zs = pca.transform(recentre(mean_tr + (P - P.mean(0)) / np.sqrt(ratio), mean_tr))
        correct = clf.predict(Z) == y_te
        per[name] = {"accuracy_recentred": correct.astype(float), **_per_unit(Y_te, P, tgt)}
        rows.append({"direction": direction, "predictor": name, "spread_vs_observed": ratio,
                     "accuracy_recentred": float(np.mean(correct)),
                     "accuracy_spread_matched": float(np.mean(clf.predict(Zs) == y_te))})
    return pd.DataFrame(rows), paired_differences(per, direction)


def _per_unit(Y, P, tgt: str) -> dict:
    """Per-feature and per-cell scores of predictions ``P`` of observed ``Y`` (Pearson for RNA, AUROC for ATAC;
    features constant over the test cells left out, as in ``translation_scores``)."""
    from scdiffx_grn.eval._metrics import colwise_pearson, rowwise_auroc, rowwise_pearson

    keep = Y.min(0) != Y.max(0)
    if tgt == "rna":
        return {"per_feature": colwise_pearson(Y[:, keep], P[:, keep]), "per_cell": rowwise_pearson(Y, P)}
    return {"per_feature": rowwise_auroc(Y[:, keep].T, P[:, keep].T), "per_cell": rowwise_auroc(Y, P)}


#: (ours, peer) pairs compared unit by unit (genes / peaks / cells) in each direction
PAIRS = {"atac->rna": [("shipped model", p) for p in ("MultiVI", "ridge")],
         "rna->atac": [(o, p) for o in ("model, RNA->ATAC readout head", "model, RNA->ATAC calibrated")
                       for p in ("MultiVI", "MultiVI (region factors)", "ridge", "k-NN")]}


def paired_differences(per: dict, direction: str) -> "pd.DataFrame":
    """Mean difference (ours - peer) of each per-unit score over the same features or cells, with its paired
    standard error: whether a lead or a loss in the summary is larger than its noise."""
    import numpy as np
    import pandas as pd

    rows = []
    for ours, peer in PAIRS[direction]:
        if ours not in per or peer not in per:
            continue
        for metric in ("per_feature", "per_cell", "accuracy_recentred"):
            d = per[ours][metric] - per[peer][metric]
            d = d[np.isfinite(d)]
            se = float(d.std(ddof=1) / np.sqrt(len(d)))
            rows.append({"direction": direction, "ours": ours, "peer": peer, "metric": metric, "n": len(d),
                         "difference": float(d.mean()), "se": se, "z": float(d.mean() / se) if se > 0 else np.nan})
    return pd.DataFrame(rows)


def main(out: str = "results/peers_mouse", checkpoint: str = "mouse_mop_demo",
         multivi_path: str = "runs/peers/multivi_mouse", multivi_max_time: str = "", n_samples: int = 10,
         n_steps: int = 20, seed: int = 0, threads: int = 1, n_test: int = 0):
    """Score the shipped model, MultiVI, ridge and k-NN on the held-out cells; write tables and report.md.

    ``--n-test N`` scores a seeded subsample of N test cells (a quick check of the script; 0: all).
    """
    import copy
    import json
    import os

    import pandas as pd
    import torch

    os.environ.setdefault("SCDX_PROGRESS", "0")
    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import KNNTranslator, source_dependence, to_markdown, translation_scores

    torch.set_num_threads(int(threads))
    t_start = time.perf_counter()
    model, mdata = load_data(checkpoint)
    split = mdata.obs["split"].to_numpy()
    test, train = split == "test", split == "train"
    if n_test:
        import numpy as np

        keep = np.random.default_rng(seed).choice(np.flatnonzero(test), size=int(n_test), replace=False)
        test = np.isin(np.arange(len(split)), keep)
    mv = multivi(mdata, multivi_path, max_time=multivi_max_time or None, threads=threads, seed=seed)
    mv_timing = json.loads((Path(multivi_path) / "timing.json").read_text())
    timing = {"shipped model": {"train": model.setup.get("training", {}).get("seconds")},
              "MultiVI": {"train": round(mv_timing["train_wall_s"], 0)}}
    # the k-NN of source_dependence is fitted on the cells its ridge reference is fitted on (all but test)
    t0 = time.perf_counter()
    knn = KNNTranslator(seed=seed).fit(mdata[~test].copy())
    timing["k-NN"] = {"train": round(time.perf_counter() - t0, 1)}
    from scdiffx_grn.eval import RidgeTranslator

    t0 = time.perf_counter()
    RidgeTranslator(seed=seed).fit(mdata[~test].copy())
    timing["ridge"] = {"train": round(time.perf_counter() - t0, 1)}

    # MultiVI's documented accessibility readout leaves out its region factors; the second row puts them in
    mv_regions = copy.copy(mv)
    mv_regions.normalize_regions = True
    cal = CalibratedModel(model, mdata, seed=seed)  # one logit offset, fitted on the val cells only
    print(f"RNA->ATAC calibration (val cells): offset {cal.record['offset']:.3f}", flush=True)
    t0 = time.perf_counter()
    head = CalibratedModel(model, mdata, seed=seed, method="head")  # fitted on train, stopped on val
    head_s = time.perf_counter() - t0
    base_s = timing["shipped model"]["train"]  # the row's training time: the model's plus the head's fit
    timing["shipped model, RNA->ATAC readout head"] = {"train": None if base_s is None else round(base_s + head_s)}
    print(f"RNA->ATAC readout head: scale {head.record['scale']:.3f}, best epoch {head.record['best_epoch']}, "
          f"fitted in {head_s:.0f} s", flush=True)
    peers = {"MultiVI": mv, "MultiVI (region factors)": mv_regions, "model, RNA->ATAC calibrated": cal,
             "model, RNA->ATAC readout head": head}
    pts, smp, sd = [], [], []
    for direction in ("atac->rna", "rna->atac"):
        t0 = time.perf_counter()
        res = translation_scores(model, mdata, train=train, test=test, direction=direction, n_samples=n_samples,
                                 n_steps=n_steps, seed=seed, peers=peers)
        print(f"{direction}: translation_scores in {time.perf_counter() - t0:.0f} s", flush=True)
        print(res["points"].to_string(index=False), flush=True)
        print(res["samples"].to_string(index=False), flush=True)
        pts.append(res["points"])
        smp.append(res["samples"])
        for name, meth in (("model", model), ("model, RNA->ATAC calibrated", cal),
                           ("model, RNA->ATAC readout head", head), ("MultiVI", mv),
                           ("MultiVI (region factors)", mv_regions), ("k-NN", knn)):
            if name in ("MultiVI (region factors)", "model, RNA->ATAC calibrated",
                        "model, RNA->ATAC readout head") and direction == "atac->rna":
                continue  # the region factors and the calibration touch ATAC outputs only
            r = source_dependence(meth, mdata, direction=direction, cells=test, readout="mean", seed=seed)
            print(f"{name}: {r['verdict']}", flush=True)
            sd.append({"method": name, "direction": direction, "own": r["accuracy_translated"],
                       "shuffled": r["accuracy_shuffled_source"], "own_rc": r["accuracy_translated_recentred"],
                       "shuffled_rc": r["accuracy_shuffled_source_recentred"],
                       "cell_agreement_own": r["cell_agreement_own"],
                       "cell_agreement_shuffled": r["cell_agreement_shuffled"],
                       "accuracy_observed": r["accuracy_observed"], "verdict": r["verdict"]})
            if name == "model":  # its ridge reference is the ridge row
                sd.append({"method": "ridge", "direction": direction, "own": r["accuracy_ridge_own"],
                           "shuffled": r["accuracy_ridge_shuffled"], "own_rc": r["accuracy_ridge_own_recentred"],
                           "shuffled_rc": r["accuracy_ridge_shuffled_recentred"],
                           "accuracy_observed": r["accuracy_observed"]})
    checks = [spread_check(model, peers, mdata, train, test, d, seed=seed) for d in ("atac->rna", "rna->atac")]
    spread = pd.concat([c[0] for c in checks], ignore_index=True)
    paired = pd.concat([c[1] for c in checks], ignore_index=True)
    print(spread.to_string(index=False), flush=True)
    print(paired.to_string(index=False), flush=True)
    tables = {"points": pd.concat(pts, ignore_index=True), "samples": pd.concat(smp, ignore_index=True),
              "source_dependence": pd.DataFrame(sd), "spread": spread, "paired": paired}
    tables["summary"] = summary(tables["points"], tables["samples"], tables["source_dependence"], timing)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    for k, t in tables.items():
        atomic_write_text(o / f"{k}.csv", t.to_csv(index=False))
    md = [f"# Translation peers on the mouse test cells ({int(test.sum())} cells)", "",
          f"MultiVI: {mv_timing['epochs']} epochs (max {mv_timing['max_epochs']}, wall cap "
          f"{mv_timing['max_time']}), {mv_timing['train_wall_s']:.0f} s wall, {mv_timing['train_cpu_s']:.0f} CPU-s, "
          f"{mv_timing['threads']} thread(s); whole run {time.perf_counter() - t_start:.0f} s wall", ""]
    for k in ("summary", "paired", "points", "samples", "source_dependence", "spread"):
        t = tables[k]
        md += [f"## {k}", "", to_markdown(t.drop(columns=[c for c in ("verdict",) if c in t]), index=False), ""]
    atomic_write_text(o / "report.md", "\n".join(md) + "\n")
    print(tables["summary"].to_string(index=False), flush=True)
    return tables


if __name__ == "__main__":
    import typer

    typer.run(main)
