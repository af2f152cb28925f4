"""Generation: labels of the cells to make, the joint sampling loop, count sampling, the MuData.

:func:`generate_cells` is :meth:`ScDiffusionX.generate` (documented there) with its sampling settings
checked into one :class:`~scdiffx_grn.model._options.SamplingOptions`; the latents come from the
model's :class:`~scdiffx_grn.model._pipeline.DiffusionPipeline`, the counts from the decoders'
likelihoods (:func:`draw_counts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._errors import InputDataError, OptionError, ScdxError
from ._access import require_fitted
from ._guidance import Guidance, HookGuidance, LabelGuidance
from ._options import SamplingOptions

__all__ = ["generate_cells", "label_frame", "draw_counts", "STEP_NOISE_STREAM"]

#: the noise of step ``k`` of stochastic samplers (ddpm) for generated cell ``i`` is
#: ``cell_noise(["gen_<i>"], width, seed, sample=k, stream=STEP_NOISE_STREAM)``: keyed by the cell, not its batch
STEP_NOISE_STREAM = 3


def _step_noise(names, width: int, seed: int, device, step: int) -> torch.Tensor:
    """Noise of sampler step ``step`` for the generated cells ``names`` (see :data:`STEP_NOISE_STREAM`)."""
    from .._modelio import cell_noise

    return cell_noise(names, width, seed, step, stream=STEP_NOISE_STREAM, device=device)


def _label_freqs(model) -> pd.DataFrame:
    f = model.setup.get("label_freqs")
    if f is None:
        raise OptionError("label frequencies unknown (model not trained): pass labels explicitly")
    return pd.DataFrame(f)


def label_frame(model, labels, n_cells: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """One row of labels per cell to generate (an int or ``n_cells`` alone: drawn from training frequencies)."""
    keys = model.config.label_keys
    if isinstance(labels, (int, np.integer)) and n_cells is None:
        labels, n_cells = None, int(labels)
    if n_cells is not None and int(n_cells) < 0:
        raise InputDataError(f"the number of cells to generate must be >= 0, got {n_cells}")
    if labels is None:
        if n_cells is None:
            raise ScdxError("give labels (dict / DataFrame) or n_cells")
        if not keys:
            return pd.DataFrame(index=range(n_cells))
        freqs = _label_freqs(model)
        idx = rng.choice(len(freqs), size=n_cells, p=freqs["p"].to_numpy())
        return freqs.iloc[idx][keys].reset_index(drop=True)
    df = labels.copy() if isinstance(labels, pd.DataFrame) else pd.DataFrame(
        {k: np.atleast_1d(np.asarray(v, dtype=object)) for k, v in labels.items()})
    if n_cells is not None and len(df) == 1:
        df = df.loc[np.zeros(n_cells, dtype=int)].reset_index(drop=True)
    return df.reset_index(drop=True)


def draw_counts(module, rho: np.ndarray, prob: np.ndarray, c0: np.ndarray, rng: np.random.Generator,
                  sample: bool = True):
    """RNA counts and binary peaks from decoded proportions ``rho`` and accessibility ``prob``.

    Library sizes are log-normal per category ``c0`` of the first label (pooled when unknown);
    counts are negative binomial (gamma-Poisson with the decoder's dispersion) and peaks Bernoulli,
    or (``sample=False``) the means and the rounded probabilities. Returns ``(counts, peaks, lib)``.
    """
    mu = module.lib_mu.cpu().numpy()[np.minimum(c0, len(module.lib_mu) - 1)]
    sig = module.lib_sigma.cpu().numpy()[np.minimum(c0, len(module.lib_sigma) - 1)]
    lib = np.exp(rng.normal(mu, sig))
    mean = rho * lib[:, None]
    if sample:
        theta = module.rna_ae.theta.detach().cpu().numpy()[None, :]
        lam = rng.gamma(shape=np.broadcast_to(theta, mean.shape), scale=mean / theta)
        counts = rng.poisson(lam).astype(np.float32)
        peaks = (rng.random(prob.shape) < prob).astype(np.float32)
    else:
        counts = np.round(mean).astype(np.float32)
        peaks = (prob > 0.5).astype(np.float32)
    return counts, peaks, lib


def _guidance(model, n: int, options: SamplingOptions, classifier_guidance, guidance_hook,
              guidance: Guidance | None) -> Guidance:
    given = [g for g in (classifier_guidance, guidance_hook, guidance) if g]
    if len(given) > 1:
        raise ScdxError("give only one of classifier_guidance, guidance_hook and guidance")
    if guidance is not None:
        return guidance
    if classifier_guidance:
        from ._classifier import classifier_guidance as build

        return build(model, classifier_guidance, n, guidance_scale=options.guidance_scale,
                     guidance_mode=options.guidance_mode)
    if guidance_hook is not None:
        return HookGuidance(guidance_hook)
    return LabelGuidance(options.guidance_scale, options.guidance_mode)


@torch.no_grad()
def generate_cells(model, labels, options: SamplingOptions, *, n_cells=None, seed=0, batch_size=1024,
                   sample_counts: bool = True, atac_probs=None, classifier_guidance=None, guidance_hook=None,
                   guidance: Guidance | None = None):
    """:meth:`ScDiffusionX.generate` (see there) with checked sampling ``options``."""
    import anndata as ad
    import mudata as md

    from .._validate import check_count

    require_fitted(model)
    check_count("batch_size", batch_size, 1)
    rng = np.random.default_rng(seed)
    lab = label_frame(model, labels, n_cells, rng)
    n = len(lab)
    if n == 0:
        raise InputDataError("nothing to generate: zero cells asked for")
    cond_all = model.condition_indices({k: lab[k].to_numpy() for k in lab.columns}, n)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    L = model.config.latent_dim
    paired = model.config.paired
    noise = torch.randn((n, 2 * L if paired else L), generator=gen)  # RNA-only: zero-width ATAC latent
    guide = _guidance(model, n, options, classifier_guidance, guidance_hook, guidance)
    model.module.eval()
    dev, pipe = model.device, model.pipeline
    stochastic = pipe.scheduler(options.sampler).stochastic
    names = np.array([f"gen_{i}" for i in range(n)])  # the obs names of the generated cells
    rhos, probs = [], []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        # ddpm's step noise is keyed by cell, step and seed: the same for any batch size
        step_noise = partial(_step_noise, names[s:e], noise.shape[1], seed, dev) if stochastic else None
        z_r, z_a = pipe.sample_joint(cond_all[s:e], noise[s:e, :L].to(dev), noise[s:e, L:].to(dev), options,
                                     guidance=guide, rows=slice(s, e), step_noise=step_noise)
        rhos.append(model.decode_rna(z_r).cpu().numpy())
        probs.append(model.decode_atac(z_a).cpu().numpy() if paired else np.zeros((e - s, 0), np.float32))
    rho, prob = np.concatenate(rhos), np.concatenate(probs)
    c0 = cond_all[:, 0].cpu().numpy() if model.config.label_keys else np.zeros(n, dtype=int)
    counts, peaks, lib = draw_counts(model.module, rho, prob, c0, rng, sample_counts)
    obs = lab.astype(str).copy()
    obs.index = names
    rna = ad.AnnData(X=sp.csr_matrix(counts), obs=obs.copy(), var=pd.DataFrame(index=model.rna_var_names))
    rna.layers["counts"] = rna.X.copy()
    rna.obs["library_size"] = lib
    mods = {"rna": rna}
    if paired:
        atac = ad.AnnData(X=sp.csr_matrix(peaks), obs=obs.copy(), var=pd.DataFrame(index=model.atac_var_names))
        if atac_probs or (atac_probs is None and prob.size <= 2e8):
            atac.layers["prob"] = prob.astype(np.float32)
        mods["atac"] = atac
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    for c in obs.columns:
        mdata.obs[c] = obs[c].astype("category")
    gs = options.guidance_scale
    mdata.uns["generation"] = {"sampler": options.sampler, "n_steps": int(options.n_steps), "seed": int(seed),
                               "guidance_scale": dict(gs) if isinstance(gs, Mapping) else gs,
                               "guidance_mode": options.guidance_mode}
    return mdata
