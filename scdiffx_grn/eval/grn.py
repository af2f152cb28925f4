"""Validation of inferred GRNs: TF -> gene vs curated references, peak -> gene vs data links.

Every metric function returns a tidy DataFrame with one row per (method, cell type); model-free
baselines are evaluated in the same call and the ``beats_baselines`` column says whether the
network beat every baseline, so a network that does not is visible in the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError, ScdxError, _fmt_items
from ._metrics import auprc as _auprc
from ._metrics import auroc as _auroc

__all__ = [
    "accessibility_baseline",
    "distance_baseline",
    "grn_predictive",
    "heldout_cells",
    "links_from_var",
    "metacell_correlation",
    "peak_gene_baselines",
    "peak_gene_metrics",
    "peak_importance",
    "peak_set_enrichment",
    "peak_set_membership",
    "ranking_metrics",
    "stability",
    "target_degree_baseline",
    "tf_gene_metrics",
    "tf_swap_control",
    "topk_jaccard",
]


# --------------------------------------------------------------------------------------------
# generic ranking metrics
# --------------------------------------------------------------------------------------------
def _precision_at_k(y: np.ndarray, s: np.ndarray, k: int) -> float:
    """Expected precision among the top ``k`` under random tie breaking."""
    if k <= 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    thr = s[order[k - 1]]
    above = s > thr
    ties = s == thr
    n_above = int(above.sum())
    pos_above = int(y[above].sum())
    n_ties = int(ties.sum())
    pos_ties = int(y[ties].sum())
    return float((pos_above + (k - n_above) * pos_ties / n_ties) / k)


def ranking_metrics(y_true, scores) -> dict:
    """AUROC, AUPRC, AUPRC ratio and early precision ratio of a scored edge list.

    Parameters
    ----------
    y_true
        Boolean labels (edge in the reference).
    scores
        Edge scores (higher = more confident).

    Returns
    -------
    dict with ``auroc, auprc, density, auprc_ratio, epr, n_edges, n_true``; EPR is the precision
    among the top ``k = n_true`` edges divided by the density (a perfect ranking gives
    ``1 / density``; random about 1). Ties are broken at random in expectation.
    """
    y = np.asarray(y_true, bool)
    s = np.asarray(scores, float)
    s = np.where(np.isfinite(s), s, -np.inf)
    s = np.where(np.isneginf(s), np.nanmin(s[np.isfinite(s)]) - 1 if np.isfinite(s).any() else 0.0, s)
    n, npos = len(y), int(y.sum())
    dens = npos / n if n else float("nan")
    auprc = _auprc(y, s)
    return {"auroc": _auroc(y, s), "auprc": auprc, "density": dens,
            "auprc_ratio": auprc / dens if dens else float("nan"),
            "epr": _precision_at_k(y, s, npos) / dens if npos else float("nan"),
            "n_edges": n, "n_true": npos}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _edges(df: pd.DataFrame, a=("source", "tf", "peak"), b=("target", "gene")) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputDataError(f"expected a DataFrame, got {type(df).__name__}")
    from ..grn._network import network_table

    d = network_table(df, group="cell_type").copy()  # the group column, whatever groupby named it
    src = next((c for c in a if c in d), None)
    tgt = next((c for c in b if c in d), None)
    if src is None or tgt is None:
        raise InputDataError(f"edge table needs source/target columns; has {list(df.columns)}")
    d = d.rename(columns={src: "source", tgt: "target"}) if (src != "source" or tgt != "target") else d
    d["source"] = d["source"].astype(str)
    d["target"] = d["target"].astype(str)
    if "weight" not in d:
        d["weight"] = 1.0
    d["cell_type"] = d["cell_type"].astype(str)
    return d


def _score_matrix(df: pd.DataFrame, rows: pd.Index, cols: pd.Index, col: str = "weight") -> np.ndarray:
    M = np.zeros((len(rows), len(cols)))
    i = rows.get_indexer(df["source"])
    j = cols.get_indexer(df["target"])
    ok = (i >= 0) & (j >= 0)
    w = np.abs(df[col].to_numpy(float))[ok]
    # several rows for one pair (e.g. peaks): keep the max
    np.maximum.at(M, (i[ok], j[ok]), w)
    return M


def _beats(table: pd.DataFrame, method_col: str, methods: list[str], baselines: list[str]) -> pd.DataFrame:
    table = table.copy()
    table["is_baseline"] = table[method_col].isin(baselines)
    table["best_baseline"] = None
    table["best_baseline_auroc"] = np.nan
    table["beats_baselines"] = pd.NA
    for ct, sub in table.groupby("cell_type", sort=False):
        base = sub[sub["is_baseline"]]
        glob = table[(table["is_baseline"]) & (table["cell_type"] == "all")]
        base = pd.concat([base, glob]).drop_duplicates(subset=[method_col])
        if len(base) == 0 or base["auroc"].isna().all():
            continue
        b = base.loc[base["auroc"].idxmax()]
        idx = sub.index[~sub["is_baseline"]]
        table.loc[idx, "best_baseline"] = b[method_col]
        table.loc[idx, "best_baseline_auroc"] = b["auroc"]
        table.loc[idx, "beats_baselines"] = sub.loc[idx, "auroc"] > base["auroc"].max()
    return table


# --------------------------------------------------------------------------------------------
# TF -> gene
# --------------------------------------------------------------------------------------------
def target_degree_baseline(candidates: pd.DataFrame) -> pd.DataFrame:
    """Score each candidate edge by the in-degree of its target in the candidate network.

    Reference-independent: genes with many candidate regulators rank first. Computed per
    cell type when ``candidates`` has a ``cell_type`` column.
    """
    d = _edges(candidates)
    deg = d.groupby(["cell_type", "target"], observed=True)["source"].transform("nunique")
    out = d[["source", "target", "cell_type"] + (["distance"] if "distance" in d else [])].copy()
    out["weight"] = deg.to_numpy(float)
    return out.drop_duplicates(["source", "target", "cell_type"]).reset_index(drop=True)


def tf_swap_control(pred_df: pd.DataFrame, reference_df: pd.DataFrame, *, tfs_universe=None,
                    genes_universe=None, cell_type: str | None = None) -> pd.DataFrame:
    """TF-swap control: does a TF's own row predict its targets better than other TFs' rows?

    For each TF *t* with reference targets, the AUROC of *t*'s predicted row against *t*'s
    reference targets is compared with the mean AUROC of every other TF's row (TF labels
    permuted) against the same targets. A network that only learned "which genes are
    regulated at all" scores the same in both.

    Returns
    -------
    DataFrame per TF: ``tf, cell_type, auroc_own, auroc_swapped_mean, own_beats_swapped,
    n_true``; the fraction of TFs with ``own_beats_swapped`` is the summary
    (``df.own_beats_swapped.mean()``).
    """
    from scipy.stats import rankdata

    pred = _edges(pred_df)
    ref = _edges(reference_df)
    rows = []
    cts = [cell_type] if cell_type is not None else list(pd.unique(pred["cell_type"]))
    for ct in cts:
        p = pred[pred["cell_type"] == ct]
        tfs, genes = _universe(p, ref, tfs_universe, genes_universe)
        if len(tfs) < 2:
            continue
        S = _score_matrix(p, tfs, genes)
        Y = _score_matrix(ref.assign(weight=1.0), tfs, genes) > 0
        R = rankdata(S, axis=1)
        for t, tf in enumerate(tfs):
            y = Y[t]
            npos, nneg = int(y.sum()), int((~y).sum())
            if npos == 0 or nneg == 0:
                continue
            au = (R[:, y].sum(1) - npos * (npos + 1) / 2) / (npos * nneg)
            others = np.delete(au, t)
            rows.append({"tf": tf, "cell_type": ct, "auroc_own": au[t], "auroc_swapped_mean": others.mean(),
                         "own_beats_swapped": bool(au[t] > others.mean()), "n_true": npos})
    return pd.DataFrame(rows, columns=["tf", "cell_type", "auroc_own", "auroc_swapped_mean",
                                       "own_beats_swapped", "n_true"])


def _universe(pred, ref, tfs_universe, genes_universe):
    tfs = pd.Index(sorted(set(pred["source"]) & set(ref["source"])))
    if tfs_universe is not None:
        tfs = tfs[tfs.isin(pd.Index(list(map(str, tfs_universe))))]
    if genes_universe is None:
        genes = pd.Index(sorted(set(pred["target"]) | set(pred["source"])))
    else:
        genes = pd.Index(pd.unique(np.asarray(list(map(str, genes_universe)), dtype=object)))
    return tfs, genes


def tf_gene_metrics(pred_df: pd.DataFrame, reference_df: pd.DataFrame, *, tfs_universe=None,
                    genes_universe=None, baselines: dict | None = None, method: str = "model",
                    target_degree: bool = True, tf_swap: bool = True, exclude_self: bool = True) -> pd.DataFrame:
    """Score a TF -> gene network against a reference network, per cell type.

    The evaluated edge universe is every pair (TF, gene) with TF in the predicted network, in
    the reference and in ``tfs_universe``; and gene in ``genes_universe`` (the data's genes).
    Reference edges outside the universe are ignored; predicted scores are ``|weight|``;
    pairs absent from the prediction score 0.

    Parameters
    ----------
    pred_df
        ``source, target, weight[, cell_type]``.
    reference_df
        ``source, target`` (e.g. DoRothEA, CollecTRI, TRRUST; ``tf``/``target`` accepted).
    tfs_universe, genes_universe
        TFs / genes allowed (e.g. the data's genes for both).
    baselines
        ``{name: DataFrame}`` of other networks scored the same way (a baseline without a
        ``cell_type`` column is used for every cell type).
    method
        Name of the evaluated network in the table.
    target_degree
        Add the target in-degree baseline computed from ``pred_df``'s candidate edges.
    tf_swap
        Add ``tf_swap_frac`` (fraction of TFs whose own row beats the swapped rows).

    Returns
    -------
    DataFrame ``method, cell_type, auroc, auprc, density, auprc_ratio, epr, n_edges, n_true,
    n_tfs, n_genes, tf_swap_frac, is_baseline, best_baseline, best_baseline_auroc,
    beats_baselines``.
    """
    pred = _edges(pred_df)
    ref = _edges(reference_df)
    nets = {method: pred}
    if target_degree:
        nets["target_degree"] = target_degree_baseline(pred)
    for name, b in (baselines or {}).items():
        nets[name] = _edges(b)
    rows = []
    cts = list(pd.unique(pred["cell_type"]))
    for ct in cts:
        p = pred[pred["cell_type"] == ct]
        tfs, genes = _universe(p, ref, tfs_universe, genes_universe)
        if len(tfs) == 0:
            raise ScdxError(f"no TF is shared between the prediction ({_fmt_items(pd.unique(p['source']))}) and "
                            f"the reference ({_fmt_items(pd.unique(ref['source']))}) for cell type {ct!r}")
        Y = _score_matrix(ref.assign(weight=1.0), tfs, genes) > 0
        mask = np.ones_like(Y, bool)
        if exclude_self:
            ji = genes.get_indexer(tfs)
            ok = ji >= 0
            mask[np.flatnonzero(ok), ji[ok]] = False
        for name, net in nets.items():
            n = net[net["cell_type"] == ct] if (net["cell_type"] == ct).any() else net[net["cell_type"] == "all"]
            if len(n) == 0:
                n = net
            S = _score_matrix(n, tfs, genes)
            r = ranking_metrics(Y[mask], S[mask])
            r.update(method=name, cell_type=ct, n_tfs=len(tfs), n_genes=len(genes))
            if tf_swap:
                sw = tf_swap_control(n.assign(cell_type=ct), ref, tfs_universe=tfs, genes_universe=genes)
                r["tf_swap_frac"] = float(sw["own_beats_swapped"].mean()) if len(sw) else float("nan")
            rows.append(r)
    cols = ["method", "cell_type", "auroc", "auprc", "density", "auprc_ratio", "epr", "n_edges", "n_true",
            "n_tfs", "n_genes"] + (["tf_swap_frac"] if tf_swap else [])
    table = pd.DataFrame(rows)[cols]
    return _beats(table, "method", [method], [k for k in nets if k != method])


# --------------------------------------------------------------------------------------------
# peak -> gene
# --------------------------------------------------------------------------------------------
def links_from_var(atac_var: pd.DataFrame, column: str = "linked_gene_GxR", sep: str | None = None) -> pd.DataFrame:
    """Region -> gene links stored in an ATAC var column (one gene, or ``sep``-joined genes, per peak)."""
    if column not in atac_var:
        raise InputDataError(f"ATAC var has no column {column!r}; columns: {_fmt_items(atac_var.columns)}")
    s = atac_var[column].dropna().astype(str)
    s = s[s != ""]
    if sep is not None:
        s = s.str.split(sep).explode()
    return pd.DataFrame({"source": s.index.astype(str), "target": s.to_numpy()}).reset_index(drop=True)


def distance_baseline(candidates: pd.DataFrame) -> pd.DataFrame:
    """Distance-only baseline: weight = ``-|distance|`` (closer peaks rank first)."""
    d = _edges(candidates)
    if "distance" not in d:
        raise InputDataError("the distance baseline needs a 'distance' column")
    out = d[["source", "target", "distance"]].drop_duplicates(["source", "target"]).copy()
    out["weight"] = -out["distance"].abs().astype(float)
    out["cell_type"] = "all"
    return out


def _group_index(labels):
    names, inv = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    P = sp.csr_matrix((np.ones(len(inv)), (inv, np.arange(len(inv)))), shape=(len(names), len(inv)))
    return names, P


def accessibility_baseline(mdata, candidates: pd.DataFrame, groupby: str = "cell_type") -> pd.DataFrame:
    """Accessibility-only baseline: weight = fraction of the cell type's cells with the peak open."""
    from .._registry import counts, labels

    d = _edges(candidates)[["source", "target"] + (["distance"] if "distance" in candidates else [])]
    d = d.drop_duplicates(["source", "target"])
    atac = mdata.mod["atac"]
    names, P = _group_index(labels(mdata, groupby).to_numpy())
    pos = atac.var_names.get_indexer(pd.Index(pd.unique(d["source"])))
    if (pos < 0).any():
        bad = pd.unique(d["source"])[pos < 0]
        raise InputDataError(f"candidate peaks not in the data: {_fmt_items(bad)}")
    A = sp.csr_matrix(counts(mdata, "atac"), dtype=np.float32)[:, pos]
    if A.nnz and not np.isfinite(A.data).all():
        raise InputDataError("the ATAC counts hold NaN or inf values")
    A.data = (A.data > 0).astype(np.float32)
    M = np.asarray((P @ A).todense()) / np.asarray(P.sum(1))
    col = pd.Index(pd.unique(d["source"])).get_indexer(d["source"])
    parts = [d.assign(weight=M[g, col], cell_type=ct) for g, ct in enumerate(names)]
    return pd.concat(parts, ignore_index=True)


def metacell_correlation(mdata, candidates: pd.DataFrame, groupby: str | None = "cell_type",
                         n_metacells: int = 10, *, per_group: bool = False, method: str = "pearson",
                         use: str = "rna", seed: int = 0) -> pd.DataFrame:
    """Peak -> gene correlation of accessibility and expression across metacells.

    Metacells are k-means clusters of a PCA (``use="rna"``) or LSI (``"atac"``) embedding
    built within each ``groupby`` group (see :func:`scdiffx_grn.grn.metacells`).

    Parameters
    ----------
    candidates
        ``peak, gene`` (or ``source, target``) pairs to score.
    n_metacells
        Metacells per group.
    per_group
        ``False``: one correlation across all metacells (``cell_type="all"``). ``True``: one per
        group, across that group's metacells only (needs several metacells per group).
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    DataFrame ``source (peak), target (gene), weight (correlation), cell_type[, distance]``.
    """
    from ..grn._metacells import metacell_profiles, metacells
    from ..grn._tf import pair_corr

    d = _edges(candidates)[["source", "target"] + (["distance"] if "distance" in candidates else [])]
    d = d.drop_duplicates(["source", "target"]).reset_index(drop=True)
    mc = metacells(mdata, groupby, n_metacells, use=use, seed=seed)
    rna, atac, group = metacell_profiles(mdata, mc, genes=pd.unique(d["target"]), peaks=pd.unique(d["source"]))
    if not per_group:
        return d.assign(weight=np.nan_to_num(pair_corr(atac, rna, d["source"], d["target"], method)),
                        cell_type="all")
    parts = []
    for g in pd.unique(group):
        keep = (group == g).to_numpy()
        if keep.sum() < 3:
            continue
        w = pair_corr(atac[keep], rna[keep], d["source"], d["target"], method)
        parts.append(d.assign(weight=np.nan_to_num(w), cell_type=g))
    if not parts:
        raise ScdxError("per-group metacell correlation needs at least 3 metacells in some group; "
                        "raise n_metacells or use per_group=False")
    return pd.concat(parts, ignore_index=True)


def peak_gene_baselines(mdata, candidates: pd.DataFrame, groupby: str = "cell_type", n_metacells: int = 10,
                        *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """All model-free peak -> gene baselines: distance, metacell correlation, accessibility, target degree."""
    out = {}
    if "distance" in candidates:
        out["distance"] = distance_baseline(candidates)
    out["metacell_correlation"] = metacell_correlation(mdata, candidates, groupby, n_metacells, seed=seed)
    out["accessibility"] = accessibility_baseline(mdata, candidates, groupby)
    out["target_degree"] = target_degree_baseline(_edges(candidates).assign(cell_type="all"))
    return out


def peak_gene_metrics(pred_df: pd.DataFrame, links_df: pd.DataFrame, *, candidates: pd.DataFrame | None = None,
                      baselines: dict | None = None, method: str = "model") -> pd.DataFrame:
    """Agreement of peak -> gene scores with known region -> gene links, per cell type.

    Parameters
    ----------
    pred_df
        ``source (peak), target (gene), weight[, cell_type, distance]``.
    links_df
        Known links ``source (peak), target (gene)`` (e.g. :func:`links_from_var`).
    candidates
        The evaluated pairs (default: the pairs of ``pred_df``); missing predictions score 0.
    baselines
        ``{name: DataFrame}`` scored on the same pairs; a ``distance`` baseline is added when
        distances are known.

    Returns
    -------
    DataFrame ``method, cell_type, auroc, auprc, density, auprc_ratio, epr, n_edges, n_true,
    spearman_distance`` (rank correlation of the score with ``-|distance|``) plus the
    ``is_baseline / best_baseline / beats_baselines`` columns.
    """
    from scipy.stats import spearmanr

    pred = _edges(pred_df)
    cand = _edges(candidates if candidates is not None else pred_df)
    keep = ["source", "target"] + (["distance"] if "distance" in cand else [])
    cand = cand[keep].drop_duplicates(["source", "target"]).reset_index(drop=True)
    links = _edges(links_df)
    key = cand["source"] + "\t" + cand["target"]
    y = key.isin(set(links["source"] + "\t" + links["target"])).to_numpy()
    nets = {method: pred}
    bl = dict(baselines or {})
    if "distance" in cand and "distance" not in bl:
        bl["distance"] = distance_baseline(cand)
    nets.update({k: _edges(v) for k, v in bl.items()})
    absd = -cand["distance"].abs().to_numpy(float) if "distance" in cand else None
    rows = []
    for ct in pd.unique(pred["cell_type"]):
        for name, net in nets.items():
            n = net[net["cell_type"] == ct] if (net["cell_type"] == ct).any() else net[net["cell_type"] == "all"]
            s = pd.Series(n["weight"].to_numpy(float), index=n["source"] + "\t" + n["target"])
            s = s[~s.index.duplicated()]
            score = s.reindex(key).fillna(s.min() - 1 if len(s) else 0).to_numpy()
            r = ranking_metrics(y, score)
            r.update(method=name, cell_type=ct)
            if absd is not None and np.std(score) > 0:
                r["spearman_distance"] = float(spearmanr(score, absd).statistic)
            else:
                r["spearman_distance"] = float("nan")
            rows.append(r)
    table = pd.DataFrame(rows)[["method", "cell_type", "auroc", "auprc", "density", "auprc_ratio", "epr",
                                "n_edges", "n_true", "spearman_distance"]]
    return _beats(table, "method", [method], list(bl))


# --------------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------------
def _topk_set(df: pd.DataFrame, k: int, cell_type=None) -> set:
    d = _edges(df)
    if cell_type is not None:
        d = d[d["cell_type"] == str(cell_type)]
    d = d.assign(_a=d["weight"].abs()).sort_values("_a", ascending=False, kind="stable").head(k)
    return set(zip(d["source"], d["target"]))


def topk_jaccard(df_a: pd.DataFrame, df_b: pd.DataFrame, k: int, cell_type=None) -> float:
    """Jaccard index of the top-``k`` edges (by |weight|) of two networks (e.g. two training seeds)."""
    a, b = _topk_set(df_a, k, cell_type), _topk_set(df_b, k, cell_type)
    return len(a & b) / len(a | b) if (a or b) else float("nan")


def stability(networks: dict, k: int = 1000) -> pd.DataFrame:
    """Pairwise top-``k`` Jaccard between networks (``{seed: df}``), per cell type."""
    names = list(networks)
    rows = []
    cts = set()
    for df in networks.values():
        cts |= set(_edges(df)["cell_type"])
    for ct in sorted(cts):
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                rows.append({"a": names[i], "b": names[j], "cell_type": ct, "k": k,
                             "jaccard": topk_jaccard(networks[names[i]], networks[names[j]], k, ct)})
    return pd.DataFrame(rows, columns=["a", "b", "cell_type", "k", "jaccard"])


# --------------------------------------------------------------------------------------------
# cell-type peak sets (e.g. ENCODE cell-type open chromatin / H3K27ac)
# --------------------------------------------------------------------------------------------
def peak_importance(pred_df: pd.DataFrame, *, reduce: str = "sum_abs") -> pd.DataFrame:
    """Per-peak importance in each cell type from a peak -> gene network.

    ``reduce``: ``"sum_abs"`` (sum of ``|weight|`` over the peak's genes), ``"max_abs"`` or
    ``"sum"`` (signed). Returns a peaks x cell types DataFrame.
    """
    d = _edges(pred_df)
    w = d["weight"].astype(float)
    if reduce == "sum_abs":
        d = d.assign(weight=w.abs())
        agg = "sum"
    elif reduce == "max_abs":
        d = d.assign(weight=w.abs())
        agg = "max"
    elif reduce == "sum":
        agg = "sum"
    else:
        raise OptionError(f"reduce must be 'sum_abs', 'max_abs' or 'sum', got {reduce!r}")
    return d.pivot_table(index="source", columns="cell_type", values="weight", aggfunc=agg, fill_value=0.0)


def peak_set_membership(peaks, peak_sets: dict, *, min_overlap: int = 1) -> pd.DataFrame:
    """Boolean peaks x sets table: does each peak overlap an interval of each set?

    Parameters
    ----------
    peaks
        Peak names (``chr1-100-200`` style), an ATAC AnnData/MuData or a ``chrom, start, end``
        DataFrame (see :func:`scdiffx_grn.grn.peaks_table`).
    peak_sets
        ``{name: intervals}`` with intervals a ``chrom, start, end`` DataFrame or the path of a
        BED file (gzipped or not).
    """
    from ..grn._genomic import peaks_table
    from ..grn._tf import overlap_intervals

    pk = peaks_table(peaks)
    out = pd.DataFrame(False, index=pk.index.astype(str), columns=list(peak_sets))
    for name, iv in peak_sets.items():
        if not isinstance(iv, pd.DataFrame):
            iv = pd.read_csv(iv, sep="\t", header=None, usecols=[0, 1, 2], names=["chrom", "start", "end"],
                             comment="#")
        missing = {"chrom", "start", "end"} - set(iv.columns)
        if missing:
            raise InputDataError(f"peak set {name!r} lacks columns {sorted(missing)}")
        iv = iv[["chrom", "start", "end"]].reset_index(drop=True)
        iv.index = iv.index.astype(str)
        ov = overlap_intervals(pk, iv, min_overlap=min_overlap)
        out.loc[pd.unique(ov["a"].astype(str)), name] = True
    return out


def peak_set_enrichment(importance: dict, membership: pd.DataFrame, mapping: dict) -> pd.DataFrame:
    """Do a network's cell-type peak importances point at that cell type's known regions?

    For every cell type ``c`` mapped to a peak set ``mapping[c]`` and every scored table
    (``importance = {method: peaks x cell types}``, e.g. from :func:`peak_importance` or an
    accessibility table), two rankings of the peaks are scored against membership in the
    matched set (AUROC, AUPRC ratio):

    - ``importance``: the peak's score in ``c``;
    - ``specificity``: the score in ``c`` minus the mean score over the other mapped cell types
      (what is particular to ``c``);
    - ``specificity_scaled``: the same after dividing each cell type's scores by their mean
      (removes a per-type scale, as :func:`scdiffx_grn.grn.type_specificity`).

    Peaks are those of ``membership`` (peaks absent from a table score 0).

    Returns
    -------
    DataFrame ``method, cell_type, peak_set, ranking, auroc, auprc_ratio, n_peaks, n_true``.
    """
    bad = sorted(set(mapping.values()) - set(membership.columns))
    if bad:
        raise InputDataError(f"mapping names peak sets not in the membership table: {_fmt_items(bad)}")
    rows = []
    for method, imp in importance.items():
        imp = imp.reindex(membership.index).fillna(0.0)
        cts = [c for c in mapping if c in imp.columns]
        if not cts:
            raise InputDataError(f"{method!r}: none of the mapped cell types {_fmt_items(list(mapping))} is scored "
                                 f"(has {_fmt_items(list(imp.columns))})")
        for c in cts:
            y = membership[mapping[c]].to_numpy(bool)
            others = [o for o in cts if o != c]
            score = imp[c].to_numpy(float)
            spec = score - (imp[others].to_numpy(float).mean(1) if others else 0.0)
            colmean = imp[cts].abs().mean(0).replace(0, 1.0)
            scaled = imp[cts] / colmean
            spec_s = scaled[c].to_numpy(float) - (scaled[others].to_numpy(float).mean(1) if others else 0.0)
            for ranking, sc in (("importance", score), ("specificity", spec), ("specificity_scaled", spec_s)):
                r = ranking_metrics(y, sc)
                rows.append({"method": method, "cell_type": c, "peak_set": mapping[c], "ranking": ranking,
                             "auroc": r["auroc"], "auprc_ratio": r["auprc_ratio"], "n_peaks": len(y),
                             "n_true": int(y.sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# predictive value on held-out cells (GRaNPA-style), no external truth
# --------------------------------------------------------------------------------------------
def heldout_cells(mdata, *, model=None, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of the held-out (test) cells of ``mdata``.

    With a ``model`` that stored its split (``model.setup["split"]["test_cells"]``), its test
    cells (so that networks of the model are scored on cells it never trained on); otherwise a
    seeded draw of ``test_fraction`` keyed by each cell's name (not its row position).
    """
    from ..grn._predictive import heldout_mask

    names = np.asarray(mdata.obs_names).astype(str)
    split = (getattr(model, "setup", None) or {}).get("split") if model is not None else None
    if isinstance(split, dict) and split.get("test_cells"):
        return np.isin(names, np.asarray(split["test_cells"]).astype(str))
    if model is not None:
        from .._settings import logger

        logger.info("grn_predictive: the model stored no test cells; using a seeded split by cell name")
    if not 0 < float(test_fraction) < 1:
        raise OptionError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return heldout_mask(names, test_fraction, seed)


def _select(d: pd.DataFrame, top_k: int | None, rank_by: str) -> pd.DataFrame:
    if top_k is None:
        return d
    if rank_by == "abs":
        key = d["weight"].abs()
    elif rank_by in d:
        key = d[rank_by].astype(float)
    else:
        raise OptionError(f"rank_by must be 'weight', 'abs' or a column of the network, got {rank_by!r}")
    return d.assign(_k=key.to_numpy()).sort_values("_k", ascending=False, kind="stable").head(int(top_k)).drop(
        columns="_k")


def grn_predictive(mdata, networks, *, model=None, groupby: str | None = "cell_type", groups=None,
                   top_k: int | None = None, rank_by: str = "weight", n_random: int = 20, alpha: float = 0.1,
                   test_fraction: float = 0.2, pool: int | None = 10, min_test_cells: int = 10,
                   min_effect: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """How well each network's edges predict held-out cells, against degree-preserving rewirings.

    GRaNPA-style validation (Kamal et al. 2023) on the user's own data, no reference network
    needed. Per network and group of cells: for every target gene, a ridge regression of its
    log-normalised expression on its sources (log-normalised accessibility of its linked peaks
    for a peak -> gene network, log-normalised expression of its TFs for a TF -> gene network;
    the kind is read from the source names) is fitted on the group's train cells and scored by
    R^2 on its test cells. The same is done for ``n_random`` rewirings of the network that keep
    every source's out-degree and every target's in-degree (same size, same targets, same number
    of predictors per target); the network beats them when its median R^2 is above theirs with
    empirical ``p < 0.05`` and by at least ``min_effect``.

    Parameters
    ----------
    mdata
        Paired MuData (raw counts; the layers the data were registered with).
    networks
        A network table, or ``{name: table or uns key}`` (tables of ``extract_grn`` /
        ``tf_gene_network`` / the ``eval.grn`` baselines; a group ``"all"`` applies to every
        group).
    model
        A trained model: its stored test cells are the held-out cells (else a seeded split of
        ``test_fraction`` by cell name, see :func:`heldout_cells`).
    groupby, groups
        Cell label column and the groups to score (``None``: those of the data; a network's own
        groups when it has them). ``groupby=None``: all cells form one group, and a per-group
        network enters with each edge's mean weight over its groups.
    top_k, rank_by
        Score only the ``top_k`` edges per group, ranked by ``"weight"`` (descending, signed: the
        distance baseline's ``-|distance|`` ranks near peaks first), ``"abs"`` (|weight|) or a
        column such as ``"specificity"``. ``None``: every edge of the table.
    n_random
        Rewired networks per network and group.
    alpha
        Ridge penalty on standardised predictors (times the number of train cells).
    pool
        Cells per pseudo-cell: within each group, train and test cells are pooled separately into
        metacells of about ``pool`` cells (k-means on a PCA of their RNA,
        :func:`scdiffx_grn.grn.group_metacell_profiles`: log1p CP10k of the pooled RNA counts,
        fraction of cells with the peak open), and the fits and R^2 are made on those. Single
        sparse cells carry little signal (on the mouse MOp data every network, and its
        rewirings, has a median single-cell R^2 of about 0). ``None``: single cells
        (log-normalised RNA and ATAC counts).
    min_test_cells
        Groups with fewer test (or train) cells, or pseudo-cells, are skipped.
    min_effect
        Smallest median-R^2 gain over the rewirings called a win.

    Returns
    -------
    DataFrame ``network, <group>, kind, n_edges, n_targets, n_train, n_test (cells or pseudo-cells), median_r2,
    random_median_r2, delta_r2, delta_r2_se, frac_targets_improved, p_random, beats_random`` (one
    row per network and group; ``delta_r2_se``: bootstrap standard error of the gain over the
    targets; ``frac_targets_improved``: targets whose R^2 beats their mean R^2 over the
    rewirings).
    """
    from .._registry import counts, labels, log_normalize
    from ..grn._network import group_column_for
    from ..grn._predictive import RidgeR2, codes, network_r2, summarise

    if isinstance(networks, pd.DataFrame):
        networks = {"network": networks}
    if not isinstance(networks, dict) or not networks:
        raise OptionError("networks must be a network table or a non-empty {name: table or uns key} dict")
    if isinstance(n_random, bool) or int(n_random) < 1:
        raise OptionError(f"n_random must be a positive integer, got {n_random!r}")
    if top_k is not None and int(top_k) < 1:
        raise OptionError(f"top_k must be a positive integer or None, got {top_k!r}")
    from ..grn._network import network_table

    nets = {str(k): _edges(network_table(mdata, v) if isinstance(v, str) else v) for k, v in networks.items()}
    test = heldout_cells(mdata, model=model, test_fraction=test_fraction, seed=seed)
    lab = labels(mdata, groupby).to_numpy()
    wanted = list(pd.unique(lab)) if groups is None else [str(g) for g in groups]
    genes = pd.Index(mdata.mod["rna"].var_names.astype(str))
    peaks = pd.Index(mdata.mod["atac"].var_names.astype(str))
    if pool is not None and (isinstance(pool, bool) or int(pool) < 1):
        raise OptionError(f"pool must be a positive integer (cells per pseudo-cell) or None, got {pool!r}")
    R_counts, A_counts = counts(mdata, "rna"), counts(mdata, "atac")
    cache: dict = {}

    def group_data(g):
        """(rna_train, rna_test, atac_train, atac_test) of group g: pooled profiles or log-normalised cells."""
        if g not in cache:
            cells = lab == g
            tr, te = np.flatnonzero(cells & ~test), np.flatnonzero(cells & test)
            if pool is None:
                rna, atac = log_normalize(R_counts), log_normalize(A_counts)
                cache[g] = (rna[tr], rna[te], atac[tr], atac[te])
            else:
                from ..grn._metacells import group_metacell_profiles

                parts = []
                for idx in (tr, te):
                    if len(idx) < 2 * int(pool):
                        parts.append((np.zeros((0, len(genes))), np.zeros((0, len(peaks)))))
                        continue
                    parts.append(group_metacell_profiles(R_counts[idx], A_counts[idx], len(idx) // int(pool),
                                                         min_cells=max(1, int(pool) // 2), seed=seed))
                cache[g] = (parts[0][0], parts[1][0], parts[0][1], parts[1][1])
        return cache[g]

    gcol = group_column_for(groupby)
    rows = []
    for name, d in nets.items():
        in_genes = float(np.mean(d["source"].isin(genes))) if len(d) else 0.0
        in_peaks = float(np.mean(d["source"].isin(peaks))) if len(d) else 0.0
        kind = "tf_gene" if in_genes > in_peaks else "peak_gene"
        feats = genes if kind == "tf_gene" else peaks
        own = set(d["cell_type"]) - {"all"}
        if groupby is None and own:
            # one group of all cells: a per-group network enters with each edge's mean weight over groups
            num = [c for c in ("weight", "specificity") if c in d]
            d = d.groupby(["source", "target"], sort=False, observed=True)[num].mean().reset_index()
            d["cell_type"], own = "all", set()
        for g in wanted:
            if own and g not in own:
                continue
            e = d[d["cell_type"] == g] if g in own else d[d["cell_type"] == "all"]
            e = _select(e, top_k, rank_by)
            s, t = codes(e["source"], feats), codes(e["target"], genes)
            ok = (s >= 0) & (t >= 0) & ~((kind == "tf_gene") & (s == t))
            e, s, t = e[ok], s[ok], t[ok]
            pair = pd.Series(s).astype(str) + ":" + pd.Series(t).astype(str)
            keep = ~pair.duplicated().to_numpy()
            s, t = s[keep], t[keep]
            if len(s) == 0 or not (lab == g).any():
                continue
            rtr, rte, atr, ate = group_data(g)
            xtr, xte = (rtr, rte) if kind == "tf_gene" else (atr, ate)
            base = {"network": name, gcol: g, "kind": kind, "n_edges": int(len(s)), "n_train": rtr.shape[0],
                    "n_test": rte.shape[0]}
            if rte.shape[0] < min_test_cells or rtr.shape[0] < min_test_cells:
                continue
            us, s_pos = np.unique(s, return_inverse=True)
            ut, t_pos = np.unique(t, return_inverse=True)

            def dense(M, cols):
                M = M[:, cols]
                return M.toarray() if hasattr(M, "toarray") else np.asarray(M)

            fit = RidgeR2(dense(xtr, us), dense(xte, us), dense(rtr, ut), dense(rte, ut), alpha=alpha)
            res = network_r2(fit, s_pos, t_pos, n_random=n_random, seed=seed)
            rows.append({**base, **summarise(res, min_effect=min_effect)})
    cols = ["network", gcol, "kind", "n_edges", "n_targets", "n_train", "n_test", "median_r2", "random_median_r2",
            "delta_r2", "delta_r2_se", "frac_targets_improved", "p_random", "beats_random"]
    if not rows:
        raise ScdxError(f"no network and group could be scored: each group needs >= min_test_cells="
                        f"{min_test_cells} train and test cells (pseudo-cells with pool={pool}) and edges on the "
                        "data's features")
    return pd.DataFrame(rows)[cols]
