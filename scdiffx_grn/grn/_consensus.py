"""The ``consensus`` method: a peak -> gene evidence table with a combination chosen by cross-validation.

Per group of cells, every candidate pair gets four kinds of evidence:

- ``ev_distance``: the distance prior, ``-|distance|`` (candidates with a ``distance`` column);
- ``ev_correlation``: correlation of peak accessibility and gene expression across metacells of
  the group's own train cells (every cell of the group, not only the ``max_cells`` the model is
  run on);
- ``ev_accessibility``: fraction of the group's train cells with the peak open;
- ``ev_model``: the model's attribution (a method of :data:`~scdiffx_grn.grn.METHODS`, knockout by
  default, on the group's ``max_cells`` subsample; ``extract_grn(..., model_evidence="none")``
  leaves it out).

Each evidence is turned into within-group percentile ranks; a combination is a subset of the
evidences and its score is the mean of their ranks. Which subset is learned without external
truth, by k-fold cross-validation of held-out prediction (:mod:`scdiffx_grn.grn._predictive`)
on the train cells only (cells in the model's stored test cells are never used). The train cells
of the network's groups are split by cell name into ``n_folds`` folds; for each fold the data
evidence of every group is recomputed on that group's cells of the other folds, the network of
each subset (each edge's mean score over the groups, the way :func:`~scdiffx_grn.eval.grn_predictive`
scores a per-group network on all cells) keeps its top edges (one per candidate gene on
average), and these predict their targets on the held-out fold from their linked peaks: fit
and held-out cells are pooled separately into pseudo-cells of ``pool`` cells, a ridge is fitted
on the fit pseudo-cells, and the gain is the median held-out R^2 above that of degree-preserving
rewirings. Each fold is one unit, weighted by its held-out cells.

The choice: the single evidence with the largest mean gain, replaced by the best combination of
several only when that beats it by more than one standard error of their paired difference over
the units. So a combination is kept only when cross-validation shows it adds to the best single
evidence, and when the held-out cells cannot tell, the best single evidence carries the network.
``weights_by="group"`` instead chooses per group from folds of its own train cells (within-group
prediction; far weaker than the between-group variation on sparse data, so noisier). The chosen
weights are stored per edge (``w_<evidence>``; equal over the chosen subset, summing to 1) and
``carried_by`` names the chosen evidences (``"model"``, ``"correlation+model"``, ...); the
cross-validated gain of every subset, the rule applied and the units are in
``uns[key]["params"]["consensus"]``.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .._settings import logger

__all__ = ["EVIDENCE", "consensus_scores", "finalize_consensus"]

#: evidence columns of the consensus table, in order
EVIDENCE = ("distance", "correlation", "accessibility", "model")
#: fewest pseudo-cells on each side (fit, held out) of a cross-validation fold, and fewest cells in one
_MIN_PSEUDO, _MIN_POOL = 5, 2
#: cell_keys stream of the fold assignment
_FOLD_STREAM = 11


def _rows(cond, rows: np.ndarray):
    """Rows ``rows`` of the label-condition tensor (or array; ``None`` stays ``None``)."""
    if cond is None:
        return None
    import torch

    return cond[torch.as_tensor(rows, dtype=torch.long)] if isinstance(cond, torch.Tensor) else cond[rows]


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


def _subsets(keys) -> list[tuple[str, ...]]:
    """Every non-empty subset of the evidences (singles first), in :data:`EVIDENCE` order."""
    keys = [k for k in EVIDENCE if k in keys]
    return [c for r in range(1, len(keys) + 1) for c in combinations(keys, r)]


def _name(subset) -> str:
    return "+".join(subset)


def _score(ranks: dict, subset) -> np.ndarray:
    return np.mean([ranks[k] for k in subset], axis=0)


def _gain(score, pi, gi, fitter, n_top, n_random, seed) -> float:
    from ._predictive import network_r2, summarise

    top = np.argsort(-score, kind="stable")[:n_top]
    res = network_r2(fitter, pi[top], gi[top], n_random=n_random, seed=seed)
    s = summarise(res, min_effect=0.0, n_boot=0)
    return float(s["delta_r2"]) if np.isfinite(s["delta_r2"]) else 0.0


def _cv_gains(X_rna, X_atac, pairs, gi, pi, ev: dict, train: np.ndarray, names: np.ndarray, *, n_folds: int,
              pool: int, n_metacells: int, n_random: int, seed: int) -> dict:
    """Cross-validated gain of every evidence subset on the train cells: ``{"units": [...], "gain": {name: [...]}}``.

    One unit per fold with at least :data:`_MIN_PSEUDO` pseudo-cells on each side (pseudo-cells
    of ``pool`` cells, fewer in a small group, at least :data:`_MIN_POOL`); ``units`` holds each
    unit's held-out cells (its weight).
    """
    from ._metacells import group_metacell_profiles
    from ._predictive import RidgeR2, fold_ids

    fold = fold_ids(names[train], n_folds, seed, stream=_FOLD_STREAM)
    up, p_pos = np.unique(pi, return_inverse=True)
    ug, g_pos = np.unique(gi, return_inverse=True)
    n_top = max(1, len(ug))
    subsets = _subsets(ev)
    units, gains = [], {_name(s): [] for s in subsets}
    for f in range(int(n_folds)):
        fit_i, val_i = train[fold != f], train[fold == f]
        # pseudo-cells of `pool` cells, smaller in a small group (at least _MIN_PSEUDO on each side)
        size = min(int(pool), len(val_i) // _MIN_PSEUDO)
        if size < _MIN_POOL:
            continue
        ev_fit = dict(ev)
        ev_fit.update(_evidence(X_rna[fit_i], X_atac[fit_i], pairs, gi, pi, n_metacells=n_metacells, seed=seed))
        r_fit = {k: _ranks(v) for k, v in ev_fit.items()}
        # fit and held-out cells pooled separately into pseudo-cells (single sparse cells carry
        # almost no peak -> gene signal; see eval.grn_predictive's pool)
        (rf, af), (rv, av) = (group_metacell_profiles(X_rna[i], X_atac[i], len(i) // size,
                                                      min_cells=max(1, size // 2), seed=seed)
                              for i in (fit_i, val_i))
        if min(rf.shape[0], rv.shape[0]) < _MIN_PSEUDO:
            continue
        fitter = RidgeR2(af[:, up], av[:, up], rf[:, ug], rv[:, ug])
        units.append(len(val_i))
        for s in subsets:
            gains[_name(s)].append(_gain(_score(r_fit, s), p_pos, g_pos, fitter, n_top, n_random, seed + f))
    return {"units": units, "gain": gains}


def consensus_scores(model, X_rna, X_atac, cond, pairs: pd.DataFrame, *, model_scorer=None,
                     n_metacells: int = 20, n_random: int = 5, n_folds: int = 5, pool: int = 30,
                     cross_validate: bool = True, batch_size: int = 64, seed: int = 0, cell_names=None,
                     model_cells=None) -> pd.DataFrame:
    """Evidence table and cross-validated consensus score of the candidate pairs of one group.

    Returns a DataFrame (one row per pair): ``weight`` (the consensus score, a mean of the
    chosen evidences' percentile ranks in (0, 1]), ``ev_<evidence>`` (raw evidence),
    ``w_<evidence>`` (its weight) and ``carried_by``, chosen from this group's folds alone
    (``cross_validate``; otherwise every evidence weighs the same until
    :func:`finalize_consensus` chooses for every group). The table's ``attrs`` hold the
    cross-validation (``"consensus_cv"``). ``model_scorer``: the
    :class:`~scdiffx_grn.grn.Method` giving ``ev_model`` (``None``: data evidence only), run on
    the cells of ``model_cells`` (a mask; ``None``: every cell).
    """
    genes = pd.Index(np.asarray(model.rna_var_names).astype(str))
    peaks = pd.Index(np.asarray(model.atac_var_names).astype(str))
    gi = genes.get_indexer(pairs["gene"].astype(str))
    pi = peaks.get_indexer(pairs["peak"].astype(str))
    names = np.asarray(cell_names if cell_names is not None else np.arange(X_rna.shape[0])).astype(str)
    train = np.flatnonzero(~_test_mask(model, names))
    ev = {}
    if "distance" in pairs:
        ev["distance"] = -np.abs(pairs["distance"].to_numpy(float))
    ev.update(_evidence(X_rna[train], X_atac[train], pairs, gi, pi, n_metacells=n_metacells, seed=seed))
    if model_scorer is not None:
        mc = np.ones(len(names), bool) if model_cells is None else np.asarray(model_cells, bool)
        rows = np.flatnonzero(mc)
        ev["model"] = model_scorer(model, X_rna[rows], X_atac[rows], _rows(cond, rows), pairs,
                                   batch_size=batch_size, seed=seed, cell_names=names[rows])
    if not cross_validate:
        return table(ev, tuple(k for k in EVIDENCE if k in ev))
    cv = _cv_gains(X_rna, X_atac, pairs, gi, pi, ev, train, names, n_folds=n_folds, pool=int(pool),
                   n_metacells=n_metacells, n_random=n_random, seed=seed)
    choice = choose(cv["units"], cv["gain"], list(ev))
    out = table(ev, choice["subset"])
    out.attrs["consensus_cv"] = cv
    return out


def _test_mask(model, names: np.ndarray) -> np.ndarray:
    split = (getattr(model, "setup", None) or {}).get("split")
    if isinstance(split, dict) and split.get("test_cells"):
        return np.isin(names, np.asarray(split["test_cells"]).astype(str))
    return np.zeros(len(names), bool)


def _network_cv(net: pd.DataFrame, gcol: str, keys, data: dict, *, n_folds: int, pool: int, n_metacells: int,
                n_random: int, seed: int) -> dict:
    """Cross-validated gain of every evidence subset for the whole network (folds of all train cells).

    Returns ``{"units": held-out cells per fold, "gain": {subset name: gain per fold}}``.
    """
    from ._metacells import group_metacell_profiles
    from ._predictive import RidgeR2, fold_ids

    model = data["model"]
    X_rna, X_atac = data["X_rna"], data["X_atac"]
    labels = np.asarray(data["labels"]).astype(str)
    names = np.asarray(data["names"]).astype(str)
    groups = [str(g) for g in pd.unique(net[gcol].astype(str))]
    parts = {g: d for g, d in net.groupby(net[gcol].astype(str), sort=False)}
    ref = parts[groups[0]]
    edge = pd.Index(ref["source"].astype(str) + "\t" + ref["target"].astype(str))
    aligned = {}
    for g in groups:  # every group scores the same candidate pairs: align them on the first group's order
        d = parts[g]
        pos = pd.Index(d["source"].astype(str) + "\t" + d["target"].astype(str)).get_indexer(edge)
        aligned[g] = d.iloc[pos] if (pos >= 0).all() else None
    groups = [g for g in groups if aligned[g] is not None]
    pairs = pd.DataFrame({"peak": ref["source"].astype(str).to_numpy(), "gene": ref["target"].astype(str).to_numpy()})
    gi = pd.Index(np.asarray(model.rna_var_names).astype(str)).get_indexer(pairs["gene"])
    pi = pd.Index(np.asarray(model.atac_var_names).astype(str)).get_indexer(pairs["peak"])
    train = np.flatnonzero(~_test_mask(model, names) & np.isin(labels, groups))
    fold = fold_ids(names[train], n_folds, seed, stream=_FOLD_STREAM)
    up, p_pos = np.unique(pi, return_inverse=True)
    ug, g_pos = np.unique(gi, return_inverse=True)
    n_top = max(1, len(ug))
    subsets = _subsets(keys)
    fixed = {g: {k: aligned[g][f"ev_{k}"].to_numpy(float) for k in keys if k in ("distance", "model")}
             for g in groups}
    units, gains = [], {_name(s): [] for s in subsets}
    for f in range(int(n_folds)):
        fit_i, val_i = train[fold != f], train[fold == f]
        size = min(int(pool), len(val_i) // _MIN_PSEUDO)
        if size < _MIN_POOL:
            continue
        ranks = {}
        for g in groups:
            cells = fit_i[labels[fit_i] == g]
            ev = dict(fixed[g])
            if len(cells):
                ev.update(_evidence(X_rna[cells], X_atac[cells], pairs, gi, pi, n_metacells=n_metacells, seed=seed))
            ranks[g] = {k: _ranks(ev.get(k, np.zeros(len(pairs)))) for k in keys}
        (rf, af), (rv, av) = (group_metacell_profiles(X_rna[i], X_atac[i], len(i) // size,
                                                      min_cells=max(1, size // 2), seed=seed)
                              for i in (fit_i, val_i))
        if min(rf.shape[0], rv.shape[0]) < _MIN_PSEUDO:
            continue
        fitter = RidgeR2(af[:, up], av[:, up], rf[:, ug], rv[:, ug])
        units.append(len(val_i))
        for s in subsets:
            score = np.mean([_score(ranks[g], s) for g in groups], axis=0)
            gains[_name(s)].append(_gain(score, p_pos, g_pos, fitter, n_top, n_random, seed + f))
    return {"units": units, "gain": gains}


def table(ev: dict, subset) -> pd.DataFrame:
    """The consensus table of one group: ``weight`` (mean rank of ``subset``), ``ev_*``, ``w_*``, ``carried_by``."""
    ranks = {k: _ranks(v) for k, v in ev.items()}
    out = pd.DataFrame({"weight": _score(ranks, subset)})
    for k in EVIDENCE:
        if k in ev:
            out[f"ev_{k}"] = np.asarray(ev[k], float)
    for k in EVIDENCE:
        if k in ev:
            out[f"w_{k}"] = float(k in subset) / len(subset)
    out["carried_by"] = _name(subset)
    return out


def choose(units, gains: dict, keys) -> dict:
    """The chosen evidence subset from cross-validated gains (see the module doc).

    ``units``: held-out cells of each unit (weights); ``gains``: subset name -> gain per
    unit. Returns ``{"subset", "rule", "table"}`` (``table``: subset -> mean gain and its
    standard error; ``rule``: why the subset was chosen).
    """
    keys = [k for k in EVIDENCE if k in keys]
    w = np.asarray(units, float)
    if w.size == 0 or w.sum() <= 0:
        logger.info("consensus: no cross-validation fold with >= %d pseudo-cells on each side; the evidences are "
                    "averaged with equal weights", _MIN_PSEUDO)
        return {"subset": tuple(keys), "rule": "no held-out cells: equal weights", "table": {}}
    w = w / w.sum()
    n_eff = 1.0 / np.sum(w ** 2)

    def mean_se(x):
        x = np.asarray(x, float)
        m = float(np.sum(w * x))
        se = float(np.sqrt(np.sum(w * (x - m) ** 2) / max(n_eff - 1.0, 1.0)))
        return m, se

    tab = {name: dict(zip(("gain", "se"), mean_se(g))) for name, g in gains.items()}
    singles = [(k,) for k in keys]
    best1 = max(singles, key=lambda s: (tab[_name(s)]["gain"], -keys.index(s[0])))
    multi = [s for s in _subsets(keys) if len(s) > 1]
    rule = f"best single evidence ({_name(best1)})"
    chosen = best1
    if multi:
        bestm = max(multi, key=lambda s: (tab[_name(s)]["gain"], -len(s)))
        diff, se = mean_se(np.asarray(gains[_name(bestm)]) - np.asarray(gains[_name(best1)]))
        if diff > se:
            chosen = bestm
            rule = (f"{_name(bestm)} beats the best single evidence ({_name(best1)}) by {diff:.4f} > its standard "
                    f"error {se:.4f}")
        else:
            rule += (f"; the best combination ({_name(bestm)}) does not beat it by more than one standard error "
                     f"({diff:.4f} vs {se:.4f})")
    return {"subset": chosen, "rule": rule, "table": tab}


def finalize_consensus(net: pd.DataFrame, gcol: str, info: dict, opts: dict, data: dict):
    """The choice for the whole network (``weights_by="network"``), or the record of the per-group ones.

    ``data``: what :func:`~scdiffx_grn.grn.extract_grn` hands a method's finalize step (the model,
    the raw matrices of every cell, their labels and names, the seed). Returns the table with
    ``weight``, ``w_*`` and ``carried_by`` set and the params to store (``{"consensus":
    {"weights_by", "n_units", "cv", "carried_by", "rule", "weights"}}``; per group with
    ``weights_by="group"``).
    """
    keys = [k for k in EVIDENCE if f"ev_{k}" in net]
    by = opts.get("weights_by", "network")
    if by == "group":
        per = {g: choose(v["consensus_cv"]["units"], v["consensus_cv"]["gain"], keys)
               for g, v in info.items() if "consensus_cv" in v}
        params = {"weights_by": by,
                  "per_group": {str(g): {"carried_by": _name(c["subset"]), "rule": c["rule"],
                                         "n_units": len(info[g]["consensus_cv"]["units"]),
                                         "cv": {n: {"gain": round(v["gain"], 6), "se": round(v["se"], 6)}
                                                for n, v in c["table"].items()}}
                                for g, c in per.items()}}
        return net, {"consensus": params}
    cv = _network_cv(net, gcol, keys, data, n_folds=opts.get("n_folds", 5), pool=int(opts.get("pool", 30)),
                     n_metacells=opts.get("n_metacells", 20), n_random=opts.get("n_random", 5),
                     seed=int(data.get("seed", 0)))
    pooled = choose(cv["units"], cv["gain"], keys)
    parts = []
    for g, sub in net.groupby(gcol, sort=False, observed=True):
        t = table({k: sub[f"ev_{k}"].to_numpy(float) for k in keys}, pooled["subset"])
        sub = sub.copy()
        for c in t.columns:
            sub[c] = t[c].to_numpy()
        parts.append(sub)
    out = pd.concat(parts).loc[net.index]
    params = {"weights_by": by, "n_units": len(cv["units"]), "carried_by": _name(pooled["subset"]),
              "rule": pooled["rule"],
              "weights": {k: float(k in pooled["subset"]) / len(pooled["subset"]) for k in keys},
              "cv": {n: {"gain": round(v["gain"], 6), "se": round(v["se"], 6)} for n, v in pooled["table"].items()}}
    logger.info("consensus: carried by %s (%s)", params["carried_by"], pooled["rule"])
    return out, {"consensus": params}
