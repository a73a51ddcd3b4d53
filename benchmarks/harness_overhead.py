"""Measure the worker's timing overhead against a bare perf_counter_ns loop of the same calls.

Both loops run in this process, on one loaded engine, alternating for several rounds so that
drift in the machine affects them alike. Prints the per-iteration medians and their difference
in microseconds (the number the harness must keep under 1 us), and the whole-loop cost per
iteration, which also counts what the worker does between timed spans.

    python benchmarks/harness_overhead.py [--engine onnxruntime] [--device cpu] [--iters 5000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infercmp.engines import EngineSpec
from infercmp.engines.registry import engine_class
from infercmp.worker import timing
from infercmp.worker.run import load_reference

MODEL = "tiny-two-io"  # the smallest built-in model: the overhead is the largest share of it


def artifacts(engine: str) -> tuple[Path, Path | None]:
    from infercmp.artifacts.cache import ArtifactCache
    from infercmp.artifacts.onnx_export import default_experiment, export_onnx
    from infercmp.artifacts.reference import ensure_reference
    from infercmp.workload.plugins import get_plugin

    root = os.environ.get("INFERCMP_CACHE_DIR") or Path(tempfile.gettempdir()) / "infercmp-bench"
    cache = ArtifactCache(Path(root))
    plugin = get_plugin(MODEL)
    reference = ensure_reference(plugin, cache, default_experiment(plugin.config))
    onnx = export_onnx(plugin, cache).path if engine == "onnxruntime" else None
    return reference, onnx


def bare_loop(engine, n: int) -> tuple[np.ndarray, int]:
    """The same four calls between two clock readings, with nothing else around them."""
    copy_in, compute, copy_out, sync = (
        engine.copy_in,
        engine.compute,
        engine.copy_out,
        engine.synchronize,
    )
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    gc.disable()  # as the worker's loop does
    start = clock()
    for i in range(n):
        t0 = clock()
        copy_in()
        compute()
        copy_out()
        sync()
        t1 = clock()
        out[i] = t1 - t0
    end = clock()
    gc.enable()
    return out, end - start


def runtime_call(engine):
    """The runtime's own call for one inference, without infercmp's engine methods around it."""
    if engine.name == "onnxruntime":
        session, binding = engine._session, engine._binding
        return lambda: session.run_with_iobinding(binding)
    module, inputs, inference = engine._module, engine._inputs, engine._inference

    def call():
        with inference:
            module(*inputs)

    return call


def direct_loop(engine, n: int) -> tuple[np.ndarray, int]:
    """A bare loop around the runtime's call alone: the independent reference."""
    call = runtime_call(engine)
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    gc.disable()
    start = clock()
    for i in range(n):
        t0 = clock()
        call()
        t1 = clock()
        out[i] = t1 - t0
    end = clock()
    gc.enable()
    return out, end - start


def worker_loop(engine, n: int, events) -> tuple[np.ndarray, int]:
    start = time.perf_counter_ns()
    result = timing.measure(engine, timing.FixedIterations(n), events=events)
    return result.samples[timing.WALL_TOTAL], time.perf_counter_ns() - start


def measure_overhead(
    engine_name: str = "onnxruntime",
    device: str = "cpu",
    iters: int = 5000,
    rounds: int = 7,
    no_events: bool = False,
) -> dict[str, float]:
    """Per-iteration medians (us) of the three loops, interleaved round by round on one engine,
    and the paired overheads: the worker's loop minus each bare loop, median over rounds."""
    from infercmp.workload.plugins import get_plugin

    config = get_plugin(MODEL).config
    reference, onnx = artifacts(engine_name)
    inputs, _ = load_reference(reference)
    engine = engine_class(engine_name)()
    engine.load(
        EngineSpec(
            model=MODEL,
            device=device,
            precision="fp32",
            artifact=onnx,
            input_names=tuple(config.input_names),
            output_names=tuple(config.output_names),
        )
    )
    engine.prepare(inputs)
    events = None
    if device == "cuda" and not no_events and engine.stream is not None:
        events = timing.cuda_events(engine.stream, timing.EVENT_SLOTS, 4)
    timing.warm_up(engine, 500, 0.5, events=events)

    loops = {
        "direct": lambda: direct_loop(engine, iters) if events is None else None,
        "bare": lambda: bare_loop(engine, iters),
        "worker": lambda: worker_loop(engine, iters, events),
    }
    if events is not None:
        del loops["direct"]
    names = list(loops)
    rounds_out: list[dict[str, tuple[float, float]]] = []
    for r in range(rounds):
        got = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples, total = loops[name]()
            got[name] = (float(np.median(samples)) / 1e3, total / iters / 1e3)
        rounds_out.append(got)
    engine.release()
    result = {"rounds": rounds, "iters": iters, "events": events is not None}
    for name in names:
        result[f"{name}_us"] = statistics.median(g[name][0] for g in rounds_out)
        result[f"{name}_loop_us"] = statistics.median(g[name][1] for g in rounds_out)
    for name in names[:-1]:
        result[f"over_{name}_us"] = statistics.median(
            g["worker"][0] - g[name][0] for g in rounds_out
        )
        result[f"over_{name}_loop_us"] = statistics.median(
            g["worker"][1] - g[name][1] for g in rounds_out
        )
    return result


def run(iters: int = 20000, rounds: int = 9) -> list:
    from _perf import Row

    got = measure_overhead("onnxruntime", "cpu", iters, rounds)
    case = f"{MODEL}/onnxruntime"
    return [
        Row("overhead", f"{case} runtime call alone, p50", f"{got['direct_us']:.3f} us"),
        Row("overhead", f"{case} infercmp loop, p50", f"{got['worker_us']:.3f} us"),
        Row(
            "overhead",
            f"{case} infercmp - runtime call, per iteration",
            f"{got['over_direct_us']:+.3f} us",
            "< 1 us",
            got["over_direct_us"] < 1.0,
        ),
        Row(
            "overhead",
            f"{case} infercmp - same engine calls, per iteration",
            f"{got['over_bare_us']:+.3f} us",
            "< 1 us",
            got["over_bare_us"] < 1.0,
        ),
        Row(
            "overhead",
            f"{case} whole loop (between spans too), vs runtime call",
            f"{got['over_direct_loop_us']:+.3f} us",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "pytorch"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-events", action="store_true", help="CUDA: no CUDA events")
    args = parser.parse_args()
    got = measure_overhead(args.engine, args.device, args.iters, args.rounds, args.no_events)
    where = f"{args.engine}/{args.device}" + (" + CUDA events" if got["events"] else "")
    print(f"{MODEL} on {where}: {args.rounds} rounds x {args.iters} iterations (medians of rounds)")
    if "direct_us" in got:
        print(f"  per-iteration median, runtime call alone:  {got['direct_us']:9.3f} us")
    print(f"  per-iteration median, engine calls, bare:  {got['bare_us']:9.3f} us")
    print(f"  per-iteration median, worker loop:         {got['worker_us']:9.3f} us")
    if "direct_us" in got:
        print(f"  overhead vs the runtime call alone:        {got['over_direct_us']:+9.3f} us")
    print(f"  overhead vs the same engine calls:         {got['over_bare_us']:+9.3f} us")
    print(f"  whole loop per iteration, worker - bare:   {got['over_bare_loop_us']:+9.3f} us")


if __name__ == "__main__":
    main()
