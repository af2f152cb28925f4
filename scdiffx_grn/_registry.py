"""The MuData contract: one registry made by ``setup_mudata`` and the one way every package reads data.

Every part of scdiffx_grn (model, GRN extraction, perturbation, biomarkers, evaluation, report) reads
counts, labels, log-normalised expression and features through the functions here, so a given cell
is grouped the same way and normalised the same way everywhere. Nothing falls back silently: a
missing layer or label column raises naming what is there and how to fix it.

- :func:`setup_mudata` checks a paired MuData (modalities, barcodes, labels, counts, unique
  features) and stores a :class:`Registry` in ``mdata.uns["_scdx_setup"]`` (plain types, so it is
  written with the MuData): the modalities, the layer holding raw counts of each, the label keys,
  the number of features and a fingerprint of their order.
- :func:`registry` reads it back (or ``None`` for unregistered data, when not required).
- :func:`layer_matrix` / :func:`counts`: a layer (``None``: ``X``), raising when it is missing.
- :func:`labels`: a label column, with one precedence for every package (below).
- :func:`is_counts` (re-exported by :mod:`scdiffx_grn.pp`): the one count detector.
- :func:`log_normalize`: the one ``log1p`` counts-per-10k (numpy, scipy sparse or torch);
  :func:`log_expression`: a modality's log-normalised values (counts are normalised, anything
  else is taken as already log-normalised).
- :func:`feature_columns`: column indexer of named features in a modality's order.

Label precedence (MuData): ``mdata.obs[key]``, then ``mdata.obs["rna:key"]`` / ``["atac:key"]``, then
``mdata.mod["rna"].obs[key]``, then ``mdata.mod["atac"].obs[key]``. For an AnnData: ``adata.obs[key]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import FeatureMismatchError, InputDataError, MissingLabelError, OptionError, ScdxError, _fmt_items
from ._validate import is_counts  # the one count detector (in the leaf module; re-exported here)
from ._vocab import MODALITIES  # the measured modalities (re-exported here)

__all__ = ["REGISTRY_KEY", "Registry", "setup_mudata", "registry", "modality", "layer_matrix", "counts", "labels",
           "input_layer", "is_counts", "log_normalize", "log_expression", "feature_columns", "fingerprint",
           "MODALITIES"]

#: where :func:`setup_mudata` stores the registry
REGISTRY_KEY = "_scdx_setup"
#: counts per cell after normalisation, before ``log1p``
TARGET_SUM = 1e4


def fingerprint(names) -> str:
    """sha1 (first 16 hex digits) of the feature names in their order."""
    h = hashlib.sha1()
    for n in map(str, names):
        h.update(n.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Registry:
    """What :func:`setup_mudata` registered (read back with :func:`registry`)."""

    modalities: tuple[str, ...] = MODALITIES
    labels: tuple[str, ...] = ()
    layers: dict = field(default_factory=lambda: {"rna": "counts", "atac": "counts"})
    n_vars: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)

    def layer(self, mod: str) -> str | None:
        """Layer of modality ``mod`` holding raw counts (``None``: ``X``)."""
        return self.layers.get(mod, "counts")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"], d["labels"] = list(self.modalities), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d) -> Registry:
        d = dict(d)
        labs = tuple(str(x) for x in np.atleast_1d(d.get("labels", [])) if str(x))
        mods = tuple(str(x) for x in np.atleast_1d(d.get("modalities", list(MODALITIES))))
        layers = {**{m: "counts" for m in MODALITIES}, **dict(d.get("layers") or {})}
        layers = {k: (None if v is None or (isinstance(v, str) and v == "") else str(v)) for k, v in layers.items()}
        return cls(modalities=mods, labels=labs, layers=layers,
                   n_vars={k: int(v) for k, v in dict(d.get("n_vars") or {}).items()},
                   features={k: str(v) for k, v in dict(d.get("features") or {}).items()})


def _is_mudata(data) -> bool:
    return hasattr(data, "mod") and hasattr(data, "obs")


def modality(data, mod: str):
    """The AnnData of modality ``mod`` of a MuData, or ``data`` itself for an AnnData."""
    if _is_mudata(data):
        if mod not in data.mod:
            raise InputDataError(f"the MuData has no modality {mod!r} (modalities: {_fmt_items(data.mod)})")
        return data.mod[mod]
    if not hasattr(data, "obs"):
        raise InputDataError(f"expected a MuData or AnnData, got {type(data).__name__}")
    return data


def input_layer(data, mod: str, trained=None) -> str | None:
    """Layer of ``data``'s modality ``mod`` holding a model's raw inputs (``None``: ``X``).

    The one rule: the layer registered on ``data`` (:func:`setup_mudata`), else the layer the model
    was registered with (``trained``: its registry dict, or an object with ``{mod}_layer``), else
    ``"counts"``.
    """
    reg = registry(data, required=False) if data is not None else None
    if reg is not None:
        return reg.layer(mod)
    if isinstance(trained, Registry):
        return trained.layer(mod)
    if isinstance(trained, dict) and trained:
        return Registry.from_dict(trained).layer(mod)
    v = getattr(trained, f"{mod}_layer", None) if trained is not None and not isinstance(trained, dict) else None
    return v if isinstance(v, str) else "counts"


def layer_matrix(adata, layer: str | None, *, what: str | None = None):
    """``adata.layers[layer]`` (``None``: ``adata.X``); a missing layer raises naming the layers there."""
    if layer is None:
        if adata.X is None:
            raise InputDataError(f"{what or 'the AnnData'} has no matrix X; pass the layer holding the data")
        return adata.X
    if layer not in adata.layers:
        raise InputDataError(
            f"layer {layer!r} not found in {what or 'the AnnData'} (layers: "
            f"{_fmt_items(adata.layers.keys()) or '(none)'}); pass the layer holding raw counts, "
            "or layer=None to use X")
    return adata.layers[layer]


def registry(data, *, required: bool = True) -> Registry | None:
    """The :class:`Registry` of ``data`` (made by :func:`setup_mudata`).

    ``required=False`` returns ``None`` for unregistered data instead of raising.
    """
    uns = getattr(data, "uns", None)
    if uns is None or REGISTRY_KEY not in uns:
        if required:
            raise ScdxError("the data is not registered: call ScDiffusionX.setup_mudata(mdata, labels=[...]) "
                            "(or scdiffx_grn.setup_mudata) first")
        return None
    return Registry.from_dict(uns[REGISTRY_KEY])


def counts(data, mod: str = "rna", *, layer: str | None | type(...) = ...):
    """Raw counts of modality ``mod``.

    ``layer``: the layer to read; by default the one registered by :func:`setup_mudata`, or
    ``"counts"`` for unregistered data. A missing layer raises (no silent fallback to ``X``).
    """
    adata = modality(data, mod)
    if layer is ...:
        layer = input_layer(data, mod)
    return layer_matrix(adata, layer, what=f"modality {mod!r}")


def labels(data, key: str | None, *, adata=None, what: str = "data", allow_missing: bool = False) -> pd.Series:
    """Label column ``key`` as strings, indexed by obs names (``adata``'s cells when given).

    See the module docstring for the precedence. ``key=None`` gives the single label ``"all"``.
    Missing values raise (a cell without a label cannot be grouped), unless ``allow_missing``:
    then they are kept as ``None`` (an object Series; e.g. unlabelled cells get the null label).
    """
    if adata is None:
        adata = data if not _is_mudata(data) else None
    index = (adata.obs_names if adata is not None else data.obs_names).astype(str)
    if key is None:
        return pd.Series("all", index=index, name="group", dtype=object)
    frames = []
    if _is_mudata(data):
        frames.append((data.obs, key))
        frames += [(data.obs, f"{m}:{key}") for m in MODALITIES]
        frames += [(data.mod[m].obs, key) for m in MODALITIES if m in data.mod]
    else:
        frames.append((data.obs, key))
    for obs, col in frames:
        if col in obs.columns:
            s = obs[col]
            if adata is not None and not (len(s) == adata.n_obs and (s.index.astype(str) == index).all()):
                s = s.reindex(index)
            s = pd.Series(s.to_numpy(), index=index, name=key)
            na = pd.isna(s).to_numpy()
            if na.any() and allow_missing:
                return pd.Series(np.where(na, None, s.to_numpy().astype(str)), index=index, name=key, dtype=object)
            if na.any():
                raise MissingLabelError(f"label column {key!r} has no label for {int(na.sum())} cells, e.g. "
                                        f"{_fmt_items(index[na], limit=3)}; fill or drop them first")
            return s.astype(str)
    cols = list(data.obs.columns) + ([c for m in MODALITIES if m in data.mod for c in data.mod[m].obs.columns]
                                     if _is_mudata(data) else [])
    raise MissingLabelError(f"label column {key!r} not found in the {what}'s obs (nor the modalities' obs); "
                            f"available: {_fmt_items(dict.fromkeys(cols), limit=20) or '(none)'}")


_label_series = labels  # setup_mudata's parameter `labels` shadows the function there


def log_normalize(X, target_sum: float = TARGET_SUM):
    """``log1p(target_sum * x / total)`` per cell (row): the one log-normalisation of the package.

    Accepts a numpy array, a scipy sparse matrix (returns CSR, sparsity kept) or a torch tensor
    (differentiable). Cells with no counts stay zero. Returns float32 (torch: the input dtype).
    """
    if hasattr(X, "detach") and hasattr(X, "clamp"):  # torch tensor
        lib = X.sum(-1, keepdim=True).clamp(min=1.0)
        return (X / lib * target_sum).log1p()
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        tot = np.asarray(X.sum(1)).ravel()
        tot[tot == 0] = 1.0
        Y = sp.csr_matrix(sp.diags((target_sum / tot).astype(np.float32)) @ X)
        Y.data = np.log1p(Y.data)
        return Y
    X = np.asarray(X, dtype=np.float32)
    tot = X.sum(-1, keepdims=True)
    tot[tot == 0] = 1.0
    return np.log1p(X / tot * np.float32(target_sum)).astype(np.float32)


def log_expression(data, mod: str = "rna", *, layer: str | None | type(...) = ...):
    """Log-normalised values of modality ``mod``: counts are :func:`log_normalize`-d, anything else
    (e.g. the posterior mean returned by ``model.translate``) is taken as already log-normalised.

    ``layer``: by default ``X`` when it holds non-counts (a log-normalised or translated ``X``), else
    the registered counts layer (``"counts"`` for unregistered data) when present, else ``X``.
    """
    adata = modality(data, mod)
    if layer is ...:
        cl = input_layer(data, mod)
        X = adata.X
        if X is not None and not is_counts(X):
            pass
        elif cl is not None and cl in adata.layers:
            X = adata.layers[cl]
        if X is None:
            raise InputDataError(f"modality {mod!r} has neither X nor layers[{cl!r}]")
    else:
        X = layer_matrix(adata, layer, what=f"modality {mod!r}")
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    if is_counts(X):
        return log_normalize(X)
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)


def feature_columns(have, want, *, what: str = "features", error: type = FeatureMismatchError) -> np.ndarray | None:
    """Column indices of ``want`` in ``have`` (``None`` when identical); missing ones raise ``error``."""
    have = pd.Index(np.asarray(have).astype(str))
    want = pd.Index(np.asarray(want).astype(str))
    if len(have) == len(want) and (have == want).all():
        return None
    cols = have.get_indexer(want)
    if (cols < 0).any():
        missing = want[cols < 0]
        raise error(f"{len(missing)} {what} are missing from the data: {_fmt_items(missing)}")
    return cols


def setup_mudata(mdata, *, labels: Sequence[str] | str | None = ("cell_type",), rna_layer: str | None = "counts",
                 atac_layer: str | None = "counts", modalities: Sequence[str] | None = None) -> Registry:
    """Register a MuData: check modalities, barcodes, labels, counts and features, store the registry.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac`` holding the same cells.
    labels
        obs columns to condition on (cell type first). ``None`` or ``[]``: none.
    rna_layer, atac_layer
        Layers with raw counts (``None``: ``X``). RNA must be non-negative integers; ATAC may be
        counts or binary.
    modalities
        ``("rna", "atac")`` (paired) or ``("rna",)`` (RNA only; any ``atac`` modality is ignored).
        ``None``: paired when the MuData has ``atac``, RNA-only when it holds ``rna`` alone.

    Returns
    -------
    Registry
        Also stored in ``mdata.uns["_scdx_setup"]``.

    Raises
    ------
    BarcodeMismatchError, NotCountsError, MissingLabelError, InputDataError, OptionError
    """
    from ._validate import check_paired
    from ._matrix import validate_matrix

    if not _is_mudata(mdata):
        raise InputDataError(f"setup_mudata needs a MuData, got {type(mdata).__name__}; build one with "
                             "datasets.make_mudata(rna, atac)")
    if modalities is None:
        modalities = ("rna", "atac") if "atac" in mdata.mod or "rna" not in mdata.mod else ("rna",)
    mods = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
    if mods not in (["rna", "atac"], ["rna"]):
        raise OptionError(f"modalities must be ('rna', 'atac') or ('rna',), got {tuple(mods)}")
    for mod in mods:
        if mod not in mdata.mod:
            raise InputDataError(f"MuData has no modality {mod!r} (modalities: {list(mdata.mod)})")
    check_paired(mdata, tuple(mods))
    keys = [labels] if isinstance(labels, str) else list(labels or [])
    for key in keys:
        _label_series(mdata, key)  # raises on a missing column or NaN labels
    layer_of = {"rna": rna_layer, "atac": atac_layer}
    n_vars, feats = {}, {}
    for mod in mods:
        adata = mdata.mod[mod]
        name = f"{mod} {'layers[%r]' % layer_of[mod] if layer_of[mod] else 'X'}"
        validate_matrix(layer_matrix(adata, layer_of[mod], what=f"modality {mod!r}"), name, mod,
                        obs_names=adata.obs_names, var_names=adata.var_names)
        dup = adata.var_names[adata.var_names.duplicated()]
        if len(dup):
            raise InputDataError(f"{mod} has duplicated var names: {_fmt_items(dup.unique())}; make them unique "
                                 "(adata.var_names_make_unique())")
        n_vars[mod], feats[mod] = int(adata.n_vars), fingerprint(adata.var_names)
    reg = Registry(modalities=tuple(mods), labels=tuple(keys), layers=dict(layer_of), n_vars=n_vars, features=feats)
    mdata.uns[REGISTRY_KEY] = reg.to_dict()
    return reg

