"""``tl.extract_grn``: cell-type-specific peak -> gene networks from a trained scDiffusion-X model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import MissingLabelError, ScdxError, _fmt_items
from .._settings import logger, progress
from ._genomic import peak_gene_candidates

__all__ = ["METHODS", "extract_grn"]

METHODS = ("attention", "integrated_gradients", "knockout")


def _candidates(model, mdata, candidates, tss, window):
    if candidates is None:
        if tss is None:
            raise ScdxError("extract_grn needs candidate pairs: pass tss= (a TSS table or file, see grn.read_tss) "
                            "or candidates= (a peak, gene DataFrame)")
        candidates = peak_gene_candidates(mdata.mod["atac"], genes=list(model.rna_var_names), tss_table=tss,
                                          window=window)
    cand = candidates.rename(columns={"source": "peak", "target": "gene"}).copy()
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


def extract_grn(model, mdata, *, groupby: str | None = "cell_type", method: str = "attention",
                window: int = 150_000, tss=None, candidates: pd.DataFrame | None = None,
                cell_types: Sequence[str] | None = None, timesteps: Sequence[int] = (100, 300, 500),
                layers: Sequence[int] | None = None, head_reduce: str = "mean", noise_atac: bool = False,
                ig_baseline: str = "zeros", ig_steps: int = 16, ig_engine: str = "jacobian",
                knockout_group: str = "peak",
                sampler: str = "ddim", translate_steps: int = 10, n_samples: int = 1, readout: str = "mean",
                key_added: str = "grn", batch_size: int = 64, max_cells: int | None = 500,
                min_cells: int = 5, seed: int = 0, copy: bool = False):
    """Cell-type-specific peak -> gene network from a trained scDiffusion-X model.

    Candidate pairs (peak centre within ``window`` bp of the gene's TSS) are scored per cell
    type with one of three methods:

    - ``"attention"`` (the scDiffusion-X recipe): RNA <- ATAC Dual-Cross-Attention of the
      denoiser on real cells of the type (RNA latent noised to each of ``timesteps``, ATAC clean
      unless ``noise_atac``), reduced over heads (``head_reduce``), ``layers``, cells and
      timesteps, mapped to genes / peaks with encoder gradient saliency:
      ``score(p, g) = S_rna[:, g]^T A S_atac[:, p]``.
    - ``"integrated_gradients"``: integrated gradients (captum's quadrature) of the ATAC -> RNA
      translated expression (log1p CP10k) of each candidate gene w.r.t. its candidate peaks
      (``ig_baseline`` ``"zeros"`` / ``"mean"``, ``ig_steps``), averaged over cells; every gene
      at once through the latent Jacobian (``ig_engine="jacobian"``) or one captum call per gene
      (``"captum"``, same numbers, slower).
    - ``"knockout"``: in-silico closing of each candidate peak (``knockout_group="peak"``) or of
      all candidate peaks of a gene (``"gene"``); score = drop of translated expression
      (log1p CP10k), paired noise.

    Parameters
    ----------
    model
        A trained :class:`scdiffx_grn.ScDiffusionX` (or anything with its tensor API).
    mdata
        Paired MuData with the model's genes and peaks.
    groupby
        Cell label column; one network per group (``None``: all cells, ``cell_type="all"``).
    method
        ``"attention"``, ``"integrated_gradients"`` or ``"knockout"``.
    window, tss
        Candidate window (bp) and TSS annotation (see :func:`scdiffx_grn.grn.read_tss`).
    candidates
        Precomputed ``peak, gene[, distance]`` pairs (overrides ``tss``/``window``).
    cell_types
        Restrict to these groups.
    timesteps, layers, head_reduce, noise_atac
        Attention options.
    ig_baseline, ig_steps, ig_engine
        Integrated-gradients options (see :func:`scdiffx_grn.grn.ig_scores`).
    readout
        Translation used by integrated gradients and knockout: ``"mean"`` (default) the
        posterior mean (one denoiser call per cell for v / x0 / flow models; ``n_samples``
        noises averaged in latent space for knockout), or ``"samples"``: a sampled trajectory
        (``sampler``, ``translate_steps`` steps; ``n_samples`` samples averaged for knockout).
        Epsilon-prediction models run a DDIM trajectory of ``translate_steps`` for ``"mean"``.
        Knockout skips the cells where a peak is already closed (exactly 0 effect).
    knockout_group, sampler, translate_steps, n_samples
        Knockout / translation options (IG uses ``sampler`` and ``translate_steps`` too).
    key_added
        ``mdata.uns`` key of the result.
    batch_size
        Cells per batch.
    max_cells
        Subsample at most this many cells per group (``None``: all).
    min_cells
        Groups with fewer cells are skipped (with a log message).
    seed
        Seed of subsampling and noise.
    copy
        Return the table instead of ``None`` (it is stored either way).

    Notes
    -----
    Model-based scores are only as informative as the model's dependence of the translated
    expression on the ATAC input: check it first with
    :func:`scdiffx_grn.eval.source_dependence` (own vs shuffled ATAC). Integrated gradients and
    knockout measure that dependence directly; attention does not (see BENCHMARKS.md).

    Returns
    -------
    ``None`` (``copy=False``); ``mdata.uns[key_added]`` holds a DataFrame ``source (peak),
    target (gene), weight, cell_type, distance, method, n_cells`` and, with several groups,
    ``specificity``: the edge's |weight| divided by its type's mean |weight|, minus the mean of
    that over the other types (:func:`scdiffx_grn.grn.type_specificity`). Rank by ``weight``
    for a type's strongest links (mostly the same pairs in every type), by ``specificity`` for
    the links that set the type apart.
    """
    if method not in METHODS:
        raise ScdxError(f"method must be one of {METHODS}, got {method!r}")
    if readout not in ("mean", "samples"):
        raise ScdxError(f"readout must be 'mean' or 'samples', got {readout!r}")
    from ._metacells import obs_labels
    from ._scores import (
        attention_scores,
        cond_for,
        ig_scores,
        knockout_scores,
        model_inputs,
    )

    cand = _candidates(model, mdata, candidates, tss, window)
    labels = obs_labels(mdata, groupby)
    groups = list(pd.unique(labels)) if cell_types is None else [str(c) for c in cell_types]
    missing = [g for g in groups if g not in set(labels)]
    if missing:
        raise MissingLabelError(f"cell types not in {groupby!r}: {_fmt_items(missing)}")
    X_rna, X_atac = model_inputs(model, mdata)
    rng = np.random.default_rng(seed)
    parts = []
    for g in progress(sorted(groups), desc=f"extract_grn[{method}]"):
        idx = np.flatnonzero(labels == g)
        if len(idx) < min_cells:
            logger.info("skipping cell type %r: %d cells < min_cells=%d", g, len(idx), min_cells)
            continue
        if max_cells is not None and len(idx) > max_cells:
            idx = np.sort(rng.choice(idx, max_cells, replace=False))
        cond = cond_for(model, mdata, idx)
        Xr, Xa = X_rna[idx], X_atac[idx]
        names = np.asarray(mdata.obs_names)[idx]
        if method == "attention":
            w = attention_scores(model, Xr, Xa, cond, cand, timesteps=timesteps, layers=layers,
                                 head_reduce=head_reduce, noise_atac=noise_atac, batch_size=batch_size, seed=seed)
        elif method == "integrated_gradients":
            w = ig_scores(model, Xa, cond, cand, baseline=ig_baseline, n_steps=ig_steps, sampler=sampler,
                          engine=ig_engine, translate_steps=translate_steps, batch_size=batch_size, seed=seed,
                          readout=readout, cell_names=names)
        else:
            w = knockout_scores(model, Xa, cond, cand, group=knockout_group, sampler=sampler,
                                n_steps=translate_steps, n_samples=n_samples, batch_size=batch_size, seed=seed,
                                readout=readout, cell_names=names)
        df = pd.DataFrame({"source": cand["peak"].to_numpy(), "target": cand["gene"].to_numpy(),
                           "weight": np.asarray(w, float), "cell_type": g})
        if "distance" in cand:
            df["distance"] = cand["distance"].to_numpy()
        df["method"] = method
        df["n_cells"] = len(idx)
        parts.append(df)
    if not parts:
        raise ScdxError(f"no group of {groupby!r} has at least min_cells={min_cells} cells")
    out = pd.concat(parts, ignore_index=True)
    if out["cell_type"].nunique() > 1:
        # every type scores the same candidate pairs and types differ in overall scale: keep, per
        # edge, its type-scaled weight relative to the other types (see grn.type_specificity)
        from ._specific import add_specificity

        out = add_specificity(out)
    mdata.uns[key_added] = out
    return out if copy else None
