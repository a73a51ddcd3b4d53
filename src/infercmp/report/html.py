"""The self-contained HTML report: one file, plotly.js embedded once, figures as inert JSON."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import numpy as np

from infercmp.report import curves, figures
from infercmp.report.figures import esc
from infercmp.report.runs import Combination, RunView, format_options
from infercmp.report.summary import (
    DEFAULT_BASELINE,
    combinations,
    contention,
    experiments,
    fmt_ms,
    fmt_num,
    fmt_sci,
    fmt_speedup,
    per_item_differs,
    shortfall,
    summary_row,
)
from infercmp.workload.scenarios import OVERLOADED

_GREY = "#94a3b8"


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


class _Page:
    """Collects figure specs while sections are written, so plotly.js and data load once."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    def chart(self, figure: dict, css: str = "chart") -> str:
        div_id = f"fig{len(self.figures)}"
        self.figures[div_id] = _finite(figure)
        return f'<div class="{css}" id="{div_id}"></div>'


def render_html(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
) -> str:
    from plotly.offline import get_plotlyjs

    page = _Page()
    shapes = experiments(runs)
    combos = combinations(runs)
    colors = figures.combo_colors(combos)
    models = sorted({run.model for run in runs})
    title = f"infercmp report: {', '.join(models)}"

    from infercmp.report.leaderboard import tune_section

    tuned = tune_section(runs)
    body: list[str] = [_header(runs, models), _overview(runs), tuned, _warnings(runs)]
    nav = [f'<a href="#shape-{i}">shape {esc(s)}</a>' for i, s in enumerate(shapes)]
    if len(shapes) > 1:
        nav.insert(0, '<a href="#across">across shapes</a>')
    if tuned:
        nav.insert(0, '<a href="#tune">tuning leaderboard</a>')
    nav.append('<a href="#environment">environment</a>')
    nav.append('<a href="#method">how to read</a>')
    body.insert(1, f'<nav class="toc">{"".join(nav)}</nav>')

    if len(shapes) > 1:
        body.append(_across(page, runs, combos, colors, shapes, baseline_engine))
    for i, shape in enumerate(shapes):
        body.append(_experiment(page, i, shape, combinations(runs, shape), colors, baseline_engine))
    loads = curves.html_section(page, combos, colors, latency_budget_ms)
    if loads:
        body.insert(len(body) - len(shapes), loads)
        nav.insert(0, '<a href="#curves">throughput vs latency</a>')
        body[1] = f'<nav class="toc">{"".join(nav)}</nav>'
    body.append(_environment(runs))
    body.append(_method(baseline_engine))

    return _TEMPLATE.format(
        title=esc(title),
        css=_asset("page.css"),
        plotly=get_plotlyjs(),
        body="\n".join(body),
        figures=script_json(page.figures),
        script=_asset("page.js"),
    )


# --- sections --------------------------------------------------------------------------------


def _header(runs: list[RunView], models: list[str]) -> str:
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


def _overview(runs: list[RunView]) -> str:
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
            f'<span class="badge {_status_class(status)}">{esc(status)}</span></div>'
            f'<div class="kv"><span>run</span><code>{esc(run.path.name)}</code></div>'
            f'<div class="kv"><span>CPU</span>{esc(_cpu_text(env))}</div>'
            f'<div class="kv"><span>GPU</span>{esc(_gpu_text(env))}</div>'
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


def _warnings(runs: list[RunView]) -> str:
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


def _across(page, runs, combos, colors, shapes, baseline_engine) -> str:
    figure = figures.scaling_figure(combos, colors, shapes)
    if not figure["data"]:
        chart = '<p class="empty">No combination finished at two or more shapes.</p>'
    else:
        chart = page.chart(figure)
    # A compact grid: configurations down, shapes across, median latency in each cell.
    keys: dict[tuple, str] = {}
    cells: dict[tuple, Combination] = {}
    for combo in combos:
        key = (id(combo.run), combo.engine, combo.device, combo.precision, combo.options_text)
        keys.setdefault(key, combo)
        cells[key + (combo.shape_label,)] = combo
    head = "".join(f"<th class=num>{esc(s)}</th>" for s in shapes)
    rows = []
    for key, first in keys.items():
        tds = []
        for shape in shapes:
            combo = cells.get(key + (shape,))
            if combo is None:
                tds.append("<td class=num>–</td>")
            elif combo.status != "ok" or not combo.latency:
                tds.append(f'<td class="num muted">{esc(combo.status)}</td>')
            else:
                tds.append(f"<td class=num>{fmt_ms(combo.latency['p50_ms'])}</td>")
        dot = f'<span class="dot" style="background:{colors.get(id(first), _GREY)}"></span>'
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


def _experiment(page, index, shape, combos, colors, baseline_engine) -> str:
    inputs = {}
    for combo in combos:
        inputs.update(combo.result.runtime_shapes or {})
    input_text = "; ".join(
        f"{esc(name)} {esc('×'.join(map(str, dims)))}" for name, dims in inputs.items()
    )
    parts = [
        f'<section class="experiment" id="shape-{index}">',
        f"<h2>Shape {esc(shape)}</h2>",
        f'<p class="meta">runtime inputs: {input_text or "–"}</p>',
        _summary_table(combos, baseline_engine, colors),
    ]
    measured = [c for c in combos if c.wall_ns.size]
    if measured:
        parts.append(page.chart(figures.distribution_figure(measured, colors), "chart wide"))
        parts.append(page.chart(figures.iterations_figure(measured, colors), "chart wide"))
        notes = _drawing_notes(measured)
        if notes:
            parts.append(f'<p class="note">{notes}</p>')
    else:
        parts.append('<p class="empty">No combination of this shape was measured.</p>')

    parts.append("<h3>Memory and utilisation over time</h3>")
    resource = figures.resource_figures(combos, colors)
    if all(fig is None for _, fig, _ in resource):
        parts.append('<p class="empty">No sampler data was recorded for this shape.</p>')
    else:
        parts.append(
            '<p class="legend-phases">'
            + "".join(
                f'<span class="swatch" style="background:{figures.PHASE_COLORS[p]}"></span>{n}'
                for p, n in figures.PHASE_NAMES.items()
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
                parts.append(page.chart(fig, "chart small"))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _resource_legend(combos, colors) -> str:
    items = [
        f'<span class="swatch line" style="background:{colors[id(c)]}"></span>{esc(c.label)}'
        for c in combos
        if c.samples is not None and c.samples.height
    ]
    return f'<p class="legend-combos">{"".join(items)}</p>'


def _drawing_notes(combos: list[Combination]) -> str:
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


_COLUMNS = [
    ("config", "configuration", ""),
    ("status", "status", ""),
    # Beside the status, not last: at 1400 px a wide table scrolled it out of sight.
    ("parity", "parity (max abs err)", ""),
    ("qps", 'offered <small title="--qps, or the rate --qps auto chose">req/s</small>', "num"),
    ("p50", "p50 <small>(95% CI)</small>", "num"),
    ("device_p50", 'GPU p50 <small title="CUDA events">(device)</small>', "num"),
    ("p90", "p90", "num"),
    ("p99", "p99", "num"),
    ("mean", "mean ± std", "num"),
    ("throughput", "throughput /s", "num"),
    ("speedup", "speedup", "num"),
    ("iterations", "iters (outliers)", "num"),
    ("rss", "peak RSS", "num"),
    ("vram", "peak VRAM", "num"),
    ("energy", "J / request", "num"),
    ("energy_item", "J / item", "num"),
    ("util", 'GPU util <small title="sampler readings it rests on">(readings)</small>', "num"),
    ("processes", "p50 per process", "num"),
]
# Columns shown only when some row of the table has a value: a CPU-only run has no GPU time,
# VRAM or energy, and empty columns would push parity off a laptop screen.
_OPTIONAL = {
    "device_p50": ("device_p50_ms",),
    "util": ("gpu_util_readings",),
    "processes": ("process_p50_ms",),
    "vram": ("peak_vram_mib",),
    "qps": ("qps",),
    "energy": ("energy_j_per_request", "energy_method"),
}


def _summary_table(combos: list[Combination], baseline_engine: str, colors: dict[int, str]) -> str:
    rows = [(combo, summary_row(combo, baseline_engine)) for combo in combos]
    best = min(
        (r["p50_ms"] for _, r in rows if r["status"] == "ok" and r["p50_ms"] is not None),
        default=None,
    )
    # The GPU p50 (CUDA events) sits beside the wall clock so host overhead is not read as
    # engine speed.
    # J/item only where some request holds several items; elsewhere it repeats J/request.
    with_items = per_item_differs([row for _, row in rows])
    columns = [
        (key, title, css)
        for key, title, css in _COLUMNS
        if (key != "energy_item" or with_items)
        and (
            key not in _OPTIONAL
            or any(row[k] is not None for _, row in rows for k in _OPTIONAL[key])
        )
    ]
    head = "".join(f'<th class="{css}">{title}</th>' for _, title, css in columns)
    body = []
    for combo, row in rows:
        # An overloaded load run's figures are kept and shown, under its status.
        ok = row["status"] in ("ok", OVERLOADED)
        status = f'<span class="badge {_status_class(row["status"])}">{esc(row["status"])}</span>'
        if row["error"]:
            status += f'<div class="error">{esc(row["error"])}</div>'
        if not ok:
            body.append(
                f'<tr class=inactive><td class="config">{_config_cell(combo, row, colors)}</td>'
                f"<td colspan={len(columns) - 1}>{status}</td></tr>"
            )
            continue
        p50 = fmt_ms(row["p50_ms"])
        if best is not None and row["p50_ms"] == best and len(rows) > 1:
            p50 = f'<b class="best" title="fastest median of this shape">{p50}</b>'
        speedup = row["speedup"]
        speed_css = (
            ""
            if speedup is None or row["speedup_note"]  # no colour for what is not a result
            else ("faster" if speedup > 1.02 else "slower" if speedup < 0.98 else "")
        )
        speed_title = (
            f"against {row['baseline']}"
            if row["baseline"]
            else f"no {baseline_engine} run on this device"
        ) + (f": {row['speedup_note']}" if row["speedup_note"] else "")
        parity = "–"
        if row["parity_ok"] is not None:
            parity = (
                f'<span class="badge {"ok" if row["parity_ok"] else "bad"}">'
                f"{'ok' if row['parity_ok'] else 'FAIL'}</span> {fmt_sci(row['parity_max_abs'])}"
            )
            if row.get("parity_tolerance"):
                parity = f'<span title="judged at {esc(row["parity_tolerance"])}">{parity}</span>'

        outliers = "–" if row["outliers"] is None else row["outliers"]
        cells = {
            "config": f'<td class="config">{_config_cell(combo, row, colors)}</td>',
            "status": f"<td>{status}</td>",
            "p50": f"<td class=num>{p50}<div class=ci>{fmt_ms(row['ci_low_ms'])}–"
            f"{fmt_ms(row['ci_high_ms'])}</div></td>",
            "device_p50": f"<td class=num>{fmt_ms(row['device_p50_ms'])}</td>",
            "p90": f"<td class=num>{fmt_ms(row['p90_ms'])}</td>",
            "p99": f"<td class=num>{fmt_ms(row['p99_ms'])}</td>",
            "mean": f"<td class=num>{fmt_ms(row['mean_ms'])} ± {fmt_ms(row['std_ms'])}</td>",
            "throughput": f"<td class=num>{fmt_num(row['throughput_per_s'])}</td>",
            "speedup": f'<td class="num {speed_css}" title="{esc(speed_title)}">'
            f"{esc(fmt_speedup(row))}</td>",
            "qps": f"<td class=num>{fmt_num(row['qps'], 1)}</td>",
            "iterations": f"<td class=num>{row['iterations']:,} ({outliers})</td>",
            "rss": f"<td class=num>{fmt_num(row['peak_rss_mib'], 0, ' MiB')}</td>",
            "vram": f"<td class=num>{fmt_num(row['peak_vram_mib'], 0, ' MiB')}</td>",
            "energy": _energy_cell(row),
            "energy_item": f"<td class=num>{_sig(row['energy_j_per_item'])}</td>",
            "util": f"<td class=num>{fmt_num(row['gpu_util_pct'], 0, '%')} "
            f"({row['gpu_util_readings'] or 0})</td>",
            "processes": f"<td class=num>{esc(row['process_p50_ms'] or '–')}</td>",
            "parity": f"<td>{parity}</td>",
        }
        body.append(f"<tr>{''.join(cells[key] for key, _, _ in columns)}</tr>")
    return (
        '<div class="table-wrap"><table class="summary">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _energy_cell(row: dict) -> str:
    """J/request, or n/a with the reason (a window too short, a power above the limit)."""
    if row["energy_j_per_request"] is not None:
        title = f' title="{esc(row["energy_method"])}"' if row.get("energy_method") else ""
        return f"<td class=num{title}>{_sig(row['energy_j_per_request'])}</td>"
    method = row.get("energy_method") or ""
    if method.startswith("n/a"):
        return f'<td class=num title="{esc(method)}">n/a</td>'
    return "<td class=num>–</td>"


def _config_cell(combo: Combination, row: dict, colors: dict[int, str]) -> str:
    """The configuration's name and, under it, every option that produced its numbers."""
    color = colors.get(id(combo), _GREY)
    name = " · ".join([combo.engine, combo.device, combo.precision])
    run = combo.run
    extra = {k: v for k, v in combo.options.items() if k in run.distinguishing_options}
    if extra:
        name += f" [{format_options(extra)}]"
    under = f"options: {row['options']}"
    if run.show_run_in_labels:
        under = f"on {run.label} · {under}"
    return (
        f'<span class="dot" style="background:{color}"></span>{esc(name)}'
        f'<div class="opts">{esc(under)}</div>'
    )


def _environment(runs: list[RunView]) -> str:
    """Machine, software and bench settings of each run, in words rather than raw keys."""
    blocks = []
    for run in runs:
        env = run.environment
        machine = _rows(_machine_facts(env))
        libraries = _rows(
            (name, version)
            for name, version in sorted((env.get("libraries") or {}).items())
            if version
        )
        gpus = _rows(_gpu_facts(env))
        settings = _rows(_settings_facts(run.meta.get("settings") or {}))
        blocks.append(
            f"<div class=envblock><h3>{esc(run.label)} <code>{esc(run.path.name)}</code></h3>"
            '<div class="grid3">'
            f'<table class="kvtable"><caption>machine</caption>{machine}</table>'
            f'<table class="kvtable"><caption>GPUs</caption>{gpus}</table>'
            f'<table class="kvtable"><caption>libraries</caption>{libraries}</table>'
            + (
                f'<table class="kvtable"><caption>bench settings</caption>{settings}</table>'
                if (run.meta.get("settings") or {})
                else ""
            )
            + "</div></div>"
        )
    return f'<section id="environment"><h2>Environment</h2>{"".join(blocks)}</section>'


def _rows(facts) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return rows or "<tr><td>–</td></tr>"


def _machine_facts(env: dict) -> list[tuple[str, str]]:
    facts = [("host", env.get("hostname")), ("system", env.get("platform"))]
    facts.append(("CPU", _cpu_text(env)))
    if env.get("python"):
        implementation = env.get("python_implementation")
        facts.append(("Python", env["python"] + (f" ({implementation})" if implementation else "")))
    if env.get("cuda_visible_devices") is not None:
        facts.append(("CUDA_VISIBLE_DEVICES", env["cuda_visible_devices"]))
    return [(k, str(v)) for k, v in facts if v]


# NVML's reasons for not answering, as a person would say them.
_NVML_REASONS = {
    "LibraryNotFound": "no NVIDIA driver is installed",
    "DriverNotLoaded": "the NVIDIA driver is not loaded",
    "NoPermission": "no permission to query the GPUs",
    "Uninitialized": "the NVIDIA driver did not start",
}


def _gpu_facts(env: dict) -> list[tuple[str, str]]:
    gpus = env.get("gpus") or []
    nvml = env.get("nvml") or {}
    if not gpus:
        reason = str(nvml.get("reason") or "")
        said = next((text for key, text in _NVML_REASONS.items() if key in reason), None)
        return [("none found", said or (f"the GPU query failed: {reason}" if reason else "–"))]
    facts = []
    for gpu in gpus:
        parts = []
        memory = gpu.get("memory_total_bytes")
        if isinstance(memory, int) and memory > 2**30:
            parts.append(f"{memory / 2**30:.0f} GiB")
        if gpu.get("compute_capability"):
            parts.append(f"compute capability {gpu['compute_capability']}")
        if gpu.get("sm_clock_max_mhz"):
            parts.append(
                f"SM clock {gpu.get('sm_clock_mhz') or '?'} of {gpu['sm_clock_max_mhz']} MHz"
            )
        if gpu.get("power_limit_w"):
            parts.append(f"power limit {gpu['power_limit_w']:g} W")
        facts.append((str(gpu.get("name") or "GPU"), ", ".join(parts) or "–"))
    driver = nvml.get("driver_version") or gpus[0].get("driver_version")
    cuda = nvml.get("cuda_driver_version") or gpus[0].get("cuda_driver_version")
    if driver or cuda:
        facts.append(
            ("driver", " ".join(x for x in (driver, f"(CUDA {cuda})" if cuda else "") if x))
        )
    return facts


def _settings_facts(settings: dict) -> list[tuple[str, str]]:
    """bench's settings (docs/results-format.md, run.json) as sentences; unknown keys as given."""
    settings = dict(settings)
    measurement = dict(settings.pop("measurement", None) or {})
    facts = []
    shapes = settings.pop("experiments", None)
    if shapes:
        facts.append(("shapes", ", ".join(map(str, shapes))))
    if measurement:
        facts.append(("warm-up", _warmup_text(measurement)))
        facts.append(("measured", _measure_text(measurement)))
        if measurement.get("timeout_s"):
            facts.append(("worker timeout", f"{measurement['timeout_s']:g} s"))
        if "device_resident" in measurement:
            facts.append(
                (
                    "inputs",
                    "already on the device (compute alone is timed)"
                    if measurement["device_resident"]
                    else "copied from the host on every call",
                )
            )
    if settings.get("sample_hz"):
        facts.append(("sampling", f"{settings.pop('sample_hz'):g} readings per second"))
    names = {"exporter": "ONNX exporter", "onnx": "ONNX file"}
    for key, value in settings.items():
        if value is not None:
            facts.append((names.get(key, key.replace("_", " ")), _human(key, value)))
    return facts


def _warmup_text(m: dict) -> str:
    parts = []
    if m.get("warmup_iters"):
        parts.append(f"{m['warmup_iters']} iterations")
    if m.get("warmup_seconds"):
        parts.append(f"{m['warmup_seconds']:g} s")
    return " or ".join(parts) or "none"


def _measure_text(m: dict) -> str:
    if m.get("iters"):
        return f"{m['iters']} iterations"
    if m.get("duration_s"):
        return f"for {m['duration_s']:g} s"
    if m.get("ci_target"):
        text = f"until the median's 95% CI is within ±{m['ci_target'] * 100:g}%"
        limits = []
        if m.get("min_iters"):
            limits.append(f"at least {m['min_iters']} iterations")
        if m.get("max_seconds"):
            limits.append(f"at most {m['max_seconds']:g} s")
        return text + (f" ({', '.join(limits)})" if limits else "")
    return "–"


def _method(baseline_engine: str) -> str:
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


# --- helpers ---------------------------------------------------------------------------------


def _status_class(status: str) -> str:
    if status in ("ok", "complete"):
        return "ok"
    if status in ("skipped", "running"):
        return "skip"
    return "bad"


def _cpu_text(env: dict) -> str:
    """CPU, cores and RAM from `infercmp.platform.environment.collect_environment()`'s keys."""
    text = str(env.get("cpu_model") or "unknown CPU")
    physical = env.get("cpu_physical_cores")
    logical = env.get("cpu_logical_cores")
    usable = env.get("cpu_affinity_cores")
    if physical and logical and logical != physical:
        text += f", {physical} cores / {logical} threads"
    elif physical or logical:
        text += f", {physical or logical} cores"
    if usable and logical and usable < logical:
        text += f" ({usable} usable by this process)"
    ram = env.get("ram_total_bytes")
    if isinstance(ram, int | float) and ram > 2**20:
        text += f", {ram / 2**30:.0f} GiB RAM"
    return text


def _gpu_text(env: dict) -> str:
    gpus = env.get("gpus") or []
    if not gpus:
        return "none"
    first = gpus[0]
    name = str(first.get("name") or "GPU")
    text = f"{len(gpus)}× {name}" if len(gpus) > 1 else name
    memory = first.get("memory_total_bytes")
    if isinstance(memory, int | float) and memory > 2**30:
        text += f" ({memory / 2**30:.0f} GiB)"
    driver = first.get("driver_version") or (env.get("nvml") or {}).get("driver_version")
    return text + (f", driver {driver}" if driver else "")


def _sig(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _human(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and "bytes" in key
        and value > 2**20
    ):
        return f"{value / 2**30:.1f} GiB"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _asset(name: str) -> str:
    """The page's stylesheet and script, kept as files beside this module."""
    from importlib.resources import files

    return files("infercmp.report").joinpath(name).read_text(encoding="utf-8")


def _finite(value: Any) -> Any:
    """NaN and inf are not JSON; plotly reads null as a gap."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


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
