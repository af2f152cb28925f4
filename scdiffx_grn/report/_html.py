"""A small self-contained HTML report: sections of text, tables, inline PNG figures and errors.

Everything is inlined (figures as ``data:image/png;base64`` URIs, CSS in a ``<style>`` block), so
the single ``report.html`` can be mailed or archived without its folder.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Report", "Section", "figure_to_png"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#243b55;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px 0;font-size:26px}
header p{margin:2px 0;opacity:.85;font-size:14px}
main{max-width:1250px;margin:0 auto;padding:18px 36px 40px 36px}
nav{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 18px;margin:14px 0}
nav a{margin-right:14px;text-decoration:none;color:#2a5db0;font-size:14px}
nav .status{font-size:12px;margin-left:2px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:16px 22px;margin:16px 0}
section h2{margin:0 0 8px 0;font-size:20px}
section h3{margin:16px 0 6px 0;font-size:15px;color:#3b4656}
.ok{color:#1b7f3b}.failed{color:#b42318}.skipped{color:#8a6d00}
.badge{display:inline-block;font-size:12px;padding:2px 8px;border-radius:10px;margin-left:8px;vertical-align:middle}
.badge.ok{background:#e3f4e8}.badge.failed{background:#fde7e5}.badge.skipped{background:#fff4cc}
.error{background:#fde7e5;border-left:4px solid #b42318;padding:8px 12px;font-family:monospace;font-size:13px;
white-space:pre-wrap;word-break:break-word}
.note{color:#4a5566;font-size:14px;margin:6px 0}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eceff3}
figcaption{font-size:13px;color:#4a5566;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e7;padding:3px 8px;text-align:right}
th{background:#eef1f5}td.l,th.l{text-align:left}
.tablewrap{overflow-x:auto;max-width:100%}
footer{color:#6b7585;font-size:12px;text-align:center;padding:20px}
"""


def figure_to_png(fig, *, dpi: int = 90, close: bool = True) -> bytes:
    """PNG bytes of a matplotlib figure.

    Parameters
    ----------
    fig
        A matplotlib Figure.
    dpi
        Resolution of the PNG.
    close
        Close the figure afterwards (frees its memory).

    Returns
    -------
    bytes
        The PNG file content.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        return f"{v:.4g}"
    try:
        import numpy as np

        if isinstance(v, np.floating):
            return "" if np.isnan(v) else f"{float(v):.4g}"
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def table_html(df: pd.DataFrame, *, max_rows: int = 30, index: bool = False) -> str:
    """An HTML table of a DataFrame (numbers right-aligned, values HTML-escaped).

    Parameters
    ----------
    df
        The table.
    max_rows
        Show at most this many rows (a note says how many there are).
    index
        Include the index as the first column(s).

    Returns
    -------
    str
        HTML (a ``<div class="tablewrap">`` holding the ``<table>``).
    """
    if index:
        df = df.reset_index()
    shown = df.head(max_rows)
    num = [pd.api.types.is_numeric_dtype(shown[c]) for c in shown.columns]
    head = "".join(f'<th class="{"" if n else "l"}">{html.escape(str(c))}</th>' for c, n in zip(shown.columns, num))
    rows = []
    for r in shown.itertuples(index=False):
        cells = "".join(f'<td class="{"" if n else "l"}">{html.escape(_fmt(v))}</td>' for v, n in zip(r, num))
        rows.append(f"<tr>{cells}</tr>")
    more = (f'<p class="note">showing {len(shown)} of {len(df)} rows</p>' if len(df) > len(shown) else "")
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{more}'


@dataclass
class Section:
    """One report section; items are rendered in the order they were added.

    Parameters
    ----------
    key
        Anchor and ``data-section`` attribute of the ``<section>``.
    title
        Heading.
    status
        ``"ok"``, ``"failed"`` (see :meth:`fail`) or ``"skipped"``.
    items
        ``(kind, payload)`` pairs added by :meth:`text`, :meth:`table` and :meth:`figure`.
    seconds
        Run time shown beside the heading.
    error
        The error message shown for a failed section.
    """

    key: str
    title: str
    status: str = "ok"  # ok | failed | skipped
    items: list[tuple[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    error: str | None = None

    def text(self, text: str) -> None:
        """Add a paragraph (plain text; escaped)."""
        self.items.append(("text", str(text)))

    def table(self, df: pd.DataFrame, title: str | None = None, *, max_rows: int = 30, index: bool = False,
              name: str | None = None) -> None:
        """Add a table; ``name`` tags it (``data-table`` attribute) for tests and scripts."""
        self.items.append(("table", (title, df, max_rows, index, name or title or f"{self.key}_table")))

    def figure(self, fig_or_png, caption: str | None = None, *, name: str | None = None, dpi: int = 90) -> None:
        """Add a matplotlib figure (converted to PNG and closed) or PNG bytes."""
        png = fig_or_png if isinstance(fig_or_png, (bytes, bytearray)) else figure_to_png(fig_or_png, dpi=dpi)
        self.items.append(("figure", (bytes(png), caption, name or caption or f"{self.key}_figure")))

    def fail(self, exc: BaseException, *, debug: bool = False) -> None:
        """Mark the section failed with the exception's one-line message (and traceback if ``debug``)."""
        self.status = "failed"
        msg = f"{type(exc).__name__}: {exc}"
        if debug:
            msg += "\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error = msg

    def to_html(self) -> str:
        parts = [f'<section id="{html.escape(self.key)}" data-section="{html.escape(self.key)}" '
                 f'data-status="{self.status}">',
                 f'<h2>{html.escape(self.title)}<span class="badge {self.status}">{self.status}'
                 + (f" &middot; {self.seconds:.1f} s" if self.seconds is not None else "") + "</span></h2>"]
        if self.error:
            parts.append(f'<div class="error">{html.escape(self.error)}</div>')
        figs: list[str] = []

        def flush():
            if figs:
                parts.append('<div class="figs">' + "".join(figs) + "</div>")
                figs.clear()

        for kind, payload in self.items:
            if kind == "figure":
                png, caption, name = payload
                b64 = base64.b64encode(png).decode("ascii")
                cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
                figs.append(f'<figure data-figure="{html.escape(name)}"><img alt="{html.escape(caption or name)}" '
                            f'src="data:image/png;base64,{b64}"/>{cap}</figure>')
                continue
            flush()
            if kind == "text":
                parts.append(f'<p class="note">{html.escape(payload)}</p>')
            elif kind == "table":
                title, df, max_rows, index, name = payload
                if title:
                    parts.append(f"<h3>{html.escape(title)}</h3>")
                parts.append(f'<div data-table="{html.escape(name)}">{table_html(df, max_rows=max_rows, index=index)}</div>')
        flush()
        parts.append("</section>")
        return "\n".join(parts)


class Report:
    """An ordered collection of :class:`Section` rendered to one self-contained HTML file.

    Figures are inlined as ``data:image/png;base64`` URIs and the CSS sits in the page, so the
    file has no external assets. Sections run through :meth:`section` catch their exceptions:
    the section shows the error and the report goes on (see :attr:`failed`).

    Parameters
    ----------
    title
        Page title and heading.
    subtitle
        Line under the heading.
    debug
        Show tracebacks (not just the message) in failed sections.

    Examples
    --------
    >>> rep = Report("My analysis")
    >>> with rep.section("data", "Data") as s:
    ...     s.table(df, "cells per type")
    >>> rep.write("out/report.html")
    """

    def __init__(self, title: str, subtitle: str | None = None, *, debug: bool = False):
        self.title = title
        self.subtitle = subtitle
        self.debug = debug
        self.sections: list[Section] = []
        self.meta: dict[str, str] = {}
        self.started = time.time()

    def add_section(self, key: str, title: str) -> Section:
        s = Section(key, title)
        self.sections.append(s)
        return s

    def section(self, key: str, title: str):
        """Context manager: run a block as a section; an exception marks it failed (not raised)."""
        return _SectionRun(self, key, title)

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if s.status == "failed"]

    def to_html(self) -> str:
        nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}'
                      f'<span class="status {s.status}">{"" if s.status == "ok" else " (" + s.status + ")"}</span></a>'
                      for s in self.sections)
        meta = "".join(f"<p>{html.escape(k)}: {html.escape(str(v))}</p>" for k, v in self.meta.items())
        n_fail = len(self.failed)
        summary = (f'<p class="ok">All {len(self.sections)} sections ran.</p>' if n_fail == 0 else
                   f'<p class="failed">{n_fail} of {len(self.sections)} sections failed: '
                   + ", ".join(html.escape(s.title) for s in self.failed) + "</p>")
        body = "\n".join(s.to_html() for s in self.sections)
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        from .. import __version__

        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"/>'
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<header><h1>{html.escape(self.title)}</h1>{sub}{meta}</header><main>"
                f"<nav>{nav}</nav>{summary}{body}</main>"
                f"<footer>scdiffx_grn {__version__} &middot; generated {time.strftime('%Y-%m-%d %H:%M:%S')} "
                f"in {time.time() - self.started:.0f} s</footer></body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        """Write the HTML atomically; returns the path."""
        from .._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_html())
        return path


class _SectionRun:
    def __init__(self, report: Report, key: str, title: str):
        self.report, self.key, self.title = report, key, title

    def __enter__(self) -> Section:
        self.sec = self.report.add_section(self.key, self.title)
        self.t0 = time.perf_counter()
        return self.sec

    def __exit__(self, et, ev, tb) -> bool:
        self.sec.seconds = time.perf_counter() - self.t0
        if ev is None:
            return False
        if isinstance(ev, (KeyboardInterrupt, SystemExit)):
            return False
        import matplotlib.pyplot as plt

        plt.close("all")
        self.sec.fail(ev, debug=self.report.debug)
        from .._settings import logger

        logger.warning("report section %r failed: %s: %s", self.key, type(ev).__name__, ev)
        return True
