"""A plugin's dataset: loading and checking its samples, the split, its checked metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

import infercmp
from infercmp import ModelPlugin
from infercmp.core.errors import InfercmpError
from infercmp.models.tiny_cnn import TinyCNN
from infercmp.workload import dataset, plugins
from infercmp.workload.config import parse_config
from infercmp.workload.dataset import (
    Sample,
    evaluate_checked,
    load_samples,
    split,
    stack_outputs,
    stack_rows,
    top1,
)

RAW_FORM = (
    "load_dataset() must give each sample's inputs in the raw form load_example_inputs() returns"
)


def toy_config(**accuracy):
    return {
        "name": "toy",
        "inputs": [
            {
                "name": "image",
                "dtype_str": "float32",
                "shapes": {
                    "dims_names": ["batch_size", "height", "width"],
                    "example": [2, 3],
                    "runtime": [-1, 2, 3],
                    "optimization": {"min": [1, 2, 3], "opt": [4, 2, 3], "max": [64, 2, 3]},
                },
            }
        ],
        "outputs": [
            {
                "name": "logits",
                "shape": {"runtime": [-1, 4], "dims_names": ["batch_size", "classes"]},
            }
        ],
        "accuracy": accuracy or {"primary": "top1"},
    }


class Toy(ModelPlugin):
    """Raw samples are [2, 3] float arrays; preprocess adds the batch axis."""

    name = "toy"

    def __init__(self, samples=None, metrics=None, config=None):
        self._samples = samples
        self._metrics = metrics
        self._config = config or toy_config()

    def load_config(self):
        return parse_config(self._config, "Toy")

    def preprocess(self, inputs):
        (x,) = inputs
        return [np.asarray(x)[None]]

    def load_dataset(self):
        return self._samples() if callable(self._samples) else self._samples

    def evaluate(self, outputs, labels):
        if self._metrics is not None:
            return self._metrics(outputs, labels)
        return {"top1": top1(outputs[0], labels)}


def images(count, labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Sample([rng.standard_normal((2, 3)).astype(np.float32)], k % 4 if labelled else None)
        for k in range(count)
    ]


def test_samples_are_preprocessed_with_their_labels():
    samples = images(5)
    loaded = load_samples(Toy(samples))
    assert len(loaded) == 5 and loaded.labelled
    for row, sample in zip(loaded.inputs, samples):
        (array,) = row
        assert array.shape == (1, 2, 3) and array.dtype == np.float32
        np.testing.assert_array_equal(array[0], sample.inputs[0])
    np.testing.assert_array_equal(loaded.labels, [0, 1, 2, 3, 0])


def test_unlabelled_samples_have_no_labels():
    loaded = load_samples(Toy(images(3, labelled=False)))
    assert loaded.labels is None and not loaded.labelled


def test_a_plugin_without_a_dataset_gives_none():
    assert load_samples(Toy(None)) is None
    assert load_samples(TinyCNN()) is None  # the base class has none


def test_the_fingerprint_covers_values_order_and_labels():
    base = images(4)
    fingerprint = load_samples(Toy(base)).fingerprint
    assert load_samples(Toy(images(4))).fingerprint == fingerprint  # repeatable
    changed = [Sample([s.inputs[0].copy()], s.label) for s in base]
    changed[2].inputs[0][1, 1] += 1e-3
    assert load_samples(Toy(changed)).fingerprint != fingerprint
    assert load_samples(Toy(base[::-1])).fingerprint != fingerprint
    relabelled = [Sample(s.inputs, 3 - s.label) for s in base]
    assert load_samples(Toy(relabelled)).fingerprint != fingerprint
    unlabelled = [Sample(s.inputs) for s in base]
    assert load_samples(Toy(unlabelled)).fingerprint != fingerprint


def test_limit_reads_no_further():
    def endless():
        yield from images(3)
        raise AssertionError("read past the limit")

    assert len(load_samples(Toy(endless), limit=3)) == 3
    with pytest.raises(ValueError):
        load_samples(Toy(images(3)), limit=0)


def test_a_sample_of_the_wrong_shape_is_one_line_naming_it():
    samples = images(4)
    samples[2] = Sample([np.zeros((2, 4), dtype=np.float32)], 1)
    with pytest.raises(InfercmpError) as error:
        load_samples(Toy(samples))
    assert str(error.value) == (
        "model 'toy': dataset sample 2: input 'image': dimension 2 (width) is 4 but the config "
        f"fixes it at 3 (preprocess() gave shapes (1, 2, 4)); {RAW_FORM}"
    )


def test_a_sample_of_the_wrong_dtype_names_it():
    samples = images(3)
    samples[1] = Sample([np.zeros((2, 3))], 1)  # float64
    with pytest.raises(InfercmpError, match=r"^model 'toy': dataset sample 1: input 'image': "):
        load_samples(Toy(samples))


def test_a_sample_of_several_rows_is_refused():
    class Batched(Toy):
        def preprocess(self, inputs):
            return [np.asarray(inputs[0])]  # the raw sample is already [rows, 2, 3]

    samples = [Sample([np.zeros((1, 2, 3), np.float32)]), Sample([np.zeros((3, 2, 3), np.float32)])]
    with pytest.raises(InfercmpError) as error:
        load_samples(Batched(samples))
    assert str(error.value) == (
        "model 'toy': dataset sample 1: input 'image' has 3 rows along batch_size (shape "
        "(3, 2, 3)); a Sample is one example, so give one row per sample"
    )


def test_load_dataset_raising_is_one_line():
    def broken():
        raise RuntimeError("the disk\nwent away")

    with pytest.raises(InfercmpError) as error:
        load_samples(Toy(broken))
    assert (
        str(error.value) == "model 'toy': load_dataset() failed: RuntimeError: the disk went away"
    )


def test_a_generator_raising_names_the_sample():
    def failing():
        yield from images(3)
        raise KeyError("image 3")

    with pytest.raises(InfercmpError) as error:
        load_samples(Toy(failing))
    assert (
        str(error.value)
        == "model 'toy': dataset sample 3: load_dataset() failed: KeyError: 'image 3'"
    )


def test_preprocess_raising_names_the_sample():
    samples = images(3)
    samples[1] = Sample([], 1)  # preprocess unpacks one array
    with pytest.raises(InfercmpError) as error:
        load_samples(Toy(samples))
    assert str(error.value).startswith(
        "model 'toy': dataset sample 1: preprocess() failed: ValueError:"
    )
    assert str(error.value).endswith(RAW_FORM)


def test_anything_but_a_sample_is_refused():
    with pytest.raises(InfercmpError) as error:
        load_samples(Toy([*images(2), (np.zeros((2, 3)), 1)]))
    assert str(error.value) == (
        "model 'toy': dataset sample 2: load_dataset() gave tuple; give "
        "infercmp.Sample(inputs, label) for each sample"
    )


def test_an_iterable_is_required():
    with pytest.raises(InfercmpError, match=r"^model 'toy': load_dataset\(\) failed: TypeError"):
        load_samples(Toy(42))


def test_labels_are_all_present_or_all_absent():
    samples = images(4)
    samples[3] = Sample(samples[3].inputs)
    with pytest.raises(InfercmpError) as error:
        load_samples(Toy(samples))
    assert str(error.value) == (
        "model 'toy': dataset sample 3 has no label but sample 0 has one; give every sample a "
        "label, or none"
    )


def test_labels_that_are_not_one_array_are_refused():
    samples = [Sample(s.inputs, [0] * (k + 1)) for k, s in enumerate(images(2))]
    with pytest.raises(
        InfercmpError, match=r"^model 'toy': the dataset's labels cannot be one array"
    ):
        load_samples(Toy(samples))
    samples = [Sample(s.inputs, object()) for s in images(2)]
    with pytest.raises(InfercmpError, match=r"labels have dtype object; give numbers, strings"):
        load_samples(Toy(samples))


def test_an_empty_dataset_is_an_error():
    with pytest.raises(InfercmpError) as error:
        load_samples(Toy([]))
    assert str(error.value) == (
        "model 'toy': load_dataset() gave no samples; return None from it when the model has "
        "no dataset"
    )


def test_a_registered_plugin_is_named_with_its_package(monkeypatch):
    plugin = TinyCNN()
    monkeypatch.setattr(plugin, "load_dataset", lambda: [Sample([np.zeros((8, 8), np.uint8)])])
    with pytest.raises(InfercmpError) as error:
        load_samples(plugin)
    assert str(error.value).startswith("model 'tiny-cnn' (package 'infercmp'): dataset sample 0: ")


# --- the split --------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "calibration"), [(100, 30), (1797, 128), (7, 0)])
def test_split_is_disjoint_and_complete(count, calibration):
    calibrate, evaluate = split(count, calibration)
    assert len(calibrate) == calibration
    assert set(calibrate).isdisjoint(evaluate)
    assert sorted(calibrate + evaluate) == list(range(count))


def test_split_is_deterministic_and_seeded():
    assert split(50, 10) == split(50, 10)
    assert split(50, 10, seed=1) != split(50, 10)
    calibrate, evaluate = split(50, 10)
    assert calibrate + evaluate != list(range(50))  # shuffled, not the dataset's order


def test_a_small_dataset_keeps_half_for_evaluation():
    calibrate, evaluate = split(9, 128)
    assert (len(calibrate), len(evaluate)) == (4, 5)
    assert split(1, 5) == ([], [0])
    assert split(0, 5) == ([], [])
    with pytest.raises(ValueError):
        split(10, -1)


# --- metrics ----------------------------------------------------------------------------------


def logits_for(labels, wrong=()):
    logits = np.zeros((len(labels), 4), dtype=np.float32)
    for k, label in enumerate(labels):
        logits[k, (label + 1) % 4 if k in wrong else label] = 1
    return logits


def test_evaluate_checked_gives_floats():
    labels = np.array([0, 1, 2, 3])
    metrics = evaluate_checked(Toy(), [logits_for(labels, wrong={1})], labels)
    assert metrics == {"top1": 0.75} and type(metrics["top1"]) is float

    plugin = Toy(metrics=lambda o, y: {"top1": np.float32(0.5), "count": np.int64(4)})
    assert evaluate_checked(plugin, [logits_for(labels)], labels) == {"top1": 0.5, "count": 4.0}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            lambda o, y: 1 / 0,
            "evaluate() failed: ZeroDivisionError: division by zero; fix the plugin's evaluate()",
        ),
        (lambda o, y: [0.5], "evaluate() returned list; return a dict of metric name -> number"),
        (
            lambda o, y: {"top1": float("nan")},
            "evaluate() returned top1 = nan; every metric must be a finite number",
        ),
        (
            lambda o, y: {"top1": "high"},
            "evaluate() returned top1 = 'high' (str); every metric must be a finite number",
        ),
        (
            lambda o, y: {"top1": True},
            "evaluate() returned top1 = True (bool); every metric must be a finite number",
        ),
        (
            lambda o, y: {3: 0.5},
            "evaluate() returned a metric named 3; names are non-empty strings",
        ),
        (
            lambda o, y: {"top5": 0.9},
            "evaluate() returned no 'top1', the config's accuracy.primary (it returned top5); "
            "return it, or name one of those in accuracy.primary",
        ),
    ],
)
def test_a_bad_metric_is_one_line(metrics, message):
    labels = np.array([0, 1])
    with pytest.raises(InfercmpError) as error:
        evaluate_checked(Toy(metrics=metrics), [logits_for(labels)], labels)
    assert str(error.value) == f"model 'toy': {message}"


def test_a_primary_metric_needs_labels():
    called = []
    plugin = Toy(metrics=lambda o, y: called.append(1) or {})
    with pytest.raises(InfercmpError) as error:
        evaluate_checked(plugin, [logits_for([0])], None)
    assert str(error.value) == (
        "model 'toy': the config's accuracy.primary is 'top1' but the dataset has no labels; "
        "give each Sample a label, or remove accuracy.primary"
    )
    agreement_only = Toy(metrics=plugin._metrics, config=toy_config(direction="max"))
    assert evaluate_checked(agreement_only, [logits_for([0])], None) == {}
    assert called == []  # evaluate() is not called without labels


def test_top1():
    labels = np.array([3, 1, 0, 2, 2])
    assert top1(logits_for(labels), labels) == 1.0
    assert math.isclose(top1(logits_for(labels, wrong={0, 4}), labels), 0.6)
    assert top1(logits_for(labels), labels.reshape(-1, 1)) == 1.0
    with pytest.raises(ValueError, match="4 rows of logits for 5 labels"):
        top1(logits_for(labels)[:4], labels)
    with pytest.raises(ValueError, match=r"shape \[samples, classes\]"):
        top1(np.zeros(5), labels)


def test_stack_rows():
    rows = [np.full((1, 3), k) for k in range(4)]
    assert stack_rows(rows, 0).shape == (4, 3)
    np.testing.assert_array_equal(stack_rows(rows, 0)[:, 0], [0, 1, 2, 3])
    assert stack_rows([np.zeros((2, 1)), np.ones((2, 1))], 1).shape == (2, 2)
    assert stack_rows([np.zeros(3), np.ones(3)], None).shape == (2, 3)
    with pytest.raises(ValueError):
        stack_rows([], 0)


def test_stack_outputs_stacks_each_output_along_its_batch_axis():
    outputs = [[np.full((1, 4), k, np.float32)] for k in range(3)]
    (logits,) = stack_outputs(Toy(), outputs)
    assert logits.shape == (3, 4)
    with pytest.raises(InfercmpError) as error:
        stack_outputs(Toy(), [[np.zeros((1, 4))], [np.zeros((1, 5))]])
    assert str(error.value).startswith(
        "model 'toy': output 'logits' cannot be stacked over the samples for evaluate() ("
    )


def test_sample_and_top1_come_from_infercmp():
    assert infercmp.Sample is dataset.Sample is plugins.Sample
    assert infercmp.top1 is dataset.top1
    assert {"Sample", "top1"} <= set(infercmp.__all__)
