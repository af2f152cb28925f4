"""Posterior-mean perturbation engine (the default of ``tl.perturb`` and ``tl.screen``).

Each cell's translation is the model's posterior mean ``E[z_tgt | z_src]`` (``readout="mean"``
of ``model.translate_latent``: one denoiser call at the noisiest timestep for v / x0 / flow
models), averaged over ``n_noise`` noises in latent space and decoded once, exactly as
``model.translate(mdata, readout="mean", n_noise=K)`` does. The paired control of a cell uses
the same noises (keyed by the cell's obs name, :func:`~scdiffx_grn._modelio.cell_noise`), so
the per-cell paired difference ``d_c = y(edited c) - y(c)`` carries no sampling noise.

What makes a screen fast:

- **exact skipping of unchanged cells**: an edit that leaves a cell's raw input unchanged
  (knocking out a gene the cell does not express, closing a peak that is already closed) leaves
  its translation unchanged, so ``d_c = 0`` exactly and the cell is not re-translated; it still
  counts in the cell-type mean and in the test. Only (target, changed cell) pairs are
  translated.
- the control arm is translated once per cell (one pass over all cells), its latent kept
  (``cells x latent_dim`` floats) and re-decoded for the changed cells;
- (target, cell, noise) rows of many targets are stacked into calls of ``batch_rows`` rows,
  under ``torch.inference_mode`` and, on CUDA, bf16 autocast (CPU stays float32);
- targets stream through: only running sums of the targets in flight are held
  (``targets_in_flight x groups x features``), and each target is handed back as soon as its
  last changed cell is done, so memory does not grow with the number of targets or cells
  (beyond the data itself and the ``cells x latent_dim`` control cache).

Statistics are over cells: per perturbation x cell type x feature the mean, variance and
maximum of ``|d_c|`` over the perturbed cells are accumulated, giving the effect (mean
paired difference), its standard error over cells and a one-sample t-test of the per-cell
paired differences (``n_cells - 1`` degrees of freedom); BH FDR across features within
perturbation x cell type (see :func:`~scdiffx_grn.perturb._effects.effects_table`).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from .._errors import InputDataError, OptionError
from .._modelio import Edit, cell_noise, dense_rows, eval_mode, other_modality
from .._modelio import readout as _readout
from ._base import EngineResult, cell_names, engine_autocast, nearest, noise_dim

__all__ = ["iter_mean", "run_mean", "changed_rows", "cell_effects"]


# --------------------------------------------------------------------------- helpers
def changed_rows(X, edit: Edit, mask: np.ndarray | None = None, Xc=None) -> np.ndarray:
    """Rows of ``X`` (cells x features, raw) whose input the edit changes (within ``mask``).

    Exact: a row is unchanged iff ``edit.apply`` returns it bit-identical, which is checked on
    the edited columns only. ``Xc``: a CSC copy of a sparse ``X`` (fast column access).
    """
    if edit.kind == "none" or len(edit.idx) == 0:
        return np.array([], dtype=np.int64)
    idx = np.asarray(edit.idx, dtype=np.int64)
    if sp.issparse(X):
        src = Xc if Xc is not None else X
        cols = src[:, idx]
        cols = cols.toarray() if sp.issparse(cols) else np.asarray(cols)
    else:
        cols = np.asarray(X[:, idx])
    cols = cols.astype(np.float32, copy=False)
    local = Edit(name=edit.name, idx=np.arange(len(idx)), kind=edit.kind, factor=edit.factor, values=edit.values)
    ch = np.any(local.apply(cols) != cols, axis=1)
    if mask is not None:
        ch &= np.asarray(mask, bool)
    return np.flatnonzero(ch).astype(np.int64)


class _Acc:
    """Running sums of one perturbation (on the engine's device)."""

    __slots__ = ("absmax", "diff_sq", "diff_sum", "dtype", "left", "n_changed", "type_changed", "zdiff")

    def __init__(self, G, F, L, K, device, left):
        import torch

        f64 = torch.float64
        self.diff_sum = torch.zeros(G, F, dtype=f64, device=device)
        self.diff_sq = torch.zeros(G, F, dtype=f64, device=device)
        self.absmax = torch.zeros(G, F, dtype=torch.float32, device=device)
        self.zdiff = torch.zeros(G, L, dtype=f64, device=device)
        self.type_changed = torch.zeros(G, dtype=torch.long, device=device)
        self.dtype = torch.zeros(G, max(K, 1), dtype=torch.long, device=device)
        self.n_changed = torch.zeros(G, dtype=torch.long, device=device)
        self.left = int(left)


# --------------------------------------------------------------------------- engine
def iter_mean(
    model,
    inputs,
    edits: Sequence[Edit],
    *,
    n_noise: int = 1,
    seed: int = 0,
    batch_rows: int = 1024,
    max_targets_in_flight: int = 64,
    n_pca_cells: int = 1000,
    translate_kwargs: dict | None = None,
    skip_unchanged: bool = True,
    autocast: bool | None = None,
    cell_hook=None,
) -> Iterator:
    """Posterior-mean paired engine: yields ``(edit_index, EngineResult)`` per edit as it finishes.

    Parameters
    ----------
    model, inputs, edits
        As :func:`~scdiffx_grn.perturb.run_paired` (``inputs`` from ``prepare_inputs``).
    n_noise
        Noises ``K`` averaged (in latent space) per cell; K = 1 is nearly as good as K = 4.
    seed
        Seed of the per-cell noise (``cell_noise(obs_name, seed, k)``, ``k < K``).
    batch_rows
        (cell x noise) rows per stacked translation call.
    max_targets_in_flight
        Edits whose sums are held at once (bounds memory in the number of targets).
    translate_kwargs
        Passed to ``model.translate_latent`` with ``readout="mean"``.
    skip_unchanged
        Skip cells whose input the edit does not change (exact: their difference is 0).
        ``False`` re-translates every perturbed cell (the reference the tests compare with).
    autocast
        bf16 autocast on CUDA (``None``: on for CUDA models; CPU always float32).
    cell_hook
        ``f(edit_index, cell_rows, d, zd)`` called with each batch's per-cell differences
        (numpy), for tests and diagnostics.

    The first item yielded is ``(None, ctrl)``: the control arm's ``EngineResult`` skeleton
    (``ctrl_type``, ``ctrl_profiles``); then one ``(edit_index, EngineResult)`` per edit, in
    edit order, each with ``E = 1`` and ``S = 1`` axes.
    """
    import torch

    kw = dict(translate_kwargs or {})
    if kw.get("readout", "mean") != "mean":
        raise OptionError(f"translate_kwargs readout={kw['readout']!r} conflicts with the posterior-mean engine; "
                          "use readout='samples' for the sampled engine")
    kw["readout"] = "mean"
    K = int(n_noise)
    if K < 1:
        raise OptionError(f"n_noise must be >= 1, got {n_noise}")
    src, tgt = inputs.src, other_modality(inputs.src)
    X = inputs.X
    n = X.shape[0]
    if n == 0:
        raise InputDataError("no cells to perturb")
    G, E = len(inputs.group_names), len(edits)
    KC = len(inputs.centroid_names)
    names = cell_names(inputs, n)
    groups_np = np.asarray(inputs.groups, dtype=np.int64)
    masks = [None if e.cell_mask is None else np.asarray(e.cell_mask, bool) for e in edits]
    for e, m in zip(edits, masks):
        if m is not None and m.shape != (n,):
            raise InputDataError(f"cell mask of {e.name!r} has shape {m.shape}, expected ({n},)")
    # distinct masks (screens: one) -> control sums per mask
    mask_keys: dict[bytes, int] = {}
    mask_of = []
    uniq_masks: list[np.ndarray | None] = []
    for m in masks:
        key = b"all" if m is None else m.tobytes()
        if key not in mask_keys:
            mask_keys[key] = len(uniq_masks)
            uniq_masks.append(m)
        mask_of.append(mask_keys[key])
    dev = torch.device(getattr(model, "device", "cpu"))
    tensor = model.rna_tensor if src == "rna" else model.atac_tensor
    direction = f"{src}->{tgt}"
    cent = inputs.centroids.to(dev).float() if inputs.centroids is not None else None
    cond_all = inputs.cond
    pca_rows = (np.unique(np.linspace(0, n - 1, min(n, n_pca_cells)).round().astype(int)) if n_pca_cells
                else np.array([], int))
    groups_t = torch.as_tensor(groups_np, device=dev)

    noise_cache = None
    D = None

    def noise_for(rows: np.ndarray, L: int):
        nonlocal noise_cache, D
        if D is None:
            D = noise_dim(model, L)
            if n * K * D <= 2**25:
                noise_cache = torch.stack([cell_noise(names, D, seed, k) for k in range(K)]).to(dev)  # K,n,D
        if noise_cache is not None:
            r = torch.as_tensor(rows, device=dev)
            return noise_cache[:, r].reshape(K * len(rows), D)
        return torch.cat([cell_noise(names[rows], D, seed, k, device=dev) for k in range(K)])

    def translate_rows(x_np: np.ndarray, rows: np.ndarray):
        """Mean latent over K noises of raw inputs ``x_np`` belonging to cells ``rows``."""
        z_src = model.encode(src, tensor(x_np))
        b, L = z_src.shape
        nz = noise_for(rows, L).to(z_src.device)
        c = None
        if cond_all is not None:
            c = cond_all[torch.as_tensor(rows, device=cond_all.device)]
            c = c.repeat(K, 1) if K > 1 else c
        zin = z_src.repeat(K, 1) if K > 1 else z_src
        zt = model.translate_latent(zin, direction, c, nz, **kw).float()
        return zt.view(K, b, -1).mean(0) if K > 1 else zt

    def read(z):
        return _readout(model, tgt, z).float()

    def ctx():
        from contextlib import ExitStack

        st = ExitStack()
        st.enter_context(torch.inference_mode())
        st.enter_context(engine_autocast(model, autocast))
        return st

    # inference mode / autocast are entered around each block of work, never held across a yield
    with eval_mode(model):
        # ---------------------------------------------------------------- control pass
        z_ctrl = t_ctrl = None
        ctrl_sum_m = ctrl_prof = None
        ctrl_type = torch.zeros(G, max(KC, 1), dtype=torch.long, device=dev)
        ctrl_type_m = torch.zeros(len(uniq_masks), G, max(KC, 1), dtype=torch.long, device=dev)
        pca_pos = {int(r): i for i, r in enumerate(pca_rows)}
        step = max(1, int(batch_rows) // K)
        with ctx():
            for s in range(0, n, step):
                rows = np.arange(s, min(n, s + step))
                zb = translate_rows(dense_rows(X, rows), rows)
                yb = read(zb)
                if z_ctrl is None:
                    L, F = zb.shape[1], yb.shape[1]
                    z_ctrl = torch.empty(n, L, dtype=torch.float32, device=dev)
                    t_ctrl = torch.zeros(n, dtype=torch.long, device=dev)
                    ctrl_sum_m = torch.zeros(len(uniq_masks), G, F, dtype=torch.float64, device=dev)
                    ctrl_prof = torch.zeros(len(pca_rows), F, dtype=torch.float32)
                z_ctrl[s:s + len(rows)] = zb
                gb = groups_t[s:s + len(rows)]
                if cent is not None:
                    tb = nearest(zb, cent)
                    t_ctrl[s:s + len(rows)] = tb
                    ctrl_type.index_put_((gb, tb), torch.ones(len(rows), dtype=torch.long, device=dev), accumulate=True)
                for mi, m in enumerate(uniq_masks):
                    sel = torch.ones(len(rows), dtype=torch.bool, device=dev) if m is None else \
                        torch.as_tensor(m[rows], device=dev)
                    ctrl_sum_m[mi].index_add_(0, gb[sel], yb[sel].double())
                    if cent is not None:
                        ctrl_type_m[mi].index_put_((gb[sel], t_ctrl[s:s + len(rows)][sel]),
                                                   torch.ones(int(sel.sum()), dtype=torch.long, device=dev),
                                                   accumulate=True)
                sel = [i for i, r in enumerate(rows) if int(r) in pca_pos]
                if sel:
                    ctrl_prof[[pca_pos[int(rows[i])] for i in sel]] = yb[sel].cpu()
        L, F = z_ctrl.shape[1], ctrl_sum_m.shape[2]
        ctrl_type_np = ctrl_type.cpu().numpy()[None]
        yield None, EngineResult(
            names=[], readout=tgt, group_names=list(inputs.group_names), centroid_names=list(inputs.centroid_names),
            diff_sum=np.zeros((0, 1, G, F)), ctrl_sum=np.zeros((0, 1, G, F)), n_cells=np.zeros((0, G), np.int64),
            zdiff_sum=np.zeros((0, 1, G, L)), type_changed=np.zeros((0, 1, G), np.int64),
            new_type=np.zeros((0, 1, G, max(KC, 1)), np.int64), ctrl_type=ctrl_type_np,
            ctrl_profiles=ctrl_prof.numpy() if len(pca_rows) else None, n_samples=K, stats="cells")

        # ---------------------------------------------------------------- edited arms
        Xc = X.tocsc() if (sp.issparse(X) and skip_unchanged) else None

        def rows_of(ei: int) -> np.ndarray:
            if skip_unchanged:
                return changed_rows(X, edits[ei], masks[ei], Xc)
            m = masks[ei]
            return np.arange(n, dtype=np.int64) if m is None else np.flatnonzero(m).astype(np.int64)

        def finish(ei: int, acc: _Acc):
            with ctx():
                return _finish(ei, acc)

        def _finish(ei: int, acc: _Acc):
            m = masks[ei]
            nc = np.bincount(groups_np if m is None else groups_np[m], minlength=G).astype(np.int64)
            mi = mask_of[ei]
            new_type = (ctrl_type_m[mi] + acc.dtype).cpu().numpy()
            res = EngineResult(
                names=[edits[ei].name], readout=tgt, group_names=list(inputs.group_names),
                centroid_names=list(inputs.centroid_names),
                diff_sum=acc.diff_sum.cpu().numpy()[None, None], ctrl_sum=ctrl_sum_m[mi].cpu().numpy()[None, None],
                n_cells=nc[None], zdiff_sum=acc.zdiff.cpu().numpy()[None, None],
                type_changed=acc.type_changed.cpu().numpy()[None, None], new_type=new_type[None, None],
                ctrl_type=ctrl_type_np, ctrl_profiles=None, n_samples=K, stats="cells",
                diff_sq=acc.diff_sq.cpu().numpy()[None], diff_absmax=acc.absmax.cpu().numpy()[None],
                n_changed=acc.n_changed.cpu().numpy()[None])
            return res

        # queue of (edit, rows) segments; accumulators of edits in flight (FIFO: edit order)
        inflight: dict[int, _Acc] = {}
        order: list[int] = []
        seg_e: list[int] = []
        seg_r: list[np.ndarray] = []
        n_rows = 0
        next_e = 0

        def flush():
            nonlocal n_rows
            if not seg_e:
                return
            with ctx():
                _flush()
            seg_e.clear()
            seg_r.clear()
            n_rows = 0

        def _flush():
            cells = np.concatenate(seg_r)
            x = dense_rows(X, cells)
            off = 0
            bounds = []
            for ei, r in zip(seg_e, seg_r):
                k = len(r)
                x[off:off + k] = edits[ei].apply(x[off:off + k])
                bounds.append((ei, off, off + k))
                off += k
            ze = translate_rows(x, cells)
            ct = torch.as_tensor(cells, device=dev)
            zc = z_ctrl[ct]
            d = read(ze) - read(zc)
            zd = ze - zc
            g_all = groups_t[ct]
            tp = nearest(ze, cent) if cent is not None else None
            for ei, a, b in bounds:
                acc = inflight[ei]
                g = g_all[a:b]
                db = d[a:b]
                acc.diff_sum.index_add_(0, g, db.double())
                acc.diff_sq.index_add_(0, g, db.double() ** 2)
                acc.absmax.scatter_reduce_(0, g[:, None].expand(-1, db.shape[1]), db.abs(), "amax",
                                           include_self=True)
                acc.zdiff.index_add_(0, g, zd[a:b].double())
                acc.n_changed.index_add_(0, g, torch.ones(b - a, dtype=torch.long, device=dev))
                if tp is not None:
                    tc = t_ctrl[ct[a:b]]
                    tpe = tp[a:b]
                    acc.type_changed.index_add_(0, g, (tpe != tc).long())
                    one = torch.ones(b - a, dtype=torch.long, device=dev)
                    acc.dtype.index_put_((g, tpe), one, accumulate=True)
                    acc.dtype.index_put_((g, tc), -one, accumulate=True)
                acc.left -= b - a
                if cell_hook is not None:
                    cell_hook(ei, cells[a:b], db.cpu().numpy(), zd[a:b].cpu().numpy())

        def drain():
            while order and inflight[order[0]].left == 0:
                ei = order.pop(0)
                yield ei, finish(ei, inflight.pop(ei))

        cap = max(1, int(batch_rows) // K)
        while next_e < E or seg_e:
            # admit edits while there is room
            while next_e < E and len(inflight) < max_targets_in_flight:
                ei = next_e
                next_e += 1
                rows = rows_of(ei)
                with ctx():
                    inflight[ei] = _Acc(G, F, L, KC, dev, len(rows))
                order.append(ei)
                pos = 0
                while pos < len(rows):
                    take = min(cap - n_rows, len(rows) - pos)
                    seg_e.append(ei)
                    seg_r.append(rows[pos:pos + take])
                    n_rows += take
                    pos += take
                    if n_rows >= cap:
                        flush()
                        yield from drain()
                if n_rows >= cap:
                    flush()
                yield from drain()
            flush()
            yield from drain()
        yield from drain()


def run_mean(model, inputs, edits: Sequence[Edit], **kwargs):
    """All edits of :func:`iter_mean` collected into one ``EngineResult`` (``E`` edits, ``S = 1``)."""
    it = iter_mean(model, inputs, edits, **kwargs)
    _, ctrl = next(it)
    parts = {ei: r for ei, r in it}
    rs = [parts[i] for i in range(len(edits))]
    cat = lambda attr: np.concatenate([getattr(r, attr) for r in rs]) if rs else getattr(ctrl, attr)
    res = EngineResult(names=[e.name for e in edits], readout=ctrl.readout, group_names=ctrl.group_names,
                       centroid_names=ctrl.centroid_names, diff_sum=cat("diff_sum"), ctrl_sum=cat("ctrl_sum"),
                       n_cells=cat("n_cells"), zdiff_sum=cat("zdiff_sum"), type_changed=cat("type_changed"),
                       new_type=cat("new_type"), ctrl_type=ctrl.ctrl_type, ctrl_profiles=ctrl.ctrl_profiles,
                       n_samples=ctrl.n_samples, stats="cells",
                       diff_sq=cat("diff_sq") if rs else np.zeros((0, len(ctrl.group_names), ctrl.diff_sum.shape[-1])),
                       diff_absmax=cat("diff_absmax") if rs else None,
                       n_changed=cat("n_changed") if rs else np.zeros((0, len(ctrl.group_names)), np.int64))
    return res


def cell_effects(model, inputs, edit: Edit, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell paired differences of one edit: ``(d, changed)``.

    ``d`` is ``(n_cells, n_readout_features)`` with zeros for cells not re-translated;
    ``changed`` the boolean mask of re-translated cells. For tests / diagnostics (dense).
    """
    out: dict = {}
    rows_seen = []

    def hook(ei, rows, d, zd):
        if "d" not in out:
            out["d"] = np.zeros((inputs.X.shape[0], d.shape[1]), np.float32)
        out["d"][rows] = d
        rows_seen.append(rows)

    res = run_mean(model, inputs, [edit], cell_hook=hook, **kwargs)
    F = res.diff_sum.shape[-1]
    d = out.get("d", np.zeros((inputs.X.shape[0], F), np.float32))
    changed = np.zeros(inputs.X.shape[0], bool)
    if rows_seen:
        changed[np.concatenate(rows_seen)] = True
    return d, changed
