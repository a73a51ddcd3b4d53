"""Check infercmp's GPU numbers against independent reference loops timed in the same call.

Run on the GPU machine (benchmarks/gpu_suite.sh validate). For ResNet-50, batch 1, 224x224:
  1. reference loops written by hand: CUDA events around the PyTorch call, synchronized wall
     time around ONNX Runtime's CUDA EP with IO binding (inputs and outputs on the device);
  2. the same configurations through `infercmp bench --device-resident`;
  3. the sampler at 0, 20 and 100 Hz on one configuration;
  4. NVML's per-process VRAM against torch.cuda.max_memory_reserved for this process.
Prints one table per part and writes validate.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

ITERS, WARMUP = 300, 50


def torch_reference(precision: str, graph: bool) -> float:
    import torch
    import torchvision

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().cuda().to(dtype)
    x = torch.randn(1, 3, 224, 224, device="cuda", dtype=dtype)
    if graph:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
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
        times = []
        for _ in range(ITERS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def ort_reference(onnx_path: str, cuda_graph: bool) -> float:
    import onnxruntime as ort

    provider = (
        "CUDAExecutionProvider",
        {"cudnn_conv_algo_search": "EXHAUSTIVE", "enable_cuda_graph": "1" if cuda_graph else "0"},
    )
    session = ort.InferenceSession(onnx_path, providers=[provider])
    assert session.get_providers()[0] == "CUDAExecutionProvider", session.get_providers()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    out = session.get_outputs()[0]
    y_dev = ort.OrtValue.ortvalue_from_shape_and_type([1, 1000], np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x_dev)
    binding.bind_ortvalue_output(out.name, y_dev)
    for _ in range(WARMUP):
        session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    times = []
    for _ in range(ITERS):
        t0 = time.perf_counter_ns()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def nvml_process_bytes() -> int | None:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == os.getpid():
            return int(proc.usedGpuMemory or 0)
    return None


def bench(out: Path, name: str, engine: str, precision: str, *extra: str) -> dict:
    run_root = out / "validation-runs" / name
    cmd = [
        "infercmp",
        "bench",
        "resnet50",
        "-s",
        "224,224,3",
        "-d",
        "cuda",
        "-e",
        engine,
        "-p",
        precision,
        "--warmup",
        "50",
        *extra,
        "--out",
        str(run_root),
    ]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    run = sorted(run_root.iterdir())[-1]
    (result,) = json.loads((run / "summary.json").read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/infercmp-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from infercmp.build import ensure_converted_onnx
    from infercmp.cache import ArtifactCache, resolve_cache_dir
    from infercmp.export import export_onnx
    from infercmp.plugins import get_plugin

    cache = ArtifactCache(resolve_cache_dir(None))
    onnx = export_onnx(get_plugin("resnet50"), cache)
    onnx16 = str(ensure_converted_onnx(cache, onnx, "fp16"))

    import torch

    reference = {
        "pytorch fp32 eager": torch_reference("fp32", graph=False),
        "pytorch fp16 eager": torch_reference("fp16", graph=False),
        "pytorch fp32 channels_last+cuda_graph": torch_reference("fp32", graph=True),
        "pytorch fp16 channels_last+cuda_graph": torch_reference("fp16", graph=True),
        "onnxruntime fp32 exhaustive": ort_reference(str(onnx.path), cuda_graph=False),
        "onnxruntime fp16 exhaustive+cuda_graph": ort_reference(onnx16, cuda_graph=True),
    }
    vram = {
        "torch_max_memory_reserved": torch.cuda.max_memory_reserved(),
        "nvml_process_used": nvml_process_bytes(),
    }

    configs = {
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
        "onnxruntime fp16 exhaustive+cuda_graph": (
            "onnxruntime[enable_cuda_graph=true]",
            "fp16",
            "wall",
        ),
    }
    rows = []
    for i, (name, (engine, precision, clock)) in enumerate(configs.items()):
        result = bench(
            args.out, f"v{i}", engine, precision, "--device-resident", "--iters", str(ITERS)
        )
        stats = result.get("device_latency") if clock == "device" else result.get("latency")
        mine = stats["p50_ms"] if stats else None
        ref = reference[name]
        rows.append(
            {
                "config": name,
                "reference_ms": ref,
                "infercmp_ms": mine,
                "ratio": mine / ref if mine else None,
                "clock": clock,
                "status": result["status"],
                "error": result.get("error"),
                "peak_vram_bytes": result.get("peak_vram_bytes"),
            }
        )

    sampler = []
    for hz in ("0", "20", "100"):
        result = bench(
            args.out,
            f"hz{hz}-{len(sampler)}",
            "pytorch[channels_last=true,cuda_graph=true]",
            "fp16",
            "--iters",
            "3000",
            "--sample-hz",
            hz,
        )
        sampler.append({"hz": int(hz), "p50_ms": (result.get("latency") or {}).get("p50_ms")})

    print(f"\n{'configuration':42} {'reference ms':>12} {'infercmp ms':>12} {'ratio':>7}  clock")
    for r in rows:
        mine = f"{r['infercmp_ms']:.4f}" if r["infercmp_ms"] else r["status"]
        ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
        print(f"{r['config']:42} {r['reference_ms']:12.4f} {mine:>12} {ratio:>7}  {r['clock']}")
        if r["error"]:
            print(f"    error: {r['error'][:300]}")
    print("\nsampler perturbation (pytorch cuda_graph fp16, host-to-host, 3000 iters):")
    base = statistics.median([s["p50_ms"] for s in sampler if s["hz"] == 0 and s["p50_ms"]])
    for s in sampler:
        p50 = s["p50_ms"]
        print(
            f"  {s['hz']:>3} Hz  p50 {p50:.4f} ms  ratio to no sampler {p50 / base:.4f}"
            if p50
            else f"  {s['hz']:>3} Hz  failed"
        )
    print(
        f"\nVRAM of the reference process: torch max_memory_reserved "
        f"{vram['torch_max_memory_reserved'] / 2**20:.0f} MiB, NVML per-process "
        f"{(vram['nvml_process_used'] or 0) / 2**20:.0f} MiB (includes the CUDA context)"
    )
    (args.out / "validate.json").write_text(
        json.dumps({"reference_vs_infercmp": rows, "sampler": sampler, "vram": vram}, indent=2)
    )


if __name__ == "__main__":
    main()
