"""Biomarker ranking: genes, peaks and TFs per cell type from several lines of evidence.

Components (each a column of the result; higher = stronger evidence):

``specificity``
    genes and TFs: Wilcoxon score of the group vs the rest on log-normalised RNA
    (``scanpy.tl.rank_genes_groups``), TFs not measured get NaN; peaks: two-proportion z-score of
    the fraction of cells with the peak open (binarised ATAC) in the group vs the rest, computed
    with one sparse product.
``importance``
    the model's evidence: from an extracted network (``grn_key``: ``source, target, weight`` with
    ``cell_type``, optional ``peak``) the TF out-strength, the gene in-strength and the peak strength
    (sums of ``|weight|`` in that cell type's network); or a given ``importance`` table.
``reference``
    agreement with a reference database: for each TF, ``-log10`` hypergeometric p-value of its
    reference targets among the group's top ``n_markers`` marker genes (universe: data genes);
    for a gene, the largest such score over the reference TFs regulating it; for a peak, the score
    of its linked gene (a var column such as ``linked_gene_GxR`` or ``gene``, or the GRN's peak->gene edges).
``activity`` (optional)
    the group-vs-rest statistic of the TF's decoupler activity stored by ``tl.regulator_activity``.

**Combined score** = mean of the per-component ranks (rank 1 = best within the group and feature
kind; missing values rank last; components with no values for a kind are left out). ``rank`` orders
features by the combined score (1 = top biomarker). Each component's rank is a ``rank_<component>``
column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, OptionError, _fmt_items
from .._registry import layer_matrix
from .._settings import logger
from .._store import GROUP_ALL, done, store, stored_table, target
from ._activity import resolve_net
from ._utils import (
    atac_of,
    de_table,
    group_labels,
    lognorm_adata,
    rna_of,
    stored_result,
)

__all__ = ["rank_biomarkers", "biomarker_df"]

_COMPONENTS = ("specificity", "importance", "reference", "activity")
_PEAK_GENE_COLS = ("linked_gene", "linked_gene_GxR", "gene", "gene_name", "nearest_gene")


def _hypergeom_scores(net: pd.DataFrame, genes: pd.Index, markers: dict[str, set], min_targets: int):
    """-log10 hypergeometric p of each TF's targets among each group's markers (groups x TFs)."""
    from scipy.stats import hypergeom

    n = net[net["target"].isin(genes)]
    sizes = n.groupby("source")["target"].nunique()
    tfs = sizes.index[sizes >= min_targets]
    n = n[n["source"].isin(tfs)].drop_duplicates(["source", "target"])
    if len(tfs) == 0:
        return pd.DataFrame(index=list(markers)), None, []
    ti = pd.Index(tfs)
    M = sp.csr_matrix((np.ones(len(n)), (ti.get_indexer(n["source"]), genes.get_indexer(n["target"]))),
                      shape=(len(ti), len(genes)))
    groups = list(markers)
    Mk = np.zeros((len(groups), len(genes)))
    for i, g in enumerate(groups):
        Mk[i, genes.get_indexer(list(markers[g]))] = 1
    overlap = np.asarray((M @ Mk.T))  # TFs x groups
    K = np.asarray(M.sum(1)).ravel()[:, None]
    nm = Mk.sum(1)[None, :]
    p = hypergeom.sf(overlap - 1, len(genes), K, nm)
    score = -np.log10(np.clip(p, 1e-300, 1.0))
    score[overlap == 0] = 0.0
    return pd.DataFrame(score.T, index=groups, columns=ti), M, list(ti)


_NET_ALIASES = {"source": ("source", "tf", "regulator", "regulon", "from"),
                "target": ("target", "gene", "target_gene", "targets", "to"),
                "weight": ("weight", "importance", "score", "mor", "coef", "coefficient", "likelihood"),
                "cell_type": ("cell_type", "celltype", "cell type", "group", "cluster")}


def model_network(net, name: str = "network") -> pd.DataFrame:
    """Check a model network table and bring it to columns ``source, target, weight[, cell_type]``.

    Common column names are mapped (case-insensitive): ``tf`` / ``regulator`` -> ``source``,
    ``gene`` / ``target_gene`` -> ``target``, ``importance`` / ``score`` / ``mor`` / ``coef`` ->
    ``weight``, ``celltype`` / ``group`` -> ``cell_type``.

    Raises
    ------
    InputDataError
        No source / target / weight column (naming the columns there are), or weights that are
        not numbers (naming examples).
    """
    net = pd.DataFrame(net)
    lower = {str(c).strip().lower(): c for c in net.columns}
    ren = {}
    for std, names in _NET_ALIASES.items():
        if std in net.columns:
            continue
        for a in names:
            if a in lower and lower[a] not in ren:
                ren[lower[a]] = std
                break
    net = net.rename(columns=ren)
    missing = [c for c in ("source", "target", "weight") if c not in net.columns]
    if missing:
        fix = (" Add a 'weight' column (e.g. 1 for every edge, to rank regulators by their number of targets)."
               if missing == ["weight"] else "")
        raise InputDataError(f"{name} has no {' / '.join(map(repr, missing))} column (columns: "
                             f"{_fmt_items(net.columns, 12) or 'none'}); a network needs source (TF), target (gene) "
                             f"and weight columns (also accepted: tf / gene / importance, score, mor).{fix}")
    w = pd.to_numeric(net["weight"], errors="coerce")
    bad = w.isna() & net["weight"].notna()
    if bad.any():
        raise InputDataError(f"{name}: {int(bad.sum())} of {len(net)} weights are not numbers, e.g. "
                             f"{_fmt_items(pd.unique(net.loc[bad, 'weight'].astype(str)), 3)}; weights must be numeric "
                             "(e.g. an importance, or 1 for every edge)")
    return net.assign(weight=w.fillna(0.0).astype(float))


def _model_grn(data, grn_key, groupby: str) -> pd.DataFrame:
    """The model network of ``grn_key`` (a DataFrame or an ``uns`` key) with its group column as ``cell_type``."""
    from ..grn._network import network_table

    if isinstance(grn_key, pd.DataFrame):
        net, name = pd.DataFrame(grn_key), "grn_key"
        if groupby in net.columns and groupby != "cell_type":
            net = net.drop(columns=[c for c in ("cell_type",) if c in net.columns]).rename(columns={groupby: "cell_type"})
    elif isinstance(grn_key, str):
        stored_table(data, grn_key, "network", what="network", hint="tl.extract_grn(..., key_added=...)")  # clear error
        net, name = data, f"uns[{grn_key!r}]"
    else:
        raise OptionError(f"grn_key must be a DataFrame or an uns key (str), got {type(grn_key).__name__}")
    # the stored group column (named after the extraction's groupby, or 'group') read as cell_type
    net = pd.DataFrame(network_table(net, grn_key if isinstance(grn_key, str) else "grn", group="cell_type"))
    net = model_network(net, name)
    if "cell_type" in net.columns and (net["cell_type"].astype(str) == GROUP_ALL).all():
        net = net.drop(columns="cell_type")  # one network for all cells: the same for every group
    return net


def _strength(net, col, groups):
    """Per-group sum of |weight| per value of ``col`` (dict group -> Series)."""
    if net is None or col not in net.columns:
        return None
    w = net.assign(_aw=pd.to_numeric(net["weight"], errors="coerce").abs().fillna(0.0))
    out = {}
    for g in groups:
        sub = w[w["cell_type"].astype(str) == g] if "cell_type" in w.columns else w
        out[g] = sub.groupby(sub[col].astype(str))["_aw"].sum()
    return out


def _importance_table(importance, groups, kind, groupby: str = "cell_type"):
    if importance is None:
        return None
    if groupby != "cell_type" and groupby in importance.columns:
        importance = importance.drop(columns=[c for c in ("cell_type",) if c in importance.columns])
        importance = importance.rename(columns={groupby: "cell_type"})
    imp = importance.rename(columns={"gene": "feature", "TF": "feature", "source": "feature", "score": "importance"})
    if not {"feature", "importance"} <= set(imp.columns):
        raise InputDataError(f"importance table needs columns feature, importance; has {list(importance.columns)}")
    if "kind" in imp.columns:
        imp = imp[imp["kind"] == kind]
    out = {}
    for g in groups:
        sub = imp[imp["cell_type"].astype(str) == g] if "cell_type" in imp.columns else imp
        out[g] = sub.groupby(sub["feature"].astype(str))["importance"].max()
    return out


def _peak_specificity(atac, labels: pd.Series, groups, layer):
    X = layer_matrix(atac, layer, what="the ATAC modality")
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    B = sp.csr_matrix(X) if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    B = B.copy()
    B.data = (B.data > 0).astype(np.float32)
    B.eliminate_zeros()
    lab = labels.to_numpy()
    codes = pd.Index(groups).get_indexer(lab)
    keep = codes >= 0
    G = sp.csr_matrix((np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))), shape=(len(groups), len(lab)))
    C = np.asarray((G @ B).todense())  # groups x peaks, cells open
    ng = np.asarray(G.sum(1)).ravel()[:, None]
    N = ng.sum()
    tot = C.sum(0)[None, :]
    p1 = C / ng
    p0 = (tot - C) / np.maximum(N - ng, 1)
    pp = tot / N
    se = np.sqrt(pp * (1 - pp) * (1 / ng + 1 / np.maximum(N - ng, 1)))
    z = np.where(se > 0, (p1 - p0) / np.where(se > 0, se, 1), 0.0)
    lfc = np.log2((p1 + 1e-3) / (p0 + 1e-3))
    return z, lfc, p1


def _combine(df: pd.DataFrame) -> pd.DataFrame:
    used = []
    for c in _COMPONENTS:
        if c in df.columns and df[c].notna().any():
            df[f"rank_{c}"] = df[c].rank(ascending=False, method="average", na_option="bottom")
            used.append(f"rank_{c}")
        else:
            df[f"rank_{c}"] = np.nan
    if not used:
        df["combined_score"] = np.nan
    else:
        df["combined_score"] = df[used].mean(axis=1)
    df["rank"] = df["combined_score"].rank(ascending=True, method="first").astype(int)
    df["components"] = ",".join(u[5:] for u in used)
    return df


def rank_biomarkers(mdata, groupby: str = "cell_type", *, grn_key=None, importance: pd.DataFrame | None = None,
                    reference="dorothea", organism: str = "mouse", n_markers: int = 100, min_targets: int = 3,
                    activity_key: str | None = None, peaks: bool = True, peak_top: int | None = 1000,
                    layer: str | None = None, atac_layer: str | None = None, key_added: str = "biomarkers",
                    copy: bool = False):
    """Rank genes, peaks and TFs per cell type by specificity, model importance and reference agreement.

    Parameters
    ----------
    mdata
        MuData (``rna`` and optional ``atac``) or AnnData (RNA only).
    groupby
        Cell-type column.
    grn_key
        An extracted network (DataFrame ``source, target, weight[, <group>, peak]``) or the ``uns``
        key holding one (``uns[grn_key]["network"]`` as stored by ``tl.extract_grn``, whose group
        column is named in its ``params``);
        gives the ``importance`` component. The group column of a DataFrame is ``groupby`` when
        present, else ``cell_type`` (or an alias); a network whose groups are all ``"all"`` (or
        without a group column) applies to every group.
    importance
        Alternative importance table ``feature, importance[, <groupby> or cell_type, kind]``.
    reference
        Reference network name (``"dorothea"``, ``"collectri"``, ``"trrust"``), a DataFrame, or None.
    organism
        For named references.
    n_markers
        Size of each group's marker list (top Wilcoxon genes with positive log fold change) used for
        the hypergeometric reference agreement.
    min_targets
        Minimum reference targets among the data genes for a TF to be tested.
    activity_key
        ``uns`` key of a ``tl.regulator_activity`` result to add the ``activity`` component for TFs.
    peaks
        Rank peaks when the data has an ``atac`` modality.
    peak_top
        Keep this many most specific peaks per group (None: all).
    layer, atac_layer
        Layers with RNA expression / ATAC counts (default ``None``: ``X``); a missing layer raises.
    key_added
        ``uns[key_added] = {"params": {...}, "biomarkers": <tidy table>}``.
    copy
        Return a modified copy and leave ``mdata`` untouched (else write into ``mdata`` and return None).

    Returns
    -------
    None, or the modified copy when ``copy=True``. The tidy table (read it with
    :func:`biomarker_df`): ``<groupby>, kind (gene|tf|peak), feature, specificity, logfc, padj,
    importance, reference, activity, rank_specificity, rank_importance, rank_reference,
    rank_activity, combined_score, rank, components``. See the module docstring for the definitions.
    """
    from .._validate import check_count

    check_count("n_markers", n_markers, 1)
    check_count("min_targets", min_targets, 1)
    params = {"groupby": groupby, "grn_key": grn_key if isinstance(grn_key, str) or grn_key is None else "<DataFrame>",
              "importance": None if importance is None else "<DataFrame>",
              "reference": reference if isinstance(reference, str) or reference is None else "<DataFrame>",
              "organism": organism, "n_markers": n_markers, "min_targets": min_targets, "activity_key": activity_key,
              "peaks": peaks, "peak_top": peak_top, "layer": layer, "atac_layer": atac_layer}
    mdata = target(mdata, copy)
    rna = rna_of(mdata)
    ln = lognorm_adata(mdata, layer)
    ln.obs[groupby] = group_labels(mdata, groupby, rna).to_numpy()
    de = de_table(ln, groupby)
    groups = sorted(de["group"].unique())
    genes = ln.var_names.astype(str)

    # model network / importance
    net = None
    if grn_key is not None:
        net = _model_grn(mdata, grn_key, groupby)
    # reference agreement
    markers = {g: set(t[t["logfc"] > 0].nsmallest(n_markers, "de_rank")["gene"]) for g, t in de.groupby("group")}
    ref_scores, M, ref_tfs = (pd.DataFrame(index=groups), None, [])
    if reference is not None:
        ref = resolve_net(reference, organism).rename(columns={"TF": "source"})
        ref_scores, M, ref_tfs = _hypergeom_scores(ref, pd.Index(genes), markers, min_targets)
        if not ref_tfs:
            logger.warning("rank_biomarkers: no reference TF has >= %d targets among the data genes", min_targets)
    act = None
    if activity_key is not None:
        act = stored_result(mdata, activity_key, ("activity",), what="regulator table",
                            hint=f"tl.regulator_activity(..., key_added={activity_key!r})")
        act = pd.DataFrame(act)
        act = act.rename(columns={act.columns[0]: "group"})
    tf_out = _strength(net, "source", groups)
    gene_in = _strength(net, "target", groups)
    peak_in = _strength(net, "peak", groups) if net is not None and "peak" in net.columns else None
    imp_gene, imp_tf, imp_peak = (_importance_table(importance, groups, k, groupby) for k in ("gene", "tf", "peak"))

    tfs = sorted(set(ref_tfs) | (set(net["source"].astype(str)) if net is not None else set()))
    rows = []
    gene_ref: dict[str, pd.Series] = {}
    de_idx = de.set_index(["group", "gene"])
    for g in groups:
        d = de_idx.loc[g]
        # genes
        gdf = pd.DataFrame({"feature": d.index.astype(str), "specificity": d["score"].to_numpy(),
                            "logfc": d["logfc"].to_numpy(), "padj": d["padj"].to_numpy()})
        gdf["importance"] = np.nan
        if gene_in is not None:
            gdf["importance"] = gdf["feature"].map(gene_in[g]).fillna(0.0)
        if imp_gene is not None:
            gdf["importance"] = gdf["feature"].map(imp_gene[g]).fillna(0.0)
        gdf["reference"] = np.nan
        if M is not None:
            s = ref_scores.loc[g].to_numpy()
            best = np.asarray(M.multiply(s[:, None]).max(axis=0).todense()).ravel()
            gdf["reference"] = pd.Series(best, index=genes).reindex(gdf["feature"]).to_numpy()
        gdf["activity"] = np.nan
        gdf.insert(0, "kind", "gene")
        gene_ref[g] = gdf.set_index("feature")["reference"]
        rows.append(_combine(gdf).assign(**{groupby: g}))
        # TFs
        if tfs:
            tdf = pd.DataFrame({"feature": tfs})
            tdf["specificity"] = tdf["feature"].map(d["score"])
            tdf["logfc"] = tdf["feature"].map(d["logfc"])
            tdf["padj"] = tdf["feature"].map(d["padj"])
            tdf["importance"] = np.nan
            if tf_out is not None:
                tdf["importance"] = tdf["feature"].map(tf_out[g]).fillna(0.0)
            if imp_tf is not None:
                tdf["importance"] = tdf["feature"].map(imp_tf[g]).fillna(0.0)
            tdf["reference"] = tdf["feature"].map(ref_scores.loc[g]).fillna(0.0) if ref_tfs else np.nan
            tdf["activity"] = np.nan
            if act is not None:
                a = act[act["group"].astype(str) == g].set_index("source")["stat"]
                tdf["activity"] = tdf["feature"].map(a)
            tdf.insert(0, "kind", "tf")
            rows.append(_combine(tdf).assign(**{groupby: g}))

    atac = atac_of(mdata) if peaks else None
    if atac is not None:
        labels = group_labels(mdata, groupby, atac)
        z, lfc, _ = _peak_specificity(atac, labels, groups, atac_layer)
        pnames = atac.var_names.astype(str)
        link_col = next((c for c in _PEAK_GENE_COLS if c in atac.var.columns), None)
        link = atac.var[link_col].astype(str).to_numpy() if link_col else None
        if link is None and net is not None and "peak" in net.columns:
            pl = net.drop_duplicates("peak").set_index(net.drop_duplicates("peak")["peak"].astype(str))["target"]
            link = pl.reindex(pnames).astype(str).to_numpy()
        for i, g in enumerate(groups):
            sel = np.arange(len(pnames))
            if peak_top is not None and peak_top < len(pnames):
                sel = np.argpartition(-z[i], peak_top)[:peak_top]
            pdf = pd.DataFrame({"kind": "peak", "feature": pnames[sel], "specificity": z[i, sel],
                                "logfc": lfc[i, sel], "padj": np.nan})
            pdf["importance"] = np.nan
            if peak_in is not None:
                pdf["importance"] = pdf["feature"].map(peak_in[g]).fillna(0.0)
            if imp_peak is not None:
                pdf["importance"] = pdf["feature"].map(imp_peak[g]).fillna(0.0)
            pdf["reference"] = np.nan
            if link is not None and M is not None:
                gmap = gene_ref[g]
                pdf["reference"] = pd.Series(link[sel]).map(gmap).fillna(0.0).to_numpy()
            pdf["activity"] = np.nan
            rows.append(_combine(pdf).assign(**{groupby: g}))
    cols = [groupby, "kind", "feature", "specificity", "logfc", "padj", "importance", "reference", "activity",
            *(f"rank_{c}" for c in _COMPONENTS), "combined_score", "rank", "components"]
    table = pd.concat(rows, ignore_index=True)[cols]
    table = table.sort_values([groupby, "kind", "rank"]).reset_index(drop=True)
    store(mdata, key_added, {"biomarkers": table}, params)
    return done(mdata, copy)


def biomarker_df(mdata, key: str = "biomarkers", *, cell_type: str | None = None, kind: str | None = "gene",
                 top_k: int | None = None) -> pd.DataFrame:
    """Tidy biomarker table stored by :func:`rank_biomarkers`.

    Parameters
    ----------
    mdata
        AnnData / MuData with ``uns[key]``, or the table.
    key
        ``key_added`` of :func:`rank_biomarkers`.
    cell_type
        Keep one group.
    kind
        ``"gene"``, ``"peak"``, ``"tf"`` or None (all kinds).
    top_k
        Keep the ``top_k`` best-ranked features per group and kind.
    """
    df = stored_result(mdata, key, ("biomarkers",), what="biomarker table",
                       hint=f"tl.rank_biomarkers(..., key_added={key!r})")
    df = pd.DataFrame(df).copy()
    gcol = df.columns[0]
    if kind is not None:
        if kind not in ("gene", "peak", "tf"):
            raise OptionError(f"kind must be 'gene', 'peak', 'tf' or None, got {kind!r}")
        if not (df["kind"] == kind).any():
            raise InputDataError(f"no features of kind {kind!r} in the table (kinds: {sorted(df['kind'].unique())})")
        df = df[df["kind"] == kind]
    if cell_type is not None:
        if str(cell_type) not in set(df[gcol].astype(str)):
            raise OptionError(f"group {cell_type!r} not in the table; has {_fmt_items(df[gcol].unique())}")
        df = df[df[gcol].astype(str) == str(cell_type)]
    df = df.sort_values([gcol, "kind", "rank"])
    if top_k is not None:
        df = df[df["rank"] <= top_k]
    return df.reset_index(drop=True)
