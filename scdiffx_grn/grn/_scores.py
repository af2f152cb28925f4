"""Model-based peak -> gene scores for candidate pairs (attention x saliency, IG, knockout).

All functions take the model through its tensor API (see ``docs/ARCHITECTURE.md``) and a set
of cells of one cell type; they stream the cells in batches and keep running sums only, so
memory does not grow with the number of cells, and never build a cells x peaks x genes array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import OptionError, ScdxError, UnknownFeatureError, _fmt_items
from .._modelio import Edit, cell_conditions, eval_mode, torch_generator, translate_inputs
from .._modelio import dense_rows as _dense
from .._modelio import model_inputs as _model_inputs
from .._vocab import READOUTS, check_option
from ..perturb._engine import EngineInputs, PairedEngine

__all__ = [
    "attention_matrix",
    "attention_scores",
    "close_peaks_effect",
    "ig_scores",
    "knockout_scores",
    "model_inputs",
    "saliency_matrices",
]


# ------------------------------------------------------------------------------ helpers
def model_inputs(model, mdata):
    """Raw RNA / ATAC matrices of ``mdata`` in the model's feature order (CSR, cells x features)."""
    return _model_inputs(model, mdata, error=UnknownFeatureError)


def cond_for(model, mdata, idx: np.ndarray):
    """Label indices of cells ``idx`` for every label key the model knows (null when absent)."""
    return cell_conditions(model, mdata, idx)


def forward_process(model):
    """The forward (noising) process the model was trained with: a scheduler with ``add_noise(z0, noise, t)``
    and ``timestep_dtype`` (integer timesteps for diffusion, model time for flow matching).

    The model's ``forward_process`` (a protocol member), or for a model without one (a stand-in) the
    public :func:`scdiffx_grn.model.training_scheduler` of its config.
    """
    fp = getattr(model, "forward_process", None)
    if fp is not None:
        return fp
    from ..model import training_scheduler

    return training_scheduler(model.config)


# ------------------------------------------------------------------------------ saliency
def saliency_matrices(model, X_rna, X_atac, *, batch_size: int = 128, which=("rna", "atac")) -> dict:
    """Token x feature gradient saliency of the encoders, averaged over cells.

    ``S[mod][k, f] = mean_cells mean_{d in token k} |d z_d / d x_f|`` where ``z`` is the
    normalised latent and token *k* covers latent dims ``[k*token_dim, (k+1)*token_dim)``.

    Parameters
    ----------
    X_rna, X_atac
        Raw matrices (cells x model features) of the cells to average over.
    which
        Modalities to compute.

    Returns
    -------
    dict ``{"rna": (n_tokens, n_genes), "atac": (n_tokens, n_peaks)}`` numpy arrays.
    """
    import torch

    td = int(model.config.token_dim)
    out = {}
    with eval_mode(model):
        for mod in which:
            X = X_rna if mod == "rna" else X_atac
            n = X.shape[0]
            acc = None
            for s in range(0, n, batch_size):
                rows = np.arange(s, min(n, s + batch_size))
                x = (model.rna_tensor if mod == "rna" else model.atac_tensor)(_dense(X, rows))
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    z = model.encode(mod, x)
                    L = z.shape[1]
                    if acc is None:
                        acc = torch.zeros(L, x.shape[1], dtype=torch.float64, device=x.device)
                    for d in range(L):
                        (g,) = torch.autograd.grad(z[:, d].sum(), x, retain_graph=d < L - 1)
                        acc[d] += g.abs().sum(0).double()
            acc = (acc / max(n, 1)).view(-1, td, acc.shape[1]).mean(1)
            out[mod] = acc.cpu().numpy()
    return out


# ------------------------------------------------------------------------------ attention
def attention_matrix(model, X_rna, X_atac, cond, *, timesteps: Sequence[int] = (100, 300, 500),
                     layers: Sequence[int] | None = None, head_reduce: str = "mean",
                     noise_atac: bool = False, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """RNA <- ATAC cross-attention (n_tokens_rna x n_tokens_atac) averaged over cells/heads/layers/timesteps.

    The RNA latent of each real cell is forward-diffused to each timestep (fixed seeded noise)
    with the model's own forward process (:func:`forward_process`: diffusion or flow matching;
    timesteps are in model time, ``0..n_train_timesteps``), the ATAC latent is given clean
    (``t_atac = 0``, the translation setting) or noised with the same timestep when
    ``noise_atac``; the ``"rna_to_atac"`` maps of ``model.denoiser_attention`` are reduced over heads
    (``"mean"`` / ``"max"``), the selected layers, cells and timesteps.
    """
    import torch

    n = X_rna.shape[0]
    acc, count = None, 0
    g = torch_generator(seed)
    fp = forward_process(model)
    as_t = int if fp.timestep_dtype == torch.long else float
    attention = getattr(model, "denoiser_attention", None)
    if attention is None:
        raise OptionError(f"attention scores need the model's denoiser_attention (a TranslationModel member); "
                          f"{type(model).__name__} has none: use method='integrated_gradients' or 'knockout'")
    with eval_mode(model), torch.no_grad():
        for s in range(0, n, batch_size):
            rows = np.arange(s, min(n, s + batch_size))
            z_r = model.encode("rna", model.rna_tensor(_dense(X_rna, rows)))
            z_a = model.encode("atac", model.atac_tensor(_dense(X_atac, rows)))
            c = cond[rows] if cond is not None else None
            b = len(rows)
            for t in timesteps:
                tt = torch.full((b,), as_t(t), dtype=fp.timestep_dtype, device=z_r.device)
                eps_r = torch.randn(z_r.shape, generator=g).to(z_r.device)
                zr_t = fp.add_noise(z_r, eps_r, tt)
                if noise_atac:
                    eps_a = torch.randn(z_a.shape, generator=g).to(z_a.device)
                    za_t, ta = fp.add_noise(z_a, eps_a, tt), tt
                else:
                    za_t, ta = z_a, torch.zeros_like(tt)
                maps = attention(zr_t, za_t, tt, ta, c)["rna_to_atac"]
                sel = range(len(maps)) if layers is None else layers
                try:
                    stack = torch.stack([maps[i] for i in sel])  # L,B,H,T,T
                except IndexError as e:
                    raise ScdxError(f"layers {list(sel)} out of range: the denoiser has {len(maps)} layers") from e
                if head_reduce == "mean":
                    red = stack.float().mean(2)
                elif head_reduce == "max":
                    red = stack.float().amax(2)
                else:
                    raise ScdxError(f"head_reduce must be 'mean' or 'max', got {head_reduce!r}")
                a = red.mean(0).sum(0).double()  # sum over cells
                acc = a if acc is None else acc + a
                count += b
    return (acc / count).cpu().numpy()


def _pair_index(model, pairs: pd.DataFrame):
    gpos = pd.Index(model.rna_var_names).get_indexer(pairs["gene"])
    ppos = pd.Index(model.atac_var_names).get_indexer(pairs["peak"])
    if (gpos < 0).any():
        raise UnknownFeatureError(f"candidate genes not among the model's genes: {_fmt_items(pairs['gene'][gpos < 0])}")
    if (ppos < 0).any():
        raise UnknownFeatureError(f"candidate peaks not among the model's peaks: {_fmt_items(pairs['peak'][ppos < 0])}")
    return gpos, ppos


def attention_scores(model, X_rna, X_atac, cond, pairs: pd.DataFrame, *, timesteps=(100, 300, 500), layers=None,
                     head_reduce: str = "mean", noise_atac: bool = False, batch_size: int = 128,
                     seed: int = 0) -> np.ndarray:
    """``score(p, g) = sum_ij S_rna[i, g] A[i, j] S_atac[j, p]`` for the candidate pairs only.

    ``A`` from :func:`attention_matrix`, ``S`` from :func:`saliency_matrices`; the product is
    evaluated as ``(A @ S_atac)[:, p] . S_rna[:, g]`` gathered per pair.
    """
    gpos, ppos = _pair_index(model, pairs)
    S = saliency_matrices(model, X_rna, X_atac, batch_size=batch_size)
    A = attention_matrix(model, X_rna, X_atac, cond, timesteps=timesteps, layers=layers,
                         head_reduce=head_reduce, noise_atac=noise_atac, batch_size=batch_size, seed=seed)
    M = A @ S["atac"]  # T_rna x peaks
    return np.einsum("ij,ij->j", S["rna"][:, gpos], M[:, ppos])


def _translate_kw(readout: str, sampler: str, n_steps: int) -> dict:
    """Explicit translation settings: ``readout="mean"`` (posterior mean, one denoiser call for v / x0 /
    flow models; epsilon models run a DDIM trajectory of ``n_steps``) or ``"samples"`` (``sampler``)."""
    check_option("readout", readout, READOUTS)
    return {"readout": readout, "sampler": sampler, "n_steps": int(n_steps)}


def _names(cell_names, n: int) -> np.ndarray:
    """Obs names keying each cell's noise (default: the row numbers, as strings)."""
    if cell_names is None:
        return np.array([str(i) for i in range(n)], dtype=object)
    names = np.asarray(cell_names).astype(str)
    if len(names) != n:
        raise ScdxError(f"cell_names has {len(names)} entries for {n} cells")
    return names


# ------------------------------------------------------------------------------ integrated gradients
def _translate_rna(model, x_atac, cond, noise, kw):
    return model.decode_rna(translate_inputs(model, "atac", x_atac, cond, noise, kw))


def _log_expr(rho):
    """Translated expression on the log1p CP10k scale (the scale of the knockout effects)."""
    import torch

    return torch.log1p(1e4 * rho)


def _ig_baseline(model, X_atac, baseline: str):
    if baseline == "zeros":
        return None
    if baseline == "mean":
        return model.atac_tensor(_dense(X_atac, np.arange(X_atac.shape[0]))).mean(0, keepdim=True)
    raise ScdxError(f"baseline must be 'zeros' or 'mean', got {baseline!r}")


def _decoder_jvp(model, z, genes, d: int):
    """Column ``d`` of the Jacobian of log1p CP10k expression of ``genes`` w.r.t. the RNA latent, per row."""
    import torch

    t = torch.zeros_like(z)
    t[:, d] = 1.0
    f = lambda zz: _log_expr(model.decode_rna(zz))[:, genes]
    try:
        return torch.func.jvp(f, (z,), (t,))[1]
    except Exception:  # noqa: BLE001 - ops without forward-mode AD: double-backward jvp
        return torch.autograd.functional.jvp(f, z, t)[1]


def _decoder_jacobian(model, z, genes, chunk: int = 32):
    """``(rows, len(genes), latent)`` Jacobian of log1p CP10k expression of ``genes`` w.r.t. the RNA latent:
    forward-mode products vectorised over ``chunk`` latent directions at a time (one per direction,
    :func:`_decoder_jvp`, where ``torch.func.vmap`` cannot run the decoder)."""
    import torch

    b, L = z.shape
    f = lambda zz: _log_expr(model.decode_rna(zz))[:, genes]  # noqa: E731
    try:
        jv = torch.func.vmap(lambda t: torch.func.jvp(f, (z,), (t,))[1])
        parts = []
        for d0 in range(0, L, chunk):
            dirs = torch.arange(d0, min(L, d0 + chunk), device=z.device)
            t = torch.zeros(len(dirs), b, L, dtype=z.dtype, device=z.device)
            t[torch.arange(len(dirs), device=z.device), :, dirs] = 1.0
            parts.append(jv(t).detach())  # (directions, rows, genes)
        return torch.cat(parts).permute(1, 2, 0)
    except Exception:  # noqa: BLE001 - ops without batching rules: one direction at a time
        return torch.stack([_decoder_jvp(model, z, genes, d).detach() for d in range(L)], -1)


class _PairLayout:
    """Candidate pairs grouped by peak: unique genes / peaks, each pair's column in them, and per
    candidate peak its pairs (CSR), so that the pairs of the open peaks of a cell are gathered
    without a pairs-wide scan."""

    def __init__(self, gpos: np.ndarray, ppos: np.ndarray, n_peaks: int):
        self.genes, self.gi = np.unique(gpos, return_inverse=True)
        self.peaks, self.pi = np.unique(ppos, return_inverse=True)
        self.n_pairs = len(gpos)
        order = np.argsort(self.pi, kind="stable")
        self.by_peak = order  # pairs sorted by peak column
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(self.pi, minlength=len(self.peaks)))])
        self.col = np.full(n_peaks, -1, dtype=np.int64)  # model peak -> candidate-peak column (-1: none)
        self.col[self.peaks] = np.arange(len(self.peaks))

    def pairs_of(self, cols: np.ndarray):
        """Pairs of candidate-peak columns ``cols``: ``(pair index, position in cols)``."""
        cnt = self.offsets[cols + 1] - self.offsets[cols]
        pos = np.repeat(np.arange(len(cols)), cnt)
        start = np.repeat(self.offsets[cols] - np.cumsum(cnt) + cnt, cnt)
        return self.by_peak[start + np.arange(int(cnt.sum()))], pos


def _rows_budget(bytes_per_row: float, mem_budget_mb: float) -> int:
    return max(1, int(float(mem_budget_mb) * 2**20 // max(bytes_per_row, 1.0)))


def _jacobian_pair_sums(model, X_atac, cond, noise_all, lay: _PairLayout, alphas, steps, xa_base, kw, *,
                        batch_size: int, mem_budget_mb: float, pair_chunk: int | None = None) -> np.ndarray:
    """``sum_cells sum_k w_k (x_p - b_p) sum_l A_k[g, l] B_k[l, p]`` at the candidate pairs.

    ``A_k = d log1p(1e4 rho_g) / dz`` (genes x latent: ``latent_dim`` forward-mode products through
    the decoder) and ``B_k = dz / dx`` (latent x peaks: ``latent_dim`` backward passes through the
    translation and encoder) at ``x_k = b + a_k (x - b)``, read at the candidate genes / peaks only;
    the pair sum runs over the (row, pair) entries with ``x_p != b_p`` (with a zero baseline: the
    pairs of the cell's open peaks), in chunks of ``pair_chunk`` entries. Rows are (alpha, cell);
    cells per chunk: at most ``batch_size``, fewer when ``mem_budget_mb`` asks.
    """
    import torch

    n, n_peaks = X_atac.shape
    m = len(alphas)
    G, P = len(lay.genes), len(lay.peaks)
    acc = torch.zeros(lay.n_pairs, dtype=torch.float64)
    if n == 0 or lay.n_pairs == 0:
        return acc.numpy()
    genes_t = torch.as_tensor(lay.genes, dtype=torch.long)
    peaks_t = torch.as_tensor(lay.peaks, dtype=torch.long)
    gi_t = torch.as_tensor(lay.gi, dtype=torch.long)
    # bytes per (alpha, cell) row: input, its gradient and the encoder graph (~4 x peaks), the
    # peak-side Jacobian (L x P), the gene-side one (G x L); latent width read from the noise
    L = int(noise_all.shape[1])
    # the model's linear encoder front (optional hook): differentiate at the first layer's output (width H)
    # and form dz/dx = dz/dh @ weight at each cell's entries only, never over all candidate peaks at once
    front = getattr(model, "linear_front", None)
    front = front("atac") if front is not None else None
    if front is not None:
        front = (front[0].detach(), front[1].detach(), front[2])
    H = int(front[0].shape[0]) if front is not None else P
    per_row = 4.0 * (4 * n_peaks + L * H + 2 * G * L)
    cells = max(1, min(int(batch_size), _rows_budget(per_row, mem_budget_mb) // m))
    if pair_chunk is None:  # entries per gather: two (entries x L) float32 blocks within a quarter of the budget
        pair_chunk = _rows_budget(8.0 * L + 32, mem_budget_mb / 4)
    alphas_t = torch.as_tensor(alphas, dtype=torch.float32)
    steps_t = torch.as_tensor(steps, dtype=torch.float32)
    with eval_mode(model):
        for s in range(0, n, cells):
            rows = np.arange(s, min(n, s + cells))
            b = len(rows)
            x = model.atac_tensor(_dense(X_atac, rows))
            dev = x.device
            noise = noise_all[rows].to(dev)
            c = cond[rows] if cond is not None else None
            base = torch.zeros_like(x) if xa_base is None else xa_base.to(dev).expand_as(x)
            # rows ordered (alpha, cell): x_a = b + a (x - b)
            xin = (base[None] + alphas_t.to(dev)[:, None, None] * (x - base)[None]).reshape(m * b, -1)
            xin = xin.detach().requires_grad_(True)
            nin = noise.repeat(m, 1)
            cin = c.repeat(m, 1) if c is not None else None
            dx = (x - base)[:, peaks_t]  # b x P: the IG weight (x_p - b_p) at the candidate peaks
            with torch.enable_grad():
                if front is not None:
                    W, bias, rest = front
                    leaf = torch.nn.functional.linear(xin.detach(), W, bias).detach().requires_grad_(True)
                    z = model.translate_latent(rest(leaf), "atac->rna", cin, nin, **kw)
                else:
                    leaf = xin
                    z = translate_inputs(model, "atac", xin, cin, nin, kw)
                L = z.shape[1]
                # dz/dh (front) or dz/dx at the candidate peaks
                B = torch.empty(m * b, L, H, dtype=torch.float32, device=dev)
                for d in range(L):
                    (gd,) = torch.autograd.grad(z[:, d].sum(), leaf, retain_graph=d < L - 1)
                    B[:, d] = gd if front is not None else gd[:, peaks_t]
                    del gd
            del xin, leaf
            zd = z.detach()
            A = _decoder_jacobian(model, zd, genes_t.to(dev))  # dy/dz at candidate genes: (rows, G, L)
            B = B.transpose(1, 2)  # (rows, P or H, L) view
            # entries (cell, pair) with x_p != b_p: with a zero baseline, the pairs of the cell's open peaks
            nz = (dx != 0).cpu().numpy()
            for ci in range(b):
                cols = np.flatnonzero(nz[ci])
                if len(cols) == 0:
                    continue
                pairs, pos = lay.pairs_of(cols)
                r = torch.arange(m)[:, None] * b + ci  # the cell's m rows
                Bcell = B[r[:, 0]] if front is not None else None  # (m, H, L): dz/dh of the cell, gathered once
                for e0 in range(0, len(pairs), max(1, pair_chunk // m)):
                    pr = torch.as_tensor(pairs[e0:e0 + max(1, pair_chunk // m)], dtype=torch.long)
                    pc = torch.as_tensor(cols[pos[e0:e0 + max(1, pair_chunk // m)]], dtype=torch.long)
                    if front is not None:  # dz/dx at the chunk's peaks: (m, e, L) = weight columns x dz/dh
                        Bc = W.t()[peaks_t[pc].to(dev)][None] @ Bcell
                    else:
                        Bc = B[r, pc[None]]
                    # sum_l A[r, g, l] B[r, p, l], weighted by w_k (x_p - b_p), summed over alpha
                    prod = (A[r, gi_t[pr][None]] * Bc).sum(-1)  # m x e
                    w = steps_t.to(dev)[:, None] * dx[ci, pc][None]
                    acc.index_add_(0, pr, (prod * w).sum(0).double().cpu())
            del A, B, z, zd
    return acc.numpy()


def ig_scores(model, X_atac, cond, pairs: pd.DataFrame, *, baseline: str = "zeros", n_steps: int = 16,
              method: str = "gausslegendre", sampler: str = "ddim", translate_steps: int = 10, batch_size: int = 16,
              engine: str = "jacobian", gene_batch: int = 8, internal_batch_size: int | None = 256,
              seed: int = 0, readout: str = "mean", cell_names=None, mem_budget_mb: float = 1024.0,
              pair_chunk: int | None = None) -> np.ndarray:
    """Integrated gradients of translated expression of each candidate gene w.r.t. its candidate peaks.

    The attributed function is ``y_g(x) = log1p(1e4 * decode_rna(translate(encode(x)))_g)``: the
    ATAC -> RNA translation of the binarised accessibility ``x`` (fixed noise per cell, so it
    is deterministic), on the same scale as the knockout effects. The translation is the
    posterior mean (``readout="mean"``, default: one denoiser call per cell for v / x0 / flow
    models) or a sampled trajectory (``readout="samples"``: ``sampler``, ``translate_steps``
    steps). The noise of each cell is keyed by its obs name (``cell_names``; default the row
    numbers), so a cell's score does not depend on its row or batch-mates. The attribution of peak
    ``p`` for gene ``g`` is captum's integrated gradients
    ``(x_p - b_p) * sum_k w_k * dy_g/dx_p (b + a_k (x - b))`` from a baseline ``b`` of zeros or
    the cell type's mean accessibility, with captum's quadrature (``method``, ``n_steps``).
    Only candidate pairs are kept, averaged over cells.

    Two engines compute the same quantity:

    - ``"jacobian"`` (default): closed form over the candidate pairs. The translation passes
      through the RNA latent ``z`` (``latent_dim`` values), so ``dy_g/dx_p = sum_l A[g, l] B[l, p]``
      with ``A = dy/dz`` (genes x latent, ``latent_dim`` forward-mode products through the
      decoder) and ``B = dz/dx`` (latent x peaks, ``latent_dim`` backward passes through the
      translation and encoder), both read at the candidate genes / peaks only; the pair score is
      that low-rank product evaluated at the (cell, pair) entries where ``x_p != b_p`` (a zero
      baseline: the pairs of the cell's open peaks). Genes x peaks is never formed; memory per
      chunk is bounded by ``mem_budget_mb`` (cells per chunk: at most ``batch_size``, fewer
      when the budget asks; ``pair_chunk`` entries per gather, default from the budget). Chunk
      sizes do not change the result (beyond float32 summation order).
    - ``"captum"``: ``captum.attr.IntegratedGradients`` with one target per gene
      (``gene_batch`` genes at a time); the reference the tests check the default against.

    Returns
    -------
    Scores aligned with the rows of ``pairs``.
    """
    import torch

    if engine not in ("jacobian", "captum"):
        raise ScdxError(f"engine must be 'jacobian' or 'captum', got {engine!r}")
    gpos, ppos = _pair_index(model, pairs)
    n = X_atac.shape[0]
    kw = _translate_kw(readout, sampler, translate_steps)
    noise_all = model.cell_noise(_names(cell_names, n), seed, 0)
    xa_base = _ig_baseline(model, X_atac, baseline)
    if engine == "jacobian":
        from captum.attr._utils.approximation_methods import approximation_parameters

        step_fn, alpha_fn = approximation_parameters(method)
        lay = _PairLayout(gpos, ppos, X_atac.shape[1])
        acc = _jacobian_pair_sums(model, X_atac, cond, noise_all, lay, alpha_fn(n_steps), step_fn(n_steps), xa_base,
                                  kw, batch_size=batch_size, mem_budget_mb=mem_budget_mb, pair_chunk=pair_chunk)
        return acc / max(n, 1)
    from captum.attr import IntegratedGradients

    genes = np.unique(gpos)
    acc = np.zeros(len(pairs))

    def fwd(x, noise, c):
        return _log_expr(_translate_rna(model, x, c, noise, kw))

    ig = IntegratedGradients(fwd)
    with eval_mode(model):
        for s in range(0, n, batch_size):
            rows = np.arange(s, min(n, s + batch_size))
            x = model.atac_tensor(_dense(X_atac, rows))
            b = len(rows)
            noise = noise_all[rows].to(x.device)
            c = cond[rows] if cond is not None else None
            base = torch.zeros_like(x) if xa_base is None else xa_base.expand_as(x)
            for gs in range(0, len(genes), gene_batch):
                gb = genes[gs:gs + gene_batch]
                xin = x.repeat(len(gb), 1)
                nin = noise.repeat(len(gb), 1)
                cin = c.repeat(len(gb), 1) if c is not None else None
                tgt = np.repeat(gb, b).tolist()
                bl = base.repeat(len(gb), 1)
                with torch.enable_grad():
                    att = ig.attribute(xin, baselines=bl, target=tgt, additional_forward_args=(nin, cin),
                                       n_steps=n_steps, method=method, internal_batch_size=internal_batch_size)
                att = att.detach().view(len(gb), b, -1).sum(1).cpu().numpy()  # genes x peaks (sum cells)
                for k, gi in enumerate(gb):
                    mm = np.flatnonzero(gpos == gi)
                    acc[mm] += att[k, ppos[mm]]
    return acc / max(n, 1)


# ------------------------------------------------------------------------------ knockout
def close_peaks_effect(model, X_atac, cond, peak_groups: Sequence[np.ndarray], *, gene_idx=None,
                       sampler: str = "ddim", n_steps: int = 10, n_samples: int = 1, batch_size: int = 64,
                       seed: int = 0, readout: str = "mean", skip_closed: bool = True, batch_rows: int = 1024,
                       cell_names=None) -> np.ndarray:
    """Effect of closing groups of peaks on translated expression, paired by noise.

    For each group (an array of model peak indices), the peaks are closed in every cell (a
    ``"close"`` :class:`~scdiffx_grn._modelio.Edit`) and the edited and unedited ATAC are
    translated to RNA with the same noise by the perturbation engine
    (:class:`~scdiffx_grn.perturb.PairedEngine`; noise ``model.cell_noise`` of the obs names
    ``cell_names``, default the row numbers, so a perturbation with the same seed and cells sees
    the same noise); ``log1p(1e4 rho_closed) - log1p(1e4 rho_ctrl)`` is averaged over cells (and
    samples). Used by ``tl.extract_grn(method="knockout")``; ``perturb.peak_knockout_effect`` is
    the per-peak, per-cell-type table of the same quantity.

    ``readout="mean"`` (default): the posterior-mean translation, ``n_samples`` noises averaged in
    latent space; ``"samples"``: ``n_samples`` sampled translations (``sampler``, ``n_steps``),
    effects averaged over them. ``skip_closed``: cells where every peak of the group is already
    closed are not re-translated (their difference is exactly 0; they still count in the mean).
    ``batch_size`` cells per control call; edited rows of several groups are stacked into calls
    of about ``batch_rows`` rows. Float32 throughout (no autocast).

    Returns
    -------
    Array (n_groups, n_genes or len(gene_idx)) of mean effects.
    """
    n = X_atac.shape[0]
    gsel = np.arange(len(model.rna_var_names)) if gene_idx is None else np.asarray(gene_idx, dtype=np.int64)
    kw = _translate_kw(readout, sampler, n_steps)
    acc = np.zeros((len(peak_groups), len(gsel)))
    if n == 0:
        return acc
    inputs = EngineInputs(src="atac", X=X_atac, cond=cond, groups=np.zeros(n, np.int64), group_names=["all"],
                          cell_names=_names(cell_names, n))
    eng = PairedEngine(model, inputs, readout=readout, n_noise=n_samples, seed=seed, batch_rows=batch_rows,
                       batch_size=batch_size, translate_kwargs=kw, skip_unchanged=skip_closed, autocast=False)
    edits = [Edit(name=str(k), idx=np.asarray(pk, dtype=np.int64), kind="close") for k, pk in enumerate(peak_groups)]
    for cd in eng.differences(edits):
        acc[cd.edit] += cd.d[..., gsel].double().sum((0, 1)).cpu().numpy()
    return acc / (n * eng.S)


def _knockout_sparse(model, X_atac, cond, lay: _PairLayout, *, readout: str, kw: dict, n_samples: int, seed: int,
                     batch_rows: int, batch_size: int, cell_names, mem_budget_mb: float) -> np.ndarray:
    """Sum over cells of ``y(closed p) - y(control)`` at the candidate genes of each candidate peak ``p``.

    Only the (cell, peak) edits that change the input are translated (peak open in the cell); an
    edited row is the cell's dense control row with one column zeroed, built per call for the
    rows of that call only (at most ``batch_rows`` rows, fewer when ``mem_budget_mb`` asks), with
    the edits of many peaks and cells stacked, cell by cell. The control arm and the translation
    are the paired engine's (:class:`~scdiffx_grn.perturb.PairedEngine`: same noise, same readout);
    each row's readout is kept at its peak's candidate genes only (one value per pair).
    """
    import torch

    n, n_peaks = X_atac.shape
    acc = np.zeros(lay.n_pairs)
    if n == 0 or lay.n_pairs == 0:
        return acc
    K = int(n_samples)
    cap = max(1, min(int(batch_rows) // K, _rows_budget(4.0 * 3 * n_peaks * K, mem_budget_mb)))
    inputs = EngineInputs(src="atac", X=X_atac, cond=cond, groups=np.zeros(n, np.int64), group_names=["all"],
                          cell_names=_names(cell_names, n))
    eng = PairedEngine(model, inputs, readout=readout, n_noise=K, seed=seed, batch_rows=cap * K,
                       batch_size=batch_size, translate_kwargs=kw, skip_unchanged=True, autocast=False)
    for _ in eng.control():
        pass
    Xs = X_atac.tocsr() if hasattr(X_atac, "tocsr") else None
    gsel = torch.as_tensor(lay.genes, dtype=torch.long)
    gi = lay.gi
    closed = getattr(model, "encode_closed", None)  # the protocol's optional rank-one encoder hook

    def flush(cells, cols):
        # rows: the control row of each cell with its candidate peak closed
        uc, inv = np.unique(cells, return_inverse=True)
        with eval_mode(model), torch.inference_mode():
            if closed is not None:  # each cell's first encoder layer once, one column subtracted per edit
                z_src = closed("atac", model.atac_tensor(_dense(X_atac, uc)), torch.as_tensor(inv, device=eng.dev),
                               torch.as_tensor(lay.peaks[cols], device=eng.dev))
                z = eng.translate_source(z_src, cells)
            else:
                x = _dense(X_atac, uc)[inv]
                x[np.arange(len(cols)), lay.peaks[cols]] = 0.0
                z = eng.translate_rows(x, cells)
            yc = eng.read(eng.z_ctrl[:, torch.as_tensor(uc, device=eng.dev)])[..., gsel]  # once per cell
            d = (eng.read(z)[..., gsel] - yc[:, torch.as_tensor(inv, device=eng.dev)]).double().sum(0).cpu().numpy()
        pr, pos = lay.pairs_of(cols)
        acc[:] += np.bincount(pr, weights=d[pos, gi[pr]], minlength=lay.n_pairs)

    buf_cells, buf_cols, n_buf = [], [], 0
    for i in range(n):
        if Xs is not None:
            lo, hi = Xs.indptr[i], Xs.indptr[i + 1]
            open_p = Xs.indices[lo:hi][Xs.data[lo:hi] > 0]
        else:
            open_p = np.flatnonzero(np.asarray(X_atac[i]).ravel() > 0)
        cols = lay.col[open_p]
        cols = np.unique(cols[cols >= 0])  # open candidate peaks of cell i
        pos = 0
        while pos < len(cols):
            take = min(cap - n_buf, len(cols) - pos)
            buf_cells.append(np.full(take, i, dtype=np.int64))
            buf_cols.append(cols[pos:pos + take])
            n_buf, pos = n_buf + take, pos + take
            if n_buf >= cap:
                flush(np.concatenate(buf_cells), np.concatenate(buf_cols))
                buf_cells, buf_cols, n_buf = [], [], 0
    if n_buf:
        flush(np.concatenate(buf_cells), np.concatenate(buf_cols))
    return acc / (n * eng.S)


def knockout_scores(model, X_atac, cond, pairs: pd.DataFrame, *, group: str = "peak", sampler: str = "ddim",
                    n_steps: int = 10, n_samples: int = 1, batch_size: int = 64,
                    skip_closed: bool = True, seed: int = 0, readout: str = "mean", engine: str = "exact",
                    batch_rows: int = 1024, mem_budget_mb: float = 1024.0, cell_names=None) -> np.ndarray:
    """In-silico peak closing: drop of translated candidate-gene expression when peaks are closed.

    ``group="peak"``: each candidate peak is closed alone and the effect on each of its
    candidate genes is read. ``group="gene"``: all candidate peaks of a gene are closed together
    and the pair score is the gene's drop (one score shared by the gene's peaks). Score =
    ``-(closed - control)`` so that a peak that supports expression scores positive. ``readout``:
    posterior mean (default) or ``"samples"`` (``sampler``, ``n_steps``), see
    :func:`close_peaks_effect`.

    ``engine`` (``group="peak"``):

    - ``"exact"`` (default): sparse blocks. Closing a peak changes only the cells where it is
      open (elsewhere the effect is exactly 0; they still count in the mean), so only those
      (cell, peak) edits are translated: rows built from the cell's control row with one column
      zeroed, many edits stacked per call (``batch_rows`` rows, bounded by ``mem_budget_mb``), the
      readout kept at the peak's candidate genes only. Memory does not grow with peaks x genes
      or with cells x peaks. ``skip_closed=False`` re-translates every (cell, peak) through
      :func:`close_peaks_effect` (the reference; same numbers, far slower).
    - ``"linear"``: first-order approximation, ``closed - control ~ -x_p dy_g/dx_p`` at the
      cell's own input (exact for a model linear in ``x``), computed in closed form over the
      candidate pairs like :func:`ig_scores` (one Jacobian of each side per cell, no translation
      per peak). An approximation: a non-linear model's response to closing a peak can differ;
      one noise sample (``n_samples=1``).
    """
    gpos, ppos = _pair_index(model, pairs)
    scores = np.zeros(len(pairs))
    if engine not in ("exact", "linear"):
        raise OptionError(f"knockout engine must be 'exact' or 'linear', got {engine!r}")
    if group == "peak":
        n = X_atac.shape[0]
        kw = _translate_kw(readout, sampler, n_steps)
        lay = _PairLayout(gpos, ppos, X_atac.shape[1])
        if engine == "linear":
            if int(n_samples) != 1:
                raise OptionError(f"knockout engine='linear' uses one noise sample; got n_samples={n_samples}")
            noise_all = model.cell_noise(_names(cell_names, n), seed, 0)
            acc = _jacobian_pair_sums(model, X_atac, cond, noise_all, lay, [1.0], [1.0], None, kw,
                                      batch_size=batch_size, mem_budget_mb=mem_budget_mb)
            return acc / max(n, 1)
        if skip_closed:
            return -_knockout_sparse(model, X_atac, cond, lay, readout=readout, kw=kw, n_samples=n_samples,
                                     seed=seed, batch_rows=batch_rows, batch_size=batch_size,
                                     cell_names=cell_names, mem_budget_mb=mem_budget_mb)
        up = np.unique(ppos)
        genes = np.unique(gpos)
        eff = close_peaks_effect(model, X_atac, cond, [np.array([p]) for p in up], gene_idx=genes, sampler=sampler,
                                 n_steps=n_steps, n_samples=n_samples, batch_size=batch_size,
                                 seed=seed, readout=readout, skip_closed=False, cell_names=cell_names)
        pi = pd.Index(up).get_indexer(ppos)
        gi = pd.Index(genes).get_indexer(gpos)
        scores[:] = -eff[pi, gi]
        return scores
    if engine == "linear":
        raise OptionError("knockout engine='linear' scores single peaks: use knockout_group='peak'")
    if group == "gene":
        genes = np.unique(gpos)
        groups = [np.unique(ppos[gpos == g]) for g in genes]
        eff = close_peaks_effect(model, X_atac, cond, groups, gene_idx=genes, sampler=sampler, n_steps=n_steps,
                                 n_samples=n_samples, batch_size=batch_size, seed=seed,
                                 readout=readout, skip_closed=skip_closed, cell_names=cell_names)
        own = -np.diag(eff)
        scores[:] = own[pd.Index(genes).get_indexer(gpos)]
        return scores
    raise ScdxError(f"group must be 'peak' or 'gene', got {group!r}")
