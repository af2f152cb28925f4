"""Peer methods behind the baselines' translator interface (optional; scvi-tools is imported lazily).

:class:`MultiVITranslator` wraps scvi-tools' MultiVI (Ashuach et al. 2023) so that the same
scoring code (:func:`~scdiffx_grn.eval.translation_scores` with ``peers=``,
:func:`~scdiffx_grn.eval.source_dependence`) applies to it unchanged:

- ``fit(mdata, train=..., val=...)`` trains MultiVI on the paired training cells with the
  validation cells for its early stopping (the documented defaults unless told otherwise);
- ``translate(mdata, direction)`` is inductive: each cell's target modality is replaced by zeros,
  so MultiVI encodes it from the source modality alone (its encoder masks an all-zero
  modality), and the decoded latent mean is returned as ``log1p(1e4 * rho)`` (RNA, the
  package's log1p CP10k scale) or region probabilities (ATAC; MultiVI's documented default
  leaves out the cell and region factors, ``normalize_regions=True`` multiplies the region ones in);
- ``sample(mdata, direction, n_samples)`` draws the latent from MultiVI's posterior given the
  source, decodes it and adds observation noise (negative binomial with MultiVI's gene
  dispersion at a library size drawn from the training cells' log-normal law; Bernoulli peaks
  with MultiVI's observation probability: region probability x region factor x the
  accessibility factor of a random training cell),
  on the same footing as the model's samples in :func:`~scdiffx_grn.eval.translation_scores`.

``pip install -e ".[peers]"`` installs scvi-tools; it is never imported by ``import scdiffx_grn``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, ScdxError
from .._registry import TARGET_SUM, log_normalize
from .._vocab import MODALITIES, split_direction
from ._common import cell_indices, counts_of

__all__ = ["MultiVITranslator", "import_scvi"]

_INSTALL = 'pip install -e ".[peers]"'


def import_scvi():
    """scvi-tools, or a one-line error naming the install command when it is missing."""
    try:
        import scvi
    except ImportError as e:
        raise ScdxError(f"MultiVI needs scvi-tools, which is not installed ({e}); install it with {_INSTALL}") from None
    return scvi


class MultiVITranslator:
    """MultiVI as a translator (``fit`` / ``translate`` / ``sample`` / ``save`` / ``load``).

    Parameters
    ----------
    max_epochs
        MultiVI's ``train(max_epochs=...)`` (its default 500, with its early stopping on the
        validation cells, patience 50).
    max_time
        Wall-time cap of training (Lightning ``max_time``, e.g. ``"00:00:40:00"``; ``None``: none).
    seed
        ``scvi.settings.seed`` before training and the seed of ``sample``.
    threads
        Torch CPU threads while training / translating (``None``: leave as set).
    normalize_regions
        ATAC translations multiplied by MultiVI's region factors (its ``get_normalized_accessibility``
        option; default ``False`` as there).
    model_kwargs
        Extra ``scvi.model.MULTIVI`` arguments (none: the documented defaults).
    """

    #: ``translate`` is the posterior mean and takes no ``readout=`` (:class:`~scdiffx_grn.eval.Translator`);
    #: samples come from :meth:`sample`
    translation_readouts: tuple[str, ...] = ()

    def __init__(self, max_epochs: int = 500, max_time: str | None = None, seed: int = 0,
                 threads: int | None = 1, normalize_regions: bool = False, **model_kwargs: Any):
        self.max_epochs = int(max_epochs)
        self.normalize_regions = bool(normalize_regions)
        self.max_time = max_time
        self.seed = int(seed)
        self.threads = threads
        self.model_kwargs = model_kwargs

    # ---- data
    @staticmethod
    def _mudata(mdata, blank: str | None = None):
        """Counts of both modalities in ``X`` (float32 CSR, RNA first); ``blank``: that modality zeroed."""
        import mudata as md
        import anndata as ad

        mods = {}
        for m in MODALITIES:
            if m not in mdata.mod:
                raise InputDataError(f"MultiVI needs the {m!r} modality (zeros when unobserved); has {list(mdata.mod)}")
            a = mdata.mod[m]
            X = sp.csr_matrix(counts_of(mdata, m), dtype=np.float32)
            if m == blank:
                X = sp.csr_matrix(X.shape, dtype=np.float32)
            mods[m] = ad.AnnData(X, obs=pd.DataFrame(index=pd.Index(a.obs_names.astype(str))),
                                 var=pd.DataFrame(index=pd.Index(a.var_names.astype(str))))
        out = md.MuData(mods)
        out.obs["_indices"] = np.arange(out.n_obs)  # MultiVI's cell-index field (registered by setup_mudata)
        return out

    def _threads(self):
        import torch

        if self.threads is not None:
            torch.set_num_threads(int(self.threads))

    # ---- training
    def fit(self, mdata, *, train=None, val=None) -> "MultiVITranslator":
        """Train MultiVI on the ``train`` cells, early-stopping on the ``val`` cells (masks or positions)."""
        scvi = import_scvi()
        self._threads()
        n = mdata.n_obs
        tr = cell_indices(train, n, "train") if train is not None else np.arange(n)
        va = cell_indices(val, n, "val") if val is not None else np.array([], dtype=np.int64)
        if np.intersect1d(tr, va).size:
            raise InputDataError("train and val cells overlap")
        keep = np.concatenate([tr, va])
        self.adata_ = self._mudata(mdata[keep].copy())
        scvi.settings.seed = self.seed
        scvi.model.MULTIVI.setup_mudata(self.adata_, modalities={"rna_layer": "rna", "atac_layer": "atac"})
        self.model_ = scvi.model.MULTIVI(self.adata_, **self.model_kwargs)
        kw = {"max_time": self.max_time} if self.max_time else {}
        self.model_.train(max_epochs=self.max_epochs, accelerator="cpu",
                          datasplitter_kwargs={"external_indexing": [np.arange(len(tr)),
                                                                     np.arange(len(tr), len(keep)),
                                                                     np.array([], dtype=np.int64)]}, **kw)
        self._library_law(mdata[tr])
        self.n_train_ = len(tr)
        hist = self.model_.history
        self.epochs_ = int(len(hist["elbo_train"])) if "elbo_train" in hist else None
        return self

    def _library_law(self, train_mdata) -> None:
        lib = np.log(np.maximum(np.asarray(counts_of(train_mdata, "rna").sum(1)).ravel(), 1.0))
        self.log_lib_ = (float(lib.mean()), float(lib.std(ddof=1)))

    def save(self, path: str | Path) -> None:
        """MultiVI's own ``save`` (weights and registry; the training data is not stored) plus the library law."""
        import json

        self._require_fitted()
        p = Path(path)
        self.model_.save(str(p), overwrite=True, save_anndata=False)
        (p / "translator.json").write_text(json.dumps({"log_lib": self.log_lib_, "epochs": self.epochs_,
                                                       "max_epochs": self.max_epochs, "seed": self.seed}))

    @classmethod
    def load(cls, path: str | Path, mdata, *, train=None, val=None, threads: int | None = 1) -> "MultiVITranslator":
        """Load a saved MultiVI; ``mdata`` / ``train`` / ``val`` as given to ``fit`` (the registry is checked on them)."""
        import json

        scvi = import_scvi()
        p = Path(path)
        if not (p / "model.pt").exists():
            raise ScdxError(f"no saved MultiVI in {p} (no model.pt); train it first")
        meta = json.loads((p / "translator.json").read_text())
        self = cls(max_epochs=meta["max_epochs"], seed=meta["seed"], threads=threads)
        self._threads()
        n = mdata.n_obs
        tr = cell_indices(train, n, "train") if train is not None else np.arange(n)
        va = cell_indices(val, n, "val") if val is not None else np.array([], dtype=np.int64)
        self.adata_ = self._mudata(mdata[np.concatenate([tr, va])].copy())
        self.model_ = scvi.model.MULTIVI.load(str(p), adata=self.adata_, accelerator="cpu")
        self.n_train_ = len(tr)
        self.log_lib_ = tuple(meta["log_lib"])
        self.epochs_ = meta["epochs"]
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ScdxError("MultiVITranslator is not fitted: call fit(mdata, train=..., val=...) or load(...)")

    # ---- translation
    def _source_only(self, mdata, direction: str):
        src, tgt = split_direction(direction)
        return src, tgt, self._mudata(mdata, blank=tgt)

    def _decode(self, q, tgt: str, use_z_mean: bool) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if tgt == "rna":
                rho = self.model_.get_normalized_expression(q, use_z_mean=use_z_mean, return_numpy=True)
                return np.asarray(rho, np.float64)
            return np.asarray(self.model_.get_normalized_accessibility(
                q, use_z_mean=use_z_mean, normalize_regions=self.normalize_regions, return_numpy=True), np.float64)

    def translate(self, mdata, direction: str = "atac->rna", n_samples: int | None = None, seed: int | None = None,
                  **_: Any):
        """Posterior-mean translation from the source modality alone (the target is zeroed).

        Returns an AnnData aligned to ``mdata``'s cells: ``log1p(1e4 * rho)`` (RNA) or probabilities (ATAC).
        """
        import anndata as ad

        self._require_fitted()
        self._threads()
        src, tgt, q = self._source_only(mdata, direction)
        Y = self._decode(q, tgt, use_z_mean=True)
        if tgt == "rna":
            Y = np.log1p(TARGET_SUM * Y)
        names = pd.Index(mdata.mod[src].obs_names.astype(str))
        return ad.AnnData(Y.astype(np.float32), obs=pd.DataFrame(index=names),
                          var=pd.DataFrame(index=pd.Index(q.mod[tgt].var_names)))

    def sample(self, mdata, direction: str = "atac->rna", n_samples: int = 10, seed: int = 0) -> np.ndarray:
        """``(n_samples, cells, features)`` observation-level samples: log1p CP10k counts (RNA) or binary peaks."""
        import torch

        self._require_fitted()
        self._threads()
        src, tgt, q = self._source_only(mdata, direction)
        rng = np.random.default_rng(seed)
        theta = torch.exp(self.model_.module.px_r).detach().cpu().numpy().astype(np.float64)
        if tgt == "atac" and not hasattr(self, "acc_factors_"):
            with torch.inference_mode():
                self.acc_factors_ = np.asarray(self.model_.get_library_size_factors(
                    self.adata_, indices=np.arange(self.n_train_))["accessibility"], np.float64).ravel()
        region = 1.0 if self.normalize_regions else self.model_.get_region_factors().astype(np.float64)
        out = []
        for k in range(int(n_samples)):
            torch.manual_seed(int(seed) * 1000 + k)
            Y = self._decode(q, tgt, use_z_mean=False)
            if tgt == "atac":  # MultiVI's observation model: p x region factor x cell accessibility factor
                lf = self.acc_factors_[rng.integers(0, len(self.acc_factors_), size=len(Y))]
                out.append((rng.random(Y.shape) < np.clip(Y * region * lf[:, None], 0, 1)).astype(np.float64))
                continue
            rho = Y / np.maximum(Y.sum(1, keepdims=True), 1e-12)
            lib = np.exp(rng.normal(self.log_lib_[0], self.log_lib_[1], size=len(rho)))
            mean = rho * lib[:, None]
            lam = rng.gamma(shape=np.broadcast_to(theta, mean.shape), scale=np.maximum(mean, 1e-12) / theta)
            out.append(log_normalize(rng.poisson(lam).astype(np.float64)).astype(np.float64))
        return np.stack(out)
