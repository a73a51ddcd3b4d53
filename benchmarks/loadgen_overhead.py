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
- engine: a real runtime behind the slots, ONNX Runtime on the CPU with a session per slot (one
  intra-op thread each) over a small MLP built here: closed loop with 1 and 2 slots, then
  `search_qps` on 1 slot with SLOs of 10 and 50 times its median service time (once each, every
  point printed), to check the search against the closed-loop capacity and `search_generator_limit`.

    python benchmarks/loadgen_overhead.py [--rounds 5] [--seconds 1.0]   # about 2 minutes
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

from infercmp.worker import loadgen
from infercmp.worker.loadgen import loops

SERVICE_S = 0.0005
SLO_FACTORS = (10, 50)  # the engine section's SLOs, in median service times


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
    saved = loops.SPIN_NS
    try:
        for r in range(rounds):
            for spin, qps in rotated(variants, r):
                loops.SPIN_NS = spin
                got[spin, qps].append(open_loop_figures([releasing_slot] * 4, qps, seconds))
    finally:
        loops.SPIN_NS = saved
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


def mlp_session_factory(width: int = 1024, layers: int = 8) -> Callable[[], Callable[[], None]]:
    """A factory of slots: each an ONNX Runtime CPU session (1 intra-op thread) of one MLP."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]  # fmt: skip
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, width])], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = model.SerializeToString()
    feed = {"x": np.ones((1, width), dtype=np.float32)}

    def make_slot() -> Callable[[], None]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        run = session.run
        return lambda: run(None, feed)

    return make_slot


def search_rows(
    slots: list[Callable[[], None]], slo_ms: float, capacity: float,
    generator: loadgen.GeneratorCapacity, seconds: float,
) -> list[Row]:  # fmt: skip
    search = loadgen.search_qps(
        lambda qps: loadgen.open_loop(slots, qps=qps, seconds=3 * seconds),
        slo_ms=slo_ms, start_qps=capacity / 4,
    )  # fmt: skip
    rows = []
    for p in search.points:
        rows.append(
            Row("engine", f"  SLO {slo_ms:.1f} ms: {p.qps:,.0f}/s asked",
                f"offered {p.offered_qps:,.0f}/s, done {p.achieved_qps:,.0f}/s, "
                f"p99 {p.percentile_ms:.2f} ms, lateness p99 {p.lateness_p99_ms:.2f} ms, "
                f"{p.cut} cut", met=p.ok)
        )  # fmt: skip
    best = search.best
    if best is None:
        value = f"none: {search.reason}"
    else:
        note = loadgen.search_generator_limit(search, generator)
        value = (f"{best.offered_qps:,.0f}/s = {best.offered_qps / capacity:.0%} of the closed "
                 f"loop's {capacity:,.0f}/s; {search.reason}"
                 + (f"; flagged: {note}" if note else ""))  # fmt: skip
    rows.append(
        Row("engine", f"ORT MLP 1 slot: highest rate with p99 <= {slo_ms:.1f} ms", value,
            target="< closed-loop rate", met=best is not None and best.offered_qps < capacity)
    )  # fmt: skip
    return rows


def engine_section(rounds: int, seconds: float) -> list[Row]:
    try:
        make_slot = mlp_session_factory()
    except ImportError as exc:
        return [Row("engine", "ONNX Runtime MLP", f"n/a: {exc}")]
    slots = [make_slot(), make_slot()]
    got: dict[int, list[loadgen.RequestLog]] = {1: [], 2: []}
    for r in range(rounds):
        for n in rotated([1, 2], r):
            got[n].append(loadgen.closed_loop(
                slots[:n], min_requests=100, min_seconds=3 * seconds, max_seconds=30.0,
                warmup_seconds=0.5,
            ))  # fmt: skip
    rows = []
    for n in (1, 2):
        runs = got[n]
        rows.append(
            Row("engine", f"ORT MLP closed loop, {n} slot(s): requests/s, service p50",
                f"{summary([g.requests_per_s() for g in runs], '{:,.0f}')} /s, "
                f"{summary([float(np.median(g.service_ms())) for g in runs], '{:.2f}')} ms")
        )  # fmt: skip
    capacity = statistics.median(g.requests_per_s() for g in got[1])
    service_ms = statistics.median(float(np.median(g.service_ms())) for g in got[1])
    generator = loadgen.generator_capacity(seconds=seconds)
    for factor in SLO_FACTORS:
        rows += search_rows(slots[:1], factor * service_ms, capacity, generator, seconds)
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
    rows += engine_section(max(2, args.rounds // 2), args.seconds)
    print_table(rows, title)
    print(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
