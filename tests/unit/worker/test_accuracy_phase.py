"""The worker's accuracy phase: samples through the measured engine at its batch, untimed."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from infercmp.artifacts.samples import Samples, read_samples, write_samples
from infercmp.core.contract import AccuracySpec, Measurement, WorkerSpec
from infercmp.worker import run as worker_run
from infercmp.worker.accuracy import OUTPUTS_FILE, calls_of, split_call, stack_call


class _DoublingEngine:
    """A numpy engine: output 0 is twice input 0. Records the batch of every prepare."""

    name = "fake"
    stream = None
    fail_after_prepares: int | None = None  # raise in compute once this many prepares ran

    def __init__(self) -> None:
        self.effective_options: dict = {}
        self.info: dict = {}
        self.prepared: list[int] = []
        self._x = np.zeros(0)
        self._out: list[np.ndarray] = []

    def load(self, spec) -> None: ...

    def prepare(self, inputs) -> None:
        self.prepared.append(inputs[0].shape[0] if inputs[0].ndim else 1)
        self._x = np.array(inputs[0], dtype=np.float32)

    def copy_in(self) -> None: ...

    def compute(self) -> None:
        limit = type(self).fail_after_prepares
        if limit is not None and len(self.prepared) > limit:
            raise RuntimeError("kernel refused these inputs")
        self._out = [self._x * 2]

    def copy_out(self) -> list[np.ndarray]:
        return [o.copy() for o in self._out]

    def synchronize(self) -> None: ...

    def hot_path(self):
        return self.copy_in, self.compute, self.copy_out, self.synchronize

    def bind_thread(self) -> None: ...

    def release(self) -> None: ...


def _samples(path, count: int, features: int = 3) -> list[np.ndarray]:
    rows = [np.full((1, features), k + 1, dtype=np.float32) for k in range(count)]
    write_samples(path, Samples(inputs=[[r] for r in rows], labels=np.arange(count)))
    return rows


@pytest.fixture
def engines(monkeypatch):
    made: list[_DoublingEngine] = []

    def factory(name):
        def make():
            made.append(_DoublingEngine())
            return made[-1]

        return make

    monkeypatch.setattr(worker_run, "engine_class", factory)
    monkeypatch.setattr(_DoublingEngine, "fail_after_prepares", None)
    return made


def _spec(tmp_path, accuracy: AccuracySpec | None, iters: int = 7) -> WorkerSpec:
    x = np.ones((2, 3), dtype=np.float32)
    np.savez(tmp_path / "ref.npz", input_0=x, output_0=x * 2)
    return WorkerSpec(
        model="m",
        engine="fake",
        device="cpu",
        reference=tmp_path / "ref.npz",
        input_names=["x"],
        output_names=["y"],
        result_dir=tmp_path / "worker",
        measurement=Measurement(warmup_iters=2, iters=iters),
        accuracy=accuracy,
    )


def _phases(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["phase"] for line in stream.getvalue().splitlines()]


def test_calls_hold_batch_rows_and_the_last_is_padded_with_its_last_sample():
    assert calls_of(5, 2) == [[0, 1], [2, 3], [4, 4]]
    assert calls_of(4, 2) == [[0, 1], [2, 3]]
    assert calls_of(3, 8) == [[0, 1, 2, 2, 2, 2, 2, 2]]
    assert calls_of(2, 1) == [[0], [1]]


def test_the_phase_runs_every_sample_at_the_measured_batch_and_keeps_latency_out(tmp_path, engines):
    rows = _samples(tmp_path / "eval.npz", 5)
    accuracy = AccuracySpec(samples=tmp_path / "eval.npz", batch=2, input_axes=[0], output_axes=[0])
    stream = io.StringIO()
    result = worker_run.run_spec(_spec(tmp_path, accuracy), stream)
    assert result.status == "ok", result.error
    assert _phases(stream)[-3:] == ["parity", "accuracy", "done"]
    assert result.accuracy is not None
    assert (result.accuracy.samples, result.accuracy.calls) == (5, 3)
    # The measured batch (2, from the reference) and then three calls of two rows each.
    assert engines[0].prepared == [2, 2, 2, 2]
    written = read_samples(tmp_path / "worker" / OUTPUTS_FILE)
    assert len(written) == 5  # the padded row's output is dropped
    for row, out in zip(rows, written.outputs or []):
        np.testing.assert_array_equal(out[0], row * 2)
    with np.load(tmp_path / "worker" / "latency.npz") as latency:
        assert all(len(latency[k]) == 7 for k in latency.files)  # --iters, nothing more
    assert result.iterations == 7


def test_without_a_batch_axis_every_call_carries_one_sample(tmp_path, engines):
    _samples(tmp_path / "eval.npz", 3)
    accuracy = AccuracySpec(
        samples=tmp_path / "eval.npz", batch=4, input_axes=[None], output_axes=[0]
    )
    result = worker_run.run_spec(_spec(tmp_path, accuracy), io.StringIO())
    assert result.status == "ok", result.error
    assert result.accuracy is not None and result.accuracy.calls == 3
    assert engines[0].prepared[1:] == [1, 1, 1]


def test_a_failure_in_the_phase_fails_the_worker_there_and_keeps_its_latency(tmp_path, engines):
    _samples(tmp_path / "eval.npz", 3)
    _DoublingEngine.fail_after_prepares = 1  # the timed phases ran on the first prepare
    accuracy = AccuracySpec(samples=tmp_path / "eval.npz", batch=1, input_axes=[0], output_axes=[0])
    result = worker_run.run_spec(_spec(tmp_path, accuracy), io.StringIO())
    assert (result.status, result.phase) == ("failed", "accuracy")
    assert "kernel refused" in (result.error or "")
    assert result.iterations == 7 and result.accuracy is None
    with np.load(tmp_path / "worker" / "latency.npz") as latency:
        assert len(latency["wall.total"]) == 7


def test_without_an_accuracy_spec_no_phase_runs(tmp_path, engines):
    stream = io.StringIO()
    result = worker_run.run_spec(_spec(tmp_path, None), stream)
    assert result.status == "ok" and result.accuracy is None
    assert "accuracy" not in _phases(stream)
    assert not (tmp_path / "worker" / OUTPUTS_FILE).exists()


def test_outputs_must_hold_the_call_rows_along_the_batch_axis():
    from infercmp.core.errors import InfercmpError

    with pytest.raises(InfercmpError, match="expected 2 rows along its batch axis 0"):
        split_call([np.zeros((3, 4))], [0], 2)
    rows = split_call([np.arange(6).reshape(2, 3)], [0], 2)
    np.testing.assert_array_equal(rows[1][0], [[3, 4, 5]])
    stacked = stack_call([[np.zeros((1, 2))], [np.ones((1, 2))]], [0])
    assert stacked[0].shape == (2, 2)


def test_samples_of_several_shapes_go_one_per_call(tmp_path, engines):
    rows = [np.ones((1, 3), np.float32), np.ones((1, 5), np.float32), np.ones((1, 3), np.float32)]
    write_samples(tmp_path / "eval.npz", Samples(inputs=[[r] for r in rows]))
    accuracy = AccuracySpec(samples=tmp_path / "eval.npz", batch=2, input_axes=[0], output_axes=[0])
    result = worker_run.run_spec(_spec(tmp_path, accuracy), io.StringIO())
    assert result.status == "ok", result.error
    assert result.accuracy is not None and result.accuracy.calls == 3
    written = read_samples(tmp_path / "worker" / OUTPUTS_FILE)
    assert [o[0].shape for o in written.outputs or []] == [(1, 3), (1, 5), (1, 3)]
