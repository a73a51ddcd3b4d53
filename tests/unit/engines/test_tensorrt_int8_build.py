"""TensorRT int8 on the build side, over a fake TensorRT 10 module: explicit quantization only.

No GPU here runs TensorRT, so the builder is a fake that records what infercmp asks of it: the
file parsed, the network creation flags and the builder flags. The Q/DQ model is a stand-in
file: what matters is that the plan is built from it, strongly typed, and keyed by it.
"""

from __future__ import annotations

import enum
import types
from pathlib import Path

import pytest

from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.quantize.common import Quantized, QuantMeta
from infercmp.core.errors import InfercmpError
from infercmp.engines.tensorrt import build
from infercmp.engines.tensorrt.flavour import TrtModule
from infercmp.workload.plugins import get_plugin


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    BF16 = 1
    INT8 = 2


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


def fake_tensorrt(record: dict) -> types.ModuleType:
    module = types.ModuleType("tensorrt")

    class ILogger:
        def __init__(self) -> None: ...

    class Tensor:
        name, shape = "image", (1, 3, -1, -1)

    class Network:
        num_inputs = 1

        def get_input(self, i: int) -> Tensor:
            return Tensor()

    class Parser:
        def __init__(self, network, logger) -> None: ...

        def parse_from_file(self, path: str) -> bool:
            record["parsed"] = path
            return True

    class Config:
        @property
        def profiling_verbosity(self):
            return record.get("verbosity", ProfilingVerbosity.LAYER_NAMES_ONLY)

        @profiling_verbosity.setter
        def profiling_verbosity(self, value) -> None:
            record["verbosity"] = value

        def add_optimization_profile(self, profile) -> None: ...

        def set_flag(self, flag) -> None:
            record.setdefault("builder_flags", []).append(flag)

    class Profile:
        def set_shape(self, *args) -> None: ...

    class Builder:
        def __init__(self, logger) -> None: ...

        def create_network(self, flags: int) -> Network:
            record["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes:
            return b"plan"

    module.ILogger = ILogger  # type: ignore[attr-defined]
    module.OnnxParser = Parser  # type: ignore[attr-defined]
    module.Builder = Builder  # type: ignore[attr-defined]
    module.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag  # type: ignore[attr-defined]
    module.BuilderFlag = BuilderFlag  # type: ignore[attr-defined]
    module.ProfilingVerbosity = ProfilingVerbosity  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_build(monkeypatch):
    record: dict = {}
    trt = TrtModule(fake_tensorrt(record), "tensorrt", "10.9.0")  # weakly typed by default
    monkeypatch.setattr(build, "load_trt_module", lambda backend=None: trt)
    monkeypatch.setattr(build, "gpu_model", lambda device_id=0: "Fake GPU")
    return record


def _qdq(tmp_path: Path, key: str) -> Quantized:
    path = tmp_path / f"{key}.onnx"
    path.write_bytes(b"qdq model")
    meta = QuantMeta(
        method="ort-qdq-minmax-tensorrt",
        calibration_seconds=0.5,
        calibration_samples=4,
        calibration_source="dataset",
        calibration_fingerprint=key,
        exclude=[],
        excluded_nodes=[],
        quantized=3,
        tools={},
    )
    return Quantized(path, key, False, meta)


def _onnx(tmp_path: Path) -> types.SimpleNamespace:
    path = tmp_path / "fp32.onnx"
    path.write_bytes(b"fp32 model")
    return types.SimpleNamespace(path=path, key="onnx-key")


def test_int8_without_a_qdq_model_says_how_it_is_made(tmp_path, fake_build):
    plugin = get_plugin("tiny-cnn")
    with pytest.raises(InfercmpError, match="Q/DQ ONNX model quantized with calibration"):
        build.build_engine(plugin, ArtifactCache(tmp_path / "c"), _onnx(tmp_path), precision="int8")


def test_int8_builds_strongly_typed_from_the_qdq_model_without_builder_flags(tmp_path, fake_build):
    plugin, cache, onnx = get_plugin("tiny-cnn"), ArtifactCache(tmp_path / "c"), _onnx(tmp_path)
    qdq = _qdq(tmp_path, "cal-a")
    plan = build.build_engine(plugin, cache, onnx, precision="int8", qdq=qdq)
    assert fake_build["parsed"] == str(qdq.path)
    assert fake_build["network_flags"] == 1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert "builder_flags" not in fake_build  # no INT8 flag, no calibrator
    assert plan.strongly_typed and plan.precision == "int8"
    assert qdq.path.is_file()  # the cached Q/DQ model is the source, never deleted

    again = build.build_engine(plugin, cache, onnx, precision="int8", qdq=qdq)
    assert again.cached and again.key == plan.key
    other = build.build_engine(plugin, cache, onnx, precision="int8", qdq=_qdq(tmp_path, "cal-b"))
    assert other.key != plan.key  # another calibration is another plan


def test_fp16_on_tensorrt_10_still_uses_the_builder_flag(tmp_path, fake_build):
    plugin, cache, onnx = get_plugin("tiny-cnn"), ArtifactCache(tmp_path / "c"), _onnx(tmp_path)
    plan = build.build_engine(plugin, cache, onnx, precision="fp16")
    assert fake_build["parsed"] == str(onnx.path)
    assert fake_build["builder_flags"] == [BuilderFlag.FP16] and not plan.strongly_typed


def test_the_descriptor_quantizes_symmetric_then_builds(tmp_path, fake_build, monkeypatch):
    from infercmp.artifacts.samples import CalibrationSet
    from infercmp.engines.descriptor import ConvertContext
    from infercmp.engines.tensorrt import descriptor as trt_descriptor

    made = {}

    def fake_qdq(cache, onnx, calibration, exclude, flavour):
        made.update(exclude=exclude, flavour=flavour, fingerprint=calibration.fingerprint)
        return _qdq(tmp_path, "from-descriptor")

    monkeypatch.setattr(trt_descriptor, "ensure_qdq_onnx", fake_qdq)
    calibration = CalibrationSet(tmp_path / "c.npz", 4, "fp-x", "random")
    context = ConvertContext(
        get_plugin("tiny-cnn"), ArtifactCache(tmp_path / "c"), _onnx(tmp_path), lambda _m: None,
        calibration=calibration,
    )  # fmt: skip
    descriptor = trt_descriptor.DESCRIPTOR
    options = descriptor.parse_options({"int8_exclude": "2;0"})
    converted = descriptor.convert(context, "int8", options)
    assert made == {"exclude": ("0", "2"), "flavour": "tensorrt", "fingerprint": "fp-x"}
    assert converted is not None and converted.facts["int8"]["calibration_source"] == "dataset"
    assert "RANDOM" not in converted.detail  # the stand-in says dataset
    assert dict(converted.options) == {"backend": "tensorrt"}


def test_plans_keep_detailed_layer_information_for_profiles(tmp_path, fake_build):
    """--profile reads layer types, tactics and ONNX nodes through the engine inspector: only a
    plan built with DETAILED verbosity keeps them (the default keeps layer names only)."""
    plugin, cache, onnx = get_plugin("tiny-cnn"), ArtifactCache(tmp_path / "c"), _onnx(tmp_path)
    build.build_engine(plugin, cache, onnx, precision="fp32")
    assert fake_build["verbosity"] == ProfilingVerbosity.DETAILED
