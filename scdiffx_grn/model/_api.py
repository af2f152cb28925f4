"""The tensor-level model API used by GRN extraction and perturbation, as a ``typing.Protocol``.

``scdiffx_grn.grn``, ``scdiffx_grn.perturb`` and ``scdiffx_grn._modelio`` talk to a model only
through these members (``docs/ARCHITECTURE.md``, "Tensor-level API"), so any object providing them
(e.g. a small deterministic stand-in in the tests) can be scored or perturbed.
:class:`~scdiffx_grn.ScDiffusionX` implements it; ``isinstance(obj, TranslationModel)`` checks
that the members exist (not their signatures).

Optional members, read with ``getattr`` when present:

- ``module``: a ``torch.nn.Module`` put in eval mode while scoring;
- ``setup``: the registry dict (the layers holding the raw inputs; default ``"counts"``);
- ``step_noise(names, seed, sample=0, *, device=None, **translate_kwargs)``: the per-step noise
  ``(n_steps, B, latent_dim)`` of a stochastic sampler (``None`` for deterministic ones), keyed like
  :meth:`TranslationModel.cell_noise`, passed to ``translate_latent`` as ``step_noise``;
- ``forward_process``: the forward (noising) process the model was trained with (``add_noise``,
  ``timestep_dtype``); default :func:`scdiffx_grn.model.training_scheduler` of ``config``;
- ``denoiser_attention(z_rna, z_atac, t_rna, t_atac, cond)``: the denoiser's attention maps
  ``{"rna_to_atac": [layers x (B, heads, T_rna, T_atac)], ...}`` (needed by attention scores only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["TranslationModel", "ModelConfigLike"]


@runtime_checkable
class ModelConfigLike(Protocol):
    """The config fields the tensor API's users read."""

    label_keys: Sequence[str]  # label columns the model is conditioned on (cell type first)
    latent_dim: int  # size of each modality's normalised latent
    token_dim: int  # latent dimensions per denoiser token (attention scores)


@runtime_checkable
class TranslationModel(Protocol):
    """A model that encodes, decodes and translates single cells at the tensor level (all on ``device``)."""

    #: the model's genes and peaks, in its feature order (the columns of ``rna_tensor`` / ``atac_tensor`` inputs)
    rna_var_names: Sequence[str]
    atac_var_names: Sequence[str]
    #: hyper-parameters (see :class:`ModelConfigLike`; ``config.latent_dim`` is the latent size)
    config: Any

    @property
    def device(self) -> Any:
        """The ``torch.device`` its tensors live on."""

    def rna_tensor(self, X) -> Any:
        """Encoder input (B, n_genes) from raw RNA counts in the model's gene order (log1p CP10k)."""

    def atac_tensor(self, X) -> Any:
        """Encoder input (B, n_peaks) from ATAC counts or binary values in the model's peak order (binarised)."""

    def encode(self, modality: str, x_input) -> Any:
        """Normalised latent (B, latent_dim) of ``"rna"`` / ``"atac"`` encoder inputs (differentiable)."""

    def decode_rna(self, z) -> Any:
        """Expression proportions (B, n_genes), rows summing to 1, from a normalised RNA latent."""

    def decode_atac(self, z) -> Any:
        """Accessibility probabilities (B, n_peaks) from a normalised ATAC latent."""

    def condition_indices(self, labels: Mapping[str, Any] | None, n: int | None = None) -> Any:
        """Label indices (n, n_label_keys) (LongTensor); missing keys / ``None`` values get the null label."""

    def cell_noise(self, names: Sequence[str], seed: int, sample: int = 0, *, stream: int = 0, device=None) -> Any:
        """The noise ``translate_latent`` takes for cells ``names``: ``(len(names), width)`` standard normal,
        keyed by each cell's obs name, ``seed``, ``sample`` and ``stream``
        (:func:`scdiffx_grn._modelio.cell_noise`), so a cell's translation does not depend on its row
        or batch-mates. The one noise convention: ``model.translate``, the perturbation engine and
        the GRN scores all draw a cell's noise here."""

    def translate_latent(self, z_src, direction: str, cond, noise, **kwargs) -> Any:
        """Target latents (B, latent_dim) of normalised source latents; ``direction`` ``"atac->rna"`` or
        ``"rna->atac"``, ``cond`` label indices or ``None``, ``noise`` from :meth:`cell_noise`.

        Deterministic given ``noise`` (two calls with the same noise on edited and unedited inputs
        are a paired control) and differentiable when gradients are enabled. Keywords:
        ``readout`` (``"mean"``: posterior mean; ``"samples"``), ``sampler``, ``n_steps``,
        ``guidance_scale``, ``source_guidance``, ``step_noise``.
        """

    # Optional hooks, used when present (:class:`ScDiffusionX` has both):
    # ``linear_front(modality)``: ``(weight, bias, rest)`` with ``encode(modality, x) == rest(x @ weight.T +
    # bias)``, or ``None``; the closed-form integrated gradients then differentiate at the first layer's
    # output instead of the input. ``encode_closed(modality, x_input, rows, cols)``: the latents of the
    # inputs ``x_input[rows[i]]`` each with column ``cols[i]`` set to 0 (``encode`` of those edited rows up
    # to float rounding) without building them; the exact knockout scorer uses it.
