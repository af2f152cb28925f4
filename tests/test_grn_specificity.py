"""Cell-type-specific networks: planted type-specific links survive a per-type scale."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from scdiffx_grn import grn
from scdiffx_grn._errors import OptionError, ScdxError


def _planted(seed: int = 0) -> pd.DataFrame:
    """40 shared edges in 3 types; type B has 10x larger weights everywhere (a per-type scale);
    edges 0-4 are planted strong in A only, edges 5-9 strong in C only."""
    rng = np.random.default_rng(seed)
    edges = [(f"TF{i % 8}", f"g{i}") for i in range(40)]
    rows = []
    for ct, scale in (("A", 1.0), ("B", 10.0), ("C", 1.0)):
        w = rng.uniform(0.5, 1.0, len(edges))
        if ct == "A":
            w[:5] = 4.0
        if ct == "C":
            w[5:10] = 4.0
        for (s, t), x in zip(edges, w * scale):
            rows.append((s, t, float(x), ct))
    return pd.DataFrame(rows, columns=["source", "target", "weight", "cell_type"])


def test_abs_weight_ranking_picks_scale_not_specificity():
    # the failure the fix addresses: by |weight| every type's top edges are the same pairs and
    # type B dominates every row
    d = _planted()
    piv = d.pivot_table(index="target", columns="cell_type", values="weight")
    assert (piv.idxmax(axis=1) == "B").all()


def test_type_specificity_recovers_planted_links():
    d = _planted()
    s = grn.type_specificity(d, top_k=5)
    top = {ct: set(sub["target"]) for ct, sub in s.groupby("cell_type")}
    assert top["A"] == {f"g{i}" for i in range(5)}
    assert top["C"] == {f"g{i}" for i in range(5, 10)}
    planted = {f"g{i}" for i in range(10)}
    assert not (top["B"] & planted)  # B's scale does not make it take the planted edges
    full = grn.type_specificity(d)
    assert len(full) == len(d)
    # in B the planted edges are negative (strong in another type)
    b = full[(full["cell_type"] == "B") & full["target"].isin([f"g{i}" for i in range(10)])]
    assert (b["specificity"] < 0).all()


def test_specificity_heatmap_shows_planted_types_not_scale():
    import matplotlib.pyplot as plt

    d = _planted()
    fig = grn.grn_specificity_heatmap(d, top_k=5, level="edge")
    ax = fig.axes[0]
    Z = np.asarray(ax.images[0].get_array())
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    peak = {r: cols[int(np.argmax(z))] for r, z in zip(rows, Z)}
    for i in range(5):
        assert peak[f"TF{i % 8} -> g{i}"] == "A"
    for i in range(5, 10):
        assert peak[f"TF{i % 8} -> g{i}"] == "C"
    # not one column pattern: rows peak in more than one type
    assert len(set(peak.values())) >= 2
    plt.close(fig)


def test_type_specificity_needs_two_types():
    d = _planted()
    with pytest.raises(ScdxError, match="two cell types"):
        grn.type_specificity(d[d["cell_type"] == "A"])
    with pytest.raises(ScdxError, match="two cell types"):
        grn.grn_specificity_heatmap(d[d["cell_type"] == "A"])
    with pytest.raises(OptionError, match="level"):
        grn.grn_specificity_heatmap(d, level="gene")


def test_specificity_follows_the_group_column():
    """A network grouped by another label column (named after groupby) gives the same specificity."""
    d = _planted()
    by_ct = grn.type_specificity(d, top_k=5)
    other = d.rename(columns={"cell_type": "lineage"})
    other.attrs["group_column"] = "lineage"
    by_lin = grn.type_specificity(other, top_k=5)
    pd.testing.assert_frame_equal(by_lin.rename(columns={"lineage": "cell_type"}), by_ct)
    # stored as the tl functions store it: the group column comes from the params
    from types import SimpleNamespace

    Holder = SimpleNamespace(uns={"grn": {"params": {"group_column": "lineage"},
                                          "network": d.rename(columns={"cell_type": "lineage"})}})
    pd.testing.assert_frame_equal(grn.type_specificity(Holder, top_k=5).rename(columns={"lineage": "cell_type"}),
                                  by_ct)
    # without a known group column there is nothing to compare
    with pytest.raises(ScdxError, match="two cell types"):
        grn.type_specificity(d.rename(columns={"cell_type": "lineage"}))
    assert len(grn.type_specificity(d.rename(columns={"cell_type": "lineage"}), groupby="lineage")) == len(d)


def test_add_specificity_keeps_rows_and_order():
    from scdiffx_grn.grn._specific import add_specificity

    d = _planted().sample(frac=1.0, random_state=0).reset_index(drop=True)
    out = add_specificity(d)
    pd.testing.assert_frame_equal(out.drop(columns="specificity"), d)
    a = out[(out["cell_type"] == "A") & (out["target"] == "g0")]["specificity"].iloc[0]
    assert a > 1.0


def test_peak_set_enrichment_scaled_specificity_ignores_type_scale():
    from scdiffx_grn.eval import grn as egrn

    rng = np.random.default_rng(1)
    peaks = [f"chr1-{1000 * i}-{1000 * i + 500}" for i in range(300)]
    in_a = rng.random(300) < 0.3
    mem = pd.DataFrame({"A": in_a, "B": rng.random(300) < 0.3}, index=peaks)
    # type a: planted set-A peaks; type b: 20x the scale, random
    imp = pd.DataFrame({"a": 1.0 + 1.5 * in_a + 0.3 * rng.random(300), "b": 20.0 * (1.0 + rng.random(300))},
                       index=peaks)
    tab = egrn.peak_set_enrichment({"net": imp}, mem, {"a": "A", "b": "B"})
    got = tab.set_index(["cell_type", "ranking"])["auroc"]
    assert got[("a", "specificity_scaled")] > 0.95
    assert got[("a", "specificity_scaled")] > got[("a", "specificity")] + 0.1
