"""Neural network modules: tensors in, tensors / losses out (no AnnData here).

- :class:`RNAAutoencoder`: log1p-normalised counts -> latent -> negative binomial
  (softmax mean x library size, per-gene dispersion).
- :class:`ATACAutoencoder`: binarised peaks -> latent -> Bernoulli logits.
- :class:`DCADenoiser`: two token branches (RNA, ATAC) with adaLN-zero conditioning on time and
  labels; each block has self-attention within a modality and **Dual-Cross-Attention** (RNA tokens
  attend to ATAC tokens and ATAC tokens to RNA tokens), then an MLP.
- :class:`ScDXModule`: holds the three plus the latent normalisation buffers.
- Losses: the autoencoders' ``loss`` methods and :func:`diffusion_loss` (the denoiser's masked
  regression loss, returned as a :class:`LossOutput`; also ``ScDXModule.diffusion_loss``).

A *token* is a contiguous chunk of ``token_dim`` dimensions of a modality's normalised latent
vector, linearly embedded to ``width`` plus a learned position embedding. Attention maps are
``(batch, heads, tokens_query, tokens_key)``; tokens map back to genes/peaks through the
encoders' gradients (see :mod:`scdiffx_grn.grn`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._config import ModelConfig


# ----------------------------------------------------------------------------- autoencoders
def _mlp(sizes: list[int], dropout: float, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers += [nn.LayerNorm(sizes[i + 1]), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative binomial log-likelihood, elementwise (mean ``mu``, inverse dispersion ``theta``)."""
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        + theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
    )


class RNAAutoencoder(nn.Module):
    """Deterministic autoencoder with a negative binomial decoder.

    The encoder sees ``log1p(1e4 * counts / library_size)``; the decoder gives expression
    proportions ``rho`` (softmax over genes) so that the NB mean is ``rho * library_size``.
    """

    def __init__(self, n_genes: int, hidden: tuple[int, ...], latent_dim: int, dropout: float = 0.1,
                 encoder: nn.Module | None = None):
        super().__init__()
        # ``encoder``: an alternative encoder module (e.g. the attention set encoder)
        self.encoder = _mlp([n_genes, *hidden, latent_dim], dropout) if encoder is None else encoder
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_genes], dropout)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def encode(self, x_log: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_log)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Expression proportions ``rho`` (rows sum to 1)."""
        return torch.softmax(self.decoder(z).float(), dim=-1)

    @property
    def theta(self) -> torch.Tensor:
        return torch.exp(self.log_theta.clamp(-10, 10))

    def loss(self, counts: torch.Tensor, x_log: torch.Tensor, lib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean NB negative log-likelihood per cell, and the latent."""
        z = self.encode(x_log)
        rho = self.decode(z)
        mu = rho * lib[:, None]
        nll = -nb_log_likelihood(counts, mu, self.theta[None, :]).sum(-1).mean()
        return nll, z


class ATACAutoencoder(nn.Module):
    """Deterministic autoencoder with a Bernoulli decoder on binarised peaks."""

    def __init__(self, n_peaks: int, hidden: tuple[int, ...], latent_dim: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = _mlp([n_peaks, *hidden, latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_peaks], dropout)

    def encode(self, x_bin: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_bin)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Accessibility probabilities."""
        return torch.sigmoid(self.decode_logits(z))

    def loss(self, x_bin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bernoulli negative log-likelihood summed over peaks, mean over cells; and the latent."""
        z = self.encode(x_bin)
        nll = F.binary_cross_entropy_with_logits(self.decode_logits(z), x_bin, reduction="none").sum(-1).mean()
        return nll, z


# ----------------------------------------------------------------------------- denoiser
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """One embedding table per label key; index ``n_categories`` is the 'null' (dropped) label."""

    def __init__(self, n_categories: list[int], width: int):
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(n + 1, width) for n in n_categories])
        self.n_categories = list(n_categories)

    def null(self, batch: int, device) -> torch.Tensor:
        return torch.tensor(self.n_categories, device=device, dtype=torch.long).expand(batch, -1).clone()

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if not self.tables:
            return 0.0
        return sum(tab(cond[:, i]) for i, tab in enumerate(self.tables))


class Attention(nn.Module):
    """Multi-head attention that can return its weights (one code path for both uses)."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = width // n_heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, need_weights: bool = False):
        b, tq, w = x.shape
        tk = ctx.shape[1]
        q = self.q(x).view(b, tq, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(ctx).view(b, tk, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)
        h = (weights @ v).transpose(1, 2).reshape(b, tq, w)
        return self.out(h), (weights if need_weights else None)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _BranchBlock(nn.Module):
    """One modality's half of a DCA block: self-attn, cross-attn to the other modality, MLP."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float, cross: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(width, n_heads)
        if cross:  # single-modality blocks have no cross-attention (and 6 modulation vectors)
            self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.norm_ctx = nn.LayerNorm(width, eps=1e-6)
            self.cross_attn = Attention(width, n_heads)
        self.n_mod = 9 if cross else 6
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, self.n_mod * width))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-zero: each block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)

    def modulation(self, c: torch.Tensor):
        return self.ada(c).chunk(self.n_mod, dim=-1)


class DCABlock(nn.Module):
    """A Dual-Cross-Attention block over both branches."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float, paired: bool = True):
        super().__init__()
        self.rna = _BranchBlock(width, n_heads, mlp_ratio, cross=paired)
        self.atac = _BranchBlock(width, n_heads, mlp_ratio) if paired else None

    def forward(self, h_r, h_a, c_r, c_a, need_weights: bool = False):
        attn = {}
        if self.atac is None:  # single-modality: RNA self-attention + MLP only
            mr = self.rna.modulation(c_r)
            x = _modulate(self.rna.norm1(h_r), mr[0], mr[1])
            o, attn["rna_self"] = self.rna.self_attn(x, x, need_weights)
            h_r = h_r + mr[2][:, None] * o
            h_r = h_r + mr[5][:, None] * self.rna.mlp(_modulate(self.rna.norm3(h_r), mr[3], mr[4]))
            return h_r, h_a, attn
        mr, ma = self.rna.modulation(c_r), self.atac.modulation(c_a)
        # self-attention within each modality
        x = _modulate(self.rna.norm1(h_r), mr[0], mr[1])
        o, attn["rna_self"] = self.rna.self_attn(x, x, need_weights)
        h_r = h_r + mr[2][:, None] * o
        x = _modulate(self.atac.norm1(h_a), ma[0], ma[1])
        o, attn["atac_self"] = self.atac.self_attn(x, x, need_weights)
        h_a = h_a + ma[2][:, None] * o
        # dual cross-attention: both directions read the other branch's state before this step
        q_r = _modulate(self.rna.norm2(h_r), mr[3], mr[4])
        q_a = _modulate(self.atac.norm2(h_a), ma[3], ma[4])
        o_r, attn["rna_to_atac"] = self.rna.cross_attn(q_r, self.rna.norm_ctx(h_a), need_weights)
        o_a, attn["atac_to_rna"] = self.atac.cross_attn(q_a, self.atac.norm_ctx(h_r), need_weights)
        h_r = h_r + mr[5][:, None] * o_r
        h_a = h_a + ma[5][:, None] * o_a
        # MLPs
        h_r = h_r + mr[8][:, None] * self.rna.mlp(_modulate(self.rna.norm3(h_r), mr[6], mr[7]))
        h_a = h_a + ma[8][:, None] * self.atac.mlp(_modulate(self.atac.norm3(h_a), ma[6], ma[7]))
        return h_r, h_a, attn


class _FinalLayer(nn.Module):
    def __init__(self, width: int, token_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, token_dim)
        for m in (self.ada[-1], self.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, h, c):
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(h), shift, scale))


class SourceEmbedder(nn.Module):
    """Embedding of the other modality's clean latent for a branch's adaLN conditioning.

    A two-layer MLP whose last layer starts at zero, so a new model starts exactly as one
    without this path. Its output is gated by ``t_other <= 0`` (the other modality observed):
    noised or null sources contribute nothing.
    """

    def __init__(self, latent_dim: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(latent_dim, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z_other: torch.Tensor, t_other: torch.Tensor) -> torch.Tensor:
        gate = (t_other <= 0).to(z_other.dtype)[:, None]
        return self.mlp(z_other) * gate


class DCADenoiser(nn.Module):
    """Two-branch transformer denoiser with Dual-Cross-Attention.

    ``forward(z_rna, z_atac, t_rna, t_atac, cond)`` predicts the velocity (or clean latent, or
    noise; ``cfg.prediction``) of each branch. Each branch's conditioning vector is its own
    timestep embedding plus the other branch's timestep embedding (so it knows how noisy its
    context is) plus the label embedding, plus (``cfg.source_conditioning``) an embedding of the
    other branch's latent when that modality is observed. A timestep of 0 together with a clean
    input marks an observed (conditioning) modality.

    Two paths carry the observed modality into the other branch: the Dual-Cross-Attention
    (token-level, the interpretable path the GRN attention scores read) and the adaLN source
    embedding (the whole latent at once, a global shift/scale of every block). See
    ``docs/ARCHITECTURE.md``.

    In single-modality mode (``cfg.modalities == ["rna"]``) only the RNA branch exists (self-
    attention + MLP blocks, no cross-attention); ``z_atac`` is ignored (pass a ``(B, 0)``
    tensor) and the ATAC output is an empty ``(B, 0)`` tensor, so callers can treat both modes
    alike. Timesteps may be fractional (flow matching passes ``t * n_train_timesteps``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w, td, nt = cfg.width, cfg.token_dim, cfg.n_tokens
        self.token_dim, self.n_tokens = td, nt
        self.paired = cfg.paired
        self.embed_r = nn.Linear(td, w)
        self.pos_r = nn.Parameter(torch.randn(1, nt, w) * 0.02)
        if self.paired:
            self.embed_a = nn.Linear(td, w)
            self.pos_a = nn.Parameter(torch.randn(1, nt, w) * 0.02)
            self.t_self_r, self.t_other_r = TimestepEmbedder(w), TimestepEmbedder(w)
            self.t_self_a, self.t_other_a = TimestepEmbedder(w), TimestepEmbedder(w)
        else:
            self.t_self_r = TimestepEmbedder(w)
        self.labels = LabelEmbedder([len(cfg.label_categories[k]) for k in cfg.label_keys], w)
        self.source_conditioning = bool(getattr(cfg, "source_conditioning", False)) and self.paired
        if self.source_conditioning:
            self.src_r = SourceEmbedder(cfg.latent_dim, w)  # RNA branch reads the observed ATAC latent
            self.src_a = SourceEmbedder(cfg.latent_dim, w)  # ATAC branch reads the observed RNA latent
        self.blocks = nn.ModuleList([DCABlock(w, cfg.n_heads, cfg.mlp_ratio, paired=self.paired)
                                     for _ in range(cfg.n_layers)])
        self.final_r = _FinalLayer(w, td)
        if self.paired:
            self.final_a = _FinalLayer(w, td)

    def forward(self, z_rna, z_atac, t_rna, t_atac, cond, return_attention: bool = False):
        b = z_rna.shape[0]
        if not self.paired:
            return self._forward_single(z_rna, t_rna, cond, return_attention)
        h_r = self.embed_r(z_rna.view(b, self.n_tokens, self.token_dim)) + self.pos_r
        h_a = self.embed_a(z_atac.view(b, self.n_tokens, self.token_dim)) + self.pos_a
        lab = self.labels(cond)
        c_r = self.t_self_r(t_rna) + self.t_other_r(t_atac) + lab
        c_a = self.t_self_a(t_atac) + self.t_other_a(t_rna) + lab
        if self.source_conditioning:
            c_r = c_r + self.src_r(z_atac, t_atac)
            c_a = c_a + self.src_a(z_rna, t_rna)
        maps: dict[str, list[torch.Tensor]] = {k: [] for k in ("rna_self", "atac_self", "rna_to_atac", "atac_to_rna")}
        for blk in self.blocks:
            h_r, h_a, attn = blk(h_r, h_a, c_r, c_a, return_attention)
            if return_attention:
                for k, v in attn.items():
                    maps[k].append(v)
        out_r = self.final_r(h_r, c_r).reshape(b, -1)
        out_a = self.final_a(h_a, c_a).reshape(b, -1)
        if return_attention:
            return out_r, out_a, maps
        return out_r, out_a

    def _forward_single(self, z_rna, t_rna, cond, return_attention):
        b = z_rna.shape[0]
        h_r = self.embed_r(z_rna.view(b, self.n_tokens, self.token_dim)) + self.pos_r
        c_r = self.t_self_r(t_rna) + self.labels(cond)
        maps: dict[str, list[torch.Tensor]] = {"rna_self": []}
        for blk in self.blocks:
            h_r, _, attn = blk(h_r, None, c_r, None, return_attention)
            if return_attention:
                maps["rna_self"].append(attn["rna_self"])
        out_r = self.final_r(h_r, c_r).reshape(b, -1)
        out_a = out_r.new_zeros(b, 0)
        if return_attention:
            return out_r, out_a, maps
        return out_r, out_a


# ----------------------------------------------------------------------------- losses
@dataclass
class LossOutput:
    """A loss and its parts (as scvi-tools' ``LossOutput``).

    Attributes
    ----------
    loss
        The scalar to minimise (sum of the components).
    components
        Per-branch losses (``{"rna": ..., "atac": ...}``), scalar tensors.
    n_examples
        Per branch, how many examples contributed (the noised ones): counted when read, so
        that a training step that does not read it makes no device -> host sync.
    example_masks
        Per branch, the boolean mask of the contributing examples (or their count).
    """

    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    example_masks: dict[str, torch.Tensor | int] = field(default_factory=dict, repr=False)

    @property
    def n_examples(self) -> dict[str, int]:
        return {k: int(v.sum()) if torch.is_tensor(v) else int(v) for k, v in self.example_masks.items()}


def autoencoder_loss(rna_ae, atac_ae, cfg, counts, x_log, lib, x_bin) -> LossOutput:
    """NB (RNA) and Bernoulli (ATAC, absent for single-modality models) negative log-likelihoods per
    cell; ``loss`` divides each by its feature count so the two are on comparable scales."""
    l_r, _ = rna_ae.loss(counts, x_log, lib)
    l_a = atac_ae.loss(x_bin)[0] if atac_ae is not None else l_r.new_zeros(())
    loss = l_r / max(1.0, float(cfg.n_genes)) + l_a / max(1.0, float(cfg.n_peaks))
    return LossOutput(loss=loss, components={"rna": l_r, "atac": l_a},
                      example_masks={"rna": int(counts.shape[0]), "atac": int(counts.shape[0]) if atac_ae is not None else 0})


def diffusion_loss(sched, o_r, o_a, z_r, z_a, n_r, n_a, t_r, t_a, m_r, m_a, weighting: str = "none",
                   gamma: float = 5.0) -> LossOutput:
    """Masked denoising loss of both branches: mean over the noised (``m_*`` True) examples of the
    per-example-weighted squared error of the scheduler's target (velocity, clean latent or noise).

    ``o_*`` denoiser outputs, ``z_*`` clean latents, ``n_*`` noises, ``t_*`` timesteps of each
    branch; ``weighting`` / ``gamma``: :meth:`loss_weight` of the scheduler. A branch with no
    noised example (or zero width: single-modality models) contributes 0.
    """
    comps, counts = {}, {}
    for name, o, z, n, t, m in (("rna", o_r, z_r, n_r, t_r, m_r), ("atac", o_a, z_a, n_a, t_a, m_a)):
        if z.shape[1] == 0:
            comps[name], counts[name] = o.new_zeros(()).float(), 0
            continue
        w = m.float() * sched.loss_weight(t, weighting, gamma).to(o.device)
        err = ((o.float() - sched.target(z, n, t)) ** 2).mean(-1)
        comps[name] = (err * w).sum() / m.float().sum().clamp(min=1)
        counts[name] = m
    return LossOutput(loss=comps["rna"] + comps["atac"], components=comps, example_masks=counts)


# ----------------------------------------------------------------------------- whole module
class ScDXModule(nn.Module):
    """Autoencoders + latent normalisation + denoiser. Tensors in, tensors out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc = None
        if cfg.rna_encoder == "attention":
            from ._set_encoder import SetEncoder

            enc = SetEncoder(cfg.n_genes, cfg.latent_dim, cfg.set_dim, cfg.set_inducing, cfg.set_heads, cfg.ae_dropout)
        self.rna_ae = RNAAutoencoder(cfg.n_genes, cfg.rna_hidden, cfg.latent_dim, cfg.ae_dropout, encoder=enc)
        # single-modality mode (modalities == ["rna"]): no ATAC autoencoder
        self.atac_ae = (ATACAutoencoder(cfg.n_peaks, cfg.atac_hidden, cfg.latent_dim, cfg.ae_dropout)
                        if cfg.paired else None)
        self.denoiser = DCADenoiser(cfg)
        L = cfg.latent_dim
        # latent normalisation: the one transform used at training, generation, translation, GRN time
        self.register_buffer("rna_mean", torch.zeros(L))
        self.register_buffer("rna_std", torch.ones(L))
        self.register_buffer("atac_mean", torch.zeros(L))
        self.register_buffer("atac_std", torch.ones(L))
        n_lib = len(cfg.label_categories[cfg.label_keys[0]]) if cfg.label_keys else 1
        # log-normal library size per category of the first label (index n_lib = pooled)
        self.register_buffer("lib_mu", torch.zeros(n_lib + 1))
        self.register_buffer("lib_sigma", torch.ones(n_lib + 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))

    # latent normalisation ------------------------------------------------------------
    def normalize(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        m, s = (self.rna_mean, self.rna_std) if modality == "rna" else (self.atac_mean, self.atac_std)
        return (z - m) / s

    def denormalize(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        m, s = (self.rna_mean, self.rna_std) if modality == "rna" else (self.atac_mean, self.atac_std)
        return z * s + m

    def _ae(self, modality: str):
        ae = self.rna_ae if modality == "rna" else self.atac_ae
        if ae is None:
            from .._errors import ScdxError

            raise ScdxError(f"this is a single-modality model (modalities={self.cfg.modalities}): no {modality} autoencoder")
        return ae

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        ae = self._ae(modality)
        return self.normalize(modality, ae.encode(x))

    def decode(self, modality: str, z_norm: torch.Tensor) -> torch.Tensor:
        ae = self._ae(modality)
        return ae.decode(self.denormalize(modality, z_norm))

    def decode_atac_logits(self, z_norm: torch.Tensor) -> torch.Tensor:
        """Accessibility logits (before the sigmoid of :meth:`decode`) from a normalised ATAC latent."""
        return self._ae("atac").decode_logits(self.denormalize("atac", z_norm))

    # losses -----------------------------------------------------------------------------
    def autoencoder_loss(self, counts, x_log, lib, x_bin) -> LossOutput:
        """The autoencoders' loss (:func:`autoencoder_loss`)."""
        return autoencoder_loss(self.rna_ae, self.atac_ae, self.cfg, counts, x_log, lib, x_bin)

    @staticmethod
    def diffusion_loss(sched, o_r, o_a, z_r, z_a, n_r, n_a, t_r, t_a, m_r, m_a, weighting: str = "none",
                       gamma: float = 5.0) -> LossOutput:
        """The denoiser's loss (:func:`diffusion_loss`)."""
        return diffusion_loss(sched, o_r, o_a, z_r, z_a, n_r, n_a, t_r, t_a, m_r, m_a, weighting, gamma)
