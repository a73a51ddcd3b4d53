"""PyTorch 2 export quantization (PT2E) with torchao's X86InductorQuantizer, saved as `.pt2`.

`torch.export` of the plugin's module, `prepare_pt2e` (folds BatchNorm, inserts observers:
u8 per-tensor activations, s8 per-channel weights), the calibration samples run through it,
`convert_pt2e`, then `torch.export` again and `torch.export.save`. The engine loads the file
and compiles it with Inductor's freezing on, which lowers quantize/dequantize around conv and
linear to oneDNN's int8 kernels (`onednn.qconv_pointwise`, `qlinear_pointwise`); without
Inductor the model runs fp32 ops between (de)quantize steps. Exclusions: module paths of the
plugin's module, `set_module_name_qconfig(path, None)`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.cache import ArtifactCache, content_key, register_kind
from infercmp.artifacts.key_material import module_material
from infercmp.artifacts.quantize.common import (
    Quantized,
    QuantizeResult,
    QuantMeta,
    Stopwatch,
    calibration_rows,
    ensure_quantized,
    quant_key,
    tool_versions,
)
from infercmp.artifacts.samples import CalibrationSet
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import, load
from infercmp.workload.batching import input_axes, stack
from infercmp.workload.config import DYNAMIC
from infercmp.workload.inputs import example_runtime_inputs
from infercmp.workload.module import load_module
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import default_experiment

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

PT2_FILE = "model.pt2"
METHOD = "pt2e-x86-inductor"
# export_batch: the example is exported at two rows, since torch.export specialises a
# dynamic axis it sees at size 1 (the program then refuses every other batch size).
PARAMS: dict[str, Any] = {
    "config": "default",
    "is_qat": False,
    "is_dynamic": False,
    "export_batch": 2,
}
KIND = "int8-pt2e"
QUANTIZER = "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"
# The op dequantizing each per-channel int8 weight in a converted graph: one per int8 layer.
WEIGHT_DEQUANTIZE = "dequantize_per_channel"

register_kind(KIND, (PT2_FILE,), QuantMeta)


def torchao_quantizer() -> Any:
    """torchao's x86 quantizer module; importing it also registers the Inductor passes that
    lower the quantized patterns to oneDNN int8 kernels (the engine imports it too)."""
    return load(QUANTIZER, "torchao", "PyTorch int8 (PT2E)")


def dynamic_axes(plugin: ModelPlugin) -> tuple[dict[int, Any] | None, ...] | None:
    """torch.export's `dynamic_shapes`: `Dim.AUTO` on each of the config's dynamic axes, so
    export infers their ranges (a stride-2 conv makes `size != 1` guards that fixed ranges
    would violate) and keeps them dynamic where it can."""
    shapes = [
        {axis: torch.export.Dim.AUTO for axis in spec.shapes.dynamic_axes} or None
        for spec in plugin.config.inputs
    ]
    return tuple(shapes) if any(s is not None for s in shapes) else None


def check_modules(module: torch.nn.Module, paths: Sequence[str]) -> None:
    """One line when an excluded path is not a submodule of `module`."""
    known = dict(module.named_modules())
    missing = [p for p in paths if p not in known]
    if missing:
        top = [name for name, _ in module.named_children()]
        raise InfercmpError(
            f"int8_exclude: the module has no submodule {', '.join(map(repr, missing))}; its "
            f"top-level modules are: {', '.join(top) or 'none'}"
        )


def split_reused_modules(graph_module: torch.fx.GraphModule) -> None:
    """Give each call of a module instance called more than once its own path, in place.

    torch.export (non-strict) records no `source_fn_stack`, so the quantizer groups a
    pattern's nodes by the innermost `nn_module_stack` path; torchvision's Bottleneck calls one
    `self.relu` three times, the three calls fall into one partition, and X86InductorQuantizer
    stops with "Input partition has more than one output node" (ResNet-50, torch 2.14.1,
    torchao 0.18.0). export names the second and later calls `...relu@1`, `...relu@2`: those
    calls get that suffix on their path too. A module-path exclusion still matches the path
    itself, so only a later call of a reused module escapes it (a ReLU, never a weight).
    """
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        key, (path, cls) = list(stack.items())[-1]
        if "@" in key:
            stack[key] = (f"{path}@{key.rpartition('@')[2]}", cls)


def quantize_pt2e(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    calibration: CalibrationSet,
    out_path: Path,
    exclude_modules: Sequence[str] = (),
    dynamic: Any = None,
) -> QuantizeResult:
    """Write `module` quantized by PT2E at `out_path` (`.pt2`), calibrated on `calibration`.

    `exclude_modules`: paths of `module`'s submodules kept in float; `dynamic`: torch.export's
    `dynamic_shapes` for the example inputs. `seconds` covers prepare, calibration and convert.
    """
    xiq = torchao_quantizer()
    pt2e = load("torchao.quantization.pt2e.quantize_pt2e", "torchao", "PyTorch int8 (PT2E)")
    check_modules(module, exclude_modules)
    module = copy.deepcopy(module).eval()
    args = tuple(example_inputs)
    ranks = [t.dim() for t in args]
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    for path in exclude_modules:
        quantizer.set_module_name_qconfig(path, None)
    samples = 0
    try:
        exported = torch.export.export(module, args, dynamic_shapes=dynamic).module()
        split_reused_modules(exported)
        with Stopwatch() as watch, torch.no_grad():
            prepared = pt2e.prepare_pt2e(exported, quantizer)
            for row in calibration_rows(calibration, ranks):
                prepared(*(torch.from_numpy(a) for a in row))
                samples += 1
            converted = pt2e.convert_pt2e(prepared)
        program = torch.export.export(converted, args, dynamic_shapes=dynamic)
    except InfercmpError:
        raise
    except Exception as exc:
        raise InfercmpError(f"PT2E quantization failed: {type(exc).__name__}: {exc}") from exc
    torch.export.save(program, str(out_path))
    weights = [
        n
        for n in program.graph.nodes
        if n.op == "call_function" and WEIGHT_DEQUANTIZE in str(n.target)
    ]
    return QuantizeResult(
        seconds=watch.seconds,
        nodes_quantized=len(weights),
        excluded=tuple(exclude_modules),
        samples=samples,
    )


def _dynamic_batch_axes(plugin: ModelPlugin) -> list[int | None]:
    """Each input's batch axis where the config lets it vary (None elsewhere)."""
    axes = input_axes(plugin.config)
    return [
        axis if axis is not None and spec.shapes.runtime[axis] == DYNAMIC else None
        for axis, spec in zip(axes, plugin.config.inputs)
    ]


def ensure_pt2e(
    cache: ArtifactCache,
    plugin: ModelPlugin,
    calibration: CalibrationSet,
    exclude: Sequence[str] = (),
) -> Quantized:
    """The plugin's module quantized by PT2E, as `.pt2` through the cache; `exclude`: module
    paths kept in float."""
    module, identity = load_module(plugin)
    example = example_runtime_inputs(plugin, default_experiment(plugin.config))
    source = content_key(module_material(plugin, identity, example, kind="pt2e-source"))
    tools = tool_versions("torch", "torchao")
    key = quant_key(source, METHOD, PARAMS, calibration, exclude, tools)

    def produce(staged: Path) -> QuantizeResult:
        rows = stack(example, _dynamic_batch_axes(plugin), PARAMS["export_batch"])
        args = [torch.from_numpy(a) for a in rows]
        return quantize_pt2e(
            module, args, calibration, staged / PT2_FILE, exclude, dynamic_axes(plugin)
        )

    return ensure_quantized(
        cache, KIND, key, PT2_FILE, produce, METHOD, calibration, exclude, tools
    )
