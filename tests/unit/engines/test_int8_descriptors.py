"""Which engine runs int8 on which device, the refusals that say why not, and the option."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from infercmp.core.errors import InfercmpError
from infercmp.core.parity import default_rtol
from infercmp.engines.descriptor import EngineDescriptor, Machine
from infercmp.engines.registry import get_descriptor

CPU_ONLY = Machine(cuda_devices=0, cpu_flags=frozenset({"avx512_vnni", "amx_int8"}))
WITH_GPU = Machine(cuda_devices=1, cpu_flags=CPU_ONLY.cpu_flags)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "pytorch"])
def test_cpu_engines_run_int8_on_the_cpu(engine):
    descriptor = get_descriptor(engine)
    assert descriptor.refusal("cpu", "int8", CPU_ONLY) is None
    assert "int8" in descriptor.precisions_on("cpu")


@pytest.mark.parametrize(
    ("engine", "why"),
    [
        ("onnxruntime", "fp32 kernels between QuantizeLinear and DequantizeLinear"),
        ("pytorch", "oneDNN CPU kernels only"),
    ],
)
def test_int8_on_cuda_is_refused_with_the_reason(engine, why):
    descriptor = get_descriptor(engine)
    reason = descriptor.refusal("cuda", "int8", WITH_GPU)
    assert reason is not None and why in reason and "int8 on cuda" in reason
    assert "int8" not in descriptor.precisions_on("cuda")
    assert "fp32" in descriptor.precisions_on("cuda")  # only int8 is refused there


def test_tensorrt_int8_needs_a_gpu_and_says_how_it_is_built():
    descriptor = get_descriptor("tensorrt")
    reason = descriptor.refusal("cuda", "int8", CPU_ONLY)
    assert reason is not None and "Q/DQ" in reason and "no" in reason
    assert descriptor.refusal("cuda", "int8", WITH_GPU) is None


def test_a_third_party_engine_declares_refused_precisions_and_a_bad_declaration_is_named():
    class Mine(EngineDescriptor):
        name = "mine"
        summary = "x"
        precisions = ("fp32", "int8")
        runtime = "x:Y"
        refused_precisions = {("int8", "cuda"): "no int8 kernels on GPUs"}

    mine = Mine()
    mine.check_declaration()
    assert mine.precisions_on("cuda") == ("fp32",)
    assert mine.precisions_on("cpu") == ("fp32", "int8")
    assert mine.refusal("cuda", "int8", WITH_GPU) == (
        "mine does not run int8 on cuda: no int8 kernels on GPUs"
    )

    class Broken(Mine):
        refused_precisions = {("int4", "cuda"): "?"}

    with pytest.raises(TypeError, match="refused_precisions"):
        Broken().check_declaration()


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "pytorch", "tensorrt"])
def test_int8_exclude_is_an_option_and_convert_needs_calibration(engine):
    descriptor = get_descriptor(engine)
    options = descriptor.parse_options({"int8_exclude": "layer4.2;fc"})
    assert options.int8_exclude == "layer4.2;fc"  # type: ignore[attr-defined]
    with pytest.raises(InfercmpError, match="int8_exclude"):
        descriptor.parse_options({"int8_exclude": 3})
    context = SimpleNamespace(
        calibration=None, progress=lambda _m: None, cache=None, onnx=None, plugin=None
    )
    if engine == "tensorrt":
        return  # its convert needs TensorRT; tests/unit/engines/test_tensorrt_int8_build.py
    with pytest.raises(InfercmpError, match=f"engine '{engine}': int8 needs calibration"):
        descriptor.convert(context, "int8", options)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "pytorch", "tensorrt"])
def test_tune_never_searches_int8(engine):
    descriptor = get_descriptor(engine)
    space = descriptor.search_space
    assert space is not None
    for device in descriptor.devices:
        # named for every device: tune never falls back to the engine's own precisions
        assert device in space.precisions
        assert "int8" not in space.precisions[device]


def test_int8_parity_is_loose_but_not_open():
    assert 0.01 < default_rtol("int8", "cpu") <= 0.2
    assert default_rtol("int8", "cuda") == default_rtol("int8", "cpu")


def test_runtimes_refuse_int8_where_the_descriptor_does(tmp_path: Path):
    from infercmp.engines import EngineSpec
    from infercmp.engines.base import UnsupportedCombination
    from infercmp.engines.registry import engine_class

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    spec = EngineSpec("tiny-cnn", "cuda", "int8", model, ("image",), ("logits",))
    with pytest.raises(UnsupportedCombination, match="int8 on cuda"):
        engine_class("onnxruntime")().load(spec)
