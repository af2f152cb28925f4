"""Checkpoints shipped with the package (see models/README.md for their cards)."""
