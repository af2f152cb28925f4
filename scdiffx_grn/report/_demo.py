"""The end-to-end demo behind ``scdiffx-grn demo``: every module on the embedded data, one HTML report.

Sections (each runs on its own; a failure is shown in its section and counted, the rest go on):

1. data summary (cells, features, cell types, the model)
2. generation: real vs generated cells (UMAP / PCA), a few distribution metrics
3. translation: ATAC -> RNA and RNA -> ATAC on held-out cells (``eval.evaluate_translation``)
4. GRN: ``tl.extract_grn`` (attention), ``tl.tf_gene_network`` (TF -> peak by co-accessibility),
   ``pl.grn_network``, ``pl.grn_specificity_heatmap``
5. knockout screen: ``tl.screen`` over a few TFs, ``pl.volcano``, ``pl.screen_heatmap``
6. biomarkers: ``tl.regulator_activity`` (DoRothEA), ``tl.rank_biomarkers``, ``pl.regulator_dotplot``
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .._errors import ScdxError
from .._registry import counts as registry_counts
from .._registry import labels
from .._settings import logger
from .._store import stored, stored_table
from ._html import Report

__all__ = ["DemoConfig", "DemoResult", "run_demo", "default_model_path", "SECTIONS"]

SECTIONS = ("data", "generation", "translation", "grn", "screen", "biomarkers")


def default_model_path() -> Path:
    """Where the shipped checkpoint ``mouse_mop_demo`` is.

    Returns
    -------
    pathlib.Path
        ``$SCDX_DEMO_MODEL`` when set; else the checkpoint shipped inside the package
        (:func:`scdiffx_grn.model.pretrained_path`, package data ``scdiffx_grn/pretrained/``), which
        works from any folder and any install (editable or not).

    Raises
    ------
    CheckpointError
        When the shipped checkpoint is missing from this install.
    """
    env = os.environ.get("SCDX_DEMO_MODEL")
    if env:
        return Path(env)
    from ..model import pretrained_path

    return pretrained_path("mouse_mop_demo")


@dataclass
class DemoConfig:
    """Sizes and options of the demo (defaults: < 5 minutes on 2 CPU cores).

    Parameters
    ----------
    out
        Report folder (``report.html``, ``tables/*.csv``, ``sections.json``, ``screen/``).
    model
        Model folder (``None``: :func:`default_model_path`).
    data
        ``None`` (embedded ``datasets.mouse_mop()``), a path for ``datasets.read_multiome`` or a
        MuData; must hold the model's genes and peaks.
    n_cells
        Cells subsampled (stratified by the model's first label) for the analyses.
    n_generate, n_translate
        Cells generated; held-out cells translated in each direction.
    n_steps
        Sampler steps of generation, translation and the screen.
    n_tfs, n_cell_types, grn_cells, screen_cells, n_samples
        Screen size (TFs), the largest cell types used by the GRN and the screen, cells per type
        for GRN scoring and for the screen, paired noise samples per cell in the screen.
    basis
        ``"pca"`` or ``"umap"`` for the real-vs-generated figure.
    genome
        Built-in TSS annotation for candidate peak -> gene pairs (``"mm10"``, ``"hg38"``); an ``hg*``
        genome also makes the TF lists and reference networks human.
    seed, device
        Seed of every random choice; torch device (``None``: ``settings.device``).
    sections
        Sections to run (``"data"`` always runs); others are shown as skipped.
    debug
        Show tracebacks in failed sections.
    dpi
        Resolution of the inline figures.
    overwrite
        Also write into a non-empty folder that is not an earlier report (its files are kept).
        The files of an earlier report are always replaced; files added to it are kept.
    """

    out: str = "scdx_demo_report"
    model: str | None = None  # None: the shipped checkpoint
    data: Any = None  # None: datasets.mouse_mop(); or a path / MuData
    n_cells: int = 1500
    n_generate: int = 600  # generated cells (capped at n_cells)
    n_translate: int = 300  # held-out cells translated in each direction
    n_steps: int = 10  # sampler steps for generation / translation / screen
    n_tfs: int = 4  # TFs in the knockout screen
    n_cell_types: int = 3  # largest cell types used by the GRN and the screen
    grn_cells: int = 60  # cells per cell type for GRN extraction
    screen_cells: int = 80  # cells per cell type in the screen
    n_samples: int = 2  # paired samples per cell in the screen
    basis: str = "pca"  # "pca" (fast) or "umap" for the real-vs-generated figure
    genome: str = "mm10"  # TSS annotation for peak -> gene candidates
    seed: int = 0
    device: str | None = None
    sections: tuple[str, ...] = SECTIONS
    debug: bool = False
    dpi: int = 80
    overwrite: bool = False


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Parameters
    ----------
    out
        The report folder.
    report
        ``out / "report.html"``.
    failed
        Keys of the sections that failed (empty when all ran).
    seconds
        Total wall time.
    section_seconds
        Wall time per section.
    """

    out: Path
    report: Path
    failed: list[str]
    seconds: float
    section_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------- helpers
# what a report folder holds (glob patterns, the first its signature): an older report without a
# manifest is recognised by these
REPORT_FILES = ("report.html", "sections.json", "tables/*.csv", "screen/*.json", "screen/*.parquet",
                "screen/effects/*.parquet", "screen/summary/*.parquet", "screen/screen.lock")


def _check_out(out: Path, overwrite: bool) -> None:
    """Before the work: refuse a non-empty folder that is not an earlier report (unless ``overwrite``:
    the report is then written beside its files, which are kept) and an unwritable place."""
    from .._io import check_output_dir

    check_output_dir(out, overwrite=overwrite, known=REPORT_FILES, what="report")


def _organism(cfg: DemoConfig) -> str:
    """The organism of the TF lists and reference networks: human for an ``hg*`` genome, else mouse."""
    return "human" if str(cfg.genome).lower().startswith("hg") else "mouse"


def _demo_tfs(genes, organism: str = "mouse") -> list[str]:
    """TFs of DoRothEA (A-C) among ``genes`` with a target there, most targets first (the one TF list,
    :func:`scdiffx_grn.datasets.tf_list`)."""
    from ..datasets import tf_list

    return tf_list(genes, organism=organism, source="dorothea", levels="ABC", min_targets=1)


def _result_table(returned, data, key: str, table: str) -> pd.DataFrame:
    """A ``tl`` function's result table: what it returned when a table, else ``data.uns[key]``
    (``_store``: ``{"params", table, ...}``)."""
    if isinstance(returned, pd.DataFrame):
        return returned
    res = stored(data, key)
    if table in res:
        return res[table]
    frames = [v for k, v in res.items() if k != "params" and isinstance(v, pd.DataFrame)]
    if len(frames) == 1:
        return frames[0]
    return stored_table(data, key, table)  # raises, naming what uns[key] holds


def _load_inputs(cfg: DemoConfig, sec):
    """Load model and data; returns (model, mdata subsample, translation cells)."""
    from .. import ScDiffusionX, datasets, pp

    path = Path(cfg.model) if cfg.model else default_model_path()
    model = ScDiffusionX.load(path, device=cfg.device)
    if cfg.data is None:
        full = datasets.mouse_mop()
        source = "embedded mouse MOp SNARE-seq (datasets.mouse_mop)"
    elif isinstance(cfg.data, (str, os.PathLike)):
        full = datasets.read_multiome(cfg.data)
        source = str(cfg.data)
    else:
        full, source = cfg.data, "MuData given"
    keys = list(model.config.label_keys)
    groupby = keys[0] if keys else None
    if groupby is None:
        raise ScdxError("the demo needs a model conditioned on a cell label (this model is unconditional)")
    labels(full, groupby, what="demo data")  # a missing label column raises, naming the ones there
    # the split the model carries (else the one analyses/train_model.py used: seed 0, stratified):
    # translation uses held-out cells
    from ..eval import model_split

    stored = model_split(model, full)
    if stored is not None:
        full.obs["split"] = stored
    elif "split" not in full.obs:
        pp.split_cells(full, fractions=(0.8, 0.1, 0.1), seed=0, stratify=groupby, key_added="split")
    full = model.subset_to_model(full)
    n = min(cfg.n_cells, full.n_obs)
    idx = np.sort(pp.stratified_subsample(labels(full, groupby).to_numpy(), n, seed=cfg.seed)) \
        if n < full.n_obs else np.arange(full.n_obs)
    mdata = full[idx].copy()
    test = np.flatnonzero((labels(full, "split").to_numpy() != "train"))
    if len(test) == 0:
        test = np.arange(full.n_obs)
    rng = np.random.default_rng(cfg.seed)
    test = np.sort(rng.choice(test, min(cfg.n_translate, len(test)), replace=False))
    held = full[test].copy()
    for m in (mdata, held):
        for c in full.obs.columns:
            for mod in m.mod.values():
                if c not in mod.obs:
                    mod.obs[c] = m.obs[c].to_numpy()
        ScDiffusionX.setup_mudata(m, labels=keys)
    del full
    return model, mdata, held, groupby, source, path


def _data_section(sec, cfg, model, mdata, groupby, source, path) -> None:
    import matplotlib.pyplot as plt
    import scipy.sparse as sp

    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    Xr, Xa = registry_counts(mdata, "rna"), registry_counts(mdata, "atac")  # the registered counts layers
    groups = labels(mdata, groupby)
    umi = np.asarray(Xr.sum(1)).ravel()
    npk = np.asarray((Xa > 0).sum(1)).ravel()
    nnz_r = Xr.nnz if sp.issparse(Xr) else int(np.count_nonzero(Xr))
    sec.text(f"Data: {source}. {mdata.n_obs:,} cells subsampled (stratified by {groupby!r}, seed {cfg.seed}), "
             f"restricted to the model's {rna.n_vars:,} genes and {atac.n_vars:,} peaks.")
    summ = pd.DataFrame({
        "quantity": ["cells", "genes", "peaks", "cell types", "median UMIs / cell", "median open peaks / cell",
                     "RNA non-zero fraction"],
        "value": [f"{mdata.n_obs:,}", f"{rna.n_vars:,}", f"{atac.n_vars:,}",
                  str(groups.nunique()), f"{np.median(umi):.0f}", f"{np.median(npk):.0f}",
                  f"{nnz_r / max(1, Xr.shape[0] * Xr.shape[1]):.3f}"]})
    sec.table(summ, "Data summary", name="data_summary")
    counts = groups.value_counts().rename_axis(groupby).reset_index(name="cells")
    sec.table(counts, f"Cells per {groupby}", name="cell_types", max_rows=40)
    c = model.config
    mrows = [("checkpoint", str(path)), ("labels", ", ".join(c.label_keys) or "(none)"),
             ("latent dim / token dim", f"{c.latent_dim} / {c.token_dim}"),
             ("denoiser width / heads / layers", f"{c.width} / {c.n_heads} / {c.n_layers}"),
             ("parameters", f"{sum(p.numel() for p in model.module.parameters()):,}")]
    tj = Path(path) / "training.json"
    if tj.exists():
        import json

        try:
            info = json.loads(tj.read_text())
            tr = info.get("train", {})
            mrows.append(("training", f"preset {info.get('preset', '?')}: {tr.get('ae_epochs', '?')} AE epochs, "
                                      f"{tr.get('diffusion_steps', '?')} denoiser steps, seed {info.get('seed', '?')}"))
        except (ValueError, OSError):
            pass
    mrows.append(("device", str(model.device)))
    sec.table(pd.DataFrame(mrows, columns=["model", "value"]), "Model", name="model")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].hist(np.log10(umi + 1), bins=40, color="#4c72b0")
    axes[0].set_xlabel("log10 UMIs per cell")
    axes[1].hist(np.log10(npk + 1), bins=40, color="#dd8452")
    axes[1].set_xlabel("log10 open peaks per cell")
    for a in axes:
        a.set_ylabel("cells")
    fig.tight_layout()
    sec.figure(fig, "Library sizes (RNA, ATAC)", name="qc_hist", dpi=cfg.dpi)


def _generation_section(sec, cfg, model, mdata, groupby, state) -> None:
    from .. import eval as ev

    n = min(cfg.n_generate or mdata.n_obs, mdata.n_obs)
    rng = np.random.default_rng(cfg.seed)
    labs = labels(mdata, groupby).to_numpy()
    labs = labs[np.sort(rng.choice(len(labs), n, replace=n > len(labs)))]
    t = time.perf_counter()
    gen = model.generate({groupby: labs}, sampler="dpm++", n_steps=cfg.n_steps, guidance_scale=2.0, seed=cfg.seed)
    dt = time.perf_counter() - t
    state["generated"] = gen
    sec.text(f"Generated {gen.n_obs:,} paired cells with the {groupby} composition of the real cells "
             f"(DPM-Solver++, {cfg.n_steps} steps, guidance 2.0) in {dt:.1f} s.")
    for mod in ("rna", "atac"):
        real = mdata.mod[mod]
        g = gen.mod[mod]
        g.obs[groupby] = labels(gen, groupby, adata=g).to_numpy()  # generate writes the labels it was given
        fig = ev.umap_real_vs_generated(real, g, groupby=groupby, modality=mod, basis=cfg.basis, seed=cfg.seed)
        sec.figure(fig, f"{mod.upper()}: real vs generated ({cfg.basis.upper()})", name=f"umap_{mod}", dpi=cfg.dpi)
    tabs = []
    for mod in ("rna", "atac"):
        _, summ = ev.evaluate_generation(mdata.mod[mod], gen.mod[mod], groupby=groupby, modality=mod, seeds=(cfg.seed,),
                                         metrics=["mmd", "pb_pearson", "knn_acc"], per_cell_type_metrics=[])
        tabs.append(summ.assign(modality=mod))
    tab = pd.concat(tabs, ignore_index=True)
    keep = [c for c in ("modality", "metric", "scope", "mean") if c in tab.columns]
    sec.table(tab[keep] if keep else tab, "Generation metrics (real vs generated; mmd lower is better, "
              "pb_pearson / knn_acc higher is better)", name="generation_metrics")


def _translation_section(sec, cfg, model, held, groupby) -> None:
    import matplotlib.pyplot as plt

    from .. import eval as ev

    cal = getattr(model, "translation_calibration", {}).get("rna->atac")
    sec.text(f"Translation of {held.n_obs:,} cells not used for training (split seed 0 of "
             "analyses/train_model.py), read out as the posterior mean (the model's point prediction: one "
             "denoiser call per noise at the noisiest timestep, 4 noises averaged in latent space)"
             + (f"; RNA->ATAC through the model's fitted {cal['method']!r} calibration "
                "(model.calibrate_translation; translate(..., calibrated=True))." if cal else "."))
    rows = []
    per_type = {}
    for direction, target in (("atac->rna", "rna"), ("rna->atac", "atac")):
        pred = model.translate(held, direction=direction, seed=cfg.seed,
                               calibrated=bool(cal) and direction == "rna->atac")
        tab = ev.evaluate_translation(held.mod[target], pred, modality=target, groupby=groupby, seed=cfg.seed,
                                      distribution=False)
        tab["direction"] = direction
        rows.append(tab)
        key = "cell_pearson_mean" if target == "rna" else "cell_auroc_mean"
        pt = tab[(tab["metric"] == key) & (tab["cell_type"] != "all")]
        per_type[f"{direction}: {key}"] = pt.set_index("cell_type")["value"]
    tab = pd.concat(rows, ignore_index=True)
    pooled = tab[tab["cell_type"] == "all"][["direction", "metric", "value"]]
    sec.table(pooled, "Paired translation metrics (all cells)", name="translation_metrics")
    # does this checkpoint's translation use its input? (half of the cells evaluated, the classifier on the rest)
    if held.n_obs >= 110:
        dep = ev.source_dependence(model, held, direction="atac->rna", groupby=groupby, n_cells=held.n_obs // 2,
                                   n_pcs=20, seed=cfg.seed)
        sec.text("What this model is: a small scDiffusion-X trained on CPU (the model table above). Its "
                 "translation was checked with eval.source_dependence (translate from each cell's own ATAC vs "
                 f"from ATAC shuffled between cells) on {dep['n_cells']} held-out cells: {dep['verdict']}. "
                 "A model whose translation does not use its input gives peak-level network scores and "
                 "knockout effects that are not biology; "
                 + ("this one uses it (how much: BENCHMARKS.md compares its per-gene Pearson with ridge, the "
                    "label oracle and the autoencoder ceiling)." if dep["uses_input"] else
                    "this one does NOT, so read the network and screen sections below as a demonstration of "
                    "the API only."))
    fig, axes = plt.subplots(1, len(per_type), figsize=(5.5 * len(per_type), 3.6))
    for ax, (name, s) in zip(np.atleast_1d(axes), per_type.items()):
        s = s.sort_values()
        ax.barh(s.index.astype(str), s.to_numpy(), color="#4c72b0")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    sec.figure(fig, "Per cell type translation accuracy", name="translation_per_type", dpi=cfg.dpi)


def _grn_section(sec, cfg, model, mdata, groupby, state) -> None:
    from .. import datasets, grn, pl, tl

    types = state["types"]
    tss = grn.read_tss(datasets.tss_annotation(cfg.genome))
    tl.extract_grn(model, mdata, groupby=groupby, method="attention", tss=tss, cell_types=types,
                   max_cells=cfg.grn_cells, seed=cfg.seed, key_added="grn")
    pg = stored_table(mdata, "grn", "network")  # uns["grn"] = {"params", "network"}
    sec.text(f"Peak -> gene scores (Dual-Cross-Attention x encoder saliency) for the {len(types)} largest cell "
             f"types ({', '.join(types)}), {cfg.grn_cells} cells each; candidates within 150 kb of a TSS. "
             "TF -> peak links from TF expression / peak accessibility co-variation across metacells "
             "(DoRothEA TFs among the genes).")
    tfs = _demo_tfs(mdata.mod["rna"].var_names, _organism(cfg))
    state["tfs"] = tfs
    tl.tf_gene_network(mdata, "coaccessibility", tfs=tfs, groupby=groupby, key_added="grn_tf", seed=cfg.seed)
    net = stored_table(mdata, "grn_tf", "network")
    state["grn_tf"] = net
    pc = nc = groupby  # both networks' group column is named after groupby (the storage contract)
    stats = (pg.groupby(pc).size().rename("peak->gene edges").rename_axis(groupby).to_frame()
             .join(net.groupby(nc).size().rename("TF->gene edges").rename_axis(groupby), how="outer")
             .join(net.groupby(nc)["source"].nunique().rename("TFs").rename_axis(groupby), how="outer"))
    if "corr_p" in net:
        # each type keeps its own paths (peaks accessible, TFs expressed in its cells); how many edges its own cells support
        stats = stats.join(net.groupby(nc)["corr_p"].apply(lambda p: int((p < 0.05).sum()))
                           .rename("TF->gene edges with own-type p < 0.05").rename_axis(groupby), how="outer")
        stats["expected by chance (5 %)"] = (0.05 * stats["TF->gene edges"]).round()
    stats = stats.fillna(0).astype(int).reset_index()
    sec.table(stats, "Network sizes per cell type", name="grn_sizes")
    ct = types[0]
    fig = pl.grn_network(net, cell_type=ct, top_regulators=5, top_targets=8, seed=cfg.seed)
    sec.figure(fig, f"TF -> gene network, {ct} (top regulators)", name="grn_network", dpi=cfg.dpi)
    fig = pl.grn_specificity_heatmap(net, top_k=5, level="source")
    sec.figure(fig, "Cell-type specificity of TFs (z-scored out-degree)", name="grn_specificity", dpi=cfg.dpi)
    top = grn.grn_df(net, top_k=5)  # per type, ranked by specificity (|weight| with one type)
    cols = [c for c in (nc, "source", "target", "weight", "specificity", "n_peaks", "corr", "corr_p")
            if c in top.columns]
    sec.table(top[cols], "Most type-specific TF -> gene edges (per-type TF-target correlation x motif path)",
              name="grn_top_edges")
    _grn_predictive_table(sec, model, mdata, pg, net, cfg)
    sec.text("What these networks are and are not: ranked hypotheses of cis-regulatory links (a peak near a "
             "gene whose translated expression depends on it, through the model) and of TF -> gene links (a TF "
             "whose expression co-varies with the accessibility of those peaks). They are not measured "
             "regulation: on the embedded data, peak -> gene scores from the model are compared with "
             "distance-only and correlation baselines in BENCHMARKS.md, and the distance prior is a strong "
             "baseline there. Validate candidate links (CRISPRi screens, ChIP, perturbation data) before use.")


def _grn_predictive_table(sec, model, mdata, pg, net, cfg) -> None:
    """Held-out predictive value of the networks and of model-free baselines (eval.grn_predictive)."""
    from ..eval import grn as egrn

    test = egrn.heldout_cells(mdata, model=model, seed=cfg.seed)
    cand = pg.drop_duplicates(["source", "target"])[["source", "target", "distance"]]
    nets = {"model (attention) peak->gene": pg, "model TF->gene": net,
            "distance prior": egrn.distance_baseline(cand),
            "metacell correlation (train cells)": egrn.metacell_correlation(mdata[~test].copy(), cand, None, 20,
                                                                            seed=cfg.seed)}
    k = int(min(200, max(10, len(cand) // 4)))
    try:
        tab = egrn.grn_predictive(mdata, nets, model=model, groupby=None, top_k=k, rank_by="abs", n_random=20,
                                  pool=10, seed=cfg.seed)
    except ScdxError as e:
        sec.text(f"Held-out validation of the networks (eval.grn_predictive) not shown: {e}")
        return
    cols = ["network", "kind", "n_edges", "n_targets", "n_test", "median_r2", "random_median_r2", "delta_r2",
            "frac_targets_improved", "p_random", "beats_random"]
    sec.table(tab[cols].round(4), f"Held-out prediction of each network's targets (top {k} edges; all cells, "
              "test cells of the model's split pooled into pseudo-cells of 10) against 20 degree-preserving "
              "rewirings", name="grn_predictive")
    pgm = tab[tab["kind"] == "peak_gene"].set_index("network")["delta_r2"]
    model_gain = float(pgm.get("model (attention) peak->gene", np.nan))
    base = pgm.drop("model (attention) peak->gene", errors="ignore")
    verdict = ("adds over" if np.isfinite(model_gain) and len(base) and model_gain > base.max() else
               "does not add over")
    sec.text(f"Reading: the model's peak -> gene network {verdict} the best model-free network here (gain in "
             f"median held-out R^2 over its rewirings {model_gain:.4f} vs {base.max():.4f}); a network "
             "'beats random' only with p < 0.05 and a gain of at least 0.01. No reference network is used.")


def _screen_section(sec, cfg, model, mdata, groupby, state, workdir: Path) -> None:
    from .. import pl, tl
    from .._settings import settings
    from ..perturb import load_screen_effects

    tfs = state.get("tfs") or _demo_tfs(mdata.mod["rna"].var_names, _organism(cfg))
    targets = tfs[: cfg.n_tfs]
    if not targets:
        raise ScdxError("no DoRothEA TF among the model's genes: nothing to screen")
    sdir = workdir / "screen"
    types = state["types"]
    obs = labels(mdata, groupby)
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(obs == t), min(cfg.screen_cells, int((obs == t).sum())),
                                             replace=False) for t in types]))
    sub = mdata[idx].copy()
    summary = tl.screen(model, sub, targets, kind="knockout", modality="rna", groupby=groupby, out_dir=sdir,
                        resume=False, seed=cfg.seed, batch_targets=min(8, len(targets)),
                        show_progress=settings.progress)
    from ..perturb._controls import significance_text

    n_ctrl = int(summary["n_controls"].max()) if "n_controls" in summary and len(summary) else 0
    sec.text(f"RNA knockout (counts -> 0) of {len(targets)} TFs ({', '.join(targets)}) in {sub.n_obs} cells of "
             f"{', '.join(types)}, translated RNA -> ATAC by the posterior-mean engine (one denoiser call per "
             "edited cell; cells the knockout does not change are skipped exactly). Each cell type also gets "
             f"{n_ctrl} control knockouts: non-TF genes matched to the TFs on detection rate and mean "
             "expression, run through the same engine. A peak is significant for a TF only when its effect "
             "(log2 odds ratio of accessibility) stands out from the controls' effects (FDR <= 0.05 against "
             "the controls) and is at least 0.1 in size; a TF moves the cell state when its latent shift "
             "exceeds its controls' (FDR over TFs <= 0.05).")
    sec.text(significance_text(summary))
    value = "n_sig" if "n_sig" in summary and summary["n_sig"].max() > 0 else "latent_shift"
    import matplotlib.pyplot as plt

    gcol = groupby  # the screen's tables name their group column after groupby
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * summary[gcol].nunique(), 1.4 + 0.4 * len(targets)))
    pl.screen_heatmap(summary, value=value, ax=ax)
    sec.figure(fig, f"Screen summary: {value} per TF x cell type", name="screen_heatmap", dpi=cfg.dpi)
    eff = load_screen_effects(sdir)
    if isinstance(eff, dict):
        eff = pd.concat(eff.values(), ignore_index=True)
    best = summary.sort_values([value], ascending=False).iloc[0]
    tcol = "perturbation"
    fig = pl.volcano(eff, target=str(best[tcol]), cell_type=str(best[gcol]))
    sec.figure(fig, f"Volcano: {best[tcol]} knockout in {best[gcol]} (accessibility effect per peak)",
               name="volcano", dpi=cfg.dpi)
    if "n_sig" not in summary or summary["n_sig"].max() == 0:
        sec.text("No peak is significant against the controls in this screen, and that is the honest answer "
                 "here, not a failure of the statistics: a single-gene knockout moves the model's predicted "
                 "accessibility by tiny amounts (see max_abs_log2fc, far below the 0.1 floor), no more than "
                 "knocking out a matched non-TF gene does. A t-test over cells alone would still flag many "
                 "peaks (n_sig_t), because over many cells any consistent shift passes it. latent_shift and "
                 "p_state_vs_controls rank the TFs against their controls without a per-peak threshold.")
    cols = [c for c in (tcol, gcol, "n_sig", "n_sig_t", "max_abs_log2fc", "latent_shift", "latent_shift_ctrl_mean",
                        "p_state_vs_controls", "moves_state", "frac_type_changed", "top_up", "top_down")
            if c in summary.columns]
    sec.table(summary.sort_values(value, ascending=False)[cols], "Screen summary (top rows)", name="screen_summary",
              max_rows=15)


def _biomarker_section(sec, cfg, model, mdata, groupby, state) -> None:
    from .. import pl, tl

    tl.regulator_activity(mdata, "dorothea", organism=_organism(cfg), groupby=groupby, key_added="regulators")
    # the TF -> gene network of the GRN section, as a table (uns["grn_tf"] = {"params", "network"})
    grn_net = stored_table(mdata, "grn_tf", "network") if "grn_tf" in mdata.uns else None
    ret = tl.rank_biomarkers(mdata, groupby, grn_key=grn_net, reference="dorothea", organism=_organism(cfg),
                             activity_key="regulators", peak_top=200, key_added="biomarkers")
    tab = _result_table(ret, mdata, "biomarkers", "biomarkers")
    sec.text("TF activity per cell (decoupler ulm on DoRothEA A-C), then genes, peaks and TFs ranked per cell "
             "type by specificity, model importance (the TF -> gene network above), reference agreement "
             "and activity.")
    fig = pl.regulator_dotplot(mdata, key="regulators", top_k=3)
    sec.figure(fig, "Top regulators per cell type (DoRothEA activity)", name="regulator_dotplot", dpi=cfg.dpi)
    for kind, n in (("tf", 2), ("gene", 2)):
        sub = tab[tab["kind"] == kind].sort_values([groupby, "rank"]).groupby(groupby, observed=True).head(n)
        cols = [c for c in (groupby, "feature", "rank", "combined_score", "specificity", "logfc", "padj",
                            "importance", "reference", "activity") if c in sub.columns]
        sec.table(sub[cols], f"Top {n} {'TFs' if kind == 'tf' else 'genes'} per {groupby}",
                  name=f"biomarkers_{kind}", max_rows=60)


# ----------------------------------------------------------------------------- driver
def run_demo(cfg: DemoConfig | None = None, **kwargs) -> DemoResult:
    """Run the demo and write ``<out>/report.html`` (plus CSV tables); see the module docstring.

    Parameters
    ----------
    cfg
        A :class:`DemoConfig`; keyword arguments override its fields.

    Returns
    -------
    DemoResult
        The report path, the failed sections (empty when all ran) and timings. The output folder
        is written beside its final place and swapped in when complete.

    Raises
    ------
    ScdxError
        When the model or data cannot be loaded (nothing else to report) or ``out`` is unsafe.
    """
    from .._io import output_dir
    from .._settings import seed_everything

    cfg = cfg or DemoConfig()
    for k, v in kwargs.items():
        if not hasattr(cfg, k):
            raise ScdxError(f"unknown demo option {k!r}")
        setattr(cfg, k, v)
    unknown = sorted(set(cfg.sections) - set(SECTIONS))
    if unknown:
        raise ScdxError(f"unknown demo section(s) {unknown}; known: {list(SECTIONS)}")
    from .._validate import check_count

    for k in ("n_cells", "n_generate", "n_translate", "n_steps", "n_tfs", "n_cell_types", "grn_cells",
              "screen_cells", "n_samples", "dpi"):
        check_count(k, getattr(cfg, k), 1)
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    out = Path(cfg.out)
    _check_out(out, cfg.overwrite)
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    rep = Report("scdiffx_grn demo report",
                 "scDiffusion-X on paired single-cell RNA + ATAC: generation, translation, gene-regulatory "
                 "networks, in-silico knockouts and biomarkers", debug=cfg.debug)
    state: dict[str, Any] = {}
    with output_dir(out, overwrite=cfg.overwrite, known=REPORT_FILES, what="report") as tmp:
        with rep.section("data", "1. Data and model") as sec:
            model, mdata, held, groupby, source, path = _load_inputs(cfg, sec)
            state["types"] = list(labels(mdata, groupby).value_counts().index[: cfg.n_cell_types])
            rep.meta["model"] = str(path)
            rep.meta["cells"] = f"{mdata.n_obs:,} (seed {cfg.seed}); sampler steps {cfg.n_steps}"
            _data_section(sec, cfg, model, mdata, groupby, source, path)
        if rep.failed:  # nothing else can run without model and data
            for key, title in _TITLES[1:]:
                s = rep.add_section(key, title)
                s.status = "skipped"
                s.text("skipped: the model or the data could not be loaded (see section 1)")
        else:
            steps: list[tuple[str, str, Callable[[Any], None]]] = [
                ("generation", _TITLES[1][1], lambda s: _generation_section(s, cfg, model, mdata, groupby, state)),
                ("translation", _TITLES[2][1], lambda s: _translation_section(s, cfg, model, held, groupby)),
                ("grn", _TITLES[3][1], lambda s: _grn_section(s, cfg, model, mdata, groupby, state)),
                ("screen", _TITLES[4][1], lambda s: _screen_section(s, cfg, model, mdata, groupby, state, tmp)),
                ("biomarkers", _TITLES[5][1], lambda s: _biomarker_section(s, cfg, model, mdata, groupby, state)),
            ]
            for key, title, fn in steps:
                if key not in cfg.sections:
                    s = rep.add_section(key, title)
                    s.status = "skipped"
                    s.text("not selected (--sections)")
                    continue
                logger.info("demo: %s", title)
                with rep.section(key, title) as sec:
                    fn(sec)
        _write_tables(rep, tmp)
        rep.write(tmp / "report.html")
    secs = {s.key: round(s.seconds, 2) for s in rep.sections if s.seconds is not None}
    return DemoResult(out=out, report=out / "report.html", failed=[s.key for s in rep.failed],
                      seconds=time.perf_counter() - t0, section_seconds=secs)


_TITLES = [("data", "1. Data and model"), ("generation", "2. Generation: real vs generated cells"),
           ("translation", "3. Cross-modal translation"), ("grn", "4. Gene-regulatory networks"),
           ("screen", "5. In-silico TF knockout screen"), ("biomarkers", "6. Biomarkers and regulators")]


def _write_tables(rep: Report, folder: Path) -> None:
    """Every table of the report as CSV under ``tables/`` (plus ``sections.json``)."""
    from .._io import atomic_write_json

    (folder / "tables").mkdir(exist_ok=True)
    for s in rep.sections:
        for kind, payload in s.items:
            if kind == "table":
                _, df, _, _, name = payload
                df.to_csv(folder / "tables" / f"{name}.csv", index=False)
    atomic_write_json(folder / "sections.json",
                      [{"key": s.key, "title": s.title, "status": s.status, "seconds": s.seconds, "error": s.error}
                       for s in rep.sections])
