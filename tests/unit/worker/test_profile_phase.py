"""The worker's profile phase: the engine's profiler after everything timed, written as
profile.json; a failure there keeps the latency measured before it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from infercmp.artifacts.reference import example_runtime_inputs
from infercmp.artifacts.samples import Samples, write_samples
from infercmp.core.contract import (
    AccuracySpec,
    Load,
    Measurement,
    ProfileSpec,
    RawProfile,
    WorkerResult,
    WorkerSpec,
)
from infercmp.engines.base import UnsupportedCombination
from infercmp.engines.pytorch.runtime import PyTorchEngine
from infercmp.run.aggregate import ComboProgress, outcome_to_result
from infercmp.run.worker_process import WorkerOutcome
from infercmp.worker import run as worker_run
from infercmp.worker.profile import PROFILE_FILE
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

TINY_CNN_PATHS = {"", "0", "1", "2", "3", "4", "5", "6"}  # nn.Sequential's children


def _spec(tmp_path, profile: ProfileSpec | None = None, **fields) -> WorkerSpec:
    plugin = get_plugin("tiny-cnn")
    inputs = example_runtime_inputs(plugin, default_experiment(plugin.config))
    np.savez(tmp_path / "ref.npz", **{f"input_{i}": a for i, a in enumerate(inputs)})
    return WorkerSpec(
        model="tiny-cnn",
        engine="pytorch",
        device="cpu",
        reference=tmp_path / "ref.npz",
        input_names=list(plugin.config.input_names),
        output_names=list(plugin.config.output_names),
        result_dir=tmp_path / "worker",
        measurement=Measurement(warmup_iters=1, iters=4),
        profile=profile,
        **fields,
    )


def _phases(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["phase"] for line in stream.getvalue().splitlines()]


def test_the_phase_writes_a_profile_attributed_to_the_plugins_modules(tmp_path):
    stream = io.StringIO()
    result = worker_run.run_spec(_spec(tmp_path, ProfileSpec(iterations=3, warmup=1)), stream)
    assert result.status == "ok", result.error
    assert _phases(stream)[-3:] == ["parity", "profile", "done"]
    assert result.profile is not None and result.profile.file == PROFILE_FILE
    assert result.profile.iterations == 3 and result.iterations == 4  # latency untouched
    raw = RawProfile.model_validate_json((tmp_path / "worker" / PROFILE_FILE).read_bytes())
    assert raw.profiler == "torch.profiler" and len(raw.wall_ms) == 3
    modules = {e.module for e in raw.events if e.module is not None}
    assert modules <= TINY_CNN_PATHS
    # Both convolutions and the linear layer, each in its own module.
    by_module = {(e.module, e.op_type) for e in raw.events}
    assert {("0", "aten::conv2d"), ("2", "aten::conv2d"), ("6", "aten::linear")} <= by_module
    assert all(e.calls == 3 for e in raw.events if e.module in {"0", "2", "6"})
    assert sum(e.total_ms for e in raw.events) < sum(raw.wall_ms)
    assert (tmp_path / "worker" / "latency.npz").is_file()


def test_a_device_resident_run_marks_its_profile(tmp_path):
    """--device-resident times compute alone; the profile's calls carry the copies, and say so
    (the parent then gives no closure)."""
    measurement = Measurement(warmup_iters=1, iters=4, device_resident=True)
    spec = _spec(tmp_path, ProfileSpec(iterations=2, warmup=0)).model_copy(
        update={"measurement": measurement}
    )
    result = worker_run.run_spec(spec, io.StringIO())
    assert result.status == "ok", result.error
    raw = RawProfile.model_validate_json((tmp_path / "worker" / PROFILE_FILE).read_bytes())
    assert raw.device_resident and len(raw.unprofiled_wall_ms) == 2
    plain = worker_run.run_spec(_spec(tmp_path, ProfileSpec(iterations=2, warmup=0)),
                                io.StringIO())  # fmt: skip
    assert plain.status == "ok", plain.error
    again = RawProfile.model_validate_json((tmp_path / "worker" / PROFILE_FILE).read_bytes())
    assert not again.device_resident


def test_without_a_profile_spec_no_phase_runs(tmp_path):
    stream = io.StringIO()
    result = worker_run.run_spec(_spec(tmp_path), stream)
    assert result.status == "ok" and result.profile is None
    assert "profile" not in _phases(stream)
    assert not (tmp_path / "worker" / PROFILE_FILE).exists()


def test_a_failing_profiler_is_the_phases_failure_and_keeps_the_latency(tmp_path, monkeypatch):
    def broken(self, iterations, warmup, workdir):
        raise RuntimeError("profiler exploded")

    monkeypatch.setattr(PyTorchEngine, "_profile", broken)
    result = worker_run.run_spec(_spec(tmp_path, ProfileSpec(iterations=2)), io.StringIO())
    assert (result.status, result.phase) == ("failed", "profile")
    assert "profiler exploded" in (result.error or "")
    assert result.iterations == 4 and (tmp_path / "worker" / "latency.npz").is_file()
    assert result.profile is None


def test_after_the_accuracy_phase_the_profile_runs_on_the_measured_inputs(tmp_path, monkeypatch):
    seen: list[list[tuple[int, ...]]] = []

    def spy(self, iterations, warmup, workdir):
        seen.append([tuple(t.shape) for t in self._inputs])
        raise UnsupportedCombination("spied")

    monkeypatch.setattr(PyTorchEngine, "_profile", spy)
    rows = [np.full((1, 3, 16, 16), k, dtype=np.float32) for k in range(2)]  # not the measured
    write_samples(tmp_path / "eval.npz", Samples(inputs=[[r] for r in rows], labels=np.arange(2)))
    accuracy = AccuracySpec(samples=tmp_path / "eval.npz", batch=1, input_axes=[0], output_axes=[0])
    spec = _spec(tmp_path, ProfileSpec(iterations=1), accuracy=accuracy)
    result = worker_run.run_spec(spec, io.StringIO())
    assert result.status == "ok" and result.accuracy is not None and result.accuracy.calls == 2
    measured = np.load(spec.reference)["input_0"].shape
    assert seen == [[measured]] and measured != rows[0].shape


def test_an_engine_that_cannot_profile_leaves_a_warning_not_a_failure(tmp_path, monkeypatch):
    def refuses(self, iterations, warmup, workdir):
        raise UnsupportedCombination("pytorch cannot profile this here")

    monkeypatch.setattr(PyTorchEngine, "_profile", refuses)
    result = worker_run.run_spec(_spec(tmp_path, ProfileSpec(iterations=2)), io.StringIO())
    assert result.status == "ok" and result.profile is None
    assert any("no profile: pytorch cannot profile this here" in w for w in result.warnings)


def test_a_load_or_an_engine_without_a_profiler_is_not_profiled(tmp_path, monkeypatch):
    class Engine:
        def profile(self, *args):
            raise AssertionError("not to be called")

    offline = _spec(tmp_path, ProfileSpec(), load=Load(scenario="offline", concurrency=2))
    result = _outcome("ok", None).result
    assert result is not None and offline.profile is not None
    worker_run._profile(Engine(), [], offline, offline.profile, result, lambda phase: None)
    assert result.profile is None and "offline scenario" in result.warnings[-1]

    monkeypatch.setattr(type(worker_run.get_descriptor("pytorch")), "profiler", None)
    single = _spec(tmp_path, ProfileSpec())
    assert single.profile is not None
    worker_run._profile(Engine(), [], single, single.profile, result, lambda phase: None)
    assert "has no per-layer profiler" in result.warnings[-1]


def _outcome(status: str, phase: str | None) -> WorkerOutcome:
    result = WorkerResult(
        status=status, model="tiny-cnn", engine="pytorch", device="cpu", precision="fp32",
        phase=phase, error="boom" if phase else None, iterations=5, measure_seconds=0.01,
        device_resident=False, mode="fixed",
    )  # fmt: skip
    latency = {"wall.total": np.arange(1, 6, dtype=np.int64) * 1000}
    return WorkerOutcome(status, result.error, result, latency, [], "")


@pytest.mark.parametrize("status", ["failed", "oom"])
def test_the_parent_keeps_the_latency_of_a_failed_profile_phase(status):
    from infercmp.run.plan import plan_bench

    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["pytorch"], ["cpu"], [])
    progress = ComboProgress(plan.combinations[0], "2026-01-01T00:00:00+00:00")
    progress.outcomes.append(_outcome(status, "profile"))
    result, latency, _ = outcome_to_result(plugin, progress)
    assert (result.status, result.phase) == (status, "profile")
    assert "profile phase failed" in (result.error or "") and "boom" in (result.error or "")
    assert result.iterations == 5 and latency is not None
