"""Memory and utilisation over time: the six sampler charts of a shape, each worker's phases
shaded, workers placed one after another on one time axis (plain plotly dicts, like figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.report.figures import (
    MAX_LINE_POINTS,
    base_layout,
    decimate,
    esc,
    rounded,
    trace_name,
)
from infercmp.report.runs import CombinationView

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

PHASE_COLORS = {
    "load": "rgba(100,116,139,0.16)",
    "warmup": "rgba(245,158,11,0.20)",
    "measure": "rgba(16,185,129,0.13)",
    "parity": "rgba(59,130,246,0.14)",
}
PHASE_NAMES = {"load": "load", "warmup": "warm-up", "measure": "measure", "parity": "parity"}

# Six resource charts: the original study's, but per process where it measured the system.
RESOURCE_METRICS = [
    ("proc_rss_bytes", "Process memory (RSS)", "MiB", 1 / 2**20, False),
    ("proc_gpu_mem_bytes", "Process GPU memory (VRAM)", "MiB", 1 / 2**20, True),
    ("proc_cpu_pct", "Process CPU (100% = one core)", "%", 1.0, False),
    ("gpu_util_pct", "GPU utilisation", "%", 1.0, True),
    ("sys_ram_used_bytes", "System RAM used", "GiB", 1 / 2**30, False),
    ("sys_cpu_pct", "System CPU (all cores)", "%", 1.0, False),
]


def timeline_offsets(combos: list[CombinationView]) -> dict[int, float]:
    """x offset per combination: workers placed one after another, idle gaps between removed."""
    offsets: dict[int, float] = {}
    cursor = 0.0
    spans = [
        float(c.samples["t_s"].max() - c.samples["t_s"].min())
        for c in combos
        if c.samples is not None and c.samples.height
    ]
    gap = max(0.5, 0.02 * sum(spans)) if spans else 0.0
    for combo in combos:
        if combo.samples is None or combo.samples.height == 0:
            continue
        t = combo.samples["t_s"].to_numpy()
        offsets[id(combo)] = cursor - float(np.nanmin(t))
        cursor += float(np.nanmax(t) - np.nanmin(t)) + gap
    return offsets


def phase_spans(combo: CombinationView, offset: float) -> list[tuple[str, float, float]]:
    """Contiguous (phase, start, end) runs of the sampler's phase tags, on the shared x axis."""
    frame = combo.samples
    t = frame["t_s"].to_numpy().astype(np.float64) + offset
    phases = frame["phase"].to_list()
    spans: list[tuple[str, float, float]] = []
    start = 0
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            end = t[i] if i < len(phases) else t[-1]
            spans.append((str(phases[start]), float(t[start]), float(end)))
            start = i
    return spans


def resource_figures(
    combos: list[CombinationView], colors: dict[int, str]
) -> list[tuple[str, dict | None, str]]:
    """(title, figure or None, note) for the six charts; None with a note when nothing was seen."""
    sampled = [c for c in combos if c.samples is not None and c.samples.height]
    offsets = timeline_offsets(sampled)
    shapes, annotations = _phase_marks(sampled, offsets, colors)
    out: list[tuple[str, dict | None, str]] = []
    for column, title, unit, scale, gpu in RESOURCE_METRICS:
        data = _metric_traces(sampled, offsets, colors, column, unit, scale)
        if not data:
            why = (
                "no GPU was sampled (CPU-only run or no NVIDIA driver)"
                if gpu
                else "no samples were recorded for this metric"
            )
            out.append((title, None, why))
            continue
        layout = base_layout(title, unit, "seconds (workers one after another)", height=300)
        layout["shapes"] = shapes
        layout["annotations"] = annotations
        layout["margin"].update(t=58, b=52)
        layout["showlegend"] = False
        out.append((title, {"data": data, "layout": layout}, ""))
    return out


def _phase_marks(
    sampled: list[CombinationView], offsets: dict[int, float], colors: dict[int, str]
) -> tuple[list[dict], list[dict]]:
    """The shading of each worker's phases, and each worker's name above its start where it
    does not run into the name before it; shared by the six charts."""
    shapes: list[dict] = []
    annotations: list[dict] = []
    total = max((offsets[id(c)] + float(np.nanmax(c.samples["t_s"])) for c in sampled), default=0)
    label_end = -np.inf
    for combo in sampled:
        for phase, x0, x1 in phase_spans(combo, offsets[id(combo)]):
            shapes.append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "paper",
                    "x0": x0,
                    "x1": x1,
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": PHASE_COLORS.get(phase, "rgba(0,0,0,0.05)"),
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        t = combo.samples["t_s"].to_numpy()
        start = float(np.nanmin(t)) + offsets[id(combo)]
        text = f"<b>{esc(combo.engine)}</b> {esc(combo.device)}"
        if start < label_end:
            continue  # a short worker next to a labelled one: its colour and the legend tell it
        # About 6.5 px a character on a plot about 500 px wide, in seconds of the shared axis.
        label_end = start + total * 6.5 * len(f"{combo.engine} {combo.device} ") / 500
        annotations.append(
            {
                "x": start,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "xanchor": "left",
                "yanchor": "bottom",
                "showarrow": False,
                "text": text,
                "font": {"size": 10, "color": colors[id(combo)]},
            }
        )
    return shapes, annotations


def _metric_traces(
    sampled: list[CombinationView],
    offsets: dict[int, float],
    colors: dict[int, str],
    column: str,
    unit: str,
    scale: float,
) -> list[dict]:
    """One line per worker that recorded `column` (scaled to `unit`), decimated for drawing."""
    data = []
    for combo in sampled:
        frame = combo.samples
        if column not in frame.columns:
            continue
        y = frame[column].cast(float).to_numpy().astype(np.float64) * scale
        if np.all(np.isnan(y)):
            continue
        x = frame["t_s"].to_numpy().astype(np.float64) + offsets[id(combo)]
        keep = decimate(y, MAX_LINE_POINTS)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": trace_name(combo),
                "x": rounded(x[keep], 3),
                "y": rounded(y[keep], 2),
                "line": {"color": colors[id(combo)], "width": 1.5},
                "connectgaps": False,
                "hovertemplate": "%{y:.1f} " + unit + "<extra>" + trace_name(combo) + "</extra>",
            }
        )
    return data
