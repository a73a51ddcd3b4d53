"""`infercmp bench --profile` for real on tiny-cnn (CPU): each engine whose descriptor declares
a profiler profiles in its first worker, and the stored profile names the model's own modules.

Each engine is skipped, saying why, until its runtime implements `Engine.profile` (its
descriptor's `profiler` is then set): the worker's profile phase and the engines' capture
land beside this attribution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infercmp.engines.registry import get_descriptor
from infercmp.run.profile import KINDS, row_label
from infercmp.store.run_store import RunStore

ENGINES = ("pytorch", "onnxruntime", "openvino")
INFERCMP = [sys.executable, "-c", "from infercmp.cli import main; main()"]
#: tiny-cnn is an nn.Sequential: its modules are "0" (Conv2d), "1" (ReLU), ... "6" (Linear).
MODULES = {str(n) for n in range(7)}


def _profiled() -> list[str]:
    return [e for e in ENGINES if get_descriptor(e).profiler is not None]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    engines = _profiled()
    if not engines:
        pytest.skip("no engine implements Engine.profile yet (descriptors declare no profiler)")
    out = tmp_path_factory.mktemp("profile")
    args = [a for e in engines for a in ("-e", e)]
    done = subprocess.run(
        [*INFERCMP, "bench", "tiny-cnn", *args, "-d", "cpu",
         "--iters", "20", "--warmup", "2", "--sample-hz", "0", "--profile",
         "--profile-iterations", "5", "-o", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "INFERCMP_CACHE_DIR": str(out / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return next(p for p in out.iterdir() if p.is_dir() and p.name != "cache")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_bench_profile_attributes_to_the_models_modules(run, engine):
    if get_descriptor(engine).profiler is None:
        pytest.skip(f"{engine} does not implement Engine.profile yet (its profiler is None)")
    (result,) = [r for r in RunStore.open(run).results if r.engine == engine]
    profile = result.profile
    assert result.status == "ok" and profile is not None and profile["error"] is None, profile
    assert profile["iterations"] == 5 and profile["profiled_wall_ms"] > 0
    assert profile["measured_median_ms"] == result.latency["p50_ms"]
    named = {row_label(r["modules"], 1) for r in profile["rows"] if r["modules"]}
    assert named & MODULES, profile["rows"]  # the convolutions' own modules, not only "no module"
    conv = [r for r in profile["rows"] if r["kind"] == "conv/matmul"]
    assert conv and all(r["kind"] in KINDS for r in profile["rows"])
    assert profile["unexplained_ms"] >= 0


@pytest.mark.slow
def test_the_json_report_carries_the_profiled_combinations(run):
    report = subprocess.run(
        [*INFERCMP, "report", str(run), "-f", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (table,) = json.loads(report.stdout)["profiles"]
    assert {c["label"].split(" ")[0] for c in table["combinations"]} == set(_profiled())
