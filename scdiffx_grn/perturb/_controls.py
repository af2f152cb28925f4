"""Control-calibrated screens: matched control genes / peaks and tests of targets against them.

A screen on thousands of cells makes any consistent shift significant by a t-test over cells
(the paired differences carry no sampling noise). The CRISPR-screen answer is to compare each
target with *non-targeting controls* run through the same engine: here, per cell type, a set of
control genes (default 20 non-TF genes; peaks for ATAC screens; random peak sets for TF-motif
screens) matched on detection rate and mean expression to the screened targets, perturbed like
the targets in that type's cells. Control arms are computed once per group and shared by every
target.

Effect units (column ``log2fc`` of every per-feature table)
    RNA readout (ATAC / TF edits): log2 fold change of the predicted expression of the
    cell-type mean, ``(pert_mean - ctrl_mean) / ln 2`` on the ``log1p(CP10k)`` readout, i.e. the
    log2 ratio of (geometric-mean) predicted CP10k + 1 (pseudocount 1 count per 10k).
    ATAC readout (RNA edits): log2 odds ratio of the cell-type mean predicted accessibility
    probability, ``log2(p1 / (1 - p1)) - log2(p0 / (1 - p0))`` with probabilities clipped to
    ``[1e-6, 1 - 1e-6]``.

Per-feature test (``z_vs_controls``, ``p_vs_controls``, ``fdr_vs_controls``)
    For feature *f* in group *g*, the target's ``log2fc`` is standardised by the controls'
    effects on the same feature: ``z = (x - mean_c) / sqrt(sd_c^2 + s0^2)``, where ``s0`` is
    the median over features of ``sd_c`` (the SAM "fudge factor": it keeps features on which
    every control happens to be near 0 from giving huge ``z``). With ``n`` controls a per-feature
    rank p-value cannot go below ``1 / (n + 1)`` (0.048 for 20 controls), so BH over thousands
    of features could never call anything. The null is therefore **pooled across features**:
    each control's leave-one-out ``z`` (against the other ``n - 1`` controls, same ``s0``) on
    every feature forms an empirical null of ``n x F`` values (60,000 for 20 controls and
    3,000 peaks), and ``p = (1 + #{null |z| >= |z_target|}) / (1 + n F)`` (floor ``1 / (n F +
    1)``). This assumes the standardised control effects are exchangeable across features; the
    leave-one-out ``z`` uses one control fewer than the target's ``z`` (slightly heavier tails),
    which makes the test slightly conservative. BH across features within target x group gives
    ``fdr_vs_controls``. What this can resolve: a target with a single extreme feature among
    ``F`` gets ``q = F / (n F + 1) ~ 1 / n``, so with ``n`` controls one lone hit is callable at
    ``alpha`` only when ``n >= 1 / alpha`` (20 for 0.05, the default); with fewer controls a
    target needs several extreme features at once. A feature is ``significant`` when ``fdr_vs_controls <= alpha`` **and**
    ``|log2fc| >= min_effect`` (default 0.1, a 7 % change of expression / accessibility odds,
    the ``logfc.threshold`` default of Seurat's ``FindMarkers``): nothing below the effect floor
    is ever called, however consistent.

Target-level test (summary columns)
    Does the target move the cell state more than its controls? ``p_state_vs_controls``: the
    one-sided prediction-interval t-test of the target's latent shift against the controls', on
    the scale ``log(1 + shift / c)`` (``c``: the median non-zero control shift; log-like for
    large shifts, 0 for a knockout that changes no cell) with ``t = (x - m) / (s sqrt(1 +
    1/n))``, ``n - 1`` df (assumes the transformed control shifts are roughly normal);
    ``latent_shift_z = (x - m) / s``; a target whose shift is exactly 0 gets ``p = 1``;
    ``fdr_state_vs_controls``: BH over the targets of the group (computed when the summary is
    assembled); ``p_type_vs_controls``: the rank p-value ``(1 + #controls >= x) / (1 + n)``
    of the fraction of cells changing nearest cell type (composition; floor ``1 / (n + 1)``,
    so with 20 controls it can only screen out, not confirm, a composition change among many
    targets). ``moves_state`` is ``fdr_state_vs_controls <= alpha``. :func:`panel_test` asks
    the panel-level question (do the targets as a set move cells more than controls?) with the
    sign-flip test of ``analyses/mouse_knockouts.py``.

Fewer than 3 controls in a group (too few genes to draw from, or none changed a cell there):
the calibrated columns are NaN there and nothing is called significant.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd

from .._errors import OptionError
from .._modelio import cell_keys
from .._settings import logger

__all__ = ["bh_fdr_rows", "DEFAULT_N_CONTROLS", "DEFAULT_MIN_EFFECT", "CONTROL_PREFIX", "log2_effect", "feature_stats",
           "pick_controls", "choose_controls", "ControlCalibration", "sign_flip_test", "panel_test",
           "add_state_fdr", "MIN_CONTROLS", "significance_text"]

DEFAULT_N_CONTROLS = 20
DEFAULT_MIN_EFFECT = 0.1
MIN_CONTROLS = 3
CONTROL_PREFIX = "control:"
_P_CLIP = 1e-6
_TINY = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- units
def log2_effect(ctrl_mean, pert_mean, readout: str) -> np.ndarray:
    """Effect in log2 units: log2 fold change (``readout="rna"``) or log2 odds ratio (``"atac"``)."""
    c = np.asarray(ctrl_mean, dtype=np.float64)
    p = np.asarray(pert_mean, dtype=np.float64)
    if readout == "rna":  # readout log1p(CP10k): difference / ln 2 = log2((CP10k_1 + 1) / (CP10k_0 + 1))
        return (p - c) / np.log(2.0)
    c = np.clip(c, _P_CLIP, 1 - _P_CLIP)
    p = np.clip(p, _P_CLIP, 1 - _P_CLIP)
    return (np.log(p) - np.log1p(-p) - np.log(c) + np.log1p(-c)) / np.log(2.0)


def bh_fdr_rows(p: np.ndarray) -> np.ndarray:
    """:func:`bh_fdr` of every row of a 2-D array at once (the same arithmetic, row by row)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError("bh_fdr_rows needs a 2-D array")
    m, F = p.shape
    if m == 0 or F == 0:
        return np.full(p.shape, np.nan)
    finite = np.isfinite(p).all(axis=1)
    out = np.empty(p.shape)
    if finite.any():
        pf = p[finite]
        order = np.argsort(pf, axis=1, kind="stable")
        ranked = np.take_along_axis(pf, order, axis=1) * F / np.arange(1, F + 1)
        q = np.clip(np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1], 0.0, 1.0)
        res = np.empty_like(q)
        np.put_along_axis(res, order, q, axis=1)
        out[finite] = res
    if not finite.all():
        from ._base import bh_fdr

        for i in np.flatnonzero(~finite):  # rows with NaN: not counted, as bh_fdr does
            out[i] = bh_fdr(p[i])
    return out


# --------------------------------------------------------------------------- choice of controls
def feature_stats(X, groups: np.ndarray, n_groups: int, src: str) -> tuple[np.ndarray, np.ndarray]:
    """Per group x source feature: mean level and detection fraction of the raw inputs ``X``.

    Level: mean ``log1p(CP10k)`` for RNA, mean raw value for ATAC. Returns ``(level, detect)``,
    each ``(n_groups, n_features)``.
    """
    import scipy.sparse as sp

    groups = np.asarray(groups, dtype=np.int64)
    n = X.shape[0]
    G = sp.csr_matrix((np.ones(n), (groups, np.arange(n))), shape=(n_groups, n))
    cnt = np.maximum(np.bincount(groups, minlength=n_groups), 1).astype(np.float64)[:, None]
    Xs = sp.csr_matrix(X, dtype=np.float64) if not sp.issparse(X) else X.tocsr().astype(np.float64)
    if src == "rna":
        lib = np.asarray(Xs.sum(axis=1)).ravel()
        lib[lib == 0] = 1.0
        L = sp.diags(1e4 / lib) @ Xs
        L.data = np.log1p(L.data)
    else:
        L = Xs
    D = Xs.copy()
    D.data = (D.data > 0).astype(np.float64)
    level = np.asarray((G @ L).todense()) / cnt
    detect = np.asarray((G @ D).todense()) / cnt
    return level, detect


def pick_controls(stats: np.ndarray, names: Sequence[str], target_idx: Sequence[int], pool_idx: Sequence[int],
                  n: int, seed: int = 0) -> list[int]:
    """``n`` pool features matched to the targets' distribution in the columns of ``stats``.

    ``stats``: features x statistics (e.g. mean level, detection). The targets, ordered by their
    statistics (then name), give ``n`` evenly spaced anchors (all ``n`` anchors are the target
    when there is one); each anchor takes the nearest unused pool feature in standardised
    statistics, ties broken by a hash of ``(seed, name)``, so the choice depends on names and
    values, never on row or column order. Returns pool indices (fewer when the pool is small).
    """
    stats = np.asarray(stats, dtype=np.float64)
    pool = np.asarray(list(pool_idx), dtype=np.int64)
    tix = np.asarray(list(target_idx), dtype=np.int64)
    if n <= 0 or len(pool) == 0 or len(tix) == 0:
        return []
    sd = stats.std(axis=0)
    sd[~(sd > 0)] = 1.0
    Z = stats / sd
    names = np.asarray(names, dtype=object)
    t_order = sorted(tix.tolist(), key=lambda i: (*stats[i].tolist(), str(names[i])))
    anchors = [t_order[int(round(k))] for k in np.linspace(0, len(t_order) - 1, n)]
    key = cell_keys([str(names[i]) for i in pool], seed)
    tie = np.argsort(np.argsort(key, kind="stable"), kind="stable")  # rank of each pool member's hash
    used = np.zeros(len(pool), bool)
    out: list[int] = []
    for a in anchors:
        if used.all():
            break
        dist = np.sqrt(((Z[pool] - Z[a]) ** 2).sum(axis=1))
        dist[used] = np.inf
        j = int(np.lexsort((tie, dist))[0])
        used[j] = True
        out.append(int(pool[j]))
    return out


def choose_controls(inputs, feature_names: Sequence[str], target_names: Sequence[str], *, n: int = DEFAULT_N_CONTROLS,
                    exclude: Sequence[str] = (), controls: Sequence[str] | None = None, seed: int = 0,
                    ) -> dict[str, list[str]]:
    """Control features per group (``{group: [names]}``) for a screen of ``target_names``.

    ``controls`` (user-given names) are used in every group as they are. Otherwise, per group,
    :func:`pick_controls` draws ``n`` features that are neither targets nor in ``exclude`` (the
    known TFs), matched on (mean level, detection) in the group's cells; when fewer than ``n``
    such features exist (a screen of all genes), targets are drawn too (a target is never
    compared with itself: it is left out of its own controls).
    """
    names = [str(f) for f in feature_names]
    pos = {f: i for i, f in enumerate(names)}
    gnames = [str(g) for g in inputs.group_names]
    if controls is not None:
        ctrl = list(dict.fromkeys(str(c) for c in controls))
        unknown = [c for c in ctrl if c not in pos]
        if unknown:
            from .._errors import UnknownFeatureError, _fmt_items

            raise UnknownFeatureError(f"control(s) {_fmt_items(unknown)} are not features of the model; give "
                                      "control genes / peaks the model knows, or leave controls to the default")
        return {g: list(ctrl) for g in gnames}
    tset = {str(t) for t in target_names}
    ex = tset | {str(e).lower() for e in exclude} | {str(e) for e in exclude}
    pool = [i for i, f in enumerate(names) if f not in ex and f.lower() not in ex]
    tix = [pos[t] for t in tset if t in pos]
    if len(pool) < n:  # e.g. an all-genes screen: targets serve as controls too (left out of their own)
        ex2 = ex - tset
        pool = [i for i, f in enumerate(names) if f not in ex2 and f.lower() not in ex2]
    if not pool or not tix:
        return {g: [] for g in gnames}
    level, detect = feature_stats(inputs.X, inputs.groups, len(gnames), inputs.src)
    out = {}
    for gi, g in enumerate(gnames):
        st = np.column_stack([level[gi], detect[gi]])
        out[g] = [names[i] for i in pick_controls(st, names, tix, pool, n, seed=seed)]
    return out


def control_name(feature: str, group: str | None) -> str:
    """Name of a control perturbation in result tables: ``control:<feature>@<group>``."""
    return f"{CONTROL_PREFIX}{feature}" + (f"@{group}" if group is not None else "")


# --------------------------------------------------------------------------- calibration
class ControlCalibration:
    """Control effects per group and the tests of targets against them (see the module docstring).

    Built from the controls' per-feature effects tables and state tables (the group column named
    ``group_col``); :meth:`effects` adds the calibrated columns to a target's effects table,
    :meth:`state` to its state table.
    """

    def __init__(self, effects: pd.DataFrame, state: pd.DataFrame | None, *, group_col: str, alpha: float = 0.05,
                 min_effect: float = DEFAULT_MIN_EFFECT):
        self.group_col = group_col
        self.alpha = float(alpha)
        self.min_effect = float(min_effect)
        self.groups: dict[str, dict] = {}
        if effects is None or not len(effects):
            return
        eff = effects.copy()
        eff["log2fc"] = log2_effect(eff["ctrl_mean"], eff["pert_mean"], str(eff["readout"].iloc[0]))
        active = eff.groupby(["perturbation", group_col], observed=True)["n_changed"].first() \
            if "n_changed" in eff else None
        st = state if state is not None and len(state) else None
        for g, sub in eff.groupby(group_col, sort=False, observed=True):
            piv = sub.pivot(index="perturbation", columns="feature", values="log2fc")
            piv = piv.reindex(columns=pd.unique(sub["feature"]))  # the readout's feature order (fast lookups)
            if active is not None:  # controls that changed no cell in the group carry no information
                keep = [p for p in piv.index if active.get((p, g), 0) > 0]
                piv = piv.loc[keep]
            entry = {"features": piv.columns.to_numpy(), "C": piv.to_numpy(np.float64), "names": list(piv.index)}
            if st is not None:
                sg = st[(st[group_col].astype(str) == str(g)) & st["perturbation"].isin(list(piv.index))]
                entry["shift"] = sg["latent_shift"].to_numpy(np.float64)
                entry["type"] = (sg["frac_type_changed"].to_numpy(np.float64) if "frac_type_changed" in sg
                                 else np.array([]))
            self.groups[str(g)] = entry
            self._prepare(entry)

    @staticmethod
    def _prepare(entry: dict) -> None:
        C = entry["C"]
        n = C.shape[0]
        entry["n"] = n
        if n < MIN_CONTROLS:
            return
        mu = C.mean(axis=0)
        sd = C.std(axis=0, ddof=1)
        s0 = float(np.median(sd))
        if not s0 > 0:
            s0 = float(sd.mean()) if sd.mean() > 0 else _TINY
        entry.update(mu=mu, sd=sd, s0=s0, scale=np.maximum(np.sqrt(sd ** 2 + s0 ** 2), _TINY))
        S, SS = C.sum(axis=0), (C ** 2).sum(axis=0)
        mu_l = (S[None] - C) / (n - 1)
        var_l = np.maximum((SS[None] - C ** 2 - (n - 1) * mu_l ** 2) / (n - 2), 0.0)
        zl = (C - mu_l) / np.maximum(np.sqrt(var_l + s0 ** 2), _TINY)
        null = np.abs(zl[np.isfinite(zl)]).ravel()
        entry["null"] = np.sort(null)

    def n_controls(self, group) -> int:
        e = self.groups.get(str(group))
        return int(e["n"]) if e else 0

    def effects(self, eff: pd.DataFrame) -> pd.DataFrame:
        """``eff`` (one target's effects table) with ``log2fc, z_vs_controls, p_vs_controls,
        fdr_vs_controls, significant`` (and ``n_controls``)."""
        from ._base import bh_fdr

        out = eff.copy()
        n = len(out)
        l2 = log2_effect(out["ctrl_mean"], out["pert_mean"], str(out["readout"].iloc[0])) if n else np.zeros(0)
        z, p, q, nc = (np.full(n, np.nan) for _ in range(4))
        nc[:] = 0
        if n:
            gcol = self.group_col
            feats = out["feature"].to_numpy()
            keys = pd.DataFrame({"p": out["perturbation"].astype(str).to_numpy(),
                                 "g": out[gcol].astype(str).to_numpy()})
            for key, rows in keys.groupby(["p", "g"], sort=False).indices.items():
                rows = np.asarray(rows)
                entry = self.groups.get(key[1])
                if entry is None or entry["n"] < MIN_CONTROLS:
                    nc[rows] = 0 if entry is None else entry["n"]
                    continue
                loo = key[0] in entry["names"]  # a target that is also a control: compare it with the others
                if loo:
                    keep = [i for i, nm in enumerate(entry["names"]) if nm != key[0]]
                    sub = {"C": entry["C"][keep], "names": [entry["names"][i] for i in keep],
                           "features": entry["features"]}
                    self._prepare(sub)
                    if sub["n"] < MIN_CONTROLS:
                        nc[rows] = sub["n"]
                        continue
                    entry = sub
                fr = feats[rows]
                ef = entry["features"]
                fpos = (np.arange(len(ef)) if len(fr) == len(ef) and np.array_equal(fr, ef)
                        else pd.Index(ef).get_indexer(fr))
                ok = fpos >= 0
                r = rows[ok]
                zz = (l2[r] - entry["mu"][fpos[ok]]) / entry["scale"][fpos[ok]]
                null = entry["null"]
                ge = len(null) - np.searchsorted(null, np.abs(zz), side="left")
                z[r] = zz
                p[r] = (1.0 + ge) / (1.0 + len(null))
                q[r] = bh_fdr(p[r])
                nc[rows] = entry["n"]
        out["log2fc"] = l2
        out["z_vs_controls"] = z
        out["p_vs_controls"] = p
        out["fdr_vs_controls"] = q
        with np.errstate(invalid="ignore"):
            out["significant"] = (q <= self.alpha) & (np.abs(l2) >= self.min_effect)
        out["n_controls"] = nc.astype(np.int64)
        return out

    def block_effects(self, l2: np.ndarray, perts: Sequence[str], groups: Sequence[str],
                      features: Sequence[str]) -> tuple[np.ndarray, ...]:
        """The calibrated columns of :meth:`effects` for effects laid out in blocks, vectorised per group.

        ``l2``: ``m x F`` ``log2fc`` of ``m`` (perturbation ``perts[i]``, group ``groups[i]``) blocks
        over ``features`` (the readout's order). Returns ``z, p, q`` (``m x F``: ``z_vs_controls``,
        ``p_vs_controls``, ``fdr_vs_controls``) and ``n_controls`` (``m``), equal to
        :meth:`effects` on the same rows.
        """
        l2 = np.asarray(l2, dtype=np.float64)
        m, F = l2.shape
        z, p, q = (np.full((m, F), np.nan) for _ in range(3))
        nc = np.zeros(m, np.int64)
        perts = np.asarray([str(x) for x in perts], dtype=object)
        groups = np.asarray([str(x) for x in groups], dtype=object)
        features = np.asarray(features, dtype=object)

        def fill(entry, rows):
            ef = entry["features"]
            fpos = (np.arange(len(ef)) if len(features) == len(ef) and np.array_equal(features, ef)
                    else pd.Index(ef).get_indexer(features))
            ok = np.flatnonzero(fpos >= 0)
            zz = (l2[np.ix_(rows, ok)] - entry["mu"][fpos[ok]]) / entry["scale"][fpos[ok]]
            null = entry["null"]
            pp = (1.0 + (len(null) - np.searchsorted(null, np.abs(zz).ravel(), side="left")).reshape(zz.shape)) \
                / (1.0 + len(null))
            z[np.ix_(rows, ok)] = zz
            p[np.ix_(rows, ok)] = pp
            q[np.ix_(rows, ok)] = bh_fdr_rows(pp)
            nc[rows] = entry["n"]

        for g in pd.unique(groups):
            rows = np.flatnonzero(groups == g)
            entry = self.groups.get(g)
            if entry is None or entry["n"] < MIN_CONTROLS:
                nc[rows] = 0 if entry is None else entry["n"]
                continue
            names = set(entry["names"])
            loo = np.fromiter((x in names for x in perts[rows]), bool, len(rows))
            if (~loo).any():
                fill(entry, rows[~loo])
            for r in rows[loo]:  # a target that is also a control: compare it with the others
                keep = [i for i, nm in enumerate(entry["names"]) if nm != perts[r]]
                sub = {"C": entry["C"][keep], "names": [entry["names"][i] for i in keep], "features": entry["features"]}
                self._prepare(sub)
                if sub["n"] < MIN_CONTROLS:
                    nc[r] = sub["n"]
                    continue
                fill(sub, np.array([r]))
        return z, p, q, nc

    def state(self, st: pd.DataFrame) -> pd.DataFrame:
        """``st`` (one target's state table) with the target-level columns against the controls."""
        from scipy import special

        out = st.copy()
        cols = {k: np.full(len(out), np.nan) for k in ("latent_shift_ctrl_mean", "latent_shift_z",
                                                         "p_state_vs_controls", "frac_type_changed_ctrl_mean",
                                                         "p_type_vs_controls")}
        ncol = np.zeros(len(out), np.int64)
        shifts = out["latent_shift"].to_numpy(np.float64)
        ftc = out["frac_type_changed"].to_numpy(np.float64) if "frac_type_changed" in out else None
        for i, (pert, g) in enumerate(zip(out["perturbation"].astype(str), out[self.group_col].astype(str))):
            entry = self.groups.get(g)
            if entry is None or "shift" not in entry:
                continue
            shift, typ = entry["shift"], entry["type"]
            names = list(entry["names"])
            if pert in names:  # leave the target out of its own controls
                k = names.index(pert)
                shift = np.delete(shift, k)
                typ = np.delete(typ, k) if len(typ) else typ
            n = len(shift)
            ncol[i] = n
            if n < MIN_CONTROLS:
                continue
            x = float(shifts[i])
            pos = shift[shift > 0]
            c = float(np.median(pos)) if len(pos) else 1.0
            lc = np.log1p(shift / c)
            m, s = lc.mean(), max(float(lc.std(ddof=1)), _TINY)
            lx = np.log1p(x / c)
            cols["latent_shift_ctrl_mean"][i] = float(shift.mean())
            cols["latent_shift_z"][i] = (lx - m) / s
            # a target that moves no cell (shift exactly 0) moves nothing: p = 1
            cols["p_state_vs_controls"][i] = (float(special.stdtr(n - 1, -(lx - m) / (s * np.sqrt(1 + 1 / n))))
                                              if x > 0 else 1.0)
            if len(typ) and ftc is not None:
                xt = float(ftc[i])
                cols["frac_type_changed_ctrl_mean"][i] = float(typ.mean())
                cols["p_type_vs_controls"][i] = float((1 + np.sum(typ >= xt)) / (1 + len(typ)))
        for k, v in cols.items():
            out[k] = v
        out["n_controls"] = ncol
        return out


def add_state_fdr(summary: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """BH of ``p_state_vs_controls`` over the targets of each group -> ``fdr_state_vs_controls``, ``moves_state``."""
    from ._base import bh_fdr, group_column_of

    if not len(summary) or "p_state_vs_controls" not in summary:
        return summary
    out = summary.copy()
    gcol = group_column_of(out) or "cell_type"
    q = np.full(len(out), np.nan)
    for _, ix in out.groupby(gcol, sort=False, observed=True).indices.items():
        q[ix] = bh_fdr(out["p_state_vs_controls"].to_numpy(np.float64)[ix])
    out["fdr_state_vs_controls"] = q
    with np.errstate(invalid="ignore"):
        out["moves_state"] = q <= alpha
    return out


# --------------------------------------------------------------------------- panel test
def sign_flip_test(d, n_perm: int = 20_000, seed: int = 0) -> float:
    """One-sided p-value of ``mean(d) > 0`` under random sign flips (exact, all ``2^n`` flips, up to 16 values)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return float("nan")
    obs = d.mean()
    if n <= 16:
        signs = np.array(list(itertools.product([1.0, -1.0], repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice([1.0, -1.0], size=(n_perm, n))
    null = (signs * d).mean(1)
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    return float((np.sum(null >= obs - tol) + (0 if n <= 16 else 1)) / (len(null) + (0 if n <= 16 else 1)))


def panel_test(summary: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Do the screened targets, as a set, move cells more than their controls? One row per group.

    For each target ``d = log latent_shift - mean log latent_shift of the group's controls``
    (``latent_shift_z`` times the controls' sd); one-sided sign-flip test of ``mean(d) > 0``
    over the targets (:func:`sign_flip_test`), plus the number of targets above the control mean
    and of targets with ``moves_state``.
    """
    from ._base import group_column_of

    if not len(summary) or "latent_shift_z" not in summary:
        return pd.DataFrame()
    gcol = group_column_of(summary) or "cell_type"
    rows = []
    for g, sub in summary.groupby(gcol, sort=False, observed=True):
        z = sub["latent_shift_z"].to_numpy(np.float64)
        z = z[np.isfinite(z)]
        rows.append({gcol: g, "n_targets": int(len(z)), "n_above_controls": int((z > 0).sum()),
                     "mean_z": float(z.mean()) if len(z) else np.nan,
                     "n_moves_state": int(sub.get("moves_state", pd.Series(False, index=sub.index)).fillna(False)
                                          .astype(bool).sum()),
                     "p_sign_flip": sign_flip_test(z, seed=seed)})
    return pd.DataFrame(rows)


def check_controls(controls) -> tuple[int, list[str] | None]:
    """``controls=`` of a screen: an int (number drawn per group; 0 disables) or a list of names."""
    if controls is None:
        return 0, None
    if isinstance(controls, (bool, np.bool_)):
        raise OptionError(f"controls must be a number of control genes or a list of names, got {controls!r}")
    if isinstance(controls, (int, np.integer)):
        if controls < 0:
            raise OptionError(f"controls must be >= 0, got {controls}")
        return int(controls), None
    if isinstance(controls, str):
        controls = [c for c in controls.split(",") if c.strip()]
    try:
        names = [str(c).strip() for c in controls]
    except TypeError:
        raise OptionError(f"controls must be a number of control genes or a list of names, got {controls!r}") \
            from None
    if not names:
        raise OptionError("controls is an empty list; give control names or a number of controls to draw")
    return len(names), names


def warn_few(per_group: dict[str, list[str]], wanted: int) -> None:
    """Warn about groups with fewer controls than asked for (fewer than 3: nothing callable there)."""
    few = {g: len(c) for g, c in per_group.items() if len(c) < wanted}
    if few:
        blocked = sum(1 for k in few.values() if k < MIN_CONTROLS)
        logger.warning("screen: only %s control feature(s) available in %d group(s) (%d asked for)%s",
                       ", ".join(f"{g}: {k}" for g, k in list(few.items())[:5]), len(few), wanted,
                       f"; fewer than {MIN_CONTROLS} in {blocked} group(s), where nothing can be called "
                       "significant" if blocked else "")


def _known_tfs(genes: Sequence[str], organism: str | None) -> list[str]:
    """Known TFs among ``genes`` (CollecTRI, DoRothEA A-E and TRRUST sources); empty when no reference is available."""
    from ..datasets import tf_list

    try:
        return tf_list(list(genes), organism=organism or "human", source="union", levels="ABCDE", order="name")
    except Exception as err:  # reference networks not available: controls exclude the targets (and tfs=) only
        logger.warning("screen: no TF list to keep TFs out of the controls (%s); only the targets and tfs= are "
                       "excluded", err)
        return []


def control_perturbations(inputs, perts, resolved: dict, genes, peaks, *, n: int, names: list[str] | None,
                          seed: int, groupby: str | None, tfs=None, organism: str | None = None) -> list:
    """The control :class:`~scdiffx_grn.perturb.Perturbation` s of a screen of ``perts`` (one per
    control x group, perturbed in that group's cells only, named ``control:<feature>@<group>``)."""
    from ._spec import Perturbation

    if not perts or (n == 0 and names is None):
        return []
    p0 = perts[0]
    gnames = [str(g) for g in inputs.group_names]
    mk = dict(kind=p0.kind, factor=p0.factor, n_samples=p0.n_samples)
    out = []
    if p0.modality == "tf" and names is None:  # random peak sets of the targets' median size, per group
        sizes = [len(resolved[p.name]) for p in perts if p.name in resolved]
        size = max(int(np.median(sizes)) if sizes else 1, 1)
        used = set(np.concatenate([resolved[p.name] for p in perts if p.name in resolved]).tolist()) \
            if resolved else set()
        pool = [pk for i, pk in enumerate(peaks) if i not in used]
        for g in gnames:
            for k in range(min(n, len(pool) // size)):
                pick = np.argsort(cell_keys([f"{k}:{g}:{pk}" for pk in pool], seed), kind="stable")[:size]
                out.append(Perturbation([pool[i] for i in pick], modality="atac",
                                        cells=None if groupby is None else [g],
                                        name=control_name(f"set{k + 1}", None if groupby is None else g), **mk))
        return out
    feats = genes if p0.source == "rna" else peaks
    targets = [p.targets[0] for p in perts if p.name in resolved]
    exclude = list(tfs or []) + (_known_tfs(feats, organism) if p0.source == "rna" else [])
    per_group = choose_controls(inputs, feats, targets, n=n, exclude=exclude, controls=names, seed=seed)
    warn_few(per_group, n)
    for g in gnames:
        for c in per_group[g]:
            out.append(Perturbation([c], modality=p0.modality if p0.modality != "tf" else "atac",
                                    cells=None if groupby is None else [g],
                                    name=control_name(c, None if groupby is None else g), **mk))
    return out


def significance_text(summary: pd.DataFrame, *, alpha: float = 0.05, min_effect: float = DEFAULT_MIN_EFFECT) -> str:
    """What a screen summary calls significant and why, in words (CLI, report, notebook)."""
    if not len(summary):
        return "No target was screened."
    n_pairs = len(summary)
    n_ctrl = int(summary["n_controls"].max()) if "n_controls" in summary else 0
    tot_t = int(summary["n_sig_t"].sum()) if "n_sig_t" in summary else 0
    if n_ctrl < MIN_CONTROLS:
        return (f"No control calibration (fewer than {MIN_CONTROLS} controls): nothing is called significant. "
                f"A t-test over cells alone would flag {tot_t:,} target x type x feature tests, but over many cells it "
                "makes any consistent shift significant, however small.")
    tot = int(summary["n_sig"].sum())
    n_with = int((summary["n_sig"] > 0).sum())
    moves = int(summary["moves_state"].fillna(False).astype(bool).sum()) if "moves_state" in summary else 0
    mx = float(summary["max_abs_log2fc"].max()) if "max_abs_log2fc" in summary else float("nan")
    return (f"Significant means: FDR <= {alpha:g} against up to {n_ctrl} matched control genes per cell type "
            f"(empirical null pooled over features) and |log2 fold change| >= {min_effect:g}. "
            f"{tot:,} feature call(s) in {n_with} of {n_pairs} target x cell-type pair(s) (largest |log2FC| "
            f"{mx:.3g}); {moves} pair(s) move the cell state (latent shift) more than their controls "
            f"(FDR <= {alpha:g}). Not significant: everything else - a t-test over cells alone would flag "
            f"{tot_t:,} tests, because over many cells any consistent shift, however small, passes it.")
