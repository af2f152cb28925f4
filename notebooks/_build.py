"""Generate the tutorial notebooks (outputs cleared) from the cell sources below.

    python notebooks/_build.py            # rewrite every notebook
    python notebooks/_build.py --check    # exit 1 if a notebook differs from this script

Edit the notebooks HERE, not in Jupyter, so that they stay reviewable and in sync. Every notebook
reads ``SCDX_FAST=1`` (set by ``tests/test_notebooks.py``) to shrink cells, steps and targets, and
finds the model with :func:`scdiffx_grn.report.default_model_path` (the shipped
``mouse_mop_demo``, or ``$SCDX_DEMO_MODEL``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
import os
import warnings

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

import scdiffx_grn as scdx
from scdiffx_grn import ScDiffusionX, datasets, eval as ev, get, pl, pp, tl
from scdiffx_grn.report import default_model_path

warnings.filterwarnings("ignore", category=FutureWarning)
FAST = os.environ.get("SCDX_FAST") == "1"  # tests set this to shrink everything
scdx.settings.progress = not FAST
if os.environ.get("SCDX_THREADS"):  # e.g. 1 on a busy shared machine
    torch.set_num_threads(int(os.environ["SCDX_THREADS"]))
%matplotlib inline'''

LOAD = '''\
model = ScDiffusionX.load(default_model_path(), device="cpu")
mdata = datasets.mouse_mop(n_cells=N_CELLS, seed=0)
mdata = model.subset_to_model(mdata)  # the model's genes and peaks, in its order
ScDiffusionX.setup_mudata(mdata, labels=["cell_type"])
print(model)
mdata'''

TFS = '''\
# transcription factors: the one TF list (DoRothEA A-C sources among the model's genes, most targets first)
tfs = datasets.tf_list(mdata.mod["rna"].var_names, organism="mouse", source="dorothea", levels="ABC",
                       min_targets=1)
len(tfs), tfs[:10]'''


def nb_quickstart():
    return [
        new_markdown_cell("# 01 · Quickstart: data, model, generation, translation\n\n"
                          "Load the embedded mouse motor-cortex SNARE-seq data (paired RNA + ATAC), the shipped "
                          "scDiffusion-X checkpoint, generate paired cells of chosen cell types and translate "
                          "chromatin accessibility into expression.\n\n"
                          "Command-line equivalent: `scdiffx-grn demo` (everything at once, as an HTML report)."),
        new_code_cell(SETUP),
        new_code_cell("N_CELLS = 300 if FAST else 2000      # real cells loaded\n"
                      "N_STEPS = 2 if FAST else 20         # sampler steps\n"
                      "N_GEN = 40 if FAST else 300         # generated cells per type"),
        new_markdown_cell("## Data and model\n`datasets.mouse_mop()` returns a `MuData` with modalities `rna` "
                          "and `atac` (raw counts in `layers['counts']`, labels in `obs`)."),
        new_code_cell(LOAD),
        new_code_cell("mdata.obs['cell_type'].value_counts().head(10)"),
        new_markdown_cell("## Generate paired cells\nConditioned on cell type, with classifier-free guidance."),
        new_code_cell('types = list(mdata.obs["cell_type"].value_counts().index[:3])\n'
                      'gen = model.generate({"cell_type": np.repeat(types, N_GEN)}, sampler="dpm++",\n'
                      '                     n_steps=N_STEPS, guidance_scale=2.0, seed=0)\n'
                      "gen"),
        new_code_cell('real = mdata[mdata.obs["cell_type"].isin(types)].copy()\n'
                      'fig = pl.umap_real_vs_generated(real.mod["rna"], gen.mod["rna"], groupby="cell_type",\n'
                      '                                basis="pca" if FAST else "umap")'),
        new_markdown_cell("## Translate ATAC → RNA\nEach cell's accessibility profile is translated into "
                          "expression (log-normalised). The default readout is the **posterior mean**, the "
                          "model's point prediction (one denoiser call per noise); compare it with other "
                          "predictors."),
        new_code_cell('pred = model.translate(mdata, direction="atac->rna", seed=0)\n'
                      "pred"),
        new_markdown_cell("For uncertainty, draw posterior samples: `X` is decoded from the samples' latent mean "
                          "and `layers['std']` holds the spread over samples; `source_guidance` > 1 sharpens "
                          "single samples toward the observed ATAC."),
        new_code_cell('samples = model.translate(mdata, direction="atac->rna", readout="samples", n_samples=2,\n'
                      '                          n_steps=N_STEPS, seed=0, return_samples=True)\n'
                      'samples.uns["samples"].shape'),
        new_code_cell('metrics = ev.evaluate_translation(mdata.mod["rna"], pred, modality="rna", distribution=False)\n'
                      'metrics[metrics.cell_type == "all"]'),
        new_code_cell('pred_atac = model.translate(mdata, direction="rna->atac", n_steps=N_STEPS, seed=0)\n'
                      'm = ev.evaluate_translation(mdata.mod["atac"], pred_atac, modality="atac", distribution=False)\n'
                      'm[m.cell_type == "all"]'),
        new_markdown_cell("Next: train your own model (02), cell-type GRNs (03), knockout screens (04), "
                          "biomarkers (05)."),
    ]


def nb_train():
    return [
        new_markdown_cell("# 02 · Train your own model\n\n"
                          "`setup_mudata` checks the input (paired barcodes, raw counts, labels); the model "
                          "trains its two autoencoders, then the Dual-Cross-Attention denoiser on the latents. "
                          "The sizes here are tiny so that the notebook runs on a laptop CPU in a few "
                          "minutes; `analyses/train_model.py --preset demo` is the recipe of the shipped "
                          "checkpoint.\n\nCommand-line equivalent: `scdiffx-grn train --data my.h5mu --out "
                          "my_model --ae-epochs 40 --diffusion-steps 6000`."),
        new_code_cell(SETUP),
        new_code_cell("N_CELLS = 400 if FAST else 4000\n"
                      "N_PEAKS = 400 if FAST else 3000\n"
                      "AE_EPOCHS = 1 if FAST else 20\n"
                      "DIFF_STEPS = 20 if FAST else 2000"),
        new_markdown_cell("## Data: a train / validation / test split and the most frequent peaks"),
        new_code_cell("mdata = datasets.mouse_mop(n_cells=N_CELLS, seed=0)\n"
                      'pp.split_cells(mdata, fractions=(0.8, 0.1, 0.1), seed=0, stratify="cell_type")\n'
                      "# peaks chosen on the training cells only, so the test cells stay unseen\n"
                      'pp.filter_peaks(mdata, min_frac=0.0, top_n=N_PEAKS, cells=mdata.obs["split"] == "train")\n'
                      'mdata.obs["split"].value_counts()'),
        new_markdown_cell("Your own data: `datasets.read_multiome('sample.h5mu')` or "
                          "`datasets.read_multiome(rna='rna.h5ad', atac='atac.h5ad')` (10x `.h5` and matrix "
                          "folders work too)."),
        new_code_cell('ScDiffusionX.setup_mudata(mdata, labels=["cell_type"], rna_layer="counts", atac_layer="counts")\n'
                      "model = ScDiffusionX(mdata, latent_dim=16 if FAST else 32, token_dim=4,\n"
                      "                     width=16 if FAST else 64, n_heads=2 if FAST else 4,\n"
                      "                     n_layers=1 if FAST else 2, seed=0)\n"
                      "history = model.train(ae_epochs=AE_EPOCHS, diffusion_steps=DIFF_STEPS, batch_size=128,\n"
                      '                      lr=1e-3, split_key="split", seed=0, device="cpu")\n'
                      "model"),
        new_code_cell("fig, axes = plt.subplots(1, 2, figsize=(9, 3))\n"
                      'for ax, key in zip(axes, ["ae_loss", "diffusion_loss"]):\n'
                      "    ax.plot(history[key]); ax.set_title(key); ax.set_xlabel('logged step')\n"
                      "fig.tight_layout()"),
        new_markdown_cell("## Save and load\nA model folder holds `config.json`, `model.pt` and the feature "
                          "names; saving is atomic. `load(..., mdata=...)` refuses data with other features."),
        new_code_cell("import tempfile, pathlib\n"
                      'path = pathlib.Path(tempfile.mkdtemp()) / "my_model"\n'
                      "model.save(path)\n"
                      "sorted(p.name for p in path.iterdir())"),
        new_code_cell("loaded = ScDiffusionX.load(path, mdata=mdata, device='cpu')\n"
                      'test = mdata[mdata.obs["split"] == "test"].copy()\n'
                      'a = model.translate(test, direction="atac->rna", n_steps=5, seed=0).X\n'
                      'b = loaded.translate(test, direction="atac->rna", n_steps=5, seed=0).X\n'
                      'print("identical predictions after reload:", np.allclose(a, b, atol=1e-5))'),
        new_markdown_cell("## Held-out evaluation against baselines\n`eval.evaluate_model` runs the "
                          "generation / translation protocol on the test cells with baselines "
                          "(`scdiffx-grn evaluate` on the command line)."),
        new_code_cell('tab = ev.evaluate_translation(test.mod["rna"], loaded.translate(test, direction="atac->rna",\n'
                      '                              n_steps=5, seed=0), modality="rna", distribution=False)\n'
                      'tab[tab.cell_type == "all"]'),
    ]


def nb_grn():
    return [
        new_markdown_cell("# 03 · Cell-type gene-regulatory networks\n\n"
                          "1. candidate peak → gene pairs (peaks within 150 kb of a TSS);\n"
                          "2. model-based scores per cell type (`tl.extract_grn`: Dual-Cross-Attention × encoder "
                          "saliency; or integrated gradients / in-silico peak knockout);\n"
                          "3. the TF layer (`tl.tf_gene_network`): TF → peak links (motif tables, a CellOracle "
                          "base GRN, or TF / peak co-variation) combined with peak → gene scores;\n"
                          "4. export to Cytoscape (GraphML) and CSV.\n\n"
                          "Command-line equivalent: `scdiffx-grn grn --model models/mouse_mop_demo --data "
                          "mouse_mop --out my_grn`."),
        new_code_cell(SETUP),
        new_code_cell("N_CELLS = 400 if FAST else 3000\n"
                      "MAX_CELLS = 20 if FAST else 300   # cells per cell type used for scoring\n"
                      "N_TYPES = 2 if FAST else 5"),
        new_code_cell(LOAD),
        new_markdown_cell("## First: does the model's translation use the ATAC?\n"
                          "Model-based peak → gene scores are only as informative as the dependence of the "
                          "translated expression on the ATAC input. `eval.source_dependence` translates cells "
                          "from their own and from shuffled ATAC profiles and labels both with a classifier "
                          "trained on real RNA: a useful model gives clearly more correct labels (and a higher "
                          "per-cell agreement) for its own ATAC; `verdict` says it in words. (The shipped demo "
                          "checkpoint does, modestly: see BENCHMARKS.md.)"),
        new_code_cell('from scdiffx_grn import eval as ev\n'
                      'dep = ev.source_dependence(model, mdata, direction="atac->rna", n_cells=MAX_CELLS * 2,\n'
                      '                           n_pcs=10 if FAST else 30, seed=0)\n'
                      'print(dep["verdict"])'),
        new_markdown_cell("## Peak → gene scores per cell type"),
        new_code_cell("from scdiffx_grn import grn\n"
                      'tss = grn.read_tss(datasets.tss_annotation("mm10"))  # or your own TSS table\n'
                      'types = list(mdata.obs["cell_type"].value_counts().index[:N_TYPES])\n'
                      'tl.extract_grn(model, mdata, method="attention", tss=tss, window=150_000, cell_types=types,\n'
                      '               max_cells=MAX_CELLS, seed=0, key_added="grn")\n'
                      'get.grn_df(mdata, key="grn", top_k=5)'),
        new_markdown_cell("## TF layer\nHere TF → peak links come from co-variation of TF expression and peak "
                          "accessibility across metacells; pass a motif table (`tf, peak`) or a CellOracle base "
                          "GRN instead when you have one."),
        new_code_cell(TFS),
        new_code_cell('tl.tf_gene_network(mdata, "coaccessibility", tfs=tfs, groupby="cell_type", key_added="grn_tf")\n'
                      'net = get.grn_df(mdata, key="grn_tf")\n'
                      'net.sort_values("weight", key=abs, ascending=False).head(10)'),
        new_code_cell('fig = pl.grn_network(net, cell_type=types[0], top_regulators=5, top_targets=8)'),
        new_code_cell('fig = pl.grn_specificity_heatmap(net, top_k=5, level="source")'),
        new_markdown_cell("## Export for Cytoscape\n`write_grn` picks the format from the suffix: `.graphml` "
                          "(one multigraph keyed by cell type, or one file per cell type), `.csv`, `.parquet`. In "
                          "Cytoscape: *File → Import → Network from File* and choose the GraphML (edge columns "
                          "`weight`, `cell_type`, `n_peaks`... are kept) or the CSV (source = `source`, "
                          "target = `target`)."),
        new_code_cell("import tempfile, pathlib\n"
                      'out = pathlib.Path(tempfile.mkdtemp()) / "grn_export"\n'
                      'files = grn.write_grn(net, out / "tf_gene.graphml")\n'
                      'files += grn.write_grn(net, out / "tf_gene.graphml", per_cell_type=True)\n'
                      'files += grn.write_grn(net, out / "tf_gene.csv")\n'
                      'files += grn.write_grn(get.grn_df(mdata, key="grn"), out / "peak_gene.csv")\n'
                      "[f.name for f in files]"),
        new_code_cell("import networkx as nx\n"
                      'g = nx.read_graphml(out / "tf_gene.graphml")\n'
                      'G = get.to_networkx(net, cell_type=types[0])\n'
                      'print(g.number_of_edges(), "edges in the GraphML;", G.number_of_nodes(), "nodes for", types[0])'),
    ]


def nb_screen():
    return [
        new_markdown_cell("# 04 · In-silico knockouts and screens\n\n"
                          "A perturbation edits one modality of real cells (e.g. TF expression → 0), re-encodes "
                          "them and translates to the other modality with the *same* noise as the unedited "
                          "cells, so the difference is the effect of the edit (paired control).\n\n"
                          "Command-line equivalent: `scdiffx-grn screen --model models/mouse_mop_demo --data "
                          "mouse_mop -t Mef2c,Neurod2 --out my_screen`."),
        new_code_cell(SETUP),
        new_code_cell("N_CELLS = 300 if FAST else 2000\n"
                      "N_SAMPLES = 1 if FAST else 3\n"
                      "N_STEPS = 2 if FAST else 20\n"
                      "N_TFS = 2 if FAST else 12"),
        new_code_cell(LOAD),
        new_code_cell(TFS),
        new_markdown_cell("## One knockout: `tl.perturb`"),
        new_code_cell("from scdiffx_grn.perturb import Perturbation\n"
                      'ko = Perturbation([tfs[0]], kind="knockout", modality="rna", n_samples=N_SAMPLES)\n'
                      'tl.perturb(model, mdata, ko, groupby="cell_type", seed=0, key_added="perturbation",\n'
                      '           translate_kwargs={"n_steps": N_STEPS})\n'
                      'eff = get.perturbation_df(mdata, key="perturbation")\n'
                      'eff.sort_values("pval").head()'),
        new_code_cell('ct = mdata.obs["cell_type"].value_counts().index[0]\n'
                      'fig = pl.volcano(eff, cell_type=ct)'),
        new_markdown_cell("The t-test over cells above (`pval`, `fdr`) asks only whether the model predicts a "
                          "*consistent* shift; over thousands of cells any shift, however tiny, passes it. "
                          "`tl.screen` therefore calls significance against **controls**, as CRISPR screens do."),
        new_markdown_cell("## A control-calibrated screen: `tl.screen`\nOne target at a time, summarised per "
                          "target × cell type. Each cell type also gets 20 control knockouts (non-TF genes "
                          "matched to the targets on detection rate and mean expression, run through the same "
                          "engine, shared by all targets). A peak is `significant` for a target when its "
                          "effect (`log2fc`: log2 odds ratio of accessibility) stands out from the controls' "
                          "effects on peaks (`z_vs_controls`, `fdr_vs_controls` ≤ 0.05) **and** is at least "
                          "`min_effect` = 0.1; `moves_state` says whether the target's latent shift exceeds its "
                          "controls' (FDR over targets). `n_sig_t` keeps the old t-test count for comparison. "
                          "With `out_dir`, every finished target is written atomically and an interrupted "
                          "screen resumes where it stopped."),
        new_code_cell("import tempfile, pathlib\n"
                      'screen_dir = pathlib.Path(tempfile.mkdtemp()) / "screen"\n'
                      'summary = tl.screen(model, mdata, tfs[:N_TFS], kind="knockout", modality="rna",\n'
                      '                    groupby="cell_type", out_dir=screen_dir, n_samples=N_SAMPLES, seed=0,\n'
                      '                    translate_kwargs={"n_steps": N_STEPS})\n'
                      'cols = ["perturbation", "cell_type", "n_sig", "n_sig_t", "max_abs_log2fc", "latent_shift",\n'
                      '        "latent_shift_ctrl_mean", "p_state_vs_controls", "moves_state"]\n'
                      'summary.sort_values("p_state_vs_controls")[cols].head(10)'),
        new_code_cell("from scdiffx_grn.perturb._controls import significance_text\n"
                      "print(significance_text(summary))"),
        new_markdown_cell("Read it this way: a target's calls are real only where they stand out from the "
                          "controls; when no feature and no target passes, the honest answer is that these "
                          "knockouts move the model's cells no more than knocking out an ordinary matched gene "
                          "(BENCHMARKS.md, 'Mouse: do top-regulator knockouts move cells more than matched "
                          "control genes?'). With 20 controls a target-level rank p-value cannot go below "
                          "1/21, which is why the latent-shift test is parametric and the per-feature null "
                          "is pooled over features."),
        new_code_cell("from scdiffx_grn.perturb import panel_test\n"
                      "panel_test(summary)  # do the targets, as a set, move cells more than controls?"),
        new_code_cell('fig = pl.screen_heatmap(summary, value="latent_shift")'),
        new_code_cell("# running it again only reads the finished targets back\n"
                      "import time\n"
                      "t = time.perf_counter()\n"
                      'again = tl.screen(model, mdata, tfs[:N_TFS], kind="knockout", modality="rna", groupby="cell_type",\n'
                      '                  out_dir=screen_dir, n_samples=N_SAMPLES, seed=0, translate_kwargs={"n_steps": N_STEPS})\n'
                      'print(f"resumed in {time.perf_counter() - t:.2f} s; same rows: {len(again) == len(summary)}")'),
    ]


def nb_biomarkers():
    return [
        new_markdown_cell("# 05 · Regulators and biomarkers\n\n"
                          "TF activity with decoupler on reference networks (CollecTRI, DoRothEA), on real and on "
                          "translated cells; biomarker ranking that combines specificity, model importance, "
                          "reference agreement and activity; gene-set enrichment (offline GMT files).\n\n"
                          "Command-line equivalent: `scdiffx-grn biomarkers --data mouse_mop --out my_markers`."),
        new_code_cell(SETUP),
        new_code_cell("N_CELLS = 400 if FAST else 3000\n"
                      "N_STEPS = 2 if FAST else 20\n"
                      "N_PERM = 20 if FAST else 500"),
        new_code_cell(LOAD),
        new_markdown_cell("## Regulator activity against CollecTRI and DoRothEA"),
        new_code_cell('tl.regulator_activity(mdata, "collectri", organism="mouse", key_added="act_collectri")\n'
                      'tl.regulator_activity(mdata, "dorothea", organism="mouse", key_added="act_dorothea")\n'
                      'get.regulator_df(mdata, key="act_dorothea", top_k=3).head(10)'),
        new_code_cell('fig = pl.regulator_dotplot(mdata, key="act_dorothea", top_k=2)'),
        new_code_cell("# agreement of the two references: top regulators per cell type\n"
                      'a = get.regulator_df(mdata, key="act_collectri", top_k=5)\n'
                      'b = get.regulator_df(mdata, key="act_dorothea", top_k=5)\n'
                      "src = [c for c in ('source', 'regulator', 'tf') if c in a.columns][0]\n"
                      "shared = {ct: sorted(set(a[a.cell_type == ct][src]) & set(b[b.cell_type == ct][src]))\n"
                      "          for ct in a.cell_type.unique()}\n"
                      "pd.Series(shared).head()"),
        new_markdown_cell("## Activity on translated expression\nThe same call works on cells predicted from "
                          "ATAC alone (`model.translate`)."),
        new_code_cell('pred = model.translate(mdata, direction="atac->rna", n_steps=N_STEPS, seed=0)\n'
                      'pred.obs["cell_type"] = mdata.obs["cell_type"].values\n'
                      'tl.regulator_activity(pred, "dorothea", organism="mouse", key_added="act_translated")\n'
                      'get.regulator_df(pred, key="act_translated", top_k=2).head(6)'),
        new_markdown_cell("## Biomarker ranking"),
        new_code_cell('tl.rank_biomarkers(mdata, "cell_type", reference="dorothea", organism="mouse",\n'
                      '                   activity_key="act_dorothea", peak_top=200)\n'
                      'ct = mdata.obs["cell_type"].value_counts().index[0]\n'
                      'get.biomarker_df(mdata, cell_type=ct, kind="tf", top_k=5)'),
        new_code_cell('get.biomarker_df(mdata, cell_type=ct, kind="gene", top_k=5)'),
        new_markdown_cell("## Enrichment (preranked GSEA, MSigDB Hallmark shipped offline)"),
        new_code_cell('tl.enrichment(mdata, "hallmark", organism="mouse", groupby="cell_type",\n'
                      '              permutation_num=N_PERM, seed=0, min_size=5)\n'
                      'enr = get.enrichment_df(mdata)\n'
                      'enr.head(10)'),
        new_code_cell("if len(enr):\n    fig = pl.enrichment_barplot(enr, top_k=5)"),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": nb_quickstart,
    "02_train_your_own.ipynb": nb_train,
    "03_cell_type_grns.ipynb": nb_grn,
    "04_knockout_screen.ipynb": nb_screen,
    "05_biomarkers.ipynb": nb_biomarkers,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        c["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        text = nbformat.writes(build(name)) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(path)
    if stale:
        print("out of date (run python notebooks/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
