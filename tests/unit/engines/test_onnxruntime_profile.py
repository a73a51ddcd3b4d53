"""ONNX Runtime's profile: a second, profiled session of the engine, its trace read into events
of the profiled calls only, and each optimized node joined back to the artifact's nodes."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import helper
from prepared_engines import prepared_on_cpu

from infercmp.core.contract import RawProfile
from infercmp.engines.onnxruntime import profile as ort_profile
from infercmp.engines.onnxruntime.runtime import OnnxRuntimeEngine
from infercmp.engines.registry import get_descriptor


def _prepared(exported, name: str, **options) -> tuple[OnnxRuntimeEngine, onnx.ModelProto]:
    artifact = exported(name)[1].path
    engine = OnnxRuntimeEngine()
    prepared_on_cpu(engine, name, artifact, **options)
    return engine, onnx.load(str(artifact), load_external_data=False)


@pytest.mark.parametrize("level", ["all", "basic"])
def test_tiny_cnn_events_name_every_conv_and_only_the_profiled_calls(exported, tmp_path, level):
    engine, model = _prepared(exported, "tiny-cnn", graph_optimization_level=level)
    profile = engine.profile(3, 2, tmp_path)
    engine.compute()  # the measured engine is untouched by its profiled twin
    engine.release()

    assert profile.profiler == get_descriptor("onnxruntime").profiler == ort_profile.PROFILER
    assert len(profile.wall_ms) == profile.iterations == 3
    assert profile.events and profile.device_busy_ms is None and profile.notes == []
    # warm-up (2) and prepare's probe run are dropped by position: 3 calls per node
    assert {e.calls for e in profile.events} == {3}
    assert sum(e.total_ms for e in profile.events) <= sum(profile.wall_ms)
    names = {node.name for node in model.graph.node}
    origins = {o for e in profile.events for o in e.origin}
    assert origins <= names
    assert {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")} <= origins
    assert (tmp_path / ort_profile.OPTIMIZED).is_file()
    assert not (tmp_path / (ort_profile.OPTIMIZED + ".data")).exists()  # weights not kept
    if level == "basic":  # nothing fused or renamed: each node is its own origin
        assert all(e.origin == [e.name] for e in profile.events)
    else:  # Relu fused into its Conv: one event names both
        ops = {n.name: n.op_type for n in model.graph.node}
        fused = [e for e in profile.events if {"Conv", "Relu"} <= {ops[o] for o in e.origin}]
        assert fused


@pytest.mark.parametrize("model", ["tiny-two-io", "tiny-encoder"])
def test_several_inputs_and_dynamic_axes_profile(exported, tmp_path, model):
    engine, onnx_model = _prepared(exported, model)
    profile = engine.profile(2, 1, tmp_path)
    engine.release()
    assert profile.events and len(profile.wall_ms) == 2
    assert {e.calls for e in profile.events} == {2}
    names = {node.name for node in onnx_model.graph.node}
    assert {o for e in profile.events for o in e.origin} <= names


def test_cuda_graph_profiles_without_the_graph_and_times_the_measured_engine(
    exported, tmp_path, monkeypatch
):
    engine, _ = _prepared(exported, "tiny-cnn", enable_cuda_graph=True)  # ignored on the CPU
    specs, seen = [], {}
    real_load = OnnxRuntimeEngine._load

    def load(self, spec):
        specs.append(spec)
        real_load(self, spec)

    def fake(session, hot_path, iterations, warmup, workdir, artifact, **kw):
        seen.update(kw)
        return RawProfile(profiler="profile", iterations=iterations, wall_ms=[], events=[])

    monkeypatch.setattr(OnnxRuntimeEngine, "_load", load)
    monkeypatch.setattr(ort_profile, "profile_session", fake)
    assert engine.profile(2, 0, tmp_path).profiler == "profile"
    engine.release()
    assert [s.options["enable_cuda_graph"] for s in specs] == [False]
    assert seen["measured"] is not None and seen["notes"] == [ort_profile.CUDA_GRAPH]


def _trace(runs: int, kernels: bool) -> list[dict]:
    """A CUDA-EP trace: per run a CPU node, a CUDA node (two kernels), fences, model_run."""
    trace = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 5}]
    for r in range(runs):
        t = 100 * (r + 1)
        trace += [
            {"cat": "Node", "name": "shape_fence_before", "ts": t, "dur": 1, "args": {}},
            {"cat": "Node", "name": "shape_kernel_time", "ts": t + 1, "dur": 2,
             "args": {"op_name": "Shape", "provider": "CPUExecutionProvider"}},
            {"cat": "Node", "name": "conv_kernel_time", "ts": t + 3, "dur": 4,
             "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
            {"cat": "Session", "name": "model_run", "ts": t, "dur": 60},
        ]  # fmt: skip
        if kernels:
            parent = {"parent_name": "conv_kernel_time", "op_name": "Conv"}
            trace += [
                {"cat": "Kernel", "name": "implicit_gemm", "ts": t + 10, "dur": 20, "args": parent},
                {"cat": "Kernel", "name": "bias_relu", "ts": t + 25, "dur": 10, "args": parent},
            ]
    return trace


def test_cuda_kernels_are_attributed_to_their_node_and_give_device_busy():
    origins = {"conv": ["node_conv"], "shape": ["node_shape"]}
    events, busy, notes = ort_profile.trace_events(_trace(3, True), 2, origins, cuda=True)
    by = {(e.name, e.exec_type): e for e in events}
    assert set(by) == {
        ("shape", "CPUExecutionProvider"),
        ("conv", "implicit_gemm"),
        ("conv", "bias_relu"),
    }  # the CUDA node's launch time and the fences are left out
    assert by[("conv", "implicit_gemm")].device == "cuda"
    assert by[("conv", "implicit_gemm")].total_ms == pytest.approx(0.040)  # 2 runs x 20 us
    assert by[("conv", "bias_relu")].origin == ["node_conv"]
    assert by[("shape", "CPUExecutionProvider")].device == "cpu"
    assert {e.calls for e in events} == {2}  # the first run is warm-up
    assert busy == pytest.approx(0.025)  # union of [10, 30] and [25, 35] us per run
    assert notes == [ort_profile.CUDA_NODES_DROPPED]


def test_cuda_without_kernel_records_keeps_host_times_and_says_so():
    events, busy, notes = ort_profile.trace_events(_trace(2, False), 2, {}, cuda=True)
    conv = next(e for e in events if e.name == "conv")
    assert conv.device == "cpu" and conv.total_ms == pytest.approx(0.008) and busy is None
    assert ort_profile.NO_CUDA_KERNELS in notes


def test_fewer_runs_than_iterations_is_an_error():
    with pytest.raises(ValueError, match="1 model_run"):
        ort_profile.trace_events(_trace(1, False), 2, {}, cuda=False)


def test_profile_session_times_warmup_apart_and_notes_a_missing_graph(tmp_path):
    calls = {"profiled": 0, "measured": 0}

    def path(kind):
        def compute():
            calls[kind] += 1

        return (lambda: None, compute, lambda: None, lambda: None)

    trace_file = tmp_path / "trace.json"
    trace_file.write_text(json.dumps(_trace(4, False)))

    class Session:
        def end_profiling(self):
            return str(trace_file)

    profile = ort_profile.profile_session(
        Session(), path("profiled"), 3, 1, tmp_path, tmp_path / "none.onnx",
        cuda=False, measured=path("measured"), notes=["given"],
    )  # fmt: skip
    assert calls == {"profiled": 4, "measured": 3} and len(profile.wall_ms) == 3
    assert profile.notes[0] == "given" and "no optimized graph" in profile.notes[1]
    assert all(e.origin == [] for e in profile.events)


def _model(nodes: list[tuple[str, str, list[str], list[str]]]) -> onnx.ModelProto:
    made = [helper.make_node(op, inputs, outputs, name=name) for name, op, inputs, outputs in nodes]
    return helper.make_model(helper.make_graph(made, "g", [], []))


def test_residual_add_and_relu_go_to_the_conv_that_runs_them():
    artifact = _model([
        ("conv_a", "Conv", ["x", "wa"], ["a"]),
        ("conv_b", "Conv", ["x", "wb"], ["b"]),
        ("add", "Add", ["a", "b"], ["s"]),
        ("relu", "Relu", ["s"], ["y"]),
        ("conv_c", "Conv", ["y", "wc"], ["c"]),
    ])  # fmt: skip
    optimized = _model([  # NCHWc: b first, then a with b summed in and Relu fused
        ("ReorderInput", "ReorderInput", ["x"], ["r0"]),
        ("b_nchwc", "Conv", ["r0", "wb_r"], ["r1"]),
        ("a_nchwc", "Conv", ["r0", "wa_r", "", "r1"], ["r2"]),
        ("c_nchwc", "Conv", ["r2", "wc_r"], ["r3"]),
        ("ReorderOutput", "ReorderOutput", ["r3"], ["c"]),
    ])  # fmt: skip
    assert ort_profile.optimized_origins(optimized, artifact) == {
        "ReorderInput": [],
        "b_nchwc": ["conv_b"],
        "a_nchwc": ["conv_a", "add", "relu"],
        "c_nchwc": ["conv_c"],
        "ReorderOutput": [],
    }


def test_qdq_nodes_go_to_the_qlinear_node_and_inserted_transposes_to_none():
    artifact = _model([
        ("x_q", "QuantizeLinear", ["x", "s", "z"], ["xq"]),
        ("x_dq", "DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        ("w_dq", "DequantizeLinear", ["wq", "s", "z"], ["wd"]),
        ("conv", "Conv", ["xd", "wd"], ["c"]),
        ("c_q", "QuantizeLinear", ["c", "s", "z"], ["cq"]),
        ("c_dq", "DequantizeLinear", ["cq", "s", "z"], ["y"]),
    ])  # fmt: skip
    optimized = _model([
        ("x_q", "QuantizeLinear", ["x", "s", "z"], ["xq"]),
        ("Transpose", "Transpose", ["xq"], ["t0"]),
        ("conv_token_1", "QLinearConv", ["t0", "s", "z", "wq", "s", "z", "s", "z"], ["conv"]),
        ("Transpose_token_2", "Transpose", ["conv"], ["cq"]),
        ("c_dq", "DequantizeLinear", ["cq", "s", "z"], ["y"]),
    ])  # fmt: skip
    assert ort_profile.optimized_origins(optimized, artifact) == {
        "x_q": ["x_q"],
        "Transpose": [],
        "conv_token_1": ["x_dq", "w_dq", "conv", "c_q"],
        "Transpose_token_2": [],
        "c_dq": ["c_dq"],
    }


def test_fp16_cast_prefix_is_read_through_and_a_pool_never_swallows_a_conv():
    artifact = _model([
        ("cast_in", "Cast", ["x"], ["x16"]),
        ("conv", "Conv", ["x16", "w"], ["c"]),
        ("relu", "Relu", ["c"], ["r"]),
        ("pool", "GlobalAveragePool", ["r"], ["p"]),
    ])  # fmt: skip
    optimized = _model([
        ("InsertedPrecisionFreeCast_r_nchwc", "Conv", ["x", "w_r"], ["t0"]),
        ("ReorderOutput", "ReorderOutput", ["t0"], ["InsertedPrecisionFreeCast_r"]),
        ("pool", "GlobalAveragePool", ["InsertedPrecisionFreeCast_r"], ["p"]),
    ])  # fmt: skip
    origins = ort_profile.optimized_origins(optimized, artifact)
    assert origins["InsertedPrecisionFreeCast_r_nchwc"] == ["cast_in", "conv", "relu"]
    assert origins["pool"] == ["pool"]
    # without its anchor the Conv would otherwise be walked into the pool above it
    del optimized.graph.node[0]
    assert ort_profile.optimized_origins(optimized, artifact)["pool"] == ["relu", "pool"]


def test_the_tensorrt_ep_saves_no_graph_and_says_so(tmp_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    ort_profile.enable(options, tmp_path / "w", save_optimized=False)  # it compiles subgraphs
    assert options.enable_profiling and options.optimized_model_filepath == ""
    assert options.profile_file_prefix.startswith(str(tmp_path / "w"))
    engine = OnnxRuntimeEngine()
    engine.effective_options = {"execution_provider": "tensorrt", "enable_cuda_graph": True}
    assert engine._profile_notes(True) == [ort_profile.CUDA_GRAPH, ort_profile.COMPILED_EP]
