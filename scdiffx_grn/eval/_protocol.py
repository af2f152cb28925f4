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

from .._errors import (
    FeatureMismatchError,
    InputDataError,
    OptionError,
    ScdxError,
    _fmt_items,
)
from .._settings import logger
from .._vocab import DIRECTIONS, MODALITIES, check_option, split_direction
from ._baselines import (
    CellTypeMeanBaseline,
    KNNTranslator,
    ResampleBaseline,
    RidgeTranslator,
    memorisation_distance,
)
from ._common import (
    binarise,
    counts_layer,
    group_labels,
    is_counts,
    lognormalise,
    matrix,
    to_csr,
    translate_call_kwargs,
)
from ._metrics import (
    _corr_rows,
    auprc,
    auroc,
    energy_distance,
    ilisi,
    knn_label_transfer,
    marker_correlation,
    marker_features,
    mmd_rbf,
    one_nn_accuracy,
    pseudobulk_correlation,
    rf_auc,
    rowwise_auprc,
    rowwise_auroc,
    wasserstein,
)
from ._space import FeatureSpace

__all__ = [
    "FeatureSpace",
    "evaluate_generation",
    "evaluate_translation",
    "evaluate_model",
    "summarise_generation",
    "GENERATION_METRICS",
    "PER_CELL_TYPE_METRICS",
    "lognormalise",
    "binarise",
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
# generation
# --------------------------------------------------------------------------------------------
def _embed_metric(name: str, x, y, seed: int, k: int, max_ot: int) -> float:
    if name == "mmd":
        return mmd_rbf(x, y, seed=seed)
    if name == "w1":
        return wasserstein(x, y, p=1, max_cells=max_ot, seed=seed)
    if name == "w2":
        return wasserstein(x, y, p=2, max_cells=max_ot, seed=seed)
    if name == "energy":
        return energy_distance(x, y, seed=seed)
    if name == "1nn_acc":
        return one_nn_accuracy(x, y, seed=seed)
    if name == "rf_auc":
        return rf_auc(x, y, seed=seed)
    if name == "ilisi":
        return ilisi(x, y, k=k, seed=seed)
    raise OptionError(f"unknown metric {name!r}")


def _set_metrics(names, ex, ey, fx, fy, seed, k, max_ot) -> dict[str, float]:
    out = {}
    for name in names:
        if name in _EMBED_METRICS:
            out[name] = _embed_metric(name, ex, ey, seed, k, max_ot)
    if "pb_pearson" in names or "pb_spearman" in names:
        r, rho = pseudobulk_correlation(fx, fy)
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
                        max_ot_cells: int = 2000, layer: str | None = ...,
                        generated_layer: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare generated cells with real ones (CFGen protocol; see the module docstring).

    Parameters
    ----------
    real, generated
        AnnData of one modality: real counts in ``layers[layer]``, generated values in
        ``X`` (``layers[generated_layer]``); generated ATAC may hold probabilities in
        ``layers["prob"]`` and a binary ``X``.
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
    layer
        Layer of the real cells' counts (``None``: ``X``); default: the feature space's layer
        (``"counts"`` for a new one). A missing layer raises.
    generated_layer
        Layer of the generated cells' values (default ``None``: ``X``, where generators put them).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Tidy table ``metric, cell_type ("all" pooled), seed, value, modality`` and its summary
        (:func:`summarise_generation`).
    """
    metrics = list(GENERATION_METRICS if metrics is None else metrics)
    unknown = sorted(set(metrics) - set(GENERATION_METRICS))
    if unknown:
        raise OptionError(f"unknown metrics {_fmt_items(unknown)}; known: {_fmt_items(GENERATION_METRICS)}")
    pct = [m for m in (PER_CELL_TYPE_METRICS if per_cell_type_metrics is None else per_cell_type_metrics)
           if m in metrics]
    check_option("modality", modality, MODALITIES)
    if n_cells is not None:
        from .._validate import check_count

        check_count("n_cells", n_cells, 1)
    if feature_space is None:
        feature_space = FeatureSpace(modality, layer="counts" if layer is ... else layer).fit(real)
    elif feature_space.modality != modality:
        raise OptionError(f"feature_space is for {feature_space.modality!r}, not {modality!r}")
    lab_r = group_labels(real, groupby, what="real cells")
    lab_g = group_labels(generated, groupby, what="generated cells")
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
        er = feature_space.transform(real[ir], seed=seed, layer=layer)
        eg = feature_space.transform(generated[ig], seed=seed, layer=generated_layer)
        fr = feature_space.features(real[ir], seed=seed, layer=layer) if need_features else None
        fg = feature_space.features(generated[ig], seed=seed, layer=generated_layer) if need_features else None
        lr, lg = lab_r[ir], lab_g[ig]

        for name, v in _set_metrics(metrics, er, eg, fr, fg, seed, k, max_ot_cells).items():
            rows.append((name, "all", seed, v))
        if groupby and ("knn_acc" in metrics or "knn_f1" in metrics):
            acc, f1 = knn_label_transfer(er, lr, eg, lg)
            if "knn_acc" in metrics:
                rows.append(("knn_acc", "all", seed, acc))
            if "knn_f1" in metrics:
                rows.append(("knn_f1", "all", seed, f1))
        if groupby and "marker_corr" in metrics:
            if markers is None:  # markers from all real cells, once
                markers = marker_features(feature_space.features(real, layer=layer).toarray(), lab_r)
            for ct, v in marker_correlation(fr.toarray(), lr, fg.toarray(), lg, markers=markers).items():
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
        cell_r[i: i + len(r)] = _corr_rows(a, b)
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
                         max_cells: int | None = 2000, max_pooled: int = 2_000_000,
                         layer: str | None = "counts") -> pd.DataFrame:
    """Paired translation metrics of predicted vs observed cells.

    Parameters
    ----------
    observed
        AnnData of the target modality with counts in ``layers[layer]``.
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
    layer
        Layer of ``observed`` holding its counts (``None``: ``X``); a missing layer raises.

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
    check_option("modality", modality, MODALITIES)
    _check_aligned(observed, predicted)
    common = pd.Index(observed.var_names).intersection(pd.Index(predicted.var_names), sort=False)
    if len(common) == 0:
        raise FeatureMismatchError("observed and predicted share no features (var_names)")
    if len(common) < predicted.n_vars:
        logger.warning("evaluate_translation: %d predicted features not observed are ignored",
                       predicted.n_vars - len(common))
    io = pd.Index(observed.var_names).get_indexer(common)
    ip = pd.Index(predicted.var_names).get_indexer(common)
    Xo = matrix(observed, layer, what="observed")
    P = predicted.X
    P = P.toarray() if sp.issparse(P) else np.asarray(P)
    P = np.asarray(P[:, ip], dtype=np.float32)
    if not np.isfinite(P).all():
        raise InputDataError("predicted holds non-finite values")
    labels = group_labels(observed, groupby, what="observed cells")
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
        if is_counts(P):
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
        O = binarise(to_csr(Xo)[:, io])
        for ct, r in groups:
            y = O[r].toarray()
            p = P[r]
            ca, cp = rowwise_auroc(y, p), rowwise_auprc(y, p)
            yf, pf = y.ravel(), p.ravel()
            if yf.size > max_pooled:
                pick = rng.choice(yf.size, size=max_pooled, replace=False)
                yf, pf = yf[pick], pf[pick]
            out += [("cell_auroc_mean", ct, _nanstat(ca, np.mean)), ("cell_auroc_median", ct, _nanstat(ca, np.median)),
                    ("cell_auprc_mean", ct, _nanstat(cp, np.mean)), ("cell_auprc_median", ct, _nanstat(cp, np.median)),
                    ("auroc_pooled", ct, auroc(yf, pf)), ("auprc_pooled", ct, auprc(yf, pf))]
    tidy = pd.DataFrame(out, columns=["metric", "cell_type", "value"])
    tidy.insert(2, "seed", int(seed))
    if distribution:
        import anndata as ad

        obs = pd.DataFrame({groupby: labels}, index=pd.Index(observed.obs_names)) if groupby else None
        obs = obs if obs is not None else pd.DataFrame(index=pd.Index(observed.obs_names))
        pred_ad = ad.AnnData(P, obs=obs, var=pd.DataFrame(index=common))
        obs_ad = ad.AnnData(to_csr(Xo)[:, io], obs=obs.copy(), var=pd.DataFrame(index=common))
        # both hold their values in X
        fs = feature_space if feature_space is not None else FeatureSpace(modality, layer=None).fit(obs_ad)
        dist, _ = evaluate_generation(obs_ad, pred_ad, groupby=groupby, modality=modality, seeds=(seed,),
                                      metrics=list(distribution_metrics), feature_space=fs,
                                      n_cells=max_cells, min_cells=min_cells, layer=None, generated_layer=None)
        tidy = pd.concat([tidy, dist.drop(columns="modality")], ignore_index=True)
    tidy["modality"] = modality
    return tidy


# --------------------------------------------------------------------------------------------
# model vs baselines
# --------------------------------------------------------------------------------------------
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


def model_split(model, mdata) -> np.ndarray | None:
    """The train / val / test split a model carries (``model.setup["split"]``), for ``mdata``'s cells.

    A checkpoint trained by ``analyses/train_model.py`` stores the names of its held-out cells
    (``test_cells``, ``val_cells``); every other cell of its training data was a training cell.

    Parameters
    ----------
    model
        A model (``ScDiffusionX`` or any object with a ``setup`` dict); one without a stored
        split gives ``None``.
    mdata
        The data (MuData / AnnData) whose cells are labelled.

    Returns
    -------
    numpy.ndarray or None
        ``"test"``, ``"val"`` or ``"train"`` per cell of ``mdata`` (object array), or ``None`` when the
        model carries no split.
    """
    setup = getattr(model, "setup", None)
    stored = setup.get("split") if isinstance(setup, Mapping) else None
    if not isinstance(stored, Mapping) or stored.get("test_cells") is None:
        return None
    names = pd.Index(mdata.obs_names.astype(str))
    out = np.full(len(names), "train", dtype=object)
    out[names.isin([str(c) for c in stored.get("val_cells") or ()])] = "val"
    out[names.isin([str(c) for c in stored["test_cells"]])] = "test"
    return out


def evaluate_model(model, mdata, *, split_key: str = "split", test_value: str = "test",
                   train_value: str | None = None, groupby: str = "cell_type", seeds: Sequence[int] = (0,),
                   n_samples: int = 5, generate_kwargs: Mapping[str, Any] | None = None,
                   translate_kwargs: Mapping[str, Any] | None = None,
                   baselines: bool | Mapping[str, Any] = True, tasks: Sequence[str] = ("generation", "translation"),
                   metrics: Sequence[str] | None = None, per_cell_type_metrics: Sequence[str] | None = None,
                   n_cells: int | None = None, memorisation: bool = True,
                   feature_space_fit: str = "train", use_model_split: bool = True) -> pd.DataFrame:
    """Evaluate a trained model and baselines on the test split, in one tidy table.

    Generation: as many cells per cell type as the test split has are generated with
    ``model.generate({groupby: labels}, seed=seed, **generate_kwargs)`` and compared with the
    test cells for RNA and ATAC (:func:`evaluate_generation`, feature spaces fitted on the test
    cells). Translation: ``model.translate(test, direction=d, seed=seed)`` for both directions
    (the posterior-mean readout of models that declare one, :class:`~scdiffx_grn.eval.Translator`;
    ``translate_kwargs={"readout": "samples"}`` scores the latent mean of ``n_samples`` samples
    instead), scored with
    :func:`evaluate_translation`. Baselines are fitted on the
    training cells and evaluated identically. Memorisation (``mem_*`` metrics) compares
    generated cells' distance to the nearest training vs test cell.

    Parameters
    ----------
    model
        Object with the model contract's ``generate`` / ``translate`` (see ARCHITECTURE.md); its
        ``translation_readouts`` (:class:`~scdiffx_grn.eval.Translator`) say whether ``translate``
        takes ``readout=`` (``ScDiffusionX``: ``("mean", "samples")``) or ``n_samples=``.
    mdata
        MuData with ``rna`` and ``atac`` (counts), ``split_key`` and ``groupby`` columns.
    split_key, test_value, train_value
        Test cells are ``split == test_value``; training cells ``split == train_value`` (default:
        every non-test cell). Not used when the model carries its own split (``use_model_split``).
    groupby
        Cell-type column.
    seeds
        Generation / translation seeds (one repetition each).
    n_samples
        ``n_samples=`` of translators that declare no readouts, and of ``readout="samples"``.
    generate_kwargs, translate_kwargs
        Extra arguments of the model's ``generate`` / ``translate`` (sampler, n_steps, guidance...).
    baselines
        ``True`` (cell-type mean, resampling, kNN and ridge translators), ``False``, or a mapping
        name -> fitted object with ``generate`` and/or ``translate`` (a :class:`~scdiffx_grn.eval.Translator`).
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
    use_model_split
        When the model carries the split it was trained with (``model.setup["split"]``, see
        :func:`model_split`), its test cells are the test cells and its training cells the baselines'
        training cells, whatever ``mdata[split_key]`` says (a fresh split of a subsample would put the
        model's training cells among the "held-out" ones); data holding none of its test cells raise.
        ``False`` uses ``mdata[split_key]``: only for data the model never saw.
    memorisation
        Add the ``mem_frac_closer_train`` / ``mem_median_ratio`` / ``mem_frac_copies`` metrics of
        generated RNA cells (:func:`~scdiffx_grn.eval.memorisation_distance`).

    Returns
    -------
    pandas.DataFrame
        ``method, task, modality, metric, cell_type, seed, value``; summarise with
        :func:`scdiffx_grn.eval.summarise`.
    """
    from .._validate import check_count

    check_option("feature_space_fit", feature_space_fit, ("train", "test"))
    check_count("n_samples", n_samples, 1)
    if n_cells is not None:
        check_count("n_cells", n_cells, 1)
    for s in seeds:
        check_count("seeds", s)
    stored = model_split(model, mdata) if use_model_split else None
    if stored is not None:
        n_stored = len(model.setup["split"]["test_cells"])
        test_mask, train_mask = stored == "test", stored == "train"
        if not test_mask.any():
            raise InputDataError(
                f"the model carries the split it was trained with ({n_stored} test cells, e.g. "
                f"{_fmt_items(model.setup['split']['test_cells'], 3)}) and none of them is in the data: evaluate on "
                "data that holds its held-out cells, or, for data the model never saw, pass use_model_split=False "
                "(CLI: --no-model-split) to use the data's split column")
        if mdata.obs.get(split_key) is not None:
            theirs = mdata.obs[split_key].astype(str).to_numpy() == str(test_value)
            n_train_as_test = int((theirs & train_mask).sum())
            if n_train_as_test:
                logger.warning(f"{n_train_as_test} cells marked {split_key!r} == {test_value!r} in the data are the "
                               "model's training cells; evaluating on the model's stored split instead")
        logger.info(f"evaluating on the model's stored split: {int(test_mask.sum())} of its {n_stored} test cells "
                    f"are in the data, {int(train_mask.sum())} training cells")
    else:
        split = group_labels(mdata, split_key)
        test_mask = split == str(test_value)
        train_mask = (split == str(train_value)) if train_value is not None else ~test_mask
    if test_mask.sum() == 0:
        raise InputDataError(f"no test cells: no {split_key!r} == {test_value!r}; values: {_fmt_items(np.unique(split))}")
    if train_mask.sum() == 0 and baselines is not False:
        raise InputDataError("no training cells to fit the baselines on")
    test = _subset(mdata, test_mask)
    train = _subset(mdata, train_mask) if train_mask.any() else None
    test_labels = group_labels(test, groupby)
    for name in MODALITIES:
        test.mod[name].obs[groupby] = test_labels
    layers = {m: counts_layer(mdata, m) for m in MODALITIES}
    fit_ref = train if (feature_space_fit == "train" and train is not None) else test
    spaces = {m: FeatureSpace(m, layer=layers[m]).fit(fit_ref.mod[m]) for m in MODALITIES}

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
                for m in MODALITIES:
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
        for direction in DIRECTIONS:
            tgt = split_direction(direction)[1]
            fs = spaces[tgt]
            for name, obj in methods.items():
                if not hasattr(obj, "translate"):
                    continue
                for seed in seeds:
                    # by its declared readouts (eval.Translator): the posterior mean of a model that has one,
                    # unless samples are asked for; n_samples for a translator with one point prediction
                    kw = translate_call_kwargs(obj, translate_kwargs if name == "model" else None, n_samples)
                    pred = obj.translate(test, direction=direction, seed=int(seed), **kw)
                    t = evaluate_translation(test.mod[tgt], pred, modality=tgt, groupby=groupby, seed=int(seed),
                                             feature_space=fs, layer=layers[tgt])
                    t["modality"], t["method"], t["task"] = direction, name, "translation"
                    parts.append(t)
    if not parts:
        return pd.DataFrame(columns=["method", "task", "modality", "metric", "cell_type", "seed", "value"])
    table = pd.concat(parts, ignore_index=True)
    return table[["method", "task", "modality", "metric", "cell_type", "seed", "value"]]
