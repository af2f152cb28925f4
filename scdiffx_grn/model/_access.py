"""Data access of a model: its state (trained? paired?), the data's raw-count layers, its features in
the model's order, its labels.

Functions take the model duck-typed (``rna_var_names``, ``atac_var_names``, ``setup``, ``config``)
and read the MuData only through :mod:`scdiffx_grn._registry`. The raw counts of a modality are
in the layer the data was registered with (``setup_mudata`` on that data), else in the layer the
model was trained with; a missing layer raises (it is never silently replaced by ``X``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import (
    FeatureMismatchError,
    InputDataError,
    MissingLabelError,
    OptionError,
    ScdxError,
    _fmt_items,
)
from .._registry import feature_columns, input_layer, layer_matrix
from .._registry import labels as registry_labels
from ._data import RowSource, validate_matrix

__all__ = ["require_fitted", "require_paired", "model_layer", "data_layer", "check_features", "subset_to_model",
           "model_matrix", "row_source", "label_categories", "label_indices", "labels_for", "as_csr"]


def require_paired(model, what: str) -> None:
    """Raise :class:`~scdiffx_grn.ScdxError` unless ``model`` is a paired RNA+ATAC model (``what`` needs one)."""
    if not model.config.paired:
        raise ScdxError(f"{what} needs a paired RNA+ATAC model; this is a single-modality model "
                        f"(modalities={model.config.modalities}). Train with setup_mudata(..., "
                        "modalities=('rna', 'atac')) on paired data.")


def require_fitted(model) -> None:
    """Raise :class:`~scdiffx_grn.ScdxError` unless ``model`` is trained (or loaded)."""
    if int(model.module.fitted) == 0:
        raise ScdxError("the model is not trained yet: call model.train(...) or ScDiffusionX.load(path)")


def as_csr(X) -> sp.csr_matrix:
    """``X`` (sparse, dense or backed) as float32 CSR."""
    if sp.issparse(X):
        return X.tocsr().astype(np.float32)
    if hasattr(X, "to_memory"):  # backed / lazy arrays
        X = X.to_memory()
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def model_layer(model, mod: str) -> str | None:
    """Layer of modality ``mod`` the model was registered with (``None``: ``X``; default ``"counts"``)."""
    return input_layer(None, mod, getattr(model, "setup", None) or {})


def data_layer(model, mdata, mod: str) -> str | None:
    """Layer of ``mdata``'s modality ``mod`` holding the raw counts (:func:`scdiffx_grn._registry.input_layer`)."""
    return input_layer(mdata, mod, getattr(model, "setup", None) or {})


def _layer_of(model, mdata, mod: str):
    """(raw matrix, its AnnData, a name for messages) of the raw counts of ``mod`` (:func:`data_layer`)."""
    if mod not in mdata.mod:
        raise InputDataError(f"MuData has no modality {mod!r} (modalities: {list(mdata.mod)})")
    adata = mdata.mod[mod]
    layer = data_layer(model, mdata, mod)
    X = layer_matrix(adata, layer, what=f"modality {mod!r} (register the data's raw counts with setup_mudata)")
    return X, adata, f"{mod} {'layers[%r]' % layer if layer is not None else 'X'}"


def check_features(model, mdata, modalities=("rna", "atac")) -> dict[str, np.ndarray | None]:
    """Map the data's features onto the model's: per modality, the column indexer (``None``: same order).

    Raises :class:`~scdiffx_grn.FeatureMismatchError` naming missing and unknown features.
    """
    from .._validate import check_unique_barcodes, feature_mismatch_hint

    order = {}
    for mod in modalities:
        want = model.rna_var_names if mod == "rna" else model.atac_var_names
        if mod not in mdata.mod:
            raise InputDataError(f"MuData has no modality {mod!r} (modalities: {list(mdata.mod)})")
        check_unique_barcodes(mdata, [mod])
        have = pd.Index(mdata.mod[mod].var_names.astype(str))
        missing = pd.Index(want).difference(have)
        extra = have.difference(pd.Index(want))
        if len(missing) or len(extra):
            raise FeatureMismatchError(
                f"{mod} features differ from the model's: {len(missing)} of the model's "
                f"{len(want)} features are missing from the data ({_fmt_items(missing)}) and "
                f"{len(extra)} data features are unknown to the model ({_fmt_items(extra)}). "
                "Subset / reorder the data to the model's var_names "
                f"(model.{'rna' if mod == 'rna' else 'atac'}_var_names; model.subset_to_model(mdata) does it)."
                + feature_mismatch_hint(missing, have, mod)
            )
        order[mod] = feature_columns(have, want, what=f"{mod} features")
    return order


def subset_to_model(model, mdata):
    """A copy of ``mdata`` restricted to the model's genes and peaks, in the model's order."""
    import mudata as md

    from .._settings import logger
    from .._validate import check_unique_barcodes, feature_mismatch_hint, map_peak_names

    check_unique_barcodes(mdata)
    mods = {}
    for mod in ("rna", "atac"):
        if mod not in mdata.mod:
            continue
        want = pd.Index(model.rna_var_names if mod == "rna" else model.atac_var_names)
        have = pd.Index(mdata.mod[mod].var_names.astype(str))
        missing = want.difference(have)
        renamed = None
        if len(missing) and mod == "atac":  # the same peaks written chr1-100-200 / chr1:100-200 / chr1_100_200
            mp = map_peak_names(have[~have.isin(want)], missing)
            alt = pd.Index([mp.get(h, h) for h in have])
            if mp and alt.is_unique and not len(want.difference(alt)):
                renamed, have, missing = alt, alt, want.difference(alt)
                logger.info("subset_to_model: %d peak names mapped to the model's format (e.g. %r -> %r)",
                            len(mp), *next(iter(mp.items())))
        if len(missing):
            raise FeatureMismatchError(
                f"{len(missing)} of the model's {len(want)} {mod} features are not in the data: "
                f"{_fmt_items(missing)}." + feature_mismatch_hint(missing, have, mod)
            )
        mods[mod] = mdata.mod[mod][:, have.get_indexer(want)].copy()
        if renamed is not None:
            mods[mod].var_names = want.copy()
    with md.set_options(pull_on_update=False):
        out = md.MuData(mods)
    for c in mdata.obs.columns:
        if c not in out.obs:
            out.obs[c] = mdata.obs[c].reindex(out.obs_names).to_numpy()
    out.uns.update({k: v for k, v in mdata.uns.items()})
    return out


def model_matrix(model, mdata, mod: str, order: np.ndarray | None = None) -> sp.csr_matrix:
    """The registered raw matrix of ``mod`` (validated), as CSR with columns in the model's order."""
    raw, adata, name = _layer_of(model, mdata, mod)
    # NaN / inf / negative (and non-integer RNA) values would give silently wrong latents
    validate_matrix(raw, name, mod, obs_names=adata.obs_names, var_names=adata.var_names)
    X = as_csr(raw)
    if order is not None and not np.array_equal(order, np.arange(X.shape[1])):
        X = X[:, order]
    return X


def row_source(model, mdata, mod: str, order: np.ndarray | None = None, rows: np.ndarray | None = None) -> RowSource:
    """A :class:`~scdiffx_grn.model._data.RowSource` over the model's registered layer of ``mod``.

    ``order`` maps the model's features onto the data's columns (from :func:`check_features`).
    """
    X, adata, name = _layer_of(model, mdata, mod)
    return RowSource(X, order=order, rows=rows, kind=mod, name=name, obs_names=adata.obs_names,
                     var_names=adata.var_names)


def label_categories(mdata, keys) -> dict[str, list[str]]:
    """Sorted categories of each label column (registry precedence)."""
    return {k: [str(c) for c in pd.Categorical(registry_labels(mdata, k)).categories] for k in keys}


def label_indices(config, labels, n: int | None = None) -> np.ndarray:
    """Label indices (n, n_label_keys) of ``config.label_categories``; missing keys or ``None`` values
    get the null label (index ``n_categories``). Unseen values raise naming them."""
    keys = config.label_keys
    if labels is None:
        labels = {}
    if isinstance(labels, pd.DataFrame):
        labels = {k: labels[k].to_numpy() for k in labels.columns}
    lens = {len(np.atleast_1d(v)) for v in labels.values()}
    if n is None:
        if len(lens) != 1:
            raise InputDataError(f"label arrays have different lengths: {sorted(lens)}")
        n = lens.pop()
    unknown_keys = sorted(set(labels) - set(keys))
    if unknown_keys:
        raise MissingLabelError(f"model was not trained with label(s) {unknown_keys}; it knows {keys}")
    out = np.empty((n, len(keys)), dtype=np.int64)
    for i, k in enumerate(keys):
        cats = config.label_categories[k]
        null = len(cats)
        if k not in labels:
            out[:, i] = null
            continue
        vals = np.atleast_1d(np.asarray(labels[k], dtype=object))
        if len(vals) == 1 and n > 1:
            vals = np.repeat(vals, n)
        if len(vals) != n:
            raise InputDataError(f"label {k!r} has {len(vals)} values for {n} cells")
        lut = {c: j for j, c in enumerate(cats)}
        is_null = pd.isna(pd.Series(vals)).to_numpy()
        bad = sorted({str(v) for v, isn in zip(vals, is_null) if not isn and str(v) not in lut})
        if bad:
            raise MissingLabelError(
                f"label {k!r} has values unseen in training: {_fmt_items(bad)}; known: {_fmt_items(cats, 30)}"
            )
        out[:, i] = [null if isn else lut[str(v)] for v, isn in zip(vals, is_null)]
    return out


def labels_for(model, mdata, labels) -> pd.DataFrame | None:
    """Per-cell labels of a translation: ``None``, ``"auto"`` (the model's label columns present in
    ``mdata``), a mapping ``{key: values}`` or a DataFrame."""
    if labels is None:
        return None
    if isinstance(labels, str) and labels == "auto":
        cols = {}
        for k in model.config.label_keys:
            try:
                cols[k] = registry_labels(mdata, k, allow_missing=True).to_numpy()  # unlabelled: null label
            except MissingLabelError:
                continue
        return pd.DataFrame(cols) if cols else None
    if isinstance(labels, pd.DataFrame):
        return labels
    if not isinstance(labels, Mapping):
        raise OptionError(f"labels must be None, 'auto', a mapping {{label key: per-cell values}} or a DataFrame; "
                          f"got {labels!r}")
    return pd.DataFrame({k: np.asarray(v, dtype=object) for k, v in dict(labels).items()})
