"""How much the parent-side sampler slows a CPU-bound worker: no sampler vs 20 Hz vs 100 Hz.

Each repeat spawns a fresh child that builds a small torch CNN and warms it up, then runs
blocks of `--iters` forward passes timed one by one with perf_counter_ns. Before each block
the parent picks the mode (no sampler, `default_samplers()` at 20 Hz or at 100 Hz, exactly as
`bench` samples a worker), rotating through the three, so every mode runs in the same process,
thread placement and machine state as the others (trial-to-trial differences between fresh
processes are larger than the effect measured). Prints, per mode, the median of all its
iterations, the paired ratio to the neighbouring no-sampler block (median and range), and the
sampling thread's own CPU time per reading.

    python benchmarks/sampler_perturbation.py [--repeats 5] [--blocks 4] [--iters 300] [--threads N]
    python benchmarks/sampler_perturbation.py --bench-path [--repeats 6]

`--bench-path` measures the real path instead: `infercmp.run.worker_process.run_worker`
(what `infercmp bench` runs per combination) with the sampler off, at 20 Hz and at 100 Hz,
rotating per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
iters = int(sys.argv[2])
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 64, 3, padding=1, stride=2), torch.nn.ReLU(),
    torch.nn.Conv2d(64, 64, 3, padding=1, stride=2), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
).eval()
x = torch.randn(1, 3, 96, 96)
with torch.inference_mode():
    for _ in range(50):
        model(x)
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        times = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            model(x)
            times.append(time.perf_counter_ns() - t0)
        print(json.dumps(times), flush=True)
"""

MODES = ("none", "20 Hz", "100 Hz")


def _repeat(repeat: int, blocks: int, threads: int, iters: int) -> list[dict]:
    """One child; `blocks` rounds of the three modes, in an order rotating with `repeat`."""
    from infercmp.sampler import SamplingSession, default_samplers

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(threads), str(iters)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = []
    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the child failed to start")
        for block in range(blocks):
            order = MODES[(repeat + block) % 3 :] + MODES[: (repeat + block) % 3]
            round_ = {}
            for mode in order:
                session = None
                if mode != "none":
                    samplers, _ = default_samplers()
                    hz = float(mode.split()[0])
                    session = SamplingSession(child.pid, samplers, hz=hz, phase="measure")
                    session.start()
                child.stdin.write("go\n")
                child.stdin.flush()
                times = json.loads(child.stdout.readline())
                if session is not None:
                    session.stop()
                round_[mode] = {
                    "times": times,
                    "rows": len(session.rows) if session else 0,
                    "cpu_s": session.thread_cpu_s if session else 0.0,
                    "seconds": sum(times) / 1e9,
                }
            out.append(round_)
    finally:
        child.stdin.close()
        child.kill()
        child.wait()
    return out


class _NoOp:
    """Reads nothing: what remains is the cost of waking the thread and making a row."""

    name = "no-op"

    def unavailable_reason(self):
        return None

    def open(self, pid):
        pass

    def read(self):
        return {}

    def close(self):
        pass


def _thread_cost(hz: float, seconds: float = 2.0) -> None:
    """CPU per reading of each sampler alone, on an idle child."""
    from infercmp.sampler import SamplingSession, default_samplers

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for sampler in [_NoOp(), *default_samplers()[0]]:
            with SamplingSession(child.pid, [sampler], hz=hz) as session:
                time.sleep(seconds)
            per = session.cpu_per_reading_s
            print(f"  {sampler.name:>8} at {hz:g} Hz: {per * 1e6:6.0f} us CPU per reading")
    finally:
        child.kill()
        child.wait()


def bench_path(
    model: str = "tiny-cnn",
    engine: str = "onnxruntime",
    rounds: int = 5,
    duration_s: float = 3.0,
) -> dict[str, list[float]]:
    """Medians (ms) through `infercmp.run.worker_process.run_worker`, the call `infercmp bench`
    makes per combination, with `default_samplers()` at 0 (off), 20 and 100 Hz; modes rotate per
    round."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from infercmp.artifacts.cache import ArtifactCache
    from infercmp.core.contract import Measurement
    from infercmp.run.plan import plan_bench
    from infercmp.run.prepare import prepare_artifacts
    from infercmp.run.worker_process import run_worker, worker_spec
    from infercmp.sampler import default_samplers
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _perf import cache_dir

    plugin = get_plugin(model)
    plan = plan_bench(plugin, [default_experiment(plugin.config)], [engine], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, ArtifactCache(cache_dir()), lambda m: None)
    measurement = Measurement(duration_s=duration_s)
    rates = {"none": 0.0, "20 Hz": 20.0, "100 Hz": 100.0}
    got: dict[str, list[float]] = {mode: [] for mode in rates}
    with tempfile.TemporaryDirectory(prefix="infercmp-perturb-") as tmp:
        for r in range(rounds):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                samplers, _ = default_samplers()
                workdir = Path(tmp) / f"{r}-{mode[:3]}"
                spec = worker_spec(plugin, plan.runnable[0], artifacts, measurement, workdir)
                outcome = run_worker(spec, 120.0, rates[mode], samplers)
                if outcome.status != "ok":
                    raise SystemExit(f"worker {mode}: {outcome.status}: {outcome.error}")
                got[mode].append(float(np.median(outcome.latency["wall.total"])) / 1e6)
            print(
                f"  {model}/{engine} round {r + 1}: "
                + ", ".join(f"{m} {got[m][-1]:.4f} ms" for m in MODES),
                flush=True,
            )
    return got


def run(rounds: int = 6, duration_s: float = 3.0) -> list:
    from _perf import Row, median, spread

    model, engine = "tiny-cnn", "onnxruntime"
    got = bench_path(model, engine, rounds, duration_s)
    rows = [Row("sampler", f"{model}/{engine} p50, no sampler", f"{median(got['none']):.4f} ms")]
    for mode in MODES[1:]:
        ratios = [a / b for a, b in zip(got[mode], got["none"])]
        rows.append(
            Row(
                "sampler",
                f"{model}/{engine} p50 at {mode} vs none ({median(got[mode]):.4f} ms)",
                spread(ratios),
                "< 1%",
                abs(median(ratios) - 1) < 0.01,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh child processes")
    parser.add_argument("--blocks", type=int, default=4, help="rounds of the 3 modes per child")
    parser.add_argument("--iters", type=int, default=300, help="timed iterations per block")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--bench-path",
        action="store_true",
        help="measure through infercmp.run.worker_process.run_worker (tiny-cnn on ONNX Runtime) "
        "instead",
    )
    args = parser.parse_args()
    if args.bench_path:
        from _perf import print_table

        print_table(run(args.repeats))
        return

    from infercmp.sampler import default_samplers

    samplers, messages = default_samplers()
    print(f"samplers: {[s.name for s in samplers]}; " + "; ".join(messages))
    print(
        f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), torch threads: "
        f"{args.threads}, {args.repeats} children x {args.blocks} rounds x {args.iters} iters"
    )
    print("sampling thread cost, each sampler alone, idle child:")
    _thread_cost(20.0)

    rounds = []
    for repeat in range(args.repeats):
        rounds += _repeat(repeat, args.blocks, args.threads, args.iters)
        last = rounds[-1]
        print(
            f"child {repeat + 1}/{args.repeats}, last round: "
            + ", ".join(f"{m} {statistics.median(last[m]['times']) / 1e6:.3f} ms" for m in MODES),
            flush=True,
        )

    base = statistics.median(t for r in rounds for t in r["none"]["times"]) / 1e6
    print()
    print(
        f"{'mode':>7} {'median ms':>10} {'ratio':>6} {'paired ratio (range)':>24} "
        f"{'rate Hz':>8} {'thread CPU/reading':>19} {'CPU share':>9}"
    )
    for mode in MODES:
        median = statistics.median(t for r in rounds for t in r[mode]["times"]) / 1e6
        paired = sorted(
            statistics.median(r[mode]["times"]) / statistics.median(r["none"]["times"])
            for r in rounds
        )
        rows = sum(r[mode]["rows"] for r in rounds)
        cpu = sum(r[mode]["cpu_s"] for r in rounds)
        seconds = sum(r[mode]["seconds"] for r in rounds)
        rate = f"{rows / seconds:8.1f}" if rows else f"{'-':>8}"
        per = f"{cpu / rows * 1e6:.0f} us" if rows else "-"
        share = f"{cpu / seconds:.1%}" if rows else "-"
        print(
            f"{mode:>7} {median:10.3f} {median / base:6.3f} "
            f"{statistics.median(paired):8.3f} ({paired[0]:.3f}-{paired[-1]:.3f}) "
            f"{rate} {per:>19} {share:>9}"
        )


if __name__ == "__main__":
    main()
