"""int8 end to end on tiny-cnn: each CPU engine quantizes through its descriptor with a small
calibration set, runs it through its runtime, and records what ran in INT8.

Checked for each: the outputs stay near PyTorch fp32 (a bound a broken quantizer fails), the
engine info counts INT8 ops, a second convert is a cache hit, and excluding a module keeps
its layer in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infercmp.artifacts.samples import CalibrationSet, Samples, write_samples
from infercmp.engines import EngineSpec
from infercmp.engines.descriptor import ConvertContext
from infercmp.engines.registry import engine_class, get_descriptor
from infercmp.workload.module import load_module, run_pytorch

# tiny-cnn is Sequential(conv 0, relu, conv 2, relu, pool, flatten, linear 6)
EXCLUDED = "2"
# What each engine's engine info says ran INT8 and what stayed float (int8.py of each engine).
INT8_COUNT = {
    "onnxruntime": "int8_nodes",
    "openvino": "int8_compute_layers",
    "pytorch": "int8_nodes",
}
FLOAT_COUNT = "float_compute_nodes"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, exported):
    """(plugin, onnx, calibration set, held-out inputs): 16 calibration images, 4 others."""
    plugin, onnx = exported("tiny-cnn")
    rng = np.random.default_rng(7)

    def image() -> list[np.ndarray]:
        raw = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        return list(plugin.preprocess([raw]))

    path = tmp_path_factory.mktemp("int8") / "calibration.npz"
    rows = [image() for _ in range(16)]
    write_samples(path, Samples(inputs=rows))
    calibration = CalibrationSet(path, len(rows), "tiny-cnn-test-16", "random")
    return plugin, onnx, calibration, [image() for _ in range(4)]


def _convert(engine: str, calibrated, shared_cache, exclude: str | None = None):
    plugin, onnx, calibration, _ = calibrated
    descriptor = get_descriptor(engine)
    options = {"int8_exclude": exclude} if exclude else {}
    context = ConvertContext(plugin, shared_cache, onnx, lambda _m: None, calibration=calibration)
    return descriptor.convert(context, "int8", descriptor.parse_options(options)), options


def _run(engine: str, converted, options, inputs):
    runtime = engine_class(engine)()
    spec = EngineSpec(
        "tiny-cnn", "cpu", "int8", converted.artifact, ("image",), ("logits",),
        options={**dict(converted.options), **options},
    )  # fmt: skip
    runtime.load(spec)
    outputs = []
    try:
        for row in inputs:
            runtime.prepare(row)
            runtime.copy_in()
            runtime.compute()
            outputs.append([o.copy() for o in runtime.copy_out()])
            runtime.synchronize()
    finally:
        runtime.release()
    return outputs, runtime.info


def _check_engine(engine: str, calibrated, shared_cache) -> None:
    plugin, _, _, held_out = calibrated
    module, _ = load_module(plugin)
    first, options = _convert(engine, calibrated, shared_cache)
    again, _ = _convert(engine, calibrated, shared_cache)
    assert again.facts["int8"]["cached"] and again.artifact == first.artifact
    assert again.facts["int8"]["calibration_samples"] == 16
    outputs, info = _run(engine, again, options, held_out)
    for row, (got,) in zip(held_out, outputs):
        (want,) = run_pytorch(plugin, module, row)
        scale = float(np.abs(want).max())
        # int8 error on tiny-cnn is ~1% of the output scale; a wrong scale or zero point is
        # of the order of the scale itself
        assert float(np.abs(got - want).max()) < 0.1 * scale, engine
    summary = info["int8"]
    assert summary[INT8_COUNT[engine]] > 0 and summary[FLOAT_COUNT] == 0, summary

    mixed, mixed_options = _convert(engine, calibrated, shared_cache, exclude=EXCLUDED)
    assert mixed.artifact != first.artifact and mixed.facts["int8"]["excluded_modules"] == ["2"]
    _, mixed_info = _run(engine, mixed, mixed_options, held_out[:1])
    kept = mixed_info["int8"]
    assert kept[FLOAT_COUNT] == 1, kept  # conv 2 stayed float
    assert kept[INT8_COUNT[engine]] == summary[INT8_COUNT[engine]] - 1, kept


def test_onnxruntime_int8_runs_qlinear_ops(calibrated, shared_cache):
    _check_engine("onnxruntime", calibrated, shared_cache)


def test_openvino_int8_runs_i8_kernels_with_f32_elsewhere(calibrated, shared_cache):
    pytest.importorskip("nncf")
    _check_engine("openvino", calibrated, shared_cache)


@pytest.mark.slow  # two cold torch.compile runs and torchao's import: over 10 s on 2 vCPUs
def test_pytorch_int8_compiles_to_onednn_int8_kernels(calibrated, shared_cache, monkeypatch):
    pytest.importorskip("torchao")
    from infercmp.engines.pytorch import int8

    probes = []
    real_probe = int8.probe
    monkeypatch.setattr(int8, "probe", lambda *a: probes.append(1) or real_probe(*a))
    _check_engine("pytorch", calibrated, shared_cache)
    # The code is read once per engine: a re-prepare (four rows, then one: the accuracy
    # phase prepares every call) must not compile afresh (0.3 s a call on digits).
    assert len(probes) == 2


def test_pytorch_int8_keeps_a_dynamic_batch_axis(shared_cache, tmp_path):
    """digits takes any batch: its int8 program must too (torch.export specialises an axis it
    sees at size 1, so the example is exported at two rows)."""
    pytest.importorskip("torchao")
    pytest.importorskip("sklearn")
    from infercmp.artifacts.quantize.pt2e import ensure_pt2e
    from infercmp.workload.plugins import get_plugin

    plugin = get_plugin("digits")
    rng = np.random.default_rng(0)
    rows = [[rng.random((1, 1, 8, 8), dtype=np.float32)] for _ in range(8)]
    write_samples(tmp_path / "calibration.npz", Samples(inputs=rows))
    calibration = CalibrationSet(tmp_path / "calibration.npz", 8, "digits-test-8", "random")
    quantized = ensure_pt2e(shared_cache, plugin, calibration)
    program = torch.export.load(str(quantized.path)).module()
    for batch in (1, 3):
        images = torch.from_numpy(np.concatenate([rows[0][0]] * batch))
        assert program(images).shape == (batch, 10)


def test_a_module_path_that_is_not_there_is_one_line(calibrated, shared_cache):
    from infercmp.core.errors import InfercmpError

    with pytest.raises(InfercmpError, match="no ONNX node comes from module 'layer9'"):
        _convert("onnxruntime", calibrated, shared_cache, exclude="layer9")


def test_calibration_seconds_are_recorded(calibrated, shared_cache):
    converted, _ = _convert("onnxruntime", calibrated, shared_cache)
    facts = converted.facts["int8"]
    assert facts["calibration_s"] >= 0 and facts["calibration_source"] == "random"
    assert "RANDOM-INPUT" in converted.detail
    assert Path(converted.artifact).name == "model.onnx"


@pytest.mark.tensorrt
def test_tensorrt_parses_and_builds_the_symmetric_qdq_model(calibrated, shared_cache):
    """TensorRT-RTX builds ahead of time without a GPU: its parser judges the Q/DQ model
    (int32 biases, which ORT makes by default, are refused) and the build is strongly typed."""
    from infercmp.artifacts.quantize.ort_qdq import ensure_qdq_onnx
    from infercmp.engines.tensorrt.build import build_engine

    plugin, onnx, calibration, _ = calibrated
    qdq = ensure_qdq_onnx(shared_cache, onnx, calibration, (), "tensorrt")
    plan = build_engine(plugin, shared_cache, onnx, precision="int8", qdq=qdq)
    assert plan.precision == "int8" and plan.strongly_typed and plan.path.stat().st_size > 0
    assert "DequantizeLinear" in plan.log_path.read_text()  # built from the Q/DQ graph
