"""bench --cold's start-up passes in the parent (`run.startup`), with the worker faked: what
each pass runs, what it records when it fails, and that its directory goes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from infercmp.core.contract import Load, Measurement, StartupTimes, WorkerResult
from infercmp.core.errors import InfercmpError
from infercmp.run import startup as startup_module
from infercmp.run.executors.base import BenchListener
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import Artifacts
from infercmp.run.startup import StartupPasses, ask_cold, startup_record
from infercmp.run.worker_process import WorkerOutcome
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

TIMES = StartupTimes(
    process_to_load_s=0.5, load_s=0.2, prepare_s=0.1, first_inference_ms=40.0,
    first_k_ms=[40.0, 1.0], ready_s=1.25,
)  # fmt: skip


def outcome(status: str = "ok", times: StartupTimes | None = TIMES) -> WorkerOutcome:
    if status != "ok":  # a crash leaves no result
        return WorkerOutcome(status, "worker killed by SIGKILL", None, {}, [], "")
    result = WorkerResult(
        status=status, model="tiny-cnn", engine="pytorch", device="cpu", precision="fp32",
        device_resident=False, mode="iters", startup=times,
    )  # fmt: skip
    return WorkerOutcome(status, None, result, {}, [], "")


@pytest.fixture
def passes(tmp_path, monkeypatch):
    """StartupPasses over tiny-cnn on PyTorch CPU (nothing to export) with a fake worker:
    `passes(outcomes)` -> (the passes, the specs the fake was given)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    plugin = get_plugin("tiny-cnn")
    experiment = default_experiment(plugin.config)
    loads = [Load(), Load(concurrency=2, scenario="offline")]
    plan = plan_bench(plugin, [experiment], ["pytorch"], ["cpu"], ["fp32"], loads=loads)
    artifacts = Artifacts(references={c.reference_key: tmp_path / "ref.npz" for c in plan.runnable})

    def make(outcomes: list[WorkerOutcome]):
        specs = []

        def fake(spec, timeout_s, sample_hz, samplers, on_phase=None):
            specs.append(spec)
            return outcomes[len(specs) - 1]

        monkeypatch.setattr(startup_module, "run_worker", fake)
        measurement = Measurement(iters=500, timeout_s=30)
        return StartupPasses(plugin, plan, artifacts, measurement, BenchListener()), specs, plan

    make.temp = temp
    return make


def test_a_cold_then_a_warm_worker_in_one_directory_that_is_removed(passes):
    run, specs, plan = passes([outcome(), outcome()])
    record = run(plan.runnable[0])
    cold, warm = record["cold"], record["warm"]
    assert cold["worker"] == warm["worker"] == TIMES.model_dump()
    assert cold["ready_s"] == 1.25 and cold["export_hit"] is None  # the module: no export
    assert [s.result_dir.name for s in specs] == ["cold", "warm"]
    assert specs[0].engine_cache_dir == specs[1].engine_cache_dir is not None  # warm finds it
    assert specs[0].measurement.iters == 20 and specs[0].measurement.warmup() == (10, 0.0)
    assert specs[0].accuracy is None
    assert record["caches_cleared"][1:] == list(plan.descriptors["pytorch"].engine_caches)
    assert list(passes.temp.iterdir()) == []


def test_loads_of_one_engine_and_batch_share_their_passes_run_one_at_a_time(passes):
    run, specs, plan = passes([outcome(), outcome()])
    single, offline = plan.runnable
    assert offline.load.scenario == "offline"
    assert run(offline) is run(single)
    assert len(specs) == 2 and all(s.load.one_at_a_time for s in specs)


def test_a_failed_pass_is_recorded_and_the_next_still_runs(passes):
    run, specs, plan = passes([outcome("crashed"), outcome(times=None)])
    record = run(plan.runnable[0])
    assert record["cold"]["error"] == "worker killed by SIGKILL"
    assert record["warm"]["error"] == "the worker answered no call"
    assert record["cold"]["worker"] is None and record["cold"]["ready_s"] is None
    assert list(passes.temp.iterdir()) == []


def test_the_record_without_cold_holds_the_first_process_that_answered():
    first, second = outcome(times=None), outcome()
    assert startup_record([first, second]) == {"as_run": TIMES.model_dump()}
    assert startup_record([first]) is None


def test_cold_is_asked_for_here_only():
    notes: list[str] = []
    assert ask_cold(False, True, notes.append) is False and notes == []
    assert ask_cold(True, False, notes.append) is True
    assert "each combination starts twice more" in notes[0]
    with pytest.raises(InfercmpError, match="--executor local"):
        ask_cold(True, True, notes.append)


def test_nothing_is_left_when_the_export_fails(passes, monkeypatch):
    run, specs, plan = passes([])
    monkeypatch.setattr(plan.descriptors["pytorch"].__class__, "artifact", "onnx", raising=True)

    def broken(*args, **kwargs):
        raise InfercmpError("the exporter failed")

    monkeypatch.setattr(startup_module, "export_onnx", broken)
    record = run(plan.runnable[0])
    assert record["cold"]["error"] == record["warm"]["error"] == "the exporter failed"
    assert specs == [] and list(passes.temp.iterdir()) == []
    assert Path(tempfile.gettempdir()) == passes.temp
