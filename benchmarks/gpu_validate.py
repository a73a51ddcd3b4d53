"""Check infercmp's GPU numbers against independent reference loops timed in the same call.

Run on the GPU machine (`benchmarks/gpu_suite.sh validate`). ResNet-50, batch 1, 224x224:

  1. reference loops written by hand, the way an expert times them: CUDA events around the
     PyTorch call (eager, channels_last + CUDA graph, torch.compile max-autotune), synchronized
     wall time around ONNX Runtime's CUDA EP with IO binding (inputs and outputs on the device);
  2. the same configurations through `infercmp bench --device-resident`, each in its own worker;
     then, per engine, infercmp's best configuration against the best reference (issue 8: within
     5%), with the options that produced each;
  3. the sampler at 0, 20 and 100 Hz on one configuration (its median must move under 1%);
  4. NVML's per-process peak VRAM of each PyTorch worker against that worker's
     torch.cuda.max_memory_reserved.

Each part prints its table as soon as it is done and rewrites validate.json under --out, so a
call cut short by the device's time limit still returns what was measured. The slow part
(max-autotune compiles for minutes) runs last; its reference runs first so that infercmp's
compile of the same graph finds Inductor's caches warm, as a second compile on one machine would.
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
from typing import Any

import numpy as np

ITERS, WARMUP = 300, 50
SHAPE = "224,224,3"
STARTED = time.monotonic()

# name -> (engine, precision, clock) for `infercmp bench`; clock: which of its medians to compare.
INFERCMP = {
    "pytorch fp32 eager": ("pytorch", "fp32", "device"),
    "pytorch fp16 eager": ("pytorch", "fp16", "device"),
    "pytorch fp32 channels_last+cuda_graph": (
        "pytorch[channels_last=true,cuda_graph=true]",
        "fp32",
        "device",
    ),
    "pytorch fp16 channels_last+cuda_graph": (
        "pytorch[channels_last=true,cuda_graph=true]",
        "fp16",
        "device",
    ),
    "onnxruntime fp32 exhaustive": ("onnxruntime", "fp32", "wall"),
    "onnxruntime fp16 exhaustive": ("onnxruntime", "fp16", "wall"),
    "onnxruntime fp16 exhaustive+cuda_graph": (
        "onnxruntime[enable_cuda_graph=true]",
        "fp16",
        "wall",
    ),
}
COMPILED = {
    "pytorch fp16 compile max-autotune": ("pytorch[compile=max-autotune]", "fp16", "device"),
    # The same Inductor kernels under infercmp's own CUDA graph instead of cudagraph trees.
    "pytorch fp16 compile max-autotune-no-cudagraphs+cuda_graph": (
        "pytorch[compile=max-autotune-no-cudagraphs,cuda_graph=true]",
        "fp16",
        "device",
    ),
}


# -- reference loops (each runs in a fresh process: python gpu_validate.py --reference NAME) -----


def _resnet50(precision: str, channels_last: bool) -> tuple[Any, Any]:
    import torch
    import torchvision

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().cuda().to(dtype)
    x = torch.randn(1, 3, 224, 224, device="cuda", dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def _event_median(call: Any) -> float:
    import torch

    times = []
    for _ in range(ITERS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def torch_reference(precision: str, graph: bool, compile_mode: str | None = None) -> dict:
    import torch

    model, x = _resnet50(precision, channels_last=graph)
    compile_s = None
    with torch.inference_mode():
        if compile_mode is not None:
            started = time.perf_counter()
            model = torch.compile(model, mode=compile_mode)
            model(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - started
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP):
                model(x)
        torch.cuda.current_stream().wait_stream(stream)
        call = lambda: model(x)  # noqa: E731
        if graph:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                model(x)
            call = g.replay
        for _ in range(WARMUP):
            call()
        median = _event_median(call)
    return {"ms": median, "compile_s": compile_s}


def ort_reference(onnx_path: str, provider_options: dict) -> dict:
    import onnxruntime as ort

    providers = [("CUDAExecutionProvider", provider_options)]
    session = ort.InferenceSession(onnx_path, providers=providers)
    assert session.get_providers()[0] == "CUDAExecutionProvider", session.get_providers()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_dev = ort.OrtValue.ortvalue_from_shape_and_type([1, 1000], np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x_dev)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, y_dev)
    for _ in range(WARMUP):
        session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    nonzero = bool(np.any(y_dev.numpy() != 0))  # a graph writing elsewhere leaves zeros
    times = []
    for _ in range(ITERS):
        t0 = time.perf_counter_ns()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return {"ms": statistics.median(times), "outputs_nonzero": nonzero}


def run_reference(name: str, onnx32: str, onnx16: str) -> dict:
    exhaustive = {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    refs = {
        "pytorch fp32 eager": lambda: torch_reference("fp32", graph=False),
        "pytorch fp16 eager": lambda: torch_reference("fp16", graph=False),
        "pytorch fp32 channels_last+cuda_graph": lambda: torch_reference("fp32", graph=True),
        "pytorch fp16 channels_last+cuda_graph": lambda: torch_reference("fp16", graph=True),
        "pytorch fp16 compile max-autotune": lambda: torch_reference(
            "fp16", graph=False, compile_mode="max-autotune"
        ),
        "onnxruntime fp32 defaults": lambda: ort_reference(onnx32, {}),
        "onnxruntime fp32 exhaustive": lambda: ort_reference(onnx32, exhaustive),
        "onnxruntime fp16 exhaustive": lambda: ort_reference(onnx16, exhaustive),
        "onnxruntime fp16 exhaustive+cuda_graph": lambda: ort_reference(
            onnx16, {**exhaustive, "enable_cuda_graph": "1"}
        ),
    }
    return refs[name]()


# -- driving it -----------------------------------------------------------------------------------


def _left(deadline: float) -> float:
    return deadline - (time.monotonic() - STARTED)


def reference_in_subprocess(name: str, onnx32: str, onnx16: str, deadline: float) -> dict:
    timeout = max(_left(deadline) - 5, 1)
    cmd = [sys.executable, __file__, "--reference", name, "--onnx32", onnx32, "--onnx16", onnx16]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within the {timeout:.0f} s left"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def bench(out: Path, name: str, engine: str, precision: str, deadline: float, *extra: str) -> dict:
    run_root = out / "validation-runs" / name
    timeout = max(_left(deadline) - 5, 1)
    cmd = [
        "infercmp", "bench", "resnet50", "-s", SHAPE, "-d", "cuda", "-e", engine,
        "-p", precision, "--warmup", str(WARMUP), "--timeout", f"{timeout:.0f}",
        *extra, "--out", str(run_root),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": "infercmp bench did not finish in time"}
    from infercmp.core.errors import InfercmpError
    from infercmp.store.run_store import RunStore

    runs = sorted(run_root.iterdir()) if run_root.is_dir() else []
    try:
        (result,) = RunStore.open(runs[-1]).results if runs else ()
    except (InfercmpError, ValueError):
        return {"status": "missing", "error": "no run store with one result was written"}
    return result.model_dump(mode="json")


def compare(out: Path, configs: dict, refs: dict, deadline: float) -> list[dict]:
    rows = []
    for name, (engine, precision, clock) in configs.items():
        result = bench(
            out, name.replace(" ", "_"), engine, precision, deadline,
            "--device-resident", "--iters", str(ITERS),
        )  # fmt: skip
        stats = result.get("device_latency") if clock == "device" else result.get("latency")
        mine = stats["p50_ms"] if stats else None
        ref = refs.get(name, {}).get("ms")
        info = result.get("engine_info") or {}
        rows.append(
            {
                "config": name,
                "engine": engine,
                "options": result.get("options"),
                "reference_ms": ref,
                "infercmp_ms": mine,
                "ratio": mine / ref if mine and ref else None,
                "clock": clock,
                "status": result.get("status"),
                "error": result.get("error"),
                "parity_ok": (result.get("parity") or {}).get("ok"),
                "load_seconds": result.get("load_seconds"),
                "nvml_peak_vram_bytes": result.get("peak_vram_bytes"),
                "torch_max_memory_reserved_bytes": info.get("torch_max_memory_reserved_bytes"),
            }
        )
    return rows


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return format(value, spec) if value is not None else "-"


def print_rows(rows: list[dict]) -> None:
    print(f"\n{'configuration':42} {'reference ms':>12} {'infercmp ms':>12} {'ratio':>7}  clock")
    for r in rows:
        mine = _fmt(r["infercmp_ms"]) if r["infercmp_ms"] else str(r["status"])
        print(
            f"{r['config']:42} {_fmt(r['reference_ms']):>12} {mine:>12} "
            f"{_fmt(r['ratio'], '.3f'):>7}  {r['clock']}  parity={r['parity_ok']}"
        )
        if r["error"]:
            print(f"    error: {str(r['error'])[:300]}")


def best_of(rows: list[dict], refs: dict) -> list[dict]:
    """Per engine: infercmp's fastest configuration against the fastest reference."""
    verdicts = []
    for engine in ("pytorch", "onnxruntime"):
        mine = [r for r in rows if r["config"].startswith(engine) and r["infercmp_ms"]]
        theirs = {n: v["ms"] for n, v in refs.items() if n.startswith(engine) and v.get("ms")}
        if not mine or not theirs:
            continue
        best = min(mine, key=lambda r: r["infercmp_ms"])
        ref_name = min(theirs, key=theirs.get)
        verdicts.append(
            {
                "engine": engine,
                "infercmp_config": best["config"],
                "infercmp_options": best["options"],
                "infercmp_ms": best["infercmp_ms"],
                "reference_config": ref_name,
                "reference_ms": theirs[ref_name],
                "ratio": best["infercmp_ms"] / theirs[ref_name],
            }
        )
    for v in verdicts:
        print(
            f"  {v['engine']:12} infercmp best {v['infercmp_ms']:.4f} ms ({v['infercmp_config']})"
            f" vs reference best {v['reference_ms']:.4f} ms ({v['reference_config']}):"
            f" ratio {v['ratio']:.3f} {'within 5%' if v['ratio'] <= 1.05 else 'NOT within 5%'}"
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/infercmp-out"))
    parser.add_argument("--deadline", type=float, default=560.0, help="seconds for everything")
    parser.add_argument("--only-compile", action="store_true", help="part 5 alone")
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--onnx32", help=argparse.SUPPRESS)
    parser.add_argument("--onnx16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:  # child mode: one reference loop, one JSON line
        print(json.dumps(run_reference(args.reference, args.onnx32, args.onnx16)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.artifacts.onnx_precision import ensure_converted_onnx
    from infercmp.workload.plugins import get_plugin

    onnx32 = onnx16 = ""  # the compile part needs no ONNX file: skip the minute of export
    if not args.only_compile:
        cache = ArtifactCache(resolve_cache_dir(None))
        onnx = export_onnx(get_plugin("resnet50"), cache)
        onnx32, onnx16 = str(onnx.path), str(ensure_converted_onnx(cache, onnx, "fp16"))
    report: dict[str, Any] = {"iters": ITERS, "warmup": WARMUP, "shape": SHAPE}

    def save() -> None:
        (args.out / "validate.json").write_text(json.dumps(report, indent=2, default=str))

    rows: list[dict] = []
    refs: dict[str, dict] = {}
    if not args.only_compile:
        rows, refs = measure_plain(args, onnx32, onnx16, report, save)
    compile_part(args, onnx32, onnx16, report, save, rows, refs)


def measure_plain(args, onnx32, onnx16, report, save) -> tuple[list[dict], dict]:
    # 1. references, then 2. infercmp on the same configurations.
    names = [*INFERCMP, "onnxruntime fp32 defaults"]  # ORT's own defaults: a reference only
    refs = {n: reference_in_subprocess(n, onnx32, onnx16, args.deadline) for n in names}
    report["references"] = refs
    save()
    for n, v in refs.items():
        print(f"reference {n:42} {_fmt(v.get('ms'))} ms {v.get('error') or ''}")
    rows = compare(args.out, INFERCMP, refs, args.deadline)
    report["reference_vs_infercmp"] = rows
    save()
    print_rows(rows)

    # 3. sampler perturbation: the same configuration at 0, 20, 100 Hz, then 0 Hz again.
    sampler = []
    for i, hz in enumerate(("0", "20", "100", "0")):
        result = bench(
            args.out, f"hz{hz}-{i}", "pytorch[channels_last=true,cuda_graph=true]", "fp16",
            args.deadline, "--iters", "3000", "--sample-hz", hz,
        )  # fmt: skip
        sampler.append({"hz": int(hz), "p50_ms": (result.get("latency") or {}).get("p50_ms")})
    report["sampler"] = sampler
    save()
    base = [s["p50_ms"] for s in sampler if s["hz"] == 0 and s["p50_ms"]]
    print("\nsampler perturbation (pytorch channels_last+cuda_graph fp16, host to host):")
    for s in sampler:
        ratio = s["p50_ms"] / statistics.median(base) if s["p50_ms"] and base else None
        print(f"  {s['hz']:>3} Hz  p50 {_fmt(s['p50_ms'])} ms  ratio to no sampler {_fmt(ratio)}")

    # 4. VRAM: NVML's per-process peak against the worker's own allocator.
    print("\nVRAM of the PyTorch workers (NVML per-process peak, torch max_memory_reserved):")
    for r in rows:
        if r["torch_max_memory_reserved_bytes"]:
            nvml = (r["nvml_peak_vram_bytes"] or 0) / 2**20
            reserved = r["torch_max_memory_reserved_bytes"] / 2**20
            print(
                f"  {r['config']:42} NVML {nvml:7.0f} MiB  torch reserved {reserved:7.0f} MiB"
                f"  difference {nvml - reserved:6.0f} MiB"
            )
    return rows, refs


def compile_part(args, onnx32, onnx16, report, save, rows, refs) -> None:

    # 5. torch.compile(mode="max-autotune"): minutes of autotuning, so last.
    for name in ("pytorch fp16 compile max-autotune",):
        refs[name] = reference_in_subprocess(name, onnx32, onnx16, args.deadline)
        save()
        print(f"\nreference {name}: {refs[name]}")
    compiled = compare(args.out, COMPILED, refs, args.deadline)
    rows += compiled
    report["reference_vs_infercmp"] = rows
    save()
    print_rows(compiled)

    print("\nbest configuration per engine (issue 8: within 5% of the best reference):")
    report["best_of"] = best_of(rows, refs)
    report["elapsed_s"] = time.monotonic() - STARTED
    save()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
