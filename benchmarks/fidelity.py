"""Fidelity: infercmp's stored median against independent measurements of the same engine call.

For each case (model x engine on CPU) and each round, in an order that rotates per round:
`infercmp bench` (the real CLI path, default sampler, `--iters N`, median read from the run
store), a bare perf_counter_ns loop around the runtime's own call in a fresh process, and a
third-party tool in a fresh process: `torch.utils.benchmark.Timer` for PyTorch (with the same
thread count; its default is 1) and Polygraphy's `OnnxrtRunner.last_inference_time()` for
ONNX Runtime. Every tool uses the same ONNX file (infercmp's cache) and the same input arrays
(infercmp's reference npz). Ratios are paired within a round, so slow drift in a shared
machine cancels.

    python benchmarks/fidelity.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perf import Row, bench_run, cache_dir, child_json, median, p50_ms, print_table, spread

# Inputs: the reference npz; outputs: one JSON line {"p50_ms": ...}. Warm-up: 1 s, as the CLI.
_LOAD_INPUTS = r"""
import json, sys, time
import numpy as np
ref, iters = sys.argv[1], int(sys.argv[2])
with np.load(ref) as d:
    inputs = [d[f"input_{i}"] for i in range(len(d.files)) if f"input_{i}" in d.files]
def warm(call):
    end = time.perf_counter() + 1.0
    n = 0
    while n < 10 or time.perf_counter() < end:
        call(); n += 1
"""

BARE_ORT = (
    _LOAD_INPUTS
    + r"""
import gc
import onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(sys.argv[3], so, providers=["CPUExecutionProvider"])
b = sess.io_binding()
for arg, a in zip(sess.get_inputs(), inputs):
    b.bind_cpu_input(arg.name, a)
outs = [np.empty(o.shape, np.float32) for o in sess.run(None, {
    arg.name: a for arg, a in zip(sess.get_inputs(), inputs)})]
for arg, o in zip(sess.get_outputs(), outs):
    b.bind_output(arg.name, "cpu", 0, o.dtype, o.shape, o.ctypes.data)
run = sess.run_with_iobinding
warm(lambda: run(b))
clock = time.perf_counter_ns
t = np.empty(iters, np.int64)
gc.disable()
for i in range(iters):
    t0 = clock(); run(b); t[i] = clock() - t0
print(json.dumps({"p50_ms": float(np.median(t)) / 1e6}))
"""
)

POLYGRAPHY_ORT = (
    _LOAD_INPUTS
    + r"""
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
runner = OnnxrtRunner(SessionFromOnnx(sys.argv[3], providers=["cpu"]))
with runner:
    names = [m for m in runner.get_input_metadata()]
    feed = dict(zip(names, inputs))
    warm(lambda: runner.infer(feed, check_inputs=False))
    t = []
    for _ in range(iters):
        runner.infer(feed, check_inputs=False)
        t.append(runner.last_inference_time())
print(json.dumps({"p50_ms": float(np.median(t)) * 1e3}))
"""
)

BARE_TORCH = (
    _LOAD_INPUTS
    + r"""
import gc
import torch
from infercmp.workload.plugins import get_plugin
m = get_plugin(sys.argv[3]).load_pytorch_module().eval()
xs = [torch.from_numpy(a) for a in inputs]
clock = time.perf_counter_ns
t = np.empty(iters, np.int64)
with torch.inference_mode():
    warm(lambda: m(*xs))
    gc.disable()
    for i in range(iters):
        t0 = clock(); m(*xs); t[i] = clock() - t0
print(json.dumps({"p50_ms": float(np.median(t)) / 1e6}))
"""
)

TIMER_TORCH = (
    _LOAD_INPUTS
    + r"""
import torch
from torch.utils.benchmark import Timer
from infercmp.workload.plugins import get_plugin
m = get_plugin(sys.argv[3]).load_pytorch_module().eval()
xs = [torch.from_numpy(a) for a in inputs]
with torch.inference_mode():
    warm(lambda: m(*xs))
timer = Timer(
    stmt="with torch.inference_mode(): m(*xs)",
    globals={"m": m, "xs": xs, "torch": torch},
    num_threads=torch.get_num_threads(),  # Timer's default is 1 thread
)
# One block per iteration where a call is slow; blocks of calls where it is fast.
per_call = timer.timeit(3).median
number = max(1, int(0.01 / per_call))
times = [timer.timeit(number).median for _ in range(max(1, iters // number))]
print(json.dumps({"p50_ms": float(np.median(times)) * 1e3, "number": number}))
"""
)

# model, engine, --shape (None: the config's default), iterations per measurement
CASES = [
    ("resnet50", "pytorch", "224,224,3", 40),
    ("resnet50", "onnxruntime", "224,224,3", 40),
    ("tiny-two-io", "onnxruntime", None, 5000),
    ("tiny-cnn", "pytorch", None, 2000),
]


def _artifacts(model: str, shape: str | None) -> tuple[Path, Path]:
    """(ONNX file, reference npz) from infercmp's own cache, created when missing."""
    from infercmp.artifacts.cache import ArtifactCache
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.artifacts.reference import ensure_reference
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment, parse_shape

    plugin = get_plugin(model)
    cache = ArtifactCache(cache_dir())
    experiment = parse_shape(shape, plugin.config) if shape else default_experiment(plugin.config)
    return export_onnx(plugin, cache).path, ensure_reference(plugin, cache, experiment)


def measure_case(
    model: str, engine: str, shape: str | None, iters: int, rounds: int, out: Path
) -> dict[str, list[float]]:
    onnx, reference = _artifacts(model, shape)
    cache = cache_dir()
    third = "Timer" if engine == "pytorch" else "Polygraphy"
    bare_code, third_code = (
        (BARE_TORCH, TIMER_TORCH) if engine == "pytorch" else (BARE_ORT, POLYGRAPHY_ORT)
    )
    arg = model if engine == "pytorch" else str(onnx)
    extra = ["--iters", str(iters), "--warmup", "1s"] + (["--shape", shape] if shape else [])

    def run_infercmp() -> float:
        _, store = bench_run(model, [engine], extra, cache, out)
        return p50_ms(store, engine)

    tools = {
        "infercmp": run_infercmp,
        "bare": lambda: child_json(bare_code, str(reference), str(iters), arg)["p50_ms"],
        third: lambda: child_json(third_code, str(reference), str(iters), arg)["p50_ms"],
    }
    names = list(tools)
    got: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            got[name].append(tools[name]())
        print(
            f"  {model}/{engine} round {r + 1}: "
            + ", ".join(f"{n} {got[n][-1]:.4f} ms" for n in names),
            flush=True,
        )
    return got


def run(rounds: int = 3, quick: bool = False, models: list[str] | None = None) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="infercmp-fidelity-") as tmp:
        for model, engine, shape, iters in CASES:
            if models and model not in models:
                continue
            if quick:
                iters = max(10, iters // 4)
            got = measure_case(model, engine, shape, iters, rounds, Path(tmp))
            ours = got["infercmp"]
            case = f"{model}/{engine}"
            rows.append(Row("fidelity", f"{case} infercmp p50", f"{median(ours):.4f} ms"))
            for name in list(got)[1:]:
                ratios = [a / b for a, b in zip(ours, got[name])]
                rows.append(
                    Row(
                        "fidelity",
                        f"{case} vs {name} ({median(got[name]):.4f} ms)",
                        spread(ratios),
                        "within 2%",
                        abs(median(ratios) - 1) <= 0.02,
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a quarter of the iterations")
    parser.add_argument("--model", action="append", help="only these models (repeatable)")
    args = parser.parse_args()
    print_table(run(args.rounds, args.quick, args.model))


if __name__ == "__main__":
    main()
