"""TF layer: TF -> peak links (motif tables, base GRNs, co-accessibility) and TF -> gene networks."""

from __future__ import annotations

import numpy as np
import pandas as pd

import scdiffx_grn._store as _store
from .._errors import (
    InputDataError,
    OptionError,
    ScdxError,
    UnknownFeatureError,
    _fmt_items,
)
from .._settings import logger
from ._genomic import _is_mudata, parse_peak_names, peaks_table
from ._network import GROUP_DEFAULT, group_column, network_table, tag

__all__ = [
    "overlap_intervals",
    "resolve_tfs",
    "tf_gene_network",
    "tf_peak_coaccessibility",
    "tf_peak_from_base_grn",
    "tf_peak_links",
]

#: reference names accepted for ``tfs=`` (the TFs of that reference, :func:`scdiffx_grn.datasets.tf_list`)
TF_SOURCES = ("collectri", "dorothea", "trrust", "union")


def _organism(data, organism: str | None) -> str:
    """``organism``, else the data's ``uns["species"]`` / ``uns["genome"]``, else ``"human"``."""
    from ..pp._genes import normalize_organism

    if organism is not None:
        return normalize_organism(organism)
    uns = getattr(data, "uns", None) or {}
    for k in ("species", "genome"):
        if k in uns:
            try:
                return normalize_organism(str(uns[k]))
            except ScdxError:
                pass
    return "human"


def resolve_tfs(tfs, genes=None, *, organism: str | None = None, default: str | None = None,
                data=None) -> list[str] | None:
    """The TFs a grn function works with: the one TF list (:func:`scdiffx_grn.datasets.tf_list`) or the user's.

    Parameters
    ----------
    tfs
        A list of TF names (returned as strings, order kept, duplicates dropped), a reference
        name (``"collectri"``, ``"dorothea"``, ``"trrust"``, ``"union"``: its TFs among
        ``genes``, most targets first) or ``None`` (``default``).
    genes
        The data's genes (``None``: every TF of the reference).
    organism
        ``"human"`` or ``"mouse"`` (``None``: ``data``'s ``uns["species"]`` / ``uns["genome"]``,
        else human).
    default
        Reference used for ``tfs=None`` (``None``: return ``None``, no restriction).
    data
        The MuData the TFs are for (for the organism).
    """
    if tfs is None:
        if default is None:
            return None
        tfs = default
    if isinstance(tfs, str) and tfs.lower() in TF_SOURCES:
        from ..datasets import tf_list

        return tf_list(genes, organism=_organism(data, organism), source=tfs.lower())
    if isinstance(tfs, str):
        tfs = [tfs]
    return list(dict.fromkeys(str(t) for t in tfs))


def overlap_intervals(a: pd.DataFrame, b: pd.DataFrame, *, min_overlap: int = 1) -> pd.DataFrame:
    """All overlapping pairs between two interval sets (half-open ``[start, end)``).

    Parameters
    ----------
    a, b
        DataFrames with ``chrom, start, end`` (index = interval names).
    min_overlap
        Minimal number of shared bases.

    Returns
    -------
    DataFrame ``a, b, overlap`` with the index names of overlapping intervals. Implemented per
    chromosome on ``b`` sorted by start: candidates of an ``a`` interval are the ``b`` intervals
    starting in ``[a.start - max_len(b), a.end)``, filtered by their end.
    """
    parts = []
    a_names, b_names = a.index.to_numpy(), b.index.to_numpy()
    a_chr, b_chr = a["chrom"].astype(str).to_numpy(), b["chrom"].astype(str).to_numpy()
    a_s, a_e = a["start"].to_numpy(np.int64), a["end"].to_numpy(np.int64)
    b_s, b_e = b["start"].to_numpy(np.int64), b["end"].to_numpy(np.int64)
    for chrom in np.intersect1d(np.unique(a_chr), np.unique(b_chr)):
        ai = np.flatnonzero(a_chr == chrom)
        bi = np.flatnonzero(b_chr == chrom)
        bi = bi[np.argsort(b_s[bi], kind="stable")]
        bs, be = b_s[bi], b_e[bi]
        maxlen = int((be - bs).max())
        lo = np.searchsorted(bs, a_s[ai] - maxlen, side="left")
        hi = np.searchsorted(bs, a_e[ai], side="left")
        cnt = hi - lo
        if cnt.sum() == 0:
            continue
        rep = np.repeat(np.arange(len(ai)), cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        bj = np.repeat(lo, cnt) + offs
        ov = np.minimum(a_e[ai][rep], be[bj]) - np.maximum(a_s[ai][rep], bs[bj])
        keep = ov >= min_overlap
        parts.append(pd.DataFrame({"a": a_names[ai][rep][keep], "b": b_names[bi][bj][keep], "overlap": ov[keep]}))
    if not parts:
        return pd.DataFrame({"a": pd.Series(dtype=object), "b": pd.Series(dtype=object),
                             "overlap": pd.Series(dtype=np.int64)})
    return pd.concat(parts, ignore_index=True)


def tf_peak_from_base_grn(base_grn: pd.DataFrame, peaks, *, tfs=None, peak_col: str = "peak_id",
                          min_overlap: int = 1) -> pd.DataFrame:
    """Map a CellOracle-style base GRN onto the data's peaks by interval overlap.

    Parameters
    ----------
    base_grn
        DataFrame with ``peak_id`` (``chr10_100006137_100006700``) and one 0/1 column per TF
        (other non-numeric columns such as ``gene_short_name`` are ignored).
    peaks
        The data's peaks (anything :func:`scdiffx_grn.grn.peaks_table` accepts).
    tfs
        Keep only these TFs (e.g. TFs expressed in the data).
    min_overlap
        Minimal overlap (bp) between a motif peak and a data peak.

    Returns
    -------
    DataFrame ``tf, peak, weight, evidence`` (``evidence="motif"``, weight 1).
    """
    if peak_col not in base_grn.columns:
        raise InputDataError(f"base GRN lacks the column {peak_col!r}; columns: {_fmt_items(base_grn.columns)}")
    tf_cols = [c for c in base_grn.columns if c != peak_col and pd.api.types.is_numeric_dtype(base_grn[c])]
    if tfs is not None:
        tfs = set(map(str, tfs))
        tf_cols = [c for c in tf_cols if c in tfs]
    base_peaks = base_grn[peak_col].astype(str).to_numpy()
    M = base_grn[tf_cols].to_numpy()
    r, c = np.nonzero(np.nan_to_num(M) > 0)
    long = pd.DataFrame({"base_peak": base_peaks[r], "tf": np.asarray(tf_cols, dtype=object)[c]})
    base_iv = parse_peak_names(pd.unique(base_peaks))
    data_iv = peaks_table(peaks)
    ov = overlap_intervals(data_iv, base_iv, min_overlap=min_overlap)
    m = long.merge(ov.rename(columns={"a": "peak", "b": "base_peak"}), on="base_peak")
    out = m[["tf", "peak"]].drop_duplicates().reset_index(drop=True)
    out["weight"] = 1.0
    out["evidence"] = "motif"
    return out


def tf_peak_coaccessibility(mdata, tfs=None, *, peaks=None, groupby: str | None = "cell_type",
                            n_metacells: int = 10, min_corr: float | None = None, fdr: float | None = 0.1,
                            top_n: int | None = None, method: str = "pearson", seed: int = 0,
                            organism: str | None = None) -> pd.DataFrame:
    """Fallback TF -> peak links without a motif table: TF expression vs peak accessibility.

    Correlates, across metacells, the expression of each TF with the accessibility of each
    peak. This is *not* binding evidence; the rows carry ``evidence="coaccessibility"``.
    A link is kept when the correlation is positive and passes a test: one-sided Student t over
    the metacells (``n - 2`` degrees of freedom), Benjamini-Hochberg over every TF x peak pair,
    ``q <= fdr`` (column ``q``); and, if given, ``correlation >= min_corr``.

    Parameters
    ----------
    mdata
        Paired MuData.
    tfs
        TF gene names (those not in the RNA var are dropped; all missing raises), or a reference
        name (see :func:`resolve_tfs`). ``None``: the CollecTRI TFs among the genes
        (:func:`scdiffx_grn.datasets.tf_list`).
    peaks
        Restrict to these peaks (e.g. the candidate peaks of a peak -> gene table).
    min_corr, fdr, top_n
        Keep links with correlation >= ``min_corr`` (``None``: no threshold on the value) and
        FDR ``q <= fdr`` (``None``: no test), and at most ``top_n`` peaks per TF. One of
        ``min_corr`` and ``fdr`` must be given. (Before: ``min_corr=0.3`` alone, which on the
        mouse MOp data kept 404 links where the test keeps 3,887.)
    method
        ``"pearson"`` or ``"spearman"``.
    organism
        Organism of the TF list (``None``: the data's ``uns["species"]``, else human).

    Returns
    -------
    DataFrame ``tf, peak, weight, evidence``.
    """
    from ._metacells import metacell_profiles, metacells

    if method not in ("pearson", "spearman"):
        raise OptionError(f"method must be 'pearson' or 'spearman', got {method!r}")
    if min_corr is None and fdr is None:
        raise OptionError("tf_peak_coaccessibility needs min_corr= or fdr= (a threshold on the correlation or "
                          "on its false discovery rate)")
    if fdr is not None and not 0 < float(fdr) <= 1:
        raise OptionError(f"fdr must be in (0, 1] or None, got {fdr!r}")
    genes = mdata.mod["rna"].var_names
    tfs = resolve_tfs(tfs, genes, organism=organism, default="collectri", data=mdata)
    tfs = pd.Index(list(dict.fromkeys(str(t) for t in tfs)))
    present = tfs[tfs.isin(genes)]
    if len(present) == 0:
        raise UnknownFeatureError(f"none of the TFs is a gene of the data: {_fmt_items(tfs)}")
    mc = metacells(mdata, groupby, n_metacells, seed=seed)
    rna, atac, _ = metacell_profiles(mdata, mc, genes=present, peaks=peaks)
    C = _corr_matrix(rna.to_numpy(), atac.to_numpy(), method)
    Q = _bh(_corr_p(C, np.full(C.shape, rna.shape[0]), one_sided=True))
    keep = C > 0
    if min_corr is not None:
        keep &= C >= float(min_corr)
    if fdr is not None:
        keep &= Q <= float(fdr)
    rows = []
    for i, tf in enumerate(present):
        c = C[i]
        idx = np.flatnonzero(keep[i])
        if top_n is not None and len(idx) > top_n:
            idx = idx[np.argsort(-c[idx])[:top_n]]
        rows.append(pd.DataFrame({"tf": tf, "peak": atac.columns[idx], "weight": c[idx], "q": Q[i, idx]}))
    out = pd.concat(rows, ignore_index=True)
    out["evidence"] = "coaccessibility"
    return out


def _rank(X: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(X, axis=0)


def _corr_matrix(X: np.ndarray, Y: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of every column of X with every column of Y (rows = observations)."""
    if method == "spearman":
        X, Y = _rank(X), _rank(Y)
    elif method != "pearson":
        raise OptionError(f"method must be 'pearson' or 'spearman', got {method!r}")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    nx = np.sqrt((X ** 2).sum(0))
    ny = np.sqrt((Y ** 2).sum(0))
    nx[nx == 0] = np.inf
    ny[ny == 0] = np.inf
    return (X / nx).T @ (Y / ny)


def pair_corr(X: pd.DataFrame, Y: pd.DataFrame, a, b, method: str = "pearson") -> np.ndarray:
    """Correlation of column ``a[k]`` of X with column ``b[k]`` of Y for each pair k (vectorised)."""
    Xv, Yv = X.to_numpy(np.float64), Y.to_numpy(np.float64)
    if method == "spearman":
        Xv, Yv = _rank(Xv), _rank(Yv)
    Xv = Xv - Xv.mean(0)
    Yv = Yv - Yv.mean(0)
    nx = np.sqrt((Xv ** 2).sum(0))
    ny = np.sqrt((Yv ** 2).sum(0))
    nx[nx == 0] = np.inf
    ny[ny == 0] = np.inf
    Xv, Yv = Xv / nx, Yv / ny
    ia = X.columns.get_indexer(pd.Index(a))
    ib = Y.columns.get_indexer(pd.Index(b))
    out = np.full(len(ia), np.nan)
    ok = (ia >= 0) & (ib >= 0)
    out[ok] = np.einsum("ij,ij->j", Xv[:, ia[ok]], Yv[:, ib[ok]])
    return out


def tf_peak_links(tf_peak, peaks=None, *, tfs=None) -> pd.DataFrame:
    """Normalise a TF -> peak table.

    ``tf_peak`` may be a DataFrame ``tf, peak`` (or ``source, target``) with an optional
    ``weight``, or a CellOracle-style base GRN (a ``peak_id`` column plus one column per TF),
    which is mapped onto ``peaks`` by interval overlap. Duplicate ``(tf, peak)`` rows (e.g. a TF
    with several matching motifs in :func:`scan_motifs` output) are collapsed to the one with the
    largest weight.
    """
    if not isinstance(tf_peak, pd.DataFrame):
        raise InputDataError(f"tf_peak must be a DataFrame, got {type(tf_peak).__name__}")
    if "peak_id" in tf_peak.columns:
        if peaks is None:
            raise InputDataError("mapping a base GRN needs the data's peaks (peaks=...)")
        return tf_peak_from_base_grn(tf_peak, peaks, tfs=tfs)
    df = tf_peak
    if not {"tf", "peak"} <= set(df.columns):
        if {"source", "target"} <= set(df.columns):
            df = df.rename(columns={"source": "tf", "target": "peak"})
        else:
            raise InputDataError(f"TF -> peak table needs columns tf, peak; has {list(tf_peak.columns)}")
    out = df.copy()
    out["tf"] = out["tf"].astype(str)
    out["peak"] = out["peak"].astype(str)
    if "weight" not in out:
        out["weight"] = 1.0
    if "evidence" not in out:
        out["evidence"] = "user"
    if tfs is not None:
        out = out[out["tf"].isin(set(map(str, tfs)))]
    # one link per (TF, peak): a TF with several motifs matching a peak counts once (the strongest row)
    out = out.sort_values("weight", ascending=False, kind="stable").drop_duplicates(["tf", "peak"])
    return out.sort_index().reset_index(drop=True)


def tf_gene_network(peak_gene, tf_peak=None, expression=None, *, aggregate: str = "sum",
                    sign: bool = True, corr_method: str = "spearman", tfs=None, organism: str | None = None,
                    peak_gene_key: str = "grn", key_added: str = "grn_tf", groupby: str | None = "cell_type",
                    n_metacells: int = 20, min_corr: float | None = None, fdr: float | None = 0.1,
                    exclude_self: bool = True, per_type: bool = True, weight: str = "correlation",
                    corr_pvalue: float | None = None, type_pvalue: float | None = 0.05, seed: int = 0,
                    copy: bool = False):
    """Combine peak -> gene scores with TF -> peak links into TF -> gene edges.

    ``motif(TF, gene, group) = agg_{peaks p bound by TF} w_tf(TF, p) * w(p -> gene, group)``
    with ``agg`` = sum or max over the peaks shared by the TF and the gene (the ``motif``
    column). When an expression table is given, each edge gets the correlation of TF and target
    expression (``corr``) across the metacells **of its own group** (``per_type=True``; a group
    with fewer than 3 metacells, or an expression table without ``"<group>::k"`` metacell names,
    uses every metacell) and ``weight = corr * |motif|`` (``weight="correlation"``) or
    ``sign(corr) * |motif|`` (``weight="sign"``, the earlier definition: the same in every group
    up to the peak -> gene weights). With several groups a ``specificity`` column is added
    (:func:`scdiffx_grn.grn.type_specificity`); ``get.grn_df(top_k=)`` ranks by it. ``corr_pvalue``
    keeps, per group, only the edges whose per-group correlation passes a test.

    With a MuData, each group's edges come from its own cells (``type_pvalue``, default): a
    TF -> peak -> gene path enters a group's network only through a peak accessible in the
    group's cells and from a TF expressed in them, i.e. neither is detected in significantly
    fewer of the group's cells than of the other cells. So groups whose chromatin or TF
    expression differ get different edge sets, not only different weights on one edge set.

    Parameters
    ----------
    peak_gene
        A tidy peak -> gene table (``source``/``peak``, ``target``/``gene``, ``weight``, optional
        group column), or a MuData holding one in ``uns[peak_gene_key]`` (see
        :func:`network_table`). With a MuData, the metacell expression is computed from it and
        the result stored in ``uns[key_added]`` (the storage contract: ``copy``).
    tf_peak
        TF -> peak links: a ``tf, peak`` DataFrame, a CellOracle-style base GRN (``peak_id``
        + TF columns; mapped by overlap) or ``"coaccessibility"`` (needs a MuData; edges then
        carry ``evidence="coaccessibility"``).
    expression
        Metacells x genes DataFrame used for the sign (``None`` and a DataFrame input: unsigned).
    aggregate
        ``"sum"`` or ``"max"`` over shared peaks.
    sign, corr_method
        Sign edges by ``"spearman"`` or ``"pearson"`` correlation of TF and target.
    tfs
        Restrict to these TFs: a list, or a reference name (``"collectri"``, ``"dorothea"``,
        ``"trrust"``, ``"union"``: its TFs among the genes, :func:`scdiffx_grn.datasets.tf_list`).
        ``None``: every TF of ``tf_peak``; for ``"coaccessibility"`` the CollecTRI TFs among the
        genes.
    organism
        Organism of a reference TF list (``None``: the data's ``uns["species"]``, else human).
    peak_gene_key, key_added
        ``uns`` keys of the peak -> gene network read and of the result written (MuData input).
    groupby
        Label column of the metacells (sign, co-accessibility). The group column of the result
        is the peak -> gene network's (e.g. ``cell_type``; ``group`` when it has none).
    min_corr, fdr
        TF -> peak selection of ``tf_peak="coaccessibility"`` (:func:`tf_peak_coaccessibility`:
        positive correlation over metacells with Benjamini-Hochberg ``q <= fdr``, and
        ``>= min_corr`` if given).
    exclude_self
        Drop TF -> itself edges.
    per_type
        Correlate TF and target within each group's own metacells (``True``, like CellOracle's
        per-cluster fits) or across all metacells (``False``: one ``corr`` for every group).
    weight
        ``"correlation"`` (``corr * |motif|``) or ``"sign"`` (``sign(corr) * |motif|``).
    corr_pvalue
        With per-type correlations: keep an edge in a group only when its TF-target correlation
        over the group's metacells has a two-sided p-value below this (Student t, ``n - 2`` degrees
        of freedom; column ``corr_p``, no multiple-testing correction), so each group keeps the
        edges its own cells support. ``None`` (default): keep every edge in every group.
    type_pvalue
        MuData input with groups: per group, drop the paths through peaks (and from TFs) whose
        fraction of cells with the peak open (the TF detected) is significantly lower in the
        group than in the other cells: one-sided two-proportion z-test, ``p < type_pvalue``
        (column ``n_peaks`` counts the group's own peaks). ``None``: every path of the prior in
        every group (the networks then differ only in their weights).
    copy
        MuData input: ``False`` writes ``uns[key_added]`` and returns ``None``; ``True`` leaves the
        MuData untouched and returns a modified copy.

    Returns
    -------
    DataFrame input: the DataFrame ``source (TF), target (gene), weight, <group>, n_peaks,
    evidence[, sign, corr]``. MuData input: ``None`` or the copy; ``uns[key_added]`` holds
    ``{"params": {...}, "network": df}``.
    """
    if aggregate not in ("sum", "max"):
        raise OptionError(f"aggregate must be 'sum' or 'max', got {aggregate!r}")
    if corr_method not in ("pearson", "spearman"):
        raise OptionError(f"corr_method must be 'pearson' or 'spearman', got {corr_method!r}")
    if weight not in ("correlation", "sign"):
        raise OptionError(f"weight must be 'correlation' or 'sign', got {weight!r}")
    if corr_pvalue is not None and not 0 < float(corr_pvalue) <= 1:
        raise OptionError(f"corr_pvalue must be in (0, 1] or None, got {corr_pvalue!r}")
    if type_pvalue is not None and not 0 < float(type_pvalue) <= 1:
        raise OptionError(f"type_pvalue must be in (0, 1] or None, got {type_pvalue!r}")
    how = {"per_type": bool(per_type), "weight": weight, "corr_pvalue": corr_pvalue}
    mdata = peak_gene if _is_mudata(peak_gene) else None
    if mdata is not None:
        pg_raw = network_table(mdata, peak_gene_key)
        pg, gcol = _as_pg(pg_raw)
        genes = mdata.mod["rna"].var_names
        if isinstance(tf_peak, str):
            if tf_peak != "coaccessibility":
                raise OptionError(f"tf_peak={tf_peak!r}: only 'coaccessibility' is accepted as a string")
            tf_names = resolve_tfs(tfs, genes, organism=organism, default="collectri", data=mdata)
            tp = tf_peak_coaccessibility(mdata, tf_names, peaks=pd.unique(pg["peak"]), groupby=groupby,
                                         n_metacells=n_metacells, min_corr=min_corr, fdr=fdr, seed=seed)
            if len(tp) == 0:
                raise ScdxError(f"no TF -> peak co-accessibility link passes fdr={fdr}, min_corr={min_corr} over "
                                f"the {n_metacells} metacells per group; raise fdr= (or pass fdr=None with a "
                                "min_corr=), or give a motif table as tf_peak")
        else:
            tf_names = resolve_tfs(tfs, genes, organism=organism, data=mdata)
            tp = tf_peak_links(tf_peak, mdata, tfs=tf_names)
        if expression is None and sign:
            from ._metacells import metacell_profiles, metacells

            mc = metacells(mdata, groupby, n_metacells, seed=seed)
            expression, _, _ = metacell_profiles(mdata, mc, peaks=[])
        groups = [g for g in pd.unique(pg[gcol].astype(str)) if g != _store.GROUP_ALL]
        support = (_type_support(mdata, groupby, groups, tp["tf"], tp["peak"], type_pvalue)
                   if type_pvalue is not None and groupby is not None and len(groups) else None)
        out = _combine(pg, tp, expression if sign else None, aggregate, corr_method, exclude_self, gcol,
                       support=support, **how)
        params = {"peak_gene_key": peak_gene_key, "tf_peak": tf_peak if isinstance(tf_peak, str) else
                  f"<table {len(tp)} TF-peak links>", "aggregate": aggregate, "sign": sign,
                  "corr_method": corr_method, "tfs": tf_names, "organism": organism, "groupby": groupby,
                  "group_column": gcol, "n_metacells": n_metacells, "min_corr": min_corr, "fdr": fdr,
                  "exclude_self": exclude_self, **how, "type_pvalue": type_pvalue if support else None,
                  "seed": seed}
        target = _store.target(mdata, copy)
        _store.store(target, key_added, {"network": out}, params)
        return _store.done(target, copy)
    if tf_peak is None or isinstance(tf_peak, str):
        raise OptionError("with a DataFrame input, tf_peak must be a TF -> peak DataFrame")
    pg, gcol = _as_pg(network_table(peak_gene))
    tp = tf_peak_links(tf_peak, pd.unique(pg["peak"]) if "peak_id" in tf_peak.columns else None,
                       tfs=resolve_tfs(tfs, organism=organism))
    return _combine(pg, tp, expression if sign else None, aggregate, corr_method, exclude_self, gcol, **how)


def _as_pg(df) -> tuple[pd.DataFrame, str]:
    """``peak, gene, weight, <group>`` of a peak -> gene table, and the group column name."""
    if not isinstance(df, pd.DataFrame):
        raise InputDataError(f"peak -> gene table must be a DataFrame, got {type(df).__name__}")
    gcol = group_column(df) or GROUP_DEFAULT
    d = df.copy()
    if "peak" not in d:
        d["peak"] = d["source"] if "source" in d else None
    if "gene" not in d:
        d["gene"] = d["target"] if "target" in d else None
    if d["peak"].isna().any() or d["gene"].isna().any():
        raise InputDataError("peak -> gene table needs source/peak and target/gene columns")
    if "weight" not in d:
        d["weight"] = 1.0
    if gcol not in d:
        d[gcol] = _store.GROUP_ALL
    return d[["peak", "gene", "weight", gcol]], gcol


def _group_corr(expr: pd.DataFrame, out: pd.DataFrame, gcol: str, corr_method: str,
                per_type: bool) -> tuple[np.ndarray, np.ndarray]:
    """TF-target correlation of each edge of ``out`` (over its own group's metacells when ``per_type``)
    and the number of metacells it was computed on, ``0`` where it is the pooled correlation.

    Metacells are named ``"<group>::k"`` (:func:`scdiffx_grn.grn.metacells`); a group with fewer
    than 3 metacells (or names without a group) falls back to every metacell.
    """
    corr = pair_corr(expr, expr, out["source"], out["target"], method=corr_method)
    n = np.zeros(len(out), dtype=int)
    if not per_type:
        return corr, n
    mgroup = pd.Index(expr.index.astype(str)).str.rsplit("::", n=1).str[0]
    for g in pd.unique(out[gcol].astype(str)):
        keep = np.asarray(mgroup == g)
        if keep.sum() < 3:
            logger.info("TF layer: group %r has %d metacells (< 3): its TF-target correlation uses every metacell",
                        g, int(keep.sum()))
            continue
        rows = np.flatnonzero(out[gcol].astype(str).to_numpy() == g)
        corr[rows] = pair_corr(expr[keep], expr[keep], out["source"].iloc[rows], out["target"].iloc[rows],
                               method=corr_method)
        n[rows] = int(keep.sum())
    return corr, n


def _corr_p(r: np.ndarray, n: np.ndarray, *, one_sided: bool = False) -> np.ndarray:
    """p-value of correlations ``r`` over ``n`` points (Student t, ``n - 2`` df; ``nan`` for ``n < 3``).

    Two-sided, or ``one_sided``: against ``r <= 0`` (small p for large positive ``r``).
    """
    from scipy.stats import t as student_t

    r = np.clip(np.nan_to_num(np.asarray(r, float)), -1.0, 1.0)
    df = np.asarray(n, float) - 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tt = (r if one_sided else np.abs(r)) * np.sqrt(df / np.maximum(1.0 - r ** 2, np.finfo(float).tiny))
        p = (1 if one_sided else 2) * student_t.sf(tt, np.maximum(df, 1))
    return np.where(df >= 1, p, np.nan)


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of every entry of ``p`` (same shape; ``nan`` stays ``nan``)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok])
    return q


def _depleted(X, inside: np.ndarray, pvalue: float) -> np.ndarray:
    """Columns of ``X`` (cells x features, counts) detected in significantly fewer of the ``inside`` cells than of
    the others: one-sided two-proportion z-test of the fraction of cells with a non-zero count, ``p < pvalue``."""
    from scipy.stats import norm

    inside = np.asarray(inside, bool)
    n1, n0 = int(inside.sum()), int((~inside).sum())
    if n1 == 0 or n0 == 0:
        return np.zeros(X.shape[1], bool)
    B = X > 0
    k1 = np.asarray(B[inside].sum(0), float).ravel()
    k0 = np.asarray(B[~inside].sum(0), float).ravel()
    pp = (k1 + k0) / (n1 + n0)
    se = np.sqrt(pp * (1.0 - pp) * (1.0 / n1 + 1.0 / n0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (k1 / n1 - k0 / n0) / np.where(se > 0, se, 1.0), 0.0)
    return norm.cdf(z) < float(pvalue)


def _type_support(mdata, groupby: str | None, groups, tfs, peaks, pvalue: float) -> dict:
    """Per group: the peaks accessible and the TFs expressed in its own cells (those not significantly depleted
    there against the other cells, :func:`_depleted`). ``{group: (peaks, tfs)}`` for the groups that are labels of
    ``mdata`` (others are not filtered); peaks and TFs that are not features of ``mdata`` cannot be tested and are
    kept in every group."""
    from .._registry import counts
    from ._metacells import group_labels

    lab = np.asarray(group_labels(mdata, groupby)).astype(str)
    pidx = pd.Index(mdata.mod["atac"].var_names.astype(str))
    gidx = pd.Index(mdata.mod["rna"].var_names.astype(str))
    peaks = pd.Index(pd.unique(np.asarray(peaks).astype(str)))
    tfs = pd.Index(pd.unique(np.asarray(tfs).astype(str)))
    p_in, t_in = pidx.get_indexer(peaks) >= 0, gidx.get_indexer(tfs) >= 0
    untested_p, untested_t = set(peaks[~p_in]), set(tfs[~t_in])
    peaks, tfs = peaks[p_in], tfs[t_in]
    A = counts(mdata, "atac")[:, pidx.get_indexer(peaks)]
    R = counts(mdata, "rna")[:, gidx.get_indexer(tfs)]
    out = {}
    for g in map(str, groups):
        inside = lab == g
        if not inside.any():
            continue
        out[g] = (set(peaks[~_depleted(A, inside, pvalue)]) | untested_p,
                  set(tfs[~_depleted(R, inside, pvalue)]) | untested_t)
    return out


def _combine(pg, tp, expression, aggregate, corr_method, exclude_self, gcol: str = "cell_type", *,
             per_type: bool = True, weight: str = "correlation", corr_pvalue: float | None = None,
             support: dict | None = None) -> pd.DataFrame:
    if aggregate not in ("sum", "max"):
        raise OptionError(f"aggregate must be 'sum' or 'max', got {aggregate!r}")
    m = pg.merge(tp[["tf", "peak", "weight", "evidence"]].rename(columns={"weight": "w_tf"}), on="peak")
    if len(m) == 0:
        raise ScdxError("no peak is shared between the TF -> peak links and the peak -> gene table "
                        f"(first TF-peak peaks: {_fmt_items(tp['peak'].head(5))}; "
                        f"first peak-gene peaks: {_fmt_items(pg['peak'].head(5))})")
    if support:
        # each group's own paths: peaks accessible and TFs expressed in its cells (see _type_support)
        grp = m[gcol].astype(str).to_numpy()
        keep = np.ones(len(m), bool)
        for g, (ok_peaks, ok_tfs) in support.items():
            rows = grp == g
            keep[rows] = m["peak"][rows].isin(ok_peaks).to_numpy() & m["tf"][rows].isin(ok_tfs).to_numpy()
        m = m[keep]
        if len(m) == 0:
            raise ScdxError("no TF -> peak -> gene path has its peak accessible and its TF expressed in a group's "
                            "own cells; pass type_pvalue=None to keep every path of the prior in every group")
    m["w"] = m["weight"] * m["w_tf"]
    if exclude_self:
        m = m[m["tf"] != m["gene"]]
    g = m.groupby(["tf", "gene", gcol], sort=False, observed=True)
    if aggregate == "sum":
        agg = g.agg(weight=("w", "sum"), n_peaks=("peak", "nunique"), evidence=("evidence", "first"))
    else:
        agg = g.agg(weight=("w", lambda s: s.loc[s.abs().idxmax()]), n_peaks=("peak", "nunique"),
                    evidence=("evidence", "first"))
    out = agg.reset_index().rename(columns={"tf": "source", "gene": "target"})
    out["motif"] = out["weight"]
    if expression is not None:
        expr = expression.to_df() if hasattr(expression, "to_df") else expression
        corr, n_mc = _group_corr(expr, out, gcol, corr_method, per_type)
        out["corr"] = corr
        if per_type and (n_mc > 0).any():
            out["corr_p"] = _corr_p(corr, n_mc)
            if corr_pvalue is not None:
                drop = (n_mc > 0) & ~(out["corr_p"].to_numpy() < float(corr_pvalue))
                out, corr = out[~drop].reset_index(drop=True), corr[~drop]
                if len(out) == 0:
                    raise ScdxError(f"no TF -> gene edge has a per-type TF-target correlation with p < "
                                    f"corr_pvalue={corr_pvalue}; raise corr_pvalue or pass corr_pvalue=None")
        s = np.sign(np.nan_to_num(corr))
        s[s == 0] = 1
        out["sign"] = s.astype(int)
        mag = np.abs(np.nan_to_num(corr)) if weight == "correlation" else 1.0
        out["weight"] = out["sign"] * mag * out["weight"].abs()
    if out[gcol].nunique() > 1:
        from ._specific import add_specificity

        out = add_specificity(out, group=gcol)
    out = out.sort_values([gcol, "weight"], ascending=[True, False], key=None).reset_index(drop=True)
    first = ["source", "target", "weight", gcol]
    return tag(out[first + [c for c in out.columns if c not in first]], gcol)
