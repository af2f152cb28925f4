"""Train / validation / test splits and stratified subsampling."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError
from .._registry import labels
from .._settings import settings
from ._utils import is_mudata

__all__ = ["split_cells", "stratified_subsample"]

_SPLIT_NAMES = ("train", "val", "test")


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n`` proportional to ``fractions`` (largest remainder)."""
    raw = fractions * n
    cnt = np.floor(raw).astype(int)
    rest = n - cnt.sum()
    if rest > 0:
        order = np.argsort(-(raw - cnt), kind="stable")
        cnt[order[:rest]] += 1
    return cnt


def stratified_subsample(labels, n: int, seed: int | None = None) -> np.ndarray:
    """Indices of ``n`` items drawn without replacement, proportionally from each label.

    Every label present gets at least one item when ``n`` >= the number of labels.

    Parameters
    ----------
    labels
        Array-like of labels (one per item); give a constant array for plain random sampling.
    n
        Number of items to draw (all items when ``n`` >= their number).
    seed
        Seed for :func:`numpy.random.default_rng` (``None`` -> ``settings.seed``).

    Returns
    -------
    numpy.ndarray
        Sorted integer indices.
    """
    from .._validate import check_count

    n = check_count("n", n)
    rng = np.random.default_rng(settings.seed if seed is None else seed)
    if labels is None:
        raise InputDataError("stratified_subsample needs one label per item (use a constant array to not stratify)")
    labels = np.asarray(labels, dtype=object)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    codes, uniq = pd.factorize(pd.Series(labels).astype(str), sort=True)
    sizes = np.bincount(codes, minlength=len(uniq))
    alloc = _allocate(n, sizes / total)
    if n >= len(uniq):  # at least one per label, taken from the largest allocations
        for g in np.flatnonzero(alloc == 0):
            donor = int(np.argmax(alloc))
            alloc[donor] -= 1
            alloc[g] += 1
    alloc = np.minimum(alloc, sizes)
    out = [rng.choice(np.flatnonzero(codes == g), size=int(alloc[g]), replace=False) for g in range(len(uniq))]
    idx = np.concatenate(out) if out else np.zeros(0, int)
    short = n - len(idx)
    if short > 0:  # caps left some unfilled: top up at random
        rest = np.setdiff1d(np.arange(total), idx)
        idx = np.concatenate([idx, rng.choice(rest, size=short, replace=False)])
    return np.sort(idx)


def split_cells(data, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int | None = 0,
                stratify: str | None = "cell_type", key_added: str = "split", copy: bool = False):
    """Assign cells to train / val / test, reproducibly and stratified by a label.

    Within each label group the cells are shuffled with ``seed`` and cut by
    ``fractions`` (largest-remainder rounding; a group of one cell goes to train).

    Parameters
    ----------
    data
        MuData or AnnData.
    fractions
        Two (train, val) or three (train, val, test) non-negative fractions summing to 1.
    seed
        Random seed (``None`` -> ``settings.seed``).
    stratify
        Label column to stratify on (looked up by :func:`scdiffx_grn._registry.labels`:
        ``obs``, then ``obs["rna:<key>"]``, then the modalities' obs), or ``None``.
    key_added
        obs column receiving the categorical ``train``/``val``/``test`` labels (written to
        ``mdata.obs`` and to every modality's obs).
    copy
        ``True``: return a modified copy, the input untouched; ``False``: modify in place, return ``None``.

    Returns
    -------
    None or MuData / AnnData
        The copy when ``copy=True``.

    Raises
    ------
    OptionError
        For invalid fractions.
    MissingLabelError
        When ``stratify`` is not a label column or has NaN.
    """
    try:
        fr = np.asarray(fractions, dtype=float)
    except (TypeError, ValueError):
        fr = np.full(1, np.nan)
    if (fr.ndim != 1 or len(fr) not in (2, 3) or not np.isfinite(fr).all() or (fr < 0).any()
            or not np.isclose(fr.sum(), 1.0)):
        raise OptionError(f"fractions must be 2 or 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    if stratify is not None:  # checked (missing column, NaN labels) before any copy
        groups = pd.Series(labels(data, stratify).to_numpy())
    if copy:
        data = data.copy()
    if stratify is None:
        groups = pd.Series(np.zeros(data.n_obs, dtype=int)).astype(str)
    rng = np.random.default_rng(settings.seed if seed is None else seed)
    out = np.empty(data.n_obs, dtype=object)
    for g in sorted(groups.unique()):
        idx = np.flatnonzero(groups.to_numpy() == g)
        idx = idx[rng.permutation(len(idx))]
        cnt = _allocate(len(idx), fr)
        if len(idx) >= 1 and cnt[0] == 0:
            cnt[int(np.argmax(cnt))] -= 1
            cnt[0] += 1
        bounds = np.concatenate([[0], np.cumsum(cnt)])
        for k in range(len(fr)):
            out[idx[bounds[k]:bounds[k + 1]]] = _SPLIT_NAMES[k]
    cat = pd.Categorical(out, categories=list(_SPLIT_NAMES[: len(fr)]))
    data.obs[key_added] = cat
    if is_mudata(data):
        for a in data.mod.values():
            a.obs[key_added] = cat
    return data if copy else None
