"""The paired-translation engine: edited vs unedited cells translated with the same noise.

:class:`PairedEngine` is the one translation loop of ``tl.perturb``, ``tl.screen``,
:func:`peak_knockout_effect` and the GRN knockout scores (``grn.close_peaks_effect``): for a list
of edits it yields, per edit and changed cell, the paired difference ``d = y(edited) - y(control)``
in readout space (``log1p(1e4 rho)`` for RNA, accessibility probability for ATAC) and the latent
difference. Readout ``"mean"``: the posterior mean averaged over ``n_noise`` = K noises in latent
space, decoded once (as ``model.translate(readout="mean", n_noise=K)``; one sample axis, ``S = 1``);
``"samples"``: ``S = n_noise`` sampled trajectories (``sampler``, ``n_steps``), each decoded.

Noise k of a cell is ``model.cell_noise(obs_name, seed, k)`` (and ``model.step_noise`` for a
stochastic sampler) in the control and in every edited copy, so an edit of nothing has an effect
of exactly zero and a cell's result does not depend on its row or batch-mates. An edit that
leaves a cell's raw input unchanged leaves its translation unchanged: the cell is skipped (its
difference is exactly 0; it still counts). The control arm is translated once per cell (latents
kept: ``S x cells x latent_dim``); (edit, changed cell) rows of many edits are stacked into calls
of ``batch_rows`` rows under ``torch.inference_mode`` (bf16 autocast on CUDA), at most
``max_targets_in_flight`` edits open at once, so consumers hold the running sums of those only.

Reductions consume these differences: :func:`iter_results` (group sums, nearest-type changes,
control sums, PCA profiles -> :class:`~._base.EngineResult`), :func:`cell_effects`,
:func:`peak_knockout_effect`.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError, UnknownFeatureError, _fmt_items
from .._modelio import Edit, cell_conditions, dense_rows, eval_mode, feature_matrix, label_keys, model_features
from .._modelio import readout as _readout
from .._registry import labels as registry_labels
from .._vocab import READOUTS, check_option, other_modality
from ._base import EngineInputs, EngineResult, cell_names, engine_autocast, group_column, nearest

__all__ = ["Edit", "EngineInputs", "EngineResult", "PairedEngine", "CellDiffs", "prepare_inputs", "changed_rows",
           "iter_results", "engine_options", "collect", "run_mean", "run_paired", "cell_effects",
           "peak_knockout_effect", "model_features"]


def prepare_inputs(model, mdata, src: str, *, groupby: str | None = "cell_type",
                   cells: np.ndarray | None = None, centroids: bool = True, use_labels: bool = False,
                   centroid_batch: int = 1024) -> EngineInputs:
    """Collect raw inputs, conditioning, groups and reference centroids from a MuData.

    Parameters
    ----------
    model
        A trained model honouring the tensor API.
    mdata
        Paired data; ``mdata.mod['rna']`` and ``mdata.mod['atac']``.
    src
        Edited modality (``"rna"`` or ``"atac"``).
    groupby
        Label column with cell types, looked up by :func:`scdiffx_grn._registry.labels` (``mdata.obs``,
        then ``mdata.obs["rna:<groupby>"]``, then the modalities' obs; ``None``: one group ``"all"``).
    cells
        Boolean mask of cells to use (``None``: all).
    use_labels
        Condition the translation on the model's label columns (e.g. cell type). Default
        ``False``: translate from the observed (edited) modality alone, as ``model.translate``
        does by default, so that the label does not pin perturbed cells to their type.
    centroids
        Compute per-cell-type centroids of the real cells' target-modality latents
        (``model.encode(tgt, tensor(real X))``) for nearest-type classification.
    """
    import torch

    n = mdata.n_obs
    mask = np.ones(n, bool) if cells is None else np.asarray(cells, bool)
    if mask.shape != (n,):
        raise InputDataError(f"cell mask has shape {mask.shape}, expected ({n},)")
    rows = np.flatnonzero(mask)
    X = feature_matrix(model, mdata, src)[rows]
    # the registry's one label lookup; a missing column or unlabelled cells raise MissingLabelError
    labels_all = registry_labels(mdata, groupby).to_numpy(dtype=object)
    labels = labels_all[rows]
    group_names = sorted(pd.unique(labels).tolist())
    gpos = {g: i for i, g in enumerate(group_names)}
    groups = np.array([gpos[g] for g in labels], dtype=np.int64)
    cond = cell_conditions(model, mdata, rows, strict=True) if (use_labels and label_keys(model)) else None
    cent, cent_names = None, []
    if centroids:
        tgt = other_modality(src)
        Xt = feature_matrix(model, mdata, tgt)
        tensor = model.atac_tensor if tgt == "atac" else model.rna_tensor
        cent_names = sorted(pd.unique(labels_all).tolist())
        cpos = {g: i for i, g in enumerate(cent_names)}
        codes = torch.as_tensor(np.array([cpos[g] for g in labels_all]), dtype=torch.long)
        sums, counts = None, torch.zeros(len(cent_names))
        with eval_mode(model), torch.no_grad():
            for s in range(0, n, centroid_batch):
                z = model.encode(tgt, tensor(dense_rows(Xt, np.arange(s, min(n, s + centroid_batch))))).float().cpu()
                if sums is None:
                    sums = torch.zeros(len(cent_names), z.shape[1])
                c = codes[s:s + centroid_batch]
                sums.index_add_(0, c, z)
                counts.index_add_(0, c, torch.ones(len(c)))
        cent = sums / counts[:, None].clamp_min(1)
    return EngineInputs(src=src, X=X, cond=cond, groups=groups, group_names=group_names,
                        centroids=cent, centroid_names=cent_names,
                        cell_names=np.asarray(mdata.obs_names)[rows])


def changed_rows(X, edit: Edit, mask: np.ndarray | None = None, Xc=None) -> np.ndarray:
    """Rows of ``X`` (cells x features, raw) whose input the edit changes (within ``mask``).

    Exact: a row is unchanged iff ``edit.apply`` returns it bit-identical, which is checked on
    the edited columns only. ``Xc``: a CSC copy of a sparse ``X`` (fast column access).
    """
    if edit.kind == "none" or len(edit.idx) == 0:
        return np.array([], dtype=np.int64)
    idx = np.asarray(edit.idx, dtype=np.int64)
    cols = (Xc if Xc is not None else X)[:, idx]
    cols = (cols.toarray() if sp.issparse(cols) else np.asarray(cols)).astype(np.float32, copy=False)
    local = Edit(name=edit.name, idx=np.arange(len(idx)), kind=edit.kind, factor=edit.factor, values=edit.values)
    ch = np.any(local.apply(cols) != cols, axis=1)
    if mask is not None:
        ch &= np.asarray(mask, bool)
    return np.flatnonzero(ch).astype(np.int64)


# --------------------------------------------------------------------------- the engine
class CellDiffs(NamedTuple):
    """Differences of edit ``edit`` on cells ``rows`` (tensors on the engine's device): ``d`` (S, b, F)
    readout, ``zd`` (S, b, L) latent (edited - control), ``z`` the edited latent; ``last``: the edit's
    last part (an edit that changes no cell has one part with ``b = 0``)."""

    edit: int
    rows: np.ndarray
    d: Any
    zd: Any
    z: Any
    last: bool


class PairedEngine:
    """Translate edited copies of cells against their unedited control with the same noise.

    ``inputs``: :func:`prepare_inputs` (raw source inputs, conditions, obs names). ``readout``:
    ``"mean"`` or ``"samples"``; ``n_noise``: noises (or samples) per cell, ``model.cell_noise(obs
    name, seed, k)``. ``batch_rows``: (cell x noise) rows per call of edited cells; ``batch_size``:
    cells per call of the control pass (default ``batch_rows // n_noise``). ``translate_kwargs``: to
    ``model.translate_latent`` (a ``readout`` there must agree). ``skip_unchanged=False``
    re-translates every cell of an edit's mask (the tests' reference). ``autocast``: bf16 on CUDA
    (``None``: on for CUDA models). ``max_targets_in_flight``: edits open at once. ``ctrl_cache_mb``: the
    control readouts (``S x cells x features``) are kept after the control pass when they fit in this many
    MB, so that edited calls do not decode their cells' controls again (else decoded per call).
    """

    def __init__(self, model, inputs: EngineInputs, *, readout: str = "mean", n_noise: int = 1, seed: int = 0,
                 batch_rows: int = 1024, batch_size: int | None = None, translate_kwargs: dict | None = None,
                 skip_unchanged: bool = True, autocast: bool | None = None, max_targets_in_flight: int = 64,
                 ctrl_cache_mb: float = 1024.0):
        import torch

        from .._settings import _apply_threads

        _apply_threads()  # other OpenMP users (numba) may have reset torch's thread count
        check_option("readout", readout, READOUTS)
        self.kw = dict(translate_kwargs or {})
        if self.kw.setdefault("readout", readout) != readout:
            raise OptionError(f"translate_kwargs readout={self.kw['readout']!r} conflicts with the engine's "
                              f"readout={readout!r}; choose the readout with readout=")
        self.K = int(n_noise)
        if self.K < 1:
            raise OptionError(f"n_noise must be >= 1, got {n_noise}")
        self.model, self.inputs, self.readout, self.seed = model, inputs, readout, int(seed)
        self.S = 1 if readout == "mean" else self.K
        self.src, self.tgt = inputs.src, other_modality(inputs.src)
        self.X, self.n = inputs.X, inputs.X.shape[0]
        if self.n == 0:
            raise InputDataError("no cells to perturb")
        self.names = cell_names(inputs, self.n)
        self.dev = torch.device(getattr(model, "device", "cpu"))
        self.cap = max(1, int(batch_rows) // self.K)
        self.ctrl_cap = self.cap if batch_size is None else max(1, int(batch_size))
        self.skip, self.autocast, self.max_open = bool(skip_unchanged), autocast, max(1, int(max_targets_in_flight))
        self.tensor = model.rna_tensor if self.src == "rna" else model.atac_tensor
        self.z_ctrl = None  # (S, cells, L) control latents, after the control pass
        self.y_ctrl, self.cache_mb = None, float(ctrl_cache_mb)  # (S, cells, F) control readouts when they fit
        self._noise = None

    # ---------------------------------------------------------------- translation
    def _ctx(self):
        import contextlib

        import torch

        st = contextlib.ExitStack()
        for c in (eval_mode(self.model), torch.inference_mode(), engine_autocast(self.model, self.autocast)):
            st.enter_context(c)
        return st

    def noise(self, rows: np.ndarray):
        """The ``K`` noises of cells ``rows``, stacked noise-major: ``(K len(rows), width)``."""
        import torch

        m, names = self.model, self.names
        if self._noise is None:  # every cell's noise at once when small (<= 32 M floats), else per call
            width = m.cell_noise(names[:1], self.seed, 0).shape[1]
            self._noise = (torch.stack([m.cell_noise(names, self.seed, k, device=self.dev) for k in range(self.K)])
                           if self.n * self.K * width <= 2**25 else False)
        if self._noise is not False:
            return self._noise[:, torch.as_tensor(rows, device=self.dev)].flatten(0, 1)
        return torch.cat([m.cell_noise(names[rows], self.seed, k, device=self.dev) for k in range(self.K)])

    def translate_rows(self, x: np.ndarray, rows: np.ndarray):
        """Translated latents ``(S, len(rows), L)`` of raw source inputs ``x`` of the engine's cells ``rows``."""
        return self.translate_source(self.model.encode(self.src, self.tensor(x)), rows)

    def translate_source(self, z_src, rows: np.ndarray):
        """Translated latents ``(S, len(rows), L)`` of normalised source latents ``z_src`` of cells ``rows``."""
        import torch

        m, K = self.model, self.K
        b = z_src.shape[0]
        c = None
        if self.inputs.cond is not None:
            c = self.inputs.cond[torch.as_tensor(rows, device=self.inputs.cond.device)]
            c = c.repeat(K, 1) if K > 1 else c
        kw = self.kw
        steps = getattr(m, "step_noise", None)
        steps = None if steps is None else [steps(self.names[rows], self.seed, k, device=self.dev, **kw)
                                            for k in range(K)]
        if steps is not None and steps[0] is not None:
            kw = {**kw, "step_noise": torch.cat(steps, 1)}
        zt = m.translate_latent(z_src.repeat(K, 1) if K > 1 else z_src, f"{self.src}->{self.tgt}", c,
                                self.noise(rows).to(z_src.device), **kw).float().view(K, b, -1)
        return zt.mean(0, keepdim=True) if self.readout == "mean" else zt

    def read(self, z):
        """Readout ``(S, b, F)`` of latents ``(S, b, L)``: ``log1p(1e4 rho)`` for RNA, probability for ATAC."""
        S, b, L = z.shape
        return _readout(self.model, self.tgt, z.reshape(S * b, L)).float().view(S, b, -1)

    def control(self) -> Iterator[tuple]:
        """The control pass: translate every cell unedited once (latents kept in ``z_ctrl``); yields
        ``(rows, z (S, b, L), y (S, b, F))`` per call."""
        import torch

        z_all = y_all = None
        for s in range(0, self.n, self.ctrl_cap):
            rows = np.arange(s, min(self.n, s + self.ctrl_cap))
            with self._ctx():
                z = self.translate_rows(dense_rows(self.X, rows), rows)
                y = self.read(z)
                if z_all is None:
                    z_all = torch.empty(self.S, self.n, z.shape[2], device=self.dev)
                    if 4.0 * self.S * self.n * y.shape[2] <= self.cache_mb * 2**20:
                        y_all = torch.empty(self.S, self.n, y.shape[2], device=self.dev)
                z_all[:, rows[0]:rows[-1] + 1] = z
                if y_all is not None:
                    y_all[:, rows[0]:rows[-1] + 1] = y
            yield rows, z, y  # never inside inference mode / autocast: the consumer runs here
        self.z_ctrl, self.y_ctrl, self.F = z_all, y_all, y.shape[2]

    # ---------------------------------------------------------------- edited arms
    def masks(self, edits: Sequence[Edit]) -> list[np.ndarray | None]:
        """Cell masks of the edits (``None``: all cells), checked against the engine's cells."""
        out = [None if e.cell_mask is None else np.asarray(e.cell_mask, bool) for e in edits]
        for e, m in zip(edits, out):
            if m is not None and m.shape != (self.n,):
                raise InputDataError(f"cell mask of {e.name!r} has shape {m.shape}, expected ({self.n},)")
        return out

    def differences(self, edits: Sequence[Edit]) -> Iterator[CellDiffs]:
        """Paired differences of every edit, edit after edit (runs the control pass first if needed)."""
        masks = self.masks(edits)
        if self.z_ctrl is None:
            for _ in self.control():
                pass
        Xc = self.X.tocsc() if (sp.issparse(self.X) and self.skip) else None
        buf, n_buf = [], 0  # (edit, rows, last) parts of the next call: one per edit
        for ei, (e, m) in enumerate(zip(edits, masks)):
            rows = (changed_rows(self.X, e, m, Xc) if self.skip else
                    np.arange(self.n, dtype=np.int64) if m is None else np.flatnonzero(m).astype(np.int64))
            pos = 0
            while True:
                take = min(self.cap - n_buf, len(rows) - pos)
                buf.append((ei, rows[pos:pos + take], pos + take == len(rows)))
                n_buf, pos = n_buf + take, pos + take
                if n_buf >= self.cap or len(buf) >= self.max_open:
                    yield from self._flush(edits, buf)
                    buf, n_buf = [], 0
                if pos == len(rows):
                    break
        yield from self._flush(edits, buf)

    def _flush(self, edits, buf) -> list[CellDiffs]:
        import torch

        if not buf:
            return []
        cells = np.concatenate([r for _, r, _ in buf])
        with self._ctx():
            if len(cells):
                x = dense_rows(self.X, cells)
                off = 0
                for ei, r, _ in buf:
                    x[off:off + len(r)] = edits[ei].apply(x[off:off + len(r)])
                    off += len(r)
                z = self.translate_rows(x, cells)
                ct = torch.as_tensor(cells, device=self.dev)
                zc = self.z_ctrl[:, ct]
                d = self.read(z) - (self.y_ctrl[:, ct] if self.y_ctrl is not None else self.read(zc))
                zd = z - zc
            else:
                z = zd = self.z_ctrl[:, :0]
                d = torch.zeros(self.S, 0, self.F, device=self.dev)
        out, off = [], 0
        for ei, r, last in buf:
            sl = slice(off, off + len(r))
            out.append(CellDiffs(ei, r, d[:, sl], zd[:, sl], z[:, sl], last))
            off += len(r)
        return out


# --------------------------------------------------------------------------- reductions
def _count(acc, g, t, sign: int = 1) -> None:
    """``acc[s, g_i, t[s, i]] += sign`` for every sample ``s`` and cell ``i`` (``acc``: S x G x K counts)."""
    import torch

    S, b = t.shape
    s = torch.arange(S, device=t.device)[:, None].expand(S, b)
    acc.index_put_((s, g[None].expand(S, b), t), torch.full((S, b), sign, dtype=acc.dtype, device=t.device),
                   accumulate=True)


def iter_results(model, inputs: EngineInputs, edits: Sequence[Edit], *, n_pca_cells: int = 1000,
                 **engine_kwargs) -> Iterator[tuple]:
    """Group sums of the :class:`PairedEngine`'s differences: ``(edit_index, EngineResult)`` per edit, in order.

    The first item is ``(None, ctrl)``: the control arm's ``EngineResult`` (``ctrl_type``, and the
    ``ctrl_profiles`` of ``n_pca_cells`` evenly spaced cells); then one ``EngineResult`` per edit
    (``E = 1``) as soon as its last cell is done: per group the sums over perturbed cells of the
    differences (per sample), their squares and maximum ``|d|`` (of the sample mean), the latent
    differences, the control readout and nearest-type changes. ``engine_kwargs``:
    :class:`PairedEngine`'s (``readout``, ``n_noise``, ``seed``, ``batch_rows``...).
    """
    import torch

    eng = PairedEngine(model, inputs, **engine_kwargs)
    masks, S, dev, n = eng.masks(edits), eng.S, eng.dev, eng.n
    G, KC = len(inputs.group_names), max(len(inputs.centroid_names), 1)
    keys: dict = {}  # distinct masks (screens: one) -> control sums per mask
    mask_of = [keys.setdefault(b"all" if m is None else m.tobytes(), len(keys)) for m in masks]
    uniq = {i: m for m, i in zip(masks, mask_of)}
    groups = np.asarray(inputs.groups, dtype=np.int64)
    groups_t = torch.as_tensor(groups, device=dev)
    cent = inputs.centroids.to(dev).float() if inputs.centroids is not None else None
    pca_rows = np.unique(np.linspace(0, n - 1, min(n, n_pca_cells)).round().astype(int)) if n_pca_cells else []
    pca_pos = np.full(n, -1)
    pca_pos[pca_rows] = np.arange(len(pca_rows))
    zeros = lambda *shape, dtype=torch.float64: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
    ctrl_type, ctrl_type_m = zeros(S, G, KC, dtype=torch.long), zeros(len(uniq), S, G, KC, dtype=torch.long)
    t_ctrl, ctrl_sum = zeros(S, n, dtype=torch.long), None
    for rows, z, y in eng.control():
        if ctrl_sum is None:
            ctrl_sum, prof = zeros(len(uniq), S, G, y.shape[2]), np.zeros((len(pca_rows), y.shape[2]), np.float32)
        part = slice(rows[0], rows[-1] + 1)
        g = groups_t[part]
        if cent is not None:
            t_ctrl[:, part] = t = nearest(z.flatten(0, 1), cent).view(S, len(rows))
            _count(ctrl_type, g, t)
        for mi, m in uniq.items():
            sel = slice(None) if m is None else torch.as_tensor(m[rows], device=dev)
            ctrl_sum[mi].index_add_(1, g[sel], y[:, sel].double())
            if cent is not None:
                _count(ctrl_type_m[mi], g[sel], t[:, sel])
        at = pca_pos[rows] >= 0
        if at.any():
            prof[pca_pos[rows][at]] = y[:, torch.as_tensor(at, device=dev)].mean(0).cpu().numpy()
    L, F = eng.z_ctrl.shape[2], ctrl_sum.shape[3]
    stats = "cells" if eng.readout == "mean" else "samples"  # what the effects tables test over
    common = dict(readout=eng.tgt, group_names=list(inputs.group_names), centroid_names=list(inputs.centroid_names),
                  ctrl_type=ctrl_type.cpu().numpy(), n_samples=eng.K, stats=stats)
    yield None, EngineResult(names=[], diff_sum=np.zeros((0, S, G, F)), ctrl_sum=np.zeros((0, S, G, F)),
                             n_cells=np.zeros((0, G), np.int64), zdiff_sum=np.zeros((0, S, G, L)),
                             type_changed=np.zeros((0, S, G), np.int64), new_type=np.zeros((0, S, G, KC), np.int64),
                             ctrl_profiles=prof if len(pca_rows) else None, **common)
    sums: dict[int, dict] = {}
    for cd in eng.differences(edits):
        a = sums.setdefault(cd.edit, {"diff_sum": zeros(S, G, F), "zdiff_sum": zeros(S, G, L), "diff_sq": zeros(G, F),
                                      "diff_absmax": zeros(G, F, dtype=torch.float32),
                                      "type_changed": zeros(S, G, dtype=torch.long),
                                      "new_type": zeros(S, G, KC, dtype=torch.long),
                                      "n_changed": zeros(G, dtype=torch.long)})
        if len(cd.rows):
            rt = torch.as_tensor(cd.rows, device=dev)
            g, dd = groups_t[rt], cd.d.double()  # one float64 copy (S = 1: the sample mean is the sample)
            dm = cd.d[0] if S == 1 else cd.d.mean(0)
            dmd = dd[0] if S == 1 else dm.double()
            a["diff_sum"].index_add_(1, g, dd)
            a["diff_sq"].index_add_(0, g, dmd * dmd)
            a["diff_absmax"].scatter_reduce_(0, g[:, None].expand(-1, F), dm.abs(), "amax", include_self=True)
            a["zdiff_sum"].index_add_(1, g, cd.zd.double())
            a["n_changed"].index_add_(0, g, torch.ones_like(g))
            if cent is not None:
                tp, tc = nearest(cd.z.flatten(0, 1), cent).view(S, len(rt)), t_ctrl[:, rt]
                a["type_changed"].index_add_(1, g, (tp != tc).long())
                _count(a["new_type"], g, tp)
                _count(a["new_type"], g, tc, -1)
        if cd.last:
            a, m, mi = sums.pop(cd.edit), masks[cd.edit], mask_of[cd.edit]
            a["new_type"] += ctrl_type_m[mi]
            yield cd.edit, EngineResult(
                names=[edits[cd.edit].name], ctrl_sum=ctrl_sum[mi].cpu().numpy()[None], ctrl_profiles=None,
                n_cells=np.bincount(groups if m is None else groups[m], minlength=G)[None].astype(np.int64),
                **{k: v.cpu().numpy()[None] for k, v in a.items()}, **common)


def collect(it: Iterator[tuple], edits: Sequence[Edit]) -> EngineResult:
    """The results of :func:`iter_results` joined into one ``EngineResult`` (``E`` edits)."""
    _, ctrl = next(it)
    rs = [r for _, r in it] or [ctrl]
    fields = ("diff_sum", "ctrl_sum", "n_cells", "zdiff_sum", "type_changed", "new_type", "diff_sq", "diff_absmax",
              "n_changed")
    return EngineResult(**{**vars(ctrl), "names": [e.name for e in edits], **{
        f: None if getattr(rs[0], f) is None else np.concatenate([getattr(r, f) for r in rs]) for f in fields}})


def engine_options(model, readout: str, *, n_noise: int = 1, n_samples: int = 5, batch_rows: int = 1024,
                   batch_size: int = 256, batch_targets: int = 8, max_batch_elements: int = 2**24, **engine_kwargs):
    """:class:`PairedEngine` keywords of the tools' options. ``"mean"``: ``n_noise`` noises, ``batch_rows``
    rows per call. ``"samples"``: ``n_samples`` samples, ``batch_size`` cells per control call, about
    ``batch_targets x batch_size`` edited cells per call (at most ``max_batch_elements`` values, rows x
    features, per sample)."""
    if readout == "mean":
        return dict(readout=readout, n_noise=n_noise, batch_rows=batch_rows, **engine_kwargs)
    cells = min(batch_size * batch_targets, max(batch_size, max_batch_elements // max(map(len, model_features(model)))))
    return dict(readout=readout, n_noise=n_samples, batch_rows=cells * int(n_samples), batch_size=batch_size,
                **engine_kwargs)


def run_mean(model, inputs: EngineInputs, edits: Sequence[Edit], *, n_pca_cells: int = 1000, **engine_kwargs):
    """Posterior-mean readout of every edit as one ``EngineResult`` (:func:`iter_results`)."""
    return collect(iter_results(model, inputs, edits, n_pca_cells=n_pca_cells, readout="mean", **engine_kwargs), edits)


def run_paired(model, inputs: EngineInputs, edits: Sequence[Edit], *, n_pca_cells: int = 1000, **options):
    """Sampled readout of every edit as one ``EngineResult``: ``n_samples`` (default 5) sampled translations
    per cell (``sampler``, ``n_steps`` in ``translate_kwargs``), batches as :func:`engine_options`."""
    opts = engine_options(model, "samples", **options)
    return collect(iter_results(model, inputs, edits, n_pca_cells=n_pca_cells, **opts), edits)


def cell_effects(model, inputs: EngineInputs, edit: Edit, **engine_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell paired differences of one edit (averaged over samples; zero for cells not re-translated)
    and the mask of re-translated cells: ``(d (n_cells, F), changed)``, for checks."""
    eng = PairedEngine(model, inputs, **engine_kwargs)
    parts = list(eng.differences([edit]))
    d, changed = np.zeros((eng.n, parts[0].d.shape[2]), np.float32), np.zeros(eng.n, bool)
    for cd in parts:
        d[cd.rows], changed[cd.rows] = cd.d.mean(0).cpu().numpy(), True
    return d, changed


# --------------------------------------------------------------------------- shared with GRN
def peak_knockout_effect(
    model,
    mdata_or_tensors,
    peaks: Sequence[str],
    genes: Sequence[str] | None = None,
    *,
    kind: str = "close",
    n_samples: int = 3,
    seed: int = 0,
    cells: np.ndarray | None = None,
    groupby: str | None = None,
    batch_size: int = 256,
    batch_targets: int = 16,
    translate_kwargs: dict | None = None,
    readout: str = "mean",
    n_noise: int = 1,
    batch_rows: int = 1024,
) -> pd.DataFrame:
    """In-silico effect of closing (or opening) each peak on translated expression.

    Each peak is edited on its own (peaks are stacked along the batch dimension), translated
    ATAC -> RNA with paired noise (:class:`PairedEngine`), and the mean log-normalised expression
    difference ``log1p(1e4 rho_closed) - log1p(1e4 rho_ctrl)`` is averaged over cells (then
    samples). Only cells whose input the edit changes are re-translated (closing a closed peak
    changes nothing: difference exactly 0). With the default posterior-mean readout ``se`` is the
    standard error over cells; with ``readout="samples"`` (``n_samples`` sampled translations per
    cell, ``translate_kwargs`` ``sampler`` / ``n_steps``) it is the standard error over samples.

    Parameters
    ----------
    model
        Trained model with the tensor API.
    mdata_or_tensors
        A MuData, or a dict ``{"atac": cells x peaks raw matrix in model order,
        "cond": LongTensor or None, "groups": optional labels}``.
    peaks
        Peaks to edit (unknown ones raise :class:`UnknownFeatureError`).
    genes
        Genes to report (default: all model genes).
    kind
        ``"close"`` (default) or ``"open"``.
    n_samples, seed
        Paired noise draws of the sampled readout, and the seed.
    cells
        Boolean mask of cells (MuData input only).
    groupby
        Report per group of this label column (MuData input only); default: all cells pooled.
    readout, n_noise, batch_rows
        ``"mean"`` (default: ``n_noise`` noises, ``batch_rows`` rows per call) or ``"samples"``
        (``n_samples``, ``batch_size``, ``batch_targets``).

    Returns
    -------
    pandas.DataFrame
        Columns ``peak, gene, <groupby>, effect, se`` (the group column is named after ``groupby``;
        ``group``, holding ``"all"`` or the dict's ``groups``, when ``groupby`` is ``None``): one row
        per peak x gene (x group).
    """
    if kind not in ("close", "open"):
        raise OptionError(f"kind must be 'close' or 'open', got {kind!r}")
    check_option("readout", readout, READOUTS)
    gcol = group_column(groupby)
    mgenes, mpeaks = model_features(model)
    ppos = {p: i for i, p in enumerate(mpeaks)}
    bad = [p for p in peaks if str(p) not in ppos]
    if bad:
        raise UnknownFeatureError(f"peaks not among the model's peaks: {_fmt_items(bad)}")
    gpos = {g: i for i, g in enumerate(mgenes)}
    bad = [] if genes is None else [g for g in genes if str(g) not in gpos]
    if bad:
        raise UnknownFeatureError(f"genes not among the model's genes: {_fmt_items(bad)}")
    if isinstance(mdata_or_tensors, dict):
        X = mdata_or_tensors["atac"]
        labels = mdata_or_tensors.get("groups")
        labels = np.array(["all"] * X.shape[0], object) if labels is None else np.asarray(labels).astype(str)
        gnames = sorted(pd.unique(labels).tolist())
        gp = {g: i for i, g in enumerate(gnames)}
        inputs = EngineInputs(src="atac", X=X, cond=mdata_or_tensors.get("cond"),
                              groups=np.array([gp[g] for g in labels], np.int64), group_names=gnames)
    else:
        inputs = prepare_inputs(model, mdata_or_tensors, "atac", groupby=groupby, cells=cells, centroids=False)
    edits = [Edit(name=str(p), idx=np.array([ppos[str(p)]]), kind=kind) for p in peaks]
    gsel = np.arange(len(mgenes)) if genes is None else np.array([gpos[str(g)] for g in genes], dtype=np.int64)
    opts = engine_options(model, readout, n_noise=n_noise, n_samples=n_samples, seed=seed, batch_rows=batch_rows,
                          batch_size=batch_size, batch_targets=batch_targets, translate_kwargs=translate_kwargs)
    res = collect(iter_results(model, inputs, edits, n_pca_cells=0, **opts), edits)
    if readout == "mean":  # standard error over cells
        nc = np.maximum(res.n_cells, 1)[:, :, None]
        eff = res.diff_sum[:, 0][..., gsel] / nc
        var = np.maximum(res.diff_sq[..., gsel] / nc - eff ** 2, 0.0) * (nc / np.maximum(nc - 1, 1))
        se = np.where(nc > 1, np.sqrt(var / nc), np.nan)
    else:  # over samples
        per = res.diff_sum[..., gsel] / np.maximum(res.n_cells, 1)[:, None, :, None]  # E,S,G,F
        eff = per.mean(axis=1)
        se = per.std(axis=1, ddof=1) / np.sqrt(res.n_samples) if res.n_samples > 1 else np.full_like(eff, np.nan)
    E, G, F = eff.shape
    return pd.DataFrame({
        "peak": np.repeat(res.names, G * F),
        "gene": np.tile(np.asarray(mgenes)[gsel], E * G),
        gcol: np.tile(np.repeat(res.group_names, F), E),
        "effect": eff.ravel(), "se": se.ravel()})
