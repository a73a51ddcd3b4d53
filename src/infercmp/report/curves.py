"""Throughput against latency across the loads of a run (batch, concurrency, QPS points): the
points, each engine's Pareto front, and each engine's best configuration within a latency
budget, for the HTML chart and the md/csv/json tables.

A point is one combination measured under a `--batch`/`--concurrency`/`--scenario` load:
latency is its p99 (end minus due time per request, so queueing counts in the server
scenario), throughput is items per second (batch x requests over the measured window, or
batch / median latency for one request at a time). A point is on its engine's Pareto front
when no other point of that engine has both lower (or equal) p99 and higher throughput.
A point that did not hold its load (requests cut, or a searched rate that missed its SLO:
`scenarios.load_shortfall`) is drawn and listed with the reason, but is never on a front or
anyone's best: its p99 is over the requests that completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infercmp.core.contract import Load
from infercmp.report.figures import add_log_toggle, base_layout, esc
from infercmp.report.runs import CombinationView, as_dict
from infercmp.workload.scenarios import items_per_s, load_shortfall


@dataclass
class LoadPoint:
    combo: CombinationView
    engine: str
    configuration: str  # engine/device/precision [options] @ shape: one curve of the chart
    load: str  # e.g. b8-c2-offline
    p50_ms: float
    p99_ms: float
    items_per_s: float
    pareto: bool = False
    shortfall: str | None = None  # why it did not hold its load (never a front or a best)

    def as_row(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "configuration": self.configuration,
            "load": self.load,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "items_per_s": self.items_per_s,
            "pareto": self.pareto,
            "shortfall": self.shortfall,
        }


def load_points(combos: list[CombinationView]) -> list[LoadPoint]:
    """Every measured combination that ran under a load flag, with its engine's front marked."""
    points = []
    for combo in combos:
        load = getattr(combo.result, "load", None)
        if combo.status != "ok" or not combo.latency or load is None:
            continue
        throughput = items_per_s(combo.latency, getattr(combo.result, "load_result", None))
        if throughput is None:
            continue
        variant = combo.result.variant  # the options the user asked for, as typed
        engine = f"{combo.engine}[{variant}]" if variant else combo.engine
        # One curve family per model and engine: points of two models never share a front.
        engine = f"{combo.result.model}: {engine}"
        points.append(
            LoadPoint(
                combo=combo,
                engine=engine,
                configuration=f"{combo.label} · {combo.result.shape_label}",
                load=Load.model_validate(load).label,
                p50_ms=combo.latency["p50_ms"],
                p99_ms=combo.latency["p99_ms"],
                items_per_s=throughput,
                shortfall=load_shortfall(load, as_dict(getattr(combo.result, "load_result", None))),
            )
        )
    for engine in {p.engine for p in points}:
        mark_pareto([p for p in points if p.engine == engine])
    return points


def mark_pareto(points: list[LoadPoint]) -> None:
    """Set `pareto` on the points no other point beats on both p99 and throughput."""
    best = -1.0
    held = [p for p in points if p.shortfall is None]
    for point in sorted(held, key=lambda p: (p.p99_ms, -p.items_per_s)):
        point.pareto = point.items_per_s > best
        best = max(best, point.items_per_s)


def best_within(points: list[LoadPoint], budget_ms: float | None) -> dict[str, dict[str, Any]]:
    """Per engine: the highest-throughput point whose p99 is within `budget_ms` (None: any),
    or why there is none."""
    best: dict[str, dict[str, Any]] = {}
    for engine in sorted({p.engine for p in points}):
        mine = [p for p in points if p.engine == engine]
        held = [p for p in mine if p.shortfall is None]
        fitting = [p for p in held if budget_ms is None or p.p99_ms <= budget_ms]
        if fitting:
            top = max(fitting, key=lambda p: p.items_per_s)
            best[engine] = {**top.as_row(), "budget_ms": budget_ms}
        elif held:
            fastest = min(held, key=lambda p: p.p99_ms)
            best[engine] = {
                "engine": engine,
                "budget_ms": budget_ms,
                "none": f"no point within p99 {budget_ms:g} ms (lowest p99 "
                f"{fastest.p99_ms:.3g} ms at {fastest.load})",
            }
        else:
            best[engine] = {
                "engine": engine,
                "budget_ms": budget_ms,
                "none": f"no point held its load ({mine[0].load}: {mine[0].shortfall})",
            }
    return best


def default_budget(combos: list[CombinationView]) -> float | None:
    """The server scenario's SLO when the runs searched a rate under one (the smallest)."""
    slos = [
        c.result.load["slo_ms"]
        for c in combos
        if getattr(c.result, "load", None) and c.result.load.get("slo_ms")
    ]
    return min(slos) if slos else None


def best_lines(points: list[LoadPoint], budget_ms: float | None) -> list[str]:
    """One sentence per engine naming its best configuration for the budget."""
    within = f"with p99 within {budget_ms:g} ms" if budget_ms is not None else "at any latency"
    lines = []
    for engine, best in best_within(points, budget_ms).items():
        if "none" in best:
            lines.append(f"{engine}: {best['none']}")
        else:
            lines.append(
                f"{engine}: best {within} is {best['configuration']} {best['load']}: "
                f"{best['items_per_s']:,.1f} items/s, p99 {best['p99_ms']:.3g} ms"
            )
    return lines


def markdown(points: list[LoadPoint], budget_ms: float | None) -> str:
    if not points:
        return ""
    lines = ["", "### throughput against latency", ""]
    lines += [f"- {line}" for line in best_lines(points, budget_ms)]
    lines += ["", "| engine | configuration | load | p50 ms | p99 ms | items/s | Pareto |"]
    lines.append("|---|---|---|---:|---:|---:|---|")
    for p in sorted(points, key=lambda p: (p.engine, p.p99_ms)):
        lines.append(
            f"| {p.engine} | {p.configuration} | {p.load} | {p.p50_ms:.4g} | {p.p99_ms:.4g} | "
            f"{p.items_per_s:,.1f} | "
            + ("did not hold its load" if p.shortfall else "yes" if p.pareto else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def figure(points: list[LoadPoint], engine: str, colors: dict[int, str]) -> dict:
    """Items/s against p99 for one engine: a trace per configuration, the front as a line."""
    mine = [p for p in points if p.engine == engine]
    data = []
    for configuration in dict.fromkeys(p.configuration for p in mine):
        members = sorted((p for p in mine if p.configuration == configuration), key=_x)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": esc(configuration),
                "x": [p.p99_ms for p in members],
                "y": [p.items_per_s for p in members],
                "text": [esc(p.load) for p in members],
                "marker": {
                    "size": [11 if p.pareto else 7 for p in members],
                    "color": colors.get(id(members[0].combo), "#475569"),
                    "line": {"width": [2 if p.pareto else 0 for p in members], "color": "#111"},
                },
                "hovertemplate": "%{text}<br>p99 %{x:.3f} ms<br>%{y:,.1f} items/s<extra>"
                + esc(configuration)
                + "</extra>",
            }
        )
    front = sorted((p for p in mine if p.pareto), key=_x)
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Pareto front",
            "x": [p.p99_ms for p in front],
            "y": [p.items_per_s for p in front],
            "line": {"color": "#111", "width": 1.5, "dash": "dot", "shape": "hv"},
            "hoverinfo": "skip",
        }
    )
    layout = base_layout(
        f"{engine}: throughput against p99 latency", "items per second", "p99 latency (ms)"
    )
    layout["xaxis"]["type"] = "log"
    add_log_toggle(layout, [p.items_per_s for p in mine])
    return {"data": data, "layout": layout}


def _x(point: LoadPoint) -> float:
    return point.p99_ms
