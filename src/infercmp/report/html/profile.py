"""The page's profile section (`bench --profile`): per model and shape, one stacked bar per
combination by module (the model's top-level children, then what no module explains), the
kind of work of each, and the largest differences between engines in words."""

from __future__ import annotations

from typing import Any

from infercmp.report.figures import base_layout, esc, top_legend
from infercmp.report.profile import (
    ProfileTable,
    kind_table_rows,
    module_table_rows,
    profile_tables,
    words,
)
from infercmp.report.runs import CombinationView
from infercmp.run.profile import LAUNCH_GAPS, NO_MODULE, TOP_LEVEL, UNEXPLAINED

#: Rows that are no module of the model keep one colour each, on every bar.
_GREYS = {
    TOP_LEVEL: "#94a3b8",
    NO_MODULE: "#cbd5e1",
    UNEXPLAINED: "#e2e8f0",
    LAUNCH_GAPS: "#f1a7a7",
}
_PALETTE = (
    "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4d7c0f",
    "#1e40af", "#b91c1c", "#0f766e", "#7c3aed",
)  # fmt: skip


def profile_figure(table: ProfileTable) -> dict:
    """One horizontal bar per combination, stacked by module row, in ms per call."""
    data: list[dict[str, Any]] = []
    columns = range(len(table.labels))
    for number, row in enumerate(table.rows):
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": esc(row),
                "y": [esc(label) for label in table.labels],
                "x": [table.cells.get((row, c), 0.0) for c in columns],
                "marker": {"color": _GREYS.get(row, _PALETTE[number % len(_PALETTE)])},
                "hovertemplate": "%{x:.4g} ms<extra>" + esc(row) + "</extra>",
            }
        )
    layout = base_layout(
        f"{table.model} @ {table.shape}: where each call's time goes (depth {table.depth})",
        "",
        "ms per call (profiled)",
        height=max(220, 90 + 48 * len(table.labels)),
    )
    layout["barmode"] = "stack"
    layout["legend"] = {**top_legend(), "traceorder": "normal"}
    layout["yaxis"]["autorange"] = "reversed"
    layout["margin"]["t"] = 96
    return {"data": data, "layout": layout}


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td>{esc(row[0])}</td>"
        + "".join(f"<td class=num>{esc(c)}</td>" for c in row[1:])
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table-wrap"><table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def profile_section(charts: Any, combos: list[CombinationView], depth: int = 1) -> str:
    """The section; empty when no combination was profiled."""
    tables = profile_tables(combos, depth)
    if not tables:
        return ""
    parts = ['<section id="profile"><h2>Where the time goes (profiles)</h2>']
    for table in tables:
        parts.append(f"<h3>{esc(table.model)} @ {esc(table.shape)}</h3>")
        if table.labels:
            parts.append(charts.chart(profile_figure(table), "chart wide"))
            parts.append(_html_table(["module", *table.labels], module_table_rows(table)))
            parts.append(_html_table(["kind of work", *table.labels], kind_table_rows(table)))
        found = words(table)
        if found:
            items = "".join(f"<li>{esc(line)}</li>" for line in found)
            parts.append(f'<ul class="profile-words">{items}</ul>')
    parts.append(
        '<p class="note">Each engine\'s own profiler, in a separate phase after the timed one '
        "(never in a measured iteration). Cells: ms per call and its share of the profiled "
        "call. Modules come from the PyTorch module tree (the ONNX export's scopes); an op "
        "fused across modules goes to their common parent, marked (fused). no module: what "
        "the engine inserted (reorders, copies); unexplained: what no op explains (host "
        "overhead, copies in and out); launch gaps: on CUDA, the time no kernel ran. The "
        "total row compares the profiled call with the timed median (closure) and says what "
        "the profiler added against the same calls unprofiled beside it; beyond 10% a note "
        "says how much of the closure is the profiler's and how much the machine's.</p>"
        "</section>"
    )
    return "\n".join(parts)
