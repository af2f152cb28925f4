"""Peer methods scored by the same code: the re-centring, the peer protocol and the MultiVI adapter.

scvi-tools is optional (``pip install -e ".[peers]"``): the MultiVI training test skips without it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scdiffx_grn import ScdxError
from scdiffx_grn.eval import RidgeTranslator, recentre, source_dependence

from _helpers import weak_signal_mdata

EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def weak():
    return weak_signal_mdata(n=400)


class OffsetRidge:
    """A peer stand-in: ridge predictions plus a per-feature offset (a calibration error, no content change)."""

    def __init__(self, ridge, offset):
        self.ridge, self.offset = ridge, offset

    def translate(self, mdata, direction="atac->rna", **_):
        out = self.ridge.translate(mdata, direction)
        out.X = out.X + self.offset[None, :].astype(np.float32)
        return out


def test_recentre_sets_each_feature_mean_and_keeps_differences():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(30, 5)) + np.arange(5) * 10.0
    ref = rng.normal(size=5)
    R = recentre(P, ref)
    tol = 64 * EPS * np.abs(P).max()
    assert np.allclose(R.mean(0), ref, rtol=0, atol=tol)
    assert np.allclose(R - R[0], P - P[0], rtol=0, atol=tol)  # between-cell differences untouched
    with pytest.raises(ScdxError, match="one mean per feature"):
        recentre(P, ref[:3])


def test_source_dependence_recentred_accuracy_ignores_an_output_offset(weak):
    """A peer = ridge + a large per-gene offset: raw accuracy collapses, re-centred equals the ridge's."""
    test = (weak.obs["split"] == "test").to_numpy()
    ref = weak[~test].copy()
    ridge = RidgeTranslator(n_comps=10, seed=0).fit(ref)  # as source_dependence fits its own reference ridge
    offset = np.where(np.arange(weak.mod["rna"].n_vars) % 2 == 0, 6.0, -6.0)
    d = source_dependence(OffsetRidge(ridge, offset), weak, direction="atac->rna", cells=test, n_pcs=10, seed=0)
    assert d["accuracy_translated_recentred"] == d["accuracy_ridge_own_recentred"]
    assert d["accuracy_shuffled_source_recentred"] == d["accuracy_ridge_shuffled_recentred"]
    assert d["accuracy_translated_recentred"] > d["accuracy_translated"] + 0.1, d
    assert "latent_error_own" not in d  # a peer has no denoiser to check


def test_multivi_names_the_install_command_when_scvi_is_missing(weak, monkeypatch):
    from scdiffx_grn.eval import MultiVITranslator

    monkeypatch.setitem(sys.modules, "scvi", None)  # import scvi -> ImportError
    with pytest.raises(ScdxError, match=r'pip install -e "\.\[peers\]"'):
        MultiVITranslator(max_epochs=1).fit(weak)


def test_package_import_does_not_import_scvi():
    code = "import sys, scdiffx_grn, scdiffx_grn.eval; print('scvi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_multivi_translates_inductively_and_per_cell(weak, tmp_path):
    pytest.importorskip("scvi")
    from scdiffx_grn.eval import MultiVITranslator

    split = weak.obs["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    mv = MultiVITranslator(max_epochs=2, seed=0).fit(weak, train=train[:250], val=train[250:])
    test = weak[split == "test"].copy()
    for direction, tgt in (("atac->rna", "rna"), ("rna->atac", "atac")):
        out = mv.translate(test, direction)
        assert list(out.obs_names) == list(test.obs_names)
        assert list(out.var_names) == list(test.mod[tgt].var_names)
        assert np.isfinite(out.X).all()
        if tgt == "atac":
            assert out.X.min() >= 0 and out.X.max() <= 1
        # the target is never read: changing it changes nothing
        other = test.copy()
        other.mod[tgt].layers["counts"] = other.mod[tgt].layers["counts"][::-1]
        assert np.array_equal(mv.translate(other, direction).X, out.X)
        # a cell's translation does not depend on its batch-mates
        assert np.allclose(mv.translate(test[:7].copy(), direction).X, out.X[:7], rtol=0,
                           atol=64 * np.finfo(np.float32).eps * np.abs(out.X).max())
        S = mv.sample(test, direction, n_samples=3, seed=0)
        assert S.shape == (3, *out.shape)
    mv.save(tmp_path / "mv")
    again = MultiVITranslator.load(tmp_path / "mv", weak, train=train[:250], val=train[250:])
    assert np.array_equal(again.translate(test, "atac->rna").X, mv.translate(test, "atac->rna").X)
