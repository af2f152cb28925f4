"""Distribution and per-cell metrics on 2-D arrays (cells x features).

Every function takes plain arrays (dense or scipy sparse) so it can be used on any embedding;
the protocol in :mod:`scdiffx_grn.eval._protocol` decides which embedding each metric sees.
Randomness (subsampling, random forests) is seeded with ``np.random.default_rng(seed)``.

Conventions (kept close to CFGen's public evaluation code so numbers are comparable):

- **RBF-MMD**: ``k(a, b) = exp(-gamma * ||a - b||^2)`` with ``gamma`` in
  ``{0.01, 0.1, 1, 10, 100}`` (sklearn's ``rbf`` parametrisation, as in CFGen); the reported
  value is the *mean* over the gammas of the **biased** (V-statistic) estimate
  ``mean(K_xx) + mean(K_yy) - 2 mean(K_xy)``, which is >= 0 and exactly 0 for identical sets.
  ``estimator="unbiased"`` drops the diagonals of ``K_xx`` / ``K_yy`` (U-statistic; can be < 0).
- **Wasserstein-p**: exact optimal transport with POT's ``ot.emd2`` between uniform weights on
  the two point clouds, Euclidean ground cost (p=1) or squared Euclidean (p=2, square root
  taken), each set subsampled to ``max_cells`` with a seed.
- **Energy distance**: the squared E-statistic ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic);
  in 1-D it equals ``scipy.stats.energy_distance(x, y) ** 2``.
- **1-NN two-sample accuracy**: leave-one-out 1-nearest-neighbour classification of real vs
  generated on the pooled, size-balanced sets; 0.5 means indistinguishable, 1 separable.
- **RF AUC**: ROC AUC of a seeded random forest classifying real vs generated, out-of-fold
  (stratified k-fold); 0.5 ideal.
- **iLISI**: for each cell, the inverse Simpson index of the source labels (real/generated)
  among its ``k`` nearest neighbours (self included, uniform weights, not the perplexity-based
  Gaussian weights of Harmony's LISI), on size-balanced sets; reported normalised to [0, 1] as
  ``(iLISI - 1) / (n_sources - 1)`` averaged over cells (1 = perfectly mixed, 0 = separate).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .._errors import InputDataError, OptionError

__all__ = [
    "DEFAULT_GAMMAS",
    "mmd_rbf",
    "wasserstein",
    "energy_distance",
    "pseudobulk_correlation",
    "one_nn_accuracy",
    "rf_auc",
    "ilisi",
    "knn_label_transfer",
    "marker_features",
    "marker_correlation",
    "rowwise_pearson",
    "colwise_pearson",
    "rowwise_auroc",
    "rowwise_auprc",
    "auroc",
    "auprc",
]

DEFAULT_GAMMAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _dense(x, name: str = "x") -> np.ndarray:
    if sp.issparse(x):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise InputDataError(f"{name} must be a 2-D array (cells x features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputDataError(f"{name} holds no cells")
    if not np.isfinite(x).all():
        raise InputDataError(f"{name} holds {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _dense(x, "x"), _dense(y, "y")
    if x.shape[1] != y.shape[1]:
        raise InputDataError(f"x and y have different numbers of features: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def _subsample(x: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or x.shape[0] <= n:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=int(n), replace=False))]


def _balance(x, y, max_cells: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
    n = min(x.shape[0], y.shape[0])
    if max_cells is not None:
        n = min(n, int(max_cells))
    return _subsample(x, n, rng), _subsample(y, n, rng)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b, "sqeuclidean")


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b, "euclidean")


# --------------------------------------------------------------------------------------------
# distribution distances
# --------------------------------------------------------------------------------------------
def mmd_rbf(x, y, *, gammas: Sequence[float] = DEFAULT_GAMMAS, estimator: str = "biased",
            reduce: str = "mean", max_cells: int | None = 5000, seed: int = 0) -> float:
    """RBF-kernel maximum mean discrepancy between two point clouds.

    Parameters
    ----------
    x, y
        Arrays (cells x features) of the two samples.
    gammas
        Kernel parameters ``gamma`` of ``exp(-gamma * ||a - b||^2)``.
    estimator
        ``"biased"`` (V-statistic, >= 0, CFGen's choice) or ``"unbiased"`` (U-statistic).
    reduce
        ``"mean"`` (default) or ``"sum"`` over the gammas.
    max_cells
        Subsample each set to at most this many cells (seeded) to bound memory.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        The MMD^2 estimate combined over the kernels.
    """
    x, y = _pair(x, y)
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_cells, rng), _subsample(y, max_cells, rng)
    dxx, dyy, dxy = _sqdist(x, x), _sqdist(y, y), _sqdist(x, y)
    n, m = x.shape[0], y.shape[0]
    vals = []
    for g in gammas:
        kxx, kyy, kxy = np.exp(-g * dxx), np.exp(-g * dyy), np.exp(-g * dxy)
        if estimator == "biased":
            v = kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
        elif estimator == "unbiased":
            if n < 2 or m < 2:
                raise InputDataError("the unbiased MMD needs at least 2 cells in each set")
            v = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())
        else:
            raise OptionError(f"estimator must be 'biased' or 'unbiased', got {estimator!r}")
        vals.append(v)
    if reduce == "mean":
        return float(np.mean(vals))
    if reduce == "sum":
        return float(np.sum(vals))
    raise OptionError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def wasserstein(x, y, *, p: int = 2, max_cells: int | None = 2000, seed: int = 0) -> float:
    """Exact Wasserstein-p distance between two point clouds with uniform weights (POT).

    Parameters
    ----------
    x, y
        Arrays (cells x features).
    p
        1 (Euclidean cost) or 2 (squared Euclidean cost; the square root of the cost is returned).
    max_cells
        Subsample each set to at most this many cells (seeded); exact OT is cubic.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        W_p.
    """
    import ot

    x, y = _pair(x, y)
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_cells, rng), _subsample(y, max_cells, rng)
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    if p == 1:
        M = _dist(x, y)
        return float(ot.emd2(a, b, M, numItermax=1_000_000))
    if p == 2:
        M = _sqdist(x, y)
        return float(np.sqrt(max(ot.emd2(a, b, M, numItermax=1_000_000), 0.0)))
    raise OptionError(f"p must be 1 or 2, got {p!r}")


def energy_distance(x, y, *, max_cells: int | None = 5000, seed: int = 0) -> float:
    """Squared energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic, Euclidean).

    Parameters
    ----------
    x, y
        Arrays (cells x features).
    max_cells
        Subsample each set to at most this many cells (seeded).
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        The energy statistic (0 for identical sets).
    """
    x, y = _pair(x, y)
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_cells, rng), _subsample(y, max_cells, rng)
    dxy = _dist(x, y).mean()
    dxx = _dist(x, x).mean()
    dyy = _dist(y, y).mean()
    return float(max(2.0 * dxy - dxx - dyy, 0.0))


def pseudobulk_correlation(x, y) -> tuple[float, float]:
    """Pearson and Spearman correlation of the per-feature means of two sets.

    This is scDiffusion-X's PCC / SCC; give log-normalised features (RNA) or accessibility
    (ATAC), not an embedding.

    Parameters
    ----------
    x, y
        Arrays (cells x features) over the same features.

    Returns
    -------
    (float, float)
        Pearson r and Spearman rho (NaN when a mean profile is constant).
    """
    from scipy.stats import pearsonr, spearmanr

    mx = np.asarray(x.mean(0)).ravel().astype(np.float64)
    my = np.asarray(y.mean(0)).ravel().astype(np.float64)
    if mx.shape != my.shape:
        raise InputDataError(f"x and y have different numbers of features: {mx.size} vs {my.size}")
    if mx.size < 2 or np.ptp(mx) == 0 or np.ptp(my) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(mx, my)[0]), float(spearmanr(mx, my)[0])


# --------------------------------------------------------------------------------------------
# classifier / neighbourhood two-sample tests
# --------------------------------------------------------------------------------------------
def one_nn_accuracy(x, y, *, max_cells: int | None = 5000, seed: int = 0) -> float:
    """Leave-one-out 1-nearest-neighbour two-sample accuracy (0.5 ideal, 1 separable).

    Parameters
    ----------
    x, y
        Arrays (cells x features); balanced to the same size by seeded subsampling.
    max_cells
        At most this many cells per set.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        Fraction of cells whose nearest other cell comes from the same set.
    """
    from sklearn.neighbors import NearestNeighbors

    x, y = _pair(x, y)
    x, y = _balance(x, y, max_cells, np.random.default_rng(seed))
    z = np.vstack([x, y])
    lab = np.r_[np.zeros(len(x), int), np.ones(len(y), int)]
    nn = NearestNeighbors(n_neighbors=2).fit(z)
    _, idx = nn.kneighbors(z)
    # the first neighbour is the point itself unless duplicates exist; take the first index != self
    self_first = idx[:, 0] == np.arange(len(z))
    nb = np.where(self_first, idx[:, 1], idx[:, 0])
    return float((lab[nb] == lab).mean())


def rf_auc(x, y, *, n_splits: int = 5, n_estimators: int = 100, max_cells: int | None = 3000,
           seed: int = 0) -> float:
    """Out-of-fold ROC AUC of a random forest classifying real vs generated (0.5 ideal).

    Parameters
    ----------
    x, y
        Arrays (cells x features); balanced to the same size by seeded subsampling.
    n_splits
        Folds of the stratified cross-validation.
    n_estimators
        Trees in the forest.
    max_cells
        At most this many cells per set.
    seed
        Seed of subsampling, folds and forest.

    Returns
    -------
    float
        ROC AUC of the out-of-fold probabilities.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = _pair(x, y)
    x, y = _balance(x, y, max_cells, np.random.default_rng(seed))
    n_splits = int(min(n_splits, len(x)))
    if n_splits < 2:
        raise InputDataError("rf_auc needs at least 2 cells in each set")
    z = np.vstack([x, y])
    lab = np.r_[np.zeros(len(x), int), np.ones(len(y), int)]
    clf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    prob = cross_val_predict(clf, z, lab, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(lab, prob))


def ilisi(x, y, *, k: int = 30, normalise: bool = True, max_cells: int | None = 5000,
          seed: int = 0) -> float:
    """Integration LISI of real vs generated: inverse Simpson index of source labels in kNN.

    Parameters
    ----------
    x, y
        Arrays (cells x features); balanced to the same size by seeded subsampling.
    k
        Neighbourhood size (self included); capped at the number of cells.
    normalise
        Report ``(iLISI - 1) / (2 - 1)`` in [0, 1] (1 = perfectly mixed) instead of the raw
        index in [1, 2].
    max_cells
        At most this many cells per set.
    seed
        Seed of the subsampling.

    Returns
    -------
    float
        Mean (normalised) iLISI over cells.
    """
    from sklearn.neighbors import NearestNeighbors

    x, y = _pair(x, y)
    x, y = _balance(x, y, max_cells, np.random.default_rng(seed))
    z = np.vstack([x, y])
    lab = np.r_[np.zeros(len(x), int), np.ones(len(y), int)]
    k = int(min(k, len(z)))
    _, idx = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    frac = lab[idx].mean(1)
    simpson = frac ** 2 + (1 - frac) ** 2
    val = 1.0 / simpson
    if normalise:
        val = val - 1.0  # (iLISI - 1) / (n_sources - 1) with 2 sources
    return float(val.mean())


def knn_label_transfer(x_ref, labels_ref, x_query, labels_query, *, k: int = 15) -> tuple[float, float]:
    """kNN classifier trained on real cells, applied to generated cells (CellTypist stand-in).

    Parameters
    ----------
    x_ref, labels_ref
        Reference (real) embedding and cell-type labels.
    x_query, labels_query
        Query (generated) embedding and the labels it was generated for.
    k
        Neighbours of the classifier (distance-weighted vote).

    Returns
    -------
    (float, float)
        Accuracy and macro-F1 of the predicted vs intended labels.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier

    x_ref, x_query = _pair(x_ref, x_query)
    labels_ref = np.asarray(labels_ref).astype(str)
    labels_query = np.asarray(labels_query).astype(str)
    clf = KNeighborsClassifier(n_neighbors=int(min(k, len(x_ref))), weights="distance").fit(x_ref, labels_ref)
    pred = clf.predict(x_query)
    return (float(accuracy_score(labels_query, pred)),
            float(f1_score(labels_query, pred, average="macro", labels=np.unique(labels_query), zero_division=0)))


def marker_features(x, labels, *, n_markers: int = 20) -> dict[str, np.ndarray]:
    """Marker features per group: top one-vs-rest Welch t-statistics on real cells.

    Parameters
    ----------
    x
        Log-normalised features (or accessibility) of real cells.
    labels
        Group label of each cell.
    n_markers
        Markers kept per group.

    Returns
    -------
    dict
        Group -> integer indices of its marker features (highest t first).
    """
    x = _dense(x)
    labels = np.asarray(labels).astype(str)
    out = {}
    for g in np.unique(labels):
        m = labels == g
        if m.sum() < 2 or (~m).sum() < 2:
            continue
        a, b = x[m], x[~m]
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b)) + 1e-12
        t = (a.mean(0) - b.mean(0)) / se
        out[str(g)] = np.argsort(-t, kind="stable")[: int(min(n_markers, x.shape[1]))]
    return out


def marker_correlation(x_real, labels_real, x_gen, labels_gen, *, n_markers: int = 20,
                       markers: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per-group Pearson correlation of real vs generated mean profiles over marker features.

    Markers are chosen on real cells (:func:`marker_features`); the union of all groups'
    markers is the profile, so a group's correlation measures whether its generated cells
    reproduce both its own markers and the absence of other groups' markers.

    Parameters
    ----------
    x_real, labels_real
        Log-normalised features and labels of real cells.
    x_gen, labels_gen
        The same features and intended labels of generated cells.
    n_markers
        Markers per group.
    markers
        Precomputed markers (group -> feature indices).

    Returns
    -------
    dict
        Group -> Pearson r (groups missing in either set are skipped).
    """
    x_real, x_gen = _pair(x_real, x_gen)
    labels_real = np.asarray(labels_real).astype(str)
    labels_gen = np.asarray(labels_gen).astype(str)
    if markers is None:
        markers = marker_features(x_real, labels_real, n_markers=n_markers)
    if not markers:
        return {}
    union = np.unique(np.concatenate(list(markers.values())))
    out = {}
    for g in markers:
        mr, mg = labels_real == g, labels_gen == g
        if not mr.any() or not mg.any():
            continue
        a, b = x_real[mr][:, union].mean(0), x_gen[mg][:, union].mean(0)
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            out[g] = float("nan")
        else:
            out[g] = float(np.corrcoef(a, b)[0, 1])
    return out


# --------------------------------------------------------------------------------------------
# paired (translation) metrics
# --------------------------------------------------------------------------------------------
def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / den
    r[den == 0] = np.nan
    return r


def rowwise_pearson(a, b) -> np.ndarray:
    """Pearson r between matching rows of two arrays (NaN where a row is constant)."""
    a, b = _pair(a, b)
    if a.shape != b.shape:
        raise InputDataError(f"shapes differ: {a.shape} vs {b.shape}")
    return _corr_rows(a, b)


def colwise_pearson(a, b) -> np.ndarray:
    """Pearson r between matching columns of two arrays (NaN where a column is constant)."""
    a, b = _pair(a, b)
    if a.shape != b.shape:
        raise InputDataError(f"shapes differ: {a.shape} vs {b.shape}")
    return _corr_rows(a.T, b.T)


def auroc(y_true, score) -> float:
    """ROC AUC from ranks (ties get half credit); NaN when one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y_true).ravel() > 0
    s = np.asarray(score, dtype=np.float64).ravel()
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def auprc(y_true, score) -> float:
    """Average precision (sklearn convention, ties grouped); NaN when there is no positive."""
    y = np.asarray(y_true).ravel() > 0
    s = np.asarray(score, dtype=np.float64).ravel()
    npos = int(y.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    prec = tp / (last + 1)
    rec = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def rowwise_auroc(y_true, score) -> np.ndarray:
    """Per-row ROC AUC (vectorised by ranks; NaN for rows with a single class)."""
    from scipy.stats import rankdata

    y = _dense(y_true) > 0
    s = _dense(score)
    if y.shape != s.shape:
        raise InputDataError(f"shapes differ: {y.shape} vs {s.shape}")
    r = rankdata(s, axis=1)
    npos = y.sum(1).astype(np.float64)
    nneg = y.shape[1] - npos
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((r * y).sum(1) - npos * (npos + 1) / 2) / (npos * nneg)
    out[(npos == 0) | (nneg == 0)] = np.nan
    return out


def rowwise_auprc(y_true, score) -> np.ndarray:
    """Per-row average precision (NaN for rows without a positive)."""
    y = _dense(y_true) > 0
    s = _dense(score)
    if y.shape != s.shape:
        raise InputDataError(f"shapes differ: {y.shape} vs {s.shape}")
    return np.array([auprc(y[i], s[i]) for i in range(y.shape[0])])
