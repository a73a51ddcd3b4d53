"""Intermediate tensors of a model on a few samples, for `infercmp.run.precision_debug`.

- ONNX in ONNX Runtime (the fp32 reference; an fp16 or QDQ int8 candidate, whose converters
  keep tensor names): the wanted tensors become graph outputs, the session runs on the CPU
  provider with graph optimisations off (every node computes as written; a QDQ model then
  runs its quantize/dequantize pairs around fp32 kernels, numerically what the int8 kernels
  compute).
- ONNX or OpenVINO IR in OpenVINO: the tensors are added as outputs (`Model.add_outputs`)
  and the model compiles with the precision as its inference precision hint.
- PyTorch: forward hooks on every leaf module record its inputs and output, fp32 against the
  module cast to bf16/fp16.

Each returns tensor name (or module path) -> one array per sample, as float32.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime
    import openvino
    import torch
else:
    np = lazy_import("numpy")
    onnx = lazy_import("onnx")
    onnxruntime = lazy_import("onnxruntime")
    openvino = lazy_import("openvino")
    torch = lazy_import("torch")

Activations = dict[str, list["np.ndarray"]]
Inputs = Sequence[Sequence["np.ndarray"]]  # samples, each its runtime inputs in config order

_FLOATS = (1, 10, 16)  # TensorProto FLOAT, FLOAT16, BFLOAT16
#: OpenVINO's inference precision hint per infercmp precision (int8: the quantized ops decide).
OV_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """The float tensors nodes of `model` produce (not constants), in graph order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in _value_infos(inferred)}
    names = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        names += [o for o in node.output if o and types.get(o) in _FLOATS]
    return names


def _value_infos(model: onnx.ModelProto) -> list[Any]:
    graph = model.graph
    return [*graph.value_info, *graph.output, *graph.input]


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with each of `names` it has (typed by shape inference) as an output.

    Only tensors a node produces count: a quantized model may keep the value_info of a tensor
    its quantizer removed (ORT folds a Relu into the Q/DQ pair before it, so `conv2d` is gone).
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    produced = {out for node in model.graph.node for out in node.output}
    infos = {v.name: v for v in _value_infos(inferred) if v.name in produced}
    exposed = copy.deepcopy(model)
    present = {o.name for o in exposed.graph.output}
    added = []
    for name in names:
        info = infos.get(name)
        if info is None or not info.type.tensor_type.elem_type:
            continue
        if name not in present:
            out = exposed.graph.output.add()
            out.name = name
            out.type.tensor_type.elem_type = info.type.tensor_type.elem_type
        added.append(name)
    return exposed, added


def ort_activations(model_path: Path, names: Sequence[str], inputs: Inputs) -> Activations:
    """`names` (those the model has) on each sample, from ONNX Runtime's CPU provider."""
    model = onnx.load(str(model_path))
    exposed, added = with_outputs(model, names)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed_names = [i.name for i in session.get_inputs()]
    found: Activations = {name: [] for name in added}
    for sample in inputs:
        values = session.run(added, dict(zip(feed_names, sample)))
        for name, value in zip(added, values):
            found[name].append(np.asarray(value, dtype=np.float32))
    return found


def ort_outputs(model_path: Path, inputs: Inputs) -> list[list[np.ndarray]]:
    """The model's own outputs on each sample, as ONNX Runtime's CPU provider runs it
    (default optimisations: the artifact as deployed)."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"]
    )
    feed_names = [i.name for i in session.get_inputs()]
    return [
        [np.asarray(o, dtype=np.float32) for o in session.run(None, dict(zip(feed_names, s)))]
        for s in inputs
    ]


def _ov_compiled(model: Any, precision: str) -> Any:
    core = openvino.Core()
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OV_HINT[precision]})


def ov_activations(
    model_path: Path, names: Sequence[str], inputs: Inputs, precision: str
) -> Activations:
    """`names` (those OpenVINO's model keeps) on each sample, compiled at `precision`."""
    model = openvino.Core().read_model(str(model_path))
    added = []
    for name in names:
        try:
            model.add_outputs(name)
        except RuntimeError:  # folded or renamed by the frontend: not comparable
            continue
        added.append(name)
    compiled = _ov_compiled(model, precision)
    by_name: dict[str, Any] = {}
    for port in compiled.outputs:
        for name in port.get_names():
            by_name.setdefault(name, port)
    found: Activations = {name: [] for name in added if name in by_name}
    request = compiled.create_infer_request()
    for sample in inputs:
        result = request.infer(list(sample))
        for name in found:
            found[name].append(np.array(result[by_name[name]], dtype=np.float32))
    return found


def ov_outputs(model_path: Path, inputs: Inputs, precision: str) -> list[list[np.ndarray]]:
    """The model's own outputs on each sample, compiled at `precision`."""
    compiled = _ov_compiled(openvino.Core().read_model(str(model_path)), precision)
    request = compiled.create_infer_request()
    outputs = []
    for sample in inputs:
        result = request.infer(list(sample))
        outputs.append([np.array(result[port], dtype=np.float32) for port in compiled.outputs])
    return outputs


# -- PyTorch --------------------------------------------------------------------------------
@dataclass
class ModuleRecord:
    """What the hooks saw of one leaf module: its class, and per call its float inputs
    (concatenated, flattened) and its output (flattened)."""

    op: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


def _flat_floats(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flat_floats(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flat_floats(item)]
    return []


def _numpy(tensors: list[Any]) -> np.ndarray:
    if not tensors:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([t.detach().float().cpu().numpy().ravel() for t in tensors])


def module_activations(
    module: torch.nn.Module, inputs: Inputs, precision: str
) -> dict[str, ModuleRecord]:
    """Every leaf module's inputs and output on each sample, `module` run at `precision`
    (a copy cast to it; fp32: as it is). Paths are `named_modules` paths."""
    if precision != "fp32":
        module = copy.deepcopy(module).to(getattr(torch, TORCH_DTYPE[precision]))
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    records: dict[str, ModuleRecord] = {}
    handles = []
    for path, sub in module.named_modules():
        if not path or any(True for _ in sub.children()):
            continue

        def hook(sub: Any, args: Any, output: Any, path: str = path) -> None:
            record = records.setdefault(path, ModuleRecord(type(sub).__name__, [], []))
            record.inputs.append(_numpy(_flat_floats(args)))
            record.outputs.append(_numpy(_flat_floats(output)))

        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for sample in inputs:
                module(*(_torch_input(a, dtype) for a in sample))
    finally:
        for handle in handles:
            handle.remove()
    return records


def torch_outputs(
    module: torch.nn.Module, inputs: Inputs, precision: str, flatten: Any
) -> list[list[np.ndarray]]:
    """The module's outputs on each sample at `precision`, in config order (`flatten`:
    workload.outputs.flatten_outputs bound to the config)."""
    if precision != "fp32":
        module = copy.deepcopy(module).to(getattr(torch, TORCH_DTYPE[precision]))
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    outputs = []
    with torch.inference_mode():
        for sample in inputs:
            result = module(*(_torch_input(a, dtype) for a in sample))
            outputs.append([o.detach().float().cpu().numpy() for o in flatten(result)])
    return outputs


def _torch_input(array: np.ndarray, dtype: Any) -> Any:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(dtype) if tensor.is_floating_point() else tensor
