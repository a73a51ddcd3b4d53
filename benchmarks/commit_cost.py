"""What `RunStore.add_result` costs as a run grows: the commit must not grow with the run.

Each combination carries what a real one does: 2,000 iterations on two clocks and four phases
(the latency rows of a CUDA combination with events) and 600 sampler readings (30 s at 20 Hz).
The store commits combinations one after another; the script prints the median commit time
in each band of run size, so a commit that rewrote earlier data would show as a rising line.

    python benchmarks/commit_cost.py [--combinations 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from infercmp.core.stats import LatencyStats
from infercmp.store.ids import combo_id
from infercmp.store.run_store import RunStore
from infercmp.store.schema import CombinationResult


def _combination(index: int, rng: np.random.Generator):
    cid = combo_id("onnxruntime", "cuda", "fp16", f"{index}x224x3")
    wall = rng.integers(900_000, 1_100_000, size=2000)
    latency = {
        f"{clock}.{phase}": wall
        for clock in ("wall", "device")
        for phase in ("total", "h2d", "compute", "d2h")
    }
    samples = [
        {
            "t_s": i / 20,
            "time": 1.7e9 + i / 20,
            "phase": "measure",
            "proc_rss_bytes": 2**29,
            "proc_cpu_pct": 100.0,
            "sys_cpu_pct": 50.0,
            "gpu_util_pct": 90.0,
            "gpu_power_w": 300.0,
        }
        for i in range(600)
    ]
    result = CombinationResult(
        combo_id=cid,
        model="m",
        engine="onnxruntime",
        device="cuda",
        precision="fp16",
        shape_label=f"{index}x224x3",
        status="ok",
        iterations=2000,
        latency=LatencyStats.from_ns(wall).to_dict(),
    )
    return result, latency, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combinations", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="infercmp-commit-") as tmp:
        store = RunStore.create(Path(tmp), "m", {})
        times = []
        for index in range(args.combinations):
            result, latency, samples = _combination(index, rng)
            start = time.perf_counter()
            store.add_result(result, latency, samples)
            times.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())
    band = max(1, args.combinations // 5)
    print(
        f"commit cost of RunStore.add_result ({sys.platform}, {args.combinations} combinations,"
        f" {size / 2**20:.1f} MiB on disk at the end)"
    )
    print("combinations already in the run | median ms per commit | max ms")
    for start in range(0, args.combinations, band):
        chunk = times[start : start + band]
        print(
            f"{start:>6}-{start + len(chunk) - 1:<6} | {statistics.median(chunk) * 1e3:8.1f} | "
            f"{max(chunk) * 1e3:8.1f}"
        )


if __name__ == "__main__":
    main()
