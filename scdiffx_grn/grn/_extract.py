"""``tl.extract_grn``: cell-type-specific peak -> gene networks from a trained scDiffusion-X model.

The one runner of the scoring methods of :mod:`scdiffx_grn.grn._methods`: candidates, groups of
cells, subsampling, one kernel call per group, the tidy table, the storage contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

import scdiffx_grn._store as _store
from .._errors import MissingLabelError, OptionError, ScdxError, _fmt_items
from .._modelio import subsample_by_name
from .._registry import labels as _labels
from .._settings import logger, progress
from ._genomic import peak_gene_candidates
from ._methods import METHODS, Method, get_method
from ._network import group_column_for, network_table, tag

__all__ = ["METHODS", "extract_grn"]

_SUBSAMPLE_STREAM = 17  # cell_keys stream of the per-group subsampling (apart from the noise streams)


def _candidates(model, mdata, candidates, tss, window):
    if candidates is None:
        if tss is None:
            raise ScdxError("extract_grn needs candidate pairs: pass tss= (a TSS table or file, see grn.read_tss) "
                            "or candidates= (a peak, gene DataFrame, or the uns key of tl.peak_gene_candidates)")
        candidates = peak_gene_candidates(mdata.mod["atac"], genes=list(model.rna_var_names), tss_table=tss,
                                          window=window)
        if len(candidates) == 0:
            from ._genomic import _genome_of, read_tss, tss_hint

            raise ScdxError(f"no peak lies within {int(window):,} bp of a TSS of the model's genes: no candidate "
                            "peak -> gene pair." + tss_hint(read_tss(tss), model.rna_var_names, _genome_of(mdata),
                                                            window))
    elif isinstance(candidates, str):
        candidates = network_table(mdata, candidates, table="candidates")
    if not isinstance(candidates, pd.DataFrame):
        raise OptionError(f"candidates must be a peak, gene DataFrame or an uns key, got {type(candidates).__name__}")
    cand = candidates.rename(columns={"source": "peak", "target": "gene"}).copy()
    missing = [c for c in ("peak", "gene") if c not in cand]
    if missing:
        raise OptionError(f"candidates lack the column(s) {missing} (peak / source, gene / target); "
                          f"columns: {_fmt_items(candidates.columns)}")
    cand["peak"] = cand["peak"].astype(str)
    cand["gene"] = cand["gene"].astype(str)
    g_ok = cand["gene"].isin(set(model.rna_var_names))
    p_ok = cand["peak"].isin(set(model.atac_var_names))
    if (~g_ok).any() or (~p_ok).any():
        logger.info("dropping %d candidate pairs whose gene/peak the model does not know", int((~(g_ok & p_ok)).sum()))
    cand = cand[g_ok & p_ok].drop_duplicates(["peak", "gene"]).reset_index(drop=True)
    if len(cand) == 0:
        raise ScdxError("no candidate peak -> gene pair within the window uses the model's genes and peaks")
    return cand


def extract_grn(model, mdata, *, method: str | Method = "attention", groupby: str | None = "cell_type",
                candidates: pd.DataFrame | str | None = None, tss=None, window: int = 150_000,
                cell_types: Sequence[str] | None = None, max_cells: int | None = 500, min_cells: int = 5,
                batch_size: int = 64, key_added: str = "grn", copy: bool = False, seed: int = 0,
                **method_kwargs):
    """Cell-type-specific peak -> gene network from a trained scDiffusion-X model.

    Candidate pairs (peak centre within ``window`` bp of the gene's TSS) are scored per group of
    cells by one method (a kernel of :mod:`scdiffx_grn.grn._methods`; :func:`show_methods` lists
    them with their options):

    - ``"attention"`` (the scDiffusion-X recipe): RNA <- ATAC Dual-Cross-Attention of the
      denoiser on real cells of the type (RNA latent noised to each of ``timesteps``, ATAC clean
      unless ``noise_atac``), reduced over heads (``head_reduce``), ``layers``, cells and
      timesteps, mapped to genes / peaks with encoder gradient saliency:
      ``score(p, g) = S_rna[:, g]^T A S_atac[:, p]``. Options: ``timesteps=(100, 300, 500)``,
      ``layers=None``, ``head_reduce="mean"``, ``noise_atac=False``.
    - ``"integrated_gradients"``: integrated gradients (captum's quadrature) of the ATAC -> RNA
      translated expression (log1p CP10k) of each candidate gene w.r.t. its candidate peaks,
      averaged over cells; in closed form over the candidate pairs through the latent Jacobians
      (``ig_engine="jacobian"``: one Jacobian of each side per cell, memory-bounded chunks) or one captum call per gene (``"captum"``, same numbers,
      slower). Options: ``ig_baseline="zeros"`` (or ``"mean"``), ``ig_steps=16``,
      ``ig_engine``, ``sampler="ddim"``, ``translate_steps=10``, ``readout="mean"``.
    - ``"consensus"``: an evidence table per pair (``ev_distance`` prior, ``ev_correlation``
      over metacells of the group's train cells, ``ev_accessibility``, ``ev_model`` = the
      ``model_evidence`` method's score, knockout by default, on ``max_cells`` cells; the data
      evidence reads every cell of the group) and ``weight`` = the mean percentile rank of the
      evidences chosen (``w_<evidence>``, ``carried_by``, ``params["consensus"]``) by k-fold
      cross-validation of the network's held-out prediction of its targets from their linked
      peaks on the train cells: a combination only when it beats the best single evidence by
      more than a standard error (see :mod:`scdiffx_grn.grn._consensus` and
      :func:`scdiffx_grn.eval.grn_predictive`). Options: ``model_evidence``,
      ``n_metacells=20``, ``n_random=5``, ``n_folds=5``, ``pool=30``, ``weights_by="network"``.
    - ``"knockout"``: in-silico closing of each candidate peak (``knockout_group="peak"``) or of
      all candidate peaks of a gene (``"gene"``); score = drop of translated expression
      (log1p CP10k), paired noise. Options: ``knockout_group``, ``sampler``,
      ``translate_steps``, ``n_samples=1``, ``readout``, ``knockout_engine="exact"`` (only the
      (cell, peak) edits where the peak is open are translated, in sparse blocks; cells where it is
      already closed have exactly 0 effect) or ``"linear"`` (the first-order approximation
      ``-x_p dy/dx_p`` in closed form, one Jacobian per cell; an approximation).

    ``readout`` (integrated gradients, knockout): ``"mean"`` the posterior mean (one denoiser call
    per cell for v / x0 / flow models; epsilon models run a DDIM trajectory of
    ``translate_steps``), or ``"samples"``: a sampled trajectory (``sampler``,
    ``translate_steps``; ``n_samples`` samples averaged for knockout).

    Parameters
    ----------
    model
        A trained :class:`scdiffx_grn.ScDiffusionX` (or anything with its tensor API).
    mdata
        Paired MuData with the model's genes and peaks.
    method
        A method name (``"attention"``, ``"integrated_gradients"``, ``"knockout"``; see
        :func:`show_methods`) or a :class:`Method` instance.
    groupby
        Cell label column (read with the one label lookup, :func:`scdiffx_grn._registry.labels`);
        one network per group. ``None``: all cells, one group ``"all"`` in a column ``group``.
    candidates
        Precomputed ``peak, gene[, distance]`` pairs (overrides ``tss``/``window``), or the
        ``uns`` key where :func:`peak_gene_candidates` stored them.
    tss, window
        TSS annotation (see :func:`scdiffx_grn.grn.read_tss`) and candidate window (bp).
    cell_types
        Restrict to these groups.
    max_cells
        Subsample at most this many cells per group (``None``: all), chosen by cell name and
        ``seed`` (:func:`~scdiffx_grn._modelio.subsample_by_name`): a group's cells, and so its
        network, do not depend on the other groups, on ``cell_types`` or on the row order.
    min_cells
        Groups with fewer cells are skipped (with a log message).
    batch_size
        Cells per batch.
    key_added
        ``mdata.uns`` key of the result.
    copy
        ``False``: write into ``mdata`` and return ``None``; ``True``: leave ``mdata`` untouched
        and return a modified copy.
    seed
        Seed of subsampling and noise.
    **method_kwargs
        Options of the chosen method (above). A keyword the method does not take (e.g.
        ``timesteps`` with ``method="knockout"``) raises :class:`~scdiffx_grn.OptionError` naming
        the valid ones.

    Notes
    -----
    Model-based scores are only as informative as the model's dependence of the translated
    expression on the ATAC input: check it first with
    :func:`scdiffx_grn.eval.source_dependence` (own vs shuffled ATAC). Integrated gradients and
    knockout measure that dependence directly; attention does not (see BENCHMARKS.md).

    Returns
    -------
    ``None`` (``copy=False``) or the modified copy (``copy=True``). ``uns[key_added]`` holds
    ``{"params": {...}, "network": df}`` with ``df`` columns ``source (peak), target (gene),
    weight, <groupby>, distance, method, n_cells`` (the group column is named after
    ``groupby``, ``group`` for ``groupby=None``) and, with several groups, ``specificity``: the
    edge's |weight| divided by its group's mean |weight|, minus the mean of that over the other
    groups (:func:`scdiffx_grn.grn.type_specificity`). Rank by ``weight`` for a group's strongest
    links (mostly the same pairs in every group), by ``specificity`` for the links that set the
    group apart. Read it with ``get.grn_df`` or :func:`network_table`.

    Raises
    ------
    OptionError
        An unknown method, a keyword of another method, or a bad option value.
    MissingLabelError
        ``groupby`` is not a label column, or ``cell_types`` names groups it does not hold.
    """
    meth = get_method(method)
    opts = meth.resolve(method_kwargs)
    gcol = group_column_for(groupby)
    if max_cells is not None and int(max_cells) < 1:
        raise OptionError(f"max_cells must be a positive integer or None, got {max_cells!r}")
    if int(batch_size) < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    from ._scores import cond_for, model_inputs

    cand = _candidates(model, mdata, candidates, tss, window)
    labels = _labels(mdata, groupby).to_numpy()
    groups = list(pd.unique(labels)) if cell_types is None else [str(c) for c in cell_types]
    missing = [g for g in groups if g not in set(labels)]
    if missing:
        raise MissingLabelError(f"cell types not in {groupby!r}: {_fmt_items(missing)}")
    X_rna, X_atac = model_inputs(model, mdata)
    obs_names = np.asarray(mdata.obs_names.astype(str))
    parts, info = [], {}
    for g in progress(sorted(groups), desc=f"extract_grn[{meth.name}]"):
        idx = np.flatnonzero(labels == g)
        if len(idx) < min_cells:
            logger.info("skipping cell type %r: %d cells < min_cells=%d", g, len(idx), min_cells)
            continue
        full = idx
        if max_cells is not None and len(idx) > max_cells:  # by cell name: a group's cells never depend on others
            idx = idx[subsample_by_name(obs_names[idx], max_cells, seed, stream=_SUBSAMPLE_STREAM)]
        sel, more = (full, {"model_cells": np.isin(full, idx)}) if meth.full_group else (idx, {})
        cond = cond_for(model, mdata, sel)
        names = np.asarray(mdata.obs_names)[sel]
        w = meth(model, X_rna[sel], X_atac[sel], cond, cand, batch_size=batch_size, seed=seed, cell_names=names,
                 **more, **opts)
        if isinstance(w, pd.DataFrame) and w.attrs:
            info[g] = dict(w.attrs)
        extra = w.drop(columns="weight") if isinstance(w, pd.DataFrame) else None
        df = pd.DataFrame({"source": cand["peak"].to_numpy(), "target": cand["gene"].to_numpy(),
                           "weight": np.asarray(w["weight"] if extra is not None else w, float), gcol: g})
        if "distance" in cand:
            df["distance"] = cand["distance"].to_numpy()
        df["method"] = meth.name
        df["n_cells"] = len(idx)
        for c in (extra.columns if extra is not None else ()):
            df[c] = extra[c].to_numpy()
        parts.append(df)
    if not parts:
        raise ScdxError(f"no group of {groupby!r} has at least min_cells={min_cells} cells")
    out = pd.concat(parts, ignore_index=True)
    more_params = {}
    if meth.finalize is not None:  # one choice over every group (e.g. the consensus combination)
        data = {"model": model, "X_rna": X_rna, "X_atac": X_atac, "labels": labels, "names": obs_names,
                "candidates": cand, "batch_size": batch_size, "seed": seed}
        out, more_params = meth.finalize(out, gcol, info, opts, data)
    if out[gcol].nunique() > 1:
        # every type scores the same candidate pairs and types differ in overall scale: keep, per
        # edge, its type-scaled weight relative to the other types (see grn.type_specificity)
        from ._specific import add_specificity

        out = add_specificity(out, group=gcol)
    tag(out, gcol)
    params = {"method": meth.name, **opts, "groupby": groupby, "group_column": gcol,
              "cell_types": cell_types, "max_cells": max_cells, "min_cells": min_cells, "batch_size": batch_size,
              "seed": seed, "n_candidates": len(cand),
              "candidates": candidates if isinstance(candidates, str) else None,
              "window": window if candidates is None else None, **more_params}
    target = _store.target(mdata, copy)
    _store.store(target, key_added, {"network": out}, params)
    return _store.done(target, copy)
