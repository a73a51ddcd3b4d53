"""Stored profiles for report tests: records as `infercmp.run.profile.profile_record` writes
them, added to the combinations of a synthetic run (tests/synthetic_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infercmp.store.schema import RESULTS_LOG


def record(
    rows: list[tuple[list[str], str, str, float]],
    wall: float,
    median: float,
    busy: float | None = None,
    hints: list[str] | None = None,
) -> dict[str, Any]:
    """A profile record from rows of (modules, kind, op_type, ms), its wall and median."""
    op_total = sum(r[3] for r in rows)
    unexplained = max(0.0, wall - op_total)
    return {
        "profiler": "synthetic",
        "iterations": 20,
        "measured_median_ms": median,
        "profiled_wall_ms": wall,
        "profiled_mean_ms": wall,
        "op_total_ms": op_total,
        "device_busy_ms": busy,
        "unexplained_ms": unexplained,
        "launch_gaps_ms": None if busy is None else min(unexplained, wall - busy),
        "closure": (op_total + unexplained) / median - 1,
        "rows": [
            {"modules": m, "kind": k, "op_type": t, "ms": ms, "calls": 20} for m, k, t, ms in rows
        ],
        "notes": [],
        "hints": hints or [],
        "error": None,
    }


def add_profiles(run_dir: Path, profiles: dict[str, dict[str, Any]]) -> Path:
    """Give each stored combination of `run_dir` whose engine is a key its profile."""
    log = run_dir / RESULTS_LOG
    lines = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("engine") in profiles:
            entry["profile"] = profiles[entry["engine"]]
        lines.append(json.dumps(entry))
    log.write_text("\n".join(lines) + "\n")
    return run_dir


#: A ResNet-like model on three engines: PyTorch by leaf module, ONNX Runtime with a fusion
#: across modules and its reorders, OpenVINO without a profiler.
RESNET_LIKE = {
    "pytorch": record(
        [
            (["conv1"], "conv/matmul", "aten::conv2d", 0.8),
            (["bn1"], "normalisation", "aten::batch_norm", 0.2),
            (["layer1.0.conv1"], "conv/matmul", "aten::conv2d", 2.0),
            (["layer1.0.bn1"], "normalisation", "aten::batch_norm", 0.4),
            ([""], "data movement", "aten::flatten", 0.05),
            (["fc"], "conv/matmul", "aten::addmm", 0.3),
        ],
        wall=4.2,
        median=4.0,
    ),
    "onnxruntime": record(
        [
            (["bn1", "relu"], "conv/matmul", "FusedConv", 0.5),
            (["layer1.0.conv1", "layer1.0.bn1"], "conv/matmul", "FusedConv", 1.1),
            ([], "data movement", "ReorderOutput", 0.4),
            (["fc"], "conv/matmul", "Gemm", 0.1),
        ],
        wall=2.3,
        median=2.2,
        hints=["21% of onnxruntime's op time is layout conversions and copies (ReorderOutput)"],
    ),
    "openvino": {"error": "n/a: openvino has no per-layer profiler"},
}
