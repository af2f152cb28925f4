"""Predictive value of a network on held-out cells (GRaNPA-style; Kamal et al. 2023), no external truth.

A network's edges ``source -> target`` say which features should predict each target. For each
target, a ridge regression of its log-normalised expression on its sources (the accessibility of
its linked peaks, or the expression of its TFs) is fitted on train cells and scored by R^2 on
test cells; the same is done for degree-preserving rewirings of the network (every source keeps
its out-degree and every target its in-degree, so a rewired network has the same size, the same
targets and the same number of predictors per target). A network whose edges carry information
predicts its targets better than its rewirings.

The engine here is shared by :func:`scdiffx_grn.eval.grn_predictive` (the public table) and the
``consensus`` method of :func:`scdiffx_grn.grn.extract_grn` (which chooses its evidence weights
by held-out prediction on train cells).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["RidgeR2", "fold_ids", "heldout_mask", "rewire"]


def heldout_mask(names, fraction: float, seed: int, *, stream: int = 7) -> np.ndarray:
    """Boolean mask of held-out cells: a seeded draw keyed by each cell's name (not its row)."""
    from .._modelio import cell_keys

    u = cell_keys(np.asarray(names).astype(str), seed, stream=stream).astype(np.float64) / float(2 ** 63)
    return u < float(fraction)


def fold_ids(names, n_folds: int, seed: int, *, stream: int = 11) -> np.ndarray:
    """Fold (``0 .. n_folds - 1``) of each cell for k-fold cross-validation, keyed by its name (not its row)."""
    from .._modelio import cell_keys

    u = cell_keys(np.asarray(names).astype(str), seed, stream=stream).astype(np.float64) / float(2 ** 63)
    return np.minimum((u * int(n_folds)).astype(np.int64), int(n_folds) - 1)


def rewire(src: np.ndarray, tgt: np.ndarray, rng: np.random.Generator, *, n_passes: int = 20) -> np.ndarray:
    """Sources of a degree-preserving rewiring of the edges ``src[i] -> tgt[i]`` (integer codes).

    The sources are permuted over the edges (every source keeps its out-degree, every target its
    in-degree); edges that land twice on the same ``(source, target)`` are then swapped with
    random other edges when the swap creates no new duplicate (``n_passes`` rounds; a duplicate
    left over stays, as a repeated predictor, which the ridge penalty handles).
    """
    src = np.asarray(src, dtype=np.int64)
    tgt = np.asarray(tgt, dtype=np.int64)
    new = src[rng.permutation(len(src))]
    if len(src) < 2:
        return new
    for _ in range(n_passes):
        key = new * (int(tgt.max()) + 1) + tgt
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        dup = np.setdiff1d(np.arange(len(key)), first)
        if len(dup) == 0:
            break
        have = set(key.tolist())
        for i in dup:
            j = int(rng.integers(len(new)))
            a, b = int(new[j]) * (int(tgt.max()) + 1) + int(tgt[i]), int(new[i]) * (int(tgt.max()) + 1) + int(tgt[j])
            if i == j or a in have or b in have:
                continue
            have.discard(int(key[j]))
            have.update((a, b))
            new[i], new[j] = new[j], new[i]
    return new


class RidgeR2:
    """Per-target ridge fits on train cells, R^2 on test cells, for any set of edges on fixed features.

    Parameters
    ----------
    X_train, X_test
        Cells x sources (dense): predictor features of train and test cells.
    Y_train, Y_test
        Cells x targets (dense): the expression to predict.
    alpha
        Ridge penalty on standardised predictors (``beta = (X'X + alpha * n_train * I)^-1 X'y``).

    The Gram matrix of the sources is computed once, so scoring another edge set (a rewiring)
    costs one small ``d x d`` solve per target, batched by in-degree ``d``.
    """

    def __init__(self, X_train, X_test, Y_train, Y_test, *, alpha: float = 0.1):
        Xtr = np.asarray(X_train, dtype=np.float64)
        Xte = np.asarray(X_test, dtype=np.float64)
        mu = Xtr.mean(0)
        sd = Xtr.std(0)
        sd[sd == 0] = 1.0
        self.Xtr = (Xtr - mu) / sd
        self.Xte = (Xte - mu) / sd
        Ytr = np.asarray(Y_train, dtype=np.float64)
        self.Yte = np.asarray(Y_test, dtype=np.float64)
        self.ym = Ytr.mean(0)
        self.G = self.Xtr.T @ self.Xtr
        self.C = self.Xtr.T @ (Ytr - self.ym)
        self.lam = float(alpha) * len(Xtr)
        yc = self.Yte - self.Yte.mean(0)
        self.sst = (yc ** 2).sum(0)

    def r2(self, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """Test R^2 of every target (column of ``Y``); ``nan`` for targets without an edge or test variance."""
        src = np.asarray(src, dtype=np.int64)
        tgt = np.asarray(tgt, dtype=np.int64)
        out = np.full(self.Yte.shape[1], np.nan)
        order = np.argsort(tgt, kind="stable")
        src, tgt = src[order], tgt[order]
        targets, start, deg = np.unique(tgt, return_index=True, return_counts=True)
        for d in np.unique(deg):
            sel = deg == d
            T = targets[sel]
            S = src[start[sel][:, None] + np.arange(d)[None, :]]            # (nT, d)
            A = self.G[S[:, :, None], S[:, None, :]] + self.lam * np.eye(d)  # (nT, d, d)
            b = self.C[S, T[:, None]]                                        # (nT, d)
            beta = np.linalg.solve(A, b[..., None])[..., 0]
            pred = np.einsum("ntd,td->nt", self.Xte[:, S], beta) + self.ym[T]
            sse = ((self.Yte[:, T] - pred) ** 2).sum(0)
            sst = self.sst[T]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[T] = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
        return out


def network_r2(fitter: RidgeR2, src: np.ndarray, tgt: np.ndarray, *, n_random: int, seed: int) -> dict:
    """Held-out R^2 of a network and of ``n_random`` degree-preserving rewirings of it.

    Returns ``{"r2": per-target R^2 of the network's targets, "random": (n_random, n_targets)
    array, "targets": target codes}``.
    """
    r2 = fitter.r2(src, tgt)
    targets = np.unique(tgt)
    rng = np.random.default_rng(seed)
    rand = np.array([fitter.r2(rewire(src, tgt, rng), tgt)[targets] for _ in range(int(n_random))]).reshape(
        int(n_random), len(targets))
    return {"r2": r2[targets], "random": rand, "targets": targets}


def _gain_se(r2: np.ndarray, rand: np.ndarray, n_boot: int, seed: int) -> float:
    """Bootstrap (over targets) standard error of ``median(r2) - mean_k median(rand[k])``."""
    if n_boot < 2 or len(r2) < 2 or rand.shape[0] == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    b = rng.integers(0, len(r2), size=(int(n_boot), len(r2)))
    med = np.median(r2[b], axis=1)
    rmed = np.nanmean(np.stack([np.nanmedian(r[b], axis=1) for r in rand]), axis=0)
    return float(np.std(med - rmed, ddof=1))


def summarise(res: dict, *, min_effect: float, n_boot: int = 200, seed: int = 0) -> dict:
    """Median R^2, its rewired counterpart, the gain and its standard error, targets improved, empirical p.

    ``delta_r2_se``: bootstrap standard error of the gain over the targets (``n_boot``
    resamples; ``nan`` with ``n_boot=0``): how much the gain would move with another draw of
    targets of the same network, the scale on which two networks' gains can be compared.
    """
    r2, rand = res["r2"], res["random"]
    ok = np.isfinite(r2)
    med = float(np.median(r2[ok])) if ok.any() else float("nan")
    if rand.shape[0]:
        rmed = np.array([np.nanmedian(r[ok]) if ok.any() else np.nan for r in rand])
        rmean = float(np.nanmean(rmed))
        p = float((1 + np.sum(rmed >= med)) / (1 + len(rmed)))
        improved = float(np.mean(r2[ok] > np.nanmean(rand[:, ok], axis=0))) if ok.any() else float("nan")
    else:
        rmean, p, improved = float("nan"), float("nan"), float("nan")
    delta = med - rmean
    se = _gain_se(r2[ok], rand[:, ok], n_boot, seed) if ok.any() else float("nan")
    return {"n_targets": int(ok.sum()), "median_r2": med, "random_median_r2": rmean, "delta_r2": delta,
            "delta_r2_se": se, "frac_targets_improved": improved, "p_random": p,
            "beats_random": bool(np.isfinite(p) and p < 0.05 and delta >= min_effect)}


def codes(values, index: pd.Index) -> np.ndarray:
    """Positions of ``values`` in ``index`` (``-1`` when absent)."""
    return index.get_indexer(pd.Index(np.asarray(values).astype(str)))
