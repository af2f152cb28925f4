"""Permutation-invariant attention encoder for RNA (scLDM-style set encoder).

Each gene is a set element: its token is the gene's learned embedding modulated by its
expression value, ``token_g = E_g * (1 + phi(x_g)) + psi(x_g)`` with ``phi, psi`` small value
MLPs (``x_g`` is the log-normalised expression). ``n_inducing`` learned inducing points
(queries) read the gene tokens with multi-head cross-attention (PMA pooling of Set Transformer);
the pooled ``(n_inducing, dim)`` summary is flattened and projected to the latent.

Because the pooling sums over genes, the latent does not depend on the order of the genes as
long as each gene keeps its own embedding: ``enc(x[:, perm], gene_index=perm) == enc(x)``.
Used as the RNA encoder when ``ModelConfig.rna_encoder == "attention"`` (the decoder stays an
MLP). Its gradients w.r.t. the input feed the same saliency code as the MLP encoder.
"""

from __future__ import annotations

import torch
from torch import nn


class SetEncoder(nn.Module):
    """Genes as a set -> inducing-point cross-attention pooling -> latent.

    Parameters
    ----------
    n_genes
        Number of genes (rows of the gene-embedding table).
    latent_dim
        Output size.
    dim
        Token width.
    n_inducing
        Number of inducing points (pooling queries).
    n_heads
        Attention heads (``dim`` must be a multiple).
    dropout
        Dropout on the pooled summary.
    """

    def __init__(self, n_genes: int, latent_dim: int, dim: int = 32, n_inducing: int = 8, n_heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.gene_emb = nn.Parameter(torch.randn(n_genes, dim) * 0.1)
        self.value = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.inducing = nn.Parameter(torch.randn(n_inducing, dim) * 0.1)
        self.q = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.head = nn.Sequential(nn.LayerNorm(n_inducing * dim), nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                  nn.Linear(n_inducing * dim, latent_dim))

    def tokens(self, x: torch.Tensor, gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """Gene tokens (B, G, dim) from expression (B, G); ``gene_index`` picks each column's embedding."""
        emb = self.gene_emb if gene_index is None else self.gene_emb[gene_index]
        mod, add = self.value(x.unsqueeze(-1)).chunk(2, dim=-1)
        return self.norm(emb[None] * (1 + mod) + add)

    def forward(self, x: torch.Tensor, gene_index: torch.Tensor | None = None,
                return_attention: bool = False):
        b = x.shape[0]
        tok = self.tokens(x, gene_index)
        g = tok.shape[1]
        k, v = self.kv(tok).view(b, g, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q(self.inducing).view(1, -1, self.n_heads, self.head_dim).transpose(1, 2)  # (1, H, M, hd)
        w = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)  # (B, H, M, G)
        h = (w @ v).transpose(1, 2).reshape(b, -1, self.dim)  # (B, M, dim)
        h = self.inducing[None] + self.out(h)
        h = h + self.mlp(h)
        z = self.head(h.reshape(b, -1))
        return (z, w) if return_attention else z
