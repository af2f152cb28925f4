"""Model plumbing shared by GRN extraction (``scdiffx_grn.grn``) and perturbation (``scdiffx_grn.perturb``).

Everything here talks to a model through its tensor API only (the
:class:`~scdiffx_grn.model.TranslationModel` protocol, ``docs/ARCHITECTURE.md``) and tolerates
stand-in models that lack optional attributes (``module``, ``setup``). Data is read through
:mod:`scdiffx_grn._registry` (a missing layer raises; it is never replaced by ``X``):

- :func:`model_features`, :func:`feature_layer`, :func:`feature_matrix`, :func:`model_inputs`: the
  data's raw matrices (the data's registered layers, else the model's) in the model's feature order;
- :func:`dense_rows`: dense float32 rows of a sparse or dense matrix;
- :func:`label_keys`, :func:`cell_conditions`: label-condition tensors of cells;
- :func:`cell_noise`: standard normal noise keyed by obs name, the generator behind every model's
  ``model.cell_noise`` (the one noise convention of ``translate``, the perturbation engine and the
  GRN scores), :func:`cell_keys`, :func:`subsample_by_name`, :func:`torch_generator`;
- :func:`eval_mode`: no dropout while scoring, training flag restored afterwards;
- :class:`Edit`, :func:`translate_inputs`, :func:`readout`: in-silico edits of the source modality, the
  translation of encoder inputs and its readout (the primitives of the paired engine,
  :class:`scdiffx_grn.perturb.PairedEngine`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._errors import FeatureMismatchError, InputDataError, MissingLabelError
from ._registry import MODALITIES, feature_columns, input_layer, layer_matrix
from ._registry import labels as registry_labels
from ._vocab import other_modality

__all__ = ["model_features", "label_keys", "feature_layer", "feature_matrix", "model_inputs", "dense_rows",
           "cell_conditions", "cell_noise", "cell_keys", "subsample_by_name", "torch_generator", "eval_mode",
           "readout", "translate_inputs", "Edit"]


# --------------------------------------------------------------------------- features and inputs
def model_features(model) -> tuple[list[str], list[str]]:
    """The model's gene and peak names (``rna_var_names``, ``atac_var_names``: its feature order)."""
    g, p = getattr(model, "rna_var_names", None), getattr(model, "atac_var_names", None)
    if g is None or p is None:
        raise InputDataError(f"model {type(model).__name__} has no rna_var_names / atac_var_names (the feature "
                             "names of the TranslationModel protocol)")
    return [str(x) for x in g], [str(x) for x in p]


def label_keys(model) -> list[str]:
    """Label columns the model is conditioned on (``model.config.label_keys``)."""
    keys = getattr(getattr(model, "config", None), "label_keys", None)
    if keys is None:
        keys = getattr(model, "label_keys", [])
    return list(keys or [])


def feature_layer(model, mod: str, mdata=None) -> str | None:
    """Layer of modality ``mod`` holding the model's raw inputs (``None``: ``X``):
    :func:`scdiffx_grn._registry.input_layer` with the model's registry (``model.setup``), or, for a
    stand-in without one, its ``{mod}_layer`` attribute."""
    setup = getattr(model, "setup", None)
    return input_layer(mdata, mod, setup if isinstance(setup, dict) and setup else model)


def feature_matrix(model, mdata, mod: str, *, sparse: bool = False, error: type = FeatureMismatchError):
    """Raw matrix of modality ``mod`` with columns in the model's order.

    The matrix is the data's registered layer (:func:`feature_layer`); a missing layer raises
    :class:`~scdiffx_grn.InputDataError` naming the layers there. Sparse input stays sparse (CSR);
    dense input stays dense unless ``sparse``. Model features missing from the data raise
    ``error`` naming them.
    """
    if mod not in mdata.mod:
        raise InputDataError(f"the data has no {mod!r} modality (has {list(mdata.mod)})")
    genes, peaks = model_features(model)
    names = genes if mod == "rna" else peaks
    ad = mdata.mod[mod]
    X = layer_matrix(ad, feature_layer(model, mod, mdata), what=f"modality {mod!r} (the model's inputs)")
    cols = feature_columns(ad.var_names, names, what=f"{mod} features of the model", error=error)
    if hasattr(X, "to_memory"):  # backed
        X = X.to_memory()
    if sp.issparse(X) or sparse:
        X = sp.csr_matrix(X)
    else:
        X = np.asarray(X)
    return X if cols is None else X[:, cols]


def model_inputs(model, mdata, *, error: type = FeatureMismatchError):
    """Raw RNA / ATAC matrices of ``mdata`` in the model's feature order (CSR, cells x features)."""
    return (feature_matrix(model, mdata, "rna", sparse=True, error=error),
            feature_matrix(model, mdata, "atac", sparse=True, error=error))


def dense_rows(X, rows) -> np.ndarray:
    """Rows ``rows`` of a sparse or dense matrix as a dense float32 array."""
    sub = X[rows]
    if sp.issparse(sub):
        sub = sub.toarray()
    return np.asarray(sub, dtype=np.float32)


def cell_conditions(model, mdata, rows=None, *, strict: bool = False):
    """Label-condition tensor ``(n, n_label_keys)`` of cells ``rows`` (``None``: all) of ``mdata``.

    Each label key of the model is read with the registry's one precedence
    (:func:`scdiffx_grn._registry.labels`: ``mdata.obs``, then the modalities' obs). A key found
    nowhere gets the null label, or raises :class:`MissingLabelError` when ``strict``; cells
    without a value in a column that exists raise.
    """
    n = mdata.n_obs
    idx = np.arange(n) if rows is None else np.asarray(rows)
    keys = label_keys(model)
    labels, missing = {}, []
    for k in keys:
        if _has_label_column(mdata, k):
            labels[k] = registry_labels(mdata, k).to_numpy()[idx]
        else:
            missing.append(k)
    if missing and strict:
        raise MissingLabelError(f"the model is conditioned on {missing}, which are not columns of mdata.obs")
    return model.condition_indices(labels, n=len(idx))


def _has_label_column(data, key: str) -> bool:
    """Whether :func:`scdiffx_grn._registry.labels` finds a column ``key`` (in any of its places)."""
    cols = set(data.obs.columns)
    if key in cols:
        return True
    mods = getattr(data, "mod", None)
    if mods is None:
        return False
    return any(f"{m}:{key}" in cols or (m in mods and key in mods[m].obs.columns) for m in MODALITIES)


# --------------------------------------------------------------------------- noise and modes
def torch_generator(seed: int):
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def cell_keys(names, seed: int, sample: int = 0, stream: int = 0) -> np.ndarray:
    """One 63-bit key per cell from ``(seed, sample, stream, cell name)`` (BLAKE2b)."""
    import hashlib

    pre = f"{int(seed)}:{int(sample)}:{int(stream)}:".encode()
    return np.array([int.from_bytes(hashlib.blake2b(pre + str(n).encode(), digest_size=8).digest(), "little")
                     >> 1 for n in names], dtype=np.int64)


def subsample_by_name(names, k: int, seed: int, stream: int = 0) -> np.ndarray:
    """Positions (sorted) of ``k`` of the cells ``names``, chosen by their :func:`cell_keys`.

    A cell is kept or not by its own name and the seed only (the ``k`` smallest keys), so the
    choice within a group does not depend on the row order, on other groups or on which
    groups were asked for. ``k >= len(names)`` keeps every cell.
    """
    names = np.asarray(names)
    if int(k) >= len(names):
        return np.arange(len(names))
    keys = cell_keys(names, seed, 0, stream)
    return np.sort(np.argsort(keys, kind="stable")[:int(k)])


def cell_noise(names, dim: int, seed: int, sample: int = 0, *, stream: int = 0, device=None):
    """Standard normal noise ``(len(names), dim)`` keyed by each cell's name, the seed and the sample index.

    A cell's noise does not depend on its row position, on the other cells in the call or on
    the batch size, so translating a subset, a reordered copy or one cell alone gives that
    cell the same result. ``stream`` separates independent draws of one sample (e.g. the
    per-step noise of stochastic samplers).
    """
    import torch

    keys = cell_keys(names, seed, sample, stream).astype(np.uint64)
    d = int(dim)
    half = (d + 1) // 2
    j = np.arange(2 * half, dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = _splitmix64(keys[:, None] + (j[None, :] + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))
    # 53-bit uniforms in (0, 1), then Box-Muller pairs
    u = ((u >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = u[:, :half], u[:, half:]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)[:, :d]
    out = torch.from_numpy(z.astype(np.float32))
    return out if device is None else out.to(device)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@contextmanager
def eval_mode(model):
    """Put the model's torch module in eval mode (no dropout) and restore its training flag afterwards."""
    mod = getattr(model, "module", None)
    if mod is None or not hasattr(mod, "eval"):
        yield
        return
    was = getattr(mod, "training", False)
    mod.eval()
    try:
        yield
    finally:
        if hasattr(mod, "train"):
            mod.train(was)


# --------------------------------------------------------------------------- translation
def readout(model, tgt: str, z):
    """Readout of a target latent: ``log1p(1e4 rho)`` for RNA, accessibility probability for ATAC."""
    import torch

    if tgt == "rna":
        return torch.log1p(1e4 * model.decode_rna(z))
    return model.decode_atac(z)


def translate_inputs(model, src: str, x, cond, noise, translate_kwargs: dict | None = None):
    """Target latent of encoder inputs ``x`` (``rna_tensor``/``atac_tensor`` output) of modality ``src``.

    Deterministic given ``noise``; differentiable when grad is enabled. ``translate_kwargs`` go to
    ``model.translate_latent``; callers set ``readout`` explicitly (``"mean"``: the posterior
    mean in one denoiser call; ``"samples"``: the ``sampler`` / ``n_steps`` trajectory; the
    model's default is ``"mean"``, which ignores ``sampler``). ``noise``: ``model.cell_noise`` of the cells.
    """
    z = model.encode(src, x)
    return model.translate_latent(z, f"{src}->{other_modality(src)}", cond, noise, **dict(translate_kwargs or {}))


@dataclass
class Edit:
    """An edit of the source modality applied to raw inputs.

    Attributes
    ----------
    name
        Label of the perturbation.
    idx
        Feature indices (model order) to edit.
    kind
        ``knockout``/``knockdown``/``overexpress``/``close``/``open``/``none``.
    factor
        Multiplicative factor (knockdown / over-expression).
    values
        Per-feature values to set (over-expression to a quantile); overrides ``factor``.
    cell_mask
        Boolean mask over the engine's cells, or ``None`` for all.
    """

    name: str
    idx: np.ndarray
    kind: str
    factor: float | None = None
    values: np.ndarray | None = None
    cell_mask: np.ndarray | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Return an edited copy of ``x`` (cells x features, raw scale)."""
        x = x.copy()
        if self.kind == "none" or len(self.idx) == 0:
            return x
        if self.kind in ("knockout", "close"):
            x[:, self.idx] = 0.0
        elif self.kind == "open":
            x[:, self.idx] = np.maximum(x[:, self.idx], 1.0)
        elif self.kind in ("knockdown", "overexpress"):
            if self.values is not None:
                x[:, self.idx] = np.maximum(x[:, self.idx], self.values[None, :])
            else:
                x[:, self.idx] = x[:, self.idx] * float(self.factor)
        else:
            raise InputDataError(f"unknown edit kind {self.kind!r}")
        return x
