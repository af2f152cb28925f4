"""The feature space in which real and generated / translated cells are compared (CFGen protocol).

See :mod:`scdiffx_grn.eval._protocol` for the protocol. Real cells are read from ``layer``
(``"counts"`` by default; a missing layer raises, there is no fallback to ``X``); cells given to
:meth:`FeatureSpace.transform` / :meth:`FeatureSpace.features` are read from the same layer unless
``layer=`` says otherwise (generated and translated cells hold their values in ``X``: pass
``layer=None``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import FeatureMismatchError, InputDataError, ScdxError, _fmt_items
from .._registry import TARGET_SUM
from .._settings import logger
from .._vocab import MODALITIES, check_option
from ._common import (
    binarise,
    is_adata,
    is_counts,
    lognormalise,
    matrix,
    to_csr,
)

__all__ = ["FeatureSpace"]


def _reindex(x, var_names: pd.Index, all_var_names: pd.Index | None, what: str):
    """Column indices of ``var_names`` in ``x`` (AnnData by name, array by fitted order)."""
    if is_adata(x):
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
        Layer holding the real cells' counts (``None``: ``X``); a missing layer raises. Also the
        default layer of :meth:`transform` / :meth:`features`.
    target_sum
        Total counts per cell after RNA normalisation.
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
                 layer: str | None = "counts", target_sum: float = TARGET_SUM, depth_corr_threshold: float = 0.5,
                 seed: int = 0):
        check_option("modality", modality, MODALITIES)
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
            AnnData (counts in ``layers[layer]``, ``X`` for ``layer=None``) or a cells x features array.

        Returns
        -------
        FeatureSpace
            ``self``.
        """
        X = matrix(real, self.layer, what="the real cells")
        n_cells, n_vars = X.shape
        if n_cells < 3:
            raise InputDataError(f"a feature space needs at least 3 real cells, got {n_cells}")
        self.all_var_names_ = (pd.Index(real.var_names.astype(str)) if is_adata(real)
                               else pd.Index([str(i) for i in range(n_vars)]))
        if self.modality == "rna":
            self._fit_rna(X)
        else:
            self._fit_atac(X)
        self.fitted_ = True
        return self

    def _fit_rna(self, X) -> None:
        from sklearn.decomposition import PCA

        counts = is_counts(X)
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

                a = ad.AnnData(to_csr(X))
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

    def _layer(self, layer):
        return self.layer if layer is ... else layer

    def _atac_source(self, x, prob: bool, layer):
        if prob and is_adata(x) and "prob" in x.layers:
            return x.layers["prob"]
        return matrix(x, self._layer(layer))

    def features(self, x, *, use_prob: bool = True, seed: int = 0, layer: str | None = ...) -> sp.csr_matrix:
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
        layer
            Layer of ``x`` to read (``None``: ``X``; default: the space's ``layer``). A missing
            layer raises; generated / translated cells hold their values in ``X`` (``layer=None``).

        Returns
        -------
        scipy.sparse.csr_matrix
            Cells x selected features.
        """
        self._check()
        if self.modality == "rna":
            # normalised over all genes of x (library size), then the HVGs selected by name
            L = lognormalise(matrix(x, self._layer(layer)), self.target_sum)
            return L[:, _reindex(x, self.var_names_, self.all_var_names_, "data")]
        X = self._atac_source(x, use_prob, layer)
        idx = _reindex(x, self.var_names_, self.all_var_names_, "data")
        Xs = to_csr(X)
        if is_counts(Xs):
            return binarise(Xs[:, idx])
        return Xs[:, idx]

    def transform(self, x, *, seed: int = 0, layer: str | None = ...) -> np.ndarray:
        """Project cells into the fitted PCA (RNA) or LSI (ATAC) space.

        Parameters
        ----------
        x
            AnnData (counts, log-normalised values, binary peaks or peak probabilities) or array.
        seed
            Seed of Bernoulli draws when ATAC probabilities are given.
        layer
            Layer of ``x`` to read (``None``: ``X``; default: the space's ``layer``). A missing
            layer raises; generated / translated cells hold their values in ``X`` (``layer=None``).

        Returns
        -------
        numpy.ndarray
            Cells x components.
        """
        return self.transform_with_error(x, seed=seed, layer=layer)[0]

    def transform_with_error(self, x, *, seed: int = 0, layer: str | None = ...) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform`, with a bound on each cell's floating-point rounding error.

        The projection is a matrix product in the embedding's dtype; its rounding depends on the
        BLAS kernel (CPU), the thread count and the other rows of the batch, so the same cell can
        embed at slightly different points. Each coordinate is a length-``p`` dot product of the
        (centred) features with a unit-norm component, whose error is at most ``gamma_p * ||x||``
        in any summation order (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1),
        ``gamma_p = p*u / (1 - p*u)`` with ``u`` the unit roundoff ``np.finfo(dtype).eps / 2``; over
        ``k`` components the error of the embedded point is at most ``sqrt(k) * gamma_p * ||x||``.

        Returns
        -------
        tuple of numpy.ndarray
            The embedding (cells x components) and the bound (one value per cell, the Euclidean
            error of that cell's embedded point).
        """
        self._check()
        if self.modality == "rna":
            F = self.features(x, layer=layer).toarray()
            E = self.pca_.transform(F)
            centred = F.astype(np.float64) - self.pca_.mean_.astype(np.float64)
            norm = np.sqrt(np.einsum("ij,ij->i", centred, centred))
            p = F.shape[1] + 1  # the centring adds one rounding per term
        else:
            X = matrix(x, self._layer(layer))
            if is_adata(x):
                idx_all = _reindex(x, self.all_var_names_, self.all_var_names_, "data")
                X = to_csr(X)[:, idx_all]
            B = binarise(X, seed=seed)
            T, _ = self._tfidf(B)
            E = self.svd_.transform(T)[:, self.keep_]
            norm = np.sqrt(np.asarray(T.multiply(T).sum(1), dtype=np.float64).ravel())
            p = T.shape[1]
        u = float(np.finfo(E.dtype).eps) / 2
        gamma = p * u / max(1.0 - p * u, 1e-300)
        return E, np.sqrt(E.shape[1]) * gamma * norm

    def fit_transform(self, real) -> np.ndarray:
        """``fit(real)`` then ``transform(real)``."""
        return self.fit(real).transform(real)
