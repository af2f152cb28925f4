"""Self-contained HTML reports and the end-to-end demo.

- :class:`Report` / :class:`Section`: sections of text, tables and inline PNG figures, written to
  one HTML file with no external assets; a failing section shows its error instead of aborting.
- :func:`run_demo` / :class:`DemoConfig`: the demo behind ``scdiffx-grn demo`` (data summary,
  generation, translation, GRN, knockout screen, biomarkers) on the embedded mouse data and the
  shipped checkpoint.
"""

from ._demo import SECTIONS, DemoConfig, DemoResult, default_model_path, run_demo
from ._html import Report, Section, figure_to_png, table_html

__all__ = ["Report", "Section", "figure_to_png", "table_html", "run_demo", "DemoConfig", "DemoResult",
           "default_model_path", "SECTIONS"]
