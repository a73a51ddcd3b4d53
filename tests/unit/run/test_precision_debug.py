"""debug-precision's arithmetic: SQNR, name matching, module attribution, the ranking that
blames the layer adding error and not the layers inheriting it, and the proposal."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from infercmp.artifacts.onnx_scopes import node_scopes
from infercmp.engines.registry import get_descriptor
from infercmp.report.precision import render
from infercmp.run import precision_debug_capture as capture
from infercmp.run.precision_debug import (
    MAX_SQNR_DB,
    LayerError,
    TensorError,
    at_depth,
    exclusion_paths,
    match_tensors,
    onnx_layer_errors,
    rank_layers,
    tensor_error,
)
from infercmp.run.precision_debug_measure import agreement, propose, write_mixed_fp16
from infercmp.run.precision_debug_session import module_layer_errors


def _node(op, inputs, output, scopes):
    node = helper.make_node(op, inputs, [output], name=f"node_{output}")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(scopes)
    return node


def _chain() -> onnx.ModelProto:
    """x -> relu (module.a) -> mul by w (module.b) -> relu (module.c) -> add w (module.d.e)."""
    nodes = [
        _node("Relu", ["x"], "t1", ["", "module", "module.a", "relu"]),
        _node("Mul", ["t1", "w"], "t2", ["", "module", "module.b", "mul"]),
        _node("Relu", ["t2"], "t3", ["", "module", "module.c", "relu_1"]),
        _node("Add", ["t3", "w"], "y", ["", "module", "module.d", "module.d.e", "add"]),
    ]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "chain",
        [info("x", TensorProto.FLOAT, [4])],
        [info("y", TensorProto.FLOAT, [4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0] * 4)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _err(sqnr: float, floor: float = 70.0) -> TensorError:
    return TensorError(sqnr, 0.0, 0.0, floor)


def test_sqnr_is_twenty_log_of_signal_over_noise():
    ref = np.linspace(-1.0, 1.0, 101)
    assert tensor_error([ref], [ref]).sqnr_db == MAX_SQNR_DB
    err = tensor_error([ref], [ref * 1.01])  # noise = 1% of the signal: 40 dB
    assert err.sqnr_db == pytest.approx(40.0)
    assert err.max_rel == pytest.approx(0.01)
    # an infinity both sides share (a mask) agrees; one only the candidate has is a failure
    masked = np.array([-np.inf, 1.0, 2.0])
    assert tensor_error([masked], [masked]).sqnr_db == MAX_SQNR_DB
    assert tensor_error([masked[1:]], [np.array([1.0, np.inf])]).sqnr_db == -MAX_SQNR_DB


def test_the_rounding_floor_follows_the_precision():
    ref = np.random.default_rng(0).standard_normal(1000)
    floors = {p: tensor_error([ref], [ref], p).floor_db for p in ("fp32", "fp16", "bf16", "int8")}
    assert floors["fp32"] == MAX_SQNR_DB
    assert floors["fp16"] > floors["bf16"] > floors["int8"] > 20.0


def test_tensors_match_by_name_and_shape_only():
    ref = {"a": [np.ones(3)], "b": [np.ones(3)], "c": [np.ones(3)]}
    cand = {"a": [np.ones(3) * 1.1], "b": [np.ones(4)], "d": [np.ones(3)]}
    errors = match_tensors(ref, cand)
    assert set(errors) == {"a"}
    assert errors["a"].sqnr_db == pytest.approx(20.0)


def test_nodes_are_named_by_the_users_module_path():
    scopes = node_scopes(_chain())
    assert scopes["node_t1"].path == "a"  # the export wrapper's `module.` is not the user's
    assert scopes["node_y"].path == "d.e"


def test_the_culprit_is_ranked_first_and_its_inheritors_are_not_blamed():
    # t1 is near fp16 rounding; b loses 40 dB; c and d carry its error along
    errors = {"t1": _err(69.0), "t2": _err(29.0), "t3": _err(28.8), "y": _err(28.9)}
    layers = onnx_layer_errors(_chain(), errors)
    assert [layer.path for layer in layers] == ["a", "b", "c", "d.e"]
    by_path = {layer.path: layer for layer in layers}
    assert by_path["b"].sqnr_in == 69.0 and by_path["b"].growth == pytest.approx(40.0)
    assert by_path["a"].growth == pytest.approx(1.0)  # exact input, capped at the floor
    ranked = rank_layers(layers, top=5)
    assert [layer.path for layer in ranked] == ["b"]
    assert exclusion_paths(ranked) == ["b"]


def test_an_unexposed_input_takes_its_producers_error():
    # t2 not exposed (a fused or unmatched tensor): c is judged against t1's error
    errors = {"t1": _err(60.0), "t3": _err(59.0), "y": _err(58.5)}
    layers = {layer.path: layer for layer in onnx_layer_errors(_chain(), errors)}
    assert "b" not in layers
    assert layers["c"].sqnr_in == 60.0


def test_depth_groups_layers_by_path_prefix():
    layers = [
        LayerError("x", "layer1.0.conv1", "Conv", 70.0, 50.0, 0, 0, floor_db=70.0),
        LayerError("y", "layer1.0.relu", "Relu", 50.0, 45.0, 0, 0, floor_db=70.0),
        LayerError("z", "fc", "Gemm", 45.0, 45.0, 0, 0, floor_db=70.0),
    ]
    grouped = {g.path: g for g in at_depth(layers, 1)}
    assert set(grouped) == {"layer1", "fc"}
    assert grouped["layer1"].growth == pytest.approx(25.0)
    assert grouped["layer1"].op == "Conv+Relu"
    assert [g.path for g in rank_layers(grouped.values(), 5)] == ["layer1"]


class _Cancels(torch.nn.Module):
    """Adds and removes a large constant: exact in fp32, all precision gone in bf16."""

    def forward(self, x):
        return (x + 1000.0) - 1000.0


def test_forward_hooks_blame_the_module_that_loses_precision():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), _Cancels(), torch.nn.ReLU(), torch.nn.Linear(8, 4)
    ).eval()
    inputs = [[np.random.default_rng(s).standard_normal((2, 8)).astype(np.float32)] for s in (0, 1)]
    ref = capture.module_activations(model, inputs, "fp32")
    cand = capture.module_activations(model, inputs, "bf16")
    layers = module_layer_errors(ref, cand, "bf16")
    assert [layer.path for layer in layers] == ["0", "1", "2", "3"]
    assert all(layer.floor_db < 60.0 for layer in layers)  # bf16 rounding, not fp32's cap
    ranked = rank_layers(layers, top=5)
    assert ranked[0].path == "1" and ranked[0].op == "_Cancels"
    assert "2" not in [layer.path for layer in ranked]  # ReLU inherits, adds nothing


def test_proposals_name_the_engine_option_or_say_there_is_none(tmp_path):
    ort, ov, torch = (get_descriptor(n) for n in ("onnxruntime", "openvino", "pytorch"))
    int8 = propose(ort, "int8", ["0", "layer3.4.conv2"], None)
    assert int8.engine_text == "onnxruntime[int8_exclude='0;layer3.4.conv2']"
    fp16 = propose(ort, "fp16", ["a"], tmp_path / "m.onnx")
    assert fp16.options == {"fp16_model": str(tmp_path / "m.onnx")}
    bf16 = propose(ov, "bf16", ["a"], None)
    assert bf16.options is None and "'openvino' has no per-layer precision option" in bf16.note
    assert propose(torch, "int8", [], None).options is None


def test_the_mixed_fp16_model_keeps_blocked_nodes_in_fp32_and_loads(tmp_path):
    import onnxruntime

    dst = tmp_path / "mixed.onnx"
    # b and c both read t1: the converter casts t1 twice under one name unless deduplicated
    model = _chain()
    model.graph.node[2].input[0] = "t1"
    kept = write_mixed_fp16(model, ["b", "c"], [], dst)
    assert kept == 2
    session = onnxruntime.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.arange(4, dtype=np.float32)})
    assert out.dtype == np.float32
    mixed = onnx.load(str(dst))
    blocked = {n.name: n for n in mixed.graph.node}["node_t2"]
    assert all(i != "t1" for i in blocked.input)  # fed through a Cast back to fp32


def test_agreement_counts_top1_and_cosine():
    ref = [[np.array([[0.1, 0.9], [0.8, 0.2]])]]
    cand = [[np.array([[0.2, 0.8], [0.4, 0.6]])]]
    found = agreement(ref, cand)
    assert found["top1_agreement"] == 0.5
    assert found["max_abs"] == pytest.approx(0.4)
    assert 0 < found["cosine"] < 1


def test_the_report_section_renders_the_stored_dict():
    layer = LayerError("t2", "b<x>", "Mul", 69.0, 29.0, 0.1, 0.01, floor_db=70.0).as_dict()
    result = {
        "model": "m", "engine": "onnxruntime", "precision": "int8", "device": "cpu",
        "samples": {"count": 8, "source": "dataset"}, "mechanism": "graph outputs",
        "top": [layer], "proposal": {"paths": ["b<x>"], "engine": "onnxruntime[x='b']",
        "note": "n"}, "measured": {"original": {"max_abs": 1.0}, "mixed": None,
        "note": "the mixed model cannot be made yet: no option"}, "notes": [],
    }  # fmt: skip
    md, fragment = render(result)
    assert "| b<x> | Mul | 69.0 | 29.0 | 70.0 | 40.0 |" in md
    assert "cannot be made yet" in md
    assert "b&lt;x&gt;" in fragment and "<x>" not in fragment
