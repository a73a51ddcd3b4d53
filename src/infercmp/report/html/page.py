"""The self-contained HTML report: one file, plotly.js embedded once, figures as inert JSON."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.report import figures, precision
from infercmp.report.html.accuracy import accuracy_section
from infercmp.report.html.facts import environment_section
from infercmp.report.html.profile import profile_section
from infercmp.report.html.sections import (
    Charts,
    across_section,
    curves_section,
    experiment_section,
    header_section,
    method_section,
    overview_section,
    warnings_section,
)
from infercmp.report.html.startup import startup_section
from infercmp.report.leaderboard import tune_section
from infercmp.report.runs import RunView
from infercmp.report.summary import DEFAULT_BASELINE, combinations, experiments
from infercmp.store.debug_precision import read_results

if TYPE_CHECKING:
    import plotly.offline as plotly_offline
else:
    plotly_offline = lazy_import("plotly.offline")


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' can close it or open a comment."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_html(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
    profile_depth: int = 1,
) -> str:
    """The page of `runs`: speedups against `baseline_engine`, each engine's best load
    configuration within `latency_budget_ms` (default: the server scenario's SLO)."""
    charts = Charts()
    shapes = experiments(runs)
    combos = combinations(runs)
    colors = figures.combo_colors(combos)
    models = sorted({run.model for run in runs})
    title = f"infercmp report: {', '.join(models)}"
    tuned = tune_section(runs)
    body: list[str] = [
        header_section(runs, models),
        overview_section(runs),
        tuned,
        warnings_section(runs),
    ]
    nav = [f'<a href="#shape-{i}">shape {figures.esc(s)}</a>' for i, s in enumerate(shapes)]
    if len(shapes) > 1:
        nav.insert(0, '<a href="#across">across shapes</a>')
    if tuned:
        nav.insert(0, '<a href="#tune">tuning leaderboard</a>')
    nav.append('<a href="#environment">environment</a>')
    nav.append('<a href="#method">how to read</a>')
    body.insert(1, f'<nav class="toc">{"".join(nav)}</nav>')

    if len(shapes) > 1:
        body.append(across_section(charts, combos, colors, shapes))
    for i, shape in enumerate(shapes):
        body.append(
            experiment_section(charts, i, shape, combinations(runs, shape), colors, baseline_engine)
        )
    loads = curves_section(charts, combos, colors, latency_budget_ms)
    if loads:
        body.insert(len(body) - len(shapes), loads)
        nav.insert(0, '<a href="#curves">throughput vs latency</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    accuracy = accuracy_section(charts, combos, colors)
    if accuracy:
        body.insert(len(body) - len(shapes), accuracy)
        nav.insert(0, '<a href="#accuracy">accuracy vs latency</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    profiles = profile_section(charts, combos, profile_depth)
    if profiles:  # bench --profile: where each engine's time goes
        body.insert(len(body) - len(shapes), profiles)
        nav.insert(0, '<a href="#profile">where the time goes</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    starts = startup_section(combos)
    if starts:
        body.insert(len(body) - len(shapes), starts)
        nav.insert(0, '<a href="#startup">time to first answer</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    breaks = [precision.render_html(r) for run in runs for r in read_results(run.path)]
    if breaks:
        body.insert(
            len(body) - len(shapes), '<div id="precision-debug">' + "".join(breaks) + "</div>"
        )
        nav.insert(0, '<a href="#precision-debug">where the precision breaks</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    body.append(environment_section(runs))
    body.append(method_section(baseline_engine))

    return _TEMPLATE.format(
        title=figures.esc(title),
        css=_asset("page.css"),
        plotly=plotly_offline.get_plotlyjs(),
        body="\n".join(body),
        figures=script_json(charts.figures),
        script=_asset("page.js"),
    )


def _asset(name: str) -> str:
    """The page's stylesheet and script, kept as files beside this module."""
    return files("infercmp.report.html").joinpath(name).read_text(encoding="utf-8")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="infercmp">
<title>{title}</title>
<style>{css}</style>
<script>{plotly}</script>
</head>
<body>
<main>
{body}
</main>
<script type="application/json" id="infercmp-figures">{figures}</script>
<script>{script}</script>
</body>
</html>
"""
