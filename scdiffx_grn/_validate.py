"""Input checks shared by every part of scdiffx_grn.

These helpers raise the typed errors of :mod:`scdiffx_grn._errors` with messages that
name what is wrong and where (an example value and its cell / feature position), so a
user can find the problem in their data. They are re-exported by :mod:`scdiffx_grn.pp`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import InputDataError, MissingLabelError, NotCountsError, _fmt_items

__all__ = ["check_counts", "check_finite", "check_labels", "is_counts", "check_paired"]


def _values_and_positions(X) -> tuple[np.ndarray, Any]:
    """Return the stored values of ``X`` and a function mapping a value index to (row, col)."""
    if sp.issparse(X):
        coo = X.tocoo()
        data = np.asarray(coo.data)

        def where(i: int) -> tuple[int, int]:
            return int(coo.row[i]), int(coo.col[i])

        return data, where
    arr = np.asarray(X)
    if arr.ndim == 1:
        arr = arr[None, :]
    flat = arr.ravel()
    ncol = arr.shape[1] if arr.ndim == 2 else 1

    def where(i: int) -> tuple[int, int]:
        return int(i // ncol), int(i % ncol)

    return flat, where


def _name_pos(pos: tuple[int, int], obs_names=None, var_names=None) -> str:
    r, c = pos
    rn = f"cell {obs_names[r]!r}" if obs_names is not None else f"row {r}"
    cn = f"feature {var_names[c]!r}" if var_names is not None else f"column {c}"
    return f"{rn}, {cn}"


def check_finite(X, name: str = "X", *, obs_names: Sequence | None = None,
                 var_names: Sequence | None = None) -> None:
    """Raise :class:`~scdiffx_grn.InputDataError` if ``X`` holds NaN or infinite values.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix (cells x features).
    name
        What ``X`` is, used in the message (e.g. ``"rna layers['counts']"``).
    obs_names, var_names
        Optional row / column names, so the message names the cell and feature.

    Raises
    ------
    InputDataError
        With the number of non-finite entries and the first one's position.
    """
    data, where = _values_and_positions(X)
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        n_nan = int(np.isnan(data).sum())
        raise InputDataError(
            f"{name} holds {int(bad.sum())} non-finite values ({n_nan} NaN, "
            f"{int(bad.sum()) - n_nan} inf); first one {data[i].item()!r} at "
            f"{_name_pos(where(i), obs_names, var_names)}. Remove or impute them first."
        )


def is_counts(X) -> bool:
    """Whether ``X`` holds only finite, non-negative integer values.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix.

    Returns
    -------
    bool
        ``True`` for raw counts (any integer or float dtype holding whole numbers).
    """
    data, _ = _values_and_positions(X)
    if data.size == 0:
        return True
    if data.dtype.kind == "b":
        return True
    if data.dtype.kind in "iu":
        return bool((data >= 0).all())
    if not np.isfinite(data).all():
        return False
    return bool((data >= 0).all() and (data == np.round(data)).all())


def check_counts(X, name: str = "X", *, obs_names: Sequence | None = None,
                 var_names: Sequence | None = None) -> None:
    """Raise :class:`~scdiffx_grn.NotCountsError` unless ``X`` holds raw counts.

    Raw counts are finite, non-negative whole numbers (in any numeric dtype).

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix (cells x features).
    name
        What ``X`` is, used in the message.
    obs_names, var_names
        Optional row / column names, so the message names the cell and feature.

    Raises
    ------
    InputDataError
        If ``X`` holds NaN or inf (see :func:`check_finite`).
    NotCountsError
        If ``X`` has negative or non-integer values; the message gives how many, an
        example value and its position.
    """
    check_finite(X, name, obs_names=obs_names, var_names=var_names)
    data, where = _values_and_positions(X)
    if data.dtype.kind in "bu" or data.size == 0:
        return
    neg = data < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise NotCountsError(
            f"{name} is not raw counts: {int(neg.sum())} negative values, e.g. {data[i].item()!r} at "
            f"{_name_pos(where(i), obs_names, var_names)}. Pass the raw count matrix "
            "(e.g. layers['counts']), not scaled or centred data."
        )
    if data.dtype.kind == "f":
        frac = data != np.round(data)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise NotCountsError(
                f"{name} is not raw counts: {int(frac.sum())} of {data.size} stored values are "
                f"not integers, e.g. {float(data[i])!r} at {_name_pos(where(i), obs_names, var_names)}. "
                "It looks normalised or log-transformed; pass the raw count matrix "
                "(e.g. layers['counts']) or load with require_counts=False."
            )


def check_labels(data, keys: str | Iterable[str], *, allow_nan: bool = False) -> None:
    """Raise :class:`~scdiffx_grn.MissingLabelError` if label columns are missing or have NaN.

    Parameters
    ----------
    data
        A MuData / AnnData (its ``.obs`` is checked) or an obs DataFrame.
    keys
        Column name(s) that must be present.
    allow_nan
        Accept missing values in the columns.

    Raises
    ------
    MissingLabelError
        Naming the missing columns (and the available ones), or the columns with NaN
        labels with example cells.
    """
    obs = data if isinstance(data, pd.DataFrame) else data.obs
    keys = [keys] if isinstance(keys, str) else list(keys)
    missing = [k for k in keys if k not in obs.columns]
    if missing:
        raise MissingLabelError(
            f"label column(s) {_fmt_items(missing)} not found in obs; available columns: "
            f"{_fmt_items(obs.columns, limit=20) or '(none)'}"
        )
    if allow_nan:
        return
    problems = []
    for k in keys:
        na = pd.isna(obs[k]).to_numpy()
        if na.any():
            problems.append(f"{k!r}: {int(na.sum())} cells, e.g. {_fmt_items(obs.index[na], limit=3)}")
    if problems:
        raise MissingLabelError("missing (NaN) labels in " + "; ".join(problems))


def check_paired(mdata, modalities: Sequence[str] = ("rna", "atac")) -> None:
    """Check that a MuData holds the given modalities with the same cells in the same order.

    Parameters
    ----------
    mdata
        A :class:`mudata.MuData`.
    modalities
        Modality names that must be present.

    Raises
    ------
    InputDataError
        If a modality is missing.
    BarcodeMismatchError
        If the modalities' obs_names differ (set or order).
    """
    from ._errors import BarcodeMismatchError

    mods = getattr(mdata, "mod", None)
    if mods is None:
        raise InputDataError(f"expected a MuData with modalities {list(modalities)}, got {type(mdata).__name__}")
    missing = [m for m in modalities if m not in mods]
    if missing:
        raise InputDataError(f"MuData lacks modality {_fmt_items(missing)}; it has {_fmt_items(mods)}")
    for m in modalities:  # duplicated barcodes would pair cells ambiguously
        names = mods[m].obs_names
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            raise BarcodeMismatchError(
                f"modality {m!r} has {len(dup)} duplicated cell barcodes: {_fmt_items(dup)}; "
                "make them unique (e.g. prefix the sample) before pairing"
            )
    ref = mods[modalities[0]].obs_names
    for m in modalities[1:]:
        other = mods[m].obs_names
        if len(other) != len(ref) or not (other == ref).all():
            only_a = ref.difference(other)
            only_b = other.difference(ref)
            raise BarcodeMismatchError(
                f"modalities {modalities[0]!r} ({len(ref)} cells) and {m!r} ({len(other)} cells) do "
                f"not hold the same cells in the same order; {len(only_a)} only in {modalities[0]!r} "
                f"(e.g. {_fmt_items(only_a, 3)}), {len(only_b)} only in {m!r} (e.g. {_fmt_items(only_b, 3)})"
            )
