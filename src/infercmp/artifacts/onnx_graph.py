"""The exported ONNX graph: the dynamic axes the exporters are given, the config's output
names, the IR version, and the checker and shape inference that judge an export.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infercmp.core.errors import InfercmpError
from infercmp.workload.config import DYNAMIC, ModelConfig

# onnxruntime 1.31 refuses IR 14 (what onnx 1.23 writes); TensorRT's parsers read up to IR 10.
MAX_IR_VERSION = 10


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message, for a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def dynamic_axes(config: ModelConfig) -> dict[str, dict[int, str]]:
    """The TorchScript exporter's `dynamic_axes`: per tensor, each dynamic axis and its name."""
    axes = {i.name: i.shapes.dynamic_axes for i in config.inputs}
    for o in config.outputs:
        axes[o.name] = {
            k: n
            for k, (n, d) in enumerate(zip(o.shape.dims_names, o.shape.runtime))
            if d == DYNAMIC
        }
    return {k: v for k, v in axes.items() if v}


def dynamic_shapes(config: ModelConfig) -> tuple[dict[int, Any] | None, ...] | None:
    """torch.export dims, one per dims name, so axes sharing a name (batch) share a symbol."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any] | None] = []
    for spec in config.inputs:
        axes: dict[int, Any] = {}
        for axis, name in spec.shapes.dynamic_axes.items():
            if name not in dims:
                symbol = re.sub(r"\W", "_", name)
                dims[name] = Dim(symbol if symbol.isidentifier() else f"d_{symbol}")
            axes[axis] = dims[name]
        shapes.append(axes or None)
    return tuple(shapes) if any(s is not None for s in shapes) else None


def finish_onnx(path: Path, config: ModelConfig) -> int:
    """Clamp the IR version, run the checker and strict shape inference; returns the opset."""
    import onnx
    import onnx.helper

    model = onnx.load(str(path))
    opsets = list(model.opset_import)
    needed = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    model.ir_version = max(needed, min(model.ir_version, MAX_IR_VERSION))
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise InfercmpError(f"onnx.checker rejects the export: {first_line(exc)}") from exc
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise InfercmpError(f"ONNX shape inference fails on the export: {first_line(exc)}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    if inputs != config.input_names or outputs != config.output_names:
        raise InfercmpError(
            f"the exported graph has inputs {inputs} and outputs {outputs} but the config "
            f"declares {config.input_names} and {config.output_names}"
        )
    return next((o.version for o in opsets if o.domain in ("", "ai.onnx")), 0)


def _rename_values(graph: Any, mapping: dict[str, str]) -> None:
    """Rename values everywhere in `graph` and its subgraphs."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                _rename_values(sub, mapping)


def rename_outputs(path: Path, names: Sequence[str]) -> None:
    """Give the graph outputs the config's names, moving aside inner values that hold them."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    current = [o.name for o in graph.output]
    if len(current) != len(names):
        raise InfercmpError(
            f"the exported graph has {len(current)} outputs but the config declares "
            f"{len(names)} ({', '.join(names)})"
        )
    mapping = {old: new for old, new in zip(current, names) if old != new}
    if not mapping:
        return
    used = {v for n in graph.node for v in [*n.input, *n.output]}
    used |= {v.name for v in [*graph.input, *graph.value_info]} | {
        i.name for i in graph.initializer
    }
    for new in names:
        if new in used and new not in current:
            mapping[new] = f"{new}__inner"
            while mapping[new] in used:
                mapping[new] += "_"
    _rename_values(graph, mapping)
    onnx.save(model, str(path))


def static_dims_where_dynamic(path: Path, config: ModelConfig) -> list[str]:
    """The graph inputs' axes that the config marks dynamic but the graph fixes, described."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found = []
    graph_inputs = {i.name: i for i in model.graph.input}
    for spec in config.inputs:
        value = graph_inputs.get(spec.name)
        if value is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, name in spec.shapes.dynamic_axes.items():
            if axis < len(dims) and dims[axis].HasField("dim_value"):
                found.append(f"{spec.name}[{axis}] ({name}) = {dims[axis].dim_value}")
    return found
