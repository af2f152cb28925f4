"""In-silico perturbation: specs, paired-seed engine, effects, resumable screens, plots.

Public API (also re-exported as ``tl.perturb``, ``tl.screen``, ``get.perturbation_df``,
``pl.volcano``, ``pl.screen_heatmap``):

- :class:`Perturbation`, :func:`read_screen`, :func:`resolve_targets`
- :func:`perturb` (``tl.perturb``), :func:`perturbation_df` (``get.perturbation_df``)
- :func:`screen` (``tl.screen``), :func:`load_screen`, :func:`load_screen_effects`
- :func:`peak_knockout_effect` (shared with :mod:`scdiffx_grn.grn`)
- :func:`bh_fdr`, :func:`paired_stats`
- :func:`volcano`, :func:`screen_heatmap`
"""

from ._effects import bh_fdr, paired_stats, perturb, perturbation_df
from ._engine import Edit, peak_knockout_effect, prepare_inputs, run_paired, sample_noise
from ._plots import screen_heatmap, volcano
from ._screen import load_screen, load_screen_effects, screen, summarise_effects
from ._spec import Perturbation, read_screen, resolve_targets

__all__ = ["Perturbation", "read_screen", "resolve_targets", "perturb", "perturbation_df", "screen",
           "load_screen", "load_screen_effects", "summarise_effects", "peak_knockout_effect", "bh_fdr",
           "paired_stats", "volcano", "screen_heatmap", "Edit", "prepare_inputs", "run_paired", "sample_noise"]
