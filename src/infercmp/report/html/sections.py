"""The sections of the page, top to bottom: header, run cards, warnings, across shapes, one
section per shape (table, latency charts, resource charts), throughput against latency, and how
to read it; `Charts` collects the figures they draw."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from infercmp.report import curves, figures, timeline
from infercmp.report.figures import GREY, esc
from infercmp.report.html.facts import cpu_text, gpu_text
from infercmp.report.html.table import status_class, summary_table
from infercmp.report.runs import CombinationView, RunView
from infercmp.report.summary import contention, fmt_ms, shortfall


class Charts:
    """Collects figure specs while sections are written, so plotly.js and data load once."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    def chart(self, figure: dict, css: str = "chart") -> str:
        div_id = f"fig{len(self.figures)}"
        self.figures[div_id] = _finite(figure)
        return f'<div class="{css}" id="{div_id}"></div>'


def _finite(value: Any) -> Any:
    """NaN and inf are not JSON; plotly reads null as a gap."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def header_section(runs: list[RunView], models: list[str]) -> str:
    version = runs[0].meta.get("infercmp_version", "?")
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machines = " and ".join(esc(run.label) for run in runs)
    return (
        '<header class="top">'
        f'<h1>{esc(", ".join(models))} <span class="sub">on {machines}</span></h1>'
        f'<p class="meta">infercmp {esc(version)} · report generated {esc(now)} · '
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}</p>"
        '<label class="toggle"><input type="checkbox" id="show-outliers" checked> '
        "show outliers in charts</label>"
        "</header>"
    )


def overview_section(runs: list[RunView]) -> str:
    cards = []
    for run in runs:
        status = run.status
        counts: dict[str, int] = {}
        for combo in run.combinations:
            counts[combo.status] = counts.get(combo.status, 0) + 1
        count_text = ", ".join(f"{n} {esc(s)}" for s, n in sorted(counts.items()))
        env = run.environment
        detail = run.status_detail
        argv = run.meta.get("argv") or []
        cards.append(
            '<div class="card">'
            f'<div class="card-title">{esc(run.label)} '
            f'<span class="badge {status_class(status)}">{esc(status)}</span></div>'
            f'<div class="kv"><span>run</span><code>{esc(run.path.name)}</code></div>'
            f'<div class="kv"><span>CPU</span>{esc(cpu_text(env))}</div>'
            f'<div class="kv"><span>GPU</span>{esc(gpu_text(env))}</div>'
            f'<div class="kv"><span>started</span>{esc(run.meta.get("started") or "?")}</div>'
            f'<div class="kv"><span>finished</span>{esc(run.meta.get("finished") or "–")}</div>'
            f'<div class="kv"><span>combinations</span>{count_text or "none"}</div>'
            + (f'<div class="kv"><span>detail</span>{esc(detail)}</div>' if detail else "")
            + (
                '<div class="kv"><span>command</span>'
                f"<code>{esc(' '.join(map(str, argv)))}</code></div>"
                if argv
                else ""
            )
            + "</div>"
        )
    return f'<section class="cards">{"".join(cards)}</section>'


def warnings_section(runs: list[RunView]) -> str:
    items = []
    for run in runs:
        if run.status != "complete":
            items.append(
                f"<li><b>{esc(run.label)}</b>: the run is <b>{esc(run.status)}</b>"
                + (f" ({esc(run.status_detail)})" if run.status_detail else "")
                + "; only finished combinations are shown.</li>"
            )
        for combo in run.combinations:
            # Contention and a load not held are judged here, from the stored figures.
            judged = [contention(combo.result), shortfall(combo)]
            for warning in [*filter(None, judged), *(combo.result.warnings or [])]:
                items.append(
                    f"<li><b>{esc(combo.label)}</b> ({esc(combo.shape_label)}): {esc(warning)}</li>"
                )
            parity = combo.result.parity
            if parity is not None and not (parity.get("ok") if isinstance(parity, dict) else True):
                items.append(
                    f"<li><b>{esc(combo.label)}</b> ({esc(combo.shape_label)}): outputs differ "
                    "from the PyTorch reference beyond tolerance (see parity in the table).</li>"
                )
    measured = [c for run in runs for c in run.combinations if c.wall_ns.size or c.latency]
    if not measured:
        # Not a green light: an all-skipped run has no latency that could have been unstable.
        items.append(
            "<li><b>Nothing was measured</b>: no combination produced a latency. The table "
            "below says why each one was skipped or failed.</li>"
        )
    if not items:
        return (
            '<section class="notice ok">No noise warnings: every combination\'s latency was '
            "stable by the run's checks.</section>"
        )
    return (
        '<section class="notice warn"><h2>Warnings from the run</h2><ul>'
        + "".join(items)
        + "</ul></section>"
    )


def across_section(
    charts: Charts,
    combos: list[CombinationView],
    colors: dict[int, str],
    shapes: list[str],
) -> str:
    """Median latency against input size: a chart, and a grid of configurations by shapes."""
    figure = figures.scaling_figure(combos, colors, shapes)
    if not figure["data"]:
        chart = '<p class="empty">No combination finished at two or more shapes.</p>'
    else:
        chart = charts.chart(figure)
    # A compact grid: configurations down, shapes across, median latency in each cell.
    keys: dict[tuple, CombinationView] = {}
    cells: dict[tuple, CombinationView] = {}
    for combo in combos:
        key = (id(combo.run), combo.engine, combo.device, combo.precision, combo.options_text)
        keys.setdefault(key, combo)
        cells[key + (combo.shape_label,)] = combo
    head = "".join(f"<th class=num>{esc(s)}</th>" for s in shapes)
    rows = []
    for key, first in keys.items():
        tds = []
        for shape in shapes:
            cell = cells.get(key + (shape,))
            if cell is None:
                tds.append("<td class=num>–</td>")
            elif cell.status != "ok" or not cell.latency:
                tds.append(f'<td class="num muted">{esc(cell.status)}</td>')
            else:
                tds.append(f"<td class=num>{fmt_ms(cell.latency['p50_ms'])}</td>")
        dot = f'<span class="dot" style="background:{colors.get(id(first), GREY)}"></span>'
        rows.append(f"<tr><th>{dot}{esc(first.label)}</th>{''.join(tds)}</tr>")
    table = (
        '<div class="table-wrap"><table class="summary compact">'
        "<thead><tr><th>median latency (ms)</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    return (
        '<section id="across"><h2>Across shapes</h2>'
        f'<div class="grid2">{chart}{table}</div></section>'
    )


def experiment_section(
    charts: Charts,
    index: int,
    shape: str,
    combos: list[CombinationView],
    colors: dict[int, str],
    baseline_engine: str,
) -> str:
    """One shape: its summary table, latency distribution and iterations, resource charts."""
    inputs: dict[str, Any] = {}
    for combo in combos:
        inputs.update(combo.result.runtime_shapes or {})
    input_text = "; ".join(
        f"{esc(name)} {esc('×'.join(map(str, dims)))}" for name, dims in inputs.items()
    )
    parts = [
        f'<section class="experiment" id="shape-{index}">',
        f"<h2>Shape {esc(shape)}</h2>",
        f'<p class="meta">runtime inputs: {input_text or "–"}</p>',
        summary_table(combos, baseline_engine, colors),
    ]
    measured = [c for c in combos if c.wall_ns.size]
    if measured:
        parts.append(charts.chart(figures.distribution_figure(measured, colors), "chart wide"))
        parts.append(charts.chart(figures.iterations_figure(measured, colors), "chart wide"))
        notes = _drawing_notes(measured)
        if notes:
            parts.append(f'<p class="note">{notes}</p>')
    else:
        parts.append('<p class="empty">No combination of this shape was measured.</p>')

    parts.append("<h3>Memory and utilisation over time</h3>")
    resource = timeline.resource_figures(combos, colors)
    if all(fig is None for _, fig, _ in resource):
        parts.append('<p class="empty">No sampler data was recorded for this shape.</p>')
    else:
        parts.append(
            '<p class="legend-phases">'
            + "".join(
                f'<span class="swatch" style="background:{timeline.PHASE_COLORS[p]}"></span>{n}'
                for p, n in timeline.PHASE_NAMES.items()
            )
            + " — each worker process sampled on its own; gaps between workers are removed.</p>"
        )
        parts.append(_resource_legend(combos, colors))
        parts.append('<div class="grid2">')
        for title, fig, why in resource:
            if fig is None:
                parts.append(
                    f'<div class="chart-note"><b>{esc(title)}</b>'
                    f"<span>not shown: {esc(why)}</span></div>"
                )
            else:
                parts.append(charts.chart(fig, "chart small"))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _resource_legend(combos: list[CombinationView], colors: dict[int, str]) -> str:
    items = [
        f'<span class="swatch line" style="background:{colors[id(c)]}"></span>{esc(c.label)}'
        for c in combos
        if c.samples is not None and c.samples.height
    ]
    return f'<p class="legend-combos">{"".join(items)}</p>'


def _drawing_notes(combos: list[CombinationView]) -> str:
    notes = []
    for combo in combos:
        n = combo.wall_ns.size
        if n > figures.MAX_DIST_POINTS or n > figures.MAX_LINE_POINTS:
            notes.append(esc(combo.label))
    if not notes:
        return ""
    return (
        "Drawing only: charts of "
        + ", ".join(notes)
        + f" show at most {figures.MAX_DIST_POINTS:,} "
        f"random points per box and {figures.MAX_LINE_POINTS:,} points per line (minimum and "
        "maximum of each stretch, so spikes stay visible); every statistic uses all samples."
    )


def method_section(baseline_engine: str) -> str:
    return (
        '<section id="method" class="method"><h2>How to read this report</h2><ul>'
        "<li><b>Latency</b> is wall-clock time per iteration, host array in to host array out "
        "(with <code>--device-resident</code>, see the bench settings, compute alone with the "
        "inputs already on the device), measured after warm-up. Each "
        "combination ran in its own worker process.</li>"
        "<li><b>GPU p50</b>, where shown, is the median of the same iterations timed on the GPU "
        "with CUDA events. The gap to the wall clock is host work outside the stream (the call, "
        "the final synchronisation); the events include the time the GPU waits for the next "
        "kernel launch, so a launch-bound engine is slow on both clocks.</li>"
        "<li><b>95% CI of p50</b>: distribution-free confidence interval of the median from order "
        "statistics (binomial ranks); no normality is assumed.</li>"
        f"<li><b>Speedup</b> is the median of <code>{esc(baseline_engine)}</code> on the same "
        "device and run (the same precision where measured, and its plainest options) divided "
        "by this median: above 1× is faster. Hover the number to see the baseline.</li>"
        f"<li><b>Outliers</b> are iterations beyond {figures.OUTLIER_K:g} interquartile ranges "
        "from the quartiles. They are flagged (red ×) and can be hidden with the checkbox at the "
        "top or the legend; they are never removed from the statistics.</li>"
        "<li><b>Memory</b> is per worker process (RSS, and this process's GPU memory from NVML); "
        "system RAM and CPU are for the whole machine. Shading marks the worker's phases.</li>"
        "<li><b>Options</b> are the engine options that produced each number; compare like with "
        "like (for example CUDA graphs or IO binding change what a call costs).</li>"
        "<li>Long series are downsampled for drawing only; every statistic uses every sample.</li>"
        "</ul></section>"
    )


def curves_section(
    charts: Charts, combos: list[CombinationView], colors: dict[int, str], budget_ms: float | None
) -> str:
    """The page's section of throughput-latency charts, one per engine, under each engine's
    best configuration within the budget; empty when no combination ran under a load."""
    points = curves.load_points(combos)
    if not points:
        return ""
    budget = budget_ms if budget_ms is not None else curves.default_budget(combos)
    parts = ['<section id="curves"><h2>Throughput against latency</h2>', "<ul>"]
    parts += [f"<li>{esc(line)}</li>" for line in curves.best_lines(points, budget)]
    parts.append("</ul>")
    for engine in sorted({p.engine for p in points}):
        parts.append(charts.chart(curves.figure(points, engine, colors), "chart wide"))
    parts.append(
        '<p class="note">Each point is one batch / concurrency / rate; latency is p99 per '
        "request (queueing included in the server scenario), throughput items per second. "
        "Ringed points form the engine's Pareto front: no other point has both lower p99 "
        "and higher throughput.</p></section>"
    )
    return "\n".join(parts)
