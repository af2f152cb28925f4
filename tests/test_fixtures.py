"""The shared session fixtures (conftest): the read-only check catches a test that changes them."""

from __future__ import annotations

import copy
import shutil

import pytest

from conftest import _assert_same_state, _folder_state, _mdata_state, _model_state


def test_read_only_check_catches_changed_weights_and_data(trained_tiny, tiny_mdata):
    before = _model_state(trained_tiny)
    _assert_same_state(before, _model_state(trained_tiny), "trained_tiny")  # unchanged: passes
    after = copy.deepcopy(before)
    next(iter(after["state"].values())).add_(1.0)  # a changed copy, never the shared model
    with pytest.raises(pytest.fail.Exception, match=r"changed the shared, read-only trained_tiny \(trained_tiny\.state"):
        _assert_same_state(before, after, "trained_tiny")
    after = copy.deepcopy(before)
    after["history"]["ae_loss"] = list(after["history"]["ae_loss"])[:-1]
    with pytest.raises(pytest.fail.Exception, match="history"):
        _assert_same_state(before, after, "trained_tiny")

    m_before = _mdata_state(tiny_mdata)
    m = tiny_mdata.copy()
    m.mod["rna"].layers["counts"][0, 0] += 1
    with pytest.raises(pytest.fail.Exception, match=r"tiny_mdata\.mods\.rna\.layers\.counts"):
        _assert_same_state(m_before, _mdata_state(m), "tiny_mdata")
    m = tiny_mdata.copy()
    m.uns["result"] = {"params": {}}
    with pytest.raises(pytest.fail.Exception, match=r"tiny_mdata\.uns: keys"):
        _assert_same_state(m_before, _mdata_state(m), "tiny_mdata")
    m = tiny_mdata.copy()
    m.obs["cell_type"] = m.obs["cell_type"].cat.rename_categories({"A": "Z"})
    with pytest.raises(pytest.fail.Exception, match="tiny_mdata"):
        _assert_same_state(m_before, _mdata_state(m), "tiny_mdata")


def test_read_only_check_of_a_checkpoint_folder(tiny_checkpoint, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, d)
    before = _folder_state(d)
    assert before == _folder_state(tiny_checkpoint) and "model.pt" in before
    (d / "config.json").write_text((d / "config.json").read_text() + " ")
    assert _folder_state(d) != before
