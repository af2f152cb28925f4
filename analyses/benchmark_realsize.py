"""The whole workflow at the shape of a real 10x multiome run, with time and peak memory per step.

A synthetic Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` (``datasets.simulate_multiome``: real hg38
symbols and TSSs, 10x-like sparsity, planted peak -> gene links; default 10,000 cells x 36,000 genes x
150,000 peaks) goes through what a new user runs:

1. ``read_multiome`` of the h5 (cell types from a labels table), ``pp.qc``;
2. ``tl.select_features`` (HVGs + TFs, every peak within the window of their TSSs, top peaks); the
   candidate pairs the old recipe (HVGs x the most open 3,000 peaks) would have left are counted beside;
3. ``ScDiffusionX`` with the denoiser sized for the device and the budget (``model.denoiser_size``, as
   the CLI's ``train --preset auto``; ``--model-size default`` keeps the default sizes),
   ``train(preset="auto", time_budget=...)``: the estimate printed before training is compared with the
   measured time; save (checkpoint size);
4. ``tl.extract_grn`` with every method over every cell type and all candidate pairs of the selected
   features (``--grn-cells`` cells per type), each method in its own process with ``--grn-timeout``
   seconds: a method that does not finish (or runs out of memory) is reported as such, with its time;
5. recovery of the planted links among the candidate pairs (average precision) by each method and by the
   distance baseline (``-|distance|``);
6. ``tl.screen`` of every TF among the kept genes (``--screen-tfs``; knockout, posterior mean, matched
   controls, per-target summaries: ``keep_effects="auto"``) in its own process with ``--screen-timeout``
   seconds. The screen folder is resumable: a screen stopped by the timeout reports how many TFs it
   finished in that time (a measured rate, not an extrapolation), the output size on disk and the
   worker's peak RSS;
7. the HTML report of the trained model (``report.run_demo`` on the selected data, hg38), in its own process.

Time (wall) and peak RSS (``resource.getrusage``, the process's maximum so far; a GRN worker's own
maximum) are printed after every step and written to ``<out>/realsize.json`` and ``<out>/realsize.md``.

    python analyses/benchmark_realsize.py --out results/realsize --time-budget 1200
    python analyses/benchmark_realsize.py --cells 300 --genes 2000 --peaks 5000 --out /tmp/rs --time-budget 10
    python analyses/benchmark_realsize.py --out results/realsize --screen-only --screen-timeout 1800
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SCDX_PROGRESS", "0")

METHODS = ("attention", "integrated_gradients", "knockout")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _now_rss_mb(field: str = "VmRSS") -> float:
    """Current RSS (``VmHWM``: this process's own peak, not inherited across exec like ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Steps:
    """Times steps and records the peak RSS after each; prints one line per step."""

    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, fn, **extra):
        t0 = time.perf_counter()
        out = fn()
        row = {"step": name, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_rss_mb(), 1),
               "rss_mb": round(_now_rss_mb(), 1), **extra}
        self.rows.append(row)
        print(f"[realsize] {name}: {row['seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
              f"(now {row['rss_mb']:.0f} MB)", flush=True)
        return out


def _method_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (e.g. ``knockout:knockout_engine=linear``)."""
    name, _, opts = spec.partition(":")
    kw = {}
    for kv in filter(None, opts.split(",")):
        k, v = kv.split("=", 1)
        kw[k] = int(v) if v.lstrip("-").isdigit() else v
    return name, kw


def _grn(model_dir: str, data: str, method: str, n_cells: int, out_csv: str, seed: int, n_types: int = 0) -> dict:
    """One method over every cell type (the first ``n_types`` when > 0; in this process); returns timing
    and the network size."""
    import mudata

    import scdiffx_grn as scdx

    mudata.set_options(pull_on_update=False)
    m = mudata.read_h5mu(data)
    for mod in ("rna", "atac"):
        m.mod[mod].layers["counts"] = m.mod[mod].X
    model = scdx.ScDiffusionX.load(model_dir)
    name, kw = _method_spec(method)
    types = sorted(m.obs["cell_type"].astype(str).unique())
    t0 = time.perf_counter()
    scdx.tl.extract_grn(model, m, method=name, groupby="cell_type", candidates="select_features",
                        cell_types=types[:n_types] if n_types > 0 else None, max_cells=n_cells, seed=seed,
                        key_added="grn", **kw)
    sec = time.perf_counter() - t0
    net = m.uns["grn"]["network"]
    net[["source", "target", "cell_type", "weight"]].to_csv(out_csv, index=False)
    n_types = int(net["cell_type"].nunique())
    return {"method": method, "status": "done", "seconds": round(sec, 2), "n_types": n_types,
            "seconds_per_type": round(sec / max(n_types, 1), 2), "n_edges": int(len(net)),
            "peak_rss_mb": round(_now_rss_mb("VmHWM"), 1)}


def _run_worker(cmd: list[str], timeout: float) -> dict:
    """Run a worker process of this script: its ``RESULT`` line, or a failure row with the last line of its
    stderr (``subprocess.TimeoutExpired`` when it runs past ``timeout`` seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][7:])
    err = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"status": f"failed (exit {proc.returncode}): {err[:200]}", "seconds": round(time.perf_counter() - t0, 1)}


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def _screen(model_dir: str, data: str, out_dir: str, n_tfs: int, seed: int) -> dict:
    """``tl.screen`` of the TFs among the model's genes (the first ``n_tfs`` alphabetically when > 0), every
    cell type, in this process; resumable in ``out_dir``."""
    import mudata

    import scdiffx_grn as scdx

    mudata.set_options(pull_on_update=False)
    m = mudata.read_h5mu(data)
    for mod in ("rna", "atac"):
        m.mod[mod].layers["counts"] = m.mod[mod].X
    model = scdx.ScDiffusionX.load(model_dir)
    tfs = scdx.datasets.tf_list(model.rna_var_names, organism="human", source="collectri", order="name")
    tfs = tfs[:n_tfs] if n_tfs > 0 else tfs
    Path(out_dir).parent.joinpath("screen_targets.json").write_text(json.dumps(tfs))  # for a stopped run's report
    t0 = time.perf_counter()
    summ = scdx.tl.screen(model, m, targets=tfs, groupby="cell_type", out_dir=out_dir, seed=seed,
                          show_progress=False)
    sec = time.perf_counter() - t0
    return {"status": "done", "seconds": round(sec, 1), "n_tfs": len(tfs), "n_done": len(tfs),
            "summary_rows": int(len(summ)), "n_significant": int(summ["n_sig"].sum()) if "n_sig" in summ else None,
            "output_mb": round(_dir_mb(Path(out_dir)), 1), "peak_rss_mb": round(_now_rss_mb("VmHWM"), 1)}


def _screen_step(a, out: Path) -> dict:
    """The TF screen in its own process (``--screen-timeout`` seconds; 0: in this process)."""
    model_dir, data_path, sdir = out / "model", out / "selected.h5mu", out / "screen_tfs"
    if a.screen_timeout <= 0:
        r = _screen(str(model_dir), str(data_path), str(sdir), a.screen_tfs, a.seed)
    else:
        cmd = [sys.executable, __file__, "--seed", str(a.seed), "--screen-worker", str(model_dir), str(data_path),
               str(sdir), str(a.screen_tfs)]
        t0 = time.perf_counter()
        try:
            r = _run_worker(cmd, a.screen_timeout)
        except subprocess.TimeoutExpired:
            done = json.loads((sdir / "done.json").read_text()).get("done", {}) if (sdir / "done.json").exists() else {}
            tgt = out / "screen_targets.json"
            r = {"status": f"stopped at {a.screen_timeout:.0f} s (resumable)", "n_done": len(done),
                 "n_tfs": len(json.loads(tgt.read_text())) if tgt.exists() else None,
                 "seconds": round(time.perf_counter() - t0, 1), "output_mb": round(_dir_mb(sdir), 1)}
    if r.get("n_done"):
        r["seconds_per_tf"] = round(r["seconds"] / r["n_done"], 2)
    print(f"[realsize] screen of the TFs: {r}", flush=True)
    return r


def _report(model_dir: str, data: str, out_dir: str, seed: int) -> dict:
    """The HTML report of the trained model on the selected data (``report.run_demo``: its default sizes,
    hg38 TSSs and human TF lists), in this process."""
    import mudata

    import scdiffx_grn as scdx

    mudata.set_options(pull_on_update=False)
    m = mudata.read_h5mu(data)
    for mod in ("rna", "atac"):
        m.mod[mod].layers["counts"] = m.mod[mod].X
    t0 = time.perf_counter()
    res = scdx.report.run_demo(model=model_dir, data=m, out=out_dir, genome="hg38", seed=seed, overwrite=True)
    return {"status": "done" if res.ok else f"failed sections: {res.failed}", "seconds": round(time.perf_counter() - t0, 1),
            "section_seconds": res.section_seconds, "report": str(res.report),
            "peak_rss_mb": round(_now_rss_mb("VmHWM"), 1)}


def _report_step(a, out: Path) -> dict:
    """The report in its own process (``--report-timeout`` seconds)."""
    cmd = [sys.executable, __file__, "--seed", str(a.seed), "--report-worker", str(out / "model"),
           str(out / "selected.h5mu"), str(out / "report")]
    t0 = time.perf_counter()
    try:
        r = _run_worker(cmd, a.report_timeout)
    except subprocess.TimeoutExpired:
        r = {"status": f"did not finish in {a.report_timeout:.0f} s", "seconds": round(time.perf_counter() - t0, 1)}
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)  # with the worker's start and data loading
    print(f"[realsize] report: {r}", flush=True)
    return r


def _screen_md(r: dict) -> list[str]:
    return ["| TF screen | TFs done | seconds | s per TF | output (MB) | peak RSS (MB) |", "|---|---:|---:|---:|---:|---:|",
            f"| {r['status']} | {r.get('n_done', '')} of {r.get('n_tfs', '?')} | {r.get('seconds', '')} | "
            f"{r.get('seconds_per_tf', '')} | {r.get('output_mb', '')} | {r.get('peak_rss_mb', '')} |"]


def _recovery(out: Path, methods: list[str], planted_csv: Path, cand) -> list[dict]:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score

    planted = pd.read_csv(planted_csv)
    truth = set(zip(planted["peak"], planted["gene"]))
    y = np.array([(p, g) in truth for p, g in zip(cand["peak"], cand["gene"])])
    rows = [{"scorer": "planted links among candidates", "n_pairs": int(len(cand)), "n_planted": int(y.sum()),
             "average_precision": round(float(y.mean()), 4) if len(y) else float("nan")}]
    if y.sum() == 0 or y.all():
        return rows
    rows.append({"scorer": "distance baseline (-|distance|)", "n_pairs": int(len(cand)), "n_planted": int(y.sum()),
                 "average_precision": round(float(average_precision_score(y, -cand["distance"].abs())), 4)})
    key = pd.MultiIndex.from_arrays([cand["peak"], cand["gene"]])
    for meth in methods:
        f = out / f"grn_{meth}.csv"
        if not f.exists():
            continue
        net = pd.read_csv(f)
        s = net.groupby(["source", "target"])["weight"].mean()
        score = s.reindex(key).fillna(s.min() if len(s) else 0.0).to_numpy()
        rows.append({"scorer": meth, "n_pairs": int(len(cand)), "n_planted": int(y.sum()),
                     "average_precision": round(float(average_precision_score(y, np.nan_to_num(score))), 4)})
    return rows


def _grn_steps(a, out: Path, st: Steps) -> list[dict]:
    """Every method of ``a.methods`` over the cell types, each in its own process (unless ``--grn-timeout 0``)."""
    model_dir, data_path = out / "model", out / "selected.h5mu"
    grn_rows = []
    for meth in a.methods:
        csv = out / f"grn_{meth}.csv"
        if a.grn_timeout <= 0:
            r = st.run(f"extract_grn[{meth}]", lambda: _grn(str(model_dir), str(data_path), meth, a.grn_cells, str(csv), a.seed,
                                                             a.grn_types))
        else:
            cmd = [sys.executable, __file__, "--seed", str(a.seed), "--grn-mem-gb", str(a.grn_mem_gb),
                   "--grn-types", str(a.grn_types), "--grn-worker", str(model_dir), str(data_path), meth,
                   str(a.grn_cells), str(csv)]
            t0 = time.perf_counter()
            try:
                r = {"method": meth, **_run_worker(cmd, a.grn_timeout)}
            except subprocess.TimeoutExpired:
                r = {"method": meth, "status": f"did not finish in {a.grn_timeout:.0f} s",
                     "seconds": round(time.perf_counter() - t0, 1)}
            print(f"[realsize] extract_grn[{meth}]: {r}", flush=True)
        grn_rows.append(r)
    return grn_rows


def _grn_md(grn_rows: list[dict], rec: list[dict]) -> list[str]:
    md = ["| GRN method | status | seconds | types | s per type | peak RSS (MB) |", "|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['method']} | {r['status']} | {r.get('seconds', '')} | {r.get('n_types', '')} | "
           f"{r.get('seconds_per_type', '')} | {r.get('peak_rss_mb', '')} |" for r in grn_rows]
    md += ["", "| scorer | pairs | planted | average precision |", "|---|---:|---:|---:|"]
    md += [f"| {r['scorer']} | {r['n_pairs']} | {r['n_planted']} | {r['average_precision']} |" for r in rec]
    return md


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--genes", type=int, default=36_000)
    p.add_argument("--peaks", type=int, default=150_000)
    p.add_argument("--types", type=int, default=8)
    p.add_argument("--links", type=int, default=2000)
    p.add_argument("--n-top-genes", type=int, default=2000)
    p.add_argument("--window", type=int, default=150_000)
    p.add_argument("--n-latent-peaks", type=int, default=5000)
    p.add_argument("--time-budget", type=float, default=1200.0, help="seconds of training (preset auto)")
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--grn-cells", type=int, default=64, help="cells per type for the GRN (max_cells)")
    p.add_argument("--grn-types", type=int, default=0, help="score the first N cell types only (0: all)")
    p.add_argument("--grn-only", action="store_true",
                   help="reuse <out>/model and <out>/selected.h5mu of an earlier run: GRN steps and recovery only")
    p.add_argument("--grn-timeout", type=float, default=600.0,
                   help="seconds per GRN method (own process); 0: run in this process without a limit")
    p.add_argument("--grn-mem-gb", type=float, default=8.0,
                   help="address-space limit of a GRN worker process (a method needing more fails with MemoryError)")
    p.add_argument("--model-option", nargs="*", default=[], metavar="KEY=INT",
                   help="model size overrides, e.g. width=16 n_layers=1 (default: the model's default sizes)")
    p.add_argument("--model-size", choices=("auto", "default"), default="auto",
                   help="auto: the denoiser sized for this device and --time-budget (model.denoiser_size, as the "
                        "CLI's train --preset auto); default: the model's default sizes. --model-option naming "
                        "width / n_layers / n_heads wins")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/realsize")
    p.add_argument("--screen-tfs", type=int, default=0,
                   help="TFs to screen (the first N alphabetically; 0: every TF among the kept genes; -1: no screen)")
    p.add_argument("--screen-timeout", type=float, default=1800.0,
                   help="seconds for the TF screen's own process (0: in this process, no limit)")
    p.add_argument("--screen-only", action="store_true", help="only the TF screen, on the saved model and data")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write the HTML report (report.run_demo) of the trained model at the end (own process)")
    p.add_argument("--report-timeout", type=float, default=1200.0, help="seconds for the report's process")
    p.add_argument("--report-only", action="store_true", help="only the report, on the saved model and data")
    p.add_argument("--report-worker", nargs=3, metavar=("MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--screen-worker", nargs=4, metavar=("MODEL", "DATA", "OUT", "N"), help=argparse.SUPPRESS)
    p.add_argument("--grn-worker", nargs=5, metavar=("MODEL", "DATA", "METHOD", "CELLS", "CSV"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.grn_worker:
        md, data, meth, n, csv = a.grn_worker
        if a.grn_mem_gb > 0:
            lim = int(a.grn_mem_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        res = _grn(md, data, meth, int(n), csv, a.seed, a.grn_types)
        print("RESULT " + json.dumps(res), flush=True)
        return res
    if a.report_worker:
        res = _report(*a.report_worker, a.seed)
        print("RESULT " + json.dumps(res, default=str), flush=True)
        return res
    if a.screen_worker:
        md, data, sdir, n = a.screen_worker
        res = _screen(md, data, sdir, int(n), a.seed)
        print("RESULT " + json.dumps(res), flush=True)
        return res

    import numpy as np
    import pandas as pd

    import scdiffx_grn as scdx
    from scdiffx_grn.model._autopreset import model_size

    scdx.settings.verbosity = "info"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    st = Steps()
    if a.screen_only:
        r = _screen_step(a, out)
        (out / "realsize_screen.json").write_text(json.dumps({"args": vars(a), "screen": r}, indent=1, default=str))
        (out / "realsize_screen.md").write_text("\n".join(_screen_md(r)) + "\n")
        print("\n".join(_screen_md(r)), flush=True)
        return {"screen": r}
    if a.report_only:
        r = _report_step(a, out)
        (out / "realsize_report.json").write_text(json.dumps({"args": vars(a), "report": r}, indent=1, default=str))
        return {"report": r}
    if a.grn_only:
        import mudata

        mudata.set_options(pull_on_update=False)
        cand = mudata.read_h5mu(out / "selected.h5mu").uns["select_features"]["candidates"]
        grn_rows = _grn_steps(a, out, st)
        rec = _recovery(out, [r["method"] for r in grn_rows if r.get("status") == "done"], out / "planted_links.csv",
                        cand)
        res = {"args": vars(a), "grn": grn_rows, "recovery": rec}
        (out / "realsize_grn.json").write_text(json.dumps(res, indent=1, default=str))
        md = _grn_md(grn_rows, rec)
        (out / "realsize_grn.md").write_text("\n".join(md) + "\n")
        print("\n".join(md), flush=True)
        return res
    h5 = out / "filtered_feature_bc_matrix.h5"
    labels_csv, planted_csv = out / "cell_types.csv", out / "planted_links.csv"

    def simulate():
        if h5.exists() and labels_csv.exists() and planted_csv.exists():
            return
        m = scdx.datasets.simulate_multiome(a.cells, a.genes, a.peaks, n_types=a.types, n_links=a.links, seed=a.seed)
        scdx.datasets.write_10x_h5(m, h5, overwrite=True)
        m.obs[["cell_type"]].to_csv(labels_csv)
        m.uns["planted_pairs"].to_csv(planted_csv, index=False)

    st.run("simulate + write h5 (not part of the workflow)", simulate)
    import gc

    gc.collect()
    labels = pd.read_csv(labels_csv, index_col=0)
    m = st.run("read_multiome (10x h5)", lambda: scdx.datasets.read_multiome(h5, labels=labels))
    shape = {"cells": int(m.n_obs), "genes": int(m.mod["rna"].n_vars), "peaks": int(m.mod["atac"].n_vars),
             "genes_per_cell": float(np.diff(m.mod["rna"].layers["counts"].indptr).mean()),
             "peaks_per_cell": float(np.diff(m.mod["atac"].layers["counts"].indptr).mean())}
    for mod in ("rna", "atac"):  # X duplicates layers["counts"]; the workflow reads the layer
        m.mod[mod].X = m.mod[mod].layers["counts"]
    st.run("pp.qc", lambda: scdx.pp.qc(m))
    default_size = model_size(scdx.model.ModelConfig(n_genes=m.mod["rna"].n_vars, n_peaks=m.mod["atac"].n_vars).resolve())

    def select():
        # what the old recipe (HVGs x the 3,000 most open peaks) would leave, for comparison
        frac = np.bincount(m.mod["atac"].layers["counts"].indices, minlength=m.mod["atac"].n_vars)
        top = m.mod["atac"].var_names[np.argsort(-frac, kind="stable")[:3000]]
        scdx.tl.select_features(m, n_top_genes=a.n_top_genes, tfs=True, window=a.window,
                                n_latent_peaks=a.n_latent_peaks)
        hvg = m.mod["rna"].var_names[m.mod["rna"].var["highly_variable"].to_numpy().astype(bool)]
        tss = scdx.grn.read_tss(scdx.datasets.tss_annotation("hg38"))
        old = scdx.grn.peak_gene_candidates(scdx.grn.parse_peak_names(top), genes=hvg, tss_table=tss, window=a.window)
        return int(len(old))

    old_pairs = st.run("tl.select_features", select)
    counts = dict(m.uns["select_features"]["counts"])
    counts["candidate_pairs_old_recipe_hvg_x_top3000"] = old_pairs
    print(f"[realsize] selection: {counts}", flush=True)
    cand = m.uns["select_features"]["candidates"]

    scdx.ScDiffusionX.setup_mudata(m, labels=["cell_type"])
    overrides = {k: int(v) for k, v in (kv.split("=", 1) for kv in a.model_option)}
    sizing = None
    if a.model_size == "auto" and not {"width", "n_layers", "n_heads"} & set(overrides):
        overrides.update(st.run("model.denoiser_size (timed for this device and budget)",
                                lambda: scdx.model.denoiser_size(m, time_budget=a.time_budget, **overrides)))
        sizing = scdx.model.denoiser_size.last
    model = st.run("build model", lambda: scdx.ScDiffusionX(m, seed=a.seed, **overrides))
    size = model_size(model.config)
    arch = {"rna_hidden": list(model.config.rna_hidden), "atac_hidden": list(model.config.atac_hidden),
            "latent_dim": int(model.config.latent_dim), "width": int(model.config.width),
            "n_layers": int(model.config.n_layers), "n_heads": int(model.config.n_heads), "sizing": sizing}
    t_train = time.perf_counter()
    st.run("train(preset='auto')", lambda: model.train(preset="auto", time_budget=a.time_budget, seed=a.seed))
    measured = time.perf_counter() - t_train
    plan = {k: v for k, v in model.train_plan.items() if k != "calibration"}
    plan["calibration"] = model.train_plan["calibration"]
    plan["measured_seconds"] = round(measured, 1)
    plan["estimate_ratio"] = round(measured / max(plan["estimated_seconds"], 1e-9), 3)
    print(f"[realsize] training: estimated {plan['estimated_seconds']:.0f} s, measured {measured:.0f} s "
          f"(ratio {plan['estimate_ratio']:.2f})", flush=True)
    model_dir = out / "model"
    st.run("save model", lambda: model.save(model_dir, overwrite=True))
    ckpt_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 2**20
    data_path = out / "selected.h5mu"
    for mod in ("rna", "atac"):  # keep one copy of the counts on disk
        m.mod[mod].X = m.mod[mod].layers["counts"]
        del m.mod[mod].layers["counts"]
    st.run("write selected data (h5mu)", lambda: m.write(data_path))
    for mod in ("rna", "atac"):
        m.mod[mod].layers["counts"] = m.mod[mod].X
    del model
    gc.collect()

    grn_rows = _grn_steps(a, out, st)
    rec = _recovery(out, [r["method"] for r in grn_rows if r.get("status") == "done"], planted_csv, cand)
    scr = _screen_step(a, out) if a.screen_tfs >= 0 else None
    rep = _report_step(a, out) if a.report else None
    # the user's workflow end to end: every step but the simulation, every GRN method, the screen
    total = (sum(r["seconds"] for r in st.rows if not r["step"].startswith(("simulate", "extract_grn[")))
             + sum(float(r.get("seconds") or 0) for r in grn_rows) + (float(scr.get("seconds") or 0) if scr else 0.0)
             + (float(rep.get("wall_seconds") or 0) if rep else 0.0))
    complete = (all(r.get("status") == "done" for r in grn_rows) and (scr is None or scr.get("status") == "done")
                and (rep is None or rep.get("status") == "done"))
    workflow = {"seconds": round(total, 1), "hours": round(total / 3600, 3), "complete": complete,
                "peak_rss_mb": round(max([r["peak_rss_mb"] for r in st.rows]
                                         + [float(r.get("peak_rss_mb") or 0) for r in grn_rows]
                                         + [float(scr.get("peak_rss_mb") or 0) if scr else 0.0]
                                         + [float(rep.get("peak_rss_mb") or 0) if rep else 0.0]), 1)}
    print(f"[realsize] workflow (h5 -> model -> every GRN method -> screen -> report): {workflow}", flush=True)
    res = {"args": vars(a), "shape": shape, "selection": counts, "default_model_all_features": default_size,
           "workflow": workflow, "report": rep,
           "model": {**size, **arch, "checkpoint_mb_on_disk": round(ckpt_mb, 1)},
           "training": plan, "steps": st.rows, "grn": grn_rows, "recovery": rec, "screen": scr,
           "peak_rss_mb": round(_rss_mb(), 1), "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}
    (out / "realsize.json").write_text(json.dumps(res, indent=1, default=str))
    md = ["| step | seconds | peak RSS (MB) |", "|---|---:|---:|"]
    md += [f"| {r['step']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |" for r in st.rows]
    md += [""] + _grn_md(grn_rows, rec) + ([""] + _screen_md(scr) if scr else [])
    md += ["", f"Workflow end to end (every step but the simulation, every GRN method, the screen, the report): "
               f"{workflow['seconds']:.0f} s ({workflow['hours']:.2f} h), peak RSS {workflow['peak_rss_mb']:.0f} MB"
               + ("" if complete else " (a step did not finish)")]
    (out / "realsize.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return res


if __name__ == "__main__":
    main()
