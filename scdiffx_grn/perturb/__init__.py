"""In-silico perturbation: specs, paired-seed engine, effects, resumable screens, plots.

Public API (also re-exported as ``tl.perturb``, ``tl.screen``, ``get.perturbation_df``,
``pl.volcano``, ``pl.screen_heatmap``):

- :class:`Perturbation`, :func:`read_screen`, :func:`resolve_targets`
- :func:`perturb` (``tl.perturb``), :func:`perturbation_df` (``get.perturbation_df``)
- engines: :func:`run_mean` / :func:`iter_mean` (posterior mean, default; exact skipping of
  unchanged cells, statistics over cells), :func:`run_paired` (sampled, ``readout="samples"``),
  :func:`cell_effects` (per-cell differences, for checks)
- :func:`screen` (``tl.screen``), :func:`load_screen`, :func:`load_screen_effects`
- control calibration (:mod:`._controls`): :class:`ControlCalibration`, :func:`panel_test`,
  :func:`sign_flip_test`
- :func:`peak_knockout_effect` (shared with :mod:`scdiffx_grn.grn`)
- :func:`bh_fdr`, :func:`paired_stats`
- :func:`volcano`, :func:`screen_heatmap`
"""

from ._controls import ControlCalibration, panel_test, sign_flip_test
from ._effects import bh_fdr, cell_effects_table, cell_stats, paired_stats, perturb, perturbation_df
from ._engine import Edit, EngineInputs, EngineResult, peak_knockout_effect, prepare_inputs, run_paired
from ._mean import cell_effects, changed_rows, iter_mean, run_mean
from ._plots import screen_heatmap, volcano
from ._screen import ScreenLock, load_screen, load_screen_effects, screen, summarise_effects
from ._spec import Perturbation, read_screen, resolve_targets

__all__ = ["Perturbation", "read_screen", "resolve_targets", "perturb", "perturbation_df", "screen",
           "load_screen", "load_screen_effects", "summarise_effects", "peak_knockout_effect", "bh_fdr",
           "paired_stats", "volcano", "screen_heatmap", "Edit", "EngineInputs", "EngineResult", "prepare_inputs",
           "run_paired", "run_mean", "iter_mean", "cell_effects", "changed_rows", "cell_effects_table", "cell_stats",
           "ScreenLock", "ControlCalibration", "panel_test", "sign_flip_test"]
