"""Reports of bench runs (HTML, Markdown, CSV, JSON) and run-to-run comparison."""

from __future__ import annotations

from infercmp.report.compare import CompareReport, Comparison, bootstrap_median_ratio, compare_runs
from infercmp.report.runs import (
    Combination,
    RunView,
    load_runs,
    open_run,
    resolve_run,
    resolve_run_dirs,
)
from infercmp.report.summary import (
    DEFAULT_BASELINE,
    render_csv,
    render_json,
    render_markdown,
    summary_rows,
)


def render_html(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
) -> str:
    """The self-contained interactive page (plotly is imported only here)."""
    from infercmp.report.html import render_html as _render

    return _render(runs, baseline_engine, latency_budget_ms)


__all__ = [
    "DEFAULT_BASELINE",
    "Combination",
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
