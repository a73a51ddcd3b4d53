"""Plotly figure specs (plain dicts, no plotly import) for the HTML report.

Every string that may come from a plugin or a run (model, engine option, error text) is
HTML-escaped here before it reaches a figure, because plotly.js renders a subset of HTML in
labels; entities are decoded for display, so escaped names still read as typed.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.core.stats import outlier_mask
from infercmp.report.runs import CombinationView, format_options

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

MAX_DIST_POINTS = 3000  # per combination, drawn; statistics always use every sample
MAX_LINE_POINTS = 1500  # per time series trace, drawn (min/max per bucket keeps spikes)
OUTLIER_K = 3.0

ENGINE_COLORS = {
    "pytorch": ["#e8590c", "#c2410c", "#fb923c", "#9a3412"],
    "onnxruntime": ["#1d6fd8", "#1e40af", "#60a5fa", "#172554"],
    "tensorrt": ["#5e9e00", "#3f6212", "#a3d44a", "#1a2e05"],
}
OTHER_COLORS = ["#7c3aed", "#db2777", "#0891b2", "#a16207", "#475569", "#be123c"]
_OUTLIER_MARKER = {
    "color": "#dc2626",
    "size": 7,
    "symbol": "x-thin",
    "line": {"width": 1.6, "color": "#dc2626"},
}

GREY = "#94a3b8"  # a combination drawn without a colour of its own
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def combo_colors(combos: list[CombinationView]) -> dict[int, str]:
    """One colour per combination; an engine keeps its family of hues across all charts."""
    used: dict[str, int] = {}
    colors: dict[int, str] = {}
    other = 0
    seen: dict[tuple, str] = {}
    for combo in combos:
        key = (combo.run.path, combo.engine, combo.device, combo.precision, combo.options_text)
        if key in seen:
            colors[id(combo)] = seen[key]
            continue
        family = ENGINE_COLORS.get(combo.engine)
        if family:
            i = used.get(combo.engine, 0)
            used[combo.engine] = i + 1
            color = family[i % len(family)]
        else:
            color = OTHER_COLORS[other % len(OTHER_COLORS)]
            other += 1
        seen[key] = color
        colors[id(combo)] = color
    return colors


def tick_label(combo: CombinationView) -> str:
    """Multi-line category label: engine, then device/precision, then options and machine."""
    lines = [f"<b>{esc(combo.engine)}</b>", f"{esc(combo.device)} · {esc(combo.precision)}"]
    run = combo.run
    extra = {k: v for k, v in combo.options.items() if k in run.distinguishing_options}
    # One option a line: side by side they run into the next category's label.
    lines.extend(esc(format_options({k: v})) for k, v in sorted(extra.items()) if v is not None)
    if run.show_run_in_labels:
        lines.append(esc(run.label))
    return "<br>".join(lines)


def trace_name(combo: CombinationView) -> str:
    return esc(combo.label)


def base_layout(title: str, y_title: str, x_title: str = "", height: int = 380) -> dict:
    return {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 64, "r": 16, "t": 48, "b": 56},
        "font": {"family": FONT, "size": 12, "color": "#1f2937"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#fbfcfd",
        "xaxis": {
            "title": {"text": x_title},
            "gridcolor": "#e5e7eb",
            "zeroline": False,
            "automargin": True,
        },
        "yaxis": {
            "title": {"text": y_title},
            "gridcolor": "#e5e7eb",
            "zeroline": False,
            "automargin": True,
            "rangemode": "tozero",
        },
        "legend": {"orientation": "h", "y": -0.22, "x": 0, "font": {"size": 11}},
        "hoverlabel": {"font": {"family": FONT}},
    }


def top_legend() -> dict:
    """Legend under the title, where it cannot collide with multi-line tick labels."""
    return {
        "orientation": "h",
        "x": 0,
        "xanchor": "left",
        "y": 1.0,
        "yanchor": "bottom",
        "font": {"size": 11},
        "bgcolor": "rgba(255,255,255,0)",
    }


#: A y axis starts log when its values span more than this ratio: on a linear axis a fast
#: engine beside one ten times slower sits flat at zero.
LOG_RANGE = 10.0


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks at 1, 2 and 5 of each decade covering [low, high], each labelled with its whole
    value (plotly's own log ticks label 20 and 50 as "2" and "5": "5, 2, 100, 5, 2, 10")."""
    values = []
    for exponent in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1):
        for mantissa in (1, 2, 5):
            value = float(f"{mantissa}e{exponent}")
            if low / 2 <= value <= high * 2:
                values.append(value)
    return values, [f"{v:,.10g}" for v in values]


def add_log_toggle(layout: dict, values: Any, extent: Any = None) -> None:
    """A linear/log switch for the y axis (a GPU and a CPU engine can differ 100-fold), which
    starts log when `values` (what the axis compares) span more than LOG_RANGE, and shows which
    one is on. The log ticks cover `extent` (every value drawn; default `values`).

    Plotly draws its toolbar in the top right corner of the figure; the switch goes on a row
    of its own under it, at the right end of the plot's top edge, so the two never overlap.
    """
    shown, drawn = (_positive(v) for v in (values, values if extent is None else extent))
    to_linear = {"yaxis.type": "linear", "yaxis.rangemode": "tozero", "yaxis.tickmode": "auto"}
    to_log: dict[str, Any] = {"yaxis.type": "log", "yaxis.rangemode": "normal"}
    if drawn.size:
        ticks, labels = log_ticks(float(drawn.min()), float(drawn.max()))
        to_log.update(
            {"yaxis.tickmode": "array", "yaxis.tickvals": ticks, "yaxis.ticktext": labels}
        )
    log = bool(shown.size) and float(shown.max()) > LOG_RANGE * float(shown.min())
    start = to_log if log else to_linear
    layout["yaxis"].update({key.removeprefix("yaxis."): value for key, value in start.items()})
    layout["margin"] = {**layout["margin"], "t": max(layout["margin"]["t"], 84)}
    layout["updatemenus"] = [
        {
            "type": "buttons",
            "direction": "right",
            "x": 1,
            "xanchor": "right",
            "y": 1,
            "yanchor": "bottom",
            "showactive": True,
            "active": 1 if log else 0,  # plotly highlights the first button unless told
            "pad": {"r": 0, "t": 0, "b": 4},
            "font": {"size": 11},
            "buttons": [
                {"label": "linear", "method": "relayout", "args": [to_linear]},
                {"label": "log", "method": "relayout", "args": [to_log]},
            ],
        }
    ]


def _positive(values: Any) -> np.ndarray:
    """The finite positive values: what a log axis can show."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array) & (array > 0)]


def rounded(values: np.ndarray, digits: int = 4) -> list[float]:
    """`values` rounded to `digits` decimals, as the plain list a figure's JSON holds."""
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def distribution_figure(combos: list[CombinationView], colors: dict[int, str]) -> dict:
    """Box per combination from all samples, every (or a random subset of) iteration drawn as a
    point, and flagged outliers as their own legend entry so they can be hidden, never dropped."""
    data: list[dict] = []
    rng = np.random.default_rng(0)
    categories = _unique_categories(combos)
    for combo, category in zip(combos, categories):
        ms = combo.wall_ns.astype(np.float64) / 1e6
        if ms.size == 0:
            continue
        color = colors[id(combo)]
        flags = outlier_mask(ms, OUTLIER_K)
        iterations = np.arange(ms.size)
        data.append(_box_trace(combo, category, ms, color))
        inliers = np.flatnonzero(~flags)
        if inliers.size > MAX_DIST_POINTS:
            inliers = np.sort(rng.choice(inliers, MAX_DIST_POINTS, replace=False))
        data.append(
            _points_trace(
                category,
                ms,
                iterations,
                inliers,
                combo,
                name="iterations",
                group="iterations",
                label="iteration",
                marker={"color": color, "size": 3.5, "opacity": 0.45},
            )
        )
        outliers = np.flatnonzero(flags)
        outlier_trace = _points_trace(
            category,
            ms,
            iterations,
            outliers,
            combo,
            name=f"outliers (beyond {OUTLIER_K:g}×IQR)",
            group="outliers",
            label="outlier, iteration",
            marker=_OUTLIER_MARKER,
        )
        outlier_trace["meta"] = "outliers"  # the "show outliers" checkbox finds them by this
        data.append(outlier_trace)
    _legend_once(data, "iterations")
    _legend_once(data, "outliers")
    layout = base_layout("Latency distribution", "latency per iteration (ms)", height=420)
    layout["boxmode"] = "overlay"
    # Log when the medians span LOG_RANGE (a GPU engine beside a CPU one); its ticks cover
    # every drawn point, outliers included.
    measured = [c.wall_ns / 1e6 for c in combos if c.wall_ns.size]
    add_log_toggle(
        layout,
        [float(np.median(ms)) for ms in measured],
        [float(f(ms)) for ms in measured for f in (np.min, np.max)],
    )
    layout["xaxis"].update(type="category", tickangle=0, tickfont={"size": 11})
    layout["legend"] = top_legend()
    return {"data": data, "layout": layout}


def iterations_figure(combos: list[CombinationView], colors: dict[int, str]) -> dict:
    """One small chart per combination (each its own x range: a GPU engine runs many more
    iterations than a CPU one in the same time), outliers marked, to show drift and throttling."""
    measured = [c for c in combos if c.wall_ns.size]
    columns = 1 if len(measured) == 1 else 2
    rows = -(-len(measured) // columns)
    row_height, gap = 130, 44
    margin_top = 96  # the title's row, and above it a row for plotly's toolbar
    height = margin_top + 6 + rows * (row_height + gap)
    data: list[dict] = []
    layout = base_layout("Latency over iterations", "", height=height)
    layout["margin"].update(t=margin_top, b=30)
    plot_height = height - margin_top - 30
    # In the title's row, right-aligned, clear of the first charts' captions and under the
    # toolbar (which plotly draws in the figure's top right corner: the legend sat on it).
    layout["legend"] = dict(top_legend(), x=1, xanchor="right", y=1 + 34 / plot_height)
    layout["annotations"] = []
    for i, combo in enumerate(measured):
        row, col = divmod(i, columns)
        top = 1 - row * (row_height + gap) / plot_height
        bottom = max(0.0, top - row_height / plot_height)
        left = 0.0 if col == 0 else 0.54
        right = 1.0 if columns == 1 else left + 0.46
        suffix = "" if i == 0 else str(i + 1)
        ms = combo.wall_ns.astype(np.float64) / 1e6
        data.extend(_iteration_traces(combo, ms, colors[id(combo)], suffix))
        _iteration_axes(layout, combo, ms, colors[id(combo)], suffix, (left, right, bottom, top))
    _legend_once(data, "outliers")
    return {"data": data, "layout": layout}


def _iteration_traces(
    combo: CombinationView, ms: np.ndarray, color: str, suffix: str
) -> list[dict]:
    """One combination's latency line (decimated for drawing) and its outliers, on its axes."""
    index = np.arange(ms.size)
    keep = decimate(ms, MAX_LINE_POINTS)
    flags = np.flatnonzero(outlier_mask(ms, OUTLIER_K))
    return [
        {
            "type": "scatter",
            "mode": "lines",
            "name": trace_name(combo),
            "showlegend": False,
            "xaxis": f"x{suffix}",
            "yaxis": f"y{suffix}",
            "x": index[keep].tolist(),
            "y": rounded(ms[keep]),
            "line": {"color": color, "width": 1.1},
            "hovertemplate": "iteration %{x}<br>%{y:.3f} ms<extra>"
            + trace_name(combo)
            + "</extra>",
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": f"outliers (beyond {OUTLIER_K:g}×IQR)",
            "legendgroup": "outliers",
            "meta": "outliers",
            "showlegend": False,
            "xaxis": f"x{suffix}",
            "yaxis": f"y{suffix}",
            "x": flags.tolist(),
            "y": rounded(ms[flags]),
            "marker": _OUTLIER_MARKER,
            "hovertemplate": "outlier, iteration %{x}<br>%{y:.3f} ms<extra>"
            + trace_name(combo)
            + "</extra>",
        },
    ]


def _iteration_axes(
    layout: dict,
    combo: CombinationView,
    ms: np.ndarray,
    color: str,
    suffix: str,
    box: tuple[float, float, float, float],
) -> None:
    """The x and y axes of one combination's chart in `box` (left, right, bottom, top of the
    paper), and its caption: its name, median and number of iterations."""
    left, right, bottom, top = box
    median = float(np.median(ms))
    layout[f"xaxis{suffix}"] = {
        "domain": [left, right],
        "anchor": f"y{suffix}",
        "gridcolor": "#e5e7eb",
        "zeroline": False,
        "tickfont": {"size": 10},
    }
    layout[f"yaxis{suffix}"] = {
        "domain": [bottom, top],
        "anchor": f"x{suffix}",
        "gridcolor": "#e5e7eb",
        "zeroline": False,
        "tickfont": {"size": 10},
        "title": {"text": "ms", "font": {"size": 11}, "standoff": 4},
    }
    layout["annotations"].append(
        {
            "text": f"<b>{trace_name(combo)}</b>  median {median:.3f} ms, {ms.size:,} iterations",
            "xref": "paper",
            "yref": "paper",
            "x": left,
            "y": top,
            "xanchor": "left",
            "yanchor": "bottom",
            "showarrow": False,
            "font": {"size": 11, "color": color},
        }
    )


def scaling_figure(
    combos: list[CombinationView], colors: dict[int, str], shape_order: list[str]
) -> dict:
    """Median latency (with its 95% CI) against input size, one line per configuration."""
    groups: dict[tuple, list[CombinationView]] = {}
    for combo in combos:
        if combo.status != "ok" or not combo.latency:
            continue
        key = (id(combo.run), combo.engine, combo.device, combo.precision, combo.options_text)
        groups.setdefault(key, []).append(combo)
    data = []
    for members in groups.values():
        members.sort(key=lambda c: c.input_elements)
        first = members[0]
        p50 = [_latency(c)["p50_ms"] for c in members]
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": trace_name(first),
                "x": [c.input_elements for c in members],
                "y": rounded(np.array(p50)),
                "text": [esc(c.shape_label) for c in members],
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": rounded(
                        np.array(
                            [_latency(c)["ci_high_ms"] - _latency(c)["p50_ms"] for c in members]
                        )
                    ),
                    "arrayminus": rounded(
                        np.array(
                            [_latency(c)["p50_ms"] - _latency(c)["ci_low_ms"] for c in members]
                        )
                    ),
                    "thickness": 1.2,
                    "width": 4,
                },
                "line": {"color": colors[id(first)], "width": 2},
                "marker": {"size": 7},
                "hovertemplate": "shape %{text}<br>%{x:,} input elements<br>p50 %{y:.3f} ms<extra>"
                + trace_name(first)
                + "</extra>",
            }
        )
    layout = base_layout(
        "Median latency against input size", "median latency (ms)", "input elements per inference"
    )
    layout["xaxis"]["type"] = "log"
    # Ticks at the measured sizes, named by their shapes: a reader thinks in 224 and 448.
    sizes: dict[int, list[str]] = {}
    for members in groups.values():
        for c in members:
            names = sizes.setdefault(c.input_elements, [])
            if c.shape_label not in names:
                names.append(c.shape_label)
    if sizes:
        layout["xaxis"]["tickvals"] = sorted(sizes)
        layout["xaxis"]["ticktext"] = [
            esc(" / ".join(sizes[n])) + f"<br>{n:,}" for n in sorted(sizes)
        ]
    add_log_toggle(layout, [_latency(c)["p50_ms"] for members in groups.values() for c in members])
    layout["showlegend"] = False  # the table beside the chart is its legend
    return {"data": data, "layout": layout}


def _latency(combo: CombinationView) -> dict[str, float]:
    """The latency statistics of a combination that has them (the callers kept only those)."""
    return combo.latency or {}


def decimate(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to draw: the min and max of each bucket, so spikes survive downsampling."""
    n = y.size
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = -(-n // buckets)
    padded = np.full(buckets * size, np.nan)
    padded[:n] = y
    rows = padded.reshape(buckets, size)
    valid = ~np.isnan(rows)
    lo = np.argmin(np.where(valid, rows, np.inf), axis=1)
    hi = np.argmax(np.where(valid, rows, -np.inf), axis=1)
    base = np.arange(buckets) * size
    idx = np.unique(np.concatenate([base + lo, base + hi, [0, n - 1]]))
    return idx[idx < n]


def _box_trace(combo: CombinationView, category: str, ms: np.ndarray, color: str) -> dict:
    """The box of one combination, from all its samples (whiskers at 1.5 IQR, mean marked)."""
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    iqr = q3 - q1
    within = ms[(ms >= q1 - 1.5 * iqr) & (ms <= q3 + 1.5 * iqr)]
    return {
        "type": "box",
        "name": trace_name(combo),
        "x": [category],
        "q1": [round(q1, 4)],
        "median": [round(med, 4)],
        "q3": [round(q3, 4)],
        "lowerfence": [round(float(within.min()), 4)],
        "upperfence": [round(float(within.max()), 4)],
        "mean": [round(float(ms.mean()), 4)],
        "boxpoints": False,
        "line": {"color": color, "width": 1.6},
        "fillcolor": _alpha(color, 0.12),
        "showlegend": False,
        "hoverinfo": "y",
        "width": 0.55,
    }


def _unique_categories(combos: list[CombinationView]) -> list[str]:
    labels = [tick_label(c) for c in combos]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [
        f"{label}<br>{esc(c.combo_id)}" if counts[label] > 1 else label
        for label, c in zip(labels, combos)
    ]


def _legend_once(data: list[dict], group: str) -> None:
    for trace in data:
        if trace.get("legendgroup") == group:
            trace["showlegend"] = True
            return


def _alpha(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _points_trace(category, ms, iterations, index, combo, *, name, group, label, marker):
    """Every chosen iteration as a jittered point over an invisible box (kept, never dropped)."""
    return {
        "type": "box",
        "name": name,
        "legendgroup": group,
        "showlegend": False,
        "x": [category] * index.size,
        "y": rounded(ms[index]),
        "customdata": iterations[index].tolist(),
        "boxpoints": "all",
        "jitter": 0.7,
        "pointpos": 0,
        "fillcolor": "rgba(0,0,0,0)",
        "line": {"color": "rgba(0,0,0,0)", "width": 0},
        "marker": marker,
        "hoveron": "points",
        "hovertemplate": f"{label} %{{customdata}}<br>%{{y:.3f}} ms<extra>"
        + trace_name(combo)
        + "</extra>",
        "width": 0.55,
    }
