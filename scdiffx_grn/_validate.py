"""Input checks shared by every part of scdiffx_grn.

These helpers raise the typed errors of :mod:`scdiffx_grn._errors` with messages that
name what is wrong and where (an example value and its cell / feature position), so a
user can find the problem in their data. They are re-exported by :mod:`scdiffx_grn.pp`.

``is_counts`` is the package's one count detector; the registry (:mod:`scdiffx_grn._registry`)
re-exports it, and every package reads it from there.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import InputDataError, MissingLabelError, NotCountsError, OptionError, _fmt_items

__all__ = ["check_counts", "check_finite", "check_labels", "check_paired", "check_unique_barcodes",
           "feature_mismatch_hint", "map_peak_names", "peak_key",
           "check_range", "check_probability", "check_fraction", "check_count", "check_positive",
           "symbol_case_hint"]


# ------------------------------------------------------------------------------------------------
# option values: one set of range checks, used by the library (the CLI gets them through it)
# ------------------------------------------------------------------------------------------------
def _number(name: str, value, integer: bool):
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise OptionError(f"{name} must be a{'n integer' if integer else ' number'}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a{'n integer' if integer else ' number'}, got {value!r}") from None
    if not np.isfinite(x):
        raise OptionError(f"{name} must be finite, got {value!r}")
    if integer:
        if x != round(x):
            raise OptionError(f"{name} must be a whole number, got {value!r}")
        return int(round(x))
    return x


def check_range(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, integer: bool = False):
    """Return ``value`` (as ``int`` / ``float``) or raise :class:`~scdiffx_grn.OptionError` naming the
    option, the value and the valid range (``low`` / ``high``: ``None`` for no bound; ``*_open``:
    the bound itself is excluded). NaN, inf, booleans and non-numbers are refused."""
    x = _number(name, value, integer)
    bad_low = low is not None and (x <= low if low_open else x < low)
    bad_high = high is not None and (x >= high if high_open else x > high)
    if bad_low or bad_high:
        if low is not None and high is not None:
            rng = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            rng = f"{'>' if low_open else '>='} {low:g}"
        else:
            rng = f"{'<' if high_open else '<='} {high:g}"
        kind = "an integer " if integer else ""
        raise OptionError(f"{name} must be {kind}{rng}, got {value!r}")
    return x


def check_probability(name: str, value) -> float:
    """A significance level / probability threshold: in (0, 1) (0 and 1 call nothing / everything)."""
    return check_range(name, value, 0.0, 1.0, low_open=True, high_open=True)


def check_fraction(name: str, value, *, high_open: bool = False) -> float:
    """A fraction of cells / features: in [0, 1] (``high_open``: [0, 1))."""
    return check_range(name, value, 0.0, 1.0, high_open=high_open)


def check_count(name: str, value, minimum: int = 0) -> int:
    """A whole number of cells / samples / steps / items, >= ``minimum``."""
    return check_range(name, value, minimum, None, integer=True)


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (``allow_zero``: >= 0): a scale, a width, an effect-size floor."""
    return check_range(name, value, 0.0, None, low_open=not allow_zero)


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
    """Whether ``X`` holds only finite, non-negative whole numbers (raw counts).

    The one count detector of the package. An empty matrix is counts (nothing contradicts it);
    a boolean matrix is counts (binary accessibility).
    """
    data, _ = _values_and_positions(X)
    if data.size == 0 or data.dtype.kind == "b":
        return True
    if data.dtype.kind in "iu":
        return bool((data >= 0).all())
    if data.dtype.kind not in "f":
        return False
    if not np.isfinite(data).all():
        return False
    return bool((data >= 0).all() and (data == np.round(data)).all())


_COUNTS_FIX = "pass the raw count matrix (e.g. layers['counts'])"


def check_counts(X, name: str = "X", *, obs_names: Sequence | None = None,
                 var_names: Sequence | None = None, fix: str = _COUNTS_FIX) -> None:
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
    fix
        What the user should do, ending the message (the caller knows what helps: a reader can
        load other values with ``require_counts=False``, a model cannot use them).

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
            f"{_name_pos(where(i), obs_names, var_names)}: it looks scaled or centred; {fix}."
        )
    if data.dtype.kind == "f":
        frac = data != np.round(data)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise NotCountsError(
                f"{name} is not raw counts: {int(frac.sum())} of {data.size} stored values are "
                f"not integers, e.g. {float(data[i])!r} at {_name_pos(where(i), obs_names, var_names)}. "
                f"It looks normalised or log-transformed; {fix}."
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
    check_unique_barcodes(mdata, modalities)  # duplicated barcodes would pair cells ambiguously
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


def check_unique_barcodes(mdata, modalities: Sequence[str] | None = None) -> None:
    """Raise :class:`~scdiffx_grn.BarcodeMismatchError` if a modality repeats a cell barcode.

    Parameters
    ----------
    mdata
        A :class:`mudata.MuData` (or an AnnData, checked as one modality).
    modalities
        Modalities to check (default: those of ``mdata`` that are present).
    """
    from ._errors import BarcodeMismatchError

    mods = getattr(mdata, "mod", None)
    if mods is None:
        mods = {"data": mdata}
    for m in (modalities if modalities is not None else list(mods)):
        if m not in mods:
            continue
        names = mods[m].obs_names
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            raise BarcodeMismatchError(
                f"modality {m!r} has {len(dup)} duplicated cell barcodes: {_fmt_items(dup)}; "
                "make them unique (e.g. prefix the sample: adata.obs_names = sample + '_' + adata.obs_names) "
                "before pairing"
            )


_PEAK_RE = re.compile(r"^(.+?)[:_-](\d+)[-_](\d+)$")


def peak_key(name) -> tuple[str, int, int] | None:
    """``(chrom, start, end)`` of a peak named ``chr1-100-200``, ``chr1:100-200`` or ``chr1_100_200``
    (``None`` for other names)."""
    m = _PEAK_RE.match(str(name).strip())
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def map_peak_names(data_names, model_names) -> dict[str, str]:
    """``{data name: model name}`` for the data's peaks that are the model's peaks written in another
    format (same chromosome, start and end; e.g. ``chr1:100-200`` for the model's ``chr1_100_200``)."""
    want = {}
    for n in model_names:
        k = peak_key(n)
        if k is not None:
            want.setdefault(k, str(n))
    out = {}
    for d in data_names:
        k = peak_key(d)
        if k is not None and k in want and want[k] != str(d):
            out[str(d)] = want[k]
    return out


def _peak_style(name: str) -> str:
    m = _PEAK_RE.match(name)
    if not m:
        return repr(name)
    return f"{m.group(1)}{name[len(m.group(1))]}start{name[m.end(2)]}end"


def feature_mismatch_hint(missing, data_names, modality: str) -> str:
    """A hint on why the model's features ``missing`` are not among ``data_names``: names that
    differ only in case (e.g. human-style upper-case ``GAPDH`` for a mouse model's ``Gapdh``),
    or peaks written in another format (``chr1-100-200`` / ``chr1:100-200`` / ``chr1_100_200``).
    Returns ``""`` when there is nothing to say."""
    missing = [str(x) for x in missing]
    if not missing:
        return ""
    data = [str(x) for x in data_names]
    hints = []
    low: dict[str, str] = {}
    for d in data:
        low.setdefault(d.lower(), d)
    case = [(m, low[m.lower()]) for m in missing if m.lower() in low]
    if case:
        ex = ", ".join(f"model {a!r} vs data {b!r}" for a, b in case[:3])
        style = ""
        if modality == "rna":
            up = np.mean([d.isupper() for d in data[:2000]]) if data else 0.0
            mup = np.mean([m.isupper() for m in missing[:2000]])
            if up > 0.7 and mup < 0.3:
                style = (" (the data's gene names are upper case, human style; the model's are mouse style, "
                         "e.g. 'Gapdh')")
            elif up < 0.3 and mup > 0.7:
                style = " (the model's gene names are upper case, human style; the data's are not)"
        hints.append(f"{len(case)} of them differ only in upper / lower case ({ex}){style}: rename the data's "
                     "var_names to the model's spelling (and check the organism)")
    if modality == "atac":
        mp = map_peak_names(data, missing)
        if mp:
            d, m = next(iter(mp.items()))
            hints.append(f"{len(mp)} of them are the same peaks written in another format (data {d!r} = model "
                         f"{m!r}, i.e. {_peak_style(d)} vs {_peak_style(m)}): ScDiffusionX.subset_to_model(mdata) "
                         "maps these formats, or rename the data's peaks")
        elif data and peak_key(missing[0]) is not None and not any(peak_key(d) for d in data[:1000]):
            hints.append(f"the data's peak names (e.g. {data[0]!r}) are not chrom-start-end coordinates like the "
                         f"model's ({missing[0]!r})")
    return (" Hint: " + "; ".join(hints) + ".") if hints else ""


_GENOME_OF = {"mouse": "mm10", "human": "hg38"}  # the built-in TSS annotations


def _symbol_style(names) -> str:
    up = np.mean([s.isupper() for s in list(names)[:2000]]) if len(names) else 0.0
    return "human" if up > 0.7 else ("mouse" if up < 0.3 else "mixed")


def symbol_case_hint(reference, genes, what: str, fix: str) -> str:
    """A hint when the gene symbols of a reference (a network's targets, a TSS annotation) match the
    data's ``genes`` far better ignoring case: the reference is of another organism (human ``STAT3``
    vs mouse ``Stat3``) or spells symbols in another case. ``what`` names the reference's owner
    (``"the network's"``); ``fix`` says what to do, with ``{org}`` standing for the data's organism
    (``"use the network of the data's organism (organism={org!r})"``) and ``{genome}`` for its
    built-in genome (mm10 / hg38). Returns ``""`` when there is nothing to say."""
    ref = pd.Index(pd.unique(np.asarray(list(reference), dtype=str)))
    genes = pd.Index(np.asarray(list(genes), dtype=str))
    exact = int(ref.isin(genes).sum())
    low = ref.str.lower().isin(genes.str.lower())
    n_ci = int(low.sum())
    if n_ci < max(2 * exact, exact + 10):
        return ""
    gset = set(genes)
    ex_r = next((t for t in ref[low] if t not in gset), ref[low][0])
    ex_g = genes[genes.str.lower() == ex_r.lower()][0]
    sr, sg = _symbol_style(ref), _symbol_style(genes)
    if {sr, sg} == {"human", "mouse"}:
        org = f"{what} symbols look {sr} (e.g. {ex_r!r}), the data's {sg} (e.g. {ex_g!r}): " + fix.format(org=sg, genome=_GENOME_OF.get(sg))
    else:
        org = f"the symbols differ in case ({what} {ex_r!r} vs the data's {ex_g!r}): check the organism"
    return f" {n_ci:,} of {what} {len(ref):,} genes are data genes ignoring case, {exact:,} exactly; {org}."
