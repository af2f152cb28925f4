"""Exception types raised by scdiffx_grn.

Every error caused by user input derives from :class:`ScdxError`, so callers can
catch one type; the subclasses say what kind of problem it was. Messages name the
offending items (genes, peaks, barcodes, files, columns).
"""

from __future__ import annotations

__all__ = [
    "ScdxError",
    "InputDataError",
    "NotCountsError",
    "BarcodeMismatchError",
    "FeatureMismatchError",
    "UnknownFeatureError",
    "MissingLabelError",
    "CheckpointError",
    "ChecksumError",
    "DataFileMissingError",
    "OutputError",
    "OptionError",
]


class ScdxError(Exception):
    """Base class of every error raised by scdiffx_grn on bad input."""


class OptionError(ScdxError, ValueError):
    """An argument or configuration value is not one of the accepted ones (names the accepted values)."""


class InputDataError(ScdxError, ValueError):
    """Values in the input data are unusable (NaN, inf, empty, wrong shape...)."""


class NotCountsError(InputDataError):
    """Raw counts were required but the values are not non-negative integers."""


class BarcodeMismatchError(InputDataError):
    """The RNA and ATAC modalities do not hold the same cell barcodes."""


class FeatureMismatchError(ScdxError, ValueError):
    """The features of the data differ from the features a model was trained on."""


class UnknownFeatureError(ScdxError, KeyError):
    """A gene, peak or TF asked for is not among the known features."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingLabelError(ScdxError, KeyError):
    """A label column is missing, or a label value was not seen in training."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointError(ScdxError, OSError):
    """A checkpoint directory is missing, truncated, corrupt or of an unknown format."""


class DataFileMissingError(ScdxError, FileNotFoundError):
    """A data file named by a manifest is not on disk."""


class ChecksumError(ScdxError, OSError):
    """A data file on disk differs from the sha256 recorded in its manifest."""


class OutputError(ScdxError, OSError):
    """An output cannot be written: the path exists (and is not ours to replace), is not
    writable, or the disk is full. The message names the path."""


def _fmt_items(items, limit: int = 10) -> str:
    """Format a list of offending items for an error message (first ``limit`` shown)."""
    items = list(items)
    shown = ", ".join(repr(str(x)) for x in items[:limit])
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{shown}{more}"
