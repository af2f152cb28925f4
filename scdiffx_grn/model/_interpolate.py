"""Gradient interpolation between two cell states (scDiffusion).

For each weight ``w`` cells are generated from the *same* noise with guidance that mixes two
states ``a`` and ``b``:

- classifier guidance (``classifier=`` a :class:`~scdiffx_grn.model.LatentClassifier`):
  ``w grad log p(a | x_t) + (1 - w) grad log p(b | x_t)``;
- classifier-free labels (the model's own conditioning): ``w eps(x_t | a) + (1 - w) eps(x_t | b)``
  (each term with the usual ``guidance_scale``).

``w = 1`` is state ``a``, ``w = 0`` state ``b``. :func:`nearest_type_fractions` scores the
result with a kNN classifier trained on real cells' RNA PCA.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, ScdxError
from .._registry import labels as registry_labels
from .._registry import layer_matrix, log_normalize
from ._classifier import classifier_guidance
from ._generate import generate_cells
from ._guidance import LabelGuidance, MixGuidance, WithConditions
from ._options import SamplingOptions
from ._schedulers import default_sampler


def _state_labels(model, state) -> dict[str, Any]:
    keys = model.config.label_keys
    if isinstance(state, Mapping):
        return dict(state)
    if not keys:
        raise ScdxError("the model has no conditioning labels: pass classifier= for classifier guidance")
    return {keys[0]: state}


def interpolate(model, state_a, state_b, weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                n_cells: int = 100, classifier=None, scale: float = 1.0, labels: Mapping | None = None,
                guidance_scale: float = 1.0, guidance_mode: str = "joint", sampler: str | None = None,
                n_steps: int = 20, seed: int = 0, **generate_kwargs):
    """Generate cells along a guidance interpolation from state ``b`` (w=0) to ``a`` (w=1).

    Parameters
    ----------
    model
        A trained :class:`~scdiffx_grn.ScDiffusionX` (diffusion or flow, paired or RNA-only).
    state_a, state_b
        With ``classifier``: two classes of ``classifier.label_key``. Otherwise model labels: a
        dict ``{label_key: value}`` or a value of the first label key.
    weights
        Mixing weights ``w`` of state ``a``.
    n_cells
        Cells per weight; every weight uses the same noise (``seed``), so the trajectories are paired.
    classifier, scale
        Classifier guidance mode and its scale.
    labels
        Classifier mode only: fixed model labels for all cells (default: unconditioned).
    guidance_scale, guidance_mode
        Classifier-free guidance of each state (label mode) or of ``labels`` (classifier mode).
    sampler, n_steps
        Default sampler: ``"dpm++"`` for diffusion, ``"euler"`` for flow models.
    **generate_kwargs
        Passed to :meth:`~scdiffx_grn.ScDiffusionX.generate` (``sample_counts``, ``batch_size``...).

    Returns
    -------
    MuData of ``len(weights) * n_cells`` cells with ``obs['interpolation_weight']``,
    ``obs['state_a']``, ``obs['state_b']``.
    """
    import anndata as ad
    import mudata as md

    if sampler is None:
        sampler = default_sampler(model.config)
    opts = SamplingOptions(sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale,
                           guidance_mode=guidance_mode, readout="samples").checked(model.config)
    weights = [float(w) for w in weights]
    if not weights:
        raise InputDataError("no interpolation weights given")
    n = int(n_cells)
    base = pd.DataFrame(index=range(n))
    outs = []
    if classifier is None:
        la, lb = _state_labels(model, state_a), _state_labels(model, state_b)
        cond_a = model.condition_indices(la, n)
        cond_b = model.condition_indices(lb, n)
    for w in weights:
        if classifier is not None:
            lab = pd.DataFrame({k: [v] * n for k, v in dict(labels or {}).items()}, index=range(n)) if labels else base
            guide = classifier_guidance(model, {classifier.label_key: (classifier, {state_a: w, state_b: 1.0 - w},
                                                                       scale)}, n,
                                        guidance_scale=opts.guidance_scale, guidance_mode=opts.guidance_mode)
        else:  # w * out(x_t | a) + (1 - w) * out(x_t | b), each with label guidance
            lab = base
            cfg_guide = LabelGuidance(opts.guidance_scale, opts.guidance_mode)
            guide = MixGuidance(WithConditions(cond_a, cfg_guide), WithConditions(cond_b, cfg_guide), w)
        g = generate_cells(model, lab, opts, seed=seed, guidance=guide, **generate_kwargs)
        outs.append((w, g))
    mods = {}
    for mod in outs[0][1].mod:
        parts = []
        for j, (w, g) in enumerate(outs):
            a = g.mod[mod].copy()
            a.obs_names = [f"w{j}_{i}" for i in range(a.n_obs)]
            a.obs["interpolation_weight"] = w
            parts.append(a)
        mods[mod] = ad.concat(parts, merge="same", uns_merge="first")
    with md.set_options(pull_on_update=False):
        out = md.MuData(mods)
    out.obs["interpolation_weight"] = mods["rna"].obs["interpolation_weight"].to_numpy()
    out.obs["state_a"] = str(state_a)
    out.obs["state_b"] = str(state_b)
    out.uns["interpolation"] = {"weights": weights, "mode": "classifier" if classifier is not None else "labels",
                                "sampler": opts.sampler, "n_steps": int(opts.n_steps), "seed": int(seed),
                                "scale": float(scale), "guidance_scale": float(guidance_scale)}
    return out


def _lognorm(X) -> np.ndarray:
    """log1p CP10k (:func:`scdiffx_grn._registry.log_normalize`) as a dense array."""
    X = log_normalize(X.to_memory() if hasattr(X, "to_memory") else X)
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def nearest_type_fractions(generated, reference, label_key: str = "cell_type", *, types: Sequence[str] | None = None,
                           n_pcs: int = 30, k: int = 15, groupby: str | None = "interpolation_weight",
                           layer: str | None = "counts", seed: int = 0) -> pd.DataFrame:
    """Fraction of generated cells whose nearest real type is each type, per ``groupby`` value.

    A kNN classifier (``k`` neighbours) is trained on the real cells' RNA (1e4 total, log1p,
    PCA with ``n_pcs`` components fitted on the real cells); generated cells are projected and
    classified.

    Parameters
    ----------
    generated, reference
        MuData (their ``rna``) or AnnData with RNA counts (``layers[layer]`` or ``X``).
    label_key
        Reference obs column with the cell types.
    types
        Restrict the reference (and so the classifier) to these types (default: all).

    groupby
        Generated-cell obs column to group by (``None``: all cells one group ``"all"``).

    Returns
    -------
    DataFrame indexed by the ``groupby`` values (sorted), one column per type (fractions sum to 1).
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier

    gen = generated.mod["rna"] if hasattr(generated, "mod") else generated
    ref = reference.mod["rna"] if hasattr(reference, "mod") else reference
    lab = registry_labels(reference, label_key, adata=ref, what="reference").to_numpy()
    genes = pd.Index(gen.var_names.astype(str))
    have = pd.Index(ref.var_names.astype(str))
    if genes.difference(have).size:
        raise InputDataError(f"{genes.difference(have).size} generated genes are missing from the reference")
    sel = np.ones(ref.n_obs, dtype=bool) if types is None else np.isin(lab, [str(t) for t in types])
    if sel.sum() < k:
        raise InputDataError(f"only {sel.sum()} reference cells of types {types}")
    Xr = layer_matrix(ref, layer, what="the reference's RNA")
    Xg = layer_matrix(gen, layer, what="the generated RNA")
    Xr = _lognorm(Xr[np.flatnonzero(sel)][:, have.get_indexer(genes)])
    Xg = _lognorm(Xg)
    pca = PCA(n_components=min(n_pcs, Xr.shape[1], Xr.shape[0] - 1), random_state=seed).fit(Xr)
    knn = KNeighborsClassifier(n_neighbors=k).fit(pca.transform(Xr), lab[sel])
    pred = knn.predict(pca.transform(Xg))
    grp = registry_labels(generated, groupby, adata=gen, what="generated data")
    num = pd.to_numeric(grp, errors="coerce")
    grp = num.to_numpy() if num.notna().all() else grp.to_numpy()  # weights stay numbers (sorted as such)
    tab = pd.crosstab(pd.Series(grp, name=groupby), pd.Series(pred, name="nearest_type"), normalize="index")
    cols = sorted(set(lab[sel]))
    return tab.reindex(columns=cols, fill_value=0.0).sort_index()
