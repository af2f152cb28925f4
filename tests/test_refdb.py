"""Tests of the reference-network readers in scdiffx_grn.datasets."""

from __future__ import annotations

import pandas as pd
import pytest

from scdiffx_grn import datasets
from scdiffx_grn._errors import OptionError


def _edge(df, s, t):
    return df[(df["source"] == s) & (df["target"] == t)]


def _tidy(df, cols):
    assert list(df.columns[:3]) == ["source", "target", "weight"]
    assert set(cols) <= set(df.columns)
    assert len(df) > 1000
    assert not df.duplicated(["source", "target"]).any()
    assert df["source"].notna().all() and df["target"].notna().all()


def test_collectri_human_and_mouse():
    h = datasets.collectri("human")
    _tidy(h, ["mor", "db"])
    assert set(h["weight"].unique()) <= {1.0, -1.0, 0.0}
    assert len(_edge(h, "MYC", "TERT")) == 1
    m = datasets.collectri(organism="mouse")
    assert len(_edge(m, "Myc", "Tert")) == 1 and not (m["source"] == "MYC").any()


@pytest.mark.parametrize("organism", ["mouse", "human"])
def test_dorothea_levels(organism):
    abc = datasets.dorothea(organism)
    _tidy(abc, ["confidence", "mor", "db"])
    assert set(abc["confidence"]) <= set("ABC")
    a = datasets.dorothea(organism, levels=["A"])
    assert set(a["confidence"]) == {"A"} and len(a) < len(abc)
    if organism == "mouse":
        assert len(abc[abc["source"] == "Gata1"]) > 0
        assert len(_edge(abc, "Gata1", "Alas2")) == 1
    with pytest.raises(OptionError, match="levels"):
        datasets.dorothea(organism, levels="AZ")


def test_trrust_signs_and_unknown():
    h = datasets.trrust("human")
    _tidy(h, ["mode", "pmids", "db"])
    assert {1.0, -1.0, 0.0} <= set(h["weight"].unique())
    assert _edge(h, "AATF", "BAX")["weight"].item() == -1.0
    assert _edge(h, "AATF", "MYC")["weight"].item() == 1.0
    dual = h[h["mode"] == "Activation;Repression"]
    assert len(dual) > 0 and (dual["weight"] == 0).all()
    dropped = datasets.trrust("human", unknown="drop")
    assert not (dropped["mode"] == "Unknown").any() and len(dropped) < len(h)
    one = datasets.trrust("human", unknown=1.0)
    assert (one.loc[one["mode"] == "Unknown", "weight"] == 1.0).all()
    m = datasets.trrust("mouse")
    assert m["source"].str[0].str.isupper().all() and (m["source"].str[1:].str.lower() == m["source"].str[1:]).mean() > 0.95
    with pytest.raises(OptionError, match="unknown must be"):
        datasets.trrust("human", unknown="keep")


def test_pmids_aggregated():
    raw = pd.read_csv(datasets.data_path("trrust_human"), sep="\t", header=None, names=["s", "t", "m", "p"])
    dups = raw[raw.duplicated(["s", "t"], keep=False)]
    s, t = dups.iloc[0]["s"], dups.iloc[0]["t"]
    row = _edge(datasets.trrust("human"), s, t)
    expected = {p for x in dups[(dups.s == s) & (dups.t == t)]["p"] for p in str(x).split(";")}
    assert set(row["pmids"].item().split(";")) == expected


def test_omnipath(shared_data_dir):
    df = datasets.omnipath()
    _tidy(df, ["type", "sources", "pmids", "db"])
    assert (df["type"] == "transcriptional").all()
    assert not df["target"].str.match(r"^[OPQ][0-9][A-Z0-9]{3}[0-9]$").any()
    assert not df["source"].str.startswith("COMPLEX:").any()
    assert {1.0, -1.0} <= set(df["weight"].unique())


def test_chip_targets(shared_data_dir):
    df = datasets.chip_targets()
    assert list(df.columns) == ["source", "target", "weight", "experiment", "cell_line", "db"]
    assert df["experiment"].nunique() == 166 and (df["weight"] == 1.0).all()
    assert len(df[(df["experiment"] == "FOS H1") & (df["source"] == "FOS")]) > 0


def test_tss_annotation():
    df = datasets.tss_annotation("mm10")
    assert list(df.columns) == ["chrom", "start", "end", "gene", "score", "strand"] and len(df) > 20000
    assert (df["gene"] == "Gata1").any()
    with pytest.raises(OptionError, match="no TSS annotation"):
        datasets.tss_annotation("dm6")
