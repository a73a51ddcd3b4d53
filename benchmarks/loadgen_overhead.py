"""Load generator overhead (issue 15): its ceiling, per-request cost and issue lateness.

Three sections, each interleaving its variants round by round (the order rotates), figures
given as the median over the rounds and, in brackets, their range:

- capacity: `loadgen.generator_capacity` with 1 and 4 no-op slots: closed-loop requests/s and
  the generator's gap between two requests, the open loop's flat-out issue rate, and its
  lateness (actual minus scheduled issue) at a rate it sustains.
- dispatcher wait: lateness of the open loop when the dispatcher only sleeps until an arrival,
  against sleeping then yield-spinning (time.sleep(0)) the last 100 or 200 us, with 4 slots that
  release the GIL as an engine does (a 0.5 ms sleep), and the process CPU time it costs.
- GIL: the same open loop with one slot that holds the GIL for 0.5 ms (pure Python) against one
  that releases it, to show what a slot doing Python work does to the generator's timing.

    python benchmarks/loadgen_overhead.py [--rounds 5] [--seconds 1.0]   # about 1 minute
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perf import Row, machine, print_table, today

from infercmp import loadgen

SERVICE_S = 0.0005


def releasing_slot() -> None:
    time.sleep(SERVICE_S)  # releases the GIL, as torch / onnxruntime / openvino compute does


def holding_slot() -> None:
    end = time.perf_counter() + SERVICE_S
    while time.perf_counter() < end:  # pure Python: keeps the GIL but for forced switches
        pass


def summary(values: list[float], fmt: str = "{:.1f}") -> str:
    """`median (min..max)` over the rounds."""
    mid, low, high = (fmt.format(f(values)) for f in (statistics.median, min, max))
    return f"{mid} ({low}..{high})"


def rotated(variants: list, round_index: int) -> list:
    shift = round_index % len(variants)
    return variants[shift:] + variants[:shift]


def open_loop_figures(slots: list[Callable[[], None]], qps: float, seconds: float) -> dict:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    log = loadgen.open_loop(slots, qps=qps, seconds=seconds)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    lateness = log.lateness_ms() * 1e3
    return {
        "p50": float(np.percentile(lateness, 50)),
        "p99": float(np.percentile(lateness, 99)),
        "cpu": cpu * 100,
        "cut": log.cut,
    }


def capacity_section(rounds: int, seconds: float) -> list[Row]:
    configs = [1, 4]
    runs: dict[int, list[loadgen.GeneratorCapacity]] = {n: [] for n in configs}
    for r in range(rounds):
        for slots in rotated(configs, r):
            runs[slots].append(loadgen.generator_capacity(seconds=seconds, slots=slots))
    rows = []
    for slots in configs:
        got = runs[slots]

        def pick(key: str, got: list[loadgen.GeneratorCapacity] = got) -> list[float]:
            return [float(c[key]) for c in got]  # type: ignore[literal-required]

        name = f"{slots} no-op slot{'s' if slots > 1 else ''}"
        rate = statistics.median(pick("open_loop_qps"))
        rows += [
            Row("capacity", f"closed loop, {name}: requests/s",
                summary(pick("closed_loop_requests_per_s"), "{:,.0f}")),
            Row("capacity", f"closed loop, {name}: generator cost per request",
                summary(pick("closed_loop_cost_us"), "{:.2f}") + " us"),
            Row("capacity", f"closed loop, {name}: generator gap between requests, p50",
                summary(pick("closed_loop_overhead_us"), "{:.2f}") + " us"),
            Row("capacity", f"open loop, {name}: flat-out issue rate",
                summary(pick("open_loop_max_qps"), "{:,.0f}") + " /s"),
            Row("capacity", f"open loop, {name}: lateness p50 at {rate:,.0f}/s",
                summary(pick("lateness_p50_us")) + " us"),
            Row("capacity", f"open loop, {name}: lateness p99 at {rate:,.0f}/s",
                summary(pick("lateness_p99_us")) + " us"),
        ]  # fmt: skip
    return rows


def wait_section(rounds: int, seconds: float) -> list[Row]:
    spins = [0, 100_000, 200_000]
    rates = [1000.0, 5000.0]
    variants = [(spin, qps) for qps in rates for spin in spins]
    got: dict[tuple[int, float], list[dict]] = {v: [] for v in variants}
    saved = loadgen.SPIN_NS
    try:
        for r in range(rounds):
            for spin, qps in rotated(variants, r):
                loadgen.SPIN_NS = spin
                got[spin, qps].append(open_loop_figures([releasing_slot] * 4, qps, seconds))
    finally:
        loadgen.SPIN_NS = saved
    rows = []
    for spin, qps in variants:
        how = "sleep only" if spin == 0 else f"sleep + yield-spin last {spin // 1000} us"
        runs = got[spin, qps]
        rows.append(
            Row("dispatcher wait", f"{how}, {qps:,.0f}/s, 4 slots: lateness p50 / p99, CPU",
                f"{summary([g['p50'] for g in runs])} / {summary([g['p99'] for g in runs])} us, "
                f"{summary([g['cpu'] for g in runs], '{:.0f}')}%")
        )  # fmt: skip
    return rows


def gil_section(rounds: int, seconds: float) -> list[Row]:
    variants = [("releases the GIL", releasing_slot), ("holds the GIL", holding_slot)]
    got: dict[str, list[dict]] = {name: [] for name, _ in variants}
    qps = 0.5 / SERVICE_S  # half the slot's capacity
    for r in range(rounds):
        for name, slot in rotated(variants, r):
            got[name].append(open_loop_figures([slot], qps, seconds))
    rows = []
    for name, _ in variants:
        runs = got[name]
        rows.append(
            Row("GIL", f"1 slot of 0.5 ms that {name}, {qps:,.0f}/s: lateness p50 / p99",
                f"{summary([g['p50'] for g in runs])} / {summary([g['p99'] for g in runs])} us")
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each run")
    args = parser.parse_args()
    title = f"infercmp load generator overhead, {today()}\nmachine: {machine()}"
    rows = capacity_section(args.rounds, args.seconds)
    rows += wait_section(args.rounds, args.seconds)
    rows += gil_section(args.rounds, args.seconds)
    print_table(rows, title)
    print(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
