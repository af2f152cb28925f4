"""Posterior-mean screens and fast GRN scoring vs the sampled engine (issue 15), in one run.

Every part runs in its own subprocess (one torch thread; peak RSS from ``ru_maxrss``):

- ``throughput``: 8 DoRothEA TFs x 15 cell types on 400 stratified mouse cells (the cells and
  TFs of the BENCHMARKS "screen throughput" section): the sampled engine (``readout="samples"``,
  3 paired samples, DDIM 20, 8 targets per pass) vs the posterior-mean engine (default,
  K = 1); targets/s and their ratio. Agreement of per-peak effects (Spearman over the 3,000
  peaks per TF x cell type that any cell changes; median): mean vs sampled, the sampled engine's
  sample 0 vs sample 1, mean K = 1 vs K = 4 and seed 0 vs seed 1 (all 45 TFs for the last two).
- ``tfs``: all model-gene DoRothEA TFs x 15 cell types on all 10,309 cells (``tl.screen``,
  resumable directory, ``keep_effects="significant"``), time and peak memory.
- ``tfs_k4``: the same with K = 4 noises per cell.
- ``genes``: every model gene x 15 cell types on all cells, same settings (K = 1).
- ``peaks`` (not in the default run): every model peak closed x 15 cell types on all cells
  (ATAC -> RNA), same settings.
- ``compare`` (not in the default run): the first ``--n-genes`` model genes (all 1,677 by
  default) x 15 cell types on all cells (``keep_effects="significant"``, default controls), run
  by the source tree ``--base-src`` (the earlier engine: one file per target, statistics per
  target) and by this tree, each in its own subprocess (one thread); wall and CPU time of each,
  and the largest absolute difference of every numeric column of the summary, the controls'
  summary and the significant effects (other columns compared exactly).
- ``grn``: ``tl.extract_grn`` integrated gradients (Gauss-Legendre 8, batch 16) and peak
  knockout for 15 cell types at 64 cells per type, posterior-mean readout, vs the sampled
  readout (DDIM 5) on one cell type (the per-type ratio).

Usage::

    SCDX_THREADS=1 OMP_NUM_THREADS=1 python analyses/benchmark_fast_screen.py \
        --model-path models/mouse_mop_demo --out results/fast_screen

writes ``benchmark.json`` and ``benchmark.md`` in ``--out`` (``--parts tfs genes`` to run some).
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
PARTS = ("throughput", "tfs", "tfs_k4", "genes", "grn", "peaks", "compare")
DEFAULT_PARTS = PARTS[:-2]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(model_path: str, n_cells: int | None, force_v: bool = False):
    import torch

    torch.set_num_threads(1)
    from scdiffx_grn import ScDiffusionX, datasets

    mdata = datasets.mouse_mop(n_cells=n_cells, seed=0) if n_cells else datasets.mouse_mop()
    model = ScDiffusionX.load(model_path)
    if force_v:  # timing only: relabel a checkpoint (its numbers are then meaningless)
        model.config.prediction = "v"
    ScDiffusionX.setup_mudata(mdata, labels=list(model.config.label_keys))
    return model, mdata


def _tfs(genes) -> list[str]:
    from scdiffx_grn import datasets

    return datasets.tf_list(genes, organism="mouse", source="dorothea", levels="ABC", count_in="network")


def _median_spearman(a, b, keep) -> tuple[float, int]:
    """Median over (target, type) rows of ``keep`` of the Spearman correlation of a[i] and b[i]."""
    import numpy as np
    from scipy.stats import spearmanr

    vals = []
    for e, g in zip(*np.nonzero(keep)):
        x, y = a[e, g], b[e, g]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            vals.append(spearmanr(x, y).statistic)
    return (float(np.median(vals)) if vals else float("nan")), len(vals)


def part_throughput(args) -> dict:
    import numpy as np

    from scdiffx_grn.perturb import Edit, prepare_inputs, run_mean, run_paired

    model, mdata = _setup(args.model_path, 400, args.force_v)
    genes = list(model.rna_var_names)
    tfs = _tfs(genes)
    gpos = {g: i for i, g in enumerate(genes)}
    edits8 = [Edit(name=t, idx=np.array([gpos[t]]), kind="knockout") for t in tfs[:8]]
    edits_all = [Edit(name=t, idx=np.array([gpos[t]]), kind="knockout") for t in tfs]
    inputs = prepare_inputs(model, mdata, "rna")
    out = {"n_cells": int(mdata.n_obs), "n_tfs_sampled": len(edits8), "n_tfs": len(tfs),
           "n_types": len(inputs.group_names)}
    t0 = time.perf_counter()
    smp = run_paired(model, inputs, edits8, n_samples=3, seed=0, batch_size=256, batch_targets=8,
                     translate_kwargs={"n_steps": 2 if args.quick else 20})
    out["sampled_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean8 = run_mean(model, inputs, edits8, n_noise=1, seed=0)
    out["mean_seconds_8"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean_all = run_mean(model, inputs, edits_all, n_noise=1, seed=0)
    out["mean_seconds_all_tfs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean_k4 = run_mean(model, inputs, edits_all, n_noise=4, seed=0)
    out["mean_seconds_all_tfs_k4"] = time.perf_counter() - t0
    mean_s1 = run_mean(model, inputs, edits_all, n_noise=1, seed=1)
    out["sampled_targets_per_s"] = len(edits8) / out["sampled_seconds"]
    out["mean_targets_per_s_8"] = len(edits8) / out["mean_seconds_8"]
    out["mean_targets_per_s_all_tfs"] = len(edits_all) / out["mean_seconds_all_tfs"]
    out["ratio_8"] = out["mean_targets_per_s_8"] / out["sampled_targets_per_s"]
    out["ratio_all_tfs"] = out["mean_targets_per_s_all_tfs"] / out["sampled_targets_per_s"]
    nc = np.maximum(smp.n_cells, 1)[:, None, :, None]
    per_s = smp.diff_sum / nc  # E,S,G,F
    m8 = mean8.diff_sum[:, 0] / nc[:, 0]
    keep = mean8.n_changed > 0
    out["rho_mean_vs_sampled"], out["n_pairs_sampled"] = _median_spearman(m8, per_s.mean(1), keep)
    out["rho_sampled_s0_vs_s1"], _ = _median_spearman(per_s[:, 0], per_s[:, 1], keep)
    out["rho_sampled_s0_vs_s2"], _ = _median_spearman(per_s[:, 0], per_s[:, 2], keep)
    nca = np.maximum(mean_all.n_cells, 1)[:, :, None]
    ma, mk4, ms1 = (r.diff_sum[:, 0] / nca for r in (mean_all, mean_k4, mean_s1))
    keep_all = mean_all.n_changed > 0
    out["rho_mean_k1_vs_k4"], out["n_pairs_all"] = _median_spearman(ma, mk4, keep_all)
    out["rho_mean_seed0_vs_seed1"], _ = _median_spearman(ma, ms1, keep_all)
    out["frac_tf_cell_nonzero"] = float(np.mean([len(np.flatnonzero(inputs.X[:, e.idx].toarray())) / inputs.X.shape[0]
                                                 for e in edits_all]))
    out["peak_rss_mb"] = _rss_mb()
    return out


def _screen(args, targets_kind: str, n_noise: int = 1, kind: str = "knockout", modality: str = "rna") -> dict:
    from scdiffx_grn import tl

    model, mdata = _setup(args.model_path, None, args.force_v)
    rss0 = _rss_mb()
    genes = list(model.rna_var_names)
    targets = {"tfs": _tfs(genes), "genes": "all_genes", "peaks": "all_peaks"}[targets_kind]
    out_dir = Path(args.out) / f"screen_{targets_kind}_k{n_noise}"
    t0 = time.perf_counter()
    summ = tl.screen(model, mdata, targets, kind=kind, modality=modality, out_dir=out_dir, resume=False,
                     keep_effects="significant", show_progress=False, n_noise=n_noise)
    dt = time.perf_counter() - t0
    n_t = int(summ["perturbation"].nunique())
    return {"n_cells": int(mdata.n_obs), "n_targets": n_t, "n_types": int(summ["cell_type"].nunique()),
            "seconds": dt, "targets_per_s": n_t / dt, "rss_after_load_mb": rss0, "peak_rss_mb": _rss_mb(),
            "n_sig_total": int(summ["n_sig"].sum()), "n_noise": n_noise}


def part_tfs(args) -> dict:
    return _screen(args, "tfs")


def part_tfs_k4(args) -> dict:
    return _screen(args, "tfs", n_noise=4)


def part_genes(args) -> dict:
    return _screen(args, "genes")


def part_peaks(args) -> dict:
    return _screen(args, "peaks", kind="close", modality="atac")


def part_genes_n(args) -> dict:
    """The screen of the first ``--n-genes`` model genes into ``--out/<--label>`` (run by ``compare``)."""
    from scdiffx_grn import tl

    model, mdata = _setup(args.model_path, None, args.force_v)
    genes = list(model.rna_var_names)[: args.n_genes]
    out_dir = Path(args.out) / f"screen_{args.label}"
    t0, c0 = time.perf_counter(), time.process_time()
    summ = tl.screen(model, mdata, genes, out_dir=out_dir, resume=False, keep_effects="significant",
                     show_progress=False)
    return {"n_cells": int(mdata.n_obs), "n_targets": int(summ["perturbation"].nunique()),
            "n_types": int(summ["cell_type"].nunique()), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "peak_rss_mb": _rss_mb(),
            "n_sig_total": int(summ["n_sig"].sum()), "out_dir": str(out_dir)}


def _max_abs_diff(a, b) -> dict:
    """Largest absolute difference per numeric column of two frames (other columns: equal or not)."""
    import numpy as np
    import pandas as pd

    out = {"rows": [len(a), len(b)], "columns_equal": list(a.columns) == list(b.columns)}
    diffs, unequal = {}, []
    for c in b.columns:
        if c not in a:
            unequal.append(c)
            continue
        x, y = a[c], b[c]
        if pd.api.types.is_float_dtype(y) or pd.api.types.is_float_dtype(x):
            xv, yv = x.to_numpy(np.float64), y.to_numpy(np.float64)
            same_nan = bool((np.isnan(xv) == np.isnan(yv)).all())
            d = np.abs(xv - yv)[~np.isnan(yv) & ~np.isnan(xv)]
            diffs[c] = float(d.max()) if d.size else 0.0
            if not same_nan:
                unequal.append(c + " (NaN pattern)")
        elif not x.fillna("<NA>").astype(str).equals(y.fillna("<NA>").astype(str)):
            unequal.append(c)
    out["max_abs_diff"] = diffs
    out["max_abs_diff_all"] = max(diffs.values()) if diffs else 0.0
    out["unequal_columns"] = unequal
    return out


def part_compare(args) -> dict:
    import pandas as pd

    if not args.base_src:
        raise SystemExit("--parts compare needs --base-src (the source tree of the earlier engine)")
    env = {**os.environ, "SCDX_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SCDX_PROGRESS": "0"}
    here = str(Path(__file__).resolve().parents[1])
    res = {}
    for label, src in (("base", args.base_src), ("new", here)):
        cmd = [sys.executable, __file__, "--part", "genes_n", "--label", label, "--model-path", args.model_path,
               "--out", args.out] + (["--n-genes", str(args.n_genes)] if args.n_genes else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**env, "PYTHONPATH": src})
        res[label] = json.loads((Path(args.out) / "genes_n.json").read_text())
        res[label]["wall_seconds"] = time.perf_counter() - t0
        res[label]["src"] = src
        print(f"[compare:{label}] {res[label]['seconds']:.1f} s wall, {res[label]['cpu_seconds']:.1f} s CPU",
              flush=True)
    sys.path.insert(0, here)
    from scdiffx_grn.perturb import load_screen, load_screen_effects

    a, b = (Path(res[k]["out_dir"]) for k in ("new", "base"))
    sa, sb = load_screen(a), load_screen(b)
    key = ["perturbation", "cell_type"]
    sa, sb = (s.sort_values(key).reset_index(drop=True) for s in (sa, sb))
    res["summary"] = _max_abs_diff(sa, sb)
    res["controls"] = _max_abs_diff(*(pd.read_parquet(d / "controls.parquet").sort_values(key).reset_index(drop=True)
                                     for d in (a, b)))
    fk = key + ["feature"]
    ea, eb = (e.sort_values(fk).reset_index(drop=True) for e in (load_screen_effects(a), load_screen_effects(b)))
    res["effects"] = _max_abs_diff(ea, eb)
    res["speedup"] = res["base"]["seconds"] / res["new"]["seconds"]
    return res


def part_grn(args) -> dict:
    import numpy as np
    import pandas as pd

    from scdiffx_grn import datasets, grn, tl

    model, mdata = _setup(args.model_path, None, args.force_v)
    tss = grn.read_tss(datasets.tss_annotation("mm10"))
    cand = grn.peak_gene_candidates(mdata, tss_table=tss, window=150_000)
    out = {"n_pairs": len(cand)}
    types = sorted(mdata.obs["cell_type"].astype(str).unique())
    if args.quick:
        common_types = types[:2]
    else:
        common_types = None
    common = {"candidates": cand, "groupby": "cell_type", "max_cells": 64, "translate_steps": 5, "seed": 0,
              "copy": True}
    ig_kw = {"method": "integrated_gradients", "ig_steps": 8, "batch_size": 16}
    ko_kw = {"method": "knockout"}
    res = {}
    from scipy.stats import spearmanr

    from scdiffx_grn.grn._scores import close_peaks_effect, model_inputs

    t1 = types[0]
    for name, kw in (("ig", ig_kw), ("knockout", ko_kw)):
        t0 = time.perf_counter()
        res[name] = grn.network_table(tl.extract_grn(model, mdata, readout="mean", cell_types=common_types, **kw,
                                                     **common), "grn")
        out[f"{name}_mean_seconds_15_types"] = time.perf_counter() - t0
        fast1 = res[name][res[name].cell_type == t1]
        t0 = time.perf_counter()
        if name == "ig":  # the shipped engine: sampled DDIM-5 translation (the IG code is otherwise unchanged)
            one = grn.network_table(tl.extract_grn(model, mdata, readout="samples", cell_types=[t1], **kw, **common),
                                    "grn")["weight"].to_numpy()
        else:  # the shipped engine: sampled DDIM 5, every cell re-translated for every open candidate peak
            rng = np.random.default_rng(common["seed"])
            lab = mdata.obs["cell_type"].astype(str).to_numpy()
            idx = np.flatnonzero(lab == t1)
            if len(idx) > 64:
                idx = np.sort(rng.choice(idx, 64, replace=False))
            _, Xa = model_inputs(model, mdata)
            Xa = Xa[idx]
            gpos = pd.Index(model.rna_var_names).get_indexer(fast1["target"])
            ppos = pd.Index(model.atac_var_names).get_indexer(fast1["source"])
            up = np.unique(ppos)
            up = up[np.asarray((Xa[:, up] > 0).sum(0)).ravel() > 0]
            genes = np.unique(gpos)
            eff = close_peaks_effect(model, Xa, None, [np.array([p]) for p in up], gene_idx=genes, n_steps=5,
                                     readout="samples", skip_closed=False, cell_names=np.asarray(mdata.obs_names)[idx])
            pi, gi = pd.Index(up).get_indexer(ppos), pd.Index(genes).get_indexer(gpos)
            one = np.where(pi >= 0, -eff[np.maximum(pi, 0), gi], 0.0)
        out[f"{name}_shipped_seconds_1_type"] = time.perf_counter() - t0
        out[f"{name}_rho_mean_vs_shipped_{t1}"] = float(spearmanr(fast1["weight"], one).statistic)
        out[f"{name}_ratio_per_type"] = (out[f"{name}_shipped_seconds_1_type"]
                                         / (out[f"{name}_mean_seconds_15_types"] / len(common_types or types)))
    out["n_types"] = len(common_types or types)
    out["peak_rss_mb"] = _rss_mb()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name, df in res.items():
        df.to_parquet(Path(args.out) / f"grn_{name}_mean.parquet", index=False)
    return out


def _md(results: dict, cmd: str) -> str:
    L = ["# Posterior-mean screens and fast GRN scoring (issue 15)", "", f"Command: `{cmd}`", ""]
    L.append("```json")
    L.append(json.dumps(results, indent=2))
    L.append("```")
    return "\n".join(L) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", default="models/mouse_mop_demo")
    ap.add_argument("--out", default="results/fast_screen")
    ap.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS), choices=PARTS)
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # one part, in this process
    ap.add_argument("--force-v", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base-src", default=None, help="source tree of the earlier engine (--parts compare)")
    ap.add_argument("--n-genes", type=int, default=None, help="genes screened by --parts compare (default all)")
    ap.add_argument("--label", default="new", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # smoke test of the code paths
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        res = globals()[f"part_{args.part}"](args)
        (out / f"{args.part}.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=2), flush=True)
        return res
    results = {}
    env = {**os.environ, "SCDX_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SCDX_PROGRESS": "0"}
    for p in args.parts:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--part", p, "--model-path", args.model_path, "--out", args.out]
        cmd += [f for f, on in (("--force-v", args.force_v), ("--quick", args.quick)) if on]
        cmd += ["--base-src", args.base_src] if args.base_src else []
        cmd += ["--n-genes", str(args.n_genes)] if args.n_genes else []
        subprocess.run(cmd, check=True, env=env)
        results[p] = json.loads((out / f"{p}.json").read_text())
        results[p]["wall_seconds"] = time.perf_counter() - t0
        print(f"[{p}] done in {results[p]['wall_seconds']:.1f} s", flush=True)
    if "tfs" in results and "genes" in results:
        results["memory_ratio_genes_vs_tfs"] = results["genes"]["peak_rss_mb"] / results["tfs"]["peak_rss_mb"]
    import platform

    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": 1, "platform": platform.platform(),
                          "load_avg_end": os.getloadavg()}
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    cmd = "SCDX_THREADS=1 OMP_NUM_THREADS=1 python analyses/benchmark_fast_screen.py " + " ".join(argv or sys.argv[1:])
    (out / "benchmark.md").write_text(_md(results, cmd))
    return results


if __name__ == "__main__":
    main()
