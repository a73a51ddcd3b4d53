"""OpenVINO's profile: a second compile with PERF_COUNT, its running-mean counters differenced
over the profiled calls, and each layer joined to the artifact's nodes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from prepared_engines import prepared_on_cpu

from infercmp.engines.openvino import profile as ov_profile
from infercmp.engines.openvino.runtime import OpenVINOEngine
from infercmp.engines.registry import get_descriptor


def _prepared(exported, name: str, artifact: Path | None = None, **options) -> OpenVINOEngine:
    engine = OpenVINOEngine()
    prepared_on_cpu(engine, name, artifact or exported(name)[1].path, **options)
    return engine


def _onnx_names(exported, name: str) -> tuple[set[str], set[str]]:
    model = onnx.load(str(exported(name)[1].path), load_external_data=False)
    convs = {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    return {n.name for n in model.graph.node}, convs


def test_tiny_cnn_layers_name_every_conv(exported, tmp_path):
    engine = _prepared(exported, "tiny-cnn")
    profile = engine.profile(5, 1, tmp_path)
    engine.compute()  # the measured engine is untouched by its profiled twin
    engine.release()

    assert profile.profiler == get_descriptor("openvino").profiler == ov_profile.PROFILER
    assert len(profile.wall_ms) == profile.iterations == 5
    assert profile.events and {e.calls for e in profile.events} == {5}
    assert all(e.device == "cpu" and e.exec_type for e in profile.events)
    assert ov_profile.RUNNING_MEANS in profile.notes
    assert sum(e.total_ms for e in profile.events) <= sum(profile.wall_ms)
    names, convs = _onnx_names(exported, "tiny-cnn")
    origins = {o for e in profile.events for o in e.origin}
    assert convs <= origins <= names
    assert all(e.origin == [] for e in profile.events if e.op_type == "Reorder")


@pytest.mark.parametrize("model", ["tiny-two-io", "tiny-encoder"])
def test_several_inputs_and_dynamic_axes_profile(exported, tmp_path, model):
    engine = _prepared(exported, model)
    profile = engine.profile(2, 1, tmp_path)
    engine.release()
    assert profile.events and len(profile.wall_ms) == 2
    assert {o for e in profile.events for o in e.origin} <= _onnx_names(exported, model)[0]


def test_several_streams_profile_one_stream_of_their_threads(exported, tmp_path):
    engine = _prepared(exported, "tiny-cnn", streams=2)
    assert engine.info["streams"] == 2
    profile = engine.profile(2, 0, tmp_path)
    engine.release()
    assert profile.events and any("1 stream" in note for note in profile.notes)


def test_an_ir_artifact_is_named_by_its_onnx_node_prefixes(exported, tmp_path):
    import openvino as ov

    xml = tmp_path / "tiny-cnn.xml"
    ov.save_model(ov.Core().read_model(str(exported("tiny-cnn")[1].path)), str(xml))
    engine = _prepared(exported, "tiny-cnn", artifact=xml)
    profile = engine.profile(2, 0, tmp_path)
    engine.release()
    ir_names, _ = ov_profile.artifact_names(xml, ov.Core().read_model)
    origins = {o for e in profile.events for o in e.origin}
    assert origins <= set(ir_names)
    # `node_conv2d/WithoutBiases` is an IR op too; the shortest prefix is the ONNX node's name
    assert {"node_conv2d", "node_conv2d_1"} <= origins


class _Request:
    """A request whose counters are what OpenVINO's CPU plugin gives: each layer's running mean
    (whole microseconds) over every inference so far."""

    def __init__(self, per_call_us: list[dict[str, int]]) -> None:
        self.per_call = per_call_us
        self.runs = 0

    def infer(self) -> None:
        self.runs += 1

    def get_profiling_info(self):
        done = self.per_call[: self.runs]
        infos = [
            SimpleNamespace(
                node_name=name,
                node_type="Convolution",
                exec_type="jit",
                status=SimpleNamespace(name="EXECUTED"),
                real_time=timedelta(microseconds=sum(c[name] for c in done) // len(done)),
            )
            for name in done[-1]
        ]
        infos.append(
            SimpleNamespace(
                node_name="skipped",
                node_type="Reshape",
                exec_type="undef",
                status=SimpleNamespace(name="NOT_RUN"),
                real_time=timedelta(0),
            )
        )
        return infos


def test_running_means_are_differenced_over_the_profiled_calls():
    # prepare's probe (slow), one warm-up, then three profiled calls
    calls = [{"conv": 900, "fc": 300}, {"conv": 200, "fc": 90}]
    calls += [{"conv": 100, "fc": 40}, {"conv": 120, "fc": 40}, {"conv": 110, "fc": 40}]
    request = _Request(calls)
    request.infer()  # the probe run prepare() makes
    noop = lambda: None  # noqa: E731
    hot_path = (noop, request.infer, noop, noop)
    origins = {"conv": ["node_conv"]}
    profile = ov_profile.profile_request(request, hot_path, 3, 1, origins, runs_before=1)
    by = {e.name: e for e in profile.events}
    assert set(by) == {"conv", "fc"}  # NOT_RUN layers are left out
    assert by["conv"].total_ms == pytest.approx(0.330)  # 100 + 120 + 110 us, not the means
    assert by["fc"].total_ms == pytest.approx(0.120)
    assert by["conv"].origin == ["node_conv"] and by["fc"].origin == []
    assert {e.calls for e in profile.events} == {3} and len(profile.wall_ms) == 3


def _op(name: str, original: str | None):
    info = (
        {}
        if original is None
        else {"originalLayersNames": SimpleNamespace(astype=lambda _t: original)}
    )
    return SimpleNamespace(get_friendly_name=lambda: name, get_rt_info=lambda: info)


def test_runtime_ops_are_joined_to_artifact_nodes_and_tensors():
    model = SimpleNamespace(
        get_ordered_ops=lambda: [
            _op("image_abcd_acdb_conv", ""),  # a reorder the plugin inserted
            _op("conv/WithoutBiases", "conv/WithoutBiases,conv,relu"),
            _op("logits", "logits"),  # named after the Gemm's output tensor
            _op("image", None),
            _op("odd", "made_up/thing"),
        ]
    )
    names, producers = ["conv", "relu", "gemm"], {"logits": "gemm", "r": "relu"}
    assert ov_profile.runtime_origins(model, names, producers) == {
        "image_abcd_acdb_conv": [],
        "conv/WithoutBiases": ["conv", "relu"],
        "logits": ["gemm"],
        "image": [],
        "odd": [],
    }
    ir = SimpleNamespace(get_ordered_ops=lambda: [_op("fc/Multiply", "fc/WithoutBiases,fc/q/x")])
    both = ["fc", "fc/WithoutBiases"]
    assert ov_profile.runtime_origins(ir, both, {}, shortest=True) == {"fc/Multiply": ["fc"]}
    assert ov_profile.runtime_origins(ir, both, {}) == {"fc/Multiply": ["fc", "fc/WithoutBiases"]}
