"""Synthetic run directories written through the real RunStore, for report and compare tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infercmp.core.contract import Load
from infercmp.core.stats import LatencyStats
from infercmp.store.ids import combo_id
from infercmp.store.run_store import RunStore
from infercmp.store.schema import CombinationResult, ProcessSummary

XSS = "</script><script>window.__pwned=1</script>"


@dataclass
class Combo:
    engine: str
    device: str = "cpu"
    precision: str = "fp32"
    shape: tuple[int, ...] = (224, 224, 3)
    median_ms: float = 10.0
    iterations: int = 300
    status: str = "ok"
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    outliers: int = 3
    parity_ok: bool = True
    # Worker processes measured (bench --repeat); each has its own level, drawn around
    # median_ms with a relative spread of process_spread (what separates real processes).
    processes: int = 1
    process_spread: float = 0.0
    background_cpus: float | None = None  # CPUs other processes used while it was measured
    # Each process's own median (instead of drawing them) and its CPU placement probes
    # (cpu_handoff_ns: before and after, infercmp.platform.placement).
    process_medians: list[float] | None = None
    handoff_ns: list[tuple[float, float]] | None = None
    # A load other than one request at a time (contract.Load / LoadResult, as dicts).
    load: dict[str, Any] | None = None
    load_result: dict[str, Any] | None = None


def environment(
    host: str, gpus: list[str], libraries: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "python": "3.11.2",
        "platform": "Linux-6.1-x86_64",
        "hostname": host,
        "cpu_model": "Synthetic CPU @ 2.0GHz",
        "cpu_logical_cores": 2,
        "cpu_physical_cores": 2,
        "ram_total_bytes": 24 * 1024**3,
        "libraries": libraries or {"torch": "2.14.1", "onnxruntime": "1.31.1", "plotly": "7.1.0"},
        "gpus": [
            {
                "name": name,
                "driver_version": "580.00",
                "compute_capability": "9.0",
                "sm_clock_mhz": 1980,
                "memory_clock_mhz": 3201,
                "memory_total_bytes": 141 * 1024**3,
            }
            for name in gpus
        ],
    }


def latencies_ns(rng: np.random.Generator, median_ms: float, n: int, outliers: int) -> np.ndarray:
    """Lognormal-ish latencies around `median_ms`, slow first iterations, a few big outliers."""
    ms = median_ms * rng.lognormal(0.0, 0.03, size=n)
    ms[: min(3, n)] *= 1.5
    if outliers and n > 10:
        ms[rng.choice(np.arange(5, n), size=outliers, replace=False)] *= 6.0
    return (ms * 1e6).astype(np.int64)


def sampler_rows(
    rng: np.random.Generator, gpu: bool, seconds: float, hz: float = 20.0
) -> list[dict]:
    rows = []
    t0 = 1_700_000_000.0
    n = max(8, int(seconds * hz))
    for i in range(n):
        t = i / hz
        frac = i / n
        phase = (
            "load"
            if frac < 0.2
            else "warmup"
            if frac < 0.3
            else "measure"
            if frac < 0.95
            else "parity"
        )
        row = {
            "t_s": t,
            "time": t0 + t,
            "phase": phase,
            "proc_rss_bytes": int((300 + 200 * min(frac * 5, 1) + rng.normal(0, 2)) * 2**20),
            "proc_cpu_pct": float(190 if phase == "measure" else 60 + rng.normal(0, 5)),
            "sys_cpu_pct": float(95 if phase == "measure" else 40),
            "sys_ram_used_bytes": int(8 * 2**30 + frac * 2**29),
        }
        if gpu:
            row.update(
                gpu_util_pct=float(80 if phase == "measure" else 5),
                gpu_mem_used_bytes=int(2 * 2**30),
                proc_gpu_mem_bytes=int(1.5 * 2**30),
                gpu_power_w=float(300 if phase == "measure" else 80),
                gpu_energy_mj=int(i * 15_000),
            )
        rows.append(row)
    return rows


def make_run(
    root: Path,
    combos: list[Combo],
    model: str = "tiny-cnn",
    host: str = "bench-host",
    gpus: list[str] | None = None,
    seed: int = 0,
    input_name: str = "image",
    status: str = "complete",
    libraries: dict[str, str] | None = None,
) -> Path:
    """Write a finished run with `combos` under `root`; returns its directory."""
    gpus = gpus or []
    rng = np.random.default_rng(seed)
    store = RunStore.create(
        root,
        model,
        {
            "argv": ["infercmp", "bench", model],
            "config": {"name": model},
            "settings": {"sample_hz": 20},
            "environment": environment(host, gpus, libraries),
        },
    )
    for combo in combos:
        label = "x".join(str(d) for d in combo.shape)
        variant = "-".join(f"{k}{v}" for k, v in sorted(combo.options.items())) or None
        load_label = Load.model_validate(combo.load).label if combo.load else ""
        cid = combo_id(combo.engine, combo.device, combo.precision, label, variant, load_label)
        ok = combo.status == "ok"
        latency = None
        if ok:
            levels = combo.process_medians or [combo.median_ms] * combo.processes
            if combo.process_spread:  # drawn only then, so single-process runs stay as they were
                spread = combo.process_spread * rng.standard_normal(combo.processes)
                levels = [m * (1 + d) for m, d in zip(levels, spread, strict=True)]
            walls = [latencies_ns(rng, m, combo.iterations, combo.outliers) for m in levels]
            latency = [{"wall.total": w} for w in walls]
            if combo.device == "cuda":
                for arrays, w in zip(latency, walls, strict=True):
                    arrays["device.total"] = (w * 0.9).astype(np.int64)
            wall = np.concatenate(walls)
        parity = None
        if ok:
            parity = {
                "ok": combo.parity_ok,
                "rtol": 1e-3,
                "atol": 1e-4,
                "outputs": [
                    {
                        "name": f"logits {XSS}" if XSS in model else "logits",
                        "shape": [1, 10],
                        "dtype": "float32",
                        "ref_shape": [1, 10],
                        "ref_dtype": "float32",
                        "max_abs": 2e-6 if combo.parity_ok else 0.5,
                        "max_rel": 1e-5 if combo.parity_ok else 0.9,
                        "cosine": 1.0 if combo.parity_ok else 0.7,
                        "ok": combo.parity_ok,
                    }
                ],
            }
        stats = LatencyStats.from_ns(wall).to_dict() if ok else None
        result = CombinationResult(
            combo_id=cid,
            model=model,
            engine=combo.engine,
            device=combo.device,
            precision=combo.precision,
            shape_label=label,
            example_shapes=[list(combo.shape)],
            runtime_shapes={input_name: [1, *combo.shape]},
            options=combo.options,
            status=combo.status,
            error=combo.error,
            iterations=combo.iterations * combo.processes if ok else 0,
            latency=stats,
            device_latency=None,
            peak_rss_bytes=600 * 2**20 if ok else None,
            peak_vram_bytes=int(1.5 * 2**30) if ok and combo.device == "cuda" else None,
            energy_j_per_inference=0.5 if ok and gpus else None,
            load_seconds=1.2,
            parity=parity,
            warnings=["coefficient of variation 12% is above 5%"] if combo.outliers > 3 else [],
            background_cpus=combo.background_cpus,
            load=combo.load,
            load_result=combo.load_result,
            processes=[
                ProcessSummary(
                    process=i,
                    iterations=combo.iterations,
                    p50_ms=levels[i],
                    measure_seconds=1.0,
                    cpu_handoff_ns=list(probes),
                )
                for i, probes in enumerate(combo.handoff_ns or [])
            ]
            if ok
            else [],
        )
        samples = sampler_rows(rng, bool(gpus), seconds=3.0) if ok else None
        store.add_result(result, latency, samples)
    store.finish(status)
    return store.path


def run_dirs(root: Path) -> list[Path]:
    """The run directories under `root` (a bench's --out), oldest first."""
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def only_run(root: Path) -> Path:
    """The one run directory a bench wrote under `root`."""
    (run,) = run_dirs(root)
    return run


def only_store(root: Path) -> RunStore:
    """The one run a bench wrote under `root`, opened."""
    return RunStore.open(only_run(root))


def run_main(capsys, *args: str) -> tuple[int, str]:
    """Run the console script's `main()` on `args`: its exit code and what it wrote on stderr."""
    import sys

    import pytest

    from infercmp.cli import main

    old = sys.argv
    sys.argv = ["infercmp", *args]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = old
    return exc.value.code, capsys.readouterr().err


def edit_run_json(run: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change run.json in place, as a hand edit (or a killed bench) would leave it."""
    info = json.loads((run / "run.json").read_text())
    edit(info)
    (run / "run.json").write_text(json.dumps(info))


def edit_results(run: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change each committed combination of `run` in place, as a hand edit of results.jsonl."""
    log = run / "results.jsonl"
    items = [json.loads(line) for line in log.read_text().splitlines()]
    for item in items:
        edit(item)
    log.write_text("".join(json.dumps(item) + "\n" for item in items))


def cpu_run(root: Path, slowdown: float = 1.0, seed: int = 0, **kwargs) -> Path:
    """PyTorch and ONNX Runtime on CPU at two shapes, TensorRT skipped; `slowdown` scales ORT."""
    combos = [
        Combo("pytorch", median_ms=12.0),
        Combo("onnxruntime", median_ms=8.0 * slowdown),
        Combo("pytorch", shape=(320, 320, 3), median_ms=25.0),
        Combo("onnxruntime", shape=(320, 320, 3), median_ms=17.0 * slowdown),
        Combo(
            "tensorrt",
            device="cuda",
            status="skipped",
            error="no CUDA GPU is visible on this machine",
        ),
    ]
    return make_run(root, combos, seed=seed, **kwargs)


def server_combo(engine: str, median_ms: float, *, chose: float | None, cut: int = 0, p99=10.0):
    """A --qps auto (p99 <= 20 ms) server row: the rate its search chose, its window's cut."""
    requests = 100_000 - cut
    load = {"batch": None, "concurrency": 1, "scenario": "server", "qps": None, "slo_ms": 20.0}
    load_result = {
        "how": "one engine per slot", "batch": 4, "slots": 1, "requests": requests, "cut": cut,
        "window_s": 100.0, "requests_per_s": requests / 100.0,
        "items_per_s": 4 * requests / 100.0, "offered_qps": 1000.0, "p50_ms": median_ms,
        "p99_ms": p99, "best_qps": chose, "search_reason": "bracketed within 5%",
    }  # fmt: skip
    return Combo(engine, median_ms=median_ms, load=load, load_result=load_result)
