"""`--batch auto`: double the batch for each configuration until throughput gains less than
`MIN_GAIN`, memory runs out (recorded as that combination's `oom`, the run goes on), the
median latency passes `--latency-limit-ms`, or the config's largest batch is reached; then
name the best batch of each configuration.

Each step is an ordinary bench plan at one batch size, run into the same run directory, so
every point tried is a stored result (and a point of the report's throughput-latency chart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from infercmp.core.contract import Load
from infercmp.workload.scenarios import items_per_s

MIN_GAIN = 0.05  # a doubling that adds less than 5% items/s ends the search


@dataclass
class Curve:
    """One configuration being searched: its points so far and why it stopped."""

    label: str
    points: list[tuple[int, float | None, str]] = field(
        default_factory=list
    )  # batch, items/s, status
    stop: str | None = None

    min_gain: float = MIN_GAIN

    @property
    def best(self) -> tuple[int, float] | None:
        """The smallest batch within `min_gain` of the highest throughput measured: a larger
        one adds latency for less than that."""
        measured = [(b, t) for b, t, s in self.points if s == "ok" and t is not None]
        if not measured:
            return None
        top = max(t for _, t in measured)
        return min((p for p in measured if p[1] * (1 + self.min_gain) >= top), key=lambda p: p[0])

    def line(self) -> str:
        best = self.best
        found = f"best batch {best[0]} ({best[1]:,.1f} items/s)" if best else "no batch measured"
        return f"{self.label}: {found}; stopped: {self.stop or 'not finished'}"


def _curve_key(combo: Any) -> tuple:
    return (
        combo.experiment,
        combo.engine,
        combo.device,
        combo.precision,
        replace_batch(combo.load),
    )


def replace_batch(load: Load, batch: int | None = None) -> Load:
    return load.model_copy(update={"batch": batch})


def search_batches(
    plan: Any,
    batch_max: int,
    run_step: Callable[[Any], tuple[str, list[Any]]],
    latency_limit_ms: float | None = None,
    min_gain: float = MIN_GAIN,
) -> tuple[list[Curve], str]:
    """Run `plan` (its loads at batch 1) at batch 1, 2, 4, ... for the configurations still
    gaining. `run_step(plan)` runs one step's plan and returns (run status, its results).

    Returns each configuration's curve and the last step's run status ("interrupted" stops).
    """
    curves: dict[tuple, Curve] = {}
    active = {_curve_key(c): c for c in plan.runnable}
    for key, combo in active.items():
        load = replace_batch(combo.load)
        label = f"{combo.engine.label}/{combo.device}/{combo.precision} @ {combo.experiment.label}"
        curves[key] = Curve(label + (f" {load.label}" if load.label else ""), min_gain=min_gain)
    skipped = [c for c in plan.combinations if c.skip_reason is not None]
    if not active:  # nothing can run: the skipped combinations and why are the run's record
        status, _ = run_step(replace(plan, combinations=skipped))
        return [], status
    batch, status = 1, "complete"
    while active:
        combos = [replace(c, load=replace_batch(c.load, batch)) for c in active.values()]
        step = replace(plan, combinations=combos + (skipped if batch == 1 else []))
        status, results = run_step(step)
        by_key = {}
        for result in results:
            for key, combo in active.items():
                if _same(result, combo, batch):
                    by_key[key] = result
        still: dict[tuple, Any] = {}
        for key, combo in active.items():
            curve = curves[key]
            result = by_key.get(key)
            if result is None:
                curve.stop = curve.stop or "the run stopped before this batch"
                continue
            throughput = (
                items_per_s(result.latency, result.load_result) if result.status == "ok" else None
            )
            previous = curve.best
            curve.points.append((batch, throughput, result.status))
            p50 = (result.latency or {}).get("p50_ms")
            if result.status == "oom":
                curve.stop = f"out of memory at batch {batch}"
            elif result.status != "ok" or throughput is None:
                curve.stop = f"{result.status} at batch {batch}: {result.error}"
            elif latency_limit_ms is not None and p50 is not None and p50 > latency_limit_ms:
                curve.stop = f"median {p50:.3g} ms at batch {batch} passes {latency_limit_ms:g} ms"
                curve.points[-1] = (batch, throughput, "over the latency limit")
            elif previous is not None and throughput < previous[1] * (1 + min_gain):
                curve.stop = f"batch {batch} gains less than {min_gain:.0%} over {previous[0]}"
            elif batch * 2 > batch_max:
                curve.stop = f"batch {batch} is the config's largest"
            else:
                still[key] = combo
        if status != "complete":
            for key in still:
                curves[key].stop = f"run {status}"
            break
        active = still
        batch *= 2
    return list(curves.values()), status


def _same(result: Any, combo: Any, batch: int) -> bool:
    load = result.load or {}
    return (
        result.engine == combo.engine.name
        and result.variant == combo.engine.variant
        and result.device == combo.device
        and result.precision == combo.precision
        and result.shape_label == combo.experiment.label
        and load.get("batch") == batch
        and replace_batch(Load.model_validate(load)) == replace_batch(combo.load)
    )
