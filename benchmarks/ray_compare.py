"""Compare a matrix run with `--executor ray` against the same matrix run sequentially.

For issue 16 on the two-GPU H200 machine (benchmarks/gpu_ray.sh): the wall time of each run
(run.json started -> finished: the measuring, not the export before it), each combination's
median in both runs with the difference, and, from the Ray run's records and samples, where
each worker ran: its GPU (UUID, NVML index, CUDA_VISIBLE_DEVICES), the GPU index the NVML
sampler read while the worker held memory there, and the combinations that measured at the
same time on different GPUs.

    python benchmarks/ray_compare.py RAY_RUN LOCAL_RUN
"""

from __future__ import annotations

import datetime as dt
import sys
from itertools import combinations
from pathlib import Path

from infercmp.store.run_store import RunStore

LIMIT_PCT = 5.0  # issue 16: medians within 5% of the sequential run


def _seconds(store: RunStore) -> float | None:
    started, finished = store.meta.get("started"), store.meta.get("finished")
    if not started or not finished:
        return None
    delta = dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)
    return delta.total_seconds()


def _measure_windows(store: RunStore) -> dict[tuple[str, int], tuple[float, float, list[int]]]:
    """(combo_id, process) -> (first, last) wall-clock time of that worker process's
    measure-phase samples, and the NVML GPU indices read while it held GPU memory. Per process:
    with --repeat a combination's processes run one after another, maybe on different GPUs."""
    import polars as pl

    samples = store.samples()
    if samples.is_empty():
        return {}
    found = {}
    measuring = samples.filter(pl.col("phase") == "measure")
    for (cid, process), rows in measuring.group_by(["combo_id", "process"]):
        held = rows.filter(pl.col("proc_gpu_mem_bytes") > 0)
        gpus = sorted({int(g) for g in held["gpu_index"].drop_nulls().to_list()})
        found[(cid, int(process))] = (float(rows["time"].min()), float(rows["time"].max()), gpus)
    return found


def main(ray_dir: Path, local_dir: Path) -> int:
    ray_run, local_run = RunStore.open(ray_dir), RunStore.open(local_dir)
    ray_s, local_s = _seconds(ray_run), _seconds(local_run)
    print(f"ray run:   {ray_dir}  status {ray_run.status}")
    print(f"local run: {local_dir}  status {local_run.status}")

    local = {r.combo_id: r for r in local_run.results}
    windows = _measure_windows(ray_run)
    print()
    print(f"{'combination':52} {'GPU (ray)':>9} {'sampled':>7} {'uuid':>14}")
    for r in ray_run.results:
        node = r.node
        if r.status != "ok" or node is None:
            print(f"{r.combo_id:52} {r.status}: {r.error}")
            continue
        sampled = "/".join(
            ",".join(map(str, w[2])) or "n/a"
            for (cid, _), w in sorted(windows.items())
            if cid == r.combo_id
        )
        uuid = (node.gpu_uuid or "n/a")[-12:]
        where = f"{node.gpu_index} cvd={node.cuda_visible_devices}"
        print(f"{r.combo_id:52} {where:>9} {sampled:>7} {uuid:>14}  {node.hostname}")

    overlaps = []
    for (a, wa), (b, wb) in combinations(sorted(windows.items()), 2):
        if wa[0] < wb[1] and wb[0] < wa[1] and wa[2] and wb[2]:
            overlaps.append((a, b, wa[2] != wb[2]))
    print()
    print(
        f"worker processes whose measure windows overlapped: {len(overlaps)} pairs, "
        f"{sum(d for *_, d in overlaps)} of them on different GPUs, "
        f"{sum(not d for *_, d in overlaps)} on the same GPU"
    )

    print()
    print(f"{'combination':52} {'ray p50':>9} {'local p50':>9} {'diff %':>7}")
    worst = 0.0
    compared = 0
    for r in ray_run.results:
        other = local.get(r.combo_id)
        if r.latency is None or other is None or other.latency is None:
            print(f"{r.combo_id:52} {'n/a: not measured in both runs':>27}")
            continue
        a, b = r.latency["p50_ms"], other.latency["p50_ms"]
        diff = (a - b) / b * 100
        worst = max(worst, abs(diff))
        compared += 1
        flag = "" if abs(diff) <= LIMIT_PCT else f"  beyond {LIMIT_PCT:g}%"
        print(f"{r.combo_id:52} {a:9.4f} {b:9.4f} {diff:+7.2f}{flag}")
    print()
    wall = (
        f"wall time (run.json, measuring only): ray {ray_s:.1f} s, sequential {local_s:.1f} s"
        if ray_s and local_s
        else "wall time: n/a (a run has no finish time)"
    )
    if ray_s and local_s:
        wall += f", ratio {local_s / ray_s:.2f}x"
    print(wall)
    print(f"medians compared: {compared}; largest difference {worst:.2f}% (limit {LIMIT_PCT:g}%)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
