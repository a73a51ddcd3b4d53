"""Module paths of ONNX nodes: from the dynamo exporter's metadata, and the TorchScript names."""

from __future__ import annotations

import onnx
from onnx import helper

from infercmp.artifacts.onnx_scopes import (
    module_paths,
    node_scopes,
    nodes_under,
    tensor_producers,
    under,
)


def _node(name: str, scopes: list[str] | None = None, rule: str | None = None) -> onnx.NodeProto:
    node = helper.make_node("Relu", [f"{name}_in"], [f"{name}_out"], name=name)
    if scopes is not None:
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
    if rule is not None:
        node.metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value=rule)
    return node


def _model(*nodes: onnx.NodeProto) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph(list(nodes), "g", [], []))


def test_dynamo_scopes_give_the_deepest_module_and_the_fusion():
    model = _model(
        _node("node_conv2d", ["", "conv1", "conv2d"]),
        _node("node_Conv_21", ["", "layer1", "layer1.0", "layer1.0.bn1", "bn"], "FuseBNIntoConv"),
        _node("node_add", ["", "layer1", "layer1.0", "add"]),
        _node("node_view", ["", "view"]),
    )
    scopes = node_scopes(model)
    assert scopes["node_conv2d"].path == "conv1" and scopes["node_conv2d"].fused_by is None
    assert scopes["node_Conv_21"].path == "layer1.0.bn1"
    assert scopes["node_Conv_21"].fused_by == "FuseBNIntoConv"
    assert scopes["node_add"].path == "layer1.0"
    assert scopes["node_view"].path == ""  # the model's own top level
    assert scopes["node_Conv_21"].at_depth(1) == "layer1"
    assert module_paths(model) == {"conv1", "layer1", "layer1.0", "layer1.0.bn1"}


def test_torchscript_names_rebuild_the_full_path():
    model = _model(
        _node("/layer1/layer1.0/conv1/Conv"),
        _node("/layer1/layer1.0/Add"),
        _node("/fc/Gemm"),
        _node("Flatten_3"),
    )
    assert [s.path for s in node_scopes(model).values()] == [
        "layer1.0.conv1",
        "layer1.0",
        "fc",
        "",
    ]


def test_nodes_under_matches_whole_path_parts_only():
    model = _model(
        _node("a", ["", "layer1", "layer1.0", "x"]),
        _node("b", ["", "layer10", "y"]),
        _node("c", ["", "fc", "z"]),
    )
    assert nodes_under(model, ["layer1"]) == ["a"]
    assert nodes_under(model, ["layer1", "fc", " "]) == ["a", "c"]
    assert under("layer1.0", ["layer1"]) and not under("layer10", ["layer1"])
    assert tensor_producers(model) == {"a_out": "a", "b_out": "b", "c_out": "c"}


def test_a_real_dynamo_export_names_the_modules(tmp_path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.block(self.conv1(x)).mean(dim=(2, 3))
            return self.fc(y)

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 1, 8, 8),), str(path), dynamo=True)
    model = onnx.load(path)
    by_op = {n.op_type: node_scopes(model)[n.name].path for n in model.graph.node}
    assert by_op["Gemm"] == "fc"
    convs = [node_scopes(model)[n.name].path for n in model.graph.node if n.op_type == "Conv"]
    assert convs == ["conv1", "block.0"]
    ops = {n.name: n.op_type for n in model.graph.node}
    assert sorted(ops[name] for name in nodes_under(model, ["block"])) == ["Conv", "Relu"]


def test_infercmps_export_wrapper_and_the_no_module_placeholder_are_not_user_paths():
    # infercmp's export wraps the plugin's module as `module` (onnx_export.InConfigOrder):
    # a user's `layer1` must find `module.layer1.*` nodes.
    model = _model(
        _node("a", ["", "module", "module.layer1", "module.layer1.0", "x"]),
        _node("b", ["", "module", "y"]),
        _node("c", ["", "_empty_nn_module_stack_from_metadata_hook", "z"]),
    )
    assert [s.path for s in node_scopes(model).values()] == ["layer1.0", "", ""]
    assert nodes_under(model, ["layer1"]) == ["a"]
    # A user's own top-level child named `module` beside others is left alone.
    mixed = _model(_node("a", ["", "module", "x"]), _node("b", ["", "fc", "y"]))
    assert [s.path for s in node_scopes(mixed).values()] == ["module", "fc"]


def test_a_conv_that_batchnorm_was_folded_into_names_both_modules(tmp_path):
    """The exporter's optimiser folds BatchNorm into the Conv before it, which keeps the
    BatchNorm's scope; the Conv's own module comes back from the weight it reads."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn1(self.conv1(x)).relu()

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 1, 8, 8),), str(path), dynamo=True)
    model = onnx.load(path)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    scope = node_scopes(model)[conv.name]
    assert (scope.path, scope.merged) == ("bn1", ("conv1",))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert node_scopes(model)[relu.name].merged == ()  # not merged: its own path only
