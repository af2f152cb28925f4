"""In-silico perturbation: specs, the paired-translation engine, effects, resumable screens, plots.

Public API (also re-exported as ``tl.perturb``, ``tl.screen``, ``get.perturbation_df``,
``pl.volcano``, ``pl.screen_heatmap``):

- :class:`Perturbation`, :func:`read_screen`, :func:`resolve_targets`
- :func:`perturb` (``tl.perturb``), :func:`perturbation_df` (``get.perturbation_df``)
- the engine: :class:`PairedEngine` (edited vs unedited cells with paired noise; readouts ``"mean"``
  and ``"samples"``; exact skipping of unchanged cells) and its reductions :func:`iter_results`
  (group sums per edit), :func:`run_mean` / :func:`run_paired` (all edits, one readout each),
  :func:`cell_effects` (per-cell differences, for checks); :func:`prepare_inputs`, :func:`changed_rows`
- :func:`screen` (``tl.screen``), :func:`load_screen`, :func:`load_screen_effects`; its option groups
  :class:`EngineOptions`, :class:`ControlOptions`, :class:`OutputOptions`
- control calibration (:mod:`._controls`): :class:`ControlCalibration`, :func:`panel_test`,
  :func:`sign_flip_test`
- :func:`peak_knockout_effect` (shared with :mod:`scdiffx_grn.grn`)
- :func:`bh_fdr`, :func:`paired_stats`
- :func:`volcano`, :func:`screen_heatmap`
"""

from ._controls import ControlCalibration, panel_test, sign_flip_test
from ._effects import bh_fdr, cell_effects_table, cell_stats, paired_stats, perturb, perturbation_df
from ._engine import (
    CellDiffs,
    Edit,
    EngineInputs,
    EngineResult,
    PairedEngine,
    cell_effects,
    changed_rows,
    iter_results,
    peak_knockout_effect,
    prepare_inputs,
    run_mean,
    run_paired,
)
from ._options import ControlOptions, EngineOptions, OutputOptions
from ._plots import screen_heatmap, volcano
from ._screen import ScreenLock, load_screen, load_screen_effects, screen, summarise_effects
from ._spec import Perturbation, read_screen, resolve_targets

__all__ = ["Perturbation", "read_screen", "resolve_targets", "perturb", "perturbation_df", "screen",
           "load_screen", "load_screen_effects", "summarise_effects", "peak_knockout_effect", "bh_fdr",
           "paired_stats", "volcano", "screen_heatmap", "Edit", "EngineInputs", "EngineResult", "prepare_inputs",
           "run_paired", "run_mean", "iter_results", "PairedEngine", "CellDiffs", "cell_effects", "changed_rows",
           "cell_effects_table", "cell_stats",
           "ScreenLock", "ControlCalibration", "panel_test", "sign_flip_test", "EngineOptions", "ControlOptions",
           "OutputOptions"]
