"""ONNX -> engine plans with TensorRT-RTX on the CPU, the TensorRT facts, and the CLI commands."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from infercmp.artifacts.cache import ArtifactCache
from infercmp.core.errors import InfercmpError, MissingDependency
from infercmp.engines.tensorrt.flavour import load_trt_module, runtime_refusal
from infercmp.workload.config import parse_config
from infercmp.workload.plugins import get_plugin

slow = pytest.mark.slow


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize(
    "name", ["tiny-cnn", "tiny-two-io", "tiny-encoder", pytest.param("resnet50", marks=slow)]
)
@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_build_makes_a_plan_and_the_second_build_is_a_hit(exported, shared_cache, name, precision):
    from infercmp.engines.tensorrt.build import build_engine

    plugin, onnx = exported(name)
    plan = build_engine(plugin, shared_cache, onnx, precision=precision)
    assert not plan.cached
    assert plan.path.stat().st_size > 0
    assert plan.precision == precision
    assert plan.log_path.read_text().strip()  # the builder's own log, kept with the plan
    again = build_engine(plugin, shared_cache, onnx, precision=precision)
    assert again.cached and again.key == plan.key and again.path == plan.path
    if plan.backend == "tensorrt-rtx":
        assert plan.strongly_typed


@pytest.mark.tensorrt
def test_bf16_and_precisions_get_their_own_entries(exported, shared_cache):
    from infercmp.engines.tensorrt.build import build_engine

    plugin, onnx = exported("tiny-cnn")
    bf16 = build_engine(plugin, shared_cache, onnx, precision="bf16")
    fp32 = build_engine(plugin, shared_cache, onnx, precision="fp32")
    assert bf16.key != fp32.key
    with pytest.raises(InfercmpError, match="unknown precision 'fp8'"):
        build_engine(plugin, shared_cache, onnx, precision="fp8")
    # int8 is built from a calibrated Q/DQ model only (explicit quantization), never bare.
    with pytest.raises(InfercmpError, match="Q/DQ ONNX model quantized with calibration"):
        build_engine(plugin, shared_cache, onnx, precision="int8")


@pytest.mark.tensorrt
def test_a_damaged_plan_is_rebuilt(exported, tmp_path):
    from infercmp.engines.tensorrt.build import build_engine

    plugin, onnx = exported("tiny-two-io")
    cache = ArtifactCache(tmp_path)
    plan = build_engine(plugin, cache, onnx)
    plan.path.write_bytes(plan.path.read_bytes()[:100])
    rebuilt = build_engine(plugin, cache, onnx)
    assert not rebuilt.cached and rebuilt.path.stat().st_size > 100


@pytest.mark.tensorrt
def test_a_profile_that_does_not_fit_the_onnx_inputs_is_refused(exported, tmp_path, monkeypatch):
    from infercmp.engines.tensorrt.build import build_engine

    plugin, onnx = exported("tiny-cnn")
    data = plugin.config.model_dump()
    image = data["inputs"][0]["shapes"]
    image["runtime"] = [-1, 3, -1, -1]  # the export fixed the batch at 1
    image["optimization"]["max"] = [4, 3, 128, 128]
    # The plugin is the session's shared one: give its config back afterwards.
    monkeypatch.setitem(plugin.__dict__, "config", parse_config(data))
    with pytest.raises(InfercmpError, match=r"input 'image': optimization.max \[4, 3, 128, 128\]"):
        build_engine(plugin, ArtifactCache(tmp_path), onnx)


@pytest.mark.tensorrt
def test_a_parse_failure_names_the_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from infercmp.artifacts.onnx_export import OnnxArtifact
    from infercmp.engines.tensorrt.build import build_engine

    plugin = get_plugin("tiny-two-io")
    nodes = [
        helper.make_node("NoSuchOp", ["features"], ["score"], name="mystery_node", domain="x"),
        helper.make_node("Identity", ["token_ids"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bad",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch_size", 16]),
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch_size", 8]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("embedding", TensorProto.INT64, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.opset_import.append(helper.make_opsetid("x", 1))
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    artifact = OnnxArtifact(path, "bad", False, "handmade", 0.0, 17, 1e-4, None)
    with pytest.raises(InfercmpError, match=r"ONNX parser rejects bad.onnx: mystery_node"):
        build_engine(plugin, ArtifactCache(tmp_path / "cache"), artifact)


def test_a_missing_module_names_the_extra_with_no_backend_installed_faked(monkeypatch):
    import infercmp.engines.tensorrt.flavour as trt

    monkeypatch.setattr(trt, "installed_backends", lambda: [])
    load_trt_module.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"pip install 'infercmp\[tensorrt\]'"):
            load_trt_module(None)
        with pytest.raises(InfercmpError, match="unknown TensorRT backend 'trt'"):
            load_trt_module("trt")
    finally:
        load_trt_module.cache_clear()


def test_asking_for_an_absent_backend_names_its_extra_with_tensorrt_hidden(monkeypatch):
    # A None in sys.modules makes `import tensorrt` fail, installed or not: the check always runs.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    load_trt_module.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"pip install 'infercmp\[tensorrt\]'"):
            load_trt_module("tensorrt")
    finally:
        load_trt_module.cache_clear()


@pytest.mark.tensorrt
def test_trt_module_facts():
    trt = load_trt_module(None)
    assert trt.backend in ("tensorrt", "tensorrt-rtx")
    assert trt.version.split(".")[0].isdigit()
    if trt.backend == "tensorrt-rtx":
        assert trt.strongly_typed and trt.precision_flag("fp16") is None


def test_runtime_refusals_are_explained():
    assert "compute capability 9.0" in runtime_refusal("tensorrt-rtx", (9, 0))
    assert runtime_refusal("tensorrt-rtx", (8, 9)) is None
    assert runtime_refusal("tensorrt", (9, 0)) is None
    assert "no bf16" in runtime_refusal("tensorrt-rtx", (7, 5), "bf16")
    assert "none is visible" in runtime_refusal("tensorrt", None)


# -- CLI -----------------------------------------------------------------------------------
def _cli(*args: str):
    from infercmp.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.tensorrt
def test_cli_build_then_cache_ls_and_clear(shared_cache, exported):
    exported("tiny-cnn")  # the export is a hit: the CLI only builds
    root = str(shared_cache.root)
    first = _cli("build", "tiny-cnn", "--precision", "fp16", "--cache-dir", root, "--force")
    assert first.exit_code == 0, first.output
    assert "built tiny-cnn fp16" in first.output
    second = _cli("build", "tiny-cnn", "--precision", "fp16", "--cache-dir", root)
    assert second.exit_code == 0 and "cached tiny-cnn fp16" in second.output
    listing = _cli("cache", "ls", "--cache-dir", root)
    assert listing.exit_code == 0 and "plan" in listing.output and "tiny-cnn" in listing.output


def test_cli_export_with_shapes_and_cache_clear(tmp_path):
    root = str(tmp_path / "cache")
    result = _cli(
        "export", "tiny-two-io", "--exporter", "torchscript", "--shape", "2,16;2,8",
        "--cache-dir", root,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exported tiny-two-io" in result.output and "reference 2x16_2x8" in result.output
    cleared = _cli("cache", "clear", "--cache-dir", root)
    assert cleared.exit_code == 0, cleared.output
    # the ONNX model and one reference
    assert cleared.output.startswith(f"removed 2 entries from {root} ("), cleared.output
    assert "is empty" in _cli("cache", "ls", "--cache-dir", root).output
