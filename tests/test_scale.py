"""Scale: row sources over in-memory / backed (on-disk) data, out-of-core training, DDP with torchrun."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scdiffx_grn import InputDataError, NotCountsError, ScDiffusionX, settings
from scdiffx_grn import _matrix
from scdiffx_grn.model import _data
from scdiffx_grn.model._data import RowSource

from _helpers import TINY, make_tiny_mdata

settings.progress = False
ROOT = Path(__file__).parents[1]


def _write_backed(m, d: Path):
    """Write each modality as .h5ad with the raw counts in X and read them back backed='r'."""
    mods = {}
    for k in ("rna", "atac"):
        a = m.mod[k]
        out = ad.AnnData(sp.csr_matrix(a.layers["counts"]), obs=a.obs.copy(), var=a.var.copy())
        out.write_h5ad(d / f"{k}.h5ad")
        mods[k] = ad.read_h5ad(d / f"{k}.h5ad", backed="r")
    mb = md.MuData(mods)
    mb.obs["cell_type"] = m.obs["cell_type"].to_numpy()
    return mb


def test_row_source_in_memory_and_backed(tmp_path):
    rng = np.random.default_rng(0)
    X = sp.random(50, 12, density=0.3, format="csr", dtype=np.float32, random_state=0)
    X.data = np.ceil(X.data * 5)
    ad.AnnData(X).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    order = rng.permutation(12)
    rows = np.sort(rng.choice(50, 30, replace=False))
    idx = np.array([5, 3, 3, 29, 0, 17])  # unsorted, repeated
    want = X.toarray()[rows][idx][:, order]
    for src in (RowSource(X, order=order, rows=rows), RowSource(backed.X, order=order, rows=rows)):
        assert src.shape == (30, 12)
        np.testing.assert_array_equal(src.dense(idx), want)
        got = np.concatenate([b for _, _, b in src.batches(7)])
        np.testing.assert_array_equal(got, X.toarray()[rows][:, order])
        sums, nnz = src.scan()
        np.testing.assert_allclose(sums, X.toarray()[rows].sum(1))
        np.testing.assert_array_equal(nnz, (X.toarray()[rows] > 0).sum(1))
    assert RowSource(backed.X).backed and not RowSource(X).backed


def test_backed_values_are_validated_naming_the_cell(tmp_path, monkeypatch):
    X = np.ones((40, 5), np.float32)
    X[33, 2] = 0.5
    a = ad.AnnData(sp.csr_matrix(X))
    a.obs_names = [f"c{i}" for i in range(40)]
    a.var_names = [f"g{i}" for i in range(5)]
    a.write_h5ad(tmp_path / "x.h5ad")
    b = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    monkeypatch.setattr(_matrix, "SCAN_ROWS", 8)
    monkeypatch.setattr(_data, "SCAN_ROWS", 8)
    with pytest.raises(NotCountsError, match=r"c33.*g2"):
        _matrix.validate_matrix(b.X, "rna X", "rna", obs_names=b.obs_names, var_names=b.var_names)
    with pytest.raises(NotCountsError, match="c33"):
        RowSource(b.X, kind="rna", obs_names=b.obs_names, var_names=b.var_names).scan()
    X[33, 2] = -1
    with pytest.raises(InputDataError, match=r"negative.*c33.*g2"):
        _matrix.validate_matrix(sp.csr_matrix(X), "atac X", "atac", obs_names=b.obs_names, var_names=b.var_names)


def test_backed_training_equals_in_memory_and_never_densifies(tmp_path, monkeypatch):
    m = make_tiny_mdata()
    mb = _write_backed(m, tmp_path)
    assert mb.mod["rna"].isbacked and _matrix.is_backed(mb.mod["rna"].X)
    monkeypatch.setattr(_matrix, "SCAN_ROWS", 16)
    monkeypatch.setattr(_data, "SCAN_ROWS", 16)
    monkeypatch.setattr(_data, "FIT_ROWS", 16)
    biggest = []
    real = _matrix._read_rows

    def spy(X, rows):
        biggest.append(len(rows))
        return real(X, rows)

    monkeypatch.setattr(_matrix, "_read_rows", spy)  # validation (setup_mudata)
    monkeypatch.setattr(_data, "_read_rows", spy)  # row sources (training)
    ScDiffusionX.setup_mudata(mb, labels=["cell_type"], rna_layer=None, atac_layer=None)
    ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    models = []
    for data in (m, mb):
        mdl = ScDiffusionX(data, seed=0, **TINY)
        mdl.train(ae_epochs=2, diffusion_steps=10, batch_size=16, device="cpu", seed=0)
        models.append(mdl)
    assert biggest and max(biggest) <= 16  # never more than one chunk / batch of rows
    sa, sb = models[0].module.state_dict(), models[1].module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    biggest.clear()
    z_mem = models[0].get_latent(m, "atac", batch_size=8)
    z_disk = models[0].get_latent(mb, "atac", batch_size=8)
    np.testing.assert_array_equal(z_mem, z_disk)
    assert max(biggest) <= 8
    t_mem = models[0].translate(m, n_steps=3, batch_size=8)
    t_disk = models[0].translate(mb, n_steps=3, batch_size=8)
    np.testing.assert_array_equal(t_mem.X, t_disk.X)


def _has_gloo():
    try:
        import torch.distributed as dist

        return dist.is_available() and dist.is_gloo_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None or not _has_gloo(),
                    reason="torchrun / gloo not available")
def test_torchrun_two_processes_ddp(tmp_path):
    env = dict(os.environ, SCDX_PROGRESS="0", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out = tmp_path / "w.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(Path(__file__).parent / "_train_worker.py"), str(out), "--steps", "10",
                        "--ae-epochs", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = torch.load(f"{out}.rank0", weights_only=True)
    s1 = torch.load(f"{out}.rank1", weights_only=True)
    assert s0.keys() == s1.keys()
    differ = [k for k in s0 if not torch.equal(s0[k], s1[k])]
    assert not differ, f"ranks diverged: {differ[:10]}"
    assert int(s0["fitted"]) == 1 and all(torch.isfinite(v).all() for v in s0.values() if v.is_floating_point())
