"""`infercmp bench --profile` for real on tiny-cnn (CPU): every built-in CPU engine declares a
profiler and profiles in its first worker, and the stored profile names the model's own
modules; `infercmp profile` does the same for models of several inputs and outputs and dynamic
axes (tiny-two-io, tiny-encoder), with no change to their plugins.
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


def test_every_built_in_cpu_engine_declares_a_profiler():
    assert all(get_descriptor(e).profiler for e in ENGINES)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    engines = ENGINES
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
    (result,) = [r for r in RunStore.open(run).results if r.engine == engine]
    profile = result.profile
    assert result.status == "ok" and profile is not None and profile["error"] is None, profile
    assert profile["iterations"] == 5 and profile["profiled_wall_ms"] > 0
    assert profile["measured_median_ms"] == result.latency["p50_ms"]
    named = {row_label(r["modules"], 1) for r in profile["rows"] if r["modules"]}
    assert named & MODULES, profile["rows"]  # the convolutions' own modules, not only "no module"
    conv = [r for r in profile["rows"] if r["kind"] == "conv/matmul"]
    assert conv and all(r["kind"] in KINDS for r in profile["rows"])


@pytest.mark.slow
def test_the_json_report_carries_the_profiled_combinations(run):
    report = subprocess.run(
        [*INFERCMP, "report", str(run), "-f", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (table,) = json.loads(report.stdout)["profiles"]
    assert {c["label"].split(" ")[0] for c in table["combinations"]} == set(ENGINES)


#: Each model's own children: what its profile must name on every engine.
CHILDREN = {"tiny-two-io": {"embed", "mix", "head"}, "tiny-encoder": {"embed", "encoder"}}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(CHILDREN))
def test_infercmp_profile_takes_any_plugin_as_it_is(tmp_path, model):
    args = [a for e in ENGINES for a in ("-e", e)]
    done = subprocess.run(
        [*INFERCMP, "profile", model, *args, "-d", "cpu", "--iters", "20",
         "--profile-iterations", "3", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "INFERCMP_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"profile: {model}" in done.stdout  # the aligned table, printed
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache")
    for result in RunStore.open(run).results:
        profile = result.profile
        assert profile is not None and profile["error"] is None, (result.engine, profile)
        named = {row_label(r["modules"], 1).split(" ")[0] for r in profile["rows"] if r["modules"]}
        children = {part for label in named for part in label.split("+")}
        assert children & CHILDREN[model], (result.engine, named)
