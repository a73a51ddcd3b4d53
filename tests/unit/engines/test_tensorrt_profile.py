"""TensorRT's per-layer profile, against the fake TensorRT and CUDA runtime of
test_tensorrt_engine (extended here with an IProfiler and the engine inspector): the real
runtime cannot run on a machine without libnvinfer and a GPU."""

from __future__ import annotations

import enum
import json

import numpy as np
import pytest
from test_tensorrt_engine import (
    X_FLOAT,
    FakeContext,
    FakeCudart,
    FakeEngine,
    fake_trt,
    run_once,
    spec_for,
    write_plan,
)

from infercmp.engines.registry import get_descriptor
from infercmp.engines.tensorrt import profile as trt_profile
from infercmp.engines.tensorrt import runtime as trt_engine
from infercmp.engines.tensorrt.profile import parse_layer_name
from infercmp.engines.tensorrt.runtime import TensorRTEngine

CONV_RELU = "/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/relu/Relu"
MYELIN = "{ForeignNode[/layer4/layer4.0/conv1/Conv.../fc/Gemm]}"
REFORMAT = "Reformatting CopyNode for Input Tensor 0 to " + CONV_RELU
LAYERS = [(REFORMAT, 0.01), (CONV_RELU, 0.25), (MYELIN, 1.5)]


class LayerInformationFormat(enum.Enum):
    ONELINE = 0
    JSON = 1


class IProfiler:
    """pybind11's base: a subclass must call `IProfiler.__init__` (checked here)."""

    def __init__(self) -> None:
        self.base_initialised = True


class ProfilingContext(FakeContext):
    """TensorRT 10's context: with `enqueue_emits_profiler` off, each enqueue records the
    layer timers and `report_to_profiler()` hands them to the profiler."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.profiler = None
        self.enqueue_emits_profiler = True
        self.pending: list[tuple[str, float]] = []
        self.reports = 0

    def execute_async_v3(self, stream: int) -> bool:
        ok = super().execute_async_v3(stream)
        if self.profiler is not None:
            self.pending = list(LAYERS)
            if self.enqueue_emits_profiler:
                self.report_to_profiler()
        return ok

    def report_to_profiler(self) -> bool:
        assert self.profiler is not None and self.profiler.base_initialised
        for name, ms in self.pending:
            self.profiler.report_layer_time(name, ms)
        self.pending = []
        self.reports += 1
        return True


class OlderContext(FakeContext):
    """A context without `enqueue_emits_profiler`: enqueue reports by itself."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine)
        self.profiler = None

    def execute_async_v3(self, stream: int) -> bool:
        ok = super().execute_async_v3(stream)
        if self.profiler is not None:
            for name, ms in LAYERS:
                self.profiler.report_layer_time(name, ms)
        return ok


class FakeInspector:
    def __init__(self, layers) -> None:
        self.layers = layers
        self.execution_context = None

    def get_engine_information(self, fmt) -> str:
        assert fmt is LayerInformationFormat.JSON and self.execution_context is not None
        return json.dumps({"Layers": self.layers, "Bindings": ["x", "y_x"]})


DETAILED = [
    {"Name": REFORMAT, "LayerType": "Reformat", "TacticName": "copy"},
    {
        "Name": CONV_RELU,
        "LayerType": "CaskConvolution",
        "TacticName": "sm90_xmma_fprop_implicit_gemm",
        "Metadata": "[ONNX Layer: /layer1/layer1.0/conv1/Conv]\x1f"
        "[ONNX Layer: /layer1/layer1.0/relu/Relu]",
    },
    {
        "Name": MYELIN,
        "LayerType": "Myelin",
        "TacticName": "",
        "Metadata": "[ONNX Layer: /layer4/layer4.0/conv1/Conv]\x1e[ONNX Layer: /avgpool/Pool]"
        "\x1f[ONNX Layer: /fc/Gemm]",
    },
]


@pytest.fixture
def profiling_backend(monkeypatch):
    """The fake backend of test_tensorrt_engine with IProfiler, a profiling context and an
    inspector answering with `inspector_layers` (set on the returned namespace)."""
    cudart = FakeCudart()
    module = fake_trt("tensorrt", "10.9.0", cudart)
    module.IProfiler = IProfiler
    module.LayerInformationFormat = LayerInformationFormat
    state = {"context": ProfilingContext, "layers": [name for name, _ in LAYERS]}
    made: list[FakeContext] = []

    def create_execution_context(self):
        made.append(state["context"](self))
        return made[-1]

    def create_engine_inspector(self):
        return FakeInspector(state["layers"])

    monkeypatch.setattr(FakeEngine, "create_execution_context", create_execution_context)
    monkeypatch.setattr(
        FakeEngine, "create_engine_inspector", create_engine_inspector, raising=False
    )
    monkeypatch.setattr(trt_engine, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_engine, "import_backend", lambda backend: module)
    return state, made


def _profiled(tmp_path, iterations: int, warmup: int, made: list[FakeContext]):
    plan = write_plan(tmp_path, [X_FLOAT])
    engine = TensorRTEngine()
    engine.load(spec_for(plan, [X_FLOAT]))
    engine.prepare([np.arange(6, dtype=np.float32).reshape(2, 3)])
    run_once(engine)
    try:
        raw = engine.profile(iterations, warmup, tmp_path / "profile")
        outputs = run_once(engine)
    finally:
        engine.release()
    return raw, made[-1], outputs


@pytest.mark.parametrize("context", [ProfilingContext, OlderContext])
def test_layer_times_are_summed_over_the_profiled_calls_only(tmp_path, profiling_backend, context):
    state, made = profiling_backend
    state["context"] = context
    raw, ctx, outputs = _profiled(tmp_path, iterations=4, warmup=2, made=made)
    assert raw.profiler == "TensorRT IProfiler" and raw.iterations == 4 and len(raw.wall_ms) == 4
    rows = {e.name: (e.total_ms, e.calls) for e in raw.events}
    assert rows == {name: (pytest.approx(ms * 4), 4) for name, ms in LAYERS}
    assert raw.device_busy_ms == pytest.approx(sum(ms for _, ms in LAYERS))
    # probe; EngineBase's warm-up and unprofiled half; the profiler's warm-up and profiled
    # calls; the unprofiled half after; the call after the phase
    assert ctx.launches == 1 + (2 + 2) + (2 + 4) + 2 + 1
    assert ctx.profiler is None  # detached: the call after the phase reported nothing more
    if context is ProfilingContext:
        assert ctx.enqueue_emits_profiler is False and ctx.reports == 4
    assert outputs[0].tolist() == [[0, 1, 2], [3, 4, 5]]  # the engine still computes after it


def test_layer_names_give_origin_and_type_when_the_plan_has_no_details(tmp_path, profiling_backend):
    _, made = profiling_backend
    raw, _, _ = _profiled(tmp_path, iterations=1, warmup=0, made=made)
    by_name = {e.name: e for e in raw.events}
    assert by_name[CONV_RELU].origin == [
        "/layer1/layer1.0/conv1/Conv",
        "/layer1/layer1.0/relu/Relu",
    ]
    assert by_name[CONV_RELU].op_type == "Conv+Relu" and by_name[CONV_RELU].device == "cuda"
    assert (by_name[REFORMAT].origin, by_name[REFORMAT].op_type) == ([], "Reformat")
    assert by_name[MYELIN].origin == ["/layer4/layer4.0/conv1/Conv", "/fc/Gemm"]
    assert by_name[MYELIN].op_type == "Myelin"
    assert trt_profile.MYELIN_NOTE in raw.notes and trt_profile.NAME_TYPES_NOTE in raw.notes


def test_the_inspector_gives_type_tactic_and_onnx_nodes_when_it_has_them(
    tmp_path, profiling_backend
):
    state, made = profiling_backend
    state["layers"] = DETAILED
    raw, _, _ = _profiled(tmp_path, iterations=1, warmup=0, made=made)
    conv = next(e for e in raw.events if e.name == CONV_RELU)
    assert (conv.op_type, conv.exec_type) == ("CaskConvolution", "sm90_xmma_fprop_implicit_gemm")
    assert conv.origin == ["/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/relu/Relu"]
    myelin = next(e for e in raw.events if e.name == MYELIN)
    assert myelin.origin == ["/layer4/layer4.0/conv1/Conv", "/avgpool/Pool", "/fc/Gemm"]
    reformat = next(e for e in raw.events if e.name == REFORMAT)
    assert (reformat.op_type, reformat.origin) == ("Reformat", [])  # no metadata: the name's
    assert trt_profile.MYELIN_REGION_NOTE in raw.notes
    assert trt_profile.MYELIN_NOTE not in raw.notes
    assert trt_profile.NAME_TYPES_NOTE not in raw.notes


@pytest.mark.parametrize(
    ("name", "origin", "op_type"),
    [
        (CONV_RELU, ["/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/relu/Relu"], "Conv+Relu"),
        ("{ForeignNode[node_Conv_0...node_Gemm_9]}", ["node_Conv_0", "node_Gemm_9"], "Myelin"),
        ("{ForeignNode[/fc/Gemm]}", ["/fc/Gemm"], "Myelin"),
        ("Reformatting CopyNode for Output Tensor 0 to /fc/Gemm", [], "Reformat"),
        ("PWN(PWN(/act/Sigmoid), /act/Mul)", ["/act/Sigmoid", "/act/Mul"], "Sigmoid+Mul"),
        ("node_Conv_12", ["node_Conv_12"], "Conv"),
        ("/conv1/Conv + PWN(/relu/Relu)", ["/conv1/Conv", "/relu/Relu"], "Conv+Relu"),
    ],
)
def test_layer_names_parse_into_onnx_nodes(name, origin, op_type):
    parsed = parse_layer_name(name)
    assert (parsed.origin, parsed.op_type) == (origin, op_type)
    assert parsed.myelin == name.startswith("{ForeignNode")


def test_the_descriptor_names_its_profiler():
    assert get_descriptor("tensorrt").profiler == "TensorRT IProfiler"
