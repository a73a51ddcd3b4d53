"""bench --accuracy in the parent: judging a combination's outputs against PyTorch fp32, the
accuracy set's preparation before any worker, and a failed accuracy phase's measurement."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from infercmp.artifacts import accuracy_set as accuracy_set_module
from infercmp.artifacts.accuracy_set import AccuracySet
from infercmp.artifacts.samples import CalibrationSet, Samples, write_outputs, write_samples
from infercmp.core.contract import WorkerResult
from infercmp.core.errors import InfercmpError
from infercmp.run import prepare as prepare_module
from infercmp.run.accuracy import (
    RANDOM_CALIBRATION,
    AccuracyJudge,
    AccuracyRequest,
    measured_batch,
    metric_failure,
    output_agreement,
    random_calibration_note,
)
from infercmp.run.aggregate import ComboProgress, outcome_to_result
from infercmp.run.worker_process import WorkerOutcome
from infercmp.workload.config import AccuracyConfig
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment


def _top1(outputs, labels):
    return {"top1": float(np.mean(outputs[0].argmax(axis=-1) == labels))}


def _plugin(evaluate=_top1, primary: str | None = "top1"):
    """tiny-cnn's config (logits [batch_size, classes]) with an accuracy section."""
    config = get_plugin("tiny-cnn").config.model_copy(
        update={"accuracy": AccuracyConfig(primary=primary)}
    )
    return SimpleNamespace(name="tiny-cnn", config=config, evaluate=evaluate)


def _logits(rng, count: int) -> list[np.ndarray]:
    return [rng.standard_normal((1, 10)).astype(np.float32) for _ in range(count)]


def _accuracy_set(tmp_path, reference: list[np.ndarray], labels, metrics) -> AccuracySet:
    path = tmp_path / "evaluation.npz"
    inputs = [[np.zeros((1, 3, 8, 8), np.float32)] for _ in reference]
    write_samples(path, Samples(inputs, [[r] for r in reference], labels))
    calibration = CalibrationSet(tmp_path / "c.npz", 0, "c", "dataset")
    return AccuracySet(path, len(reference), labels is not None, calibration, "fp", metrics)


def test_an_engine_that_gives_pytorchs_outputs_agrees_exactly(tmp_path):
    rng = np.random.default_rng(0)
    reference = _logits(rng, 12)
    labels = np.array([int(r.argmax()) for r in reference])
    labels[:3] = (labels[:3] + 1) % 10  # PyTorch gets three wrong: top-1 0.75
    judge = AccuracyJudge(_plugin(), _accuracy_set(tmp_path, reference, labels, {"top1": 0.75}))
    write_outputs(tmp_path / "out.npz", [[r] for r in reference])
    record = judge.judge(tmp_path / "out.npz", "fp32")
    assert record["metrics"] == {"top1": 0.75} and record["change"] == {"top1": 0.0}
    assert record["top1_agreement"] == 1.0 and record["samples"] == 12
    (output,) = record["outputs"]
    assert output["max_abs"] == 0.0 and output["cosine_min"] == pytest.approx(1.0)
    assert record["calibration"] is None and record["error"] is None


def test_a_degraded_engine_shows_its_drop_its_disagreement_and_its_errors(tmp_path):
    rng = np.random.default_rng(1)
    reference = _logits(rng, 10)
    labels = np.array([int(r.argmax()) for r in reference])  # PyTorch: top-1 1.0
    judge = AccuracyJudge(
        _plugin(), _accuracy_set(tmp_path, reference, labels, {"top1": 1.0}), "random"
    )
    worse = [r.copy() for r in reference]
    for row in worse[:4]:  # four samples' top class swapped out
        row[0, row.argmax()] = row.min() - 1
    write_outputs(tmp_path / "out.npz", [[r] for r in worse])
    record = judge.judge(tmp_path / "out.npz", "int8")
    assert record["metrics"]["top1"] == pytest.approx(0.6)
    assert record["change"]["top1"] == pytest.approx(-0.4)
    assert record["top1_agreement"] == pytest.approx(0.6)
    assert record["outputs"][0]["max_abs"] > 1 and record["outputs"][0]["cosine_min"] < 1
    assert record["calibration"] == "random"  # int8 says what it calibrated on


def test_unlabelled_samples_still_measure_agreement(tmp_path):
    reference = _logits(np.random.default_rng(2), 5)
    judge = AccuracyJudge(_plugin(), _accuracy_set(tmp_path, reference, None, {}))
    write_outputs(tmp_path / "out.npz", [[r * 1.01] for r in reference])
    record = judge.judge(tmp_path / "out.npz", "fp32")
    assert record["metrics"] == {} and record["labelled"] is False
    assert record["top1_agreement"] == 1.0
    assert record["outputs"][0]["cosine_mean"] == pytest.approx(1.0)
    assert 0 < record["outputs"][0]["p50_abs"] <= record["outputs"][0]["p99_abs"]


def test_a_metric_that_raises_is_recorded_and_ends_the_run_with_one_line(tmp_path):
    def broken(outputs, labels):
        raise ValueError("labels must be one-hot")

    reference = _logits(np.random.default_rng(3), 4)
    labels = np.arange(4)
    judge = AccuracyJudge(_plugin(broken), _accuracy_set(tmp_path, reference, labels, {}))
    write_outputs(tmp_path / "out.npz", [[r] for r in reference])
    record = judge.judge(tmp_path / "out.npz", "fp32")
    assert "labels must be one-hot" in record["error"] and record["top1_agreement"] == 1.0
    results = [
        SimpleNamespace(accuracy=None, engine="pytorch", device="cpu", precision="fp32"),
        SimpleNamespace(accuracy=record, engine="onnxruntime", device="cpu", precision="fp32"),
    ]
    failure = metric_failure(results)
    assert failure is not None and failure.exit_code == 2
    assert "onnxruntime cpu fp32" in str(failure) and "\n" not in str(failure)
    assert metric_failure(results[:1]) is None


def test_outputs_of_another_count_are_not_judged(tmp_path):
    reference = _logits(np.random.default_rng(4), 4)
    judge = AccuracyJudge(_plugin(), _accuracy_set(tmp_path, reference, None, {}))
    write_outputs(tmp_path / "out.npz", [[r] for r in reference[:3]])
    with pytest.raises(InfercmpError, match="3 samples' outputs; 4 were sent"):
        judge.judge(tmp_path / "out.npz", "fp32")


def test_agreement_of_a_non_class_output_has_no_top1():
    got = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    record = output_agreement("emb", got, got, 0, 2)
    assert record["top1_agreement"] is None and record["max_abs"] == 0.0


def test_the_phase_runs_at_the_measured_batch(tmp_path):
    np.savez(tmp_path / "ref.npz", input_0=np.zeros((4, 6)))
    assert measured_batch(tmp_path / "ref.npz", None, [0]) == 4
    assert measured_batch(tmp_path / "ref.npz", 16, [0]) == 16
    assert measured_batch(tmp_path / "ref.npz", None, [None]) == 1


def test_random_calibration_is_named_for_int8():
    random = CalibrationSet(Path("c.npz"), 8, "f", "random")
    assert random_calibration_note(random) == RANDOM_CALIBRATION
    assert random_calibration_note(CalibrationSet(Path("c.npz"), 8, "f", "dataset")) is None
    assert random_calibration_note(None) is None


# --- before any worker: the accuracy set --------------------------------------------------


def test_accuracy_for_a_model_without_dataset_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(prepare_module, "ensure_accuracy_set", lambda *a, **k: None)
    plugin = get_plugin("tiny-cnn")
    with pytest.raises(InfercmpError, match="has no dataset") as exc:
        prepare_module.accuracy_artifacts(plugin, None, AccuracyRequest(), None, 10.0)
    assert exc.value.exit_code == 2


def test_a_dataset_that_raises_is_one_line_naming_the_model(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("sample 3 has no 'image'")

    monkeypatch.setattr(prepare_module, "ensure_accuracy_set", broken)
    plugin = get_plugin("tiny-cnn")
    with pytest.raises(InfercmpError, match="model 'tiny-cnn': its load_dataset\\(\\) failed"):
        prepare_module.accuracy_artifacts(plugin, None, AccuracyRequest(5), None, 10.0)


def test_int8_without_dataset_calibrates_on_random_inputs(monkeypatch):
    asked = {}

    def random(plugin, cache, experiment, count):
        asked.update(experiment=experiment, count=count)
        return CalibrationSet(Path("r.npz"), count, "f", "random")

    monkeypatch.setattr(prepare_module, "ensure_accuracy_set", lambda *a, **k: None)
    monkeypatch.setattr(accuracy_set_module, "random_calibration", random)
    plugin = get_plugin("tiny-cnn")
    experiment = default_experiment(plugin.config)
    judge, calibration = prepare_module.accuracy_artifacts(plugin, None, None, experiment, 10.0)
    assert judge is None and calibration is not None and calibration.source == "random"
    assert asked == {"experiment": experiment, "count": 128}  # the config's default


def test_the_evaluation_count_asked_reaches_the_accuracy_set(monkeypatch, tmp_path):
    seen = {}
    made = _accuracy_set(tmp_path, _logits(np.random.default_rng(5), 2), None, {})

    def ensure(plugin, cache, *, evaluation, calibration):
        seen.update(evaluation=evaluation, calibration=calibration)
        return made

    monkeypatch.setattr(prepare_module, "ensure_accuracy_set", ensure)
    plugin = get_plugin("tiny-cnn")
    judge, calibration = prepare_module.accuracy_artifacts(
        plugin, None, AccuracyRequest(50), None, 10.0
    )
    assert seen == {"evaluation": 50, "calibration": 128}
    assert judge is not None and judge.accuracy_set is made and calibration is made.calibration
    prepare_module.accuracy_artifacts(plugin, None, AccuracyRequest(None), None, 10.0)
    assert seen["evaluation"] is None  # every sample, capped by accuracy.max_samples


# --- the parent's aggregate ---------------------------------------------------------------


def _outcome(status: str, phase: str | None, rows: list[dict]) -> WorkerOutcome:
    result = WorkerResult(
        status=status, model="tiny-cnn", engine="onnxruntime", device="cpu",
        precision="fp32", phase=phase, error="boom" if phase else None, iterations=5,
        measure_seconds=0.01, device_resident=False, mode="fixed",
    )  # fmt: skip
    latency = {"wall.total": np.arange(1, 6, dtype=np.int64) * 1000}
    return WorkerOutcome(status, result.error, result, latency, rows, "")


def _combo():
    from infercmp.run.plan import plan_bench

    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], [])
    return plugin, plan.combinations[0]


def test_a_failed_accuracy_phase_keeps_the_measured_latency():
    plugin, combo = _combo()
    progress = ComboProgress(combo, "2026-01-01T00:00:00+00:00")
    progress.outcomes.append(_outcome("failed", "accuracy", []))
    result, latency, _ = outcome_to_result(plugin, progress)
    assert (result.status, result.phase) == ("failed", "accuracy")
    assert "accuracy phase failed" in (result.error or "") and "boom" in (result.error or "")
    assert result.iterations == 5 and result.latency is not None and latency is not None
    progress.outcomes[0] = _outcome("failed", "measure", [])
    result, latency, _ = outcome_to_result(plugin, progress)
    assert result.iterations == 0 and latency is None  # a failure while measuring: nothing


def test_accuracy_rows_of_the_sampler_are_not_in_the_peaks():
    plugin, combo = _combo()
    rows = [
        {"phase": "warmup", "proc_rss_bytes": 200},
        {"phase": "measure", "proc_rss_bytes": 300},
        {"phase": "accuracy", "proc_rss_bytes": 9000},
    ]
    progress = ComboProgress(combo, "2026-01-01T00:00:00+00:00")
    progress.outcomes.append(_outcome("ok", None, rows))
    result, _, samples = outcome_to_result(plugin, progress)
    assert result.peak_rss_bytes == 300
    assert samples is not None and len(samples) == 3  # stored all the same, tagged


def test_an_int8_combination_gets_its_calibration_without_accuracy(monkeypatch, tmp_path):
    """prepare_artifacts: int8 planned, no --accuracy, no dataset: conversions calibrate on
    random inputs, and no judge is made (no accuracy phase runs)."""
    import dataclasses

    from infercmp.run.plan import plan_bench

    plugin = get_plugin("tiny-cnn")
    experiment = default_experiment(plugin.config)
    planned = plan_bench(plugin, [experiment], ["onnxruntime"], ["cpu"], [])
    combos = [dataclasses.replace(c, precision="int8") for c in planned.combinations]
    plan = dataclasses.replace(planned, combinations=combos)
    calibration = CalibrationSet(Path("r.npz"), 128, "f", "random")
    seen = []

    def convert(self, context, precision, options):
        seen.append((precision, context.calibration))

    monkeypatch.setattr(prepare_module, "ensure_accuracy_set", lambda *a, **k: None)
    monkeypatch.setattr(accuracy_set_module, "random_calibration", lambda *a: calibration)
    monkeypatch.setattr(prepare_module, "ensure_batched_reference", lambda *a: tmp_path / "r")
    monkeypatch.setattr(prepare_module, "export_onnx", lambda *a, **k: SimpleNamespace(path=None))
    monkeypatch.setattr(type(plan.descriptors["onnxruntime"]), "convert", convert)
    artifacts = prepare_module.prepare_artifacts(plugin, plan, None, lambda _m: None)
    assert artifacts.calibration is calibration and artifacts.judge is None
    assert seen == [("int8", calibration)]


def test_the_first_process_of_a_combination_runs_the_samples_at_its_batch(tmp_path):
    from infercmp.core.contract import Measurement
    from infercmp.run.prepare import Artifacts
    from infercmp.run.worker_process import worker_spec

    plugin, combo = _combo()
    np.savez(tmp_path / "ref.npz", input_0=np.zeros((2, 3, 32, 32), np.float32))
    accuracy_set = _accuracy_set(tmp_path, _logits(np.random.default_rng(6), 3), None, {})
    artifacts = Artifacts(judge=AccuracyJudge(plugin, accuracy_set))
    artifacts.references[combo.reference_key] = tmp_path / "ref.npz"
    first = worker_spec(plugin, combo, artifacts, Measurement(), tmp_path / "w0", 0)
    assert first.accuracy is not None and first.accuracy.samples == accuracy_set.evaluation
    assert first.accuracy.batch == 2 and first.accuracy.input_axes == [0]
    assert first.accuracy.output_axes == [0]
    assert worker_spec(plugin, combo, artifacts, Measurement(), tmp_path / "w1", 1).accuracy is None
    artifacts.judge = None  # no --accuracy: no phase
    assert worker_spec(plugin, combo, artifacts, Measurement(), tmp_path / "w", 0).accuracy is None


def test_a_ray_worker_gets_the_samples_shipped(tmp_path):
    from infercmp.core.contract import AccuracySpec, WorkerSpec
    from infercmp.run.executors.ray import _shipped_paths

    spec = WorkerSpec(
        model="tiny-cnn", engine="onnxruntime", device="cpu", reference=tmp_path / "ref.npz",
        input_names=["image"], output_names=["logits"], result_dir=tmp_path,
        accuracy=AccuracySpec(
            samples=tmp_path / "evaluation.npz", batch=1, input_axes=[0], output_axes=[0]
        ),
    )  # fmt: skip
    assert tmp_path / "evaluation.npz" in _shipped_paths(spec)
