"""A combination's accuracy as the report and compare read it (`bench --accuracy`; the stored
object is docs/results-format.md's "accuracy").

Its headline (`headline`): the config's primary task metric and its change against PyTorch fp32
on the same samples; without one, the share of samples whose top-1 class agrees with PyTorch
fp32's; without class outputs, the mean cosine similarity of the first output. A metric whose
values lie in [0, 1] (top-1, agreement, cosine) is shown in percent and its changes in points of
percent; any other in its own units. `compare --accuracy-threshold` is in those same units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infercmp.report.figures import base_layout, esc
from infercmp.report.runs import CombinationView, as_dict

#: Extra columns of the report's CSV and JSON rows, present only when a run measured accuracy
#: (a run without keeps its rows as they were).
ACCURACY_COLUMNS = [
    "accuracy_shown",  # the cell as the tables show it (`fmt_accuracy`)
    "accuracy_metric",
    "accuracy",
    "accuracy_reference",
    "accuracy_change",
    "accuracy_samples",
    "top1_agreement",
    "cosine_mean",
    "cosine_min",
    "max_abs_error",
    "p99_abs_error",
    "calibration",
    "accuracy_error",
]

#: compare's default --accuracy-threshold: a drop of more than one point fails.
DEFAULT_ACCURACY_THRESHOLD = 1.0
ACCURACY_REGRESSION = "accuracy regression"


@dataclass(frozen=True)
class Headline:
    """The figure a row shows: `metric` is a task metric's name, "agreement" or "cosine"."""

    metric: str
    value: float  # as shown: percent for a fraction
    change: float | None  # against PyTorch fp32, in the units shown (points for a percent)
    percent: bool
    better: str  # "max" or "min"

    def text(self) -> str:
        shown = f"{self.value:.1f}%" if self.percent else f"{self.value:.4g}"
        if self.metric == "agreement":
            shown = f"agree {shown}"
        elif self.metric == "cosine":
            shown = f"cos {self.value / 100:.5f}" if self.percent else f"cos {shown}"
        if self.change is None:
            return shown
        return f"{shown} ({self.change:+.1f})" if self.percent else f"{shown} ({self.change:+.3g})"

    def drop(self, other: Headline) -> float:
        """How much worse `other` is than this one, in the units shown (> 0: worse)."""
        worse = self.value - other.value
        return worse if self.better == "max" else -worse


def accuracy_of(combo_or_result: Any) -> dict[str, Any] | None:
    """The stored accuracy object of a combination (view or result), or None."""
    result = getattr(combo_or_result, "result", combo_or_result)
    return as_dict(getattr(result, "accuracy", None)) or None


def _fraction(*values: float | None) -> bool:
    return all(v is None or 0.0 <= v <= 1.0 for v in values)


def headline(accuracy: dict[str, Any] | None) -> Headline | None:
    """The figure shown for a stored accuracy object (the module says which), or None."""
    if not accuracy:
        return None
    primary = accuracy.get("primary")
    metrics = accuracy.get("metrics") or {}
    if primary and metrics.get(primary) is not None:
        value = metrics[primary]
        reference = (accuracy.get("reference_metrics") or {}).get(primary)
        change = (accuracy.get("change") or {}).get(primary)
        percent = _fraction(value, reference)
        scale = 100.0 if percent else 1.0
        return Headline(
            primary,
            value * scale,
            change * scale if change is not None else None,
            percent,
            accuracy.get("direction") or "max",
        )
    agreement = accuracy.get("top1_agreement")
    if agreement is not None:
        return Headline("agreement", agreement * 100, None, True, "max")
    outputs = accuracy.get("outputs") or []
    cosine = outputs[0].get("cosine_mean") if outputs else None
    if cosine is not None:
        return Headline("cosine", cosine * 100, None, True, "max")
    return None


def fmt_accuracy(accuracy: dict[str, Any] | None, dash: str = "–") -> str:
    """The accuracy cell: `97.8% (-0.2)`, `agree 99.6%`, `cos 0.99998`; int8 calibrated on
    random inputs is marked `(random calib.)`; a metric that raised reads `metric failed`."""
    if not accuracy:
        return dash
    if accuracy.get("error"):
        return "metric failed"
    shown = headline(accuracy)
    text = shown.text() if shown else dash
    if accuracy.get("calibration") == "random":
        text += " (random calib.)"
    return text


def accuracy_fields(combo: CombinationView) -> dict[str, Any]:
    """The ACCURACY_COLUMNS of one row (None where not measured)."""
    accuracy = accuracy_of(combo)
    if not accuracy:
        return dict.fromkeys(ACCURACY_COLUMNS)
    shown = headline(accuracy)
    primary = shown.metric if shown else None
    task = shown is not None and primary not in ("agreement", "cosine")
    first = (accuracy.get("outputs") or [{}])[0]
    outputs = accuracy.get("outputs") or []
    errors = [o.get("max_abs") for o in outputs if o.get("max_abs") is not None]
    return {
        "accuracy_shown": fmt_accuracy(accuracy),
        "accuracy_metric": primary,
        "accuracy": (accuracy.get("metrics") or {}).get(primary) if task else None,
        "accuracy_reference": (
            (accuracy.get("reference_metrics") or {}).get(primary) if task else None
        ),
        "accuracy_change": (accuracy.get("change") or {}).get(primary) if task else None,
        "accuracy_samples": accuracy.get("samples"),
        "top1_agreement": accuracy.get("top1_agreement"),
        "cosine_mean": first.get("cosine_mean"),
        "cosine_min": min(
            (o["cosine_min"] for o in outputs if o.get("cosine_min") is not None), default=None
        ),
        "max_abs_error": max(errors, default=None),
        "p99_abs_error": first.get("p99_abs"),
        "calibration": accuracy.get("calibration"),
        "accuracy_error": accuracy.get("error"),
    }


def any_accuracy(combos: list[CombinationView]) -> bool:
    """Whether some combination measured accuracy (the accuracy columns are then shown)."""
    return any(accuracy_of(c) for c in combos)


def accuracy_change(
    base: CombinationView, new: CombinationView, threshold: float
) -> tuple[dict[str, Any] | None, str | None]:
    """compare's accuracy verdict on a pair: the figures (None when a side has none) and, when
    new's headline dropped more than `threshold` (units shown) below base's, why it fails."""
    b, n = headline(accuracy_of(base)), headline(accuracy_of(new))
    if b is None or n is None or b.metric != n.metric:
        return None, None
    drop = b.drop(n)
    figures = {"metric": b.metric, "base": b.value, "new": n.value, "drop": drop}
    figures["unit"] = "points" if b.percent else "units"
    if drop <= threshold:
        return figures, None
    unit = " points" if b.percent else ""
    return figures, (
        f"accuracy dropped {drop:.2f}{unit} ({b.metric}: {b.text()} -> {n.text()}), more than "
        f"--accuracy-threshold {threshold:g}: a regression whatever the speed"
    )


# --- accuracy against latency -------------------------------------------------------------


@dataclass
class AccuracyPoint:
    """One measured combination on the accuracy-versus-latency chart."""

    combo: CombinationView
    model: str
    label: str
    p50_ms: float
    shown: Headline
    pareto: bool = False


def accuracy_points(combos: list[CombinationView]) -> list[AccuracyPoint]:
    """Every ok combination with a latency and an accuracy headline, its Pareto mark set per
    model and headline metric: no other point is both faster and at least as accurate."""
    points = []
    for combo in combos:
        shown = headline(accuracy_of(combo))
        p50 = (combo.latency or {}).get("p50_ms")
        if combo.status != "ok" or shown is None or not p50:
            continue
        points.append(AccuracyPoint(combo, combo.result.model, combo.label, p50, shown))
    for key in dict.fromkeys((p.model, p.shown.metric) for p in points):
        mark_front([p for p in points if (p.model, p.shown.metric) == key])
    return points


def _score(point: AccuracyPoint) -> float:
    """Higher is better, whatever the metric's direction."""
    return point.shown.value if point.shown.better == "max" else -point.shown.value


def mark_front(points: list[AccuracyPoint]) -> None:
    """Set `pareto` on the points that no other beats on latency without losing accuracy."""
    best = -float("inf")
    for point in sorted(points, key=lambda p: (p.p50_ms, -_score(p))):
        point.pareto = _score(point) > best
        best = max(best, _score(point))


def accuracy_figure(points: list[AccuracyPoint], model: str, colors: dict[int, str]) -> dict:
    """One model's accuracy (headline) against p50 latency, the Pareto front as a line."""
    mine = [p for p in points if p.model == model]
    metric = mine[0].shown.metric if mine else ""
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": esc(p.label),
            "x": [p.p50_ms],
            "y": [p.shown.value],
            "text": [esc(p.shown.text())],
            "marker": {
                "size": 12 if p.pareto else 8,
                "color": colors.get(id(p.combo), "#475569"),
                "line": {"width": 2 if p.pareto else 0, "color": "#111"},
            },
            "hovertemplate": "%{text}<br>p50 %{x:.4g} ms<extra>" + esc(p.label) + "</extra>",
        }
        for p in mine
    ]
    front = sorted((p for p in mine if p.pareto), key=lambda p: p.p50_ms)
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Pareto front",
            "x": [p.p50_ms for p in front],
            "y": [p.shown.value for p in front],
            "line": {"color": "#111", "width": 1.5, "dash": "dot", "shape": "hv"},
            "hoverinfo": "skip",
        }
    )
    unit = " (%)" if mine and mine[0].shown.percent else ""
    name = {"agreement": "top-1 agreement with PyTorch fp32", "cosine": "cosine to PyTorch fp32"}
    layout = base_layout(
        f"{model}: accuracy against latency", name.get(metric, metric) + unit, "p50 latency (ms)"
    )
    layout["xaxis"]["type"] = "log"
    layout["yaxis"]["rangemode"] = "normal"
    return {"data": data, "layout": layout}
