"""The int8 quantizers' shared parts: exclusions, cache keys, calibration feed, the entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.quantize.common import (
    QuantizeResult,
    calibration_rows,
    ensure_quantized,
    onnx_nodes_for,
    parse_exclude,
    quant_key,
    require_calibration,
)
from infercmp.artifacts.samples import CalibrationSet, Samples, write_samples
from infercmp.core.errors import InfercmpError


def _calibration(tmp_path: Path, rows: list[list[np.ndarray]], fingerprint="f1") -> CalibrationSet:
    path = tmp_path / f"cal-{fingerprint}.npz"
    write_samples(path, Samples(inputs=rows))
    return CalibrationSet(path, len(rows), fingerprint, "dataset")


def test_exclude_text_splits_on_semicolons_and_ignores_order_and_blanks():
    assert parse_exclude(" fc ; layer4.2;;fc") == ("fc", "layer4.2")
    assert parse_exclude("layer4.2;fc") == parse_exclude("fc;layer4.2")
    assert parse_exclude(None) == () and parse_exclude("") == ()


def test_the_key_changes_with_what_changes_the_model(tmp_path):
    cal = CalibrationSet(tmp_path / "c.npz", 4, "f1", "dataset")
    base = dict(
        source_key="s", method="m", params={"a": 1}, calibration=cal, exclude=(), tools={"t": "1"}
    )
    key = quant_key(**base)
    assert quant_key(**base) == key
    changes = [
        {"source_key": "s2"},
        {"method": "m2"},
        {"params": {"a": 2}},
        {"calibration": CalibrationSet(cal.path, 4, "f2", "dataset")},
        {"exclude": ("fc",)},
        {"tools": {"t": "2"}},
    ]
    keys = {quant_key(**{**base, **change}) for change in changes}
    assert key not in keys and len(keys) == len(changes)
    # the path of the samples file is not the samples: same fingerprint, same key
    assert (
        quant_key(**{**base, "calibration": CalibrationSet(Path("/x"), 4, "f1", "random")}) == key
    )


def test_int8_without_calibration_is_one_line(tmp_path):
    with pytest.raises(InfercmpError, match="engine 'openvino': int8 needs calibration samples"):
        require_calibration(None, "openvino")
    empty = CalibrationSet(tmp_path / "c.npz", 0, "f", "random")
    with pytest.raises(InfercmpError, match="has none"):
        require_calibration(empty, "onnxruntime")


def test_calibration_rows_add_a_missing_batch_axis_and_check_the_input_count(tmp_path):
    rows = [[np.ones((3, 4, 4), np.float32), np.ones((1, 5), np.int64)]]
    cal = _calibration(tmp_path, rows)
    (image, ids), *_ = list(calibration_rows(cal, [4, 2]))
    assert image.shape == (1, 3, 4, 4) and ids.shape == (1, 5)
    with pytest.raises(InfercmpError, match="2 inputs per sample but the model takes 1"):
        list(calibration_rows(cal, [4]))


def _scoped(name: str, scopes: list[str]):
    node = helper.make_node("Relu", [f"{name}_in"], [f"{name}_out"], name=name)
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
    return node


def test_module_paths_map_to_onnx_nodes_through_the_export_wrapper():
    # infercmp's export wraps the plugin's module as attribute `module`
    model = helper.make_model(
        helper.make_graph(
            [
                _scoped("node_conv", ["", "module", "module.layer1", "module.layer1.0", "conv"]),
                _scoped("node_fc", ["", "module", "module.fc", "linear"]),
                _scoped("node_out", ["", "getitem"]),
            ],
            "g",
            [],
            [],
        )
    )
    assert onnx_nodes_for(model, ["layer1"]) == ["node_conv"]
    assert onnx_nodes_for(model, ["fc", "layer1.0"]) == ["node_fc", "node_conv"]
    assert onnx_nodes_for(model, []) == []
    with pytest.raises(InfercmpError, match=r"no ONNX node comes from module 'layer2'.*fc, layer1"):
        onnx_nodes_for(model, ["layer2"])


def test_a_quantized_entry_is_made_once_and_records_calibration(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    cal = _calibration(tmp_path, [[np.zeros((1, 2), np.float32)]] * 3)
    calls = []

    def produce(staged: Path) -> QuantizeResult:
        calls.append(staged)
        (staged / "model.bin").write_bytes(b"int8")
        return QuantizeResult(seconds=1.5, nodes_quantized=7, excluded=("node_fc",), samples=3)

    args = ("int8-test", "k1", "model.bin", produce, "m", cal, ("fc",), {"tool": "1"})
    first = ensure_quantized(cache, *args)
    again = ensure_quantized(cache, *args)
    assert len(calls) == 1 and not first.cached and again.cached
    assert again.path.read_bytes() == b"int8"
    facts = again.facts()
    assert facts["calibration_s"] == 1.5 and facts["calibration_samples"] == 3
    assert facts["calibration_source"] == "dataset" and facts["calibration_fingerprint"] == "f1"
    assert facts["excluded_modules"] == ["fc"] and facts["excluded_nodes"] == ["node_fc"]
    assert facts["quantized_ops"] == 7 and facts["cached"] is True
    assert "3 dataset samples, cached" in again.detail("x")
    assert "calibrated in 1.5 s" in first.detail("x")


def test_ort_merges_calibration_ranges_at_a_count_that_does_not_divide_the_samples():
    from infercmp.artifacts.quantize.ort_qdq import _merge_every

    assert _merge_every(16) is None  # small: all at once
    for count in (17, 32, 128, 240, 1000):
        every = _merge_every(count)
        assert every is not None and 2 <= every <= 16 and count % every  # 1.31's bug otherwise
