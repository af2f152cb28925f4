"""Mouse MOp: do knockouts of a cell type's top regulators move cells more than matched control genes?

For each of the ``n_types`` largest cell types, the ``n_tfs`` most cell-type-specific DoRothEA
A-C TFs among the model's genes (specificity = mean log-expression in the type minus the mean
over the other types; expressed in >= 5 % of the type's cells) are knocked out in that type's
cells (RNA -> ATAC translation, posterior-mean engine by default). Each TF gets two sets of
``n_controls`` non-TF control genes (no DoRothEA / TRRUST source):

- ``expr``: nearest in (mean log-expression, detection fraction) within the type;
- ``expr+spec``: nearest in (mean log-expression, detection fraction, specificity) - non-TF
  markers of the type, so "TF-ness" is tested beyond "is a marker".

Readouts per knockout (``perturb``'s state table): ``latent_shift`` (L2 norm of the mean
translated ATAC-latent difference) and ``frac_type_changed`` (fraction of cells whose nearest
real-cell-type centroid of ATAC latents changed). Test, per readout and control set, over the
(type, TF) pairs: d = TF value - mean of its controls; one-sided exact sign-flip permutation test
of mean(d) > 0 (all 2^n flips up to n = 16, else 20,000 random flips) and the Wilcoxon signed-rank
p-value; plus each TF's rank among its own controls.

Per-peak calls of each TF against its 5 ``expr`` controls use the library's
:class:`~scdiffx_grn.perturb.ControlCalibration` (column ``n_sig_vs_controls`` beside the t-test's
``n_sig_peaks``); the control choice and the sign-flip test are the library's
(:func:`~scdiffx_grn.perturb._controls.pick_controls`, :func:`~scdiffx_grn.perturb.sign_flip_test`).

With ``--screen`` (default) it then runs the default TF screen on all cells,
``tl.screen(model, mdata, "all_tfs", organism="mouse")`` (20 matched controls per type,
``min_effect`` 0.1), and records significant calls before (t-test over cells, FDR <= 0.05, no
effect floor: the old default) and after (against the controls), the controls' own calls, the
target-level tests and :func:`~scdiffx_grn.perturb.panel_test` (``info.json`` -> ``default_screen``,
``tf_screen/``, ``tf_screen_panel.csv``).

This replaces the one-control-per-TF check of ``analyses/benchmark_a549.py::run_mouse`` (which
still runs with that script; this script runs the mouse part alone).

Usage::

    python analyses/mouse_knockouts.py --model-path models/mouse_mop_demo --out-dir results/mouse_ko_v

Writes ``mouse_ko_all.csv`` (one row per knockout), ``mouse_ko_tests.csv`` and ``results.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def pick_controls(stats: pd.DataFrame, tf: str, pool: list[str], n: int, cols: list[str], seed: int = 0) -> list[str]:
    """The ``n`` pool genes nearest to ``tf`` in the standardised ``cols`` of ``stats`` (the library's
    :func:`scdiffx_grn.perturb._controls.pick_controls`, the rule ``tl.screen`` draws its controls by)."""
    from scdiffx_grn.perturb._controls import pick_controls as _pick

    names = list(stats.index)
    pos = {g: i for i, g in enumerate(names)}
    idx = _pick(stats[cols].to_numpy(float), names, [pos[tf]], [pos[g] for g in pool], n, seed=seed)
    return [names[i] for i in idx]


def main(model_path: str = "models/mouse_mop_demo", out_dir: str = "results/mouse_ko_v", n_cells: int = 0,
         n_types: int = 6, n_tfs: int = 2, n_controls: int = 5, readout: str = "mean", n_noise: int = 1,
         n_samples: int = 3, n_steps: int = 20, min_detect: float = 0.05, seed: int = 0,
         device: str | None = None, screen: bool = True) -> dict:
    """Run the TF-vs-control knockout benchmark (see the module docstring)."""
    from scipy.stats import wilcoxon

    from scdiffx_grn import ScDiffusionX, datasets
    from scdiffx_grn.perturb import ControlCalibration, Perturbation, perturb, sign_flip_test

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mdata = datasets.mouse_mop(n_cells=n_cells or None, seed=seed)
    model = ScDiffusionX.load(model_path, device=device)
    ScDiffusionX.setup_mudata(mdata, labels=list(model.config.label_keys))
    genes = pd.Index(model.rna_var_names)
    C = mdata.mod["rna"][:, genes].layers["counts"]
    C = C.toarray() if hasattr(C, "toarray") else np.asarray(C)
    lib = C.sum(1, keepdims=True)
    lib[lib == 0] = 1
    Y = pd.DataFrame(np.log1p(1e4 * C / lib), columns=genes)
    D = pd.DataFrame((C > 0).astype(float), columns=genes)
    ct = mdata.obs["cell_type"].astype(str).to_numpy()
    means, detect = Y.groupby(ct).mean(), D.groupby(ct).mean()
    tf_all = set(datasets.tf_list(organism="mouse", source="dorothea", levels="ABCDE")) | set(
        datasets.tf_list(organism="mouse", source="trrust"))
    tfs = datasets.tf_list(genes, organism="mouse", source="dorothea", levels="ABC", order="name")
    pool = [g for g in genes if g not in tf_all]
    types = list(pd.Series(ct).value_counts().index[:n_types])
    perts, meta = [], []
    for cty in types:
        others = means.drop(index=cty).mean(0)
        st = pd.DataFrame({"mean": means.loc[cty], "detect": detect.loc[cty], "spec": means.loc[cty] - others})
        cand = [t for t in tfs if st.loc[t, "detect"] >= min_detect]
        top = st.loc[cand, "spec"].sort_values(ascending=False).index[:n_tfs]
        for tf in top:
            sets = {"expr": pick_controls(st, tf, pool, n_controls, ["mean", "detect"], seed=seed),
                    "expr+spec": pick_controls(st, tf, pool, n_controls, ["mean", "detect", "spec"], seed=seed)}
            items = [(tf, "TF", None)] + [(g, "control", s) for s, gs in sets.items() for g in gs]
            for gene, role, cset in items:
                name = f"{gene}_KO_in_{cty}"
                if any(p.name == name for p in perts):
                    meta.append({"perturbation": name, "type": cty, "tf": tf, "gene": gene, "role": role,
                                 "control_set": cset, **st.loc[gene].to_dict()})
                    continue
                perts.append(Perturbation([gene], kind="knockout", cells=cty, n_samples=n_samples, name=name))
                meta.append({"perturbation": name, "type": cty, "tf": tf, "gene": gene, "role": role,
                             "control_set": cset, **st.loc[gene].to_dict()})
    t1 = time.time()
    res = perturb(model, mdata, perts, seed=seed, readout=readout, n_noise=n_noise,
                  translate_kwargs={"n_steps": n_steps}, copy=True).uns["perturbation"]
    t_pert = time.time() - t1
    state = res["state"]
    state = state[state["cell_type"] == state["perturbation"].str.split("_KO_in_").str[1]]
    eff = res["effects"]
    eff = eff[eff["cell_type"] == eff["perturbation"].str.split("_KO_in_").str[1]]
    nsig = eff.assign(sig=eff["fdr"] <= 0.05).groupby("perturbation")["sig"].sum()
    m = pd.DataFrame(meta).merge(state, on="perturbation", how="left")
    m["n_sig_peaks"] = m["perturbation"].map(nsig).fillna(0).astype(int)  # t-test over cells (old default)
    # per-peak calls against each TF's own expression-matched controls (the library's calibration)
    m["n_sig_vs_controls"] = np.nan
    for (cty, tf), sub in m.groupby(["type", "tf"], sort=False):
        cn = sub.loc[(sub["role"] == "control") & (sub["control_set"] == "expr"), "perturbation"].tolist()
        tn = sub.loc[sub["role"] == "TF", "perturbation"].iloc[0]
        cal = ControlCalibration(eff[eff["perturbation"].isin(cn)], state[state["perturbation"].isin(cn)],
                                 group_col="cell_type")
        calibrated = cal.effects(eff[eff["perturbation"] == tn])
        m.loc[m["perturbation"] == tn, "n_sig_vs_controls"] = int(calibrated["significant"].sum())
    m.to_csv(out / "mouse_ko_all.csv", index=False)

    tests, pairs = [], []
    for cset in ("expr", "expr+spec"):
        for col in ("latent_shift", "frac_type_changed"):
            d, ranks = [], []
            for (cty, tf), sub in m.groupby(["type", "tf"], sort=False):
                tfv = float(sub.loc[sub["role"] == "TF", col].iloc[0])
                cv = sub.loc[(sub["role"] == "control") & (sub["control_set"] == cset), col].to_numpy(float)
                d.append(tfv - cv.mean())
                ranks.append(float((cv < tfv).mean() + 0.5 * (cv == tfv).mean()))
                pairs.append({"type": cty, "tf": tf, "control_set": cset, "readout": col, "tf_value": tfv,
                              "control_mean": float(cv.mean()), "control_max": float(cv.max()),
                              "tf_quantile_among_controls": ranks[-1]})
            d = np.asarray(d)
            try:
                pw = float(wilcoxon(d, alternative="greater").pvalue) if np.any(d != 0) else 1.0
            except ValueError:
                pw = float("nan")
            tests.append({"control_set": cset, "readout": col, "n_pairs": len(d), "mean_tf_minus_control": d.mean(),
                          "n_tf_above_control_mean": int((d > 0).sum()),
                          "mean_tf_quantile_among_controls": float(np.mean(ranks)),
                          "p_sign_flip": sign_flip_test(d, seed=seed), "p_wilcoxon": pw})
    tests = pd.DataFrame(tests)
    pairs = pd.DataFrame(pairs)
    tests.to_csv(out / "mouse_ko_tests.csv", index=False)
    pairs.to_csv(out / "mouse_ko_pairs.csv", index=False)
    ctrl_match = m.groupby("type")["ctrl_type_match"].first() if "ctrl_type_match" in m else pd.Series(dtype=float)
    info = {"model": model_path, "n_cells": int(mdata.n_obs), "types": types, "n_knockouts": len(perts),
            "readout": readout, "n_noise": n_noise, "perturb_seconds": round(t_pert, 1),
            "total_seconds": round(time.time() - t0, 1), "ctrl_type_match": ctrl_match.to_dict()}
    screen_md: list[str] = []
    if screen:
        info["default_screen"], screen_md = default_screen(model, mdata, out, seed=seed)
    (out / "info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    tf_rows = m[m["role"] == "TF"][["type", "gene", "spec", "detect", "latent_shift", "frac_type_changed",
                                    "top_new_type", "n_sig_peaks", "n_sig_vs_controls"]]
    md = ["# Mouse MOp: top-regulator knockouts vs matched control genes", "",
          (f"Model {model_path}; {info['n_cells']} cells; {len(perts)} knockouts; readout {readout}; "
           f"perturbation {info['perturb_seconds']} s."), "",
          "## Tests (over type x TF pairs; d = TF - mean of its controls; one-sided)", "", _md(tests), "",
          "## TF knockouts", "", _md(tf_rows), "",
          "## Per pair", "", _md(pairs), "",
          f"Nearest-centroid readout matches the own type for unperturbed cells: {info['ctrl_type_match']}", "",
          *screen_md]
    (out / "results.md").write_text("\n".join(md))
    print("\n".join(md))
    return info


def default_screen(model, mdata, out: Path, *, seed: int = 0, alpha: float = 0.05) -> tuple[dict, list[str]]:
    """The default TF screen (``tl.screen(model, mdata, "all_tfs", organism="mouse")``: control-calibrated,
    20 matched controls per type, ``min_effect`` 0.1) on all cells: significant calls before
    (t-test over cells, FDR <= alpha, no effect floor: the old default) and after."""
    from scdiffx_grn import tl
    from scdiffx_grn.perturb import load_screen_effects, panel_test

    t0 = time.time()
    sdir = out / "tf_screen"
    summ = tl.screen(model, mdata, "all_tfs", organism="mouse", out_dir=sdir, resume=False, seed=seed,
                     alpha=alpha, keep_effects="all", show_progress=False)
    secs = time.time() - t0
    eff = load_screen_effects(sdir)
    ctrl = summ.attrs["controls"]
    min_eff = float(json.loads((sdir / "config.json").read_text())["min_effect"])
    t_sig = eff["fdr"] <= alpha
    sig = eff["significant"]
    info = {"n_targets": int(summ["perturbation"].nunique()), "n_types": int(summ["cell_type"].nunique()),
            "n_tests": int(len(eff)), "min_effect_log2": min_eff, "screen_seconds": round(secs, 1),
            "n_controls_per_type": int(summ["n_controls"].max()),
            "before_n_sig_t_test": int(t_sig.sum()), "after_n_sig_vs_controls": int(sig.sum()),
            "after_calls_below_min_effect": int((sig & (eff["log2fc"].abs() < min_eff)).sum()),
            "max_abs_effect_prob": float(eff["effect"].abs().max()),
            "max_abs_log2_odds": float(eff["log2fc"].abs().max()),
            "n_tests_above_min_effect": int((eff["log2fc"].abs() >= min_eff).sum()),
            "min_fdr_vs_controls": float(eff["fdr_vs_controls"].min()),
            "max_n_sig_t_one_target_type": int(summ["n_sig_t"].max()),
            "controls_n_sig_t_test": int(ctrl["n_sig_t"].sum()), "controls_n_sig_vs_others": int(ctrl["n_sig"].sum()),
            "n_target_types_moves_state": int(summ["moves_state"].sum()),
            "min_fdr_state_vs_controls": float(summ["fdr_state_vs_controls"].min())}
    panel = panel_test(summ, seed=seed)
    panel.to_csv(out / "tf_screen_panel.csv", index=False)
    top = summ.sort_values("n_sig_t", ascending=False).head(8)[
        ["perturbation", "cell_type", "n_sig_t", "n_sig", "max_abs_effect", "max_abs_log2fc", "latent_shift",
         "latent_shift_ctrl_mean", "p_state_vs_controls", "fdr_state_vs_controls"]]
    md = ["## Default TF screen, control-calibrated (all cells)", "",
          f"`tl.screen(model, mdata, 'all_tfs', organism='mouse')`: {info['n_targets']} TFs x {info['n_types']} "
          f"types, {info['n_controls_per_type']} matched controls per type, {secs:.0f} s.", "",
          _md(pd.DataFrame([info]).T.reset_index().rename(columns={"index": "measure", 0: "value"})), "",
          "Largest t-test counts:", "", _md(top), "", "Panel test per type (do the TFs move cells more than "
          "controls? sign flip over TFs of the latent-shift z):", "", _md(panel), ""]
    return info, md


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    import typer

    typer.run(main)
