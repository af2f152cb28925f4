"""Reference regulatory networks and gene sets, read from disk (never downloaded).

The readers of :mod:`scdiffx_grn.datasets` (``collectri``, ``dorothea``, ``trrust`` and
``data_path`` with the manifest names) are used; small private readers of the same public files in
the shared data folder (``settings.data_dir``, ``$SCDX_DATA_DIR`` or ``../shared/data`` beside the
checkout) are a fallback only, e.g. for an installation without the datasets module's files.
TRRUST pairs whose only mode is ``Unknown`` get weight +1 (counted as activating targets).

Orthology by case
-----------------
CollecTRI and the MSigDB / Enrichr gene sets are human. For mouse data human symbols are mapped
to mouse symbols by case (``"NR3C1" -> "Nr3c1"``). This is right for most 1:1 orthologues, misses
genes whose symbols differ between species and is documented as an approximation.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from .._errors import DataFileMissingError, InputDataError, OptionError
from .._settings import logger

__all__ = ["reference_network", "gene_sets", "to_mouse_symbols", "REFERENCES", "GENE_SET_FILES"]

REFERENCES = ("collectri", "dorothea", "trrust")

GENE_SET_FILES = {
    "hallmark": "h.all.v7.0.symbols.gmt",
    "kegg": "c2.cp.kegg.v7.5.1.symbols.gmt",
    "go_bp": "enrichr.GO_Biological_Process_2021.gmt",
    "kegg_2016": "enrichr.KEGG_2016.gmt",
}
# manifest names of scdiffx_grn.datasets (data_manifests/*.yaml) for the files above
_MANIFESTS = {
    "h.all.v7.0.symbols.gmt": "msigdb_hallmark_v7_0",
    "c2.cp.kegg.v7.5.1.symbols.gmt": "msigdb_kegg_c2_v7_5_1",
    "enrichr.GO_Biological_Process_2021.gmt": "enrichr_go_bp_2021",
    "enrichr.KEGG_2016.gmt": "enrichr_kegg_2016",
    "collectri_human_decoupleR_export.csv.gz": "collectri_human",
    "dorothea_mm.tsv.gz": "dorothea_mm",
    "dorothea_hs.tsv.gz": "dorothea_hs",
    "trrust_rawdata.mouse.tsv.gz": "trrust_mouse",
    "trrust_rawdata.human.tsv.gz": "trrust_human",
}


def to_mouse_symbols(genes) -> list[str]:
    """Map human gene symbols to mouse symbols by case (``"NR3C1" -> "Nr3c1"``)."""
    return [g[:1].upper() + g[1:].lower() if isinstance(g, str) else g for g in genes]


def _datasets():
    """The datasets module when it already provides readers, else None."""
    try:
        mod = importlib.import_module("scdiffx_grn.datasets")
    except Exception:  # noqa: BLE001 - module under construction by another engineer
        return None
    return mod


def _shared_dir() -> Path:
    """The shared reference-data folder (:func:`scdiffx_grn.datasets.shared_data_dir`)."""
    from ..datasets import shared_data_dir

    return shared_data_dir()


def _data_file(sub: str, fname: str) -> Path:
    ds = _datasets()
    if ds is not None and hasattr(ds, "data_path"):
        for args in ((_MANIFESTS.get(fname, fname),), (_MANIFESTS.get(fname, fname), fname)):
            try:
                p = Path(ds.data_path(*args))
                if p.exists():
                    return p
            except Exception:  # noqa: BLE001 - signature / name not known to datasets
                continue
    p = _shared_dir() / sub / fname
    if not p.exists():
        raise DataFileMissingError(f"reference file {fname!r} not found at {p}")
    return p


def _finish(net: pd.DataFrame) -> pd.DataFrame:
    net = net[["source", "target", "weight"]].copy()
    net["source"] = net["source"].astype(str)
    net["target"] = net["target"].astype(str)
    net["weight"] = pd.to_numeric(net["weight"], errors="coerce").fillna(1.0).astype(float)
    net = net[net["source"] != net["target"]]
    # decoupler needs unique source-target pairs
    net = net.groupby(["source", "target"], as_index=False, sort=True)["weight"].mean()
    return net.reset_index(drop=True)


def _read_collectri(organism: str) -> pd.DataFrame:
    net = pd.read_csv(_data_file("grn", "collectri_human_decoupleR_export.csv.gz"))
    if organism == "mouse":
        net["source"] = to_mouse_symbols(net["source"])
        net["target"] = to_mouse_symbols(net["target"])
    return net


def _read_dorothea(organism: str, levels: str) -> pd.DataFrame:
    fname = "dorothea_mm.tsv.gz" if organism == "mouse" else "dorothea_hs.tsv.gz"
    d = pd.read_csv(_data_file("grn", fname), sep="\t")
    d = d[d["confidence"].isin(list(levels))]
    return d.rename(columns={"tf": "source", "mor": "weight"})


def _read_trrust(organism: str) -> pd.DataFrame:
    fname = "trrust_rawdata.mouse.tsv.gz" if organism == "mouse" else "trrust_rawdata.human.tsv.gz"
    d = pd.read_csv(_data_file("grn", fname), sep="\t", header=None,
                    names=["source", "target", "mode", "pmid"])
    d["weight"] = d["mode"].map({"Activation": 1.0, "Repression": -1.0}).fillna(1.0)
    return d


def reference_network(name: str, organism: str = "mouse", *, levels: str = "ABC") -> pd.DataFrame:
    """Load a reference TF -> target network as a decoupler table ``source, target, weight``.

    Parameters
    ----------
    name
        ``"collectri"``, ``"dorothea"`` (confidence ``levels``) or ``"trrust"``.
    organism
        ``"mouse"`` or ``"human"``. CollecTRI is human; for mouse its symbols are converted by case.
    levels
        DoRothEA confidence levels to keep.

    Returns
    -------
    DataFrame with unique ``source, target`` pairs (duplicates averaged, self loops removed).
    """
    name = str(name).lower()
    organism = str(organism).lower()
    if organism not in ("mouse", "human"):
        raise OptionError(f"organism must be 'mouse' or 'human', got {organism!r}")
    if name not in REFERENCES:
        raise OptionError(f"unknown reference network {name!r}; choose one of {REFERENCES} or pass a DataFrame")
    ds = _datasets()
    if ds is not None and hasattr(ds, name):
        try:
            fn = getattr(ds, name)
            if name == "dorothea":
                net = fn(organism, levels=levels)
            elif name == "trrust":
                net = fn(organism, unknown=1.0)  # unsigned pairs count as activating (see _read_trrust)
            else:
                net = fn(organism)
            logger.debug("reference %s read through scdiffx_grn.datasets", name)
            return _finish(net)
        except Exception as e:  # noqa: BLE001 - fall back to the shared files
            logger.info("datasets.%s failed (%s); reading the shared file", name, e)
    if name == "collectri":
        net = _read_collectri(organism)
    elif name == "dorothea":
        net = _read_dorothea(organism, levels)
    else:
        net = _read_trrust(organism)
    return _finish(net)


def _read_gmt(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path) as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            out[parts[0]] = [g for g in parts[2:] if g]
    return out


def gene_sets(spec, organism: str = "mouse") -> dict[str, list[str]]:
    """Resolve gene sets to a dict ``{set name: [genes]}`` from local files only.

    Parameters
    ----------
    spec
        ``"hallmark"``, ``"kegg"``, ``"go_bp"``, ``"kegg_2016"`` (the shipped human GMT files),
        a path to a ``.gmt`` file, or a dict of gene lists (used as given).
    organism
        For ``"mouse"`` the named (human) collections are converted to mouse symbols by case.
        Paths and dicts are used as given.
    """
    if isinstance(spec, dict):
        sets = {str(k): [str(g) for g in v] for k, v in spec.items()}
        for k, v in spec.items():
            if isinstance(v, str):
                raise InputDataError(f"gene set {k!r} is a string, not a list of genes: {v[:40]!r}")
        return sets
    s = str(spec)
    if s.lower() in GENE_SET_FILES:
        sets = _read_gmt(_data_file("genesets", GENE_SET_FILES[s.lower()]))
        if organism == "mouse":
            sets = {k: to_mouse_symbols(v) for k, v in sets.items()}
        return sets
    p = Path(s)
    if p.suffix == ".gmt" or p.exists():
        if not p.exists():
            raise DataFileMissingError(f"gene set file {s!r} does not exist")
        return _read_gmt(p)
    raise OptionError(
        f"gene sets {s!r} are neither a known collection ({sorted(GENE_SET_FILES)}), a GMT path nor a "
        "dict; library names (Enrichr/MSigDB web) are not supported offline"
    )
