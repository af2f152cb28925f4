"""Evaluation protocol for generation and translation (CFGen-compatible).

The protocol follows CFGen's public evaluation (Palma et al.) so that numbers and figures are
comparable, with scDiffusion-X's pseudobulk correlations added.

Feature spaces (fitted on **real** cells only, :class:`FeatureSpace`)
    RNA
        2,000 highly variable genes chosen on the real (test) cells: scanpy's ``seurat_v3`` on
        raw counts when counts and ``scikit-misc`` are available, else ``flavor="seurat"`` on
        the log-normalised data (the flavour used is stored in ``FeatureSpace.hvg_flavor_``).
        Every cell (real or generated) is normalised to 1e4 total counts over *all* its genes and
        log1p-transformed; values that are not counts are taken as already log-normalised.
        PCA (30 components, no scaling) is fitted on the real cells; generated cells are
        projected with the same centring and loadings.
    ATAC
        Binarised (counts > 0; probabilities in [0, 1] are Bernoulli-sampled with a seed, or
        read from ``layers["prob"]`` for pseudobulk statistics), the ``n_features`` most variable
        peaks on real cells (binary variance ``p(1-p)``), TF-IDF
        ``log1p(x / depth * idf * 1e4)`` with ``depth`` the cell's accessible peaks over all
        peaks and ``idf = log(1 + n_real / (1 + df_real))`` fitted on the real cells, then LSI
        (``TruncatedSVD``) with 31 components fitted on real cells; the first component is dropped
        when ``|corr(component 1, log depth)| > 0.5`` on the real cells (it then encodes
        sequencing depth, the usual Signac/ArchR practice), else the last one is dropped, so 30
        components remain (``FeatureSpace.dropped_first_`` / ``depth_corr_``).

Metrics (see :mod:`scdiffx_grn.eval._metrics` for estimator details)
    On the embedding: RBF-MMD (mean over gammas {0.01, 0.1, 1, 10, 100}, biased estimator),
    Wasserstein-1 and -2 (exact OT, uniform weights, <= 2,000 cells per set, seeded), energy
    distance, 1-NN leave-one-out two-sample accuracy (0.5 ideal), random-forest real-vs-generated
    out-of-fold AUC (0.5 ideal), normalised iLISI (1 ideal), kNN cell-type classifier trained on
    real cells and applied to generated ones (accuracy, macro-F1; CellTypist stand-in).
    On the normalised features (log-normalised HVGs / accessibility of the selected peaks):
    pseudobulk Pearson and Spearman of feature means (scDiffusion-X PCC / SCC) and per-cell-type
    marker correlation (markers = top 20 one-vs-rest Welch t on real cells; Pearson of real vs
    generated mean profiles over the union of markers).

    Small test sets: a PCA / LSI fitted on the very cells it compares favours them (in-sample
    variance inflation; see ``evaluate_model(feature_space_fit=...)``), so
    :func:`evaluate_model` fits the spaces on real *training* cells by default; pass a
    ``feature_space`` to :func:`evaluate_generation` to do the same there.

    Every metric is computed on all cells pooled (``cell_type="all"``) and per cell type (cell
    types with at least ``min_cells`` real and generated cells), for each seed; the summary
    averages the per-cell-type values within a seed, then reports mean and std over seeds.

Translation (:func:`evaluate_translation`) keeps the cell pairing: RNA per-cell and per-gene
Pearson of predicted vs observed log-normalised expression; ATAC per-cell and pooled AUROC /
AUPRC of predicted probabilities vs observed binary peaks; plus the distribution metrics
between predicted and observed cells.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import FeatureMismatchError, InputDataError, MissingLabelError, ScdxError, _fmt_items
from .._settings import logger
from . import _metrics as M

__all__ = [
    "FeatureSpace",
    "evaluate_generation",
    "evaluate_translation",
    "evaluate_model",
    "summarise_generation",
    "GENERATION_METRICS",
    "PER_CELL_TYPE_METRICS",
]

GENERATION_METRICS: tuple[str, ...] = (
    "mmd", "w1", "w2", "energy", "pb_pearson", "pb_spearman", "1nn_acc", "rf_auc", "ilisi",
    "knn_acc", "knn_f1", "marker_corr",
)
#: metrics also computed within each cell type (the classifier metrics need every type at once)
PER_CELL_TYPE_METRICS: tuple[str, ...] = (
    "mmd", "w1", "w2", "energy", "pb_pearson", "pb_spearman", "1nn_acc", "rf_auc", "ilisi",
)
_EMBED_METRICS = {"mmd", "w1", "w2", "energy", "1nn_acc", "rf_auc", "ilisi"}


# --------------------------------------------------------------------------------------------
# matrices
# --------------------------------------------------------------------------------------------
def _is_adata(x) -> bool:
    return hasattr(x, "obs") and hasattr(x, "var") and hasattr(x, "X")


def _raw_matrix(x, layer: str | None = "counts"):
    """``layers[layer]`` when present, else ``X`` (AnnData), or the array itself."""
    if _is_adata(x):
        if layer is not None and layer in x.layers:
            return x.layers[layer]
        return x.X
    return x


def _to_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def _looks_like_counts(X) -> bool:
    from .._validate import is_counts

    if sp.issparse(X):
        data = X.data[: 200_000]
    else:
        data = np.asarray(X).ravel()[: 2_000_000]
    return is_counts(data)


def lognormalise(X, target_sum: float = 1e4) -> sp.csr_matrix:
    """``log1p`` of counts normalised to ``target_sum`` per cell (over all columns given);
    non-count input is returned as it is (taken as already log-normalised)."""
    X = _to_csr(X)
    if not _looks_like_counts(X):
        if X.nnz and X.data.min() < 0:
            raise InputDataError("expression values are neither counts nor log-normalised (negative values)")
        return X
    tot = np.asarray(X.sum(1)).ravel()
    scale = np.divide(target_sum, tot, out=np.zeros_like(tot, dtype=np.float64), where=tot > 0)
    X = sp.diags(scale.astype(np.float32)) @ X
    X = sp.csr_matrix(X)
    X.data = np.log1p(X.data)
    return X


def binarise(X, *, seed: int = 0) -> sp.csr_matrix:
    """Binary accessibility: counts > 0, or Bernoulli draws (seeded) from probabilities in [0, 1]."""
    X = _to_csr(X)
    if _looks_like_counts(X):
        B = X.copy()
        B.data = (B.data > 0).astype(np.float32)
        B.eliminate_zeros()
        return B
    if X.nnz and (X.data.min() < 0 or X.data.max() > 1):
        raise InputDataError("ATAC values are neither counts nor probabilities in [0, 1]")
    rng = np.random.default_rng(seed)
    B = X.copy()
    B.data = (rng.random(B.data.shape[0]) < B.data).astype(np.float32)
    B.eliminate_zeros()
    return B


def _reindex(x, var_names: pd.Index, all_var_names: pd.Index | None, what: str):
    """Column indices of ``var_names`` in ``x`` (AnnData by name, array by fitted order)."""
    if _is_adata(x):
        idx = pd.Index(x.var_names).get_indexer(var_names)
        if (idx < 0).any():
            missing = var_names[idx < 0]
            raise FeatureMismatchError(
                f"{what} lacks {len(missing)} features the feature space was fitted on: {_fmt_items(missing)}")
        return idx
    n = np.shape(x)[1]
    if all_var_names is not None and n != len(all_var_names):
        raise FeatureMismatchError(f"{what} has {n} columns; the feature space was fitted on {len(all_var_names)}")
    return pd.Index(all_var_names).get_indexer(var_names) if all_var_names is not None else np.arange(n)


class FeatureSpace:
    """Feature space fitted on real cells, in which real and generated cells are compared.

    Parameters
    ----------
    modality
        ``"rna"`` (HVG + log-normalisation + PCA) or ``"atac"`` (binarise + top variable peaks +
        TF-IDF + LSI). See the module docstring for the exact protocol.
    n_features
        HVGs (default 2,000) or top variable peaks (default 20,000), capped at the features present.
    n_comps
        Components of the PCA / LSI (default 30).
    layer
        Layer holding counts (falls back to ``X``).
    target_sum
        Total counts per cell after RNA normalisation.
    depth_corr_threshold
        ATAC: drop the first LSI component when its absolute correlation with log depth exceeds this.
    seed
        Seed of the randomised SVD / PCA.

    Attributes
    ----------
    var_names_
        Selected features.
    hvg_flavor_
        RNA: the HVG flavour used (``"seurat_v3"``, ``"seurat"`` or ``"all"``).
    dropped_first_, depth_corr_
        ATAC: whether the first LSI component was dropped and its correlation with depth.
    """

    def __init__(self, modality: str = "rna", *, n_features: int | None = None, n_comps: int = 30,
                 layer: str | None = "counts", target_sum: float = 1e4, depth_corr_threshold: float = 0.5,
                 seed: int = 0):
        if modality not in ("rna", "atac"):
            raise InputDataError(f"modality must be 'rna' or 'atac', got {modality!r}")
        self.modality = modality
        self.n_features = n_features if n_features is not None else (2000 if modality == "rna" else 20000)
        self.n_comps = int(n_comps)
        self.layer = layer
        self.target_sum = float(target_sum)
        self.depth_corr_threshold = float(depth_corr_threshold)
        self.seed = int(seed)
        self.fitted_ = False

    # ---------------------------------------------------------------- fit
    def fit(self, real) -> "FeatureSpace":
        """Fit the feature selection and the PCA / LSI on real cells.

        Parameters
        ----------
        real
            AnnData (counts in ``layers[layer]`` or ``X``) or a cells x features array.

        Returns
        -------
        FeatureSpace
            ``self``.
        """
        X = _raw_matrix(real, self.layer)
        n_cells, n_vars = X.shape
        if n_cells < 3:
            raise InputDataError(f"a feature space needs at least 3 real cells, got {n_cells}")
        self.all_var_names_ = (pd.Index(real.var_names.astype(str)) if _is_adata(real)
                               else pd.Index([str(i) for i in range(n_vars)]))
        if self.modality == "rna":
            self._fit_rna(X)
        else:
            self._fit_atac(X)
        self.fitted_ = True
        return self

    def _fit_rna(self, X) -> None:
        from sklearn.decomposition import PCA

        counts = _looks_like_counts(X)
        L = lognormalise(X, self.target_sum)
        n_top = int(min(self.n_features, X.shape[1]))
        if n_top >= X.shape[1]:
            sel, flavor = np.arange(X.shape[1]), "all"
        else:
            sel, flavor = self._hvg(X, L, n_top, counts)
        self.hvg_flavor_ = flavor
        self.feature_idx_ = np.sort(sel)
        self.var_names_ = self.all_var_names_[self.feature_idx_]
        F = L[:, self.feature_idx_].toarray()
        n_comps = int(min(self.n_comps, F.shape[0] - 1, F.shape[1]))
        self.pca_ = PCA(n_components=n_comps, random_state=self.seed).fit(F)

    def _hvg(self, X, L, n_top: int, counts: bool):
        import anndata as ad
        import scanpy as sc

        if counts:
            try:
                import skmisc  # noqa: F401

                a = ad.AnnData(_to_csr(X))
                sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat_v3")
                return np.flatnonzero(a.var["highly_variable"].to_numpy()), "seurat_v3"
            except ImportError:
                logger.info("scikit-misc not installed: HVGs with flavor='seurat' on log data")
        a = ad.AnnData(L.copy())
        a.uns["log1p"] = {"base": None}
        sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat")
        sel = np.flatnonzero(a.var["highly_variable"].to_numpy())
        if len(sel) == 0:  # degenerate data: fall back to variance
            sel = np.argsort(-np.asarray(L.power(2).mean(0)).ravel())[:n_top]
        return sel, "seurat"

    def _fit_atac(self, X) -> None:
        from sklearn.decomposition import TruncatedSVD

        B = binarise(X, seed=self.seed)
        p = np.asarray(B.mean(0)).ravel()
        n_top = int(min(self.n_features, B.shape[1]))
        self.feature_idx_ = np.sort(np.argsort(-(p * (1 - p)), kind="stable")[:n_top])
        self.var_names_ = self.all_var_names_[self.feature_idx_]
        df = np.asarray(B[:, self.feature_idx_].sum(0)).ravel()
        self.idf_ = np.log1p(B.shape[0] / (1.0 + df)).astype(np.float32)
        T, depth = self._tfidf(B)
        n_comps = int(min(self.n_comps + 1, T.shape[0] - 1, T.shape[1] - 1))
        if n_comps < 2:
            raise InputDataError("too few cells or peaks for an LSI")
        self.svd_ = TruncatedSVD(n_components=n_comps, random_state=self.seed).fit(T)
        first = self.svd_.transform(T)[:, 0]
        ld = np.log1p(depth)
        if np.ptp(first) > 0 and np.ptp(ld) > 0:
            self.depth_corr_ = float(np.corrcoef(first, ld)[0, 1])
        else:
            self.depth_corr_ = 0.0
        self.dropped_first_ = abs(self.depth_corr_) > self.depth_corr_threshold
        self.keep_ = np.arange(1, n_comps) if self.dropped_first_ else np.arange(0, n_comps - 1)

    def _tfidf(self, B) -> tuple[sp.csr_matrix, np.ndarray]:
        depth = np.asarray(B.sum(1)).ravel()
        S = B[:, self.feature_idx_]
        inv = np.divide(1.0, depth, out=np.zeros_like(depth, dtype=np.float64), where=depth > 0)
        T = sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ S @ sp.diags(self.idf_ * 1e4))
        T.data = np.log1p(T.data)
        return T, depth

    # ---------------------------------------------------------------- transform
    def _check(self):
        if not self.fitted_:
            raise ScdxError("FeatureSpace is not fitted: call fit(real) first")

    def _atac_source(self, x, prob: bool):
        if prob and _is_adata(x) and "prob" in x.layers:
            return x.layers["prob"]
        return _raw_matrix(x, self.layer)

    def features(self, x, *, use_prob: bool = True, seed: int = 0) -> sp.csr_matrix:
        """Normalised selected features: log-normalised HVGs (RNA) or accessibility of the
        selected peaks (ATAC; ``layers["prob"]`` when present and ``use_prob``, else binary).

        Parameters
        ----------
        x
            AnnData or array with the features the space was fitted on.
        use_prob
            ATAC: use probabilities from ``layers["prob"]`` when present.
        seed
            Seed of Bernoulli draws when ATAC probabilities must be binarised.

        Returns
        -------
        scipy.sparse.csr_matrix
            Cells x selected features.
        """
        self._check()
        if self.modality == "rna":
            # normalised over all genes of x (library size), then the HVGs selected by name
            L = lognormalise(_raw_matrix(x, self.layer), self.target_sum)
            return L[:, _reindex(x, self.var_names_, self.all_var_names_, "data")]
        X = self._atac_source(x, use_prob)
        idx = _reindex(x, self.var_names_, self.all_var_names_, "data")
        Xs = _to_csr(X)
        if _looks_like_counts(Xs):
            return binarise(Xs[:, idx])
        return Xs[:, idx]

    def transform(self, x, *, seed: int = 0) -> np.ndarray:
        """Project cells into the fitted PCA (RNA) or LSI (ATAC) space.

        Parameters
        ----------
        x
            AnnData (counts, log-normalised values, binary peaks or peak probabilities) or array.
        seed
            Seed of Bernoulli draws when ATAC probabilities are given.

        Returns
        -------
        numpy.ndarray
            Cells x components.
        """
        self._check()
        if self.modality == "rna":
            F = self.features(x).toarray()
            return self.pca_.transform(F)
        X = _raw_matrix(x, self.layer)
        if _is_adata(x):
            idx_all = _reindex(x, self.all_var_names_, self.all_var_names_, "data")
            X = _to_csr(X)[:, idx_all]
        B = binarise(X, seed=seed)
        T, _ = self._tfidf(B)
        return self.svd_.transform(T)[:, self.keep_]

    def fit_transform(self, real) -> np.ndarray:
        """``fit(real)`` then ``transform(real)``."""
        return self.fit(real).transform(real)


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------
def _labels(adata, key: str, what: str) -> np.ndarray:
    if key not in adata.obs:
        raise MissingLabelError(f"{what} has no obs column {key!r}; columns: {_fmt_items(adata.obs.columns)}")
    return adata.obs[key].astype(str).to_numpy()


def _embed_metric(name: str, x, y, seed: int, k: int, max_ot: int) -> float:
    if name == "mmd":
        return M.mmd_rbf(x, y, seed=seed)
    if name == "w1":
        return M.wasserstein(x, y, p=1, max_cells=max_ot, seed=seed)
    if name == "w2":
        return M.wasserstein(x, y, p=2, max_cells=max_ot, seed=seed)
    if name == "energy":
        return M.energy_distance(x, y, seed=seed)
    if name == "1nn_acc":
        return M.one_nn_accuracy(x, y, seed=seed)
    if name == "rf_auc":
        return M.rf_auc(x, y, seed=seed)
    if name == "ilisi":
        return M.ilisi(x, y, k=k, seed=seed)
    raise InputDataError(f"unknown metric {name!r}")


def _set_metrics(names, ex, ey, fx, fy, seed, k, max_ot) -> dict[str, float]:
    out = {}
    for name in names:
        if name in _EMBED_METRICS:
            out[name] = _embed_metric(name, ex, ey, seed, k, max_ot)
    if "pb_pearson" in names or "pb_spearman" in names:
        r, rho = M.pseudobulk_correlation(fx, fy)
        if "pb_pearson" in names:
            out["pb_pearson"] = r
        if "pb_spearman" in names:
            out["pb_spearman"] = rho
    return out


def evaluate_generation(real, generated, *, groupby: str | None = "cell_type", modality: str = "rna",
                        seeds: Sequence[int] = (0, 1, 2), n_cells: int | None = None,
                        metrics: Sequence[str] | None = None,
                        per_cell_type_metrics: Sequence[str] | None = None,
                        feature_space: FeatureSpace | None = None, min_cells: int = 10, k: int = 30,
                        max_ot_cells: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare generated cells with real ones (CFGen protocol; see the module docstring).

    Parameters
    ----------
    real, generated
        AnnData of one modality; counts in ``layers["counts"]`` or ``X`` (generated ATAC may
        hold probabilities in ``layers["prob"]`` and a binary ``X``).
    groupby
        Cell-type column of both ``obs`` (``None``: pooled metrics only).
    modality
        ``"rna"`` or ``"atac"``.
    seeds
        One repetition per seed (subsampling, OT, forests, Bernoulli draws).
    n_cells
        Subsample each set to this many cells per seed (``None``: all).
    metrics
        Subset of :data:`GENERATION_METRICS` (default all).
    per_cell_type_metrics
        Metrics also computed per cell type (default :data:`PER_CELL_TYPE_METRICS` that are in ``metrics``).
    feature_space
        A :class:`FeatureSpace` already fitted on the real cells (reused across methods).
    min_cells
        Cell types with fewer real or generated cells are skipped per cell type.
    k
        Neighbourhood of iLISI (the kNN classifier uses 15).
    max_ot_cells
        Cap of cells per set for the exact Wasserstein distances.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Tidy table ``metric, cell_type ("all" pooled), seed, value, modality`` and its summary
        (:func:`summarise_generation`).
    """
    metrics = list(GENERATION_METRICS if metrics is None else metrics)
    unknown = sorted(set(metrics) - set(GENERATION_METRICS))
    if unknown:
        raise InputDataError(f"unknown metrics {_fmt_items(unknown)}; known: {_fmt_items(GENERATION_METRICS)}")
    pct = [m for m in (PER_CELL_TYPE_METRICS if per_cell_type_metrics is None else per_cell_type_metrics)
           if m in metrics]
    if feature_space is None:
        feature_space = FeatureSpace(modality).fit(real)
    elif feature_space.modality != modality:
        raise InputDataError(f"feature_space is for {feature_space.modality!r}, not {modality!r}")
    lab_r = _labels(real, groupby, "real") if groupby else np.full(real.n_obs, "all")
    lab_g = _labels(generated, groupby, "generated") if groupby else np.full(generated.n_obs, "all")
    if generated.n_obs == 0:
        raise InputDataError("generated holds no cells")
    need_features = any(m in metrics for m in ("pb_pearson", "pb_spearman", "marker_corr"))
    rows = []
    markers = None
    for seed in seeds:
        seed = int(seed)
        rng = np.random.default_rng(seed)
        ir = np.arange(real.n_obs)
        ig = np.arange(generated.n_obs)
        if n_cells is not None:
            ir = np.sort(rng.choice(ir, size=min(n_cells, len(ir)), replace=False))
            ig = np.sort(rng.choice(ig, size=min(n_cells, len(ig)), replace=False))
        er = feature_space.transform(real[ir], seed=seed)
        eg = feature_space.transform(generated[ig], seed=seed)
        fr = feature_space.features(real[ir], seed=seed) if need_features else None
        fg = feature_space.features(generated[ig], seed=seed) if need_features else None
        lr, lg = lab_r[ir], lab_g[ig]

        for name, v in _set_metrics(metrics, er, eg, fr, fg, seed, k, max_ot_cells).items():
            rows.append((name, "all", seed, v))
        if groupby and ("knn_acc" in metrics or "knn_f1" in metrics):
            acc, f1 = M.knn_label_transfer(er, lr, eg, lg)
            if "knn_acc" in metrics:
                rows.append(("knn_acc", "all", seed, acc))
            if "knn_f1" in metrics:
                rows.append(("knn_f1", "all", seed, f1))
        if groupby and "marker_corr" in metrics:
            if markers is None:  # markers from all real cells, once
                markers = M.marker_features(feature_space.features(real).toarray(), lab_r)
            for ct, v in M.marker_correlation(fr.toarray(), lr, fg.toarray(), lg, markers=markers).items():
                rows.append(("marker_corr", ct, seed, v))
        if groupby and pct:
            for ct in sorted(set(lr) & set(lg)):
                mr, mg = lr == ct, lg == ct
                if mr.sum() < min_cells or mg.sum() < min_cells:
                    continue
                vals = _set_metrics(pct, er[mr], eg[mg], fr[mr] if fr is not None else None,
                                    fg[mg] if fg is not None else None, seed, k, max_ot_cells)
                for name, v in vals.items():
                    rows.append((name, ct, seed, v))
    tidy = pd.DataFrame(rows, columns=["metric", "cell_type", "seed", "value"])
    tidy["modality"] = modality
    return tidy, summarise_generation(tidy)


def summarise_generation(tidy: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean and std over seeds of pooled values and of per-cell-type averages.

    Parameters
    ----------
    tidy
        Table with ``metric, cell_type, seed, value`` (and any ``by`` columns).
    by
        Extra grouping columns (e.g. ``("method", "task", "modality")``).

    Returns
    -------
    pandas.DataFrame
        ``*by, metric, scope ("all" | "cell_type_mean"), mean, std, n_seeds``.
    """
    by = [c for c in by if c in tidy.columns]
    keys = [*by, "metric"]
    t = tidy.copy()
    t["scope"] = np.where(t["cell_type"].astype(str) == "all", "all", "cell_type_mean")
    per_seed = t.groupby([*keys, "scope", "seed"], dropna=False, sort=False)["value"].mean().reset_index()
    out = (per_seed.groupby([*keys, "scope"], dropna=False, sort=False)["value"]
           .agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n_seeds="count")
           .reset_index())
    return out


# --------------------------------------------------------------------------------------------
# translation
# --------------------------------------------------------------------------------------------
def _check_aligned(observed, predicted) -> None:
    a, b = pd.Index(observed.obs_names), pd.Index(predicted.obs_names)
    if len(a) == len(b) and (a == b).all():
        return
    missing, extra = a.difference(b), b.difference(a)
    if len(missing) or len(extra):
        raise InputDataError(
            f"observed and predicted hold different cells: {len(missing)} observed cells missing from "
            f"predicted ({_fmt_items(missing)}), {len(extra)} predicted cells not observed ({_fmt_items(extra)})")
    if len(a) != len(b):
        raise InputDataError(f"observed has {len(a)} cells and predicted {len(b)} (duplicated obs_names?)")
    pos = np.flatnonzero(a.to_numpy() != b.to_numpy())
    raise InputDataError(
        f"observed and predicted hold the same cells in a different order ({len(pos)} positions differ; "
        f"first at position {pos[0]}: observed {a[pos[0]]!r}, predicted {b[pos[0]]!r}); reorder "
        "predicted with predicted[observed.obs_names]")


def _pearson_stats(O: sp.csr_matrix, P: np.ndarray, rows: np.ndarray, chunk: int = 512):
    """Per-cell Pearson r (rows) and per-gene Pearson r (columns over ``rows``), chunked."""
    cell_r = np.empty(len(rows))
    n_f = P.shape[1]
    s = {k: np.zeros(n_f) for k in ("a", "b", "aa", "bb", "ab")}
    for i in range(0, len(rows), chunk):
        r = rows[i: i + chunk]
        a = O[r].toarray().astype(np.float64)
        b = np.asarray(P[r], dtype=np.float64)
        cell_r[i: i + len(r)] = M._corr_rows(a, b)
        s["a"] += a.sum(0)
        s["b"] += b.sum(0)
        s["aa"] += (a * a).sum(0)
        s["bb"] += (b * b).sum(0)
        s["ab"] += (a * b).sum(0)
    n = len(rows)
    cov = s["ab"] - s["a"] * s["b"] / n
    va = s["aa"] - s["a"] ** 2 / n
    vb = s["bb"] - s["b"] ** 2 / n
    den = np.sqrt(np.maximum(va, 0) * np.maximum(vb, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        gene_r = cov / den
    gene_r[den <= 1e-12 * max(1.0, float(np.nanmax(den)) if den.size else 1.0)] = np.nan
    return cell_r, gene_r


def _nanstat(x: np.ndarray, fn) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")


def evaluate_translation(observed, predicted, *, modality: str, groupby: str | None = "cell_type",
                         seed: int = 0, distribution: bool = True,
                         distribution_metrics: Sequence[str] = ("mmd", "w2", "energy", "pb_pearson"),
                         feature_space: FeatureSpace | None = None, min_cells: int = 10,
                         max_cells: int | None = 2000, max_pooled: int = 2_000_000) -> pd.DataFrame:
    """Paired translation metrics of predicted vs observed cells.

    Parameters
    ----------
    observed
        AnnData of the target modality with counts (``layers["counts"]`` or ``X``).
    predicted
        AnnData with the same ``obs_names`` in the same order: ``X`` = log-normalised expression
        (``modality="rna"``) or accessibility probabilities (``"atac"``).
    modality
        Target modality, ``"rna"`` or ``"atac"``.
    groupby
        Cell-type column of ``observed.obs`` (``None``: pooled only).
    seed
        Seed of subsampling and of Bernoulli draws for the distribution metrics.
    distribution
        Also compute distribution metrics between predicted and observed cells.
    distribution_metrics
        Which (from :data:`GENERATION_METRICS`, embedding or pseudobulk ones).
    feature_space
        Fitted on observed cells when not given.
    min_cells
        Minimum cells of a cell type for its per-type values.
    max_cells
        Per-cell metrics use at most this many cells (seeded subsample; ``None``: all).
    max_pooled
        Pooled ATAC AUROC / AUPRC use at most this many (cell, peak) entries.

    Returns
    -------
    pandas.DataFrame
        Tidy ``metric, cell_type, seed, value, modality``. RNA: ``cell_pearson_{mean,median}``,
        ``gene_pearson_{mean,median}``; ATAC: ``cell_auroc_*``, ``cell_auprc_*``,
        ``auroc_pooled``, ``auprc_pooled``; plus the distribution metrics.

    Raises
    ------
    InputDataError
        When the obs_names of observed and predicted differ or are not aligned.
    FeatureMismatchError
        When they share no features.
    """
    if modality not in ("rna", "atac"):
        raise InputDataError(f"modality must be 'rna' or 'atac', got {modality!r}")
    _check_aligned(observed, predicted)
    common = pd.Index(observed.var_names).intersection(pd.Index(predicted.var_names), sort=False)
    if len(common) == 0:
        raise FeatureMismatchError("observed and predicted share no features (var_names)")
    if len(common) < predicted.n_vars:
        logger.warning("evaluate_translation: %d predicted features not observed are ignored",
                       predicted.n_vars - len(common))
    io = pd.Index(observed.var_names).get_indexer(common)
    ip = pd.Index(predicted.var_names).get_indexer(common)
    Xo = _raw_matrix(observed)
    P = predicted.X
    P = P.toarray() if sp.issparse(P) else np.asarray(P)
    P = np.asarray(P[:, ip], dtype=np.float32)
    if not np.isfinite(P).all():
        raise InputDataError("predicted holds non-finite values")
    labels = _labels(observed, groupby, "observed") if groupby else np.full(observed.n_obs, "all")
    rng = np.random.default_rng(seed)
    rows_all = np.arange(observed.n_obs)
    if max_cells is not None and len(rows_all) > max_cells:
        rows_all = np.sort(rng.choice(rows_all, size=max_cells, replace=False))
    groups = [("all", rows_all)]
    if groupby:
        for ct in sorted(set(labels)):
            r = rows_all[labels[rows_all] == ct]
            if len(r) >= min_cells:
                groups.append((ct, r))
    out = []
    if modality == "rna":
        O = lognormalise(Xo)[:, io]
        if _looks_like_counts(P):
            P = lognormalise(P).toarray()
        for ct, r in groups:
            cr, gr = _pearson_stats(O, P, r)
            out += [("cell_pearson_mean", ct, _nanstat(cr, np.mean)), ("cell_pearson_median", ct, _nanstat(cr, np.median)),
                    ("gene_pearson_mean", ct, _nanstat(gr, np.mean)), ("gene_pearson_median", ct, _nanstat(gr, np.median))]
    else:
        if P.min() < -1e-5 or P.max() > 1 + 1e-5:
            raise InputDataError(f"predicted ATAC values must be probabilities in [0, 1]; found range "
                                 f"[{P.min():.3g}, {P.max():.3g}]")
        P = np.clip(P, 0.0, 1.0)
        O = binarise(_to_csr(Xo)[:, io])
        for ct, r in groups:
            y = O[r].toarray()
            p = P[r]
            ca, cp = M.rowwise_auroc(y, p), M.rowwise_auprc(y, p)
            yf, pf = y.ravel(), p.ravel()
            if yf.size > max_pooled:
                pick = rng.choice(yf.size, size=max_pooled, replace=False)
                yf, pf = yf[pick], pf[pick]
            out += [("cell_auroc_mean", ct, _nanstat(ca, np.mean)), ("cell_auroc_median", ct, _nanstat(ca, np.median)),
                    ("cell_auprc_mean", ct, _nanstat(cp, np.mean)), ("cell_auprc_median", ct, _nanstat(cp, np.median)),
                    ("auroc_pooled", ct, M.auroc(yf, pf)), ("auprc_pooled", ct, M.auprc(yf, pf))]
    tidy = pd.DataFrame(out, columns=["metric", "cell_type", "value"])
    tidy.insert(2, "seed", int(seed))
    if distribution:
        import anndata as ad

        pred_ad = ad.AnnData(P, obs=observed.obs[[groupby]].copy() if groupby else pd.DataFrame(index=observed.obs_names),
                             var=pd.DataFrame(index=common))
        obs_ad = ad.AnnData(_to_csr(Xo)[:, io], obs=pred_ad.obs.copy(), var=pd.DataFrame(index=common))
        fs = feature_space if feature_space is not None else FeatureSpace(modality).fit(obs_ad)
        dist, _ = evaluate_generation(obs_ad, pred_ad, groupby=groupby, modality=modality, seeds=(seed,),
                                      metrics=list(distribution_metrics), feature_space=fs,
                                      n_cells=max_cells, min_cells=min_cells)
        tidy = pd.concat([tidy, dist.drop(columns="modality")], ignore_index=True)
    tidy["modality"] = modality
    return tidy


# --------------------------------------------------------------------------------------------
# model vs baselines
# --------------------------------------------------------------------------------------------
def _obs_column(mdata, key: str) -> np.ndarray:
    if key in mdata.obs:
        return mdata.obs[key].astype(str).to_numpy()
    for name in ("rna", "atac"):
        if name in mdata.mod and key in mdata.mod[name].obs:
            return mdata.mod[name].obs[key].astype(str).to_numpy()
    raise MissingLabelError(f"obs column {key!r} not found in mdata.obs nor in its modalities' obs")


def _subset(mdata, mask: np.ndarray):
    sub = mdata[np.flatnonzero(mask)].copy()
    return sub


def _ensure_labels(gen, key: str, labels: np.ndarray):
    """Attach the intended labels to each modality's obs when the generator did not."""
    mods = gen.mod if hasattr(gen, "mod") else {"_": gen}
    for a in mods.values():
        if key not in a.obs:
            if a.n_obs != len(labels):
                raise ScdxError(f"generator returned {a.n_obs} cells for {len(labels)} labels")
            a.obs[key] = pd.Categorical(labels)
        else:
            a.obs[key] = a.obs[key].astype(str)
    return gen


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def evaluate_model(model, mdata, *, split_key: str = "split", test_value: str = "test",
                   train_value: str | None = None, groupby: str = "cell_type", seeds: Sequence[int] = (0,),
                   n_samples: int = 5, generate_kwargs: Mapping[str, Any] | None = None,
                   translate_kwargs: Mapping[str, Any] | None = None,
                   baselines: bool | Mapping[str, Any] = True, tasks: Sequence[str] = ("generation", "translation"),
                   metrics: Sequence[str] | None = None, per_cell_type_metrics: Sequence[str] | None = None,
                   n_cells: int | None = None, memorisation: bool = True,
                   feature_space_fit: str = "train") -> pd.DataFrame:
    """Evaluate a trained model and baselines on the test split, in one tidy table.

    Generation: as many cells per cell type as the test split has are generated with
    ``model.generate({groupby: labels}, seed=seed, **generate_kwargs)`` and compared with the
    test cells for RNA and ATAC (:func:`evaluate_generation`, feature spaces fitted on the test
    cells). Translation: ``model.translate(test, direction=d, seed=seed)`` for both directions
    (the posterior-mean readout of models that have one; ``translate_kwargs={"readout":
    "samples"}`` scores the latent mean of ``n_samples`` samples instead), scored with
    :func:`evaluate_translation`. Baselines are fitted on the
    training cells and evaluated identically. Memorisation (``mem_*`` metrics) compares
    generated cells' distance to the nearest training vs test cell.

    Parameters
    ----------
    model
        Object with the model contract's ``generate`` / ``translate`` (see ARCHITECTURE.md).
    mdata
        MuData with ``rna`` and ``atac`` (counts), ``split_key`` and ``groupby`` columns.
    split_key, test_value, train_value
        Test cells are ``split == test_value``; training cells ``split == train_value`` (default:
        every non-test cell).
    groupby
        Cell-type column.
    seeds
        Generation / translation seeds (one repetition each).
    n_samples
        Samples per cell for translators without a posterior-mean readout (or with
        ``readout="samples"``).
    generate_kwargs, translate_kwargs
        Extra arguments of the model's ``generate`` / ``translate`` (sampler, n_steps, guidance...).
    baselines
        ``True`` (cell-type mean, resampling, kNN and ridge translators), ``False``, or a mapping
        name -> fitted object with ``generate`` and/or ``translate``.
    tasks
        Subset of ``("generation", "translation")``.
    metrics, per_cell_type_metrics
        Passed to :func:`evaluate_generation`.
    n_cells
        Subsample of cells per seed in generation metrics.
    feature_space_fit
        Real cells the feature spaces (HVG / peaks, PCA / LSI) are fitted on: ``"train"``
        (default) or ``"test"`` (CFGen's choice). With ``"test"`` the test cells are in-sample
        for the PCA / LSI while generated cells are projected out-of-sample; with a few hundred
        test cells this inflates the variance of the real cells' trailing components enough for
        the random forest to separate two random halves of the *same* data (AUC ~0.9 on the
        500-cell BMMC starter set), so held-out fitting on training cells is the default. Either
        way the spaces see real cells only. (Resampled training cells are then in-sample, which
        the classifier metrics may pick up, as intended for a memoriser.)
    memorisation
        Add the ``mem_frac_closer_train`` / ``mem_median_ratio`` / ``mem_frac_copies`` metrics of
        generated RNA cells (:func:`~scdiffx_grn.eval.memorisation_distance`).

    Returns
    -------
    pandas.DataFrame
        ``method, task, modality, metric, cell_type, seed, value``; summarise with
        :func:`scdiffx_grn.eval.summarise`.
    """
    from ._baselines import (CellTypeMeanBaseline, KNNTranslator, ResampleBaseline, RidgeTranslator,
                             memorisation_distance)

    split = _obs_column(mdata, split_key)
    test_mask = split == str(test_value)
    train_mask = (split == str(train_value)) if train_value is not None else ~test_mask
    if test_mask.sum() == 0:
        raise InputDataError(f"no test cells: no {split_key!r} == {test_value!r}; values: {_fmt_items(np.unique(split))}")
    if train_mask.sum() == 0 and baselines is not False:
        raise InputDataError("no training cells to fit the baselines on")
    test = _subset(mdata, test_mask)
    train = _subset(mdata, train_mask) if train_mask.any() else None
    test_labels = _obs_column(test, groupby)
    for name in ("rna", "atac"):
        test.mod[name].obs[groupby] = test_labels
    if feature_space_fit not in ("train", "test"):
        raise InputDataError(f"feature_space_fit must be 'train' or 'test', got {feature_space_fit!r}")
    fit_ref = train if (feature_space_fit == "train" and train is not None) else test
    spaces = {m: FeatureSpace(m).fit(fit_ref.mod[m]) for m in ("rna", "atac")}

    methods: dict[str, Any] = {"model": model}
    if baselines is True:
        methods["celltype_mean"] = CellTypeMeanBaseline(groupby=groupby).fit(train)
        methods["resample"] = ResampleBaseline(groupby=groupby).fit(train)
        methods["knn"] = KNNTranslator().fit(train)
        methods["ridge"] = RidgeTranslator().fit(train)
    elif isinstance(baselines, Mapping):
        methods.update(baselines)

    parts = []
    if "generation" in tasks:
        labels = {groupby: list(test_labels)}
        for name, obj in methods.items():
            if not hasattr(obj, "generate"):
                continue
            for seed in seeds:
                kw = dict(generate_kwargs or {}) if name == "model" else {}
                gen = _ensure_labels(obj.generate(labels, seed=int(seed), **kw), groupby, test_labels)
                for m in ("rna", "atac"):
                    t, _ = evaluate_generation(test.mod[m], gen.mod[m], groupby=groupby, modality=m,
                                               seeds=(int(seed),), n_cells=n_cells, metrics=metrics,
                                               per_cell_type_metrics=per_cell_type_metrics,
                                               feature_space=spaces[m])
                    t["method"], t["task"] = name, "generation"
                    parts.append(t)
                if memorisation and train is not None:
                    d = memorisation_distance(gen.mod["rna"], train.mod["rna"], test.mod["rna"],
                                              feature_space=spaces["rna"], seed=int(seed))
                    parts.append(pd.DataFrame({
                        "metric": ["mem_frac_closer_train", "mem_median_ratio", "mem_frac_copies"],
                        "cell_type": "all", "seed": int(seed),
                        "value": [float(d["closer_to_train"].mean()), float(d["ratio"].median()),
                                  float(d["is_copy"].mean())],
                        "modality": "rna", "method": name, "task": "generation"}))
    if "translation" in tasks:
        for direction, tgt in (("atac->rna", "rna"), ("rna->atac", "atac")):
            fs = spaces[tgt]
            for name, obj in methods.items():
                if not hasattr(obj, "translate"):
                    continue
                for seed in seeds:
                    kw = dict(translate_kwargs or {}) if name == "model" else {}
                    if _accepts(obj.translate, "readout"):
                        # the model's point prediction is its posterior mean unless samples are asked for
                        kw.setdefault("readout", "mean")
                        if kw["readout"] == "samples":
                            kw.setdefault("n_samples", n_samples)
                    else:
                        kw.setdefault("n_samples", n_samples)
                    pred = obj.translate(test, direction=direction, seed=int(seed), **kw)
                    t = evaluate_translation(test.mod[tgt], pred, modality=tgt, groupby=groupby, seed=int(seed),
                                             feature_space=fs)
                    t["modality"], t["method"], t["task"] = direction, name, "translation"
                    parts.append(t)
    if not parts:
        return pd.DataFrame(columns=["method", "task", "modality", "metric", "cell_type", "seed", "value"])
    table = pd.concat(parts, ignore_index=True)
    return table[["method", "task", "modality", "metric", "cell_type", "seed", "value"]]
