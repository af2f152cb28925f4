"""Checkpoints: the model directory format, shipped checkpoints, save and load.

A checkpoint is a directory with ``config.json`` (format version, :class:`ModelConfig`, the
registry / setup the model was trained with, loss history, the translation calibration of
:meth:`ScDiffusionX.calibrate_translation` if one was fitted), ``model.pt`` (the module's
state_dict; loads with ``weights_only=True``), the feature names (``rna_var_names.txt``,
``atac_var_names.txt``) and, for a fitted readout head, ``translation_head.pt`` (its arrays, by
direction; ``weights_only=True``). It is written beside its final place and renamed when complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._errors import CheckpointError, ScdxError
from .._io import atomic_dir
from ._config import FORMAT_VERSION, ModelConfig

__all__ = ["PRETRAINED", "pretrained_path", "save_model", "load_model", "CHECKPOINT_FILES"]

#: checkpoints shipped inside the package (``scdiffx_grn/pretrained/<name>``)
PRETRAINED = {"mouse_mop_demo": "small scDiffusion-X on the embedded mouse MOp SNARE-seq set (models/README.md)"}
CHECKPOINT_FILES = ("config.json", "model.pt", "rna_var_names.txt", "atac_var_names.txt")


def pretrained_path(name: str = "mouse_mop_demo") -> Path:
    """Folder of a checkpoint shipped with the package (works from any install, editable or not)."""
    from importlib.resources import files

    if name not in PRETRAINED:
        raise CheckpointError(f"no shipped checkpoint named {name!r}; shipped: {sorted(PRETRAINED)}")
    p = Path(str(files("scdiffx_grn") / "pretrained" / name))
    if not p.is_dir():
        raise CheckpointError(f"the shipped checkpoint {name!r} is missing from this install ({p})")
    return p


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


def save_model(model, path: str | os.PathLike, *, overwrite: bool = False, half: bool | None = None) -> None:
    """Write ``model`` to the directory ``path`` (see :meth:`ScDiffusionX.save`)."""
    if half is None:
        half = bool(getattr(model, "_stored_half", False))
    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists; pass overwrite=True to replace it")
    with atomic_dir(path) as tmp:
        state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
                 for k, v in model.module.state_dict().items()}
        torch.save(state, tmp / "model.pt")
        from ._calibration import HEAD_ARRAYS

        cal = getattr(model, "translation_calibration", {}) or {}
        arrays = {f"{d}/{k}": torch.as_tensor(np.asarray(r[k], np.float32)) for d, r in cal.items()
                  for k in HEAD_ARRAYS if k in r}
        if arrays:
            torch.save(arrays, tmp / "translation_head.pt")
        meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                "setup": _jsonable(model.setup), "history": model.history,
                "translation_calibration": _jsonable({d: {k: v for k, v in r.items() if k not in HEAD_ARRAYS}
                                                      for d, r in cal.items()}),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        (tmp / "rna_var_names.txt").write_text("\n".join(model.rna_var_names) + "\n")
        (tmp / "atac_var_names.txt").write_text("".join(f"{v}\n" for v in model.atac_var_names))


def _read_meta(path: Path) -> dict:
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
    return meta


def load_model(cls, path: str | os.PathLike, mdata=None, *, device: str | None = None):
    """Load a model of class ``cls`` saved by :func:`save_model` (see :meth:`ScDiffusionX.load`)."""
    if str(path) in PRETRAINED and not Path(path).exists():  # a shipped checkpoint by name
        path = pretrained_path(str(path))
    path = Path(path)
    from .._io import restore_orphaned_dir

    restore_orphaned_dir(path)  # a save killed between its two renames left the old copy aside
    if not path.is_dir():
        raise CheckpointError(f"no model directory at {path}")
    missing = [f for f in CHECKPOINT_FILES if not (path / f).exists()]
    if missing:
        raise CheckpointError(f"model directory {path} is incomplete: missing {missing}")
    meta = _read_meta(path)
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
    cal = meta.get("translation_calibration") or {}
    if not isinstance(cal, dict):
        raise CheckpointError(f"{path / 'config.json'}: translation_calibration must be a mapping")
    from ._calibration import HEAD_ARRAYS, check_calibration_record

    if any(isinstance(r, dict) and r.get("method") == "head" for r in cal.values()):
        try:
            arrays = torch.load(path / "translation_head.pt", map_location="cpu", weights_only=True)
            cal = {d: {**r, **{k: arrays[f"{d}/{k}"].numpy() for k in HEAD_ARRAYS}} if r.get("method") == "head"
                   else r for d, r in cal.items()}
        except Exception as e:  # missing, truncated or without a direction's arrays
            raise CheckpointError(f"{path / 'translation_head.pt'}: the readout head's arrays could not be read "
                                  f"({type(e).__name__}: {e}); refit it with calibrate_translation(method='head')"
                                  ) from None
    model.translation_calibration = {d: check_calibration_record(d, r, cfg.n_peaks, f"{path / 'config.json'}: ",
                                                                 cfg.latent_dim)
                                     for d, r in cal.items()}
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
