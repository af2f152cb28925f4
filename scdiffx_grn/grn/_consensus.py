"""The ``consensus`` method: a peak -> gene evidence table with a combination chosen by held-out prediction.

Per group of cells, every candidate pair gets four kinds of evidence:

- ``ev_distance``: the distance prior, ``-|distance|`` (candidates with a ``distance`` column);
- ``ev_correlation``: correlation of peak accessibility and gene expression across metacells of
  the group's own (train) cells;
- ``ev_accessibility``: fraction of the group's (train) cells with the peak open;
- ``ev_model``: the model's attribution (a method of :data:`~scdiffx_grn.grn.METHODS`, knockout by
  default; ``extract_grn(..., model_evidence="none")`` leaves it out).

Each evidence is turned into within-group percentile ranks and the score is a weighted mean of
the ranks. The weights are learned without external truth, by held-out prediction
(:mod:`scdiffx_grn.grn._predictive`): the group's train cells (those not in the model's stored test
cells) are split by cell name into fit and validation cells (each pooled into pseudo-cells of 5
cells), the evidence is recomputed on the fit cells, and each candidate combination (every
evidence alone, the equal-weight mean, and the mean weighted by each evidence's own gain) builds a network of its top edges (one per candidate gene on
average), whose targets are predicted on the validation cells from their linked peaks; the gain is
the median R^2 above that of degree-preserving rewirings. The combination with the largest gain
is kept; its weights are stored per edge (``w_<evidence>``) and ``carried_by`` names the evidence
with the largest weight (``"equal"`` when every evidence weighs the same).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .._settings import logger

__all__ = ["EVIDENCE", "consensus_scores"]

#: evidence columns of the consensus table, in order
EVIDENCE = ("distance", "correlation", "accessibility", "model")
#: cells per pseudo-cell in the held-out choice of the weights, and the fewest pseudo-cells used
_POOL, _MIN_PSEUDO = 5, 5


def _ranks(v: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(np.asarray(v, float), nan=-np.inf)
    return rankdata(v, method="average") / max(len(v), 1)


def _evidence(X_rna, X_atac, pairs, gi, pi, *, n_metacells: int, seed: int) -> dict:
    """Data evidence of the pairs on one set of cells: metacell correlation and accessibility."""
    from ._metacells import group_metacell_profiles
    from ._tf import pair_corr

    rna, atac = group_metacell_profiles(X_rna, X_atac, n_metacells, seed=seed)
    out = {}
    if rna.shape[0] >= 3:
        out["correlation"] = np.nan_to_num(pair_corr(pd.DataFrame(atac), pd.DataFrame(rna), pi, gi))
    else:
        out["correlation"] = np.zeros(len(pairs))
    A = X_atac.tocsr(copy=True) if hasattr(X_atac, "tocsr") else np.asarray(X_atac)
    frac = np.asarray((A > 0).mean(0)).ravel()
    out["accessibility"] = frac[pi]
    return out


def _combine(ranks: dict, weights: dict) -> np.ndarray:
    tot = sum(weights.values())
    if tot <= 0:
        weights = {k: 1.0 for k in ranks}
        tot = float(len(ranks))
    return sum(weights[k] * ranks[k] for k in ranks) / tot


def _gain(score, pi, gi, fitter, n_top, n_random, seed) -> float:
    from ._predictive import network_r2, summarise

    top = np.argsort(-score, kind="stable")[:n_top]
    res = network_r2(fitter, pi[top], gi[top], n_random=n_random, seed=seed)
    s = summarise(res, min_effect=0.0)
    return float(s["delta_r2"]) if np.isfinite(s["delta_r2"]) else 0.0


def consensus_scores(model, X_rna, X_atac, cond, pairs: pd.DataFrame, *, model_scorer=None,
                     n_metacells: int = 20, n_random: int = 5, validation_fraction: float = 0.3,
                     batch_size: int = 64, seed: int = 0, cell_names=None) -> pd.DataFrame:
    """Evidence table and held-out-calibrated consensus score of the candidate pairs of one group.

    Returns a DataFrame (one row per pair): ``weight`` (the consensus score, a weighted mean of
    percentile ranks in (0, 1]), ``ev_<evidence>`` (raw evidence), ``w_<evidence>`` (its weight)
    and ``carried_by``. ``model_scorer``: the :class:`~scdiffx_grn.grn.Method` giving
    ``ev_model`` (``None``: data evidence only).
    """
    from ._metacells import group_metacell_profiles
    from ._predictive import RidgeR2, heldout_mask

    genes = pd.Index(np.asarray(model.rna_var_names).astype(str))
    peaks = pd.Index(np.asarray(model.atac_var_names).astype(str))
    gi = genes.get_indexer(pairs["gene"].astype(str))
    pi = peaks.get_indexer(pairs["peak"].astype(str))
    names = np.asarray(cell_names if cell_names is not None else np.arange(X_rna.shape[0])).astype(str)
    split = (getattr(model, "setup", None) or {}).get("split")
    test = (np.isin(names, np.asarray(split["test_cells"]).astype(str)) if isinstance(split, dict)
            and split.get("test_cells") else np.zeros(len(names), bool))
    train = np.flatnonzero(~test)
    ev = {}
    if "distance" in pairs:
        ev["distance"] = -np.abs(pairs["distance"].to_numpy(float))
    ev.update(_evidence(X_rna[train], X_atac[train], pairs, gi, pi, n_metacells=n_metacells, seed=seed))
    if model_scorer is not None:
        ev["model"] = model_scorer(model, X_rna, X_atac, cond, pairs, batch_size=batch_size, seed=seed,
                                              cell_names=names)
    ranks = {k: _ranks(v) for k, v in ev.items()}
    # held-out choice of the weights, on the train cells only
    val = heldout_mask(names[train], validation_fraction, seed, stream=11)
    fit_i, val_i = train[~val], train[val]
    weights = {k: 1.0 for k in ranks}
    if min(len(fit_i), len(val_i)) >= _MIN_PSEUDO * _POOL:
        ev_fit = dict(ev)
        ev_fit.update(_evidence(X_rna[fit_i], X_atac[fit_i], pairs, gi, pi, n_metacells=n_metacells, seed=seed))
        r_fit = {k: _ranks(v) for k, v in ev_fit.items()}
        up, p_pos = np.unique(pi, return_inverse=True)
        ug, g_pos = np.unique(gi, return_inverse=True)
        # fit and validation cells pooled separately into pseudo-cells (single sparse cells carry
        # almost no peak -> gene signal; see eval.grn_predictive's pool)
        (rf, af), (rv, av) = (group_metacell_profiles(X_rna[i], X_atac[i], len(i) // _POOL, min_cells=2, seed=seed)
                              for i in (fit_i, val_i))
        fitter = RidgeR2(af[:, up], av[:, up], rf[:, ug], rv[:, ug])
        n_top = max(1, len(ug))
        single = {k: _gain(r, p_pos, g_pos, fitter, n_top, n_random, seed) for k, r in r_fit.items()}
        options = {f"only_{k}": {j: float(j == k) for j in r_fit} for k in r_fit}
        options["equal"] = {k: 1.0 for k in r_fit}
        if any(g > 0 for g in single.values()):
            options["by_gain"] = {k: max(g, 0.0) for k, g in single.items()}
        gains = {name: (single[name[5:]] if name.startswith("only_") else
                        _gain(_combine(r_fit, w), p_pos, g_pos, fitter, n_top, n_random, seed))
                 for name, w in options.items()}
        best = max(gains, key=lambda k: (gains[k], k == "by_gain", k == "equal"))
        weights = options[best]
        logger.info("consensus: held-out gains %s; kept %s", {k: round(v, 4) for k, v in gains.items()}, best)
    else:
        logger.info("consensus: fewer than %d fit or validation cells; equal evidence weights", _MIN_PSEUDO * _POOL)
    out = pd.DataFrame({"weight": _combine(ranks, weights)})
    for k in EVIDENCE:
        if k in ev:
            out[f"ev_{k}"] = np.asarray(ev[k], float)
    tot = sum(weights.values()) or 1.0
    for k in EVIDENCE:
        if k in weights:
            out[f"w_{k}"] = weights[k] / tot
    w = np.array(list(weights.values()), float)
    out["carried_by"] = "equal" if np.all(w == w.max()) and len(w) > 1 else max(weights, key=weights.get)
    return out
