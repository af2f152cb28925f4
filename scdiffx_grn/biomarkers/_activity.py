"""Regulator (TF) activity with decoupler 2.2 and comparison of networks."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .._errors import InputDataError, OptionError, _fmt_items
from .._registry import is_counts, layer_matrix, log_normalize
from .._settings import logger
from .._store import done, store, target
from ._refs import reference_network
from ._utils import bh, group_labels, lognorm_adata, prepare_net, rna_of, stored_result

__all__ = ["regulator_activity", "regulator_df", "compare_networks", "resolve_net", "summarise_activity"]

_METHODS = ("ulm", "mlm", "viper", "zscore", "aucell", "waggr", "gsva", "ora", "gsea", "udt", "mdt")


def resolve_net(net, organism: str = "mouse", *, levels: str = "ABC") -> pd.DataFrame:
    """A network given as a reference name (``"collectri"``, ``"dorothea"``, ``"trrust"``) or DataFrame."""
    if isinstance(net, pd.DataFrame):
        return net
    if isinstance(net, str):
        return reference_network(net, organism, levels=levels)
    raise OptionError(f"network must be a reference name or a DataFrame, got {type(net).__name__}")


def _run_method(ln, net: pd.DataFrame, method: str, tmin: int, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    import decoupler as dc

    if method not in _METHODS or not hasattr(dc.mt, method):
        raise OptionError(f"unknown decoupler method {method!r}; choose one of {_METHODS}")
    if method == "waggr":
        kwargs.setdefault("times", 100)
    fn = getattr(dc.mt, method)
    a = ln.copy()
    fn(a, net, tmin=tmin, **kwargs)
    score = a.obsm[f"score_{method}"]
    padj = a.obsm.get(f"padj_{method}")
    score = pd.DataFrame(np.asarray(score, dtype=float), index=a.obs_names,
                         columns=getattr(score, "columns", None))
    if padj is not None:
        padj = pd.DataFrame(np.asarray(padj, dtype=float), index=a.obs_names, columns=score.columns)
    else:
        padj = pd.DataFrame(np.nan, index=a.obs_names, columns=score.columns)
    return score, padj


def summarise_activity(score: pd.DataFrame, padj: pd.DataFrame | None, labels: pd.Series,
                       group_col: str = "cell_type") -> pd.DataFrame:
    """Tidy per-group table of activities (one row per group and regulator).

    Columns: ``<group_col>, source, score`` (mean activity in the group), ``stat`` (Welch t of the
    group's activities vs all other observations; when every group has a single observation, e.g.
    one pseudobulk per cell type, the z-score of the group's activity across groups), ``pvalue``,
    ``padj`` (BH within the group; for single observations decoupler's own adjusted p-value),
    ``n_obs`` and ``rank`` (1 = most specifically active regulator of the group, by ``stat``).
    """
    from scipy import stats

    labels = labels.reindex(score.index).astype(str)
    groups = sorted(labels.unique())
    S = score.to_numpy(dtype=float)
    rows = []
    sizes = labels.value_counts()
    single = bool((sizes < 2).all())
    for g in groups:
        m = (labels == g).to_numpy()
        n1, n2 = int(m.sum()), int((~m).sum())
        a, b = S[m], S[~m]
        mean1 = np.nanmean(a, axis=0)
        if single or n1 < 2 or n2 < 2:
            mu, sd = np.nanmean(S, axis=0), np.nanstd(S, axis=0)
            stat = (mean1 - mu) / np.where(sd > 0, sd, np.nan)
            if padj is not None and n1 == 1:
                p = padj.to_numpy(dtype=float)[m][0]
            else:
                p = np.full(S.shape[1], np.nan)
            q = p
        else:
            v1, v2 = np.nanvar(a, axis=0, ddof=1), np.nanvar(b, axis=0, ddof=1)
            mean2 = np.nanmean(b, axis=0)
            se2 = v1 / n1 + v2 / n2
            se = np.sqrt(np.where(se2 > 0, se2, np.nan))
            stat = (mean1 - mean2) / se
            df = se2**2 / ((v1 / n1) ** 2 / max(n1 - 1, 1) + (v2 / n2) ** 2 / max(n2 - 1, 1) + 1e-300)
            p = 2 * stats.t.sf(np.abs(stat), df)
            q = bh(p)
        rows.append(pd.DataFrame({group_col: g, "source": score.columns.astype(str), "score": mean1,
                                  "stat": stat, "pvalue": p, "padj": q, "n_obs": n1}))
    out = pd.concat(rows, ignore_index=True)
    out["rank"] = (out.groupby(group_col)["stat"].rank(ascending=False, method="first", na_option="bottom")
                   .astype(int))
    return out.sort_values([group_col, "rank"]).reset_index(drop=True)


def _pseudobulk(ln_counts, ln, by, groupby: str | None):
    """Pseudobulk profiles (log-normalised) and their group labels."""
    import anndata as ad
    import scipy.sparse as sp

    cols = [by] if isinstance(by, str) else list(by)
    for c in cols:
        if c not in ln.obs:
            raise InputDataError(f"pseudobulk column {c!r} not in obs; available: {_fmt_items(ln.obs.columns)}")
    key = ln.obs[cols].astype(str).agg("|".join, axis=1)
    codes, uniq = pd.factorize(key, sort=True)
    G = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes)))
    if ln_counts is not None:
        X = np.asarray((G @ ln_counts).todense() if sp.issparse(ln_counts) else G @ ln_counts, dtype=float)
        X = log_normalize(X)
    else:  # already log-normalised input (translated / generated): mean of the log values
        n = np.asarray(G.sum(1)).ravel()[:, None]
        X = np.asarray((G @ ln.X).todense() if sp.issparse(ln.X) else G @ ln.X, dtype=float) / n
    obs = pd.DataFrame(index=pd.Index(uniq, name="pseudobulk"))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    for c in set(cols) | ({groupby} if groupby else set()):
        obs[c] = ln.obs[c].astype(str).to_numpy()[first]
    obs["n_cells"] = np.bincount(codes)
    return ad.AnnData(X=X.astype(np.float32), obs=obs, var=pd.DataFrame(index=ln.var_names))


def regulator_activity(data, net=None, *, method: str = "ulm", source=None, organism: str = "mouse",
                       tmin: int = 5, groupby: str | None = "cell_type", pseudobulk_by=None,
                       net_cell_type: str | None = None, levels: str = "ABC", key_added: str = "regulators",
                       layer: str | None = None, copy: bool = False, **method_kwargs):
    """Infer transcription-factor activity with decoupler 2.2.

    Works on any cells with expression: real data, generated cells, translated RNA
    (``model.translate`` output) or perturbed cells. Counts (non-negative whole numbers, in
    ``layer`` or ``X``) are log-normalised first; other values are used as log-normalised expression.

    Parameters
    ----------
    data
        AnnData or MuData (its ``"rna"`` modality is used).
    net
        Network: a reference name (``"collectri"``, ``"dorothea"``, ``"trrust"``) or a DataFrame
        with ``source, target, weight`` (``TF, target, importance`` is accepted). An extracted GRN
        with a group column (named after ``groupby``, or ``cell_type``) is averaged over groups
        unless ``net_cell_type`` selects one.
    method
        decoupler method name (``dc.mt.<method>``): ``"ulm"`` (default), ``"mlm"``, ``"viper"``, ...
    source
        Alias of ``net`` (give one of them). Default ``"collectri"``.
    organism
        ``"mouse"`` or ``"human"`` for named references.
    tmin
        Minimum number of targets of a TF among the data genes.
    groupby
        Label used for the tidy per-group table (None: no table); looked up with
        :func:`scdiffx_grn._registry.labels` (a missing column raises).
    pseudobulk_by
        None: per-cell activities. A label (or list of labels, e.g. ``["sample", "cell_type"]``):
        activities of pseudobulk profiles (summed counts when ``layer`` / ``X`` holds counts, else
        the mean log expression), for comparisons between conditions.
    net_cell_type
        Use only this group's edges of a network with a group column.
    levels
        DoRothEA confidence levels.
    key_added
        Per-cell scores go to ``obsm[f"{key_added}_score"]`` / ``obsm[f"{key_added}_padj"]`` (of the
        RNA modality, and of the MuData when it has the same cells); ``uns[key_added]`` holds
        ``{"params": {...}, "activity": <tidy table, when groupby>, "pseudobulk": <pseudobulk
        obs and scores, when pseudobulk_by>}``.
    layer
        Layer holding the expression (default ``None``: ``X``); a missing layer raises.
    copy
        Return a modified copy and leave ``data`` untouched (else write into ``data`` and return None).
    **method_kwargs
        Passed to the decoupler method (e.g. ``times=0`` for waggr).

    Returns
    -------
    None, or the modified copy when ``copy=True``. Read the table with :func:`regulator_df`.
    """
    if net is not None and source is not None:
        raise OptionError("give the network either as `net` or as `source`, not both")
    net = source if net is None else net
    net = "collectri" if net is None else net
    name = net if isinstance(net, str) else "custom"
    data = target(data, copy)
    rna = rna_of(data)
    ln = lognorm_adata(data, layer)
    if groupby is not None:
        ln.obs[groupby] = group_labels(data, groupby, rna).to_numpy()
    full = resolve_net(net, organism, levels=levels)
    gcol = groupby if groupby is not None and groupby in full.columns else "cell_type"
    n = prepare_net(full, ln.var_names, tmin=tmin, cell_type=net_cell_type, what=f"network {name!r}",
                    group_col=gcol)
    logger.info("regulator_activity: %d regulators, %d edges in data genes", n["source"].nunique(), len(n))
    params = {"method": method, "net": name, "tmin": tmin, "groupby": groupby, "pseudobulk_by": pseudobulk_by,
              "organism": organism, "net_cell_type": net_cell_type, "levels": levels, "layer": layer,
              **method_kwargs}
    tables = {}
    if pseudobulk_by is not None:
        for c in [pseudobulk_by] if isinstance(pseudobulk_by, str) else list(pseudobulk_by):
            ln.obs[c] = group_labels(data, c, rna).to_numpy()
        X = layer_matrix(rna, layer, what="the RNA modality")
        pb = _pseudobulk(X if is_counts(X) else None, ln, pseudobulk_by, groupby)
        score, padj = _run_method(pb, n, method, tmin, **method_kwargs)
        tables["pseudobulk"] = pd.concat([pb.obs, score.add_prefix("score:"), padj.add_prefix("padj:")], axis=1)
        labels = pb.obs[groupby] if groupby else None
    else:
        score, padj = _run_method(ln, n, method, tmin, **method_kwargs)
        rna.obsm[f"{key_added}_score"] = score.set_axis(rna.obs_names)
        rna.obsm[f"{key_added}_padj"] = padj.set_axis(rna.obs_names)
        if hasattr(data, "mod") and data.n_obs == rna.n_obs and (data.obs_names == rna.obs_names).all():
            data.obsm[f"{key_added}_score"] = score.set_axis(data.obs_names)
            data.obsm[f"{key_added}_padj"] = padj.set_axis(data.obs_names)
        labels = ln.obs[groupby] if groupby else None
    if groupby is not None:
        table = summarise_activity(score, padj, labels, group_col=groupby)
        table.insert(2, "network", name)
        table.insert(3, "method", method)
        tables["activity"] = table
    store(data, key_added, tables, params)
    return done(data, copy)


def regulator_df(data, key: str = "regulators", *, cell_type: str | None = None, top_k: int | None = None,
                 padj: float | None = None) -> pd.DataFrame:
    """Tidy regulator table stored by :func:`regulator_activity`.

    Parameters
    ----------
    data
        AnnData / MuData holding ``uns[key]``, or the table itself.
    key
        ``key_added`` used in :func:`regulator_activity`.
    cell_type
        Keep one group.
    top_k
        Keep the ``top_k`` best-ranked regulators per group.
    padj
        Keep rows with ``padj`` below this threshold.

    Returns
    -------
    DataFrame ``<groupby>, source, network, method, score, stat, pvalue, padj, n_obs, rank`` (copy).
    """
    df = stored_result(data, key, ("activity",), what="regulator table",
                       hint=f"tl.regulator_activity(..., key_added={key!r})")
    df = pd.DataFrame(df).copy()
    gcol = df.columns[0]
    if cell_type is not None:
        if str(cell_type) not in set(df[gcol].astype(str)):
            raise OptionError(f"group {cell_type!r} not in the table; has {_fmt_items(df[gcol].unique())}")
        df = df[df[gcol].astype(str) == str(cell_type)]
    if padj is not None:
        df = df[df["padj"] < padj]
    if top_k is not None:
        df = df.sort_values([gcol, "rank"]).groupby(gcol, sort=False).head(top_k)
    return df.reset_index(drop=True)


def compare_networks(data, nets: dict, groupby: str = "cell_type", *, method: str = "ulm",
                     organism: str = "mouse", tmin: int = 5, truth: pd.DataFrame | None = None,
                     ks=(5, 10), layer: str | None = None, split: bool = True, seed: int = 0,
                     **method_kwargs) -> dict[str, pd.DataFrame]:
    """Compare TF activities inferred with several networks on the same cells.

    Parameters
    ----------
    data
        AnnData / MuData with expression and ``obs[groupby]``.
    nets
        ``{name: network}``, each a DataFrame or a reference name (e.g. ``{"extracted": grn_df,
        "collectri": "collectri", "dorothea": "dorothea"}``).
    groupby
        Cell-type column.
    method, tmin, organism, layer
        As in :func:`regulator_activity`.
    truth
        Table ``<groupby>, tf`` of known cell-type regulators. Default: data-derived truth from
        :func:`scdiffx_grn.biomarkers.marker_tf_truth` (TFs that are top differentially expressed
        markers of the cell type), computed on a held-out half of the cells when ``split``.
    ks
        Cut-offs for precision@k.
    split
        Derive the truth from one random half of the cells (stratified by group) and the
        activities from the other half, so the evaluation is not scored on the cells that define it.
    seed
        Seed of the split.

    Returns
    -------
    dict with ``"activity"`` (tidy per-network tables), ``"agreement"`` (per group and pair of
    networks: number of shared TFs, Spearman correlation of the group-vs-rest statistics and of the
    mean activities over shared TFs) and ``"recovery"`` (per network and group: AUROC and
    precision@k of the regulator ranking against the truth, over the TFs measured in the data; see
    ``evaluate_regulator_ranking``).
    """
    from scipy import stats

    from ..datasets import tf_list
    from ._eval import evaluate_regulator_ranking, marker_tf_truth, split_cells

    if not nets:
        raise OptionError("nets is empty; give at least one network")
    ln = lognorm_adata(data, layer)
    ln.obs[groupby] = group_labels(data, groupby).to_numpy()
    resolved = {k: resolve_net(v, organism) for k, v in nets.items()}
    if split:
        a_idx, b_idx = split_cells(ln.obs[groupby], seed=seed)
        ln_truth, ln_act = ln[a_idx].copy(), ln[b_idx].copy()
    else:
        ln_truth = ln_act = ln
    if truth is None:
        # candidate regulators: every source of the compared networks
        union = pd.concat([n.rename(columns={"TF": "source"})[["source", "target"]] for n in resolved.values()],
                          ignore_index=True)
        truth = marker_tf_truth(ln_truth, groupby, tf_list(network=union, order="name"))
    acts = []
    for name, n in resolved.items():
        pn = prepare_net(n, ln_act.var_names, tmin=tmin, what=f"network {name!r}")
        score, padj = _run_method(ln_act, pn, method, tmin, **method_kwargs)
        t = summarise_activity(score, padj, ln_act.obs[groupby], group_col=groupby)
        t.insert(2, "network", name)
        t.insert(3, "method", method)
        acts.append(t)
    activity = pd.concat(acts, ignore_index=True)
    rows = []
    for (na, ta), (nb, tb) in itertools.combinations([(t["network"].iat[0], t) for t in acts], 2):
        for g in sorted(set(ta[groupby]) & set(tb[groupby])):
            x = ta[ta[groupby] == g].set_index("source")
            y = tb[tb[groupby] == g].set_index("source")
            shared = x.index.intersection(y.index)
            rs = rm = np.nan
            if len(shared) >= 3:
                rs = stats.spearmanr(x.loc[shared, "stat"], y.loc[shared, "stat"], nan_policy="omit")[0]
                rm = stats.spearmanr(x.loc[shared, "score"], y.loc[shared, "score"], nan_policy="omit")[0]
            rows.append({groupby: g, "network_a": na, "network_b": nb, "n_shared_tfs": len(shared),
                         "spearman_stat": rs, "spearman_score": rm})
    agreement = pd.DataFrame(rows, columns=[groupby, "network_a", "network_b", "n_shared_tfs",
                                            "spearman_stat", "spearman_score"])
    rec = []
    for t in acts:
        ev = evaluate_regulator_ranking(t, truth, groupby=groupby, ks=ks, score_col="stat",
                                        feature_col="source", candidates=ln.var_names)
        ev.insert(0, "network", t["network"].iat[0])
        rec.append(ev)
    recovery = pd.concat(rec, ignore_index=True)
    return {"activity": activity, "agreement": agreement, "recovery": recovery, "truth": truth}
