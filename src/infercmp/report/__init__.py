"""Reports of bench runs (HTML, Markdown, CSV, JSON) and run-to-run comparison."""

from __future__ import annotations

from infercmp.report.compare import CompareReport, Comparison, compare_runs
from infercmp.report.formats import render_csv, render_json, render_markdown
from infercmp.report.html.page import render_html
from infercmp.report.interval import bootstrap_median_ratio
from infercmp.report.runs import (
    CombinationView,
    RunView,
    load_runs,
    open_run,
    resolve_run,
    resolve_run_dirs,
)
from infercmp.report.summary import DEFAULT_BASELINE, summary_rows

__all__ = [
    "DEFAULT_BASELINE",
    "CombinationView",
    "CompareReport",
    "Comparison",
    "RunView",
    "bootstrap_median_ratio",
    "compare_runs",
    "load_runs",
    "open_run",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "resolve_run",
    "resolve_run_dirs",
    "summary_rows",
]
