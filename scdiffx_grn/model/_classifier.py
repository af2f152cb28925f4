"""scDiffusion-style classifier guidance with noisy-latent classifiers.

A :class:`LatentClassifier` is a time-conditioned MLP on the model's *normalised* latent(s)
``x_t`` at random noise levels. It is trained separately from the denoiser
(:func:`train_latent_classifier`), so a trained model can be steered towards a label it was
never conditioned on (a new condition without retraining the denoiser).

At sampling time each classifier adds ``-scale * k(t) * grad_x log p(y | x_t)`` to the model
output, where ``k`` comes from the scheduler (``sqrt(1 - abar)`` for epsilon prediction, as in
Dhariwal & Nichol / scDiffusion; the equivalent change for velocity and flow models). Several
classifiers (multi-condition guidance) are summed. A target may be a single class, one class per
cell, or a mixture ``{class: weight}``; the mixture ``{a: w, b: 1 - w}`` gives
``w grad log p(a|x) + (1 - w) grad log p(b|x)``, which :func:`~scdiffx_grn.model.interpolate` uses.

Saved as a directory with ``classifier.pt`` (state_dict, loads with ``weights_only=True``) and
``classifier.json`` (its configuration and classes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import (
    CheckpointError,
    InputDataError,
    MissingLabelError,
    ScdxError,
    _fmt_items,
)
from .._io import atomic_dir
from .._registry import labels as registry_labels
from ._access import require_fitted
from ._guidance import ClassifierGuidance, Guidance, LabelGuidance
from ._modules import timestep_embedding
from ._schedulers import training_scheduler

CLASSIFIER_FORMAT = 1


class LatentClassifier(nn.Module):
    """Time-conditioned MLP classifier ``p(y | x_t, t)`` on normalised latents.

    Parameters
    ----------
    latent_dim
        Latent size of each modality.
    classes
        Class names (output order).
    label_key
        The obs column it was trained on.
    modalities
        Which latents it reads (``["rna"]`` or ``["rna", "atac"]``), concatenated in that order.
    hidden
        Hidden layer sizes; the time embedding is added before each activation.
    time_dim
        Size of the sinusoidal embedding of the model time.
    objective, n_train_timesteps
        Of the diffusion model it was trained for (checked when guiding).
    """

    def __init__(self, latent_dim: int, classes: Sequence[str], *, label_key: str, modalities: Sequence[str] = ("rna",),
                 hidden: Sequence[int] = (256, 256), time_dim: int = 64, dropout: float = 0.1,
                 objective: str = "diffusion", n_train_timesteps: int = 1000):
        super().__init__()
        self.latent_dim, self.classes, self.label_key = int(latent_dim), [str(c) for c in classes], str(label_key)
        self.modalities = [str(m) for m in modalities]
        self.hidden, self.time_dim, self.dropout = [int(h) for h in hidden], int(time_dim), float(dropout)
        self.objective, self.n_train_timesteps = str(objective), int(n_train_timesteps)
        self.history: list[float] = []
        d_in = self.latent_dim * len(self.modalities)
        self.t_mlp = nn.Sequential(nn.Linear(self.time_dim, self.time_dim), nn.SiLU())
        sizes = [d_in, *self.hidden]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.t_proj = nn.ModuleList([nn.Linear(self.time_dim, b) for b in self.hidden])
        self.norms = nn.ModuleList([nn.LayerNorm(b) for b in self.hidden])
        self.drop = nn.Dropout(self.dropout)
        self.out = nn.Linear(sizes[-1], len(self.classes))

    def config(self) -> dict[str, Any]:
        return {"format": CLASSIFIER_FORMAT, "latent_dim": self.latent_dim, "classes": self.classes,
                "label_key": self.label_key, "modalities": self.modalities, "hidden": self.hidden,
                "time_dim": self.time_dim, "dropout": self.dropout, "objective": self.objective,
                "n_train_timesteps": self.n_train_timesteps, "history": self.history}

    def inputs(self, z_rna: torch.Tensor, z_atac: torch.Tensor | None) -> torch.Tensor:
        """The classifier input from the two (noisy) normalised latents."""
        parts = [z_rna if m == "rna" else z_atac for m in self.modalities]
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) from the classifier input ``x`` at model time ``t`` (B,)."""
        temb = self.t_mlp(timestep_embedding(t, self.time_dim))
        h = x
        for lin, tp, norm in zip(self.layers, self.t_proj, self.norms):
            h = self.drop(F.silu(norm(lin(h) + tp(temb))))
        return self.out(h)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, t: torch.Tensor | int = 0) -> torch.Tensor:
        """Class probabilities; ``t=0`` for clean latents."""
        self.eval()
        if not torch.is_tensor(t):
            t = torch.full((x.shape[0],), float(t), device=x.device)
        return torch.softmax(self(x, t), -1)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write ``classifier.pt`` (state_dict) and ``classifier.json`` to the directory ``path``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise CheckpointError(f"{path} exists; pass overwrite=True to replace it")
        with atomic_dir(path) as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, tmp / "classifier.pt")
            (tmp / "classifier.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None) -> "LatentClassifier":
        path = Path(path)
        for f in ("classifier.json", "classifier.pt"):
            if not (path / f).exists():
                raise CheckpointError(f"classifier directory {path} is incomplete: missing {f}")
        try:
            cfg = json.loads((path / "classifier.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / 'classifier.json'} is not valid JSON ({e})") from None
        if cfg.get("format") != CLASSIFIER_FORMAT:
            raise CheckpointError(f"{path}: classifier format {cfg.get('format')!r}, expected {CLASSIFIER_FORMAT}")
        history = cfg.pop("history", [])
        cfg.pop("format")
        latent_dim, classes = cfg.pop("latent_dim"), cfg.pop("classes")
        clf = cls(latent_dim, classes, **cfg)
        try:
            state = torch.load(path / "classifier.pt", map_location="cpu", weights_only=True)
            clf.load_state_dict(state)
        except Exception as e:
            raise CheckpointError(f"{path / 'classifier.pt'} could not be loaded: {str(e)[:300]}") from None
        clf.history = list(history)
        if device is not None:
            clf.to(device)
        return clf.eval()


def save_classifier(classifier: LatentClassifier, path, *, overwrite: bool = False) -> None:
    """Save a classifier (see :meth:`LatentClassifier.save`)."""
    classifier.save(path, overwrite=overwrite)


def load_classifier(path, *, device=None) -> LatentClassifier:
    """Load a classifier saved by :func:`save_classifier`."""
    return LatentClassifier.load(path, device=device)


# ----------------------------------------------------------------------------- training
def train_latent_classifier(model, mdata, label_key: str, *, modalities: Sequence[str] | None = None,
                            hidden: Sequence[int] = (256, 256), time_dim: int = 64, dropout: float = 0.1,
                            steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                            max_timestep: float | None = None, seed: int = 0, split_key: str | None = None,
                            train_value: str = "train", balance: bool = True) -> LatentClassifier:
    """Train a noisy-latent classifier for ``label_key`` on a trained model's latents.

    The model (autoencoders, denoiser) is not changed. Cells are encoded once; each step draws a
    batch, a random timestep per cell (integer for diffusion models, continuous for flow models)
    and noises the latents with the model's own forward process.

    Parameters
    ----------
    model
        A trained :class:`~scdiffx_grn.ScDiffusionX`.
    mdata
        Cells with the model's features and an obs column ``label_key`` (need not be one of the
        model's conditioning labels).
    modalities
        Latents the classifier reads (default: all of the model's modalities).
    hidden, time_dim, dropout
        Classifier architecture.
    steps, batch_size, lr, weight_decay
        AdamW optimisation.
    max_timestep
        Train on timesteps below this (model time; default: all).
    seed
        Seeds batches, timesteps, noise and the initialisation.
    split_key, train_value
        Use only cells with ``obs[split_key] == train_value``.
    balance
        Sample cells with class-balanced weights.

    Returns
    -------
    LatentClassifier
        In eval mode on the model's device; ``history`` holds the loss every 50 steps.
    """
    require_fitted(model)
    cfg = model.config
    mods = list(cfg.modalities if modalities is None else modalities)
    bad = [m for m in mods if m not in cfg.modalities]
    if bad or not mods:
        raise ScdxError(f"classifier modalities {mods} must be a non-empty subset of the model's {cfg.modalities}")
    labels = registry_labels(mdata, label_key, allow_missing=True)  # unlabelled cells are left out
    keep = ~pd.isna(labels).to_numpy()
    if split_key is not None:
        split = registry_labels(mdata, split_key, what="data (split column)").to_numpy()
        keep &= (split == str(train_value))
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        raise InputDataError(f"only {len(idx)} labelled training cells for {label_key!r}")
    sub = mdata[idx] if len(idx) < mdata.n_obs else mdata
    y_str = labels.to_numpy()[idx].astype(str)
    classes = sorted(set(y_str))
    if len(classes) < 2:
        raise InputDataError(f"label {label_key!r} has a single class {classes}: nothing to classify")
    lut = {c: i for i, c in enumerate(classes)}
    dev = model.device
    y = torch.as_tensor([lut[c] for c in y_str], device=dev)
    z = {m: torch.as_tensor(model.get_latent(sub, m), device=dev) for m in mods}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        clf = LatentClassifier(cfg.latent_dim, classes, label_key=label_key, modalities=mods, hidden=hidden,
                               time_dim=time_dim, dropout=dropout, objective=cfg.objective,
                               n_train_timesteps=cfg.n_train_timesteps).to(dev)
    sched = training_scheduler(cfg)
    gen = torch.Generator().manual_seed(int(seed))
    counts = np.bincount(y.cpu().numpy(), minlength=len(classes)).astype(np.float64)
    w = torch.as_tensor((1.0 / counts)[y.cpu().numpy()] if balance else np.ones(len(y)), dtype=torch.float64)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    T = float(cfg.n_train_timesteps if max_timestep is None else max_timestep)
    run = 0.0
    clf.train()
    for step in range(int(steps)):
        b = torch.multinomial(w, batch_size, replacement=True, generator=gen)
        t = sched.sample_training_timesteps(batch_size, gen)
        if max_timestep is not None:
            t = (t.float() * (T / cfg.n_train_timesteps)).to(t.dtype)
        noise = torch.randn(batch_size, cfg.latent_dim * len(mods), generator=gen)
        b, t, noise = b.to(dev), t.to(dev), noise.to(dev)
        zs = torch.cat([z[m][b] for m in mods], -1)
        x_t = sched.add_noise(zs, noise, t)
        loss = F.cross_entropy(clf(x_t, t), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run += float(loss.detach())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            clf.history.append(run / ((step % 50) + 1))
            run = 0.0
    return clf.eval()


# ----------------------------------------------------------------------------- guidance
def _target_weights(clf: LatentClassifier, target, n: int, device) -> torch.Tensor:
    """(n, n_classes) weights over classes from one value, one per cell, a mixture dict, or a matrix."""
    C = len(clf.classes)
    lut = {c: i for i, c in enumerate(clf.classes)}

    def onehot(v):
        if str(v) not in lut:
            raise MissingLabelError(f"classifier for {clf.label_key!r} does not know {v!r}; "
                                    f"classes: {_fmt_items(clf.classes, 30)}")
        row = np.zeros(C)
        row[lut[str(v)]] = 1.0
        return row

    if isinstance(target, Mapping):
        row = sum(float(wt) * onehot(k) for k, wt in target.items())
        W = np.broadcast_to(row, (n, C))
    elif isinstance(target, np.ndarray) and target.ndim == 2:
        if target.shape != (n, C):
            raise InputDataError(f"target weight matrix has shape {target.shape}, expected {(n, C)}")
        W = target
    else:
        vals = np.atleast_1d(np.asarray(target, dtype=object))
        if len(vals) == 1:
            vals = np.repeat(vals, n)
        if len(vals) != n:
            raise InputDataError(f"classifier target for {clf.label_key!r} has {len(vals)} values for {n} cells")
        W = np.stack([onehot(v) for v in vals])
    return torch.as_tensor(np.ascontiguousarray(W), dtype=torch.float32, device=device)


def classifier_guidance(model, spec: Mapping[str, tuple], n: int, *, guidance_scale=1.0,
                        guidance_mode: str = "joint", base: Guidance | None = None) -> ClassifierGuidance:
    """The :class:`~scdiffx_grn.model._guidance.ClassifierGuidance` of ``{label_key: (classifier, target, scale)}``
    for a request of ``n`` cells, on top of label guidance (``guidance_scale`` / ``guidance_mode``) or ``base``."""
    cfg = model.config
    terms = []
    for key, item in spec.items():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ScdxError(f"classifier_guidance[{key!r}] must be (classifier, target_values, scale)")
        clf, target, scale = item
        if not isinstance(clf, LatentClassifier):
            raise ScdxError(f"classifier_guidance[{key!r}][0] is not a LatentClassifier")
        if clf.latent_dim != cfg.latent_dim or clf.objective != cfg.objective \
                or any(m not in cfg.modalities for m in clf.modalities):
            raise ScdxError(f"classifier for {key!r} (latent {clf.latent_dim}, {clf.objective}, {clf.modalities}) "
                            f"does not fit this model (latent {cfg.latent_dim}, {cfg.objective}, {cfg.modalities})")
        clf.to(model.device).eval()
        terms.append((clf, _target_weights(clf, target, n, model.device), float(scale)))
    return ClassifierGuidance(terms, base if base is not None else LabelGuidance(guidance_scale, guidance_mode))


def generate_with_classifier(model, classifier_guidance: Mapping[str, tuple], labels=None, **kwargs):
    """``model.generate(labels, classifier_guidance=..., **kwargs)``.

    ``labels`` defaults to ``n_cells`` unconditioned cells (every model label null) so that only
    the classifiers steer generation; pass ``n_cells``.
    """
    if labels is None:
        n = kwargs.pop("n_cells", None)
        if n is None:
            raise ScdxError("give labels or n_cells")
        labels = pd.DataFrame(index=range(int(n)))
    return model.generate(labels, classifier_guidance=classifier_guidance, **kwargs)
