"""Paired-seed perturbation engines.

Two engines share the inputs (:func:`prepare_inputs`) and the result type (:class:`EngineResult`):

- the **posterior-mean engine** (``readout="mean"``, the default of ``tl.perturb`` /
  ``tl.screen``; :mod:`._mean`): one denoiser call per edited cell, unchanged cells skipped
  exactly, statistics over cells;
- the **sampled engine** (``readout="samples"``, :func:`run_paired`): every cell is translated
  by the sampler (``sampler``, ``n_steps`` in ``translate_kwargs``) for ``n_samples`` noise
  draws; statistics over samples, for when the model's sampling uncertainty is wanted.

Control and perturbed inputs of the same cell are translated with the *same* diffusion noise
(keyed by the cell's obs name, the seed and the sample index:
:func:`~scdiffx_grn._modelio.cell_noise`), so a perturbation that edits nothing has an effect
of exactly zero and the sampling noise cancels in the paired difference. In the sampled engine
several perturbations are stacked along the batch dimension and the control arm is computed
once per cell batch and sample, so a screen costs about ``(1 + n_targets) / batch_targets``
translation calls per cell batch and sample.

Only per-group sums are accumulated (``samples x groups x features`` per perturbation); no
``cells x peaks x genes`` tensors are ever built.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError, _fmt_items
from .._modelio import (
    Edit,
    PairedBatch,
    cell_conditions,
    cell_noise,
    dense_rows,
    eval_mode,
    feature_matrix,
    label_keys,
    latent_dim,
    model_features,
    other_modality,
)
from .._registry import labels as registry_labels
from ._base import (
    READOUTS,
    EngineInputs,
    EngineResult,
    cell_names,
    engine_autocast,
    group_column,
    nearest,
    noise_dim,
)

__all__ = ["Edit", "EngineInputs", "EngineResult", "READOUTS", "run_paired", "prepare_inputs", "model_features",
           "peak_knockout_effect"]


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
    # the registry's one label lookup (mdata.obs, then "rna:<key>", then the modalities' obs); a
    # missing column or unlabelled cells raise MissingLabelError naming them
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


# --------------------------------------------------------------------------- engine
def run_paired(
    model,
    inputs: EngineInputs,
    edits: Sequence[Edit],
    *,
    n_samples: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    batch_targets: int = 8,
    max_batch_elements: int = 2**24,
    n_pca_cells: int = 1000,
    translate_kwargs: dict | None = None,
    progress_bar: bool = False,
) -> EngineResult:
    """Translate control and edited inputs with paired noise and accumulate group sums.

    Parameters
    ----------
    model
        Model with the tensor API (``rna_tensor``, ``atac_tensor``, ``encode``,
        ``translate_latent``, ``decode_rna``, ``decode_atac``).
    inputs
        From :func:`prepare_inputs`.
    edits
        Perturbations to apply (each to the cells in its ``cell_mask``).
    n_samples
        Noise draws per cell.
    seed
        Noise of cell ``c`` in sample ``s``: ``cell_noise(obs_name(c), seed, s)`` (independent of
        the cell's row and batch-mates).
    batch_size
        Cells per batch.
    batch_targets
        Edits stacked into one translation call; the stacked batch is further capped so that
        ``rows x features <= max_batch_elements``.
    n_pca_cells
        Cells (evenly spaced) whose control profiles are kept for the PCA basis.
    translate_kwargs
        Passed to ``model.translate_latent`` (``sampler``, ``n_steps``, ``guidance_scale``) with
        ``readout="samples"`` (this is the sampled engine; see :func:`._mean.run_mean` for the
        posterior-mean one).
    """
    import torch

    from .._settings import progress

    translate_kwargs = dict(translate_kwargs or {})
    if translate_kwargs.get("readout", "samples") != "samples":
        raise OptionError(f"translate_kwargs readout={translate_kwargs['readout']!r}: run_paired is the sampled "
                          "engine (readout='samples'); the posterior-mean engine is run_mean")
    translate_kwargs["readout"] = "samples"

    src = inputs.src
    n = inputs.X.shape[0]
    n_src_feat = inputs.X.shape[1]
    G, E, S = len(inputs.group_names), len(edits), int(n_samples)
    K = len(inputs.centroid_names)
    groups_t = torch.as_tensor(inputs.groups, dtype=torch.long)
    masks = [np.ones(n, bool) if e.cell_mask is None else np.asarray(e.cell_mask, bool) for e in edits]
    for e, m in zip(edits, masks):
        if m.shape != (n,):
            raise InputDataError(f"cell mask of {e.name!r} has shape {m.shape}, expected ({n},)")
    pca_rows = np.unique(np.linspace(0, n - 1, min(n, n_pca_cells)).round().astype(int)) if n_pca_cells else np.array([], int)
    pca_pos = {r: i for i, r in enumerate(pca_rows)}

    diff_sum = ctrl_sum = zdiff_sum = ctrl_prof = None
    n_cells = np.zeros((E, G), np.int64)
    for ei, m in enumerate(masks):
        n_cells[ei] = np.bincount(inputs.groups[m], minlength=G)
    type_changed = torch.zeros(E, S, G, dtype=torch.long)
    new_type = torch.zeros(E, S, G, max(K, 1), dtype=torch.long)
    ctrl_type = torch.zeros(S, G, max(K, 1), dtype=torch.long)
    noise_all = None
    cent = inputs.centroids

    cell_batches = [np.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    it = progress(cell_batches, desc="perturb", disable=not progress_bar) if progress_bar else cell_batches
    names = cell_names(inputs, n)
    with eval_mode(model), torch.inference_mode(), engine_autocast(model):
        for rows in it:
            rows_t = torch.as_tensor(rows)
            if noise_all is None:
                d = noise_dim(model, latent_dim(model, src, inputs.X))
                noise_all = [cell_noise(names, d, seed, s) for s in range(S)]
            cond_b = None if inputs.cond is None else inputs.cond[rows_t]
            # control arm: once per batch and sample
            pb = PairedBatch(model, src, dense_rows(inputs.X, rows), [nz[rows_t] for nz in noise_all], cond_b,
                             translate_kwargs)
            gb = groups_t[rows_t]
            for s, (zt, y) in enumerate(pb.ctrl):
                if diff_sum is None:
                    F = y.shape[1]
                    diff_sum = torch.zeros(E, S, G, F)
                    ctrl_sum = torch.zeros(E, S, G, F)
                    zdiff_sum = torch.zeros(E, S, G, zt.shape[1])
                    ctrl_prof = torch.zeros(len(pca_rows), F)
                if cent is not None:
                    t_ctrl = nearest(zt, cent)
                    ctrl_type[s].index_put_((gb, t_ctrl), torch.ones(len(rows), dtype=torch.long), accumulate=True)
                sel = [i for i, r in enumerate(rows) if r in pca_pos]
                if sel:
                    ctrl_prof[[pca_pos[rows[i]] for i in sel]] += y[sel] / S
            # perturbed arms: stack edits
            active = [ei for ei in range(E) if masks[ei][rows].any()]
            max_rows = max(len(rows), max_batch_elements // max(n_src_feat, diff_sum.shape[-1], 1))
            chunk_edits = max(1, min(batch_targets, max_rows // max(len(rows), 1)))
            for c0 in range(0, len(active), chunk_edits):
                chunk = active[c0:c0 + chunk_edits]
                loc = [np.flatnonzero(masks[ei][rows]) for ei in chunk]
                outs, _ = pb.edited([edits[ei] for ei in chunk], loc)
                for s, (zt, y) in enumerate(outs):
                    zc, yc_all = pb.ctrl[s]
                    t_p = nearest(zt, cent) if cent is not None else None
                    off = 0
                    for ei, li in zip(chunk, loc):
                        k = len(li)
                        li = torch.as_tensor(li)
                        g = gb[li]
                        yc = yc_all[li]
                        diff_sum[ei, s].index_add_(0, g, y[off:off + k] - yc)
                        ctrl_sum[ei, s].index_add_(0, g, yc)
                        zdiff_sum[ei, s].index_add_(0, g, zt[off:off + k] - zc[li])
                        if t_p is not None:
                            tp = t_p[off:off + k]
                            tc = nearest(zc[li], cent)
                            type_changed[ei, s].index_add_(0, g, (tp != tc).long())
                            new_type[ei, s].index_put_((g, tp), torch.ones(k, dtype=torch.long), accumulate=True)
                        off += k
    if diff_sum is None:
        raise InputDataError("no cells to perturb")
    return EngineResult(
        names=[e.name for e in edits], readout=other_modality(src), group_names=list(inputs.group_names),
        centroid_names=list(inputs.centroid_names), diff_sum=diff_sum.numpy(), ctrl_sum=ctrl_sum.numpy(),
        n_cells=n_cells, zdiff_sum=zdiff_sum.numpy(), type_changed=type_changed.numpy(),
        new_type=new_type.numpy(), ctrl_type=ctrl_type.numpy(),
        ctrl_profiles=ctrl_prof.numpy() if len(pca_rows) else None, n_samples=S)


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
    ATAC -> RNA with paired noise, and the mean log-normalised expression difference
    ``log1p(1e4 rho_closed) - log1p(1e4 rho_ctrl)`` is averaged over cells (then samples).
    With the default posterior-mean readout only cells where the peak is open are re-translated
    (closing a closed peak changes nothing: difference exactly 0) and ``se`` is the standard
    error over cells; with ``readout="samples"`` (``n_samples`` sampled translations per cell,
    ``translate_kwargs`` ``sampler`` / ``n_steps``) it is the standard error over samples.

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
        Paired noise draws and seed.
    cells
        Boolean mask of cells (MuData input only).
    groupby
        Report per group of this label column (MuData input only); default: all cells pooled.
    readout, n_noise, batch_rows
        ``"mean"`` (default: posterior-mean engine, ``n_noise`` noises, ``batch_rows`` rows per
        call) or ``"samples"`` (sampled engine, ``n_samples``, ``batch_size``, ``batch_targets``).

    Returns
    -------
    pandas.DataFrame
        Columns ``peak, gene, <groupby>, effect, se`` (the group column is named after ``groupby``;
        ``group``, holding ``"all"`` or the dict's ``groups``, when ``groupby`` is ``None``): one row
        per peak x gene (x group).
    """
    from .._errors import UnknownFeatureError

    if kind not in ("close", "open"):
        raise OptionError(f"kind must be 'close' or 'open', got {kind!r}")
    if readout not in READOUTS:
        raise OptionError(f"readout must be one of {READOUTS}, got {readout!r}")
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
    if readout == "mean":
        from ._mean import run_mean

        res = run_mean(model, inputs, edits, n_noise=n_noise, seed=seed, batch_rows=batch_rows, n_pca_cells=0,
                       translate_kwargs=translate_kwargs)
        nc = np.maximum(res.n_cells, 1)[:, :, None]
        eff = res.diff_sum[:, 0][..., gsel] / nc
        var = np.maximum(res.diff_sq[..., gsel] / nc - eff ** 2, 0.0) * (nc / np.maximum(nc - 1, 1))
        se = np.where(nc > 1, np.sqrt(var / nc), np.nan)
    else:
        res = run_paired(model, inputs, edits, n_samples=n_samples, seed=seed, batch_size=batch_size,
                         batch_targets=batch_targets, n_pca_cells=0, translate_kwargs=translate_kwargs)
        per = res.diff_sum[..., gsel] / np.maximum(res.n_cells, 1)[:, None, :, None]  # E,S,G,F
        eff = per.mean(axis=1)
        se = per.std(axis=1, ddof=1) / np.sqrt(res.n_samples) if res.n_samples > 1 else np.full_like(eff, np.nan)
    E, G, F = eff.shape
    return pd.DataFrame({
        "peak": np.repeat(res.names, G * F),
        "gene": np.tile(np.asarray(mgenes)[gsel], E * G),
        gcol: np.tile(np.repeat(res.group_names, F), E),
        "effect": eff.ravel(), "se": se.ravel()})
