"""pySCENIC path: GRNBoost2 co-expression networks, regulons and AUCell scores.

``arboreto.algo.grnboost2`` does not run on dask >= 2024.3 (arboreto issues 38/42, fixed upstream
but never released), so :func:`grnboost2` calls arboreto's own per-target function
(``arboreto.core.infer_partial_network`` on the ``to_tf_matrix`` predictors) in a loop or a
process pool; each target is fitted with the same regressor settings (``SGBM_KWARGS``) and seed
as in arboreto's dask graph.

cisTarget ranking databases (motif enrichment used by ``pyscenic ctx`` to prune co-expression
modules) are large downloads and are not available offline. In this package the motif and peak
evidence of the extracted GRN (``scdiffx_grn.grn``: TF motifs in peaks linked to genes) replaces
ctx pruning: build regulons from the pruned/extracted network with :func:`regulons_from_network`
and score them with :func:`aucell`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputDataError, UnknownFeatureError, _fmt_items
from .._settings import logger, progress
from .._store import done, store, target
from ._compat import (
    import_arboreto,
    import_ctxcore_genesig,
    import_pyscenic,
    pyscenic_env,
)
from ._utils import lognorm_adata, rna_of

__all__ = ["grnboost2", "regulons_from_network", "check_regulons", "aucell"]


def _fit_targets(args):
    tf_matrix, tf_names, targets, expr, seed, kwargs, window = args
    core = import_arboreto("core")
    out = []
    with pyscenic_env():  # also in worker processes
        for j, name in enumerate(targets):
            links = core.infer_partial_network("GBM", kwargs, tf_matrix, tf_names, name,
                                               expr[:, j], include_meta=False,
                                               early_stop_window_length=window, seed=seed)
            out.append(links)
    return out


def grnboost2(data, tf_names=None, *, organism: str = "mouse", seed: int = 0, n_workers: int = 1, genes=None,
              layer: str | None = None, regressor_kwargs: dict | None = None, early_stop_window_length: int = 25,
              key_added: str = "grnboost2", copy: bool = False):
    """GRNBoost2 (arboreto) TF -> target co-expression network.

    Parameters
    ----------
    data
        AnnData / MuData; counts are log-normalised first (as in the pySCENIC tutorial).
    tf_names
        Candidate regulators; those not among the data genes are dropped (error if none remain).
        ``None``: the TFs of :func:`scdiffx_grn.datasets.tf_list` among the data genes
        (CollecTRI, ``organism``).
    organism
        For ``tf_names=None``.
    seed
        Seed of every per-target gradient boosting model (the same for all targets, as in arboreto).
    n_workers
        1: a plain loop; > 1: a process pool over chunks of targets.
    genes
        Target genes (default all genes).
    layer
        Layer holding expression (default ``X``).
    regressor_kwargs
        Override ``arboreto.core.SGBM_KWARGS`` (e.g. fewer ``n_estimators`` for a quick run).
    early_stop_window_length
        arboreto's early stopping window.
    key_added
        ``uns[key_added] = {"params": {...}, "network": <DataFrame TF, target, importance>}``
        (sorted by decreasing importance); ``tl.rank_biomarkers(grn_key=key_added)`` reads it.
    copy
        Return a modified copy and leave ``data`` untouched (else write into ``data`` and return None).

    Returns
    -------
    None, or the modified copy when ``copy=True``.
    """
    core = import_arboreto("core")
    ln = lognorm_adata(data, layer, copy_obs=False)
    names = ln.var_names.astype(str)
    picked = tf_names is None
    if picked:
        from ..datasets import tf_list

        tf_names = tf_list(names, organism=organism)
    tf_names = list(tf_names)
    tfs = [t for t in dict.fromkeys(map(str, tf_names)) if t in set(names)]
    if not tfs:
        raise UnknownFeatureError(
            f"none of the {len(list(tf_names))} TF names is among the {len(names)} data genes "
            f"(TFs e.g. {_fmt_items(list(tf_names)[:5])}; genes e.g. {_fmt_items(names[:5])})")
    targets = names.tolist() if genes is None else [str(g) for g in genes]
    miss = [g for g in targets if g not in set(names)]
    if miss:
        raise UnknownFeatureError(f"{len(miss)} target genes not in the data: {_fmt_items(miss)}")
    X = ln.X.toarray() if sp.issparse(ln.X) else np.asarray(ln.X)
    X = X.astype(np.float32)
    with pyscenic_env():
        tf_matrix, tf_matrix_names = core.to_tf_matrix(X, list(names), tfs)
    idx = pd.Index(names).get_indexer(targets)
    kwargs = dict(core.SGBM_KWARGS if regressor_kwargs is None else {**core.SGBM_KWARGS, **regressor_kwargs})
    chunks = np.array_split(np.arange(len(targets)), max(1, min(len(targets), n_workers * 4)))
    jobs = [(tf_matrix, tf_matrix_names, [targets[i] for i in c], X[:, idx[c]], seed, kwargs,
             early_stop_window_length) for c in chunks if len(c)]
    if n_workers <= 1:
        res = [r for job in progress(jobs, desc="grnboost2") for r in _fit_targets(job)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n_workers) as ex:
            res = [r for out in ex.map(_fit_targets, jobs) for r in out]
    df = pd.concat(res, ignore_index=True) if res else pd.DataFrame(columns=["TF", "target", "importance"])
    df = df[["TF", "target", "importance"]].copy()
    df["importance"] = df["importance"].astype(float)
    logger.info("grnboost2: %d links for %d targets and %d TFs", len(df), len(targets), len(tfs))
    df = df.sort_values(["importance", "TF", "target"], ascending=[False, True, True]).reset_index(drop=True)
    out = target(data, copy)
    params = {"tf_names": tfs, "organism": organism if picked else None, "seed": seed,
              "genes": None if genes is None else targets, "layer": layer, "regressor_kwargs": kwargs,
              "early_stop_window_length": early_stop_window_length}
    store(out, key_added, {"network": df}, params)
    return done(out, copy)


def check_regulons(regulons, gene_names=None) -> None:
    """Guard against pySCENIC's silent wrong result: regulons made of single characters.

    With dask's ``dataframe.convert-string`` on, pySCENIC turns gene lists into strings and
    ``GeneSignature`` then iterates the string character by character. Raises
    :class:`~scdiffx_grn.InputDataError` when a regulon's genes are all single characters while
    the data genes are not, or when no regulon gene is among ``gene_names``.
    """
    regulons = list(regulons)
    if not regulons:
        raise InputDataError("no regulons given")
    genes_all = set()
    for r in regulons:
        gs = list(r.genes)
        genes_all.update(gs)
        if gs and all(isinstance(g, str) and len(g) == 1 for g in gs) and len(gs) > 1:
            raise InputDataError(
                f"regulon {r.name!r} is made of single characters ({_fmt_items(gs)}): its gene list was "
                "turned into a string (pySCENIC + dask 'dataframe.convert-string'); build regulons from "
                "lists of gene names")
    if gene_names is not None:
        ov = genes_all & set(map(str, gene_names))
        if not ov:
            raise UnknownFeatureError(
                f"no overlap between the {len(genes_all)} regulon genes and the {len(set(gene_names))} data "
                f"genes (regulon genes e.g. {_fmt_items(sorted(genes_all)[:5])})")


def regulons_from_network(net: pd.DataFrame, *, min_targets: int = 5, top_n: int | None = None,
                          weight_col: str | None = None, split_sign: bool = True, genes=None) -> list:
    """Build ctxcore ``Regulon`` objects from a TF -> gene table.

    Parameters
    ----------
    net
        Columns ``source``/``TF``, ``target`` and a weight (``weight``, ``importance``...).
    min_targets
        Drop regulons with fewer targets (after filtering to ``genes``).
    top_n
        Keep each TF's ``top_n`` targets by absolute weight.
    weight_col
        Weight column (default ``weight`` or ``importance``; all 1 if none).
    split_sign
        Split each TF into ``TF(+)`` (weight >= 0) and ``TF(-)`` regulons, as pySCENIC does.
    genes
        Restrict targets to these genes.

    Returns
    -------
    list of ``ctxcore.genesig.Regulon`` (gene -> |weight|), names like ``"Sox10(+)"``.
    """
    genesig = import_ctxcore_genesig()
    n = net.rename(columns={"TF": "source"})
    for c in ("source", "target"):
        if c not in n.columns:
            raise InputDataError(f"network lacks column {c!r}; has {list(net.columns)}")
    wc = weight_col or next((c for c in ("weight", "importance", "score") if c in n.columns), None)
    w = pd.to_numeric(n[wc], errors="coerce").fillna(0.0) if wc else pd.Series(1.0, index=n.index)
    n = pd.DataFrame({"source": n["source"].astype(str), "target": n["target"], "weight": w.to_numpy()})
    bad = n["target"].map(lambda x: not isinstance(x, str))
    if bad.any():
        raise InputDataError(f"network targets must be single gene names (str); got e.g. "
                             f"{_fmt_items(n.loc[bad, 'target'].head(3))}")
    if genes is not None:
        n = n[n["target"].isin(set(map(str, genes)))]
    n = n[n["source"] != n["target"]]
    regs = []
    signs = [("+", n["weight"] >= 0), ("-", n["weight"] < 0)] if split_sign else [("+", n["weight"] == n["weight"])]
    for sign, m in signs:
        for tf, t in n[m].groupby("source", sort=True):
            t = t.assign(aw=t["weight"].abs()).sort_values("aw", ascending=False).drop_duplicates("target")
            if top_n is not None:
                t = t.head(top_n)
            if len(t) < min_targets:
                continue
            g2w = {str(g): float(a) if a > 0 else 1.0 for g, a in zip(t["target"], t["aw"])}
            name = f"{tf}({sign})" if split_sign else tf
            with pyscenic_env():
                regs.append(genesig.Regulon(name=name, gene2weight=g2w, gene2occurrence=[],
                                            transcription_factor=tf))
    if not regs:
        raise InputDataError(f"no regulon has >= min_targets={min_targets} targets"
                             + (" among the given genes" if genes is not None else ""))
    check_regulons(regs)
    return regs


def aucell(data, regulons, *, auc_threshold: float = 0.05, seed: int = 0, num_workers: int = 1,
           noweights: bool = True, min_targets: int = 5, layer: str | None = None, key_added: str = "aucell",
           copy: bool = False):
    """Score regulons per cell with pySCENIC's AUCell.

    Parameters
    ----------
    data
        AnnData / MuData (RNA modality); counts are log-normalised first (rankings are the same).
    regulons
        ctxcore ``GeneSignature``/``Regulon`` objects, a TF -> gene DataFrame (turned into regulons
        with :func:`regulons_from_network`), or a dict ``{name: [genes]}``.
    auc_threshold
        Fraction of the ranked genome used for the AUC.
    seed
        Seed for breaking ties in the per-cell gene rankings.
    num_workers
        Processes used by pySCENIC (1 = in process).
    noweights
        Ignore the regulon gene weights (pySCENIC's default for AUCell on regulons is weighted; our
        default is unweighted so that GRNBoost2 importances and signed weights do not matter).
    min_targets
        For DataFrame / dict input: minimum regulon size among the data genes.
    layer
        Layer with expression (default ``None``: ``X``); a missing layer raises.
    key_added
        Scores (cells x regulons DataFrame) go to ``obsm[key_added]`` of the RNA modality (and of
        the MuData when it has the same cells); ``uns[key_added] = {"params": {...}, "regulons":
        <DataFrame regulon, tf, n_genes>}``.
    copy
        Return a modified copy and leave ``data`` untouched (else write into ``data`` and return None).

    Returns
    -------
    None, or the modified copy when ``copy=True``.
    """
    au = import_pyscenic("aucell")
    genesig = import_ctxcore_genesig()
    data = target(data, copy)
    ln = lognorm_adata(data, layer, copy_obs=False)
    genes = ln.var_names.astype(str)
    if isinstance(regulons, pd.DataFrame):
        regulons = regulons_from_network(regulons, min_targets=min_targets, genes=genes)
    elif isinstance(regulons, dict):
        sigs = []
        for k, v in regulons.items():
            if isinstance(v, str):
                raise InputDataError(f"regulon {k!r} is a string, not a list of genes: {v[:40]!r}")
            v = [g for g in map(str, v) if g in set(genes)]
            if len(v) >= min_targets:
                with pyscenic_env():
                    sigs.append(genesig.GeneSignature(name=str(k), gene2weight=v))
        if not sigs:
            raise InputDataError(f"no gene set has >= min_targets={min_targets} genes among the data genes")
        regulons = sigs
    regulons = list(regulons)
    check_regulons(regulons, genes)
    X = ln.X.toarray() if sp.issparse(ln.X) else np.asarray(ln.X)
    ex = pd.DataFrame(X, index=ln.obs_names.astype(str), columns=genes)
    if not ex.index.is_unique:
        dup = ex.index[ex.index.duplicated()].unique()
        raise InputDataError(f"{len(dup)} duplicated cell names (e.g. {_fmt_items(dup[:5])}); "
                             "run obs_names_make_unique()")
    with pyscenic_env():
        auc = au.aucell(ex, regulons, auc_threshold=auc_threshold, noweights=noweights, seed=seed,
                        num_workers=num_workers)
    # pySCENIC's unstack sorts cells lexicographically: restore the data's cell order
    auc = auc.reindex(index=ex.index, columns=[r.name for r in regulons]).astype(float)
    if auc.isna().all(axis=None):
        raise InputDataError("AUCell returned no values aligned to the cells (cell names changed?)")
    auc.columns = auc.columns.astype(str)
    auc.columns.name = None
    rna = rna_of(data)
    rna.obsm[key_added] = auc.set_axis(rna.obs_names)
    if hasattr(data, "mod") and data.n_obs == rna.n_obs and (data.obs_names == rna.obs_names).all():
        data.obsm[key_added] = auc.set_axis(data.obs_names)
    regs = pd.DataFrame({"regulon": [str(r.name) for r in regulons],
                         "tf": [str(getattr(r, "transcription_factor", "") or "") for r in regulons],
                         "n_genes": [len(r.genes) for r in regulons]})
    store(data, key_added, {"regulons": regs},
          {"auc_threshold": auc_threshold, "seed": seed, "noweights": noweights, "min_targets": min_targets,
           "layer": layer, "n_regulons": len(regulons)})
    return done(data, copy)
