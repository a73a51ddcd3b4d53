"""Scale: how `infercmp bench` wall time grows with shapes x engines, and what the cache holds.

Runs tiny-cnn on CPU with 1, 2 and 4 shapes x 1 and 2 engines (fixed `--iters 200`, warm-up
20 iterations, so the measurement itself is short and the fixed costs show), warm cache. Then
times the parent's prepare phase (plan + `prepare_artifacts`) twice in fresh processes against
a fresh cache: the second must be all cache hits (export, references) and import no torch.

    python benchmarks/scale.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perf import Row, bench_run, cache_dir, child_json, print_table

SHAPES = ["32,32,3", "48,48,3", "64,64,3", "96,96,3"]
ENGINES = [["onnxruntime"], ["onnxruntime", "pytorch"]]

PREPARE = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.artifacts.cache import ArtifactCache
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import parse_shape
plugin = get_plugin("tiny-cnn")
experiments = [parse_shape(s, plugin.config) for s in sys.argv[2].split(";")]
t1 = time.perf_counter()
plan = plan_bench(plugin, experiments, ["pytorch", "onnxruntime"], ["cpu"], None)
steps = []
artifacts = prepare_artifacts(plugin, plan, ArtifactCache(Path(sys.argv[1])), steps.append)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "prepare_s": t2 - t1, "onnx_cached": artifacts.onnx.cached,
                  "torch_imported": "torch" in sys.modules, "steps": len(steps)}))
"""


def run() -> list[Row]:
    rows = []
    cache = cache_dir()
    with tempfile.TemporaryDirectory(prefix="infercmp-scale-") as tmp:
        prime = ["--iters", "20"] + [arg for shape in SHAPES for arg in ("--shape", shape)]
        # Fills the cache (export, every shape's reference) so each run below is a warm one.
        bench_run("tiny-cnn", ["onnxruntime", "pytorch"], prime, cache, Path(tmp))
        base = None
        for engines in ENGINES:
            for n in (1, 2, 4):
                extra = ["--iters", "200", "--warmup", "20", "--sample-hz", "20"]
                for shape in SHAPES[:n]:
                    extra += ["--shape", shape]
                wall, store = bench_run("tiny-cnn", engines, extra, cache, Path(tmp))
                workers = sum(r.status == "ok" for r in store.results)
                base = base or wall
                rows.append(
                    Row(
                        "scale",
                        f"tiny-cnn {n} shape(s) x {len(engines)} engine(s) = {workers} workers",
                        f"{wall:.1f} s ({wall / base:.2f}x, {wall / workers:.2f} s/worker)",
                    )
                )
        fresh = str(Path(tmp) / "cache")
        shapes = ";".join(SHAPES)
        for label in ("cold", "warm"):
            got = child_json(PREPARE, fresh, shapes)
            rows.append(
                Row(
                    "scale",
                    f"prepare phase, 4 shapes x 2 engines, {label} cache",
                    f"{got['prepare_s']:.2f} s (+{got['import_s']:.2f} s imports); onnx "
                    f"{'hit' if got['onnx_cached'] else 'miss'}; torch "
                    f"{'imported' if got['torch_imported'] else 'not imported'}",
                    "warm: hits, no torch" if label == "warm" else "",
                    (got["onnx_cached"] and not got["torch_imported"]) if label == "warm" else None,
                )
            )
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print_table(run())


if __name__ == "__main__":
    main()
