"""Cold and cached export and build times for the built-in models and ResNet-50.

Run: python benchmarks/export_build.py [MODEL ...] [--precision fp32,fp16]

Each model is measured in fresh subprocesses against a fresh cache dir, so a "cached" figure
is what a new `infercmp export` / `build` pays on a hit (imports excluded, shown separately).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

DEFAULT_MODELS = ["tiny-cnn", "tiny-two-io", "tiny-encoder", "resnet50"]

_STEP = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.onnx_export import export_onnx
from infercmp.workload.plugins import get_plugin
cache = ArtifactCache(Path(sys.argv[1]))
plugin = get_plugin(sys.argv[2])
t1 = time.perf_counter()
onnx = export_onnx(plugin, cache)
row = {"import_s": t1 - t0, "export_s": onnx.seconds, "export_cached": onnx.cached,
       "exporter": onnx.exporter, "torch_imported_by_export": "torch" in sys.modules}
plans = {}
for precision in sys.argv[3].split(","):
    if not precision:
        continue
    from infercmp.engines.tensorrt.build import build_engine
    plan = build_engine(plugin, cache, onnx, precision=precision)
    plans[precision] = {"s": plan.seconds, "cached": plan.cached, "backend": plan.backend,
                        "mib": plan.path.stat().st_size / 2**20}
row["plans"] = plans
print(json.dumps(row))
"""


def _run(cache_dir: str, model: str, precisions: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _STEP, cache_dir, model, precisions],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{model}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--precision", default="fp32,fp16", help="comma list; '' skips builds")
    args = parser.parse_args()
    try:
        import importlib.util

        has_trt = any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx_bindings"))
    except ImportError:
        has_trt = False
    precisions = args.precision if has_trt else ""
    header = f"{'model':<14}{'run':<8}{'import s':>9}{'export s':>10}  {'exporter':<12}"
    header += "".join(f"{'build ' + p + ' s':>16}" for p in precisions.split(",") if p)
    print(header)
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="infercmp-bench-") as cache_dir:
            for run in ("cold", "cached"):
                row = _run(cache_dir, model, precisions)
                line = (
                    f"{model:<14}{run:<8}{row['import_s']:>9.2f}{row['export_s']:>10.3f}  "
                    f"{row['exporter']:<12}"
                )
                for plan in row["plans"].values():
                    hit = "hit" if plan["cached"] else f"{plan['mib']:.0f}MiB"
                    line += f"{plan['s']:>10.3f} {hit:>5}"
                if run == "cached":
                    line += f"  torch imported: {row['torch_imported_by_export']}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
