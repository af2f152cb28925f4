"""Gene-set enrichment of rankings with gseapy prerank (local GMT files only, offline)."""

from __future__ import annotations

import pandas as pd

from .._errors import InputDataError, OptionError, _fmt_items
from .._settings import logger
from .._store import done, group_column_name, store, target
from ._refs import gene_sets as _resolve_sets
from ._utils import de_table, group_labels, lognorm_adata, stored_result

__all__ = ["enrichment", "enrichment_df"]

_COLS = ["term", "es", "nes", "pvalue", "fdr", "fwer", "n_genes", "lead_genes", "rank"]


def _rankings(ranking, groupby: str, layer) -> dict[str, pd.Series]:
    if isinstance(ranking, pd.Series):
        return {str(ranking.name) if ranking.name is not None else "ranking": ranking}
    if isinstance(ranking, pd.DataFrame):
        cols = set(ranking.columns)
        gcol = next((c for c in ("group", groupby) if c in cols), None)
        fcol = next((c for c in ("gene", "feature", "names") if c in cols), None)
        scol = next((c for c in ("score", "stat", "combined_score", "scores") if c in cols), None)
        if gcol and fcol and scol:  # tidy table (e.g. a DE table or get.biomarker_df)
            return {str(g): t.set_index(fcol)[scol] for g, t in ranking.groupby(gcol, observed=True)}
        num = ranking.select_dtypes("number")
        if num.shape[1] == 0:
            raise InputDataError(f"ranking DataFrame has no numeric column; columns {list(ranking.columns)}")
        return {str(c): num[c] for c in num.columns}
    if hasattr(ranking, "obs"):  # AnnData / MuData: Wilcoxon scores of each group vs rest
        ln = lognorm_adata(ranking, layer)
        ln.obs[groupby] = group_labels(ranking, groupby).to_numpy()
        de = de_table(ln, groupby)
        return {g: t.set_index("gene")["score"] for g, t in de.groupby("group")}
    raise InputDataError(f"ranking must be a Series, DataFrame, AnnData or MuData; got {type(ranking).__name__}")


def enrichment(ranking, gene_sets="hallmark", *, organism: str = "mouse", groupby: str = "cell_type",
               permutation_num: int = 1000, seed: int = 0, min_size: int = 5, max_size: int = 500,
               threads: int = 1, layer: str | None = None, key_added: str | None = "enrichment",
               data=None, copy: bool = False):
    """Preranked GSEA (``gseapy.prerank``) of one or several gene rankings.

    Parameters
    ----------
    ranking
        A Series (gene -> score), a DataFrame with one numeric column per group (index = genes) or a
        tidy table with ``group``/``<groupby>``, ``gene``/``feature`` and ``score``/``stat`` columns,
        or an AnnData / MuData (the Wilcoxon scores of each ``groupby`` group vs the rest are used
        and the result is stored in it).
    gene_sets
        ``"hallmark"`` (MSigDB Hallmark, 50 sets), ``"kegg"``, ``"go_bp"``, ``"kegg_2016"``, a local
        ``.gmt`` path or a dict ``{name: [genes]}``. Named collections are human symbols, converted
        to mouse symbols by case for ``organism="mouse"`` (orthology by case). Library names of the
        Enrichr / MSigDB web services are not supported (no internet).
    organism
        ``"mouse"`` or ``"human"``.
    groupby
        Label of AnnData / MuData input (:func:`scdiffx_grn._registry.labels`); group column of
        tidy tables (``group`` is also accepted). The result's group column is named after it.
    permutation_num
        Number of gene-set permutations.
    seed
        gseapy seed.
    min_size, max_size
        Gene-set size limits after intersecting with the ranked genes.
    threads
        gseapy threads.
    layer
        Layer of AnnData / MuData input holding the expression (default ``None``: ``X``).
    key_added
        ``uns[key_added] = {"params": {...}, "enrichment": <tidy table>}`` of ``data`` (or of
        ``ranking`` for AnnData / MuData input). ``None``: store nothing, return the table.
    data
        AnnData / MuData to store the result in (default: ``ranking`` when it is one).
    copy
        Store into a copy and return it, leaving the input untouched.

    Returns
    -------
    None (stored; read it with :func:`enrichment_df`), the modified copy when ``copy=True``, or,
    when there is nothing to store it in (a Series / DataFrame ranking without ``data``, or
    ``key_added=None``), the tidy DataFrame ``<groupby>, term, es, nes, pvalue, fdr, fwer,
    n_genes, lead_genes, rank`` (rank 1 = highest NES in the group).
    """
    import gseapy as gp

    from .._validate import check_count

    check_count("permutation_num", permutation_num, 1)
    check_count("min_size", min_size, 1)
    if check_count("max_size", max_size, 1) < min_size:
        raise OptionError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    sets = _resolve_sets(gene_sets, organism)
    rks = _rankings(ranking, groupby, layer)
    gname = group_column_name(groupby or None)  # the result's group column
    out = []
    for g, r in rks.items():
        r = pd.to_numeric(r, errors="coerce").dropna()
        r.index = r.index.astype(str)
        r = r[~r.index.duplicated()].sort_values(ascending=False)
        if len(r) < 2:
            raise InputDataError(f"ranking {g!r} has fewer than 2 genes with finite scores")
        genes = set(r.index)
        sizes = {k: len(genes.intersection(v)) for k, v in sets.items()}
        ok = {k: v for k, v in sets.items() if min_size <= sizes[k] <= max_size}
        if not ok:
            best = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
            raise InputDataError(
                f"no gene set has between {min_size} and {max_size} genes among the {len(genes)} ranked genes "
                f"of {g!r} (largest overlaps: {best}; ranked genes e.g. {_fmt_items(r.index[:5])}). Check the "
                "organism / symbol case or lower min_size.")
        res = gp.prerank(rnk=r, gene_sets=ok, outdir=None, threads=threads, seed=seed,
                         permutation_num=permutation_num, min_size=min_size, max_size=max_size,
                         no_plot=True, verbose=False)
        d = res.res2d.copy()
        tidy = pd.DataFrame({
            gname: g,
            "term": d["Term"].astype(str).to_numpy(),
            "es": pd.to_numeric(d["ES"], errors="coerce").to_numpy(),
            "nes": pd.to_numeric(d["NES"], errors="coerce").to_numpy(),
            "pvalue": pd.to_numeric(d["NOM p-val"], errors="coerce").to_numpy(),
            "fdr": pd.to_numeric(d["FDR q-val"], errors="coerce").to_numpy(),
            "fwer": pd.to_numeric(d["FWER p-val"], errors="coerce").to_numpy(),
            "lead_genes": d["Lead_genes"].astype(str).to_numpy(),
        })
        tidy["n_genes"] = tidy["term"].map(sizes).astype(int)
        tidy["rank"] = tidy["nes"].rank(ascending=False, method="first").astype(int)
        out.append(tidy.sort_values("rank"))
        logger.info("enrichment %s: %d sets tested", g, len(tidy))
    table = pd.concat(out, ignore_index=True)[[gname, *_COLS]]
    holder = data if data is not None else (ranking if hasattr(ranking, "obs") else None)
    if holder is None or not key_added:
        if copy:
            raise OptionError("copy=True needs an AnnData / MuData to store the result in (data= or an "
                              "AnnData / MuData ranking)")
        return table
    holder = target(holder, copy)
    params = {"gene_sets": gene_sets if isinstance(gene_sets, str) else f"<{type(gene_sets).__name__}>",
              "organism": organism, "groupby": groupby, "permutation_num": permutation_num, "seed": seed,
              "min_size": min_size, "max_size": max_size, "layer": layer,
              "ranking": "data" if hasattr(ranking, "obs") else f"<{type(ranking).__name__}>"}
    store(holder, key_added, {"enrichment": table}, params)
    return done(holder, copy)


def enrichment_df(data, key: str = "enrichment", *, group: str | None = None, fdr: float | None = None,
                  top_k: int | None = None) -> pd.DataFrame:
    """Tidy enrichment table stored by :func:`enrichment` (or filter a given table).

    Parameters
    ----------
    data
        AnnData / MuData with ``uns[key]``, or the table.
    key
        ``key_added`` of :func:`enrichment`.
    group
        Keep one group (ranking).
    fdr
        Keep rows with FDR below this threshold.
    top_k
        Keep the ``top_k`` highest-NES sets per group.
    """
    df = stored_result(data, key, ("enrichment",), what="enrichment table",
                       hint=f"tl.enrichment(..., key_added={key!r})")
    df = pd.DataFrame(df).copy()
    gcol = df.columns[0]  # named after groupby (``group`` in tables of earlier versions)
    if group is not None:
        if str(group) not in set(df[gcol].astype(str)):
            raise OptionError(f"group {group!r} not in the table; has {_fmt_items(df[gcol].unique())}")
        df = df[df[gcol].astype(str) == str(group)]
    if fdr is not None:
        df = df[df["fdr"] < fdr]
    df = df.sort_values([gcol, "nes"], ascending=[True, False])
    if top_k is not None:
        df = df.groupby(gcol, sort=False).head(top_k)
    return df.reset_index(drop=True)
