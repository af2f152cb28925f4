"""Model-free baselines for generation and translation, fitted on training cells.

They follow the model's API (``generate(labels, seed=...)`` -> MuData,
``translate(mdata, direction=..., n_samples=..., seed=...)`` -> AnnData aligned to
``mdata.obs_names``) so :func:`scdiffx_grn.eval.evaluate_model` scores them the same way.

- :class:`CellTypeMeanBaseline`: per cell type, RNA counts ~ Poisson(library size x mean
  expression proportions of that type), with library sizes resampled from the type's training
  cells; ATAC ~ Bernoulli(per-type peak accessibility frequency) (``layers["prob"]``).
- :class:`ResampleBaseline`: training cells of the asked type drawn with replacement (a perfect
  "memoriser": it should win distribution metrics and lose :func:`memorisation_distance`).
- :class:`KNNTranslator`: PCA (RNA source) / LSI (ATAC source) of training cells; a query cell's
  prediction is the mean target (log-normalised RNA or binary ATAC) of its k nearest training cells.
- :class:`RidgeTranslator`: ridge regression from the same embedding to every target feature
  (closed form, sparse-friendly); ATAC predictions are a linear probability model clipped to
  ``[clip, 1 - clip]`` (a per-peak logistic regression is too costly for 1e5 peaks).

scVI / MultiVI are not dependencies; pass fitted wrappers through ``evaluate_model(baselines=...)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, MissingLabelError, ScdxError, _fmt_items
from .._vocab import DIRECTIONS, MODALITIES, check_option, split_direction
from ._common import (
    binarise,
    counts_layer,
    counts_of,
    group_labels,
    is_adata,
    lognormalise,
)
from ._common import to_csr as _to_csr
from ._space import FeatureSpace

__all__ = [
    "CellTypeMeanBaseline",
    "ResampleBaseline",
    "KNNTranslator",
    "RidgeTranslator",
    "memorisation_distance",
]

def _mods(data, modality: str | None) -> dict[str, Any]:
    if hasattr(data, "mod"):
        return {k: data.mod[k] for k in MODALITIES if k in data.mod}
    if not is_adata(data):
        raise InputDataError(f"expected a MuData or AnnData, got {type(data).__name__}")
    return {modality or "rna": data}


def _requested(labels, key: str) -> np.ndarray:
    if isinstance(labels, pd.DataFrame):
        labels = {k: labels[k].to_numpy() for k in labels.columns}
    if not isinstance(labels, Mapping) or key not in labels:
        raise MissingLabelError(f"labels must be a dict / DataFrame with key {key!r}")
    return np.atleast_1d(np.asarray(labels[key], dtype=object)).astype(str)


def _check_known(req: np.ndarray, known) -> None:
    unknown = sorted(set(req) - set(known))
    if unknown:
        raise MissingLabelError(f"labels not seen in training: {_fmt_items(unknown)}")


def _assemble(mods: dict[str, Any], single: bool):
    if single:
        return next(iter(mods.values()))
    import mudata as md

    return md.MuData(mods)


class _GeneratorBase:
    def __init__(self, groupby: str = "cell_type", modality: str | None = None):
        self.groupby = groupby
        self.modality = modality

    def _fit_common(self, data):
        mods = _mods(data, self.modality)
        self.single_ = not hasattr(data, "mod")
        self.var_ = {k: a.var.copy() for k, a in mods.items()}
        return mods

    def _obs(self, req: np.ndarray, prefix: str) -> pd.DataFrame:
        return pd.DataFrame({self.groupby: pd.Categorical(req)},
                            index=pd.Index([f"{prefix}_{i}" for i in range(len(req))]))


class CellTypeMeanBaseline(_GeneratorBase):
    """Generate cells from per-cell-type means with Poisson (RNA) / Bernoulli (ATAC) noise.

    Parameters
    ----------
    groupby
        Cell-type column of the training obs.
    modality
        For an AnnData (single modality) input: ``"rna"`` or ``"atac"``.
    """

    def fit(self, data) -> "CellTypeMeanBaseline":
        """Fit on training cells (MuData with ``rna``/``atac``, or one AnnData)."""
        mods = self._fit_common(data)
        self.params_ = {}
        for name, a in mods.items():
            lab = group_labels(data, self.groupby, adata=a, what="training data")
            X = _to_csr(counts_of(data, name))
            p = {}
            for ct in np.unique(lab):
                Xi = X[lab == ct]
                if name == "rna":
                    lib = np.asarray(Xi.sum(1)).ravel()
                    tot = np.asarray(Xi.sum(0)).ravel().astype(np.float64)
                    p[ct] = (tot / max(tot.sum(), 1e-12), lib)
                else:
                    p[ct] = (np.asarray(binarise(Xi).mean(0)).ravel(), None)
            self.params_[name] = p
        return self

    def generate(self, labels, *, seed: int = 0, **_: Any):
        """Generate one cell per entry of ``labels[groupby]``.

        Parameters
        ----------
        labels
            ``{groupby: [...]}`` or a DataFrame with that column.
        seed
            Seed of library sizes and noise.

        Returns
        -------
        MuData or AnnData
            RNA: counts in ``X`` and ``layers["counts"]``; ATAC: binary ``X``, ``layers["prob"]``.
        """
        import anndata as ad

        req = _requested(labels, self.groupby)
        rng = np.random.default_rng(seed)
        obs = self._obs(req, "ctmean")
        out = {}
        for name, p in self.params_.items():
            _check_known(req, p)
            blocks, probs, order = [], [], []
            for ct in np.unique(req):
                idx = np.flatnonzero(req == ct)
                mu, lib = p[ct]
                if name == "rna":
                    libs = rng.choice(lib, size=len(idx), replace=True)
                    blocks.append(sp.csr_matrix(rng.poisson(libs[:, None] * mu[None, :]).astype(np.float32)))
                else:
                    pr = np.broadcast_to(mu, (len(idx), mu.size))
                    blocks.append(sp.csr_matrix((rng.random(pr.shape) < pr).astype(np.float32)))
                    probs.append(np.asarray(pr, dtype=np.float32))
                order.append(idx)
            inv = np.argsort(np.concatenate(order))
            X = sp.vstack(blocks).tocsr()[inv]
            a = ad.AnnData(X, obs=obs.copy(), var=self.var_[name].copy())
            if name == "rna":
                a.layers["counts"] = X.copy()
            else:
                a.layers["prob"] = np.vstack(probs)[inv]
            out[name] = a
        return _assemble(out, self.single_)


class ResampleBaseline(_GeneratorBase):
    """Generate cells by resampling training cells of the asked type (with replacement).

    Parameters
    ----------
    groupby
        Cell-type column of the training obs.
    modality
        For an AnnData (single modality) input: ``"rna"`` or ``"atac"``.
    """

    def fit(self, data) -> "ResampleBaseline":
        """Keep the training cells (MuData with ``rna``/``atac``, or one AnnData)."""
        mods = self._fit_common(data)
        self.X_ = {k: _to_csr(counts_of(data, k)) for k in mods}
        a0 = next(iter(mods.values()))
        self.labels_ = group_labels(data, self.groupby, adata=a0, what="training data")
        return self

    def generate(self, labels, *, seed: int = 0, **_: Any):
        """Draw one training cell per entry of ``labels[groupby]`` (seeded).

        Returns
        -------
        MuData or AnnData
            Same layout as :meth:`CellTypeMeanBaseline.generate`; ``obs["source_cell"]`` names
            the training cell copied.
        """
        import anndata as ad

        req = _requested(labels, self.groupby)
        _check_known(req, set(self.labels_))
        rng = np.random.default_rng(seed)
        pick = np.empty(len(req), dtype=int)
        for ct in np.unique(req):
            idx = np.flatnonzero(req == ct)
            pick[idx] = rng.choice(np.flatnonzero(self.labels_ == ct), size=len(idx), replace=True)
        obs = self._obs(req, "resample")
        obs["source_index"] = pick
        out = {}
        for name, X in self.X_.items():
            Xg = X[pick]
            a = ad.AnnData(Xg, obs=obs.copy(), var=self.var_[name].copy())
            if name == "rna":
                a.layers["counts"] = Xg.copy()
            else:
                Xg = binarise(Xg)
                a.X = Xg
                a.layers["prob"] = Xg.toarray()
            out[name] = a
        return _assemble(out, self.single_)


class _TranslatorBase:
    #: one point prediction: ``translate`` takes no ``readout=`` (:class:`~scdiffx_grn.eval.Translator`)
    translation_readouts: tuple[str, ...] = ()

    def __init__(self, n_comps: int = 30, seed: int = 0):
        self.n_comps = n_comps
        self.seed = seed

    def fit(self, mdata) -> "_TranslatorBase":
        """Fit both directions on training cells (MuData with ``rna`` and ``atac`` counts)."""
        if not hasattr(mdata, "mod") or not {"rna", "atac"} <= set(mdata.mod):
            raise InputDataError("translators are fitted on a MuData with 'rna' and 'atac' modalities")
        rna, atac = mdata.mod["rna"], mdata.mod["atac"]
        if not (pd.Index(rna.obs_names) == pd.Index(atac.obs_names)).all():
            raise InputDataError("rna and atac hold different cells")
        self.spaces_ = {m: FeatureSpace(m, n_comps=self.n_comps, seed=self.seed, layer=counts_layer(mdata, m))
                        .fit(mdata.mod[m]) for m in MODALITIES}
        self.emb_ = {m: self.spaces_[m].transform(mdata.mod[m]) for m in MODALITIES}
        self.targets_ = {"rna": lognormalise(counts_of(mdata, "rna")), "atac": binarise(counts_of(mdata, "atac"))}
        self.var_ = {"rna": rna.var.copy(), "atac": atac.var.copy()}
        self._fit_maps()
        return self

    def _fit_maps(self) -> None:  # pragma: no cover - overridden
        pass

    def translate(self, mdata, direction: str = "atac->rna", n_samples: int | None = None,
                  seed: int | None = None, **_: Any):
        """Predict the target modality of each cell of ``mdata`` from its source modality.

        Parameters
        ----------
        mdata
            MuData holding the source modality (the target may be absent).
        direction
            ``"atac->rna"`` (X = log-normalised expression) or ``"rna->atac"`` (X = probability).
        n_samples, seed
            Accepted for API compatibility; the baselines are deterministic.

        Returns
        -------
        anndata.AnnData
            Aligned to ``mdata.obs_names``.
        """
        import anndata as ad

        if not hasattr(self, "emb_"):
            raise ScdxError(f"{type(self).__name__} is not fitted: call fit(train_mdata) first")
        src, tgt = split_direction(direction)
        a = mdata.mod[src] if hasattr(mdata, "mod") else mdata
        z = self.spaces_[src].transform(a, layer=counts_layer(mdata, src))
        P = np.asarray(self._predict(z, src, tgt), dtype=np.float32)
        if tgt == "atac":
            np.clip(P, 0.0, 1.0, out=P)  # float rounding of averages
        return ad.AnnData(P, obs=pd.DataFrame(index=pd.Index(a.obs_names)), var=self.var_[tgt].copy())


class KNNTranslator(_TranslatorBase):
    """Translate by averaging the target modality of the k nearest training cells.

    Parameters
    ----------
    k
        Neighbours in the source embedding (PCA of RNA or LSI of ATAC, fitted on training cells).
    n_comps
        Components of the embedding.
    seed
        Seed of the SVD / PCA.
    """

    def __init__(self, k: int = 15, n_comps: int = 30, seed: int = 0):
        super().__init__(n_comps=n_comps, seed=seed)
        self.k = k

    def _fit_maps(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.nn_ = {m: NearestNeighbors(n_neighbors=int(min(self.k, e.shape[0]))).fit(e)
                    for m, e in self.emb_.items()}

    def _predict(self, z, src, tgt):
        _, idx = self.nn_[src].kneighbors(z)
        n, k = idx.shape
        W = sp.csr_matrix((np.full(n * k, 1.0 / k, np.float32), idx.ravel(), np.arange(0, n * k + 1, k)),
                          shape=(n, self.targets_[tgt].shape[0]))
        return (W @ self.targets_[tgt]).toarray()


class RidgeTranslator(_TranslatorBase):
    """Ridge regression from the source embedding to every target feature.

    Parameters
    ----------
    alpha
        L2 penalty.
    clip
        ATAC probabilities are clipped to ``[clip, 1 - clip]``.
    n_comps
        Components of the source embedding.
    seed
        Seed of the SVD / PCA.
    """

    def __init__(self, alpha: float = 1.0, clip: float = 1e-4, n_comps: int = 30, seed: int = 0):
        super().__init__(n_comps=n_comps, seed=seed)
        self.alpha = alpha
        self.clip = clip

    def _fit_maps(self) -> None:
        self.coef_ = {}
        for src, tgt in map(split_direction, DIRECTIONS):
            Z = self.emb_[src]
            Y = self.targets_[tgt]
            zbar = Z.mean(0)
            Zc = Z - zbar
            ybar = np.asarray(Y.mean(0)).ravel()
            G = Zc.T @ Zc + self.alpha * np.eye(Z.shape[1])
            ZtY = np.asarray((Y.T @ Zc).T)  # Zc^T (Y - ybar) == Zc^T Y since Zc is centred
            B = np.linalg.solve(G, ZtY)
            self.coef_[src] = (zbar, ybar, B)

    def _predict(self, z, src, tgt):
        zbar, ybar, B = self.coef_[src]
        P = ybar[None, :] + (z - zbar) @ B
        if tgt == "atac":
            P = np.clip(P, self.clip, 1 - self.clip)
        else:
            P = np.maximum(P, 0.0)
        return P


def memorisation_distance(generated, train, test, *, modality: str = "rna",
                          feature_space: FeatureSpace | None = None, balance: bool = True,
                          seed: int = 0, layer: str | None = ..., generated_layer: str | None = None) -> pd.DataFrame:
    """Distance of each generated cell to its nearest training cell vs nearest test cell.

    A model that memorises its training data puts generated cells much closer to training
    cells than to held-out test cells of the same distribution (``ratio`` << 1,
    ``closer_to_train`` mostly True); a model that generalises gives ratios near 1 and
    ``closer_to_train`` near 0.5.

    Parameters
    ----------
    generated, train, test
        AnnData of one modality (counts, or binary / probabilities for ATAC): real cells in
        ``layers[layer]``, generated ones in ``X`` (``layers[generated_layer]``).
    modality
        ``"rna"`` or ``"atac"``.
    feature_space
        Embedding (default: fitted on the test cells).
    balance
        Subsample the larger of train / test (seeded) so both reference sets have the same
        size; otherwise the larger set is closer by chance.
    seed
        Seed of the subsampling and Bernoulli draws.
    layer
        Layer of the training / test counts (default: the feature space's, ``"counts"`` for a new
        one); a missing layer raises.
    generated_layer
        Layer of the generated values (default ``None``: ``X``).

    Returns
    -------
    pandas.DataFrame
        Indexed by generated obs_names: ``d_train``, ``d_test``, ``ratio`` (= d_train / d_test)
        and ``closer_to_train`` (balanced reference sets), ``d_train_all`` (nearest cell among
        all training cells) and ``is_copy`` (an exact copy of a training cell: ``d_train_all`` within
        the floating-point rounding bound of the two cells' projections,
        :meth:`FeatureSpace.transform_with_error`, derived from the embedding dtype's eps and the
        cells' norms, so it holds on any CPU / BLAS / thread count; a cell one count away is not a copy).
    """
    from sklearn.neighbors import NearestNeighbors

    check_option("modality", modality, MODALITIES)
    fs = (feature_space if feature_space is not None
          else FeatureSpace(modality, layer="counts" if layer is ... else layer).fit(test))
    e_tr, err_tr = fs.transform_with_error(train, seed=seed, layer=layer)
    e_te = fs.transform(test, seed=seed, layer=layer)
    e_g, err_g = fs.transform_with_error(generated, seed=seed, layer=generated_layer)

    def nearest(ref):
        """Index of and distance to each generated cell's nearest cell of ``ref``; the distance is
        recomputed directly (float64), not by the |a|^2 - 2ab + |b|^2 expansion of the search."""
        j = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(e_g, return_distance=False)[:, 0]
        diff = e_g.astype(np.float64) - ref[j].astype(np.float64)
        return j, np.sqrt(np.einsum("ij,ij->i", diff, diff))

    j_all, d_all = nearest(e_tr)
    if balance:
        rng = np.random.default_rng(seed)
        n = min(len(e_tr), len(e_te))
        e_tr = e_tr[np.sort(rng.choice(len(e_tr), n, replace=False))]
        e_te = e_te[np.sort(rng.choice(len(e_te), n, replace=False))]
    d_tr = nearest(e_tr)[1]
    d_te = nearest(e_te)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d_te > 0, d_tr / np.where(d_te > 0, d_te, 1.0), np.where(d_tr > 0, np.inf, 1.0))
    # an exact copy embeds apart from its source cell by at most the two projections' rounding errors
    tol = err_g + err_tr[j_all]
    return pd.DataFrame({"d_train": d_tr, "d_test": d_te, "ratio": ratio, "closer_to_train": d_tr < d_te,
                         "d_train_all": d_all, "is_copy": d_all <= tol},
                        index=pd.Index(generated.obs_names))
