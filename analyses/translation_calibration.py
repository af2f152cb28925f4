"""Post-hoc calibration of the posterior-mean translation, fitted on val cells, scored on test cells.

    python analyses/translation_calibration.py --out results/translation_calibration

No retraining. The shipped checkpoint's RNA->ATAC posterior mean is the decoded posterior-mean
latent; its peak probabilities are calibrated on the 1,034 ``val`` cells of the shipped split and
every candidate is scored on the 1,028 ``test`` cells beside the uncalibrated model, ridge and
k-NN with the package's scoring code, in one run:

- ``eval.translation_scores(..., peers=candidates)``: per-peak and per-cell AUROC, classifier
  accuracy raw and re-centred (classifier fitted on the training cells);
- ``eval.source_dependence`` (re-centred accuracy from the own vs shuffled source; classifier
  fitted on the non-test cells) for the model, each candidate and k-NN (ridge is its reference);
- Bernoulli log-likelihood and Brier score of the probabilities on the test cells (ridge and
  k-NN clipped to [1e-4, 1 - 1e-4], ridge's own clip).

Candidates (RNA->ATAC), all fitted by Bernoulli log-likelihood on the val cells:

- ``offset``, ``amplitude``, ``affine``: :meth:`ScDiffusionX.calibrate_translation` (``logit p' =
  offset + prior_weight * c_p + amplitude * (logit p - c_p)``, ``c_p`` the peak's mean val logit);
- ``per-peak``: ``logit p' = alpha_p + beta_p logit p`` per peak, ridge-penalised toward
  ``(0, 1)`` (penalties picked by 2-fold cross-validation within the val cells; vectorised Newton);
- ``latent amplitude``: the posterior-mean latent's deviation from its val mean scaled by one
  number before decoding.

A per-peak monotone map (offset, amplitude, affine with positive amplitude, per-peak with
positive slope) cannot change the per-peak AUROC; one map shared by all peaks (offset) cannot
change the per-cell AUROC either.

ATAC->RNA: one amplitude of the log proportions around each gene's val mean (renormalised),
fitted by the multinomial log-likelihood of the val cells' counts, scored the same way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.modules.setdefault("skmisc", None)  # the baselines' HVG flavour of the default install (benchmark_peers.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))

EPS = 1e-4


def _sig(x):
    import numpy as np

    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _loglik(P, Y) -> float:
    import numpy as np

    P = np.clip(np.asarray(P, np.float64), EPS, 1 - EPS)
    return float(np.mean(Y * np.log(P) + (1 - Y) * np.log1p(-P)))


class _ModelPoint:
    """The model's posterior-mean translation and its logits (a base for the candidates)."""

    translation_readouts = ("mean",)

    def __init__(self, model):
        self.model = model

    def logits(self, mdata, direction, seed=0, n_noise=4):
        import numpy as np
        import torch

        res = self.model.translate(mdata, direction, readout="mean", n_noise=n_noise, seed=seed)
        with torch.no_grad():
            z = torch.as_tensor(res.obsm["latent"])
            return res, self.model.module.decode_atac_logits(z).double().numpy().astype(np.float64)


class LibraryCalibrated(_ModelPoint):
    """``model.translate(..., calibrated=True)`` of a copy of the model holding one fitted calibration."""

    def __init__(self, model, mdata, method, seed=0):
        import copy

        m = copy.copy(model)
        m.translation_calibration = {}
        self.record = m.calibrate_translation(mdata, "rna->atac", method=method, seed=seed)  # maps: val; head: train
        super().__init__(m)

    def translate(self, mdata, direction="rna->atac", *, seed=0, readout="mean", n_noise=4, **_):
        return self.model.translate(mdata, direction, readout="mean", n_noise=n_noise, seed=seed, calibrated=True)


def fit_per_peak(L, Y, lam_a: float, lam_b: float, iters: int = 100):
    """Per-peak logistic ``alpha_p + beta_p L`` (all peaks at once, Newton on 2x2 systems), penalised toward (0, 1)."""
    import numpy as np

    al, be = np.zeros(L.shape[1]), np.ones(L.shape[1])
    for _ in range(iters):
        mu = _sig(al + be * L)
        w, r = mu * (1 - mu), Y - mu
        ga, gb = r.sum(0) - lam_a * al, (r * L).sum(0) - lam_b * (be - 1)
        haa, hab, hbb = w.sum(0) + lam_a, (w * L).sum(0), (w * L * L).sum(0) + lam_b
        det = haa * hbb - hab ** 2
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        al, be = al + da, be + db
        if max(np.abs(da).max(), np.abs(db).max()) < 1e-8:
            break
    return al, be


class PerPeak(_ModelPoint):
    def __init__(self, model, mdata_val, Y_val, seed=0, grid=(1.0, 10.0, 100.0, 1000.0)):
        import numpy as np

        super().__init__(model)
        _, L = self.logits(mdata_val, "rna->atac", seed)
        folds = np.random.default_rng(seed).permutation(len(L)) % 2
        best = None
        for la in grid:
            for lb in grid:
                cv = 0.0
                for f in (0, 1):
                    a, b = fit_per_peak(L[folds != f], Y_val[folds != f], la, lb)
                    cv += _loglik(_sig(a + b * L[folds == f]), Y_val[folds == f])
                if best is None or cv > best[0]:
                    best = (cv, la, lb)
        self.lam = best[1:]
        self.alpha, self.beta = fit_per_peak(L, Y_val, *self.lam)

    def translate(self, mdata, direction="rna->atac", *, seed=0, readout="mean", n_noise=4, **_):
        import numpy as np

        res, L = self.logits(mdata, direction, seed, n_noise)
        res.X = _sig(self.alpha + self.beta * L).astype(np.float32)
        return res


class LatentAmplitude(_ModelPoint):
    def __init__(self, model, mdata_val, Y_val, seed=0):
        import torch
        from scipy.optimize import minimize_scalar

        super().__init__(model)
        res = model.translate(mdata_val, "rna->atac", readout="mean", seed=seed)
        Z = torch.as_tensor(res.obsm["latent"])
        self.zbar = Z.mean(0)
        f = lambda s: -_loglik(self._decode(self.zbar + s * (Z - self.zbar)), Y_val)  # noqa: E731
        self.s = float(minimize_scalar(f, bounds=(0.1, 20.0), method="bounded").x)

    def _decode(self, Z):
        import torch

        with torch.no_grad():
            return self.model.decode_atac(Z.float()).double().numpy()

    def translate(self, mdata, direction="rna->atac", *, seed=0, readout="mean", n_noise=4, **_):
        import numpy as np
        import torch

        res = self.model.translate(mdata, direction, readout="mean", n_noise=n_noise, seed=seed)
        Z = torch.as_tensor(res.obsm["latent"])
        res.X = self._decode(self.zbar + self.s * (Z - self.zbar)).astype(np.float32)
        return res


class RnaAmplitude:
    """ATAC->RNA: log proportions scaled around each gene's val mean by one number, renormalised."""

    translation_readouts = ("mean",)

    def __init__(self, model, mdata_val, counts_val, seed=0):
        import numpy as np
        from scipy.optimize import minimize_scalar

        self.model = model
        R = self._logrho(model.translate(mdata_val, "atac->rna", readout="mean", seed=seed).X)
        self.centre = R.mean(0)
        C = np.asarray(counts_val, np.float64)
        f = lambda a: -float(np.sum(C * self._scaled(R, a)) / C.sum())  # noqa: E731
        self.a = float(minimize_scalar(f, bounds=(0.05, 10.0), method="bounded").x)

    @staticmethod
    def _logrho(X):
        import numpy as np

        return np.log(np.clip(np.expm1(np.asarray(X, np.float64)) / 1e4, 1e-30, None))

    def _scaled(self, R, a):
        import numpy as np

        x = self.centre + a * (R - self.centre)
        return x - np.logaddexp.reduce(x, axis=1, keepdims=True)

    def translate(self, mdata, direction="atac->rna", *, seed=0, readout="mean", n_noise=4, **_):
        import numpy as np

        res = self.model.translate(mdata, direction, readout="mean", n_noise=n_noise, seed=seed)
        res.X = np.log1p(1e4 * np.exp(self._scaled(self._logrho(res.X), self.a))).astype(np.float32)
        return res


def main(out: str = "results/translation_calibration", checkpoint: str = "mouse_mop_demo", seed: int = 0,
         threads: int = 1):
    """Fit the calibrations on the val cells, score them on the test cells beside ridge and k-NN; write report.md."""
    import os

    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import torch

    os.environ.setdefault("SCDX_PROGRESS", "0")
    from benchmark_peers import load_data

    from scdiffx_grn._io import atomic_write_text
    from scdiffx_grn.eval import (KNNTranslator, RidgeTranslator, observed_target, source_dependence, to_markdown,
                                  translation_scores)

    torch.set_num_threads(int(threads))
    t_start = time.perf_counter()
    model, mdata = load_data(checkpoint)
    split = mdata.obs["split"].to_numpy()
    train, val, test = split == "train", split == "val", split == "test"
    m_val, m_te, m_tr = mdata[val].copy(), mdata[test].copy(), mdata[train].copy()
    Y_val = observed_target(m_val.mod["atac"], "atac", "counts")
    Y_te = observed_target(m_te.mod["atac"], "atac", "counts")

    t0 = time.perf_counter()
    cands = {f"calibrated: {m}": LibraryCalibrated(model, mdata, m, seed)
             for m in ("offset", "amplitude", "affine", "head")}
    cands["per-peak logistic"] = PerPeak(model, m_val, Y_val, seed)
    cands["latent amplitude"] = LatentAmplitude(model, m_val, Y_val, seed)
    fit_s = time.perf_counter() - t0
    params = []
    for k, c in cands.items():
        if isinstance(c, LibraryCalibrated) and c.record["method"] == "head":
            r = c.record
            w_rms = float(np.sqrt(np.mean(r["weight"] ** 2)))
            params.append({"candidate": k, "parameters": f"scale {r['scale']:.3f}, |W| rms {w_rms:.4f}, "
                           f"best epoch {r['best_epoch']} of {r['epochs']} ({r['n_cells']} train cells, stopped on "
                           f"{r['n_val_cells']} val cells)",
                           "val loglik before / after": f"{r['loglik_before']:.4f} / {r['loglik_after']:.4f}"})
        elif isinstance(c, LibraryCalibrated):
            r = c.record
            params.append({"candidate": k, "parameters": f"offset {r['offset']:.3f}, prior_weight "
                           f"{r['prior_weight']:.3f}, amplitude {r['amplitude']:.3f}",
                           "val loglik before / after": f"{r['loglik_before']:.4f} / {r['loglik_after']:.4f}"})
    pp = cands["per-peak logistic"]
    params.append({"candidate": "per-peak logistic", "parameters": f"penalties (alpha, beta) {pp.lam}; beta 5/50/95 % "
                   + " / ".join(f"{v:.2f}" for v in np.percentile(pp.beta, [5, 50, 95])), "val loglik before / after": ""})
    params.append({"candidate": "latent amplitude", "parameters": f"s = {cands['latent amplitude'].s:.3f}",
                   "val loglik before / after": ""})
    print(pd.DataFrame(params).to_string(index=False), flush=True)

    # ---- RNA->ATAC: the package's scores, one run
    res = translation_scores(model, mdata, train=train, test=test, direction="rna->atac", seed=seed,
                             peers=cands, include_samples=False)
    points = res["points"]
    print(points.to_string(index=False), flush=True)
    knn = KNNTranslator(seed=seed).fit(mdata[~test].copy())
    sd = []
    for name, meth in [("model (posterior mean)", model), *cands.items(), ("k-NN", knn)]:
        r = source_dependence(meth, mdata, direction="rna->atac", cells=test, readout="mean", seed=seed)
        print(f"{name}: {r['verdict']}", flush=True)
        sd.append({"predictor": name, "own_rc": r["accuracy_translated_recentred"],
                   "shuffled_rc": r["accuracy_shuffled_source_recentred"], "own": r["accuracy_translated"],
                   "shuffled": r["accuracy_shuffled_source"], "cell_agreement_own": r["cell_agreement_own"],
                   "cell_agreement_shuffled": r["cell_agreement_shuffled"]})
        if meth is model:
            sd.append({"predictor": "ridge", "own_rc": r["accuracy_ridge_own_recentred"],
                       "shuffled_rc": r["accuracy_ridge_shuffled_recentred"], "own": r["accuracy_ridge_own"],
                       "shuffled": r["accuracy_ridge_shuffled"]})
    sd = pd.DataFrame(sd)
    # probabilities on the test cells: log-likelihood and Brier (baselines fitted on the training cells)
    probs = {"model (posterior mean)": model.translate(m_te, "rna->atac", readout="mean", seed=seed).X}
    probs.update({k: c.translate(m_te, "rna->atac", seed=seed).X for k, c in cands.items()})
    probs["ridge"] = RidgeTranslator(seed=seed).fit(m_tr).translate(m_te, "rna->atac").X
    probs["k-NN"] = KNNTranslator(seed=seed).fit(m_tr).translate(m_te, "rna->atac").X
    probs["training mean"] = np.broadcast_to(observed_target(m_tr.mod["atac"], "atac", "counts").mean(0), Y_te.shape)
    prob_rows = [{"predictor": k, "test loglik": _loglik(P, Y_te),
                  "test Brier": float(np.mean((np.asarray(P, np.float64) - Y_te) ** 2)),
                  "mean probability": float(np.mean(P))} for k, P in probs.items()]
    prob_rows.append({"predictor": "observed", "mean probability": float(Y_te.mean())})
    prob = pd.DataFrame(prob_rows)

    def fmt(a, b):
        return f"{100 * a:.1f} / {100 * b:.1f}"

    rows = []
    order = ["model (posterior mean)", *cands, "ridge", "k-NN", "training mean"]
    for name in order:
        p = points.set_index("predictor").loc[name]
        s = sd.set_index("predictor").loc[name] if name in set(sd["predictor"]) else None
        q = prob.set_index("predictor").loc[name]
        rows.append({"predictor": name, "per-peak AUROC": round(p["per_feature"], 4),
                     "per-cell AUROC": round(p["per_cell"], 4),
                     "acc raw / re-centred (train classifier)": fmt(p["accuracy"], p["accuracy_recentred"]),
                     "re-centred own / shuffled (source_dependence)": fmt(s["own_rc"], s["shuffled_rc"])
                     if s is not None else "",
                     "gap": round(100 * (s["own_rc"] - s["shuffled_rc"]), 1) if s is not None else float("nan"),
                     "test loglik": round(q["test loglik"], 4), "test Brier": round(q["test Brier"], 5),
                     "mean prob": round(q["mean probability"], 4)})
    summary = pd.DataFrame(rows)
    print(summary.to_string(index=False), flush=True)

    # ---- ATAC->RNA: one amplitude of the log proportions
    C = m_val.mod["rna"].layers["counts"]
    rna_amp = RnaAmplitude(model, m_val, C.toarray() if sp.issparse(C) else C, seed)
    res_r = translation_scores(model, mdata, train=train, test=test, direction="atac->rna", seed=seed,
                               peers={f"amplitude a = {rna_amp.a:.3f}": rna_amp}, include_samples=False)
    sd_r = []
    for name, meth in (("model (posterior mean)", model), (f"amplitude a = {rna_amp.a:.3f}", rna_amp)):
        r = source_dependence(meth, mdata, direction="atac->rna", cells=test, readout="mean", seed=seed)
        sd_r.append({"predictor": name, "re-centred own / shuffled": fmt(r["accuracy_translated_recentred"],
                                                                       r["accuracy_shuffled_source_recentred"])})
    rna = res_r["points"].merge(pd.DataFrame(sd_r), on="predictor", how="left")
    print(rna.to_string(index=False), flush=True)

    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    tables = {"summary": summary, "parameters": pd.DataFrame(params), "points": points, "source_dependence": sd,
              "probabilities": prob, "atac_to_rna": rna}
    for k, t in tables.items():
        atomic_write_text(o / f"{k}.csv", t.to_csv(index=False))
    md = [f"# RNA->ATAC translation calibration: fitted on {int(val.sum())} val cells, scored on {int(test.sum())} "
          f"test cells", "", f"Checkpoint `{checkpoint}`, seed {seed}, {threads} thread(s); candidates fitted in "
          f"{fit_s:.0f} s; whole run {time.perf_counter() - t_start:.0f} s wall.", "",
          "Command: `python analyses/translation_calibration.py --out " + str(out) + "`", ""]
    for k in ("summary", "parameters", "probabilities", "source_dependence", "points", "atac_to_rna"):
        md += [f"## {k}", "", to_markdown(tables[k], index=False), ""]
    atomic_write_text(o / "report.md", "\n".join(md) + "\n")
    return tables


if __name__ == "__main__":
    import typer

    typer.run(main)
