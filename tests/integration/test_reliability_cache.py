"""Cache integrity under damage and concurrent benches, and long use without leaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
import test_reliability as support
from synthetic_runs import run_dirs
from typer.testing import CliRunner

from infercmp.artifacts.cache import ArtifactCache, file_sha256
from infercmp.cli import app
from infercmp.core.contract import Measurement
from infercmp.run.loop import run_bench
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.sampler import default_samplers
from infercmp.store.run_store import RunStore
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

isolated = support.isolated  # fixture

CLI = [sys.executable, "-c", "from infercmp.cli import main; main()"]
ORT_CPU = ["-e", "onnxruntime", "-d", "cpu", "--warmup", "5", "--iters", "20"]


def _all_entries_intact(
    cache: ArtifactCache, model: str | None = None, label: str | None = None
) -> list[tuple[str, str]]:
    """(kind, key) of every entry (of `model`; of one experiment `label`, or of none, like the
    ONNX file), asserting each one's files match its manifest."""
    found = []
    for entry in cache.entries():
        if model is not None and entry.meta.get("model") != model:
            continue
        if label is not None and entry.meta.get("label") not in (None, label):
            continue
        assert cache.lookup(entry.kind, entry.key) is not None, f"{entry.kind}/{entry.key}"
        found.append((entry.kind, entry.key))
    return found


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 0xFF]) + p.read_bytes()[1:]),
    ],
    ids=["truncated", "altered-same-size"],
)
def test_a_damaged_onnx_file_or_reference_is_rebuilt_not_used_by_bench(
    isolated, shared_cache, tmp_path, damage
):
    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    cache = ArtifactCache(tmp_path / "cache")
    shutil.copytree(shared_cache.root, cache.root, ignore=shutil.ignore_patterns("staging"))
    damaged = []
    for entry in cache.entries("onnx") + cache.entries("reference"):
        for name in ("model.onnx", "reference.npz"):
            if name in entry.files:
                damage(entry.file(name))
                damaged.append(entry.file(name))
    assert damaged
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["bench", "tiny-cnn", *ORT_CPU, "--cache-dir", str(cache.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(out)
    (combo,) = RunStore.open(run).results
    assert combo.status == "ok" and combo.parity["ok"], combo.error
    # The damaged entries the bench needed were dropped and rebuilt: they now are all intact
    # (the shared cache may hold other tests' shapes, damaged too and not needed here).
    entries = _all_entries_intact(cache, "tiny-cnn", default_experiment(plugin.config).label)
    assert {kind for kind, _ in entries} >= {"onnx", "reference"}
    onnx = Path(RunStore.open(run).meta["settings"]["onnx"])
    (entry,) = [e for e in cache.entries("onnx") if e.path == onnx.parent]
    assert file_sha256(onnx) == entry.files["model.onnx"]["sha256"]
    isolated.assert_nothing_left(run, cache_root=cache.root)


@pytest.mark.tensorrt
def test_an_altered_engine_plan_of_the_same_size_is_rebuilt(shared_cache, tmp_path):
    """tests/integration/test_build.py covers a truncated plan; a flipped byte must be caught by
    the hash."""
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.engines.tensorrt.build import build_engine

    plugin = get_plugin("tiny-two-io")
    onnx = export_onnx(plugin, shared_cache)
    cache = ArtifactCache(tmp_path)
    plan = build_engine(plugin, cache, onnx)
    raw = bytearray(plan.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    plan.path.write_bytes(bytes(raw))
    rebuilt = build_engine(plugin, cache, onnx)
    assert not rebuilt.cached
    assert (
        file_sha256(rebuilt.path)
        == cache.lookup("plan", rebuilt.key).files[rebuilt.path.name]["sha256"]
    )


def test_two_benches_at_once_on_a_fresh_cache_share_it_without_damage(isolated, tmp_path):
    """Both export into the same empty cache at the same moment; both runs must be whole."""
    cache = tmp_path / "fresh-cache"
    out = tmp_path / "out"
    args = [*CLI, "bench", "tiny-cnn", *ORT_CPU, "--cache-dir", str(cache), "--out", str(out)]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output
    runs = run_dirs(out)
    assert len(runs) == 2  # distinct directories even when started in the same second
    for run in runs:
        store = RunStore.open(run)
        assert store.status == "complete"
        (combo,) = store.results
        assert combo.status == "ok" and combo.parity["ok"], combo.error
    entries = _all_entries_intact(ArtifactCache(cache))
    kinds = sorted(kind for kind, _ in entries)
    assert kinds == ["onnx", "reference"], kinds  # one of each: the second found the first's
    isolated.assert_nothing_left(*runs, cache_root=cache)


def _resources() -> dict[str, int]:
    me = psutil.Process()
    return {
        "open files": me.num_fds(),
        "threads": threading.active_count(),
        "os threads": me.num_threads(),
        "child processes": len(me.children(recursive=True)),
        "temporary files": len(os.listdir(tempfile.gettempdir())),
    }


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_fifty_benches_in_a_row_leak_nothing(isolated, shared_cache, tmp_path):
    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    measurement = Measurement(warmup_iters=5, iters=10)
    samplers, _ = default_samplers(gpu=False)

    def one_bench() -> None:
        store = RunStore.create(tmp_path / "out", plugin.name, {})
        assert (
            run_bench(plugin, plan, artifacts, measurement, store, samplers=samplers) == "complete"
        )
        (combo,) = RunStore.open(store.path).results
        assert combo.status == "ok", combo.error

    for _ in range(5):  # lazy imports, thread pools and caches settle here
        one_bench()
    before = _resources()
    for _ in range(45):
        one_bench()
    after = _resources()
    assert len(run_dirs(tmp_path / "out")) == 50
    # A leak grows a count; one may shrink (a thread an earlier test started ends meanwhile).
    grown = {name: (before[name], count) for name, count in after.items() if count > before[name]}
    assert not grown, f"grown over 45 benches (before, after): {grown}"
    isolated.assert_nothing_left()


# --- a module built from the environment ----------------------------------------------------

ENV_LAYERS_PLUGIN = '''
"""A plugin whose module depends on an environment variable, as a user's did."""

import os

from infercmp.workload.config import parse_config
from infercmp.workload.plugins import ModelPlugin

FEATURES = {"dims_names": ["batch_size", "features"], "runtime": [-1, 16]}


class EnvLayers(ModelPlugin):
    name = "env-layers"

    def load_config(self):
        shapes = {**FEATURES, "example": [2, 16]}
        shapes["optimization"] = {"min": [1, 16], "opt": [2, 16], "max": [4, 16]}
        data = {
            "name": self.name,
            "inputs": [{"name": "x", "dtype_str": "float32", "shapes": shapes}],
            "outputs": [{"name": "y", "shape": FEATURES}],
        }
        return parse_config(data, self.name)

    def load_pytorch_module(self):
        import torch

        torch.manual_seed(0)
        layers = int(os.environ["TEST_ENV_LAYERS"])
        return torch.nn.Sequential(
            *(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh()) for _ in range(layers))
        ).eval()
'''


@pytest.fixture
def env_layers_plugin(tmp_path, monkeypatch) -> Path:
    """The plugin above on PYTHONPATH (here and in workers), with its entry point."""
    site = tmp_path / "site"
    info = site / "infercmp_env_layers-0.0.1.dist-info"
    info.mkdir(parents=True)
    (site / "infercmp_env_layers.py").write_text(ENV_LAYERS_PLUGIN)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: infercmp-env-layers\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[infercmp.models]\nenv-layers = infercmp_env_layers:EnvLayers\n"
    )
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(site) + (os.pathsep + path if path else ""))
    return site


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_a_model_changed_by_the_environment_never_meets_its_old_artifacts(
    env_layers_plugin, isolated, tmp_path
):
    """The newcomer's stale-model scenario: bench, change the variable, bench again."""
    import importlib.util

    cache, out = tmp_path / "cache", tmp_path / "out"
    engines = {"pytorch", "onnxruntime"} | (
        {"openvino"} if importlib.util.find_spec("openvino") else set()
    )
    args = [*CLI, "bench", "env-layers", "-d", "cpu", "--warmup", "5", "--iters", "20"]
    args += [arg for engine in sorted(engines) for arg in ("-e", engine)]
    args += ["--cache-dir", str(cache)]
    for layers in ("6", "2"):
        result = subprocess.run(
            [*args, "--out", str(out / layers)],
            env=isolated.env(TEST_ENV_LAYERS=layers),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        store = RunStore.open(run_dirs(out / layers)[0])
        assert {combo.engine for combo in store.results} == engines
        for combo in store.results:
            assert combo.status == "ok", combo.error
            assert combo.parity["ok"], (layers, combo.engine, combo.parity)
    assert len(ArtifactCache(cache).entries("onnx")) == 2  # one per module
    isolated.assert_nothing_left(cache_root=cache)
