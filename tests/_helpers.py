"""Data builders, the tiny-model recipe and stand-in models shared by several test files.

A plain module (no fixtures, no tests): test files import it as ``from _helpers import ...`` (the
tests folder is on ``sys.path`` in a pytest run, as for ``conftest``); scripts run from the tests
folder (``_train_worker.py``, the screen subprocesses) import it the same way. The session-scoped
fixtures built from it (``tiny_mdata``, ``trained_tiny``, ...) live in ``conftest.py``.

Sections:

- the tiny paired data set and the one tiny-model recipe (``TINY``, :func:`make_tiny_mdata`,
  :func:`train_tiny`): the ``trained_tiny`` fixture, the training worker and the determinism tests
- two planted cell types (``SMALL``, :func:`two_type_mdata`): model and seed-system tests
- a weak cross-modal signal (:func:`weak_signal_mdata`): translation and peer tests
- the linear perturbation stand-in and its data (:class:`LinearStandIn`, :func:`make_synthetic`)
- the model inputs of the GRN stand-ins (:class:`StandInInputs`)
"""

from __future__ import annotations

import time

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from conftest import LinearTensorAPI

# ----------------------------------------------------------------------------- tiny data and model
TINY = dict(width=16, n_layers=1, n_heads=2, token_dim=4)
TINY_TRAIN = dict(ae_epochs=2, diffusion_steps=20, batch_size=16, device="cpu")


def make_tiny_mdata(n=60, g=20, p=40, seed=0):
    """``n`` paired cells of types A and B (``obs['cell_type']``, first half A): ``g`` genes
    ``gene{i}`` (the first half at mean 1, the rest at 3, doubled in B; gene0 raised by one so no
    cell is empty) and ``p`` peaks ``chr1-{1000 i}-{1000 i + 400}`` open in 30 % of cells; raw
    counts in X and ``layers['counts']``, cells ``cell{i}``."""
    md.set_options(pull_on_update=False)
    rng = np.random.default_rng(seed)
    ct = np.repeat(["A", "B"], n // 2)
    mu = np.where(np.arange(g)[None, :] < g // 2, 1.0, 3.0) * np.where(ct == "A", 1.0, 2.0)[:, None]
    X = rng.poisson(mu).astype(np.float32)
    X[:, 0] += 1  # no all-zero cells
    A = (rng.random((n, p)) < 0.3).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=[f"cell{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=pd.DataFrame(index=[f"gene{i}" for i in range(g)]))
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(),
                      var=pd.DataFrame(index=[f"chr1-{i * 1000}-{i * 1000 + 400}" for i in range(p)]))
    rna.layers["counts"] = rna.X.copy()
    atac.layers["counts"] = atac.X.copy()
    m = md.MuData({"rna": rna, "atac": atac})
    m.obs["cell_type"] = obs["cell_type"]
    return m


def train_tiny(mdata=None, seed: int = 0):
    """The tiny model: ``TINY`` trained with ``TINY_TRAIN`` and ``seed`` on ``mdata`` (default: a new
    :func:`make_tiny_mdata`) registered with ``labels=["cell_type"]``. Seconds on one CPU thread;
    the same call gives the same weights (the determinism tests rely on it)."""
    from scdiffx_grn import ScDiffusionX

    m = make_tiny_mdata() if mdata is None else mdata
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, seed=seed, **TINY)
    model.train(**TINY_TRAIN, seed=seed)
    return model


# ----------------------------------------------------------------------------- two planted cell types
SMALL = dict(width=32, n_layers=2, n_heads=2, token_dim=4)


def two_type_mdata(n=240, g=40, p=80, seed=0):
    """Two cell types with disjoint marker genes and marker peaks (planted structure)."""
    rng = np.random.default_rng(seed)
    ct = np.repeat([0, 1], n // 2)
    mu = np.full((2, g), 1.0)
    mu[0, : g // 4] = 12.0
    mu[1, g // 4 : g // 2] = 12.0
    X = rng.poisson(mu[ct]).astype(np.float32)
    pa = np.full((2, p), 0.05)
    pa[0, : p // 4] = 0.8
    pa[1, p // 4 : p // 2] = 0.8
    A = (rng.random((n, p)) < pa[ct]).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.where(ct == 0, "A", "B")),
                        "batch": pd.Categorical(rng.choice(["b1", "b2"], n))},
                       index=[f"cell{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=pd.DataFrame(index=[f"gene{i}" for i in range(g)]))
    rna.layers["counts"] = rna.X.copy()
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(),
                      var=pd.DataFrame(index=[f"chr1-{i * 1000}-{i * 1000 + 400}" for i in range(p)]))
    atac.layers["counts"] = atac.X.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = obs["cell_type"]
    mdata.obs["batch"] = obs["batch"]
    return mdata


# ----------------------------------------------------------------------------- weak cross-modal signal
N_F_GENES = 12


def weak_signal_mdata(n: int = 800, g: int = 40, p: int = 60, seed: int = 0):
    """Paired cells whose RNA depends weakly (~10 % of its log-mean variance) on the ATAC factor."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    h = rng.normal(size=(n, 2))
    w = np.where(np.arange(p) % 2 == 0, 1.0, -1.0)
    pa = 1 / (1 + np.exp(-(-0.5 + 1.6 * f[:, None] * w[None, :])))
    A = (rng.random((n, p)) < pa).astype(np.float32)
    a = np.zeros(g)
    a[:N_F_GENES] = 0.45  # f-driven genes
    b = rng.normal(0, 0.6, size=(2, g))
    log_mu = 1.6 + f[:, None] * a[None, :] + h @ b
    X = rng.poisson(np.exp(log_mu)).astype(np.float32)
    ct = np.where(f + 0.3 * rng.normal(size=n) > 0, "hi", "lo")
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=[f"c{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(g)]))
    rna.layers["counts"] = rna.X.copy()
    atac = ad.AnnData(sp.csr_matrix(A), obs=obs.copy(),
                      var=pd.DataFrame(index=[f"chr1_{i * 1000}_{i * 1000 + 400}" for i in range(p)]))
    atac.layers["counts"] = atac.X.copy()
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["cell_type"] = obs["cell_type"]
    split = np.where(np.arange(n) < int(0.75 * n), "train", "test")
    mdata.obs["split"] = pd.Categorical(split)
    return mdata


# ----------------------------------------------------------------------------- linear perturbation stand-in
# sizes of the stand-in and its data (not those of datasets.toy_multiome in conftest)
N_GENES, N_PEAKS, LATENT = 12, 16, 8
TYPES = ("A", "B", "C")


def make_synthetic(n_cells: int = 90, seed: int = 0, strength: float = 1.0) -> md.MuData:
    """Paired counts: cell type A has peak p0 open and gene g0 high (g0 follows p0 in every cell)."""
    rng = np.random.default_rng(seed)
    ct = np.array([TYPES[i % 3] for i in range(n_cells)])
    p_open = np.full((n_cells, N_PEAKS), 0.3)
    p_open[:, 0] = np.where(ct == "A", 0.9, 0.1)
    p_open[:, 1] = np.where(ct == "B", 0.9, 0.1)
    atac = (rng.random((n_cells, N_PEAKS)) < p_open).astype(np.float32)
    mu = np.full((n_cells, N_GENES), 5.0)
    mu[:, 0] = 2.0 + 30.0 * strength * atac[:, 0]
    mu[:, 1] = 2.0 + 30.0 * strength * atac[:, 1]
    rna = rng.poisson(mu).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=[f"c{i}" for i in range(n_cells)])
    r = ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    a = ad.AnnData(sp.csr_matrix(atac), obs=obs.copy(), var=pd.DataFrame(index=[f"chr1-{100 * i}-{100 * i + 50}"
                                                                                 for i in range(N_PEAKS)]))
    r.layers["counts"] = r.X.copy()
    a.layers["counts"] = a.X.copy()
    m = md.MuData({"rna": r, "atac": a})
    m.obs["cell_type"] = obs["cell_type"]
    return m


class LinearStandIn(LinearTensorAPI):
    """Deterministic stand-in honouring the model's tensor API; translation is a known linear map.

    Peak i (i = 0, 1) feeds latent dim i, which raises gene i in the RNA decoder; gene i feeds
    latent dim i, which raises peak i in the ATAC decoder. Noise enters additively, so the
    translation is deterministic given the noise.
    """

    def __init__(self, delay: float = 0.0, seed: int = 0):
        from types import SimpleNamespace

        import torch

        g = torch.Generator().manual_seed(seed)
        self.rna_var_names = [f"g{i}" for i in range(N_GENES)]
        self.atac_var_names = [f"chr1-{100 * i}-{100 * i + 50}" for i in range(N_PEAKS)]
        self.Wa = 0.1 * torch.randn(N_PEAKS, LATENT, generator=g)
        self.Wr = 0.1 * torch.randn(N_GENES, LATENT, generator=g)
        self.Dr = 0.1 * torch.randn(LATENT, N_GENES, generator=g)
        self.Da = 0.1 * torch.randn(LATENT, N_PEAKS, generator=g)
        for i in (0, 1):
            self.Wa[i, i] = 3.0
            self.Wr[i, i] = 1.0
            self.Dr[i, i] = 2.0
            self.Da[i, i] = 2.0
        self.delay = delay
        self.device = torch.device("cpu")
        self.setup = {"layers": {"rna": "counts", "atac": "counts"}}
        self.config = SimpleNamespace(latent_dim=LATENT, token_dim=1, label_keys=[])

    def translate_latent(self, z_src, direction, cond, noise, **kw):
        if self.delay:
            time.sleep(self.delay)
        return z_src + 0.3 * noise


# ----------------------------------------------------------------------------- GRN stand-ins
class StandInInputs:
    """The members the stand-ins share: inputs (log1p CP10k RNA, the library's transform; binary ATAC),
    noise of width ``config.latent_dim`` keyed by obs name, the attention maps of ``module.denoiser``."""

    def cell_noise(self, names, seed, sample=0, *, stream=0, device=None):
        from scdiffx_grn._modelio import cell_noise

        return cell_noise(names, self.config.latent_dim, seed, sample, stream=stream, device=device)

    def denoiser_attention(self, z_rna, z_atac, t_rna, t_atac, cond):
        return self.module.denoiser(z_rna, z_atac, t_rna, t_atac, cond, return_attention=True)[2]

    def rna_tensor(self, X):
        import torch

        from scdiffx_grn._registry import log_normalize

        return log_normalize(torch.as_tensor(np.asarray(X), dtype=torch.float32))

    def atac_tensor(self, X):
        import torch

        return (torch.as_tensor(np.asarray(X), dtype=torch.float32) > 0).float()
