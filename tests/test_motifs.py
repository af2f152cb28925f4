"""Tests of motif reading and TF -> peak motif scanning (scdiffx_grn.grn._motifs)."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pandas as pd
import pytest

from scdiffx_grn import grn
from scdiffx_grn._errors import DataFileMissingError, InputDataError, OptionError
from scdiffx_grn.grn._motifs import _threshold_fpr

BASES = "ACGT"
COMP = str.maketrans("ACGTN", "TGCAN")
GATA = "TTAGATAAGG"  # GATA-like consensus (not palindromic: planted on both strands)
EBOX = "ACCACGTGGT"  # E-box-like consensus
PEAK_LEN, N_PEAKS, CHROM_LEN = 300, 40, 60_000


def revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


def counts_from_consensus(consensus: str, hi: int = 40, lo: int = 3, seed: int = 0) -> np.ndarray:
    """A count matrix favouring ``consensus``: ~``hi`` counts for its base, 0..2*``lo`` for the others."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2 * lo + 1, (4, len(consensus))).astype(float)
    for j, b in enumerate(consensus):
        c[BASES.index(b), j] = hi + rng.integers(-hi // 4, hi // 4 + 1)
    return c


def write_jaspar(path, motifs) -> None:
    """Write ``[(id, name, counts (4, w))]`` in JASPAR format."""
    with open(path, "w") as fh:
        for mid, name, counts in motifs:
            fh.write(f">{mid}\t{name}\n")
            fh.writelines(f"{b}  [ " + " ".join(str(int(v)) for v in row) + " ]\n" for b, row in zip(BASES, counts))


def write_fasta(path, genome: dict[str, str], width: int = 60) -> None:
    with open(path, "w") as fh:
        for chrom, seq in genome.items():
            fh.write(f">{chrom} synthetic chromosome\n")
            fh.writelines(seq[i:i + width] + "\n" for i in range(0, len(seq), width))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Random 2-chromosome genome, 40 peaks; GATA planted in 20 (half reverse strand), E-box in another random 20."""
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("motifs")
    arrays = {c: rng.choice(list(BASES), CHROM_LEN) for c in ("chr1", "chr2")}
    peaks = []
    for k in range(N_PEAKS):
        chrom = "chr1" if k % 2 == 0 else "chr2"
        start = 1_000 + (k // 2) * 2_500 + int(rng.integers(0, 500))
        peaks.append((chrom, start, start + PEAK_LEN))
    order = rng.permutation(N_PEAKS)
    gata_peaks, ebox_peaks = set(order[:20].tolist()), set(rng.permutation(N_PEAKS)[:20].tolist())
    gata_rev = set(sorted(gata_peaks)[::2])  # half of the GATA sites on the reverse strand
    for k, (chrom, start, _) in enumerate(peaks):
        off = int(rng.integers(5, PEAK_LEN - 20))
        if k in gata_peaks:
            site = revcomp(GATA) if k in gata_rev else GATA
            arrays[chrom][start + off:start + off + len(site)] = list(site)
        if k in ebox_peaks:
            off2 = (off + 120) % (PEAK_LEN - 20) + 5
            arrays[chrom][start + off2:start + off2 + len(EBOX)] = list(EBOX)
    genome = {c: "".join(a) for c, a in arrays.items()}
    # soft-masked stretch: lower case must read like upper case
    genome["chr2"] = genome["chr2"][:30_000].lower() + genome["chr2"][30_000:]
    fasta = tmp / "genome.fa"
    write_fasta(fasta, genome)
    names = [f"{c}-{s}-{e}" for c, s, e in peaks]
    motif_file = tmp / "two.jaspar"
    write_jaspar(motif_file, [("MA9001.1", "Gata1", counts_from_consensus(GATA)),
                              ("MA9002.1", "Tal1::Tcf3", counts_from_consensus(EBOX, seed=1))])
    return {"genome": genome, "fasta": fasta, "peaks": names, "coords": peaks, "motif_file": motif_file,
            "gata": {names[k] for k in gata_peaks}, "ebox": {names[k] for k in ebox_peaks},
            "gata_rev": {names[k] for k in gata_rev}}


def _found(df: pd.DataFrame, motif: str) -> set[str]:
    return set(df.loc[(df["motif"] == motif) & (df["n_hits"] > 0), "peak"])


# ----------------------------------------------------------------------------- sequences
def test_peak_sequences_dict_and_fasta_agree(synth):
    from_dict = grn.peak_sequences(synth["peaks"], synth["genome"])
    from_file = grn.peak_sequences(synth["peaks"], synth["fasta"])
    assert (synth["fasta"].parent / "genome.fa.fai").exists()  # pyfaidx built the index
    assert list(from_dict) == synth["peaks"] == list(from_file)
    assert from_dict == from_file
    for (chrom, start, end), name in zip(synth["coords"], synth["peaks"]):
        expect = synth["genome"][chrom][start:end].upper()  # 0-based, half-open like BED
        assert from_dict[name] == expect
        assert len(expect) == end - start and set(expect) <= set(BASES)


def test_peak_sequences_name_styles_and_table(synth):
    chrom, start, end = synth["coords"][3]
    expect = synth["genome"][chrom][start:end].upper()
    for name in (f"{chrom}-{start}-{end}", f"{chrom}:{start}-{end}", f"{chrom}_{start}_{end}"):
        assert grn.peak_sequences([name], synth["genome"]) == {name: expect}
    table = pd.DataFrame({"chrom": [chrom], "start": [start], "end": [end]}, index=["p"])
    assert grn.peak_sequences(table, synth["fasta"]) == {"p": expect}
    # chromosome names without the chr prefix are matched to the FASTA's
    nochr = {c.removeprefix("chr"): s for c, s in synth["genome"].items()}
    assert grn.peak_sequences([f"{chrom}:{start}-{end}"], nochr) == {f"{chrom}:{start}-{end}": expect}
    assert grn.peak_sequences([f"{chrom[3:]}:{start}-{end}"], synth["genome"]) == {f"{chrom[3:]}:{start}-{end}": expect}


def test_unknown_chromosome_and_bounds(synth):
    with pytest.raises(InputDataError, match="chr9"):
        grn.peak_sequences(["chr1-100-200", "chr9-100-200"], synth["fasta"])
    with pytest.raises(InputDataError, match="chrUn_x"):
        grn.scan_motifs(["chrUn_x-100-200"], synth["genome"], synth["motif_file"], progress=False)
    with pytest.raises(InputDataError, match="past the end"):
        grn.peak_sequences([f"chr1-{CHROM_LEN - 10}-{CHROM_LEN + 50}"], synth["genome"])
    with pytest.raises(DataFileMissingError):
        grn.peak_sequences(["chr1-100-200"], synth["fasta"].parent / "missing.fa")


# ----------------------------------------------------------------------------- scanning
@pytest.mark.parametrize("source", ["dict", "fasta"])
def test_scan_recovers_planted_sites(synth, source):
    fasta = synth["genome"] if source == "dict" else synth["fasta"]
    df = grn.scan_motifs(synth["peaks"], fasta, synth["motif_file"], pvalue=1e-4, progress=False)
    assert list(df.columns[:5]) == ["tf", "peak", "motif", "score", "n_hits"]
    assert (df["weight"] == 1.0).all() and (df["n_hits"] >= 1).all()
    for motif, planted in (("MA9001.1", synth["gata"]), ("MA9002.1", synth["ebox"])):
        found = _found(df, motif)
        assert planted <= found, f"{motif}: missed {planted - found}"  # recall 1.0
        precision = len(planted) / len(found)
        assert precision >= 0.8, f"{motif}: {len(found - planted)} unplanted peaks hit"
    # reverse-strand sites score like forward ones: the consensus is the best possible word
    g = df[df["motif"] == "MA9001.1"].set_index("peak")["score"]
    planted_scores = g.loc[sorted(synth["gata"])]
    assert np.allclose(planted_scores, planted_scores.max(), atol=1e-4)
    assert set(synth["gata_rev"]) <= set(g.index)
    # the dimer motif is reported for both partners
    e = df[df["motif"] == "MA9002.1"]
    assert set(e["tf"]) == {"Tal1", "Tcf3"}
    assert set(e.loc[e["tf"] == "Tal1", "peak"]) == set(e.loc[e["tf"] == "Tcf3", "peak"])


def test_scan_dict_and_fasta_identical(synth):
    a = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], progress=False)
    b = grn.scan_motifs(synth["peaks"], synth["fasta"], synth["motif_file"], progress=False)
    pd.testing.assert_frame_equal(a, b)


def test_best_score_matches_bruteforce():
    rng = np.random.default_rng(3)
    counts = counts_from_consensus(GATA) + rng.integers(0, 15, (4, len(GATA)))
    motif = grn.Motif("m1", "Gata1", ("Gata1",), counts)
    seq = "".join(rng.choice(list(BASES), 400))
    seq = seq[:100] + revcomp(GATA) + seq[110:250] + "GATAAGN" + seq[257:]
    bg, pc = np.array([0.3, 0.2, 0.2, 0.3]), 0.5
    df = grn.scan_motifs(["chrA:0-400"], {"chrA": seq}, [motif], pvalue=1e-3, background=bg, pseudocount=pc,
                         progress=False)
    # brute force: log2 odds of (counts + pc) / column total against bg, both strands
    prob = (counts + pc) / (counts + pc).sum(axis=0)
    lo = np.log2(prob / bg[:, None])
    lo_rc = lo[::-1, ::-1]  # complement rows (A<->T, C<->G) and reverse positions
    w = lo.shape[1]
    scores = []
    for i in range(len(seq) - w + 1):
        word = seq[i:i + w]
        if "N" in word:
            continue
        idx = [BASES.index(b) for b in word]
        scores += [lo[idx, range(w)].sum(), lo_rc[idx, range(w)].sum()]
    scores = np.array(scores)
    thr = _threshold_fpr(lo, bg, 1e-3)
    assert len(df) == 1
    assert df["score"].iloc[0] == pytest.approx(scores.max(), rel=1e-5, abs=1e-4)
    assert df["n_hits"].iloc[0] == (scores >= thr).sum() >= 1


def test_threshold_matches_biopython():
    from Bio import motifs as bm

    bg = np.array([0.3, 0.2, 0.2, 0.3])
    for cons in ("GATAAG", "CACGTGAC"):
        counts = counts_from_consensus(cons, hi=20, lo=2)
        m = bm.Motif(alphabet=BASES, counts={b: counts[i].tolist() for i, b in enumerate(BASES)})
        pssm = m.counts.normalize(pseudocounts=0.8).log_odds(dict(zip(BASES, bg)))
        lo = np.array([pssm[b] for b in BASES])
        for p in (1e-3, 1e-4):
            expect = pssm.distribution(background=dict(zip(BASES, bg)), precision=10**3).threshold_fpr(p)
            assert _threshold_fpr(lo, bg, p) == pytest.approx(expect, abs=1e-9)


def test_n_in_window_never_hits():
    rng = np.random.default_rng(5)
    flank = "".join(rng.choice(list("AC"), 100))  # A/C only: no GATA-like word by chance
    site = GATA
    masked = site[:4] + "N" + site[5:]
    genome = {"c1": flank + site + flank, "c2": flank + masked + flank, "c3": flank + site[:5] + "NNNN"}
    peaks = ["c1-0-210", "c2-0-210", "c3-0-109"]
    motif = grn.Motif("g", "Gata1", ("Gata1",), counts_from_consensus(GATA))
    df = grn.scan_motifs(peaks, genome, [motif], pvalue=1e-4, progress=False)
    assert set(df["peak"]) == {"c1-0-210"}
    assert np.isfinite(df["score"]).all()


def test_background_peaks_and_pvalue(synth):
    strict = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], pvalue=1e-5, progress=False)
    loose = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], pvalue=1e-3, progress=False)
    assert len(loose) > len(strict)
    assert loose["n_hits"].sum() > strict["n_hits"].sum()
    assert synth["gata"] <= _found(strict, "MA9001.1")
    own = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], background="peaks", progress=False)
    assert synth["gata"] <= _found(own, "MA9001.1")
    with pytest.raises(OptionError, match="background"):
        grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], background="gc", progress=False)
    with pytest.raises(OptionError, match="pvalue"):
        grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], pvalue=0, progress=False)


def test_tfs_case_insensitive(synth):
    df = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], tfs=["GATA1", "TCF3", "Foo"],
                         progress=False)
    assert set(df["tf"]) == {"GATA1", "TCF3"}  # spelling of tfs, dimer partner Tal1 not asked for
    assert set(df.loc[df["tf"] == "GATA1", "motif"]) == {"MA9001.1"}
    assert synth["gata"] <= set(df.loc[df["tf"] == "GATA1", "peak"])
    assert synth["ebox"] <= set(df.loc[df["tf"] == "TCF3", "peak"])
    lower = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], tfs="gata1", progress=False)
    assert set(lower["tf"]) == {"gata1"} and set(lower["peak"]) == set(df.loc[df["tf"] == "GATA1", "peak"])
    with pytest.raises(InputDataError, match="no motif|none of"):
        grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], tfs=["Sox2"], progress=False)


def test_tfs_from_the_one_tf_list(synth):
    """A reference name as tfs= takes datasets.tf_list (its spelling); the result equals passing that list."""
    from scdiffx_grn import datasets

    ref = datasets.tf_list(organism="human", source="collectri")
    df = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], tfs="collectri", organism="human",
                         progress=False)
    assert {"GATA1", "TCF3"} <= set(df["tf"]) <= set(ref)
    same = grn.scan_motifs(synth["peaks"], synth["genome"], synth["motif_file"], tfs=ref, progress=False)
    pd.testing.assert_frame_equal(df, same)
    assert grn.resolve_tfs("collectri", ["Gata1", "Actb", "Tcf3"], organism="human") == \
        datasets.tf_list(["Gata1", "Actb", "Tcf3"], organism="human")
    assert grn.resolve_tfs(None, ["Gata1"]) is None and grn.resolve_tfs("Gata1") == ["Gata1"]


def test_end_to_end_tf_gene_network(synth):
    scan = grn.scan_motifs(synth["peaks"], synth["fasta"], synth["motif_file"], tfs=["Gata1"], progress=False)
    genes = {p: f"gene{i}" for i, p in enumerate(synth["peaks"])}
    peak_gene = pd.DataFrame({"source": list(genes), "target": list(genes.values()), "weight": 1.0})
    edges = grn.tf_gene_network(peak_gene, scan)
    assert set(edges["group"]) == {"all"}  # a peak -> gene table without groups: one group "all"
    gata_targets = set(edges.loc[edges["source"] == "Gata1", "target"])
    assert {genes[p] for p in synth["gata"]} <= gata_targets
    assert len(gata_targets) <= len(synth["gata"]) / 0.8
    assert (edges["evidence"] == "motif").all()


# ----------------------------------------------------------------------------- reading motifs
def test_read_motifs_formats_roundtrip(tmp_path):
    c1, c2 = counts_from_consensus("GATAAG"), counts_from_consensus("CACGTG")
    write_jaspar(tmp_path / "m.jaspar", [("MA1.1", "Ahr::Arnt", c1), ("MA2.1", "NR2F1(var.2)", c2)])
    ms = grn.read_motifs(tmp_path / "m.jaspar")
    assert [m.id for m in ms] == ["MA1.1", "MA2.1"]
    assert ms[0].tfs == ("Ahr", "Arnt") and ms[1].tfs == ("NR2F1",)
    assert np.array_equal(ms[0].counts, c1) and ms[0].counts.shape == (4, 6)
    # gimmemotifs pfm (gzipped) with its sibling motif2factors table
    with gzip.open(tmp_path / "db.pfm.gz", "wt") as fh:
        fh.write("# comment\n>m_a\n" + "\n".join("\t".join(map(str, col)) for col in c1.T) + "\n")
        fh.write(">m_b\n" + "\n".join("\t".join(map(str, col)) for col in c2.T) + "\n")
    (tmp_path / "db.motif2factors.txt").write_text("Motif\tFactor\tEvidence\tCurated\nm_a\tMA0001.1.Gata1\tSELEX\tY\n"
                                                   "m_a\tGata2\tSELEX\tN\n")
    ms = grn.read_motifs(tmp_path / "db.pfm.gz")
    assert ms[0].tfs == ("Gata1", "Gata2") and ms[1].tfs == ("m_b",)
    assert np.array_equal(ms[1].counts, c2)
    # pando json, TFs from the name or a motif -> tf table
    import json

    recs = [{"ID": "J1", "name": "FOXF1/FOXS1", "bg": [0.25] * 4, "counts": c1.tolist()}]
    (tmp_path / "p.json").write_text(json.dumps(recs))
    assert grn.read_motifs(tmp_path / "p.json")[0].tfs == ("FOXF1", "FOXS1")
    m2t = pd.DataFrame({"motif": ["J1"], "tf": ["FOXE3"]})
    assert grn.read_motifs(tmp_path / "p.json", motif2factors=m2t)[0].tfs == ("FOXE3",)
    # content sniffing when the suffix says nothing
    (tmp_path / "noext").write_text((tmp_path / "m.jaspar").read_text())
    assert len(grn.read_motifs(tmp_path / "noext")) == 2


def test_read_motifs_errors(tmp_path):
    bad = tmp_path / "bad.jaspar"
    bad.write_text(">MA1.1\tX\nA [ 1 2 ]\nC [ 1 x ]\nG [ 1 2 ]\nT [ 1 2 ]\n")
    with pytest.raises(InputDataError, match="bad.jaspar"):
        grn.read_motifs(bad)
    ragged = tmp_path / "ragged.jaspar"
    ragged.write_text(">MA1.1\tX\nA [ 1 2 ]\nC [ 1 ]\nG [ 1 2 ]\nT [ 1 2 ]\n")
    with pytest.raises(InputDataError, match="ragged.jaspar"):
        grn.read_motifs(ragged)
    pfm = tmp_path / "bad.pfm"
    pfm.write_text(">m\n1\t2\t3\n")
    with pytest.raises(InputDataError, match="bad.pfm"):
        grn.read_motifs(pfm)
    js = tmp_path / "bad.json"
    js.write_text("[{\"ID\": 1,")
    with pytest.raises(InputDataError, match="bad.json"):
        grn.read_motifs(js)
    with pytest.raises(OptionError, match="unknown motif format"):
        grn.read_motifs(bad, fmt="meme")
    garbage = tmp_path / "motifs.txt"
    garbage.write_text("hello world\n")
    with pytest.raises(InputDataError, match="motifs.txt"):
        grn.read_motifs(garbage)
    with pytest.raises(DataFileMissingError):
        grn.read_motifs(tmp_path / "absent.jaspar")
    with pytest.raises(InputDataError):
        grn.Motif("x", "x", ("x",), np.ones((3, 5)))


@pytest.fixture(scope="module")
def motif_dir():
    from scdiffx_grn.datasets import shared_data_dir

    root = shared_data_dir(required=False)
    if root is None or not (root / "motifs").is_dir():
        pytest.skip("shared motif data not available")
    return root / "motifs"


def test_read_shared_jaspar2024(motif_dir):
    path = motif_dir / "JASPAR2024_CORE_vertebrates_nonredundant.jaspar.gz"
    with gzip.open(path, "rt") as fh:
        headers = [line[1:].split("\t") for line in fh if line.startswith(">")]
    ms = grn.read_motifs(path)
    assert len(ms) == len(headers) == 879
    assert [m.id for m in ms] == [h[0] for h in headers]
    dimers = [m for m in ms if "::" in m.name]
    assert dimers and all(m.tfs == tuple(m.name.split("::")) for m in dimers)
    assert all(len(m.tfs) == 1 for m in ms if "::" not in m.name)
    assert all(m.counts.shape[0] == 4 and m.width >= 4 for m in ms)


def test_read_shared_gimme_and_pando(motif_dir):
    ms = grn.read_motifs(motif_dir / "gimmemotifs_JASPAR2022_vertebrates.pfm.gz")  # sibling motif2factors
    assert len(ms) > 800
    table = pd.read_csv(motif_dir / "gimmemotifs_JASPAR2022_vertebrates.motif2factors.txt.gz", sep="\t")
    with_table = [m for m in ms if m.id in set(table["Motif"])]
    assert len(with_table) > 800
    by_id = {m.id: m for m in ms}
    dimer = next(i for i in table["Motif"] if "::" in i)
    assert by_id[dimer].tfs == tuple(dimer.rsplit(".", 1)[-1].split("::"))  # "MA0006.1." prefix dropped
    assert not any(re.match(r"^MA\d{4}\.\d+\.", t) for m in with_table for t in m.tfs)
    assert by_id[dimer].tfs[0] in set(table["Factor"].str.replace(r"^MA\d{4}\.\d+\.", "", regex=True))
    pando = grn.read_motifs(motif_dir / "pando_motifs.json.gz", motif2factors=motif_dir / "pando_motif2tf.tsv.gz")
    m2t = pd.read_csv(motif_dir / "pando_motif2tf.tsv.gz", sep="\t")
    assert len(pando) > 1000
    first = pando[0]
    assert set(first.tfs) == set(m2t.loc[m2t["motif"] == first.id, "tf"])
    assert all(m.counts.shape[0] == 4 for m in pando)
