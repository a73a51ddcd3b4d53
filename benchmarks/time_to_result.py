"""Time to result: the README's main command, cold and warm cache, and where the time goes.

Runs `infercmp bench resnet50 --shape 224,224,3` (every engine x device this machine has)
with a fresh cache (cold) and again with the cache it filled (warm). The warm run's share
outside the measurement loops is 1 - (warm-up + measured time) / wall time, with each
combination's warm-up and measure phase lengths taken from the phase edges the sampler
recorded (`samples.parquet`; the sampler wakes on each phase change). Then one fixed
`--iters 1000` run of ResNet-50 on ONNX Runtime: how many iterations the adaptive rule needed
for its CI target, against the CI half-width 1000 fixed iterations reach
(`infercmp.core.stats.relative_ci_half_width` on the stored samples).

    python benchmarks/time_to_result.py [--skip-cold] [--fixed-iters 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perf import Row, cache_dir, infercmp, print_table

README = ["bench", "resnet50", "--shape", "224,224,3"]
WARM_SHARE_TARGET = 0.15


def phase_seconds(store) -> dict[str, dict[str, float]]:
    """Per ok combination: seconds in warmup and measure, from the sampler's phase edges."""
    samples = store.samples()
    out = {}
    for result in store.results:
        if result.status != "ok":
            continue
        rows = samples.filter(samples["combo_id"] == result.combo_id)
        starts = {
            phase: float(rows.filter(rows["phase"] == phase)["time"].min())
            for phase in ("load", "warmup", "measure", "parity")
            if (rows["phase"] == phase).any()
        }
        out[result.engine] = {
            "warmup": starts["measure"] - starts["warmup"],
            "measure": starts["parity"] - starts["measure"],
            "load": result.load_seconds or 0.0,
            "iterations": result.iterations,
            "ci": (result.latency["ci_high_ms"] - result.latency["ci_low_ms"])
            / 2
            / result.latency["p50_ms"],
        }
    return out


def _run(cache: Path, out: Path, extra: list[str] = ()) -> tuple[float, object]:
    from infercmp.store.locate import latest_run
    from infercmp.store.run_store import RunStore

    wall, _ = infercmp([*README, "--out", str(out), *extra], cache)
    return wall, RunStore.open(latest_run(out))


def run(skip_cold: bool = False, fixed_iters: int = 1000) -> list[Row]:
    from infercmp.core.stats import relative_ci_half_width

    rows = []
    with tempfile.TemporaryDirectory(prefix="infercmp-ttr-") as tmp:
        out = Path(tmp) / "runs"
        if skip_cold:
            cache = cache_dir()
        else:
            cache = Path(tmp) / "cache"
            cold, _ = _run(cache, out)
            rows.append(Row("time to result", "README command, cold cache", f"{cold:.1f} s"))
        warm, store = _run(cache, out)
        phases = phase_seconds(store)
        inside = sum(p["warmup"] + p["measure"] for p in phases.values())
        measure = sum(p["measure"] for p in phases.values())
        share = 1 - inside / warm
        rows.append(Row("time to result", "README command, warm cache", f"{warm:.1f} s"))
        for engine, p in phases.items():
            rows.append(
                Row(
                    "time to result",
                    f"  {engine}: load / warm-up / measure",
                    f"{p['load']:.1f} / {p['warmup']:.1f} / {p['measure']:.1f} s, "
                    f"{p['iterations']} iters, CI ±{p['ci']:.1%}",
                )
            )
        rows.append(
            Row(
                "time to result",
                "warm: share outside warm-up + measure loops",
                f"{share:.1%} ({warm - inside:.1f} s)",
                f"< {WARM_SHARE_TARGET:.0%}",
                share < WARM_SHARE_TARGET,
            )
        )
        rows.append(
            Row(
                "time to result",
                "warm: share outside the measure loops only",
                f"{1 - measure / warm:.1%} ({warm - measure:.1f} s)",
            )
        )
        if fixed_iters and "onnxruntime" in phases:
            adaptive = phases["onnxruntime"]
            _, fixed = _run(
                cache,
                out,
                ["-e", "onnxruntime", "-d", "cpu", "--iters", str(fixed_iters)],
            )
            lat = fixed.latency()
            mask = (lat["clock"] == "wall") & (lat["phase"] == "total")
            wall = np.asarray(lat.filter(mask).sort("iteration")["ns"], dtype=np.int64)
            ci_fixed = relative_ci_half_width(wall)
            # The first n at which the fixed run's own samples reach the adaptive CI.
            reach = next(
                (
                    n
                    for n in range(30, len(wall) + 1, 10)
                    if relative_ci_half_width(wall[:n]) <= max(adaptive["ci"], ci_fixed)
                ),
                None,
            )
            rows.append(
                Row(
                    "time to result",
                    "ResNet-50 ORT: adaptive iterations, CI",
                    f"{adaptive['iterations']} iters, ±{adaptive['ci']:.2%}",
                )
            )
            rows.append(
                Row(
                    "time to result",
                    f"ResNet-50 ORT: fixed {fixed_iters}, CI",
                    f"{len(wall)} iters, ±{ci_fixed:.2%}; the same samples reach "
                    f"±{max(adaptive['ci'], ci_fixed):.2%} after {reach}",
                    "adaptive < fixed at the same CI",
                    adaptive["iterations"] < fixed_iters and adaptive["ci"] <= ci_fixed * 1.05,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="warm run only (shared cache)")
    parser.add_argument("--fixed-iters", type=int, default=1000, help="0: skip this run")
    args = parser.parse_args()
    print_table(run(args.skip_cold, args.fixed_iters))


if __name__ == "__main__":
    main()
