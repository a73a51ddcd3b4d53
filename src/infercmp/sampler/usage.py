"""Figures for the summary from sampler rows: peaks per phase and energy over the measure phase."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


def _values(rows: Sequence[dict[str, Any]], column: str, phases: Iterable[str] | None):
    wanted = None if phases is None else {phases} if isinstance(phases, str) else set(phases)
    for row in rows:
        if wanted is not None and row.get("phase") not in wanted:
            continue
        value = row.get(column)
        if value is not None:
            yield value


def peak(
    rows: Sequence[dict[str, Any]], column: str, phases: Iterable[str] | str | None = None
) -> float | int | None:
    """Largest value of `column` in rows of the given phases (all phases when None)."""
    return max(_values(rows, column, phases), default=None)


def energy_joules(rows: Sequence[dict[str, Any]], phase: str = "measure") -> float | None:
    """GPU energy spent during `phase`, in joules, from the NVML energy counter (millijoules).

    From the first reading of the phase to the first reading after it (the first row of the
    next phase; the last reading within the phase when none follows), so the window matches
    the phase to within one sampling period at each end. None when the phase has no energy
    reading (no NVML, or not supported). Divide by the iterations measured for J/inference.
    """
    edges = _counter_edges(rows, phase)
    return None if edges is None else (edges[1]["gpu_energy_mj"] - edges[0]["gpu_energy_mj"]) / 1000


def _counter_edges(
    rows: Sequence[dict[str, Any]], phase: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The rows whose energy readings bound `phase` (see `energy_joules`); None without one."""
    first = end = None
    inside = False
    for row in rows:
        has_reading = row.get("gpu_energy_mj") is not None
        if row.get("phase") == phase:
            inside = True
            if has_reading:
                first = row if first is None else first
                end = row
        elif inside and first is not None and has_reading:
            end = row  # the first reading after the phase: its closing edge
            break
    if first is None or end is None:  # `end` is set with `first`
        return None
    return first, end


#: NVML's energy counter advanced every 100 ms on the H200 (20 steps in 2 s under load): a
#: window needs this many steps before the counter's difference is a figure, not a rounding.
MIN_COUNTER_STEPS = 10
#: How often the counter advanced there: the difference of two readings is exact to about one
#: interval's energy at each end, so it is used when the readings span MIN_COUNTER_STEPS of them.
COUNTER_INTERVAL_S = 0.1
#: Readings a mean over the measure window rests on before it is shown (utilisation, power).
MIN_READINGS = 10


@dataclass(frozen=True)
class EnergyWindow:
    """Energy per inference over the measure windows, how it was obtained, or why not."""

    joules_per_inference: float | None
    method: str  # "energy counter", "integrated power", or "n/a: <why>"
    average_w: float | None = None
    warnings: tuple[str, ...] = ()


def _measure_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("phase") == "measure"]


def energy_window(
    processes: Sequence[tuple[Sequence[dict[str, Any]], float]],
    iterations: int,
    power_limit_w: float | None = None,
) -> EnergyWindow:
    """GPU energy per inference over every process's measure phase, checked for plausibility.

    `processes` holds each worker's sampler rows and its measure time in seconds. From NVML's
    energy counter when every window spans at least `MIN_COUNTER_STEPS` counter steps;
    otherwise from the power readings (their time-weighted mean times the window) when every
    window has at least `MIN_READINGS`; otherwise n/a with the reason. A figure whose average
    power is above the card's limit, not above zero, or below the lowest power the card drew in
    these processes (its idle floor) is rejected with a warning.
    """
    seconds = sum(window for _, window in processes)
    if iterations <= 0 or seconds <= 0:
        return EnergyWindow(None, "n/a: nothing was measured")
    windows = [(_measure_rows(rows), window) for rows, window in processes]
    if not any(
        r.get("gpu_energy_mj") is not None or r.get("gpu_power_w") is not None
        for rows, _ in windows
        for r in rows
    ):
        return EnergyWindow(None, "n/a: no GPU power readings (no NVML, or a CPU combination)")
    # The sampler reads the (costly) counter at phase edges and about once a second, so what
    # counts is the time its two readings around the window span, in counter intervals.
    steps = int(min(_counter_span(rows) for rows, _ in processes) / COUNTER_INTERVAL_S + 1e-9)
    power = [
        [(r["t_s"], r["gpu_power_w"]) for r in rows if r.get("gpu_power_w") is not None]
        for rows, _ in windows
    ]
    if steps >= MIN_COUNTER_STEPS:
        method = "energy counter"
        joules = sum(energy_joules(rows) or 0.0 for rows, _ in processes)
    elif min(len(p) for p in power) >= MIN_READINGS:
        method = "integrated power"
        joules = sum(_mean_power(p) * window for p, (_, window) in zip(power, windows))
    else:
        return EnergyWindow(
            None,
            f"n/a: a measure window of {seconds / len(processes):.2g} s spans {max(steps, 0)} "
            f"energy-counter steps and too few power readings (need {MIN_COUNTER_STEPS} steps "
            f"or {MIN_READINGS} readings); measure longer (--min-seconds, or a longer --duration "
            "or more --iters when they are set)",
        )
    average = joules / seconds
    why = f"energy over the measure window implies {average:,.0f} W on average"
    if power_limit_w is not None and average > power_limit_w * 1.05:
        why += f", above the card's limit of {power_limit_w:g} W"
    elif average <= 0:
        why += ", not above zero"
    else:
        # The lowest power drawn at any moment of these processes (loading, warm-up included)
        # is the card's floor for this run: a working average below it is a counting error.
        floor = min((w for rows, _ in processes for w in _column(rows, "gpu_power_w")), default=0)
        if average < floor * 0.9:
            why += f", below the lowest power the card drew in this run ({floor:,.0f} W)"
        else:
            return EnergyWindow(joules / iterations, method, average)
    return EnergyWindow(None, f"n/a: {why}", average, (f"{why}: not reported",))


def _counter_span(rows: Sequence[dict[str, Any]], phase: str = "measure") -> float:
    """Seconds between the energy readings `energy_joules` takes for `phase`; 0 without them."""
    edges = _counter_edges(rows, phase)
    return 0.0 if edges is None else edges[1]["t_s"] - edges[0]["t_s"]


def _column(rows: Sequence[dict[str, Any]], column: str) -> Iterator[float]:
    return (r[column] for r in rows if r.get(column) is not None)


def _mean_power(readings: Sequence[tuple[float, float]]) -> float:
    """Time-weighted mean of (t_s, watts) readings (trapezoids between them)."""
    span = readings[-1][0] - readings[0][0]
    if span <= 0:
        return sum(w for _, w in readings) / len(readings)
    area = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(readings, readings[1:]))
    return area / span


def mean_over_measure(
    processes: Sequence[Sequence[dict[str, Any]]], column: str
) -> tuple[float | None, int]:
    """(mean of `column` over the measure windows, readings it rests on); None when too few."""
    values = [r[column] for p in processes for r in _measure_rows(p) if r.get(column) is not None]
    if len(values) < MIN_READINGS:
        return None, len(values)
    return sum(values) / len(values), len(values)


#: Other processes' CPU use while measuring, in CPUs, above which a result is flagged. The
#: infercmp parent itself (sampler and progress display) is counted as "other" and uses a few
#: hundredths of a CPU; more than a quarter of a CPU means something else ran beside the worker.
BUSY_CPUS = 0.25


@dataclass(frozen=True)
class BackgroundLoad:
    """CPU used by everything but the worker during the measure windows, in CPUs."""

    cpus: float | None  # None: fewer than MIN_READINGS readings
    readings: int
    warning: str | None = None


def background_load(
    processes: Sequence[Sequence[dict[str, Any]]], cpu_count: int
) -> BackgroundLoad:
    """The whole machine's CPU use minus the worker's, averaged over the measure windows.

    A worker that shares the CPUs with other work is slowed by it by an amount no statistic
    over the worker's own iterations can see; on a 2-CPU machine, one busy neighbour doubled
    ONNX Runtime's latency (its spinning thread pool waits for a descheduled thread).
    """
    other = [
        r["sys_cpu_pct"] * cpu_count / 100 - r["proc_cpu_pct"] / 100
        for p in processes
        for r in _measure_rows(p)
        if r.get("sys_cpu_pct") is not None and r.get("proc_cpu_pct") is not None
    ]
    if len(other) < MIN_READINGS:
        return BackgroundLoad(None, len(other))
    cpus = max(0.0, sum(other) / len(other))
    warning = None
    if cpus > BUSY_CPUS:
        warning = (
            f"other processes kept {cpus:.2f} of {cpu_count} CPUs busy on average while "
            f"measuring ({len(other)} readings): latencies may be inflated; measure on an idle "
            "machine"
        )
    return BackgroundLoad(cpus, len(other), warning)
