"""Shared pytest fixtures for scdiffx_grn.

- ``synthetic_mdata``: small paired MuData with planted structure (fresh copy per test)
- ``mop_small``: 600 cells of the embedded mouse MOp data, all genes, 3000 most frequent peaks
  (session scope: treat as read-only, ``.copy()`` before modifying)
- ``shared_data_dir``: the shared reference-data directory (skips when absent)
- ``tiny_mdata``, ``trained_tiny``, ``tiny_checkpoint``: one tiny data set, the tiny model trained on
  it (``_helpers.train_tiny``) and its saved checkpoint, built once per session for the tests that
  need *a* trained model; read-only (a test that changes one of them fails)
- ``tiny_mop_checkpoint``: a tiny model trained on 300 mouse MOp cells, saved once per session

Data builders and stand-in models shared by several test files are in ``_helpers.py``.
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


# ----------------------------------------------------------------------------- the shared tiny model
def _model_state(model) -> dict:
    """What a test could change in a trained model: weights, config, registry, feature names, history,
    translation calibration."""
    import copy
    import dataclasses

    return {"state": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
            "config": dataclasses.asdict(model.config), "setup": copy.deepcopy(model.setup),
            "features": (list(model.rna_var_names), list(model.atac_var_names)),
            "history": copy.deepcopy(model.history),
            "translation_calibration": copy.deepcopy(getattr(model, "translation_calibration", {}))}


def _mdata_state(mdata) -> dict:
    """What a test could change in a MuData: every modality's matrices, obs, var, obsm and uns keys."""
    import copy

    import scipy.sparse as sp

    def dense(X):
        return X.toarray() if sp.issparse(X) else X.copy()

    mods = {k: {"X": dense(a.X), "layers": {n: dense(v) for n, v in a.layers.items()}, "obs": a.obs.copy(),
                "var": a.var.copy(), "obsm": sorted(a.obsm), "uns": sorted(a.uns)} for k, a in mdata.mod.items()}
    return {"mods": mods, "obs": mdata.obs.copy(), "obsm": sorted(mdata.obsm),
            "uns": copy.deepcopy(dict(mdata.uns))}


def _assert_same_state(before: dict, after: dict, what: str):
    """Compare two ``_model_state`` / ``_mdata_state`` results; fail naming the first difference."""
    import numpy as np
    import pandas as pd
    import torch

    def same(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                raise AssertionError(f"{path}: keys {sorted(map(str, a))} -> {sorted(map(str, b))}")
            for k in a:
                same(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, obj=path)
        elif isinstance(a, torch.Tensor):
            if not torch.equal(a, b):
                raise AssertionError(path)
        elif isinstance(a, np.ndarray):
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                raise AssertionError(path)
        elif a != b:
            raise AssertionError(path)

    try:
        same(before, after, what)
    except AssertionError as e:
        pytest.fail(f"the test changed the shared, read-only {what} ({e}): work on a copy "
                    "(mdata.copy(), or build a model of your own)", pytrace=False)


@pytest.fixture(scope="session")
def _tiny_session():
    from _helpers import make_tiny_mdata, train_tiny

    m = make_tiny_mdata()
    model = train_tiny(m)
    return model, m, _model_state(model), _mdata_state(m)


@pytest.fixture
def tiny_mdata(_tiny_session):
    """``_helpers.make_tiny_mdata()``: 60 cells (``cell{i}``, types A and B) x (20 genes ``gene{i}``,
    40 peaks), raw counts, registered with ``labels=["cell_type"]``; the data of ``trained_tiny``.

    Built once per session and shared: read-only (``.copy()`` before editing; the test fails if it
    changed the shared object)."""
    m = _tiny_session[1]
    yield m
    _assert_same_state(_tiny_session[3], _mdata_state(m), "tiny_mdata")


@pytest.fixture
def trained_tiny(_tiny_session):
    """``_helpers.train_tiny(tiny_mdata)``: ``TINY`` trained for 2 autoencoder epochs and 20 denoiser
    steps (seed 0), for the tests that need *a* trained model, not a good one.

    Trained once per session and shared: read-only (load a copy from ``tiny_checkpoint`` to change
    weights; the test fails if it changed the shared model)."""
    model = _tiny_session[0]
    yield model
    _assert_same_state(_tiny_session[2], _model_state(model), "trained_tiny")


@pytest.fixture(scope="session")
def _tiny_checkpoint_session(_tiny_session, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "model"
    _tiny_session[0].save(path)
    return path, _folder_state(path)


def _folder_state(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny_checkpoint(_tiny_checkpoint_session):
    """``trained_tiny`` saved once per session (a folder for ``ScDiffusionX.load``); read-only (copy
    the folder to damage or overwrite it; the test fails if it changed the shared folder)."""
    path, before = _tiny_checkpoint_session
    yield path
    after = _folder_state(path) if path.is_dir() else {}
    if after != before:
        pytest.fail("the test changed the shared, read-only tiny_checkpoint folder: copy it first", pytrace=False)


@pytest.fixture(scope="session")
def _tiny_mop_session(tmp_path_factory):
    import torch

    from scdiffx_grn import ScDiffusionX, datasets, pp

    torch.set_num_threads(1)
    m = datasets.mouse_mop(n_cells=300, seed=1)
    pp.filter_peaks(m, min_frac=0.0, top_n=400)
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    model = ScDiffusionX(m, latent_dim=8, token_dim=4, width=16, n_heads=2, n_layers=1,
                         rna_hidden=(32,), atac_hidden=(32,))
    model.train(ae_epochs=1, diffusion_steps=15, batch_size=128, seed=0, device="cpu")
    path = tmp_path_factory.mktemp("tiny_mop") / "tiny"
    model.save(path)
    return path, _folder_state(path)


@pytest.fixture
def tiny_mop_checkpoint(_tiny_mop_session):
    """A very small model (latent 8, width 16, one layer) trained for seconds on 300 mouse MOp cells
    (seed 1: all genes, the 400 most frequent peaks), saved once per session for the demo report
    and the notebooks; read-only like ``tiny_checkpoint``."""
    path, before = _tiny_mop_session
    yield path
    after = _folder_state(path) if path.is_dir() else {}
    if after != before:
        pytest.fail("the test changed the shared, read-only tiny_mop_checkpoint folder: copy it first",
                    pytrace=False)


@pytest.fixture(scope="session")
def shared_data_dir():
    """The shared reference-data directory; skips the test when it is not available."""
    from scdiffx_grn.datasets import shared_data_dir as find

    d = find(required=False)
    if d is None or not (d / "multiome").is_dir():
        pytest.skip("shared data directory not available")
    return d


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``-n N`` and no ``--dist`` (README's and CI's command): whole test files per worker
    (pytest-xdist's ``loadfile``). The default ``load`` hands a file's tests to both workers, and
    each then builds the file's module fixtures (the trained models of test_model, test_translation,
    test_seed_systems, test_grn_attention_truth: half a minute each), twice the work. An explicit
    ``--dist`` is obeyed."""
    if config.getvalue("dist") != "load" or any(str(a).startswith("--dist") for a in config.invocation_params.args):
        return None
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)


def pytest_configure(config):
    """Keep each test process on one BLAS/torch thread: with pytest-xdist workers on a 2-core
    machine, more threads only make the workers wait on each other.

    ``NUMBA_NUM_THREADS`` too: numba's OpenMP threading layer (decoupler's parallel kernels, run by
    the biomarker tests and the demo report) sets the process's OpenMP thread count to its own, the
    number of CPUs by default, which torch shares; every later training in that process then ran on
    all cores (ten times slower on a busy 2-core machine)."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("SCDX_PROGRESS", "0")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    from scdiffx_grn import settings

    settings.progress = False
