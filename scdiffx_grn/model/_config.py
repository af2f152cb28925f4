"""Model configuration (plain data, saved as JSON beside the weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._errors import OptionError, ScdxError

FORMAT_VERSION = 1


#: inputs wider than this get a first (and mirrored last) layer of bounded weight count
WIDE_FEATURES = 32_768
#: weights of the first encoder layer (and of the last decoder layer) for inputs wider than WIDE_FEATURES
WIDE_LAYER_WEIGHTS = 6_000_000


def _auto_hidden(n_features: int, big: tuple[int, ...], floor: int) -> tuple[int, ...]:
    """Scale the default hidden sizes down for small feature sets (never below ``floor``).

    Up to :data:`WIDE_FEATURES` features this is the historical rule (the sizes of every shipped model
    and preset). Wider inputs (all 150,000 peaks or 36,000 genes of a 10x run) get a narrow first layer
    holding at most :data:`WIDE_LAYER_WEIGHTS` weights (an LSI-sized linear front: 40 units at 150,000
    peaks, 160 at 36,000 genes), mirrored by the decoder's last layer, so that the model's size no longer
    grows as ``1,024 x n_features``: the default model at 36,000 genes x 150,000 peaks has ~28 M
    parameters instead of ~350 M.
    """
    scale = min(1.0, n_features / (4 * big[0]))
    sizes = tuple(max(floor, int(round(h * scale / 8)) * 8) for h in big)
    if n_features <= WIDE_FEATURES:
        return sizes
    first = max(floor, min(big[0], int(WIDE_LAYER_WEIGHTS / n_features / 8) * 8))
    return (first, *sizes[1:])


#: named recipes: model sizes, training options, peak budget and data set (``analyses/train_model.py``)
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {  # the shipped checkpoint: trains in ~14 min on one CPU thread
        "n_peaks": 3000,
        "model": dict(rna_hidden=(256,), atac_hidden=(256,), latent_dim=64, token_dim=4, width=64, n_heads=4,
                      n_layers=3),
        "train": dict(ae_epochs=30, diffusion_steps=3000, batch_size=256, lr=1e-3),
    },
    "demo_allpeaks": {  # the demo model on all 25,734 peaks
        "n_peaks": None,
        "model": dict(rna_hidden=(256,), atac_hidden=(256,), latent_dim=64, token_dim=4, width=64, n_heads=4,
                      n_layers=3),
        "train": dict(ae_epochs=30, diffusion_steps=3000, batch_size=256, lr=1e-3),
    },
    "full": {  # default (feature-scaled) sizes, all peaks
        "n_peaks": None,
        "model": dict(),
        "train": dict(ae_epochs=60, diffusion_steps=20000, batch_size=512, lr=5e-4),
    },
    "bmmc": {  # the human fixture: 500 cells, 600 genes, 600 peaks
        "dataset": "bmmc",
        "n_peaks": None,
        "model": dict(rna_hidden=(128,), atac_hidden=(128,), latent_dim=32, token_dim=4, width=64, n_heads=4,
                      n_layers=3),
        "train": dict(ae_epochs=150, diffusion_steps=3000, batch_size=128, lr=1e-3),
    },
    "tiny": {  # smoke tests and CPU timing
        "n_peaks": 2000,
        "model": dict(rna_hidden=(128,), atac_hidden=(128,), latent_dim=32, token_dim=4, width=32, n_heads=2,
                      n_layers=2),
        "train": dict(ae_epochs=5, diffusion_steps=300, batch_size=128, lr=1e-3),
    },
}


def preset(name: str) -> dict[str, Any]:
    """A copy of a named recipe: ``{"model": ModelConfig overrides, "train": ScDiffusionX.train options,
    "n_peaks": peaks to keep (most often open in training cells; None: all), "dataset"?}``."""
    import copy

    if name not in PRESETS:
        raise OptionError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


@dataclass
class ModelConfig:
    """Hyper-parameters of a scDiffusion-X model.

    ``None`` sizes are filled from the data by :meth:`resolve`: RNA ``[512, 300] -> 100`` and
    ATAC ``[1024, 512] -> 100`` for full-size data, scaled down with the feature count; above
    32,768 features the first (and last) layer is narrowed to a bounded weight count
    (``_auto_hidden``).

    Attributes
    ----------
    n_genes, n_peaks
        Feature counts (set from the data).
    rna_hidden, atac_hidden
        Hidden layer sizes of the encoders (decoders mirror them).
    latent_dim
        Latent size of each modality's autoencoder; must be a multiple of ``token_dim``.
    token_dim
        Latent dimensions per denoiser token: a modality has ``latent_dim // token_dim`` tokens.
    width, n_heads, n_layers, mlp_ratio
        Denoiser token width, attention heads, Dual-Cross-Attention blocks, MLP expansion.
    label_keys, label_categories
        Conditioning labels (obs columns) and their categories (set from the data).
    cond_dropout
        Probability of dropping each label (and, separately, all labels) during training, for
        classifier-free guidance.
    translate_prob
        Fraction of training examples in which one modality is given clean (the conditional task
        used for translation); the rest are joint generation examples.
    translate_cond_dropout
        Probability of dropping all labels in those conditional examples (``None``: the same as
        ``cond_dropout``). Translation runs without labels by default; a high value (e.g. 0.5)
        makes the denoiser learn to read the observed modality rather than the labels.
    prediction
        ``"v"`` (velocity, default), ``"x0"`` (clean latent) or ``"epsilon"`` (noise) prediction.
        With uniform timesteps, the epsilon loss weighs an error of the implied clean latent by
        SNR(t), almost nothing at the high noise levels where the observed modality is the only
        information; v weighs it by about 1 there (``docs/ARCHITECTURE.md``). Old checkpoints
        trained with epsilon still load and sample.
    loss_weighting, min_snr_gamma
        ``"none"`` (plain MSE of the prediction target, default) or ``"min_snr"``
        (Hang et al. 2023: the clean-latent error weighted by ``min(SNR, gamma)``; it lowers the
        weight of high-noise examples again, see BENCHMARKS.md for the measured effect).
    source_conditioning
        Feed the clean observed modality's latent into the other branch's adaLN conditioning
        (zero-initialised MLP, beside the Dual-Cross-Attention tokens). ``False`` for
        checkpoints made before this path existed.
    source_dropout
        Fraction of translation examples whose observed modality is replaced by a null source
        (fully noised, ``t = T``), so the denoiser also learns ``p(target | labels)`` and
        classifier-free guidance over the source (``source_guidance=w``) is possible.
    n_train_timesteps, beta_schedule
        Diffusion schedule (``"linear"`` as in DDPM, or ``"cosine"``).
    ae_dropout
        Dropout in the autoencoders.
    modalities
        ``["rna", "atac"]`` (paired, default) or ``["rna"]`` (single-modality mode: no ATAC
        autoencoder, the denoiser runs the RNA branch with self-attention only).
    objective
        ``"diffusion"`` (DDPM noise / velocity prediction at integer timesteps) or ``"flow"``
        (scLDM-style flow matching with linear interpolants ``x_t = (1-t) x0 + t eps``, velocity
        target ``eps - x0``, continuous ``t`` in [0, 1]; the denoiser sees ``t * n_train_timesteps``).
    rna_encoder
        ``"mlp"`` or ``"attention"`` (permutation-invariant set encoder: gene embedding x
        expression value, pooled by inducing-point cross-attention; see ``_set_encoder``).
    set_dim, set_inducing, set_heads
        Width, number of inducing points and heads of the attention RNA encoder.
    """

    n_genes: int = 0
    n_peaks: int = 0
    rna_hidden: tuple[int, ...] | None = None
    atac_hidden: tuple[int, ...] | None = None
    latent_dim: int | None = None
    token_dim: int = 4
    width: int = 128
    n_heads: int = 4
    n_layers: int = 4
    mlp_ratio: float = 4.0
    label_keys: list[str] = field(default_factory=list)
    label_categories: dict[str, list[str]] = field(default_factory=dict)
    cond_dropout: float = 0.1
    translate_prob: float = 0.5
    translate_cond_dropout: float | None = None
    prediction: str = "v"
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    source_conditioning: bool = True
    source_dropout: float = 0.2
    n_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    ae_dropout: float = 0.1
    modalities: list[str] = field(default_factory=lambda: ["rna", "atac"])
    objective: str = "diffusion"
    rna_encoder: str = "mlp"
    set_dim: int = 32
    set_inducing: int = 8
    set_heads: int = 4
    format_version: int = FORMAT_VERSION

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """The model options of a named recipe (:data:`PRESETS`), with keyword overrides.

        Feature counts and labels are still set from the data when a model is built;
        ``preset(name)["train"]`` (module function) holds the matching training options.
        """
        opts = {**preset(name)["model"], **overrides}
        unknown = sorted(set(opts) - {f.name for f in fields(cls)})
        if unknown:
            raise OptionError(f"unknown model config keys: {unknown}")
        return cls(**opts)

    def resolve(self) -> "ModelConfig":
        """Fill data-dependent defaults and validate; returns self."""
        self.modalities = [str(m) for m in self.modalities]
        if self.modalities not in (["rna", "atac"], ["rna"]):
            raise OptionError(f"modalities must be ['rna', 'atac'] or ['rna'], got {self.modalities!r}")
        if not self.paired:
            self.n_peaks = 0
            self.translate_prob = 0.0
        if self.n_genes <= 0 or (self.paired and self.n_peaks <= 0):
            raise ScdxError(f"model needs genes and peaks, got n_genes={self.n_genes}, n_peaks={self.n_peaks}")
        if self.translate_cond_dropout is not None and not 0.0 <= float(self.translate_cond_dropout) <= 1.0:
            raise OptionError(f"translate_cond_dropout must be in [0, 1] or None, got {self.translate_cond_dropout!r}")
        if self.objective not in ("diffusion", "flow"):
            raise OptionError(f"objective must be 'diffusion' or 'flow', got {self.objective!r}")
        if self.rna_encoder not in ("mlp", "attention"):
            raise OptionError(f"rna_encoder must be 'mlp' or 'attention', got {self.rna_encoder!r}")
        if self.set_dim % self.set_heads:
            raise ScdxError(f"set_dim={self.set_dim} is not a multiple of set_heads={self.set_heads}")
        if self.rna_hidden is None:
            self.rna_hidden = _auto_hidden(self.n_genes, (512, 300), 32)
        if not self.paired:
            self.atac_hidden = ()
        elif self.atac_hidden is None:
            self.atac_hidden = _auto_hidden(self.n_peaks, (1024, 512), 32)
        self.rna_hidden = tuple(int(h) for h in self.rna_hidden)
        self.atac_hidden = tuple(int(h) for h in self.atac_hidden)
        if self.latent_dim is None:
            lat = min(100, max(16, (min(self.n_genes, self.n_peaks) if self.paired else self.n_genes) // 8))
            self.latent_dim = max(self.token_dim, lat // self.token_dim * self.token_dim)
        if self.latent_dim % self.token_dim:
            raise ScdxError(f"latent_dim={self.latent_dim} is not a multiple of token_dim={self.token_dim}")
        if self.width % self.n_heads:
            raise ScdxError(f"width={self.width} is not a multiple of n_heads={self.n_heads}")
        if self.prediction not in ("epsilon", "v", "x0"):
            raise OptionError(f"prediction must be 'v', 'x0' or 'epsilon', got {self.prediction!r}")
        if self.loss_weighting not in ("none", "min_snr"):
            raise OptionError(f"loss_weighting must be 'none' or 'min_snr', got {self.loss_weighting!r}")
        if not float(self.min_snr_gamma) > 0:
            raise OptionError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma!r}")
        if not 0.0 <= float(self.source_dropout) < 1.0:
            raise OptionError(f"source_dropout must be in [0, 1), got {self.source_dropout!r}")
        self.source_conditioning = bool(self.source_conditioning) and self.paired
        if self.beta_schedule not in ("linear", "cosine"):
            raise OptionError(f"beta_schedule must be 'linear' or 'cosine', got {self.beta_schedule!r}")
        missing = [k for k in self.label_keys if k not in self.label_categories]
        if missing:
            raise ScdxError(f"label categories missing for {missing}")
        return self

    @property
    def paired(self) -> bool:
        """True for the paired RNA+ATAC model, False in single-modality (RNA-only) mode."""
        return "atac" in self.modalities

    @property
    def n_tokens(self) -> int:
        return int(self.latent_dim) // self.token_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rna_hidden"] = list(d["rna_hidden"]) if d["rna_hidden"] is not None else None
        d["atac_hidden"] = list(d["atac_hidden"]) if d["atac_hidden"] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        d = dict(d)
        # checkpoints saved before the source-conditioning path and source dropout existed
        d.setdefault("source_conditioning", False)
        d.setdefault("source_dropout", 0.0)
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"unknown model config keys: {unknown}")
        return cls(**d)
