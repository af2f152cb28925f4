"""Does a model's translation use the modality it is given? (a check to run before trusting GRNs).

Peak -> gene scores from a model (attention, integrated gradients, peak knockout) are only as
informative as the model's dependence of the translated modality on the observed one. This
diagnostic translates a set of cells twice, once from their own source modality and once after
the source profiles were shuffled between cells, and compares the two against the observed
target modality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputDataError, MissingLabelError, ScdxError, _fmt_items

__all__ = ["source_dependence"]


def _target_values(adata, mod: str, layer: str | None) -> np.ndarray:
    import scipy.sparse as sp

    X = adata.layers[layer] if layer is not None and layer in adata.layers else adata.X
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    X = X.astype(np.float64)
    if mod == "rna":
        tot = X.sum(1, keepdims=True)
        return np.log1p(X / np.maximum(tot, 1e-12) * 1e4)
    return (X > 0).astype(np.float64)


def source_dependence(model, mdata, *, direction: str = "atac->rna", groupby: str = "cell_type",
                      cells=None, n_cells: int | None = 1000, sampler: str = "ddim", n_steps: int = 20,
                      n_pcs: int = 30, seed: int = 0) -> dict:
    """Translate cells from their own and from shuffled source profiles; compare with the observed target.

    A classifier (logistic regression on ``n_pcs`` principal components of the observed target
    modality: log1p CP10k RNA or binarised ATAC) is fitted on the cells not in the evaluated
    subsample (all cells when there are fewer than 50 of them) and labels three versions of
    the subsample: the observed target, the translation from each cell's own source profile,
    and the translation after the source profiles were permuted between cells (seeded). A
    model that uses its input gives ``accuracy_translated`` well above
    ``accuracy_shuffled_source`` and a higher per-cell agreement with the observed target
    (Pearson for RNA, AUROC for ATAC) for its own source than for a shuffled one.

    Parameters
    ----------
    model
        A trained paired :class:`~scdiffx_grn.ScDiffusionX`.
    mdata
        MuData with both modalities (the model's features) and the ``groupby`` label.
    direction
        ``"atac->rna"`` or ``"rna->atac"``.
    groupby
        Label used by the classifier (labels are *not* given to the translation).
    cells
        The cells to evaluate (boolean mask or integer positions, e.g. a held-out split);
        overrides ``n_cells``. The classifier is fitted on the other cells.
    n_cells
        Cells evaluated when ``cells`` is not given (random subsample; ``None``: all).
    sampler, n_steps
        Translation sampler.
    n_pcs
        Principal components of the classifier's feature space.
    seed
        Seed of the subsample, the permutation and the translation noise.

    Returns
    -------
    dict with ``accuracy_observed``, ``accuracy_translated``, ``accuracy_shuffled_source``,
    ``majority_fraction``, ``cell_agreement_own``, ``cell_agreement_shuffled`` (mean per-cell
    Pearson / AUROC with the observed target), ``n_cells``, ``direction``.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from ._metrics import rowwise_auroc, rowwise_pearson

    if direction not in ("atac->rna", "rna->atac"):
        raise ScdxError(f"direction must be 'atac->rna' or 'rna->atac', got {direction!r}")
    src, tgt = direction.split("->")
    for m in (src, tgt):
        if m not in mdata.mod:
            raise InputDataError(f"source_dependence needs both modalities; {m!r} is missing "
                                 f"(has {_fmt_items(list(mdata.mod))})")
    if groupby in mdata.obs:
        labels = mdata.obs[groupby].astype(str).to_numpy()
    elif groupby in mdata.mod[tgt].obs:
        labels = mdata.mod[tgt].obs[groupby].astype(str).to_numpy()
    else:
        raise MissingLabelError(f"label column {groupby!r} not found; available: {_fmt_items(mdata.obs.columns)}")
    n = mdata.n_obs
    rng = np.random.default_rng(seed)
    if cells is not None:
        c = np.asarray(cells)
        sub = np.flatnonzero(c) if c.dtype == bool else np.sort(c.astype(np.int64))
        if c.dtype == bool and len(c) != n:
            raise InputDataError(f"cells mask has {len(c)} entries for {n} cells")
        if len(sub) and (sub.min() < 0 or sub.max() >= n):
            raise InputDataError(f"cell positions must be in [0, {n})")
    elif n_cells is not None and n_cells < n:
        sub = np.sort(rng.choice(n, n_cells, replace=False))
    else:
        sub = np.arange(n)
    if len(sub) < 3:
        raise InputDataError(f"need at least 3 cells, got {len(sub)}")
    rest = np.setdiff1d(np.arange(n), sub)
    ref = rest if len(rest) >= 50 else np.arange(n)

    layer = "counts" if "counts" in mdata.mod[tgt].layers else None
    Y = _target_values(mdata.mod[tgt], tgt, layer)
    pca = PCA(n_components=int(min(n_pcs, Y.shape[1] - 1, len(ref) - 1)), random_state=seed).fit(Y[ref])
    clf = LogisticRegression(max_iter=2000).fit(pca.transform(Y[ref]), labels[ref])

    part = mdata[sub].copy()
    own = np.asarray(model.translate(part, direction, sampler=sampler, n_steps=n_steps, seed=seed).X, float)
    perm = rng.permutation(len(sub))
    shuffled_in = mdata[sub[perm]].copy()
    # translation of cell i's slot from donor perm[i]; same noise index i (obs order) as ``own``
    shuf = np.asarray(model.translate(shuffled_in, direction, sampler=sampler, n_steps=n_steps, seed=seed).X,
                      float)
    y = labels[sub]
    obs = Y[sub]

    def acc(X):
        return float(np.mean(clf.predict(pca.transform(X)) == y))

    agree = rowwise_pearson if tgt == "rna" else rowwise_auroc
    return {"direction": direction, "n_cells": int(len(sub)),
            "accuracy_observed": acc(obs), "accuracy_translated": acc(own),
            "accuracy_shuffled_source": acc(shuf),
            "majority_fraction": float(pd.Series(y).value_counts(normalize=True).iloc[0]),
            "cell_agreement_own": float(np.nanmean(agree(obs, own))),
            "cell_agreement_shuffled": float(np.nanmean(agree(obs, shuf)))}
