"""Shared pytest fixtures for scdiffx_grn.

- ``synthetic_mdata``: small paired MuData with planted structure (fresh copy per test)
- ``mop_small``: 600 cells of the embedded mouse MOp data, all genes, 3000 most frequent peaks
  (session scope: treat as read-only, ``.copy()`` before modifying)
- ``shared_data_dir``: the shared reference-data directory (skips when absent)
"""

from __future__ import annotations

import pytest

N_CELLS, N_TYPES, N_GENES, N_PEAKS = 300, 3, 60, 120  # datasets.toy_multiome defaults
N_MARKER_GENES, N_MARKER_PEAKS = 8, 20  # per cell type
N_PLANTED = 10


def float32_tol(ref, n_terms: int) -> float:
    """Absolute tolerance between two float32 computations of ``ref`` that differ only in the order
    of their sums (batch size, BLAS / torch kernel for the CPU, thread count).

    Twice Higham's bound on an ``n_terms``-term float32 sum, ``gamma_n = n u / (1 - n u)`` with
    ``u = eps / 2`` (one bound per result), at the scale of the largest ``|ref|``: derived from the
    dtype, so it does not depend on the machine the tests were written on. ``n_terms``: the longest
    chain of float32 sums behind one value (e.g. the summed lengths of the matrix products).
    """
    import numpy as np

    u = float(np.finfo(np.float32).eps) / 2
    gamma = n_terms * u / (1 - n_terms * u)
    return 2 * gamma * max(float(np.nanmax(np.abs(np.asarray(ref, dtype=float)))), float(np.finfo(np.float32).tiny))


def float32_terms(module, n_keys: int = 0) -> int:
    """Length of the chain of float32 sums in one forward pass of a torch ``module`` (for
    :func:`float32_tol`), over-estimated from its layer widths: every ``nn.Linear`` adds its
    ``in_features`` (the matrix product) and its ``out_features`` (a later reduction over its
    output: softmax, LayerNorm, attention scores and values over at most that many entries), for
    every layer rather than only those on the longest path. ``n_keys``: attention over more
    entries than any layer is wide (e.g. a set encoder over the genes)."""
    import torch

    return n_keys + sum(m.in_features + m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def model_float32_tol(ref, model, denoiser_calls: int = 0, extra_terms: int = 0) -> float:
    """:func:`float32_tol` for an output ``ref`` of a ScDiffusionX ``model`` computed twice in another
    order of sums: through both autoencoders (encode the source, decode the target) and
    ``denoiser_calls`` chained denoiser calls (sampler steps; classifier-free guidance runs its
    branches side by side, not in a chain); ``extra_terms``: further sums (e.g. averaging samples)."""
    mod = model.module
    n = float32_terms(mod.rna_ae) + extra_terms + denoiser_calls * float32_terms(mod.denoiser)
    if getattr(mod, "atac_ae", None) is not None:
        n += float32_terms(mod.atac_ae)
    return float32_tol(ref, n)


class LinearTensorAPI:
    """The tensor half of the TranslationModel protocol for the linear stand-ins of the perturbation
    tests: log1p(CP10k) / 5 RNA, binary ATAC, encoders ``Wr`` / ``Wa``, decoders softmax(z ``Dr``) and
    sigmoid(z ``Da`` - 1), no label conditioning, noise of width ``config.latent_dim`` keyed by obs name.
    Subclasses set the weights, ``config`` and ``translate_latent``."""

    def rna_tensor(self, X):
        import numpy as np
        import scipy.sparse as sp
        import torch

        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32)
        return torch.log1p(x / x.sum(-1, keepdim=True).clamp(min=1.0) * 1e4) / 5.0

    def atac_tensor(self, X):
        import numpy as np
        import scipy.sparse as sp
        import torch

        x = torch.as_tensor(X.toarray() if sp.issparse(X) else np.asarray(X), dtype=torch.float32)
        return (x > 0).float()

    def encode(self, modality, x):
        return x @ (self.Wr if modality == "rna" else self.Wa)

    def decode_rna(self, z):
        import torch

        return torch.softmax(z @ self.Dr, dim=-1)

    def decode_atac(self, z):
        import torch

        return torch.sigmoid(z @ self.Da - 1.0)

    def condition_indices(self, labels, n=None):
        import torch

        return torch.zeros(len(next(iter(labels.values()))), 1, dtype=torch.long)

    def cell_noise(self, names, seed, sample=0, *, stream=0, device=None):
        from scdiffx_grn._modelio import cell_noise

        return cell_noise(names, self.config.latent_dim, seed, sample, stream=stream, device=device)


def write_synthetic_files(d, seed: int = 0):
    """Write the synthetic paired data as ``syn.h5mu``, ``rna.h5ad`` and ``atac.h5ad`` in folder ``d``; returns it."""
    m = make_synthetic_mdata(seed)
    for k in ("planted_pairs", "marker_genes", "marker_peaks"):
        m.uns.pop(k, None)
    m.write(d / "syn.h5mu")
    m.mod["rna"].write(d / "rna.h5ad")
    m.mod["atac"].write(d / "atac.h5ad")
    return m


def make_synthetic_mdata(seed: int = 0):
    """Build the synthetic paired MuData (see the ``synthetic_mdata`` fixture): ``datasets.toy_multiome``."""
    from scdiffx_grn.datasets import toy_multiome

    return toy_multiome(seed)


@pytest.fixture
def synthetic_mdata():
    """300 cells x (60 genes, 120 peaks), 3 cell types (``obs['cell_type']``), raw counts.

    Planted: for each type ``t``, ``uns['marker_genes'][t]`` (8 genes, ~6x expression) and
    ``uns['marker_peaks'][t]`` (20 peaks, open in 70% vs 8% of cells); background genes are
    Poisson with per-gene log-normal means; and 10 peak -> gene
    dependencies in ``uns['planted_pairs']`` (DataFrame ``peak, gene``): the gene's mean is
    0.5 when the peak is closed and 8.5 when open. Deterministic (seed 0).
    """
    return make_synthetic_mdata(0)


@pytest.fixture(scope="session")
def _mop_small_cached():
    from scdiffx_grn import datasets, pp

    m = datasets.mouse_mop(n_cells=600, seed=0)
    pp.filter_peaks(m, min_frac=0.0, top_n=3000)
    return m


@pytest.fixture
def mop_small(_mop_small_cached):
    """600 cells (stratified by cell_type, seed 0) of the embedded mouse MOp data.

    All 1,677 genes and the 3,000 most frequently open peaks; raw counts in
    ``layers['counts']``; labels ``cell_type``, ``cell_type_fine``, ``batch``. Loaded once per
    session; each test gets its own copy.
    """
    return _mop_small_cached.copy()


@pytest.fixture(scope="session")
def shared_data_dir():
    """The shared reference-data directory; skips the test when it is not available."""
    from scdiffx_grn.datasets import shared_data_dir as find

    d = find(required=False)
    if d is None or not (d / "multiome").is_dir():
        pytest.skip("shared data directory not available")
    return d


def pytest_configure(config):
    """Keep each test process on one BLAS/torch thread: with pytest-xdist workers on a 2-core
    machine, more threads only make the workers wait on each other."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("SCDX_PROGRESS", "0")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    from scdiffx_grn import settings

    settings.progress = False
