"""Profiles attributed to the module tree (infercmp.run.profile): modules through the ONNX
scopes (fused across modules, no module, top level), kinds of work on real engine names, the
closure and hints arithmetic, the stored record and how the commit reads the worker's file."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper
from pydantic import ValidationError

from infercmp.core.contract import ProfileEvent, ProfileOutputs, RawProfile, WorkerResult
from infercmp.core.errors import InfercmpError
from infercmp.engines.registry import get_descriptor
from infercmp.run.profile import (
    ModuleIndex,
    attach_profile,
    check_depth,
    hints,
    kind_of,
    module_at_depth,
    module_index,
    module_of,
    profile_record,
    read_profile,
    row_label,
)
from infercmp.run.worker_process import WorkerOutcome
from infercmp.store.schema import CombinationResult


def _node(op: str, name: str, scopes: list[str], out: str) -> onnx.NodeProto:
    node = helper.make_node(op, [f"{name}_in"], [out], name=name)
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
    return node


def _model() -> onnx.ModelProto:
    """A ResNet-like graph as the dynamo exporter leaves it (BatchNorm folded into the Conv,
    which carries the BatchNorm's scope), under infercmp's export wrapper `module`."""
    w = "module"
    nodes = [
        _node("Conv", "node_Conv_27", ["", w, f"{w}.bn1", "bn"], "getitem"),
        _node("Relu", "node_relu", ["", w, f"{w}.relu", "relu"], "relu"),
        _node(
            "Conv",
            "node_Conv_28",
            ["", w, f"{w}.layer1", f"{w}.layer1.0", f"{w}.layer1.0.conv1", "c"],
            "c1",
        ),  # noqa: E501
        _node(
            "Conv",
            "node_Conv_29",
            ["", w, f"{w}.layer1", f"{w}.layer1.0", f"{w}.layer1.0.bn1", "b"],
            "b1",
        ),  # noqa: E501
        _node("Add", "node_add", ["", w, f"{w}.layer1", f"{w}.layer1.0", "add"], "add"),
        _node("Reshape", "node_view", ["", w, "view"], "view"),
        _node("Gemm", "node_linear", ["", w, f"{w}.fc", "linear"], "linear"),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [], []))


@pytest.fixture()
def index() -> ModuleIndex:
    return ModuleIndex.from_models([_model()])


def _event(name: str, op: str, ms: float, origin=(), module=None, device="cpu", exec_type=""):
    return ProfileEvent(
        name=name, op_type=op, exec_type=exec_type, device=device, total_ms=ms, calls=10,
        origin=list(origin), module=module,
    )  # fmt: skip


def test_modules_of_events_through_the_scopes(index):
    # PyTorch names the module itself.
    assert module_of(_event("aten::conv2d", "aten::conv2d", 1, module="layer1.0.conv1"), index) == [
        "layer1.0.conv1"
    ]
    # ORT's fused Conv+Conv+Add across modules keeps every leaf, in graph order.
    fused = _event("x", "FusedConv", 1, origin=["node_Conv_29", "node_Conv_28", "node_add"])
    assert module_of(fused, index) == ["layer1.0.bn1", "layer1.0.conv1", "layer1.0"]
    # Renamed by ORT (`_nchwc`, `_token_N`: through the tensor's producer), OpenVINO's suffix.
    assert module_of(_event("relu_nchwc", "Conv", 1, origin=["relu_nchwc"]), index) == ["relu"]
    assert module_of(_event("t", "Gemm", 1, origin=["node_linear_token_3"]), index) == ["fc"]
    ov = _event("node_Conv_27/WithoutBiases", "Convolution", 1, ["node_Conv_27/WithoutBiases"])
    assert module_of(ov, index) == ["bn1"]
    # The model's top level (torch.flatten in forward) is "", not "no module".
    assert module_of(_event("node_view", "Reshape", 1, origin=["node_view"]), index) == [""]
    # Inserted by the engine (no origin), or naming nodes the artifact lacks: no module.
    assert module_of(_event("ReorderOutput_token_9", "ReorderOutput", 1), index) is None
    assert module_of(_event("y", "Conv", 1, origin=["not_a_node"]), index) is None


def test_a_set_of_paths_at_a_depth():
    fused = ["layer1.0.conv1", "layer1.0.bn1"]
    assert module_at_depth(fused, 3) == ("layer1.0", True)
    assert row_label(fused, 3) == "layer1.0 (fused)"
    assert module_at_depth(fused, 1) == ("layer1", False)
    assert row_label(fused, 2) == "layer1.0"
    assert row_label(["layer1.0.conv1", "layer2.0.conv1"], 3) == "layer1+layer2 (fused)"
    assert row_label(["bn1", "relu"], 1) == "bn1+relu (fused)"  # siblings of the top level
    assert row_label([""], 2) == "(top level)"
    assert row_label([], 1) == "no module"
    assert row_label(["layer10.conv"], 1) == "layer10"


def test_module_order_follows_the_graph(index):
    raw = RawProfile(
        profiler="p", iterations=2, wall_ms=[3.0, 3.0],
        events=[
            _event("g", "Gemm", 2, ["node_linear"]),
            _event("r", "ReorderOutput", 2),
            _event("c", "Conv", 2, ["node_Conv_28"]),
            _event("s", "Conv", 2, ["node_Conv_27"]),
        ],
    )  # fmt: skip
    rows = profile_record(raw, index, 3.0, "onnxruntime")["rows"]
    assert [r["modules"] for r in rows] == [["bn1"], ["layer1.0.conv1"], ["fc"], []]
    assert [r["ms"] for r in rows] == [1.0, 1.0, 1.0, 1.0]  # per iteration


@pytest.mark.parametrize(
    ("op_type", "exec_type", "name", "kind"),
    [
        # ONNX Runtime (CPU, NCHWc, CUDA kernels)
        ("FusedConv", "", "node_Conv_17", "conv/matmul"),
        ("Conv", "", "relu_nchwc", "conv/matmul"),
        ("QLinearConv", "", "q", "conv/matmul"),
        ("Gemm", "", "node_linear", "conv/matmul"),
        ("ReorderOutput", "", "ReorderOutput_token_9", "data movement"),
        ("ReorderInput", "", "ReorderInput", "data movement"),
        ("MemcpyToHost", "", "Memcpy", "data movement"),
        ("ReduceMean", "", "node_mean", "pooling/reduction"),
        ("GlobalAveragePool", "", "gap", "pooling/reduction"),
        ("Softmax", "", "node_softmax", "pooling/reduction"),
        ("LayerNormalization", "", "node_layer_norm", "normalisation"),
        ("Add", "", "node_add", "elementwise"),
        ("Reshape", "", "node_view", "data movement"),
        # OpenVINO perf counters (node_type, exec_type)
        ("Convolution", "brgconv_avx512_bf16", "node_Conv_27/WithoutBiases", "conv/matmul"),
        ("FullyConnected", "brgemm_avx512_bf16", "node_linear", "conv/matmul"),
        ("Reorder", "jit_uni_f32", "x_f32_abcd_bf16_acdb_node_Conv_27", "data movement"),
        ("MVN", "jit_avx512_f32", "layer_norm", "normalisation"),
        ("Eltwise", "jit_avx512_FP32", "node_add", "elementwise"),
        ("Pooling", "jit_avx512_FP32", "p", "pooling/reduction"),
        ("Convert", "unknown_f32", "c", "data movement"),
        # torch.profiler (aten ops and CUDA kernels)
        ("aten::conv2d", "", "aten::conv2d", "conv/matmul"),
        ("aten::addmm", "", "aten::addmm", "conv/matmul"),
        ("aten::_slow_conv2d_forward", "", "aten::_slow_conv2d_forward", "conv/matmul"),
        ("aten::clamp_min", "", "aten::clamp_min", "elementwise"),
        ("aten::relu", "", "aten::relu", "elementwise"),
        ("aten::native_batch_norm", "", "aten::native_batch_norm", "normalisation"),
        ("aten::adaptive_avg_pool2d", "", "aten::adaptive_avg_pool2d", "pooling/reduction"),
        ("aten::copy_", "", "aten::copy_", "data movement"),
        ("aten::flatten", "", "aten::flatten", "data movement"),
        ("kernel", "void cudnn::ops::nchwToNhwcKernel<float>", "k", "data movement"),
        ("kernel", "sm90_xmma_fprop_implicit_gemm_f16f16", "k", "conv/matmul"),
        ("kernel", "void at::native::vectorized_elementwise_kernel<4>", "k", "elementwise"),
        ("kernel", "triton_poi_fused_relu_0", "k", "elementwise"),
        ("kernel", "triton_red_fused_mean_1", "k", "pooling/reduction"),
        # TensorRT layers (the inspector's LayerType, fused names)
        ("Convolution", "", "node_Conv_17 + node_relu", "conv/matmul"),
        (
            "Reformat",
            "",
            "Reformatting CopyNode for Input Tensor 0 to node_Conv_17",
            "data movement",
        ),  # noqa: E501
        ("Myelin", "", "{ForeignNode[node_Conv_17...node_linear]}", "conv/matmul"),
        ("PointWiseV2", "", "PWN(node_relu)", "elementwise"),
        ("Shuffle", "", "node_view", "data movement"),
        ("Unknown", "", "something", "other"),
    ],
)
def test_kinds_of_work_on_real_names(op_type, exec_type, name, kind):
    assert kind_of(_event(name, op_type, 1.0, exec_type=exec_type)) == kind


def test_closure_and_unexplained(index):
    raw = RawProfile(
        profiler="onnxruntime enable_profiling", iterations=4, wall_ms=[2.0, 2.2, 2.1, 2.5],
        events=[_event("c", "Conv", 4.0, ["node_Conv_28"]), _event("a", "Add", 2.0)],
    )  # fmt: skip
    record = profile_record(raw, index, 2.1, "onnxruntime")
    assert record["profiled_wall_ms"] == pytest.approx(2.15)  # the median call
    assert record["profiled_mean_ms"] == pytest.approx(2.2)
    assert record["op_total_ms"] == pytest.approx(1.5)  # 6 ms over 4 iterations
    assert record["unexplained_ms"] == pytest.approx(0.7)  # of the mean call, as the ops are
    assert record["closure"] == pytest.approx(2.2 / 2.1 - 1)
    assert record["launch_gaps_ms"] is None  # the CPU: no kernel intervals
    assert record["notes"] == []  # within 10%, calls alike
    far = profile_record(raw, index, 1.5, "onnxruntime")
    assert far["closure"] == pytest.approx(2.2 / 1.5 - 1)
    assert any(n.startswith("closure +47%") for n in far["notes"])
    assert far["unprofiled_median_ms"] is None and far["profiler_overhead"] is None


def test_the_closure_parts_the_profilers_cost_from_the_machines(index):
    """+48% against the timed median: +10% is the profiler (its median call against the
    median of the same calls unprofiled beside it, 2.2 against 2.0 ms), +33% the machine since
    the timed phase (2.0 against 1.5 ms); a slow unprofiled call does not sway it."""
    raw = RawProfile(
        profiler="p", iterations=4, wall_ms=[2.0, 2.2, 2.2, 2.5],
        unprofiled_wall_ms=[1.9, 2.0, 2.0, 2.1, 9.0],
        events=[_event("c", "Conv", 4.0, ["node_Conv_28"])],
    )  # fmt: skip
    record = profile_record(raw, index, 1.5, "onnxruntime")
    assert record["unprofiled_median_ms"] == pytest.approx(2.0)
    assert record["profiler_overhead"] == pytest.approx(0.1)
    (said,) = [n for n in record["notes"] if n.startswith("closure")]
    assert (
        "the profiler +10%, median against median of the same calls unprofiled beside it, 2 ms"
        in said
    )
    assert "those calls +33% against the timed median" in said


def test_no_closure_against_a_median_that_left_the_copies_out(index):
    """--device-resident: the timed median is compute alone, the profiled calls carry the
    copies; setting one against the other would call the copies the machine's share."""
    raw = RawProfile(
        profiler="p", iterations=2, wall_ms=[2.0, 2.0], unprofiled_wall_ms=[1.9, 1.9],
        events=[_event("c", "Conv", 2.0)], device_resident=True,
    )  # fmt: skip
    record = profile_record(raw, index, 1.0, "onnxruntime")
    assert record["closure"] is None and record["unexplained_ms"] == pytest.approx(1.0)
    assert record["notes"] == [
        "closure n/a: the timed median (--device-resident) is compute alone, while these "
        "calls, profiled and not, carry the copies in and out"
    ]
    cuda = RawProfile(
        profiler="p", iterations=1, wall_ms=[2.0], device_busy_ms=1.8, device_resident=True,
        events=[_event("k", "Conv", 1.5, device="cuda"), _event("m", "Memcpy", 0.3, device="cuda")],
    )  # fmt: skip
    assert profile_record(cuda, index, 1.0, "onnxruntime")["closure"] is None


def test_calls_that_vary_are_said(index):
    raw = RawProfile(
        profiler="p", iterations=4, wall_ms=[1.0, 1.0, 1.0, 9.0], events=[_event("c", "Conv", 4)]
    )
    record = profile_record(raw, index, 1.0, "pytorch")
    assert record["profiled_wall_ms"] == 1.0 and record["profiled_mean_ms"] == 3.0
    assert record["unexplained_ms"] == pytest.approx(2.0)
    assert any(
        n.startswith("the profiled calls vary: median 1 ms, mean 3 ms") for n in record["notes"]
    )


def test_overlapping_ops_leave_no_negative_unexplained(index):
    raw = RawProfile(profiler="p", iterations=1, wall_ms=[1.0], events=[_event("c", "Conv", 1.6)])
    record = profile_record(raw, index, 1.0, "openvino")
    assert record["unexplained_ms"] == 0.0
    assert record["closure"] == pytest.approx(0.6)
    assert any("overlap" in n for n in record["notes"])


def test_cuda_launch_gaps_and_the_cuda_graph_hint(index):
    raw = RawProfile(
        profiler="torch.profiler", iterations=2, wall_ms=[1.0, 1.0], device_busy_ms=0.3,
        events=[
            _event("k", "aten::conv2d", 0.6, module="conv1", device="cuda"),
            _event("aten::conv2d", "aten::conv2d", 1.2, module="conv1", device="cpu"),
        ],
    )  # fmt: skip
    pytorch = get_descriptor("pytorch")
    record = profile_record(raw, index, 1.0, "pytorch", pytorch, {"cuda_graph": False})
    assert record["op_total_ms"] == pytest.approx(0.3)  # kernels only: host ops left out
    assert any("host-side" in n for n in record["notes"])
    assert record["unexplained_ms"] == pytest.approx(0.7)
    assert record["launch_gaps_ms"] == pytest.approx(0.7)
    assert record["hints"] == [
        "pytorch spends 70% of each call between kernels (launch overhead): "
        "try pytorch[cuda_graph=true]"
    ]
    graphed = profile_record(raw, index, 1.0, "pytorch", pytorch, {"cuda_graph": True})
    assert graphed["hints"] == ["pytorch spends 70% of each call between kernels (launch overhead)"]
    ort = profile_record(raw, index, 1.0, "onnxruntime", get_descriptor("onnxruntime"), {})
    assert ort["hints"][0].endswith("try onnxruntime[enable_cuda_graph=true]")
    openvino = profile_record(raw, index, 1.0, "openvino", get_descriptor("openvino"), {})
    assert openvino["hints"] == [
        "openvino spends 70% of each call between kernels (launch overhead)"
    ]


def test_on_cuda_the_gaps_are_the_timed_calls_not_the_profiled_ones(index):
    """The profiler slows the host: a profiled call of 4 ms against a timed median of 1.6 ms
    (ONNX Runtime on an H100). The kernels (0.5 ms, busy 0.45) are the profile's; the gaps
    are what the timed call leaves, never more than the call itself."""
    raw = RawProfile(
        profiler="onnxruntime enable_profiling", iterations=2, wall_ms=[4.0, 4.0],
        device_busy_ms=0.45, events=[_event("k", "Conv", 1.0, module="conv1", device="cuda")],
    )  # fmt: skip
    record = profile_record(raw, index, 1.6, "onnxruntime", get_descriptor("onnxruntime"), {})
    assert record["unexplained_ms"] == pytest.approx(1.1)
    assert record["launch_gaps_ms"] == pytest.approx(1.1)  # at most what no kernel explains
    assert record["closure"] is None  # the rows add up to the median by this account
    assert any("profiled call took 4 ms (+150%" in n for n in record["notes"])
    assert record["hints"][0].startswith("onnxruntime spends 69% of each call between kernels")
    slow = raw.model_copy(
        update={"events": [_event("k", "Conv", 4.0, module="conv1", device="cuda")]}
    )
    flagged = profile_record(slow, index, 1.6, "onnxruntime", get_descriptor("onnxruntime"), {})
    assert flagged["closure"] == pytest.approx(0.25) and flagged["unexplained_ms"] == 0.0


def test_data_movement_hint_names_the_top_op_types():
    rows = [
        {"modules": [], "kind": "data movement", "op_type": "ReorderOutput", "ms": 0.3},
        {"modules": [], "kind": "data movement", "op_type": "Transpose", "ms": 0.1},
        {"modules": ["fc"], "kind": "conv/matmul", "op_type": "Gemm", "ms": 0.6},
    ]
    found = hints({"rows": rows}, "onnxruntime", None, {})
    assert found == ["40% of onnxruntime's op time is layout conversions and copies "
                     "(ReorderOutput, Transpose)"]  # fmt: skip
    rows[0]["ms"] = 0.04
    assert hints({"rows": rows}, "onnxruntime", None, {}) == []  # 19%: under 20%


def _result(**extra) -> CombinationResult:
    fields = {"status": "ok", **extra}
    return CombinationResult(
        combo_id="m__pytorch__cpu__fp32__s", model="m", engine="pytorch", device="cpu",
        precision="fp32", shape_label="s", iterations=10,
        latency={k: 1.0 for k in ("count", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                  "max_ms", "mean_ms", "std_ms", "ci_low_ms", "ci_high_ms", "cv",
                                  "throughput_per_s")},
        **fields,
    )  # fmt: skip


def test_the_record_round_trips_through_the_schema(index):
    raw = RawProfile(profiler="p", iterations=1, wall_ms=[1.0], events=[_event("c", "Conv", 0.5)])
    record = profile_record(raw, index, 1.0, "pytorch")
    again = CombinationResult.model_validate_json(_result(profile=record).model_dump_json())
    assert again.profile == record
    assert _result(profile={"error": "n/a: x has no per-layer profiler"}).profile is not None
    bad = {**record, "rows": [{"modules": [], "kind": "other", "ms": -1.0}]}
    with pytest.raises(ValidationError):
        _result(profile=bad)


def _outcome(tmp_path: Path, status="ok", phase=None, profile_file="profile.json"):
    done = ProfileOutputs(file=profile_file, iterations=1, seconds=0.1) if profile_file else None
    result = WorkerResult(
        status=status, phase=phase, error=None if status == "ok" else "boom: it broke",
        model="m", engine="pytorch", device="cpu", precision="fp32", device_resident=False,
        mode="fixed",
        profile=done,
    )  # fmt: skip
    return WorkerOutcome(status, result.error, result, {}, [], "")


class _Profiled:
    """A descriptor that declares a profiler."""

    name, profiler = "pytorch", "torch.profiler"
    options = get_descriptor("pytorch").options


class _Unprofiled:
    """A descriptor that declares none."""

    name, profiler = "openvino", None
    options = get_descriptor("openvino").options


def test_the_commit_reads_process_zeros_profile(tmp_path):
    raw = RawProfile(profiler="torch.profiler", iterations=2, wall_ms=[1.2, 1.2],
                     events=[_event("c", "aten::conv2d", 2.0, module="conv1")])  # fmt: skip
    (tmp_path / "profile.json").write_text(raw.model_dump_json())
    onnx_file = tmp_path / "model.onnx"
    onnx.save(_model(), str(onnx_file))
    result = _result()
    attach_profile(result, [_outcome(tmp_path)], lambda p: tmp_path, [None, onnx_file],
                   _Profiled(), "pytorch")  # type: ignore[arg-type]  # fmt: skip
    assert result.profile is not None
    assert result.profile["rows"] == [
        {"modules": ["conv1"], "kind": "conv/matmul", "op_type": "aten::conv2d", "ms": 1.0,
         "calls": 10}
    ]  # fmt: skip
    assert result.profile["closure"] == pytest.approx(0.2)
    assert module_index([None, onnx_file, tmp_path / "no.onnx"]).scopes["node_linear"].path == "fc"


def test_the_commit_records_na_failures_and_missing_files(tmp_path):
    n_a = _result()
    attach_profile(n_a, [_outcome(tmp_path)], lambda p: tmp_path, [], _Unprofiled(),
                   "openvino")  # type: ignore[arg-type]  # fmt: skip
    assert n_a.profile == {"error": "n/a: openvino has no per-layer profiler"}
    failed = _result(status="failed", error="x")
    attach_profile(failed, [_outcome(tmp_path, "failed", "profile")], lambda p: tmp_path, [],
                   _Profiled(), "pytorch")  # type: ignore[arg-type]  # fmt: skip
    assert failed.profile == {"error": "boom: it broke"}
    elsewhere = _result(status="failed", error="x")
    attach_profile(elsewhere, [_outcome(tmp_path, "failed", "measure")], lambda p: tmp_path, [],
                   _Profiled(), "pytorch")  # type: ignore[arg-type]  # fmt: skip
    assert elsewhere.profile is None  # measured nothing: no profile either
    declined = _result()
    outcome = _outcome(tmp_path, profile_file=None)
    assert outcome.result is not None
    outcome.result.warnings.append("no profile: profiles are taken one request at a time")
    attach_profile(declined, [outcome], lambda p: tmp_path, [], _Profiled(), "pytorch")  # type: ignore[arg-type]
    assert declined.profile == {"error": "profiles are taken one request at a time"}
    silent = _result()
    attach_profile(silent, [_outcome(tmp_path, profile_file=None)], lambda p: tmp_path, [],
                   _Profiled(), "pytorch")  # type: ignore[arg-type]  # fmt: skip
    assert silent.profile == {"error": "the worker wrote no profile (see its log)"}
    missing = _result()
    attach_profile(missing, [_outcome(tmp_path)], lambda p: tmp_path, [], _Profiled(),
                   "pytorch")  # type: ignore[arg-type]  # fmt: skip
    assert missing.profile is not None and "cannot read the profile" in missing.profile["error"]
    (tmp_path / "profile.json").write_text('{"profiler": 3}')
    with pytest.raises(InfercmpError, match="is not a profile"):
        read_profile(tmp_path / "profile.json")


def test_depth_must_be_positive():
    assert check_depth(2) == 2
    with pytest.raises(InfercmpError, match="--depth 0"):
        check_depth(0)


def test_a_node_with_batchnorm_folded_in_covers_its_conv_too():
    from infercmp.artifacts.onnx_scopes import NodeScope
    from infercmp.run.profile import ModuleIndex, module_of, row_label

    index = ModuleIndex(
        scopes={"node_Conv_1": NodeScope("bn1", "FuseBatchNormIntoConv", ("conv1",))}
    )
    event = ProfileEvent(
        name="conv", op_type="Conv", device="cpu", total_ms=1.0, calls=1, origin=["node_Conv_1"]
    )
    assert module_of(event, index) == ["conv1", "bn1"]
    assert row_label(["conv1", "bn1"], 1) == "conv1+bn1 (fused)"
