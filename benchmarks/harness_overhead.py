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
import tempfile
import time
from pathlib import Path

import numpy as np

from infercmp import timing
from infercmp.engines import EngineSpec, engine_class
from infercmp.worker import load_reference

MODEL = "tiny-two-io"  # the smallest built-in model: the overhead is the largest share of it


def artifacts(engine: str) -> tuple[Path, Path | None]:
    from infercmp.cache import ArtifactCache
    from infercmp.export import default_experiment, ensure_reference, export_onnx
    from infercmp.plugins import get_plugin

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


def worker_loop(engine, n: int, events) -> tuple[np.ndarray, int]:
    start = time.perf_counter_ns()
    result = timing.measure(engine, timing.FixedIterations(n), events=events)
    return result.samples[timing.WALL_TOTAL], time.perf_counter_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "pytorch"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-events", action="store_true", help="CUDA: no CUDA events")
    args = parser.parse_args()

    from infercmp.plugins import get_plugin

    config = get_plugin(MODEL).config
    reference, onnx = artifacts(args.engine)
    inputs, _ = load_reference(reference)
    engine = engine_class(args.engine)()
    engine.load(
        EngineSpec(
            model=MODEL,
            device=args.device,
            precision="fp32",
            artifact=onnx,
            input_names=tuple(config.input_names),
            output_names=tuple(config.output_names),
        )
    )
    engine.prepare(inputs)
    events = None
    if args.device == "cuda" and not args.no_events and engine.stream is not None:
        events = timing.cuda_events(engine.stream, timing.EVENT_SLOTS, 4)
    timing.warm_up(engine, 500, 0.5, events=events)

    rows = []
    for _ in range(args.rounds):
        bare, bare_total = bare_loop(engine, args.iters)
        worker, worker_total = worker_loop(engine, args.iters, events)
        rows.append(
            (
                np.median(bare) / 1e3,
                np.median(worker) / 1e3,
                bare_total / args.iters / 1e3,
                worker_total / args.iters / 1e3,
            )
        )
    engine.release()
    bare_med, worker_med, bare_loop_us, worker_loop_us = (
        statistics.median(col) for col in zip(*rows)
    )
    where = f"{args.engine}/{args.device}" + (" + CUDA events" if events else "")
    print(f"{MODEL} on {where}: {args.rounds} rounds x {args.iters} iterations (medians of rounds)")
    print(f"  per-iteration median, bare loop:   {bare_med:9.3f} us")
    print(f"  per-iteration median, worker loop: {worker_med:9.3f} us")
    print(f"  overhead inside the timed span:    {worker_med - bare_med:+9.3f} us")
    print(f"  whole loop per iteration, bare:    {bare_loop_us:9.3f} us")
    print(f"  whole loop per iteration, worker:  {worker_loop_us:9.3f} us")
    print(f"  overhead per iteration, all in:    {worker_loop_us - bare_loop_us:+9.3f} us")


if __name__ == "__main__":
    main()
