"""Honest yardsticks for translation: point predictions, samples (energy score) and calibration.

A translation model is two things: a point predictor (its posterior mean) and a sampler (its
posterior). Each is scored against baselines of the same kind, in one run, on held-out cells:

- **Point predictions** (:func:`translation_scores`): per-gene Pearson across cells (RNA) or
  per-peak AUROC (ATAC), which measure whether a predictor tells cells apart, beside per-cell
  Pearson / AUROC, which is dominated by the population profile (the training-mean profile
  alone scores high). Predictors: the model's posterior mean, ridge and k-NN (floors), the
  training mean (population floor), the label oracle (training mean of each cell's true type)
  and the autoencoder reconstruction of the true target (the ceiling the latent allows). A
  classifier fitted on observed training cells labels each predictor's output.
- **Samples**: the energy score (a proper scoring rule; lower is better) of ``n_samples``
  samples per cell in the evaluation feature space (PCA of the observed target fitted on
  training cells: log1p CP10k RNA, binary ATAC), against samplers that also sample: ridge mean
  plus the residual of a random training cell (a linear-Gaussian posterior sampler), the k
  nearest training neighbours' profiles, and random training cells (the no-source floor).
  Model samples get observation noise like the data (NB counts at a library size drawn from
  the model's fitted library-size law, Bernoulli peaks), so every sampler is compared with the
  observed cell on the same footing.
- **Calibration**: coverage of central intervals of the samples (randomised PIT per PCA
  dimension); a calibrated sampler covers 50 % / 90 % of observations at the 50 % / 90 % levels.

Ground truths here are the observed held-out cells: independent of every predictor.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError
from .._registry import TARGET_SUM, log_normalize
from .._vocab import MODALITIES, check_option, split_direction
from ._baselines import KNNTranslator, RidgeTranslator
from ._common import cell_indices, counts_layer, group_labels, matrix
from ._metrics import colwise_pearson, rowwise_auroc, rowwise_pearson

__all__ = ["energy_score", "pit_coverage", "translation_scores", "observed_target", "recentre"]


def recentre(pred: np.ndarray, reference_mean: np.ndarray) -> np.ndarray:
    """Shift each feature of ``pred`` so that its mean over the cells is ``reference_mean``.

    ``pred - pred.mean(0) + reference_mean``: applied identically to every predictor before a
    classifier fitted on observed cells labels them, so that a per-feature offset (an output on
    another scale, a calibration bias) does not decide the accuracy; what remains is how the
    predictions vary between cells. The reference is the observed mean of the classifier's cells.
    """
    P = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(reference_mean, dtype=np.float64).ravel()
    if P.ndim != 2 or ref.shape != (P.shape[1],):
        raise InputDataError(f"recentre needs predictions (cells, features) and one mean per feature; got "
                             f"{P.shape} and {ref.shape}")
    return P - P.mean(0, keepdims=True) + ref[None, :]


def energy_score(samples: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Energy score of each cell: ``mean_j |X_j - y| - 1/(2 m^2) sum_jk |X_j - X_k|``.

    Parameters
    ----------
    samples
        ``(m, n, d)``: m samples of n cells in a d-dimensional space.
    obs
        ``(n, d)`` observations.

    Returns
    -------
    ``(n,)`` scores (lower is better; for m = 1 the Euclidean error).
    """
    S = np.asarray(samples, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    if S.ndim != 3 or y.ndim != 2 or S.shape[1:] != y.shape:
        raise InputDataError(f"energy_score needs samples (m, n, d) and obs (n, d); got {S.shape} and {y.shape}")
    m = S.shape[0]
    t1 = np.linalg.norm(S - y[None], axis=-1).mean(0)
    t2 = np.zeros(S.shape[1])
    for j in range(m):
        t2 += np.linalg.norm(S - S[j][None], axis=-1).sum(0)
    return t1 - t2 / (2.0 * m * m)


def pit_coverage(samples: np.ndarray, obs: np.ndarray, levels: Sequence[float] = (0.5, 0.9),
                 seed: int = 0) -> dict[float, float]:
    """Coverage of central intervals by the randomised PIT of each observation among its samples.

    For each cell and dimension, ``u = (#{samples < y} + U * (#{samples == y} + 1)) / (m + 1)``;
    the coverage at level ``a`` is the fraction of ``u`` in ``[(1 - a) / 2, (1 + a) / 2]``
    (``a`` for a calibrated sampler, less for an over-confident one, more for an under-confident one).
    """
    S = np.asarray(samples, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    below = (S < y[None]).sum(0)
    ties = (S == y[None]).sum(0)
    u = (below + rng.random(y.shape) * (ties + 1)) / (S.shape[0] + 1)
    return {float(a): float(np.mean((u >= (1 - a) / 2) & (u <= (1 + a) / 2))) for a in levels}


def observed_target(adata, mod: str, layer: str | None = "counts") -> np.ndarray:
    """Observed values of a modality as the predictors give them: log1p CP10k (RNA) or binary (ATAC).

    ``layer``: the layer holding counts (``None``: ``X``); a missing layer raises.
    """
    check_option("mod", mod, MODALITIES)
    X = matrix(adata, layer, what=f"the observed {mod}")
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    if mod == "rna":
        return log_normalize(X).astype(np.float64)
    return (X > 0).astype(np.float64)


def _per_feature(obs: np.ndarray, pred: np.ndarray, tgt: str) -> float:
    if tgt == "rna":
        r = colwise_pearson(obs, pred)
    else:
        keep = (obs.min(0) != obs.max(0))
        r = rowwise_auroc(obs[:, keep].T, pred[:, keep].T) if keep.any() else np.array([np.nan])
    return float(np.nanmean(r))


def _per_cell(obs: np.ndarray, pred: np.ndarray, tgt: str) -> float:
    return float(np.nanmean((rowwise_pearson if tgt == "rna" else rowwise_auroc)(obs, pred)))


def _model_sample_noise(model, tgt: str, Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Observation noise on decoded samples: NB counts -> log1p CP10k (RNA), Bernoulli peaks (ATAC)."""
    if tgt == "atac":
        return (rng.random(Y.shape) < Y).astype(np.float64)
    rho = np.expm1(Y) / TARGET_SUM
    rho = rho / np.maximum(rho.sum(-1, keepdims=True), 1e-12)
    mu_l = float(model.module.lib_mu[-1])
    sd_l = float(model.module.lib_sigma[-1])
    lib = np.exp(rng.normal(mu_l, sd_l, size=rho.shape[:-1]))
    mean = rho * lib[..., None]
    theta = model.module.rna_ae.theta.detach().cpu().numpy().astype(np.float64)
    lam = rng.gamma(shape=np.broadcast_to(theta, mean.shape), scale=np.maximum(mean, 1e-12) / theta)
    counts = rng.poisson(lam).astype(np.float64)
    return log_normalize(counts).astype(np.float64)


def translation_scores(model, mdata, *, train, test, direction: str = "atac->rna", groupby: str = "cell_type",
                       n_samples: int = 10, sampler: str = "ddim", n_steps: int = 20, source_guidance: float = 1.0,
                       n_noise: int = 4, n_comps: int = 30, knn_k: int = 15, seed: int = 0,
                       include_samples: bool = True, peers: Mapping[str, Any] | None = None
                       ) -> dict[str, pd.DataFrame]:
    """Score a model's translation against baselines on held-out cells (one run, side by side).

    Parameters
    ----------
    model
        A trained paired :class:`~scdiffx_grn.ScDiffusionX`.
    mdata
        MuData with both modalities in the model's features and the ``groupby`` label.
    train, test
        Boolean masks (or integer positions) of the cells baselines are fitted on and of the
        held-out cells that are scored.
    direction
        ``"atac->rna"`` or ``"rna->atac"``.
    n_samples, sampler, n_steps, source_guidance
        The model's samples readout (energy score, calibration).
    n_noise
        Noises averaged by the model's posterior-mean readout.
    n_comps
        Components of the evaluation feature space and of the baselines' source embedding.
    knn_k
        Neighbours of the k-NN predictor / sampler.
    include_samples
        Also score samples (costs ``n_samples`` sampled translations).
    peers
        Other translation methods scored beside the model with the same code, name -> object
        with ``translate(mdata, direction, seed=...)`` returning an AnnData whose ``X`` is on the
        predictors' scale (log1p CP10k RNA, ATAC probabilities), fitted on the training cells
        only (e.g. :class:`~scdiffx_grn.eval.MultiVITranslator`). One that also has
        ``sample(mdata, direction, n_samples=..., seed=...)`` returning observation-level
        samples ``(n_samples, cells, features)`` is scored as a sampler too.

    Returns
    -------
    ``{"points": DataFrame, "samples": DataFrame}``. ``points``: one row per predictor with
    ``per_feature`` (mean per-gene Pearson / per-peak AUROC), ``per_cell`` (mean per-cell
    Pearson / AUROC), ``accuracy`` (classifier on observed training cells), ``accuracy_recentred``
    (the same classifier after :func:`recentre` to the training cells' observed mean, for every
    predictor alike), ``seconds`` (wall time of the prediction), ``role``; with samples, the
    samples readout's ``X`` (decoded latent mean of the samples) and the mean of the decoded samples
    are scored as two more model rows.
    ``samples``: one row per sampler with ``energy_score`` (mean, lower is better),
    ``energy_score_se``, ``coverage_50``, ``coverage_90``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors

    src, tgt = split_direction(direction)
    n = mdata.n_obs

    tr, te = cell_indices(train, n, "train"), cell_indices(test, n, "test")
    if len(tr) < 10 or len(te) < 3:
        raise InputDataError(f"need >= 10 training and >= 3 test cells, got {len(tr)} and {len(te)}")
    if np.intersect1d(tr, te).size:
        raise InputDataError("train and test cells overlap")
    labels = group_labels(mdata, groupby)
    m_tr, m_te = mdata[tr].copy(), mdata[te].copy()
    layer = counts_layer(mdata, tgt)
    Y_tr = observed_target(m_tr.mod[tgt], tgt, layer)
    Y_te = observed_target(m_te.mod[tgt], tgt, layer)
    y_tr, y_te = labels[tr], labels[te]

    pca = PCA(n_components=int(min(n_comps, Y_tr.shape[1] - 1, len(tr) - 1)), random_state=seed).fit(Y_tr)
    clf = LogisticRegression(max_iter=2000).fit(pca.transform(Y_tr), y_tr)

    # ---- point predictions
    preds: dict[str, tuple[np.ndarray, str]] = {}
    seconds: dict[str, float] = {}

    def _timed(name, fn):
        t0 = time.perf_counter()
        out = np.asarray(fn().X, np.float64)
        seconds[name] = time.perf_counter() - t0
        return out

    preds["model (posterior mean)"] = (_timed("model (posterior mean)", lambda: model.translate(
        m_te, direction, readout="mean", n_noise=n_noise, seed=seed)), "model")
    for name, peer in (peers or {}).items():
        t0 = time.perf_counter()
        out = peer.translate(m_te, direction, seed=seed)
        seconds[name] = time.perf_counter() - t0
        same_cells = list(out.obs_names) == list(m_te.mod[src].obs_names)
        same_features = list(out.var_names) == list(m_te.mod[tgt].var_names)
        if not (same_cells and same_features):
            raise InputDataError(f"peer {name!r} must return the test cells and the {tgt} features in the order of "
                                 f"mdata (cells {'match' if same_cells else 'differ'}, features "
                                 f"{'match' if same_features else 'differ'})")
        preds[name] = (np.asarray(out.X.toarray() if sp.issparse(out.X) else out.X, np.float64), "peer")
    ridge = RidgeTranslator(n_comps=n_comps, seed=seed).fit(m_tr)
    preds["ridge"] = (_timed("ridge", lambda: ridge.translate(m_te, direction)), "baseline")
    knn = KNNTranslator(k=knn_k, n_comps=n_comps, seed=seed).fit(m_tr)
    preds["k-NN"] = (_timed("k-NN", lambda: knn.translate(m_te, direction)), "baseline")
    mean_tr = Y_tr.mean(0)
    preds["training mean"] = (np.broadcast_to(mean_tr, Y_te.shape).copy(), "floor")
    types = pd.Series(y_tr)
    type_means = {t: Y_tr[(types == t).to_numpy()].mean(0) for t in types.unique()}
    preds["label oracle"] = (np.stack([type_means.get(t, mean_tr) for t in y_te]), "ceiling")
    rec = model.reconstruct(m_te, tgt)
    rec = log_normalize(rec) if tgt == "rna" else rec  # proportions rho -> log1p CP10k
    preds["autoencoder reconstruction"] = (np.asarray(rec, np.float64), "ceiling")
    def _row(name, P, role):
        return {"predictor": name, "role": role, "direction": direction,
                "per_feature": _per_feature(Y_te, P, tgt), "per_cell": _per_cell(Y_te, P, tgt),
                "accuracy": float(np.mean(clf.predict(pca.transform(P)) == y_te)),
                "accuracy_recentred": float(np.mean(clf.predict(pca.transform(recentre(P, mean_tr))) == y_te)),
                "seconds": seconds.get(name, np.nan), "n_cells": len(te)}

    points = pd.DataFrame([_row(name, P, role) for name, (P, role) in preds.items()])
    if not include_samples:
        return {"points": points, "samples": pd.DataFrame()}

    # ---- samples: energy score and calibration in the evaluation feature space
    rng = np.random.default_rng(seed)
    m = int(n_samples)
    obs_f = pca.transform(Y_te)
    samplers: dict[str, np.ndarray] = {}
    name = f"model (latent mean of {m} samples, {sampler} {n_steps})"
    t0 = time.perf_counter()
    tr_out = model.translate(m_te, direction, readout="samples", n_samples=m, sampler=sampler, n_steps=n_steps,
                             source_guidance=source_guidance, seed=seed, return_samples=True)
    seconds[name] = time.perf_counter() - t0
    # the samples readout's X (their decoded latent mean) is a second point predictor, scored alike, and
    # the mean of the decoded samples (the posterior-predictive mean: probabilities for ATAC) a third
    name2 = f"model (decoded mean of {m} samples, {sampler} {n_steps})"
    seconds[name2] = seconds[name]
    points = pd.concat([points, pd.DataFrame([
        _row(name, np.asarray(tr_out.X, np.float64), "model"),
        _row(name2, np.asarray(tr_out.uns["samples"], np.float64).mean(0), "model")])], ignore_index=True)
    S = _model_sample_noise(model, tgt, np.asarray(tr_out.uns["samples"], np.float64), rng)
    samplers[f"model samples ({sampler} {n_steps})"] = np.stack([pca.transform(s) for s in S])
    for name, peer in (peers or {}).items():
        if hasattr(peer, "sample"):
            S = np.asarray(peer.sample(m_te, direction, n_samples=m, seed=seed), np.float64)
            if S.shape != (m, *Y_te.shape):
                raise InputDataError(f"peer {name!r} returned samples of shape {S.shape}, not {(m, *Y_te.shape)}")
            samplers[f"{name} samples"] = np.stack([pca.transform(s) for s in S])
    # ridge mean + the residual of a random training cell
    R_tr = Y_tr - np.asarray(ridge.translate(m_tr, direction).X, np.float64)
    mu_f = pca.transform(preds["ridge"][0])
    res_f = R_tr @ pca.components_.T  # residuals are differences: no centring
    pick = rng.integers(0, len(tr), size=(m, len(te)))
    samplers["ridge + training residual"] = mu_f[None] + res_f[pick]
    # k nearest training neighbours (in the baselines' source embedding)
    z_te = knn.spaces_[src].transform(m_te.mod[src])
    _, nb = NearestNeighbors(n_neighbors=min(knn_k, len(tr))).fit(knn.emb_[src]).kneighbors(z_te)
    Ytr_f = pca.transform(Y_tr)
    cols = np.stack([rng.choice(nb.shape[1], size=m, replace=nb.shape[1] < m) for _ in range(len(te))], 1)
    samplers["k-NN neighbours"] = Ytr_f[nb[np.arange(len(te))[None, :], cols]]
    samplers["random training cells"] = Ytr_f[rng.integers(0, len(tr), size=(m, len(te)))]
    srows = []
    for name, Sf in samplers.items():
        es = energy_score(Sf, obs_f)
        cov = pit_coverage(Sf, obs_f, seed=seed)
        srows.append({"sampler": name, "direction": direction, "energy_score": float(es.mean()),
                      "energy_score_se": float(es.std(ddof=1) / np.sqrt(len(es))),
                      "coverage_50": cov[0.5], "coverage_90": cov[0.9], "n_samples": m, "n_cells": len(te)})
    return {"points": points, "samples": pd.DataFrame(srows)}
