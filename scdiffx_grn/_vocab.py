"""One vocabulary of option values, shared by every module (a leaf: it imports only ``_errors``).

Each option that several modules accept has one name, one ``Literal`` type and one tuple of
accepted values here; modules import them instead of redefining them:

- :data:`Modality` / :data:`MODALITIES`: the two measured modalities, ``"rna"`` and ``"atac"``;
- :data:`Direction` / :data:`DIRECTIONS`: a translation, ``"<source>-><target>"``;
- :data:`Readout` / :data:`READOUTS`: how a translation is read out: ``"mean"`` (the posterior mean,
  one denoiser call) or ``"samples"`` (the sampler's trajectory, one draw per noise);
- :func:`check_option`: the one "must be one of" error.

Words used with one meaning throughout the package: a *readout* is always one of :data:`READOUTS`
(never a modality or a decoder); the modality a translation produces is its *target*; the number of
sampler steps is ``n_steps`` and the number of integrated-gradients quadrature points ``ig_steps``.
"""

from __future__ import annotations

from typing import Literal, Sequence

from ._errors import OptionError, _fmt_items

__all__ = ["Modality", "MODALITIES", "Direction", "DIRECTIONS", "Readout", "READOUTS", "check_option",
           "other_modality", "split_direction"]

Modality = Literal["rna", "atac"]
MODALITIES: tuple[str, ...] = ("rna", "atac")

Direction = Literal["atac->rna", "rna->atac"]
DIRECTIONS: tuple[str, ...] = ("atac->rna", "rna->atac")

Readout = Literal["mean", "samples"]
READOUTS: tuple[str, ...] = ("mean", "samples")


def check_option(name: str, value, allowed: Sequence) -> None:
    """Raise :class:`~scdiffx_grn.OptionError` when ``value`` is not one of ``allowed`` (naming them)."""
    if value not in allowed:
        raise OptionError(f"{name} must be one of {_fmt_items(allowed)}, got {value!r}")


def other_modality(modality: str) -> str:
    """The other measured modality (``"rna"`` <-> ``"atac"``)."""
    check_option("modality", modality, MODALITIES)
    return "atac" if modality == "rna" else "rna"


def split_direction(direction: str) -> tuple[str, str]:
    """``(source, target)`` of a translation direction such as ``"atac->rna"``."""
    check_option("direction", direction, DIRECTIONS)
    src, tgt = direction.split("->")
    return src, tgt
