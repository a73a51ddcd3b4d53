"""A combination's stored accuracy (docs/results-format.md, "accuracy")."""

from __future__ import annotations

import pytest
from synthetic_runs import Combo, make_run

from infercmp.core.errors import InfercmpError
from infercmp.store.run_store import RunStore
from infercmp.store.schema import validated_result


def _stored(tmp_path) -> dict:
    result = RunStore.open(make_run(tmp_path, [Combo("onnxruntime")])).results[0]
    return result.model_dump(mode="json")


def test_a_result_keeps_its_accuracy_through_the_store(tmp_path):
    record = _stored(tmp_path)
    assert record["accuracy"] is None  # not asked: none
    record["accuracy"] = {
        "samples": 32, "labelled": True, "primary": "top1", "metrics": {"top1": 0.75},
        "reference_metrics": {"top1": 0.75}, "change": {"top1": 0.0}, "top1_agreement": 1.0,
        "outputs": [{"name": "logits", "max_abs": 4.8e-7, "cosine_min": 0.99999}],
        "calibration": None, "error": None,
    }  # fmt: skip
    store = RunStore.create(tmp_path / "again", "tiny-cnn", {"settings": {}})
    store.add_result(validated_result(record, tmp_path / "x"), None, None)
    store.finish("complete")
    (back,) = RunStore.open(store.path).results
    assert back.accuracy == record["accuracy"]


@pytest.mark.parametrize(
    "bad",
    [
        {"labelled": True},  # no sample count
        {"samples": -1},
        {"samples": 3, "metrics": {"top1": "high"}},
        {"samples": 3, "outputs": [{"max_abs": 1.0}]},  # an output without its name
    ],
)
def test_a_damaged_accuracy_is_one_error_naming_the_file(tmp_path, bad):
    record = _stored(tmp_path)
    record["accuracy"] = bad
    with pytest.raises(InfercmpError, match="accuracy"):
        validated_result(record, tmp_path / "results.jsonl")
