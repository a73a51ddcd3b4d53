"""The accuracy set (evaluation samples with PyTorch fp32 outputs, calibration samples) and the
random calibration set of a model without a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from unit.workload.test_dataset import Toy, images, toy_config

from infercmp.artifacts import accuracy_set
from infercmp.artifacts.accuracy_set import (
    ensure_accuracy_set,
    random_calibration,
    samples_fingerprint,
)
from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.samples import read_samples
from infercmp.core.errors import InfercmpError
from infercmp.models.tiny_cnn import TinyCNN
from infercmp.workload.config import parse_config
from infercmp.workload.dataset import Sample, load_samples, split, top1
from infercmp.workload.shapes import default_experiment


class Linear(torch.nn.Module):
    """[n, 2, 3] -> [n, 4]: flatten, then a seeded linear layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class ToyModel(Toy):
    module = Linear

    def load_pytorch_module(self):
        return self.module()


@pytest.fixture
def cache(tmp_path):
    return ArtifactCache(tmp_path / "cache")


def one_at_a_time(plugin, rows):
    module = plugin.load_pytorch_module().eval()
    with torch.no_grad():
        return [module(torch.from_numpy(row[0])).numpy() for row in rows]


def test_the_set_holds_disjoint_evaluation_and_calibration_samples(cache):
    samples = images(40)
    plugin = ToyModel(samples)
    made = ensure_accuracy_set(plugin, cache, evaluation=None, calibration=8)
    calibrate, evaluate = split(40, 8)
    loaded = load_samples(plugin)
    assert (made.count, made.calibration.count, made.labelled) == (32, 8, True)
    assert made.dataset_fingerprint == loaded.fingerprint
    assert made.calibration.source == "dataset"

    evaluation = read_samples(made.evaluation)
    assert len(evaluation) == 32
    for row, k in zip(evaluation.inputs, evaluate):
        np.testing.assert_array_equal(row[0], loaded.inputs[k][0])
    np.testing.assert_array_equal(evaluation.labels, loaded.labels[evaluate])
    # batched for speed, but one row per sample and PyTorch's fp32 values
    expected = one_at_a_time(plugin, evaluation.inputs)
    for (output,), want in zip(evaluation.outputs, expected):
        assert output.shape == (1, 4)
        np.testing.assert_allclose(output, want, rtol=1e-5, atol=1e-6)

    calibration = read_samples(made.calibration.path)
    assert calibration.labels is None and calibration.outputs is None
    for row, k in zip(calibration.inputs, calibrate):
        np.testing.assert_array_equal(row[0], loaded.inputs[k][0])
    assert made.calibration.fingerprint == samples_fingerprint(calibration.inputs)

    logits = np.concatenate([o[0] for o in evaluation.outputs])
    assert made.reference_metrics == {"top1": top1(logits, evaluation.labels)}


def test_the_set_is_made_once(cache, monkeypatch):
    plugin = ToyModel(images(20))
    first = ensure_accuracy_set(plugin, cache, evaluation=None, calibration=4)

    def no_second_reference(*args, **kwargs):
        raise AssertionError("the reference was computed again")

    monkeypatch.setattr(accuracy_set, "reference_outputs", no_second_reference)
    assert ensure_accuracy_set(ToyModel(images(20)), cache, evaluation=None, calibration=4) == first
    changed = images(20)
    changed[5] = Sample([changed[5].inputs[0] + 1], changed[5].label)
    with pytest.raises(AssertionError, match="computed again"):
        ensure_accuracy_set(ToyModel(changed), cache, evaluation=None, calibration=4)


def test_the_calibration_samples_do_not_depend_on_the_evaluation_count(cache):
    plugin = ToyModel(images(60), config=toy_config(primary="top1", max_samples=30))
    all_of_them = ensure_accuracy_set(plugin, cache, evaluation=None, calibration=10)
    five = ensure_accuracy_set(plugin, cache, evaluation=5, calibration=10)
    none = ensure_accuracy_set(plugin, cache, evaluation=0, calibration=10)
    assert (all_of_them.count, five.count, none.count) == (30, 5, 0)
    assert all_of_them.calibration.fingerprint == five.calibration.fingerprint
    assert five.calibration.fingerprint == none.calibration.fingerprint
    assert none.reference_metrics == {} and len(read_samples(none.evaluation)) == 0
    # max_samples caps the default: 10 calibrate, 30 of the 40 read are evaluated
    assert all_of_them.dataset_fingerprint == load_samples(plugin, limit=40).fingerprint
    with pytest.raises(InfercmpError, match="must not be negative"):
        ensure_accuracy_set(plugin, cache, evaluation=-1, calibration=10)


def test_no_dataset_no_set(cache):
    assert ensure_accuracy_set(ToyModel(None), cache, evaluation=None, calibration=8) is None


def test_an_unlabelled_set_measures_agreement_only(cache):
    plugin = ToyModel(images(10, labelled=False), config=toy_config(direction="max"))
    made = ensure_accuracy_set(plugin, cache, evaluation=None, calibration=2)
    assert (made.labelled, made.reference_metrics, made.count) == (False, {}, 8)
    assert read_samples(made.evaluation).labels is None


def test_a_primary_metric_without_labels_is_refused_before_any_work(cache):
    plugin = ToyModel(images(10, labelled=False))
    with pytest.raises(
        InfercmpError, match="accuracy.primary is 'top1' but the dataset has no labels"
    ):
        ensure_accuracy_set(plugin, cache, evaluation=0, calibration=2)


def test_a_metric_that_raises_is_one_line(cache):
    plugin = ToyModel(images(10), metrics=lambda outputs, labels: labels["x"])
    with pytest.raises(InfercmpError) as error:
        ensure_accuracy_set(plugin, cache, evaluation=None, calibration=2)
    assert str(error.value).startswith("model 'toy': evaluate() failed: IndexError: ")


def test_a_model_without_a_dynamic_batch_runs_one_sample_per_call(cache, monkeypatch):
    config = toy_config()
    shapes = config["inputs"][0]["shapes"]
    shapes.update(
        runtime=[1, 2, 3], optimization={"min": [1, 2, 3], "opt": [1, 2, 3], "max": [1, 2, 3]}
    )
    config["outputs"][0]["shape"]["runtime"] = [1, 4]
    plugin = ToyModel(images(12), config=config)
    calls = []
    run = accuracy_set.run_pytorch
    monkeypatch.setattr(
        accuracy_set, "run_pytorch", lambda p, m, x: calls.append(x[0].shape) or run(p, m, x)
    )
    made = ensure_accuracy_set(plugin, cache, evaluation=None, calibration=2)
    assert calls == [(1, 2, 3)] * 10
    evaluation = read_samples(made.evaluation)
    for (output,), want in zip(evaluation.outputs, one_at_a_time(plugin, evaluation.inputs)):
        np.testing.assert_allclose(output, want, rtol=1e-5, atol=1e-6)


def test_the_reference_is_batched_where_the_model_allows(cache, monkeypatch):
    monkeypatch.setattr(accuracy_set, "REFERENCE_BATCH", 4)
    calls = []
    run = accuracy_set.run_pytorch
    monkeypatch.setattr(
        accuracy_set, "run_pytorch", lambda p, m, x: calls.append(x[0].shape[0]) or run(p, m, x)
    )
    ensure_accuracy_set(ToyModel(images(20)), cache, evaluation=None, calibration=2)
    assert calls == [4, 4, 4, 4, 2]


class Pooled(torch.nn.Module):
    """Sums over the batch: one row whatever the batch, against its config's batch axis."""

    def forward(self, x):
        return torch.flatten(x, 1)[:, :4].sum(0, keepdim=True)


def test_an_output_without_one_row_per_sample_is_refused(cache):
    plugin = ToyModel(images(10))
    plugin.module = Pooled
    with pytest.raises(InfercmpError) as error:
        ensure_accuracy_set(plugin, cache, evaluation=None, calibration=2)
    assert "output 'logits' has 1 rows for 8 samples along its batch axis" in str(error.value)
    assert str(error.value).startswith("model 'toy': dataset sample ")


def test_pytorch_failing_on_a_sample_names_it(cache):
    class Failing(Linear):
        def forward(self, x):
            raise RuntimeError("no kernel")

    plugin = ToyModel(images(4))
    plugin.module = Failing
    calibrate, evaluate = split(4, 1)
    with pytest.raises(InfercmpError) as error:
        ensure_accuracy_set(plugin, cache, evaluation=None, calibration=1)
    assert str(error.value) == (
        f"model 'toy': dataset sample {evaluate[0]} (and 2 more in one batch): PyTorch fp32 "
        "failed on it: RuntimeError: no kernel"
    )


# --- random calibration ----------------------------------------------------------------------


def test_random_calibration_varies_the_example(cache):
    plugin = TinyCNN()
    experiment = default_experiment(plugin.config)
    made = random_calibration(plugin, cache, experiment, 6)
    assert (made.count, made.source) == (6, "random")
    rows = read_samples(made.path).inputs
    assert len(rows) == 6
    example = plugin.preprocess(plugin.load_example_inputs(experiment.shapes))
    np.testing.assert_array_equal(rows[0][0], example[0])  # the example itself comes first
    for row in rows:
        (image,) = row
        assert image.shape == example[0].shape and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1  # uint8 pixels drawn in the example's range
    assert len({row[0].tobytes() for row in rows}) == 6  # each seed gives another image
    assert made.fingerprint == samples_fingerprint(rows)
    assert random_calibration(plugin, cache, experiment, 6) == made  # cached, same fingerprint


def test_random_calibration_keeps_one_row_per_sample(cache):
    config = toy_config()
    config["inputs"][0]["shapes"]["example"] = [2, 3]

    class TwoRows(Toy):
        def preprocess(self, inputs):
            (x,) = inputs
            return [np.stack([x, x + 1]).astype(np.float32)]

    plugin = TwoRows(config=config)
    made = random_calibration(plugin, cache, default_experiment(plugin.config), 3)
    rows = read_samples(made.path).inputs
    assert [row[0].shape for row in rows] == [(1, 2, 3)] * 3


def test_random_calibration_checks_the_preprocessed_arrays(cache):
    class Wrong(Toy):
        def preprocess(self, inputs):
            return [np.asarray(inputs[0], dtype=np.float64)[None]]

    plugin = Wrong(config=parse_config(toy_config(), "toy").model_dump(mode="json"))
    with pytest.raises(InfercmpError, match="preprocess\\(\\) returned dtype float64"):
        random_calibration(plugin, cache, default_experiment(plugin.config), 2)
