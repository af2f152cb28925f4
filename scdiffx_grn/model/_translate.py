"""Cell-level translation and latents: MuData in, AnnData / arrays out.

:func:`translate_cells` is :meth:`ScDiffusionX.translate` (documented there) after the facade has
resolved the readout (:func:`resolve_readout`) and checked the settings into one
:class:`~scdiffx_grn.model._options.SamplingOptions`: it streams the source modality in batches
(:func:`~scdiffx_grn.model._access.row_source`), gives each cell noise keyed by its obs name
(``model.cell_noise`` and, for stochastic samplers, ``model.step_noise``: the noise convention the
perturbation engine and the GRN scores share) and translates each batch's latents with the
pipeline (:meth:`~scdiffx_grn.model._pipeline.DiffusionPipeline.translate_latents`).
:func:`encode_cells` encodes one modality (:meth:`ScDiffusionX.get_latent`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._errors import InputDataError, OptionError, ScdxError
from .._vocab import READOUTS, check_option, split_direction
from ._access import check_features, labels_for, require_fitted, require_paired, row_source
from ._options import SamplingOptions

__all__ = ["translate_cells", "resolve_readout", "encode_cells"]


def resolve_readout(readout, n_samples, n_noise, method) -> tuple[str, int | None]:
    """``(readout, n_samples)`` of a translation request: ``readout=None`` is ``"samples"`` when
    ``n_samples`` is given or ``method`` is not ``"conditional"``, else ``"mean"``; the samples
    readout draws 10 samples by default."""
    if readout is None:
        readout = "samples" if (n_samples is not None or method != "conditional") else "mean"
    check_option("readout", readout, READOUTS)
    if readout == "samples":
        n_samples = 10 if n_samples is None else int(n_samples)
        if n_samples < 1:
            raise OptionError(f"n_samples must be >= 1, got {n_samples}")
    elif method != "conditional":
        raise ScdxError(f"method={method!r} needs readout='samples' (the mean readout is conditional)")
    if int(n_noise) < 1:
        raise OptionError(f"n_noise must be >= 1, got {n_noise}")
    return readout, n_samples


@torch.no_grad()
def translate_cells(model, mdata, direction: str, options: SamplingOptions, *, n_samples: int | None = None,
                    n_noise: int = 4, seed: int = 0, labels=None, batch_size: int = 512, return_samples: bool = False,
                    calibration: dict | None = None):
    """:meth:`ScDiffusionX.translate` (see there) with checked ``options`` (``options.readout`` resolved
    by :func:`resolve_readout`, as is ``n_samples``). ``calibration``: a record of
    :func:`~scdiffx_grn.model._calibration.fit_logit_calibration` or ``fit_readout_head`` applied to
    the ATAC logits of the mean readout (``None``: none)."""
    import anndata as ad

    from .._settings import progress

    src, _ = split_direction(direction)
    require_paired(model, "translation")
    require_fitted(model)
    from .._settings import _apply_threads

    _apply_threads()
    readout = options.readout
    tgt_names = model.rna_var_names if src == "atac" else model.atac_var_names
    order = check_features(model, mdata, (src,))[src]
    X = row_source(model, mdata, src, order)  # streamed in batches, validated as read
    n = X.n_obs
    if n == 0:
        raise InputDataError("no cells to translate")
    names = np.asarray(mdata.mod[src].obs_names.astype(str))
    lab = labels_for(model, mdata, labels)
    dev = model.device
    cond_all = model.condition_indices(lab, n) if lab is not None else model.pipeline.null_labels(n, dev)
    L = model.config.latent_dim
    model.module.eval()
    f_in = model.rna_tensor if src == "rna" else model.atac_tensor
    decode = (lambda z: torch.log1p(1e4 * model.decode_rna(z))) if src == "atac" else model.decode_atac
    if calibration is None:
        decode_out = decode
    else:
        if src != "rna" or readout != "mean":
            raise ScdxError("a translation calibration applies to the rna->atac mean readout only")
        from ._calibration import HEAD_ARRAYS, calibrated_logits

        rec = {**calibration, **{k: torch.as_tensor(np.asarray(calibration[k], np.float32), device=dev)
                                 for k in ("centre", *HEAD_ARRAYS) if k in calibration}}

        def decode_out(z):
            return torch.sigmoid(calibrated_logits(model.module.decode_atac_logits(z).float(), rec.get("centre"), rec,
                                                   z.float()))
    K = int(n_noise) if readout == "mean" else n_samples
    n_f = len(tgt_names)
    z_out = np.empty((n, L), dtype=np.float32)
    y_out = np.empty((n, n_f), dtype=np.float32)
    std = np.empty((n, n_f), dtype=np.float32) if readout == "samples" else None
    samples = np.empty((n_samples, n, n_f), dtype=np.float32) if (readout == "samples" and return_samples) else None
    pipe, kw = model.pipeline, options.translate_kwargs()  # step_noise takes the tensor API's keywords
    bar = progress(total=n * K, desc=f"translate {direction} ({readout})", unit="cell")
    for s, e, B in X.batches(batch_size):
        z_src = model.encode(src, f_in(B))
        zs, ys = [], []
        for k in range(K):
            noise = model.cell_noise(names[s:e], seed, k, device=dev)
            step_noise = model.step_noise(names[s:e], seed, k, device=dev, **kw)
            z_t = pipe.translate_latents(z_src, direction, cond_all[s:e], noise, options, step_noise=step_noise)
            zs.append(z_t.float())
            if readout == "samples":
                ys.append(decode(z_t).float().cpu().numpy())
            bar.update(e - s)
        z_mean = torch.stack(zs).mean(0)
        z_out[s:e] = z_mean.cpu().numpy()
        y_out[s:e] = decode_out(z_mean).float().cpu().numpy()
        if readout == "samples":
            Y = np.stack(ys)
            std[s:e] = Y.std(0)
            if samples is not None:
                samples[:, s:e] = Y
    bar.close()
    obs = pd.DataFrame(index=pd.Index(names))
    if lab is not None:
        for c in lab.columns:
            obs[c] = pd.Categorical(lab[c].astype(str).to_numpy())
    res = ad.AnnData(X=y_out, obs=obs, var=pd.DataFrame(index=tgt_names))
    res.obsm["latent"] = z_out
    if std is not None:
        res.layers["std"] = std
    res.uns["translation"] = {"direction": direction, "readout": readout, "n_noise": int(n_noise),
                              "n_samples": int(n_samples or 0), "sampler": options.sampler,
                              "n_steps": int(options.n_steps), "seed": int(seed), "method": options.method,
                              "guidance_scale": float(options.guidance_scale),
                              "source_guidance": float(options.source_guidance),
                              "values": "log1p(1e4*rho)" if src == "atac" else "probability",
                              "calibrated": calibration is not None}
    if samples is not None:
        res.uns["samples"] = samples
    return res


@torch.no_grad()
def encode_cells(model, mdata, modality: str = "rna", *, batch_size: int = 1024) -> np.ndarray:
    """:meth:`ScDiffusionX.get_latent` (see there)."""
    require_fitted(model)
    if modality not in model.config.modalities:
        raise ScdxError(f"this model has no {modality!r} modality (modalities={model.config.modalities})")
    order = check_features(model, mdata, (modality,))[modality]
    X = row_source(model, mdata, modality, order)  # streamed in batches, validated as read
    model.module.eval()
    f = model.rna_tensor if modality == "rna" else model.atac_tensor
    out = np.empty((X.n_obs, int(model.config.latent_dim)), dtype=np.float32)  # zero cells: (0, latent_dim)
    for s, e, B in X.batches(batch_size):
        out[s:e] = model.encode(modality, f(B)).float().cpu().numpy()
    return out
