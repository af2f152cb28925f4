"""User-facing model class: knows MuData, trains, generates, translates, saves and loads."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._errors import (
    CheckpointError,
    FeatureMismatchError,
    InputDataError,
    MissingLabelError,
    OptionError,
    ScdxError,
    _fmt_items,
)
from .._io import atomic_dir
from .._settings import get_device
from ._config import FORMAT_VERSION, ModelConfig
from ._modules import ScDXModule
from ._schedulers import make_scheduler

SETUP_KEY = "_scdx_setup"
#: checkpoints shipped inside the package (``scdiffx_grn/pretrained/<name>``)
PRETRAINED = {"mouse_mop_demo": "small scDiffusion-X on the embedded mouse MOp SNARE-seq set (models/README.md)"}


def pretrained_path(name: str = "mouse_mop_demo") -> Path:
    """Folder of a checkpoint shipped with the package (works from any install, editable or not)."""
    from importlib.resources import files

    if name not in PRETRAINED:
        raise CheckpointError(f"no shipped checkpoint named {name!r}; shipped: {sorted(PRETRAINED)}")
    p = Path(str(files("scdiffx_grn") / "pretrained" / name))
    if not p.is_dir():
        raise CheckpointError(f"the shipped checkpoint {name!r} is missing from this install ({p})")
    return p
DIRECTIONS = ("atac->rna", "rna->atac")
READOUTS = ("mean", "samples")


# ----------------------------------------------------------------------------- data helpers
def _as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        return X.tocsr().astype(np.float32)
    if hasattr(X, "to_memory"):  # backed / lazy arrays
        X = X.to_memory()
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def _layer(adata, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise InputDataError(
            f"layer {layer!r} not found in modality (layers: {list(adata.layers.keys())}); "
            "raw counts are expected there (pass rna_layer=None / atac_layer=None to use X)"
        )
    return adata.layers[layer]


def _obs_labels(mdata, key: str) -> pd.Series:
    """Labels from mdata.obs, falling back to the modalities' obs (``rna:key`` or ``key``)."""
    if key in mdata.obs:
        return mdata.obs[key]
    for mod in ("rna", "atac"):
        if mod in mdata.mod and key in mdata.mod[mod].obs:
            return mdata.mod[mod].obs[key]
    raise MissingLabelError(
        f"label column {key!r} not found in mdata.obs or the modalities' obs "
        f"(mdata.obs has: {list(mdata.obs.columns)[:20]})"
    )


class ScDiffusionX:
    """scDiffusion-X: paired RNA+ATAC latent diffusion with Dual-Cross-Attention.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac`` registered by :meth:`setup_mudata`.
    config
        A :class:`ModelConfig`; keyword overrides are applied on top of it.
    seed
        Seeds the weight initialisation (default ``settings.seed``), so that a model built and
        trained with the same seeds on the same device is identical.
    **overrides
        Any :class:`ModelConfig` field (``width``, ``n_layers``, ``latent_dim``...).

    Examples
    --------
    >>> ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
    >>> model = ScDiffusionX(mdata)
    >>> model.train(ae_epochs=50, diffusion_steps=20_000)
    >>> gen = model.generate({"cell_type": ["L2/3"] * 100}, sampler="dpm++", n_steps=20)
    >>> rna_pred = model.translate(mdata, direction="atac->rna", n_samples=5)
    """

    def __init__(self, mdata=None, config: ModelConfig | None = None, *, seed: int | None = None, **overrides):
        self.history: dict[str, list[float]] = {"ae_loss": [], "diffusion_loss": []}
        self.timing: dict[str, float] = {}
        self._device = None
        if mdata is None:  # used by load()
            if config is None:
                raise ScdxError("ScDiffusionX needs a MuData (or use ScDiffusionX.load)")
            self.config = config.resolve()
            self.module = self._build_module(seed)
            self.setup: dict[str, Any] = {}
            self.rna_var_names: list[str] = []
            self.atac_var_names: list[str] = []
            return
        setup = self._get_setup(mdata)
        cfg = ModelConfig.from_dict(config.to_dict()) if config is not None else ModelConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise OptionError(f"unknown model option {k!r}")
            setattr(cfg, k, v)
        cfg.modalities = list(setup.get("modalities", ["rna", "atac"]))
        cfg.n_genes = mdata.mod["rna"].n_vars
        cfg.n_peaks = mdata.mod["atac"].n_vars if "atac" in cfg.modalities else 0
        cfg.label_keys = list(setup["labels"])
        cfg.label_categories = {k: [str(c) for c in pd.Categorical(_obs_labels(mdata, k).astype(str)).categories]
                                for k in cfg.label_keys}
        self.config = cfg.resolve()
        self.setup = setup
        self.rna_var_names = [str(v) for v in mdata.mod["rna"].var_names]
        self.atac_var_names = [str(v) for v in mdata.mod["atac"].var_names] if self.config.paired else []
        self.module = self._build_module(seed)
        self._train_mdata = mdata  # kept by reference for train(); never saved

    def _build_module(self, seed: int | None) -> ScDXModule:
        from .._settings import settings

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed if seed is None else int(seed))
            return ScDXModule(self.config)

    # ------------------------------------------------------------------ setup / validation
    @staticmethod
    def setup_mudata(mdata, *, labels: Sequence[str] | str | None = ("cell_type",), rna_layer: str | None = "counts",
                     atac_layer: str | None = "counts", modalities: Sequence[str] | None = None) -> None:
        """Register a MuData for the model: checks modalities, barcodes, labels and counts.

        Parameters
        ----------
        mdata
            MuData with modalities ``rna`` and ``atac`` holding the same cells.
        labels
            obs columns to condition on (cell type first: its categories also key the fitted
            library-size distribution). ``None`` or ``[]`` for an unconditional model.
        rna_layer, atac_layer
            Layers with raw counts (``None``: use ``X``). RNA must be non-negative integers;
            ATAC may be counts or binary (it is binarised).
        modalities
            ``("rna", "atac")`` (paired model) or ``("rna",)`` (single-modality model: RNA only,
            any ``atac`` modality is ignored). ``None``: paired when the MuData has ``atac``,
            RNA-only when it holds ``rna`` alone.

        Raises
        ------
        BarcodeMismatchError, NotCountsError, MissingLabelError, InputDataError
        """
        from .._validate import check_labels, check_paired

        if modalities is None:
            modalities = ("rna", "atac") if "atac" in mdata.mod or "rna" not in mdata.mod else ("rna",)
        modalities = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
        if modalities not in (["rna", "atac"], ["rna"]):
            raise OptionError(f"modalities must be ('rna', 'atac') or ('rna',), got {tuple(modalities)}")
        for mod in modalities:
            if mod not in mdata.mod:
                raise InputDataError(f"MuData has no modality {mod!r} (modalities: {list(mdata.mod)})")
        if modalities == ["rna"]:  # single-modality model: only the RNA checks below
            check_paired(mdata, ("rna",))
            labels = [labels] if isinstance(labels, str) else list(labels or [])
            for key in labels:
                check_labels(pd.DataFrame({key: _obs_labels(mdata, key)}), [key])
            rna = mdata.mod["rna"]
            from ._data import validate_matrix

            validate_matrix(_layer(rna, rna_layer), f"rna {'layers[%r]' % rna_layer if rna_layer else 'X'}", "rna",
                            obs_names=rna.obs_names, var_names=rna.var_names)
            dup = rna.var_names[rna.var_names.duplicated()]
            if len(dup):
                raise InputDataError(f"rna has duplicated var names: {_fmt_items(dup.unique())}")
            mdata.uns[SETUP_KEY] = {"labels": labels, "rna_layer": rna_layer, "atac_layer": atac_layer,
                                    "modalities": ["rna"]}
            return
        check_paired(mdata)
        labels = [labels] if isinstance(labels, str) else list(labels or [])
        for key in labels:
            check_labels(pd.DataFrame({key: _obs_labels(mdata, key)}), [key])
        rna, atac = mdata.mod["rna"], mdata.mod["atac"]
        from ._data import (
            validate_matrix,  # in memory, or streamed in chunks for backed data
        )

        validate_matrix(_layer(rna, rna_layer), f"rna {'layers[%r]' % rna_layer if rna_layer else 'X'}", "rna",
                        obs_names=rna.obs_names, var_names=rna.var_names)
        validate_matrix(_layer(atac, atac_layer), f"atac {'layers[%r]' % atac_layer if atac_layer else 'X'}",
                        "atac", obs_names=atac.obs_names, var_names=atac.var_names)
        for mod, adata in (("rna", rna), ("atac", atac)):
            dup = adata.var_names[adata.var_names.duplicated()]
            if len(dup):
                raise InputDataError(f"{mod} has duplicated var names: {_fmt_items(dup.unique())}")
        mdata.uns[SETUP_KEY] = {"labels": labels, "rna_layer": rna_layer, "atac_layer": atac_layer}

    @staticmethod
    def _get_setup(mdata) -> dict:
        if SETUP_KEY not in mdata.uns:
            raise ScdxError("call ScDiffusionX.setup_mudata(mdata, labels=[...]) before building the model")
        s = dict(mdata.uns[SETUP_KEY])
        s["labels"] = [str(x) for x in np.atleast_1d(s.get("labels", [])) if str(x)]
        s["modalities"] = [str(x) for x in np.atleast_1d(s.get("modalities", ["rna", "atac"]))]
        return s

    def _check_features(self, mdata, modalities=("rna", "atac")) -> dict[str, np.ndarray]:
        """Map the data's features onto the model's; raise naming the differences."""
        order = {}
        for mod in modalities:
            want = self.rna_var_names if mod == "rna" else self.atac_var_names
            if mod not in mdata.mod:
                raise InputDataError(f"MuData has no modality {mod!r} (modalities: {list(mdata.mod)})")
            from .._validate import check_unique_barcodes, feature_mismatch_hint

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
            order[mod] = have.get_indexer(want)
        return order

    def subset_to_model(self, mdata):
        """Return a copy of ``mdata`` restricted to the model's genes and peaks, in the model's order.

        Raises
        ------
        FeatureMismatchError
            When some of the model's features are absent from the data (naming them).
        """
        import mudata as md

        from .._settings import logger
        from .._validate import check_unique_barcodes, feature_mismatch_hint, map_peak_names

        check_unique_barcodes(mdata)
        mods = {}
        for mod in ("rna", "atac"):
            if mod not in mdata.mod:
                continue
            want = pd.Index(self.rna_var_names if mod == "rna" else self.atac_var_names)
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

    def _matrix(self, mdata, mod: str, order: np.ndarray | None = None) -> sp.csr_matrix:
        layer = self.setup.get(f"{mod}_layer", "counts")
        if layer is not None and layer not in mdata.mod[mod].layers:
            layer = None  # data prepared without a counts layer: use X
        adata = mdata.mod[mod]
        raw = _layer(adata, layer)
        from ._data import validate_matrix

        # NaN / inf / negative (and non-integer RNA) values would give silently wrong latents
        validate_matrix(raw, f"{mod} {'layers[%r]' % layer if layer is not None else 'X'}", mod,
                        obs_names=adata.obs_names, var_names=adata.var_names)
        X = _as_csr(raw)
        if order is not None and not np.array_equal(order, np.arange(X.shape[1])):
            X = X[:, order]
        return X

    # ------------------------------------------------------------------ tensor API
    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = get_device()
            self.module.to(self._device)
        return self._device

    def to(self, device: str | torch.device) -> ScDiffusionX:
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``)."""
        self._device = get_device(str(device))
        self.module.to(self._device)
        return self

    def rna_tensor(self, X) -> torch.Tensor:
        """Encoder input from RNA counts (cells x model genes): ``log1p(1e4 * x / library)``."""
        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32, device=self.device)
        lib = x.sum(-1, keepdim=True).clamp(min=1.0)
        return torch.log1p(x / lib * 1e4)

    def atac_tensor(self, X) -> torch.Tensor:
        """Encoder input from ATAC counts or binary values (cells x model peaks): binarised."""
        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32, device=self.device)
        return (x > 0).float()

    def encode(self, modality: str, x_input: torch.Tensor) -> torch.Tensor:
        """Normalised latent of a modality from its encoder input (``rna_tensor``/``atac_tensor``)."""
        return self.module.encode(modality, x_input)

    def decode_rna(self, z: torch.Tensor) -> torch.Tensor:
        """Expression proportions (softmax over genes) from a normalised RNA latent."""
        return self.module.decode("rna", z)

    def decode_atac(self, z: torch.Tensor) -> torch.Tensor:
        """Accessibility probabilities from a normalised ATAC latent."""
        return self.module.decode("atac", z)

    def condition_indices(self, labels: Mapping[str, Any] | pd.DataFrame | None, n: int | None = None) -> torch.Tensor:
        """Label indices (n, n_label_keys); missing keys or ``None`` values get the null label.

        Raises
        ------
        MissingLabelError
            When a value was not seen in training (naming the values and the known categories).
        """
        keys = self.config.label_keys
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
            cats = self.config.label_categories[k]
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
        return torch.as_tensor(out, device=self.device)

    # ------------------------------------------------------------------ denoising core
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _guided(self, z_r, z_a, t_r, t_a, cond, guidance_scale, guidance_mode):
        """Denoiser output with classifier-free guidance over the labels."""
        den = self.module.denoiser
        null = den.labels.null(z_r.shape[0], z_r.device)
        if isinstance(guidance_scale, Mapping):
            scales = {k: float(v) for k, v in guidance_scale.items()}
            unknown = sorted(set(scales) - set(self.config.label_keys))
            if unknown:
                raise MissingLabelError(f"guidance given for unknown label(s) {unknown}")
        else:
            scales = None
        plain = (scales is None and float(guidance_scale) == 1.0) or not self.config.label_keys
        with self._autocast():
            if plain:
                o_r, o_a = den(z_r, z_a, t_r, t_a, cond)
                return o_r.float(), o_a.float()
            if guidance_mode == "joint" or scales is None:
                s = float(guidance_scale) if scales is None else float(np.mean(list(scales.values())))
                o_r, o_a = den(torch.cat([z_r, z_r]), torch.cat([z_a, z_a]), torch.cat([t_r, t_r]),
                               torch.cat([t_a, t_a]), torch.cat([cond, null]))
                b = z_r.shape[0]
                (c_r, u_r), (c_a, u_a) = o_r.float().split(b), o_a.float().split(b)
                return u_r + s * (c_r - u_r), u_a + s * (c_a - u_a)
            if guidance_mode != "additive":
                raise OptionError(f"guidance_mode must be 'joint' or 'additive', got {guidance_mode!r}")
            # additive multi-condition guidance: eps_u + sum_k s_k (eps_k - eps_u)
            conds = [null]
            ks = [k for k in self.config.label_keys if k in scales]
            for k in ks:
                c = null.clone()
                i = self.config.label_keys.index(k)
                c[:, i] = cond[:, i]
                conds.append(c)
            m = len(conds)
            o_r, o_a = den(z_r.repeat(m, 1), z_a.repeat(m, 1), t_r.repeat(m), t_a.repeat(m), torch.cat(conds))
            b = z_r.shape[0]
            parts_r, parts_a = o_r.float().split(b), o_a.float().split(b)
            g_r, g_a = parts_r[0].clone(), parts_a[0].clone()
            for j, k in enumerate(ks, start=1):
                g_r += scales[k] * (parts_r[j] - parts_r[0])
                g_a += scales[k] * (parts_a[j] - parts_a[0])
            return g_r, g_a

    def _sample(self, mode: str, cond: torch.Tensor, noise_r, noise_a, *, z_src=None, sampler="dpm++",
                n_steps=20, guidance_scale=1.0, guidance_mode="joint", generator=None, method="conditional",
                recon_guidance: float = 0.0, output_fn=None, source_guidance: float = 1.0, step_noise_fn=None):
        """Run a full reverse trajectory for one batch.

        ``mode`` is ``"joint"`` (both modalities generated), ``"rna->atac"`` or ``"atac->rna"``
        (the source latent ``z_src`` is observed). Returns (z_rna, z_atac). Single-modality
        models use a zero-width ATAC latent. ``output_fn(x_r, x_a, t, cond, sched) -> (o_r, o_a)``
        replaces :meth:`_guided` in joint mode (classifier guidance, interpolation).
        Timesteps are integers for diffusion and floats (model time) for flow models.
        """
        sched = make_scheduler(sampler, self.config)
        sched.set_timesteps(n_steps, device=cond.device)
        b = cond.shape[0]
        zero = torch.zeros(b, dtype=torch.long, device=cond.device)
        if mode == "joint":
            x_r, x_a = noise_r, noise_a
            for t in sched.timesteps:
                tt = t.reshape(1).to(cond.device).expand(b).clone()
                if output_fn is not None:
                    o_r, o_a = output_fn(x_r, x_a, tt, cond, sched)
                else:
                    o_r, o_a = self._guided(x_r, x_a, tt, tt, cond, guidance_scale, guidance_mode)
                # two schedulers would keep separate multistep states: stack the branches instead
                x = sched.step(torch.cat([o_r, o_a], -1), t, torch.cat([x_r, x_a], -1), generator)
                x_r, x_a = x.split([x_r.shape[1], x_a.shape[1]], -1)
            return x_r, x_a
        src_is_rna = mode == "rna->atac"
        x = noise_a if src_is_rna else noise_r
        noise_src = noise_r if src_is_rna else noise_a  # inpainting and the null source
        step_noise = step_noise_fn(sched) if (step_noise_fn is not None and getattr(sched, "stochastic", False)) else None
        for i, t in enumerate(sched.timesteps):
            tt = t.reshape(1).to(cond.device).expand(b).clone()
            if method == "conditional":
                src, t_src = z_src, zero
            elif method == "inpaint":
                src, t_src = sched.add_noise(z_src, noise_src, tt), tt
            else:
                raise OptionError(f"translation method must be 'conditional' or 'inpaint', got {method!r}")
            if recon_guidance and method == "inpaint":
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    args = (src, xg, t_src, tt) if src_is_rna else (xg, src, tt, t_src)
                    o_r, o_a = self._guided(*args, cond, guidance_scale, guidance_mode)
                    o_src, o_tgt = (o_r, o_a) if src_is_rna else (o_a, o_r)
                    x0_src, _ = sched.to_x0_eps(o_src, src, tt)
                    err = ((x0_src - z_src) ** 2).sum()
                    grad = torch.autograd.grad(err, xg)[0]
                k = sched.guidance_coef(tt, x) if self.config.objective == "flow" else (1 - sched._abar(tt, x)).sqrt()
                o_tgt = o_tgt.detach() + recon_guidance * k * grad
            else:
                o_tgt = self._target_output(src_is_rna, x, tt, src, t_src, cond, guidance_scale, guidance_mode,
                                            source_guidance, noise_src, sched)
            x = sched.step(o_tgt, t, x, generator, **({"noise": step_noise[i]} if step_noise is not None else {}))
        return (z_src, x) if src_is_rna else (x, z_src)

    def _target_output(self, src_is_rna: bool, x, tt, src, t_src, cond, guidance_scale, guidance_mode,
                       source_guidance: float, null_src, sched):
        """Denoiser output of the translated (target) branch, with classifier-free guidance over the source.

        ``source_guidance = w``: ``u + w (c - u)`` where ``c`` sees the observed source and ``u`` a
        null source (noise at the noisiest timestep, the input used for source dropout in
        training); ``w = 1`` is the plain conditional output. Label guidance
        (``guidance_scale``) is applied inside each term.
        """
        w = float(source_guidance)
        b = x.shape[0]
        if w != 1.0:
            if not getattr(self.config, "source_dropout", 0.0):
                raise ScdxError("source_guidance needs a model trained with source_dropout > 0 (it never saw a "
                                "null source); use source_guidance=1.0")
            t_null = torch.full_like(t_src, sched.posterior_mean_timestep)
            src = torch.cat([src, null_src])
            t_src = torch.cat([t_src, t_null])
            x, tt, cond = torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, cond])
        args = (src, x, t_src, tt) if src_is_rna else (x, src, tt, t_src)
        o_r, o_a = self._guided(*args, cond, guidance_scale, guidance_mode)
        o = o_a if src_is_rna else o_r
        if w == 1.0:
            return o
        c, u = o[:b], o[b:]
        return u + w * (c - u)

    def translate_latent(self, z_src: torch.Tensor, direction: str, cond: torch.Tensor | None, noise: torch.Tensor,
                         *, readout: str = "mean", sampler: str = "ddim", n_steps: int = 50, guidance_scale=1.0,
                         guidance_mode="joint", source_guidance: float = 1.0, method: str = "conditional",
                         recon_guidance: float = 0.0, generator=None, step_noise=None) -> torch.Tensor:
        """Translate normalised source latents into target latents (one batch, tensor level).

        Parameters
        ----------
        z_src
            Normalised source latents (B, latent_dim).
        direction
            ``"atac->rna"`` or ``"rna->atac"``.
        cond
            Label indices (B, n_label_keys) or ``None`` (no labels).
        noise
            (B, latent_dim) noise starting the target, or (B, 2 latent_dim): the second half is the
            source-side noise (null source for ``source_guidance``, noised source for inpainting;
            default: the first half reversed).
        readout
            ``"mean"`` (default): the posterior mean ``E[z_tgt | z_src, labels]`` in ONE denoiser
            call at the noisiest timestep (the clean-latent estimate of a v / x0 / flow model
            from pure noise; for epsilon models, which cannot give it in one call, a
            deterministic DDIM trajectory of ``n_steps`` steps). ``"samples"``: one posterior
            sample by ``sampler`` with ``n_steps`` steps.
        step_noise
            For stochastic samplers (``ddpm``): the per-step noise, ``(n_steps, B, latent_dim)``,
            so that a cell's sample does not depend on its batch-mates (``translate`` passes
            per-cell streams); default: drawn from ``generator``.

        Deterministic given ``noise`` for the mean readout and the DDIM (eta=0), DPM-Solver++ and
        flow samplers, so two calls with the same noise on edited and unedited inputs form a
        paired control. Differentiable when gradients are enabled.
        """
        if direction not in DIRECTIONS:
            raise OptionError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if readout not in READOUTS:
            raise OptionError(f"readout must be one of {READOUTS}, got {readout!r}")
        self._require_paired("translation")
        if cond is None:
            cond = self.module.denoiser.labels.null(z_src.shape[0], z_src.device)
        L = z_src.shape[1]
        if noise.shape[1] == 2 * L:
            noise, noise_src = noise[:, :L], noise[:, L:]
        elif noise.shape[1] == L:
            noise_src = noise.flip(-1)
        else:
            raise OptionError(f"noise must have latent_dim ({L}) or 2 x latent_dim columns, got {noise.shape[1]}")
        src_is_rna = direction == "rna->atac"
        if readout == "mean" and self.config.prediction != "epsilon":
            sched = make_scheduler("euler" if self.config.objective == "flow" else "ddim", self.config)
            tt = torch.full((z_src.shape[0],), sched.posterior_mean_timestep, device=z_src.device,
                            dtype=torch.float32 if self.config.objective == "flow" else torch.long)
            zero = torch.zeros_like(tt)
            o = self._target_output(src_is_rna, noise, tt, z_src, zero, cond, guidance_scale, guidance_mode,
                                    source_guidance, noise_src, sched)
            return sched.to_x0_eps(o, noise, tt)[0]
        if readout == "mean":  # epsilon model: a deterministic trajectory
            sampler = "euler" if self.config.objective == "flow" else "ddim"
        nr, na = (noise_src, noise) if src_is_rna else (noise, noise_src)
        z_r, z_a = self._sample(direction, cond, nr, na, z_src=z_src, sampler=sampler, n_steps=n_steps,
                                guidance_scale=guidance_scale, guidance_mode=guidance_mode, generator=generator,
                                method=method, recon_guidance=recon_guidance, source_guidance=source_guidance,
                                step_noise_fn=(lambda sch: step_noise) if step_noise is not None else None)
        return z_a if src_is_rna else z_r

    # ------------------------------------------------------------------ training
    def train(self, *, ae_epochs: int = 40, diffusion_steps: int = 20_000, batch_size: int = 256,
              ae_lr: float = 1e-3, lr: float = 5e-4, weight_decay: float = 1e-4, ema_decay: float = 0.999,
              grad_clip: float = 1.0, seed: int = 0, device: str | None = None, split_key: str | None = None,
              train_value: str = "train", checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int = 1000, resume: bool = False, compile: bool = False,
              log_every: int = 100, mdata=None) -> dict[str, list[float]]:
        """Train the autoencoders, fit the latent normalisation, then train the denoiser.

        Parameters
        ----------
        ae_epochs
            Epochs of autoencoder training (both modalities together).
        diffusion_steps
            Optimiser steps of denoiser training on the (fixed) normalised latents.
        batch_size
            Cells per step (split across processes under DDP).
        ae_lr, lr, weight_decay, ema_decay, grad_clip
            AdamW learning rates (autoencoders, denoiser), weight decay, EMA decay of the denoiser
            weights used for sampling, gradient-norm clipping.
        seed
            Seeds every random choice (batches, noise, timesteps, label dropout, dropout).
        device
            ``None`` uses ``settings.device`` (CUDA when present). bf16 autocast on CUDA.
        split_key, train_value
            Train only on cells with ``obs[split_key] == train_value``.
        checkpoint_dir, checkpoint_every, resume
            Write an atomic training checkpoint every ``checkpoint_every`` steps (and after each
            autoencoder epoch); ``resume=True`` continues from it with identical results to an
            uninterrupted run on the same device.
        compile
            ``torch.compile`` the denoiser (pays off on GPU for long runs).
        mdata
            The training MuData (defaults to the one given at construction if it was kept).

        Returns
        -------
        The loss history (also in ``model.history``).
        """
        from ._train import Trainer

        if mdata is None:
            mdata = getattr(self, "_train_mdata", None)
            if mdata is None:
                raise ScdxError("pass the training data: model.train(mdata=...)")
        if device is not None:
            self.to(device)
        trainer = Trainer(self, mdata, batch_size=batch_size, ae_lr=ae_lr, lr=lr, weight_decay=weight_decay,
                          ema_decay=ema_decay, grad_clip=grad_clip, seed=seed, split_key=split_key,
                          train_value=train_value, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=checkpoint_every, compile=compile, log_every=log_every)
        trainer.run(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, resume=resume)
        return self.history

    # ------------------------------------------------------------------ generation
    def _label_frame(self, labels, n_cells: int | None, rng: np.random.Generator) -> pd.DataFrame:
        keys = self.config.label_keys
        if isinstance(labels, (int, np.integer)) and n_cells is None:
            labels, n_cells = None, int(labels)
        if n_cells is not None and int(n_cells) < 0:
            raise InputDataError(f"the number of cells to generate must be >= 0, got {n_cells}")
        if labels is None:
            if n_cells is None:
                raise ScdxError("give labels (dict / DataFrame) or n_cells")
            if not keys:
                return pd.DataFrame(index=range(n_cells))
            freqs = self._label_freqs()
            idx = rng.choice(len(freqs), size=n_cells, p=freqs["p"].to_numpy())
            return freqs.iloc[idx][keys].reset_index(drop=True)
        df = labels.copy() if isinstance(labels, pd.DataFrame) else pd.DataFrame(
            {k: np.atleast_1d(np.asarray(v, dtype=object)) for k, v in labels.items()})
        if n_cells is not None and len(df) == 1:
            df = df.loc[np.zeros(n_cells, dtype=int)].reset_index(drop=True)
        return df.reset_index(drop=True)

    def _label_freqs(self) -> pd.DataFrame:
        f = self.setup.get("label_freqs")
        if f is None:
            raise OptionError("label frequencies unknown (model not trained): pass labels explicitly")
        return pd.DataFrame(f)

    @torch.no_grad()
    def generate(self, labels: Mapping[str, Sequence] | pd.DataFrame | int | None = None, *, n_cells: int | None = None,
                 sampler: str = "dpm++", n_steps: int = 20, guidance_scale: float | Mapping[str, float] = 1.0,
                 guidance_mode: str = "joint", seed: int = 0, batch_size: int = 1024,
                 sample_counts: bool = True, atac_probs: bool | None = None,
                 classifier_guidance: Mapping[str, tuple] | None = None, guidance_hook=None):
        """Generate paired cells (RNA-only cells for a single-modality model).

        Parameters
        ----------
        labels
            Per-cell labels: ``{"cell_type": [...]}`` or a DataFrame (keys not given are left
            unconditioned), or an int (that many cells with labels drawn from training frequencies).
        n_cells
            With a single-row ``labels``, repeat it ``n_cells`` times.
        sampler, n_steps
            ``"ddpm"``, ``"ddim"`` or ``"dpm++"`` and its number of steps.
        guidance_scale, guidance_mode
            Classifier-free guidance: one scale for all labels (``"joint"``), or a dict
            ``{label: scale}`` with ``"additive"`` guidance (sum of per-label guidance terms).
        seed
            Seeds the latent noise, library sizes and count sampling.
        sample_counts
            Sample RNA counts from the negative binomial and peaks from the Bernoulli (else the
            means / rounded probabilities).
        atac_probs
            Keep the dense peak probabilities in ``atac.layers['prob']`` (default: when it is
            under 200 million values).
        classifier_guidance
            scDiffusion-style guidance by noisy-latent classifiers trained separately
            (:func:`~scdiffx_grn.model.train_latent_classifier`):
            ``{label_key: (classifier, target_values, scale)}``; ``target_values`` is one value or
            one per cell. Each classifier adds ``-scale * k(t) * grad log p(y | x_t)`` to the model
            output (``k = sqrt(1 - abar)`` for epsilon prediction); several are summed.
            Combines with classifier-free guidance.
        guidance_hook
            Advanced: ``hook(start, stop) -> output_fn`` giving, per batch of cells
            ``[start, stop)``, a function ``output_fn(x_r, x_a, t, cond, sched) -> (o_r, o_a)``
            that replaces the guided denoiser call (used by classifier guidance and
            :func:`~scdiffx_grn.model.interpolate`).

        Returns
        -------
        MuData with ``rna`` (X = counts, ``layers['counts']``, ``obs['library_size']``) and ``atac``
        (X = binary peaks, ``layers['prob']``), obs holding the labels.
        """
        import anndata as ad
        import mudata as md

        self._require_fitted()
        rng = np.random.default_rng(seed)
        lab = self._label_frame(labels, n_cells, rng)
        n = len(lab)
        if n == 0:
            raise InputDataError("nothing to generate: zero cells asked for")
        cond_all = self.condition_indices({k: lab[k].to_numpy() for k in lab.columns}, n)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        L = self.config.latent_dim
        paired = self.config.paired
        noise = torch.randn((n, 2 * L if paired else L), generator=gen)  # RNA-only: zero-width ATAC latent
        if classifier_guidance:
            if guidance_hook is not None:
                raise ScdxError("give classifier_guidance or guidance_hook, not both")
            from ._classifier import classifier_guidance_hook

            guidance_hook = classifier_guidance_hook(self, classifier_guidance, n, guidance_scale=guidance_scale,
                                                     guidance_mode=guidance_mode)
        self.module.eval()
        dev = self.device
        rhos, probs = [], []
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            step_gen = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + s)
            z_r, z_a = self._sample("joint", cond_all[s:e], noise[s:e, :L].to(dev), noise[s:e, L:].to(dev),
                                    sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale,
                                    guidance_mode=guidance_mode, generator=step_gen,
                                    output_fn=guidance_hook(s, e) if guidance_hook is not None else None)
            rhos.append(self.decode_rna(z_r).cpu().numpy())
            probs.append(self.decode_atac(z_a).cpu().numpy() if paired else np.zeros((e - s, 0), np.float32))
        rho = np.concatenate(rhos)
        prob = np.concatenate(probs)
        # library sizes: log-normal per category of the first label (pooled when unknown)
        c0 = cond_all[:, 0].cpu().numpy() if self.config.label_keys else np.zeros(n, dtype=int)
        mu = self.module.lib_mu.cpu().numpy()[np.minimum(c0, len(self.module.lib_mu) - 1)]
        sig = self.module.lib_sigma.cpu().numpy()[np.minimum(c0, len(self.module.lib_sigma) - 1)]
        lib = np.exp(rng.normal(mu, sig))
        mean = rho * lib[:, None]
        if sample_counts:
            theta = self.module.rna_ae.theta.detach().cpu().numpy()[None, :]
            lam = rng.gamma(shape=np.broadcast_to(theta, mean.shape), scale=mean / theta)
            counts = rng.poisson(lam).astype(np.float32)
            peaks = (rng.random(prob.shape) < prob).astype(np.float32)
        else:
            counts = np.round(mean).astype(np.float32)
            peaks = (prob > 0.5).astype(np.float32)
        obs = lab.astype(str).copy()
        obs.index = [f"gen_{i}" for i in range(n)]
        rna = ad.AnnData(X=sp.csr_matrix(counts), obs=obs.copy(), var=pd.DataFrame(index=self.rna_var_names))
        rna.layers["counts"] = rna.X.copy()
        rna.obs["library_size"] = lib
        mods = {"rna": rna}
        if paired:
            atac = ad.AnnData(X=sp.csr_matrix(peaks), obs=obs.copy(), var=pd.DataFrame(index=self.atac_var_names))
            if atac_probs or (atac_probs is None and prob.size <= 2e8):
                atac.layers["prob"] = prob.astype(np.float32)
            mods["atac"] = atac
        with md.set_options(pull_on_update=False):
            mdata = md.MuData(mods)
        for c in obs.columns:
            mdata.obs[c] = obs[c].astype("category")
        mdata.uns["generation"] = {"sampler": sampler, "n_steps": int(n_steps), "seed": int(seed),
                                   "guidance_scale": guidance_scale if not isinstance(guidance_scale, Mapping)
                                   else dict(guidance_scale), "guidance_mode": guidance_mode}
        return mdata

    # ------------------------------------------------------------------ translation
    def _labels_for(self, mdata, labels) -> pd.DataFrame | None:
        if labels is None:
            return None
        if isinstance(labels, str) and labels == "auto":
            cols = {}
            for k in self.config.label_keys:
                try:
                    cols[k] = _obs_labels(mdata, k).astype(object).to_numpy()
                except MissingLabelError:
                    continue
            return pd.DataFrame(cols) if cols else None
        if isinstance(labels, pd.DataFrame):
            return labels
        if not isinstance(labels, Mapping):
            raise OptionError(f"labels must be None, 'auto', a mapping {{label key: per-cell values}} or a DataFrame; "
                            f"got {labels!r}")
        return pd.DataFrame({k: np.asarray(v, dtype=object) for k, v in dict(labels).items()})

    @torch.no_grad()
    def translate(self, mdata, direction: str = "atac->rna", *, readout: str | None = None,
                  n_samples: int | None = None, n_noise: int = 4, sampler: str = "ddim", n_steps: int = 50,
                  seed: int = 0, labels: str | Mapping | pd.DataFrame | None = None, guidance_scale: float = 1.0,
                  source_guidance: float = 1.0, method: str = "conditional", recon_guidance: float = 0.0,
                  batch_size: int = 512, return_samples: bool = False):
        """Translate one modality into the other, cell by cell (pairing kept).

        Parameters
        ----------
        mdata
            MuData holding at least the source modality (``atac`` for ``"atac->rna"``) with the
            model's features.
        direction
            ``"atac->rna"`` or ``"rna->atac"``.
        readout
            ``"mean"`` (default unless ``n_samples`` is given): the posterior mean, the point
            prediction to compare with other predictors. Each cell's target latent is the
            denoiser's clean-latent estimate from pure noise at the noisiest timestep (one call),
            averaged over ``n_noise`` noises, then decoded once. ``"samples"``: ``n_samples``
            posterior samples (default 10) by ``sampler`` / ``n_steps``, for uncertainty; ``X`` is
            the decoded latent mean of the samples (samples are never averaged in decoded
            space, which blurs a broad posterior into the worst point estimate).
        n_samples
            Posterior samples per cell (implies ``readout="samples"``, as does ``method="inpaint"``).
        n_noise
            Noises averaged by the mean readout (1 is nearly as good: the estimate barely
            depends on the noise).
        sampler, n_steps
            Sampler and steps of the samples readout (``"ddim"`` with eta=0, ``"dpm++"`` and the
            flow samplers are deterministic given the noise; ``"ddpm"`` draws per-cell step noise).
        seed
            Seeds the noise. The noise of cell *i* is keyed by the seed, the sample index and
            the cell's obs name, so a cell's translation does not depend on its row, on the
            other cells or on ``batch_size``; edited vs unedited copies with the same names
            are paired.
        labels
            ``None`` (default: translate from the observed modality alone), ``"auto"`` (use the
            model's label columns from ``mdata.obs``), or explicit per-cell labels.
        guidance_scale
            Classifier-free guidance over the labels (1: none).
        source_guidance
            Classifier-free guidance over the observed modality, ``u + w (c - u)`` with ``u`` the
            prediction from a null source (models trained with ``source_dropout > 0``). 1: none.
            Values of 2-4 sharpen single samples toward the source's cell state; the posterior
            mean is best at 1.
        method, recon_guidance
            ``"conditional"`` (the observed latent given clean to the denoiser; default) or
            ``"inpaint"`` (joint denoising with the observed branch replaced by its noised latent,
            optionally with reconstruction guidance of weight ``recon_guidance``; samples readout).

        Returns
        -------
        AnnData with ``obs_names`` equal to ``mdata``'s and the target modality's features:
        ``X`` is ``log1p(1e4 * rho)`` (RNA) or peak probabilities (ATAC) of the posterior-mean
        latent (mean readout) or of the samples' latent mean; ``obsm['latent']`` that latent;
        for the samples readout ``layers['std']`` is the standard deviation over decoded samples
        and, with ``return_samples``, ``uns['samples']`` holds the (n_samples, cells, features)
        array of decoded samples.
        """
        import anndata as ad

        from .._modelio import cell_noise
        from .._settings import progress

        if direction not in DIRECTIONS:
            raise OptionError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self._require_paired("translation")
        if readout is None:
            readout = "samples" if (n_samples is not None or method != "conditional") else "mean"
        if readout not in READOUTS:
            raise OptionError(f"readout must be one of {READOUTS}, got {readout!r}")
        if readout == "samples":
            n_samples = 10 if n_samples is None else int(n_samples)
            if n_samples < 1:
                raise OptionError(f"n_samples must be >= 1, got {n_samples}")
        elif method != "conditional":
            raise ScdxError(f"method={method!r} needs readout='samples' (the mean readout is conditional)")
        if int(n_noise) < 1:
            raise OptionError(f"n_noise must be >= 1, got {n_noise}")
        self._require_fitted()
        src = "atac" if direction == "atac->rna" else "rna"
        tgt_names = self.rna_var_names if src == "atac" else self.atac_var_names
        order = self._check_features(mdata, (src,))[src]
        from ._data import row_source

        X = row_source(self, mdata, src, order)  # streamed in batches, validated as read
        n = X.n_obs
        if n == 0:
            raise InputDataError("no cells to translate")
        names = np.asarray(mdata.mod[src].obs_names.astype(str))
        lab = self._labels_for(mdata, labels)
        cond_all = self.condition_indices(lab, n) if lab is not None else self.module.denoiser.labels.null(n, self.device)
        L = self.config.latent_dim
        self.module.eval()
        dev = self.device
        f_in = self.rna_tensor if src == "rna" else self.atac_tensor
        decode = (lambda z: torch.log1p(1e4 * self.decode_rna(z))) if src == "atac" else self.decode_atac
        K = int(n_noise) if readout == "mean" else n_samples
        n_f = len(tgt_names)
        z_out = np.empty((n, L), dtype=np.float32)
        y_out = np.empty((n, n_f), dtype=np.float32)
        std = np.empty((n, n_f), dtype=np.float32) if readout == "samples" else None
        samples = np.empty((n_samples, n, n_f), dtype=np.float32) if (readout == "samples" and return_samples) else None
        kw = dict(readout=readout, sampler=sampler, n_steps=n_steps, guidance_scale=guidance_scale,
                  source_guidance=source_guidance, method=method, recon_guidance=recon_guidance)
        stochastic = readout == "samples" and getattr(make_scheduler(sampler, self.config), "stochastic", False)
        bar = progress(total=n * K, desc=f"translate {direction} ({readout})", unit="cell")
        for s, e, B in X.batches(batch_size):
            z_src = self.encode(src, f_in(B))
            zs, ys = [], []
            for k in range(K):
                noise = cell_noise(names[s:e], 2 * L, seed, k, device=dev)
                step_noise = (cell_noise(names[s:e], n_steps * L, seed, k, stream=1, device=dev)
                              .view(e - s, n_steps, L).transpose(0, 1) if stochastic else None)
                z_t = self.translate_latent(z_src, direction, cond_all[s:e], noise, step_noise=step_noise, **kw)
                zs.append(z_t.float())
                if readout == "samples":
                    ys.append(decode(z_t).float().cpu().numpy())
                bar.update(e - s)
            z_mean = torch.stack(zs).mean(0)
            z_out[s:e] = z_mean.cpu().numpy()
            y_out[s:e] = decode(z_mean).float().cpu().numpy()
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
                                  "n_samples": int(n_samples or 0), "sampler": sampler, "n_steps": int(n_steps),
                                  "seed": int(seed), "method": method, "guidance_scale": float(guidance_scale),
                                  "source_guidance": float(source_guidance),
                                  "values": "log1p(1e4*rho)" if src == "atac" else "probability"}
        if samples is not None:
            res.uns["samples"] = samples
        return res

    # ------------------------------------------------------------------ latents / reconstruction
    @torch.no_grad()
    def get_latent(self, mdata, modality: str = "rna", *, batch_size: int = 1024) -> np.ndarray:
        """Normalised latent of each cell (cells x latent_dim) from one modality."""
        self._require_fitted()
        if modality not in self.config.modalities:
            raise ScdxError(f"this model has no {modality!r} modality (modalities={self.config.modalities})")
        order = self._check_features(mdata, (modality,))[modality]
        from ._data import row_source

        X = row_source(self, mdata, modality, order)  # streamed in batches, validated as read
        self.module.eval()
        f = self.rna_tensor if modality == "rna" else self.atac_tensor
        out = np.empty((X.n_obs, int(self.config.latent_dim)), dtype=np.float32)  # zero cells: (0, latent_dim)
        for s, e, B in X.batches(batch_size):
            out[s:e] = self.encode(modality, f(B)).float().cpu().numpy()
        return out

    @torch.no_grad()
    def reconstruct(self, mdata, modality: str = "rna", *, batch_size: int = 1024) -> np.ndarray:
        """Autoencoder reconstruction: RNA proportions ``rho`` or ATAC probabilities (cells x features)."""
        z = torch.as_tensor(self.get_latent(mdata, modality, batch_size=batch_size), device=self.device)
        dec = self.decode_rna if modality == "rna" else self.decode_atac
        return np.concatenate([dec(z[s:s + batch_size]).cpu().numpy() for s in range(0, len(z), batch_size)])

    def _require_paired(self, what: str) -> None:
        if not self.config.paired:
            raise ScdxError(f"{what} needs a paired RNA+ATAC model; this is a single-modality model "
                            f"(modalities={self.config.modalities}). Train with setup_mudata(..., "
                            "modalities=('rna', 'atac')) on paired data.")

    def _require_fitted(self) -> None:
        if int(self.module.fitted) == 0:
            raise ScdxError("the model is not trained yet: call model.train(...) or ScDiffusionX.load(path)")

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, *, overwrite: bool = False, half: bool | None = None) -> None:
        """Save to a directory: ``config.json``, ``model.pt`` (state_dict), var names, setup.

        The directory is written beside its final place and renamed when complete, so a crash
        never leaves a half-written checkpoint. ``model.pt`` loads with ``weights_only=True``.
        ``half=True`` stores float weights as float16 (half the size; loaded back as float32);
        ``None`` (default) keeps the precision the model was loaded with (float32 for a new model).
        """
        if half is None:
            half = bool(getattr(self, "_stored_half", False))
        path = Path(path)
        if path.exists() and not overwrite:
            raise CheckpointError(f"{path} exists; pass overwrite=True to replace it")
        with atomic_dir(path) as tmp:
            state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
                     for k, v in self.module.state_dict().items()}
            torch.save(state, tmp / "model.pt")
            meta = {"format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                    "setup": _jsonable(self.setup), "history": self.history,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            (tmp / "rna_var_names.txt").write_text("\n".join(self.rna_var_names) + "\n")
            (tmp / "atac_var_names.txt").write_text("".join(f"{v}\n" for v in self.atac_var_names))

    @classmethod
    def load_pretrained(cls, name: str = "mouse_mop_demo", mdata=None, *, device: str | None = None) -> ScDiffusionX:
        """Load a checkpoint shipped with the package by name (``"mouse_mop_demo"``), from any folder."""
        return cls.load(pretrained_path(name), mdata, device=device)

    @classmethod
    def load(cls, path: str | os.PathLike, mdata=None, *, device: str | None = None) -> ScDiffusionX:
        """Load a saved model; with ``mdata``, refuse data whose features differ (naming them).

        Raises
        ------
        CheckpointError
            Missing directory or files, unreadable / truncated weights, unknown format version.
        FeatureMismatchError
            ``mdata``'s genes or peaks differ from the model's.
        """
        if str(path) in PRETRAINED and not Path(path).exists():  # a shipped checkpoint by name
            path = pretrained_path(str(path))
        path = Path(path)
        need = ["config.json", "model.pt", "rna_var_names.txt", "atac_var_names.txt"]
        from .._io import restore_orphaned_dir

        restore_orphaned_dir(path)  # a save killed between its two renames left the old copy aside
        if not path.is_dir():
            raise CheckpointError(f"no model directory at {path}")
        missing = [f for f in need if not (path / f).exists()]
        if missing:
            raise CheckpointError(f"model directory {path} is incomplete: missing {missing}")
        try:
            meta = json.loads((path / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path / 'config.json'} holds a JSON {type(meta).__name__}, not a checkpoint record")
        ver = meta.get("format_version")
        if ver != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint format version {ver!r}; this scdiffx_grn reads version {FORMAT_VERSION}"
                + (" (saved by a newer release: upgrade scdiffx_grn)" if isinstance(ver, int) and ver > FORMAT_VERSION else "")
            )
        try:
            cfg = ModelConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ScdxError) as e:
            raise CheckpointError(f"{path / 'config.json'} has a bad model config: {e}") from None
        try:
            model = cls(None, config=cfg)
        except (TypeError, ValueError, ScdxError) as e:  # e.g. a size that is not a number
            raise CheckpointError(f"{path / 'config.json'} has a bad model config: {e}") from None
        model.setup = meta.get("setup", {})
        model.history = meta.get("history", {"ae_loss": [], "diffusion_loss": []})
        try:
            model.rna_var_names = (path / "rna_var_names.txt").read_text().splitlines()
            model.atac_var_names = (path / "atac_var_names.txt").read_text().splitlines() if cfg.n_peaks else []
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{path}: a var name file is not UTF-8 text (corrupt?): {e}") from None
        if len(model.rna_var_names) != cfg.n_genes or len(model.atac_var_names) != cfg.n_peaks:
            raise CheckpointError(f"{path}: var name files do not match the config's feature counts")
        try:
            state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for truncated / corrupt files
            raise CheckpointError(f"{path / 'model.pt'} could not be read (truncated or corrupt?): {e}") from None
        ref = model.module.state_dict()
        model._stored_half = any(v.dtype == torch.float16 for v in state.values())  # re-saved at the same size
        state = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v) for k, v in state.items()}
        try:
            model.module.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path / 'model.pt'} does not match its config: {str(e)[:500]}") from None
        model.to(device if device is not None else "auto")
        if mdata is not None:
            model._check_features(mdata, tuple(cfg.modalities))
        model.module.eval()
        return model

    def __repr__(self) -> str:
        c = self.config
        n_par = sum(p.numel() for p in self.module.parameters())
        return (f"ScDiffusionX(genes={c.n_genes}, peaks={c.n_peaks}, latent={c.latent_dim}, "
                f"tokens={c.n_tokens}x{c.token_dim}, width={c.width}, heads={c.n_heads}, layers={c.n_layers}, "
                f"labels={c.label_keys}, params={n_par / 1e6:.2f}M, trained={bool(int(self.module.fitted))})")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Index)):
        return [_jsonable(v) for v in list(obj)]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj
