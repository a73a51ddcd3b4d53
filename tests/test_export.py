"""PyTorch -> ONNX export: checks, dynamic axes run in ONNX Runtime, parity, cache behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from infercmp.cache import ArtifactCache
from infercmp.errors import InfercmpError
from infercmp.export import (
    CHECK_BATCH_MAX,
    _fit,
    ensure_reference,
    export_onnx,
    run_pytorch,
    runtime_shapes,
)
from infercmp.parity import compare_output
from infercmp.plugins import get_plugin
from infercmp.shapes import default_experiment, parse_shape

MODELS = [
    "tiny-cnn",
    "tiny-two-io",
    "tiny-encoder",
    pytest.param("resnet50", marks=pytest.mark.slow),
]


def _dims(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.output]
    }, model.ir_version


@pytest.mark.parametrize("name", MODELS)
def test_export_checks_dynamic_axes_and_parity(exported, name):
    plugin, artifact = exported(name)
    config = plugin.config
    assert artifact.path.is_file()
    assert artifact.parity_passed
    assert set(artifact.checked_shapes) == {"example", "min", "opt", "max"}
    for spec, shape in zip(config.inputs, artifact.checked_shapes["max"]):
        # The batch axis is checked at a few rows only (export.CHECK_BATCH_MAX).
        batch = spec.shapes.dims_names.index("batch_size")
        top = spec.shapes.optimization.max
        assert shape[batch] == min(
            top[batch], max(CHECK_BATCH_MAX, spec.shapes.optimization.min[batch])
        )
        assert shape[:batch] + shape[batch + 1 :] == top[:batch] + top[batch + 1 :]
    assert {p.at for p in artifact.parity} == {"example", "min", "opt", "max"}
    for p in artifact.parity:
        assert p.reference_dtype == p.dtype == "float32"
        assert p.cosine > 0.9999
    dims, ir_version = _dims(artifact.path)
    assert ir_version <= 10  # onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes
    for spec in config.inputs:
        for axis, dim in enumerate(dims[spec.name]):
            runtime = spec.shapes.runtime[axis]
            assert dim == (spec.shapes.dims_names[axis] if runtime == -1 else runtime)
    assert list(dims) == config.input_names + config.output_names


def test_encoder_keeps_batch_and_sequence_dynamic(exported):
    import onnxruntime as ort

    plugin, artifact = exported("tiny-encoder")
    assert artifact.exporter == "dynamo"
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    module = plugin.load_pytorch_module()
    for shape in ["1,5;1,5", "3,17;3,17", "8,100;8,100"]:
        inputs = plugin.preprocess(
            plugin.load_example_inputs(parse_shape(shape, plugin.config).shapes)
        )
        assert all(a.dtype == np.int64 for a in inputs)
        got = session.run(plugin.config.output_names, dict(zip(plugin.config.input_names, inputs)))
        ref = run_pytorch(plugin, module, inputs)
        batch, seq = inputs[0].shape
        assert got[0].shape == (batch, seq, 32) and got[1].shape == (batch, 32)
        for r, g in zip(ref, got):
            assert _judge("x", shape, r, g, 1e-4, None).ok


def test_second_export_is_a_hit_that_does_not_import_torch(exported, shared_cache):
    exported("tiny-encoder")
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        start = time.perf_counter()
        from infercmp.cache import ArtifactCache
        from infercmp.export import export_onnx
        from infercmp.plugins import get_plugin
        cache = ArtifactCache(Path({str(shared_cache.root)!r}))
        artifact = export_onnx(get_plugin("tiny-encoder"), cache)
        print(json.dumps({{"cached": artifact.cached, "seconds": artifact.seconds,
                          "torch": "torch" in sys.modules,
                          "total": time.perf_counter() - start}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cached"] is True
    assert result["torch"] is False


def test_a_new_alias_finds_the_unchanged_module_by_content(exported, shared_cache, monkeypatch):
    plugin, first = exported("tiny-cnn")
    monkeypatch.setenv("INFERCMP_SOME_OPTION", "1")  # alias changes, the module does not
    again = export_onnx(plugin, shared_cache)
    assert again.cached and again.key == first.key


def test_tighter_tolerances_on_a_cached_export_fail_with_the_numbers(exported, shared_cache):
    plugin, _ = exported("tiny-two-io")
    with pytest.raises(InfercmpError, match=r"(?s)does not match PyTorch fp32 .*max abs .*cosine"):
        export_onnx(plugin, shared_cache, rtol=0.0, atol=0.0)


def test_force_exports_again(tmp_path):
    plugin = get_plugin("tiny-two-io")
    cache = ArtifactCache(tmp_path)
    first = export_onnx(plugin, cache, exporter="torchscript")
    assert not first.cached and first.exporter == "torchscript"
    assert export_onnx(plugin, cache, exporter="torchscript").cached
    forced = export_onnx(plugin, cache, exporter="torchscript", force=True)
    assert not forced.cached and forced.path.is_file()


def test_torchscript_bakes_the_sequence_axis_and_the_runtime_check_names_cause_then_dynamo(
    tmp_path,
):
    with pytest.raises(InfercmpError) as info:
        export_onnx(get_plugin("tiny-encoder"), ArtifactCache(tmp_path), exporter="torchscript")
    message = str(info.value)
    assert message.startswith(
        "model 'tiny-encoder': ONNX Runtime cannot run the torchscript export at the min shape"
    )
    assert message.endswith(
        "; the TorchScript exporter probably baked a dynamic axis into the graph as a constant "
        "(it does this to sequence axes); try --exporter dynamo"
    )


class _FailingSession:
    """Stands in for ONNX Runtime: every run fails as a model with a bad graph would."""

    def run(self, names, feeds):
        raise RuntimeError("Got invalid dimensions for input: image")


def test_a_dynamo_failure_never_suggests_dynamo_with_a_fake_onnxruntime_session(
    tmp_path, monkeypatch
):
    """Issue 14: 'try --exporter dynamo' was printed when dynamo was the exporter that failed."""
    import infercmp.export

    monkeypatch.setattr(infercmp.export, "_ort_session", lambda path: _FailingSession())
    plugin = get_plugin("tiny-cnn")
    with pytest.raises(InfercmpError) as info:
        export_onnx(plugin, ArtifactCache(tmp_path / "dynamo"), exporter="dynamo")
    assert str(info.value) == (
        "model 'tiny-cnn': ONNX Runtime cannot run the dynamo export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image; "
        "try --exporter torchscript"
    )
    with pytest.raises(InfercmpError) as info:
        export_onnx(plugin, ArtifactCache(tmp_path / "auto"), exporter="auto")
    assert "try --exporter" not in str(info.value)  # both were tried
    assert str(info.value).splitlines() == [
        "model 'tiny-cnn': no exporter produced a working ONNX model:",
        "  dynamo: ONNX Runtime cannot run the dynamo export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image",
        "  torchscript: ONNX Runtime cannot run the torchscript export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image; "
        "the TorchScript exporter probably baked a dynamic axis into the graph as a constant "
        "(it does this to sequence axes)",
    ]


def test_unknown_exporter_is_a_clear_error(tmp_path):
    with pytest.raises(InfercmpError, match="unknown exporter 'onnxscript'; choose auto"):
        export_onnx(get_plugin("tiny-cnn"), ArtifactCache(tmp_path), exporter="onnxscript")


def test_reference_npz_holds_inputs_and_outputs_in_config_order(exported, shared_cache):
    plugin, _ = exported("tiny-encoder")
    experiment = parse_shape("3,20;3,20", plugin.config)
    path = ensure_reference(plugin, shared_cache, experiment)
    with np.load(path) as data:
        assert sorted(data.files) == ["input_0", "input_1", "output_0", "output_1"]
        assert data["input_0"].shape == (3, 20) and data["input_0"].dtype == np.int64
        assert data["output_0"].shape == (3, 20, 32) and data["output_1"].shape == (3, 32)
    assert runtime_shapes(plugin, experiment) == [(3, 20), (3, 20)]
    assert ensure_reference(plugin, shared_cache, experiment) == path
    other = ensure_reference(plugin, shared_cache, default_experiment(plugin.config))
    assert other != path


def test_runtime_shapes_follow_preprocess_without_torch():
    plugin = get_plugin("tiny-cnn")
    assert runtime_shapes(plugin, parse_shape("40,48,3", plugin.config)) == [(1, 3, 40, 48)]


def test_fit_tiles_and_crops_real_values():
    ids = np.arange(6).reshape(2, 3)
    assert _fit(ids, (3, 5)).tolist() == [[0, 1, 2, 0, 1], [3, 4, 5, 3, 4], [0, 1, 2, 0, 1]]
    assert _fit(ids, (1, 2)).tolist() == [[0, 1]]


def _judge(name, at, reference, actual, rtol, atol):
    """The parity rule as export applies it: dtype kept, tolerances as given."""
    return compare_output(name, reference, actual, rtol, atol, at=at, same_dtype=True)


def test_compare_output_reports_every_mismatch_kind():
    ref = np.array([1.0, 2.0, 0.0], dtype=np.float32)
    same = _judge("y", "example", ref, ref.copy(), 1e-4, None)
    assert same.ok and same.max_abs == 0 and same.cosine == pytest.approx(1.0)
    off = _judge("y", "example", ref, ref + np.float32(1e-3), 1e-4, None)
    assert not off.ok and off.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert "max abs 0.001" in off.describe()
    assert not _judge("y", "example", ref, ref[:2], 1e-4, None).ok
    assert not _judge("y", "example", ref, ref.astype(np.float64), 1e-4, None).ok
    nan = ref.copy()
    nan[0] = np.nan
    assert not _judge("y", "example", ref, nan, 1e-4, None).ok
    # near-zero elements are judged against the output's scale, not their own magnitude
    assert _judge("y", "example", ref, ref + np.float32(1e-5), 1e-4, None).ok
    assert not _judge("y", "example", ref, ref + np.float32(1e-5), 1e-4, 0.0).ok
