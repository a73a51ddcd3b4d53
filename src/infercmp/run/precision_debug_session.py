"""What `infercmp debug-precision` does between parsing and printing: check the request,
make the reduced-precision artifact through the engine's `convert`, compare it layer by layer
with fp32 (`precision_debug`, `precision_debug_capture`), rank, propose and measure
(`precision_debug_measure`).

The samples come from the caller: the model's example inputs under several seeds
(`example_samples`), or a dataset's (`dataset_samples`, where the integrator plugs the
plugin's dataset in).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.onnx_export import OnnxArtifact, export_onnx
from infercmp.artifacts.reference import ensure_reference
from infercmp.artifacts.samples import CalibrationSet, Samples
from infercmp.core.contract import finite_or_none
from infercmp.core.errors import InfercmpError
from infercmp.core.files import write_atomic
from infercmp.core.lazy import lazy_import
from infercmp.core.types import PRECISIONS
from infercmp.engines.descriptor import ConvertContext, Converted, EngineDescriptor, Machine
from infercmp.engines.registry import get_descriptor
from infercmp.run import precision_debug_capture as capture
from infercmp.run.precision_debug import (
    MIN_GROWTH_DB,
    DebugResult,
    LayerError,
    at_depth,
    exclusion_paths,
    match_tensors,
    onnx_layer_errors,
    rank_layers,
    tensor_error,
)
from infercmp.run.precision_debug_measure import (
    QUICK_NOTE,
    Proposal,
    QuickLatency,
    agreement,
    propose,
    quick_latency,
    write_mixed_fp16,
)
from infercmp.store.debug_precision import RESULT_FILE
from infercmp.workload.inputs import example_runtime_inputs, random_like
from infercmp.workload.module import load_module
from infercmp.workload.outputs import flatten_outputs
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import default_experiment

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    np = lazy_import("numpy")
    onnx = lazy_import("onnx")


@dataclass
class DebugRequest:
    """One `infercmp debug-precision` call. `inputs` are the samples (runtime inputs, config
    order); `labels` their labels when they come from a labelled dataset."""

    plugin: ModelPlugin
    engine: str
    options: dict[str, Any]
    precision: str
    inputs: list[list[np.ndarray]]
    samples_source: str
    cache: ArtifactCache
    out_dir: Path
    top: int = 5
    depth: int | None = None
    min_growth: float = MIN_GROWTH_DB
    latency: bool = True
    labels: np.ndarray | None = None
    calibration: CalibrationSet | None = None
    progress: Callable[[str], None] = field(default=lambda _m: None)


# -- samples --------------------------------------------------------------------------------
def example_samples(plugin: ModelPlugin, count: int) -> list[list[np.ndarray]]:
    """`count` samples made from the model's example: sample 0 is the example itself, sample
    k the raw example's shapes, dtypes and value range drawn again with seed k, preprocessed."""
    experiment = default_experiment(plugin.config)
    raw = plugin.load_example_inputs(experiment.shapes)
    samples = [example_runtime_inputs(plugin, experiment)]
    for seed in range(1, count):
        samples.append(list(plugin.preprocess(random_like(raw, seed))))
    return samples[:count]


def dataset_samples(samples: Samples, count: int) -> tuple[list[list[np.ndarray]], Any]:
    """The first `count` dataset samples as runtime inputs, and their labels (None if none).

    Where the plugin's dataset plugs in: give it the preprocessed samples (the samples file's
    form) with each input already shaped as the model takes one sample (batch axis kept).
    """
    labels = samples.labels[:count] if samples.labels is not None else None
    return [list(row) for row in samples.inputs[:count]], labels


# -- checking the request -------------------------------------------------------------------
def check_request(engine: str, precision: str) -> EngineDescriptor:
    """The engine's descriptor, or one line saying why this combination cannot be debugged."""
    if precision not in PRECISIONS:
        raise InfercmpError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    if precision == "fp32":
        raise InfercmpError(
            "debug-precision compares a reduced precision with fp32; give -p fp16, bf16 or int8"
        )
    descriptor = get_descriptor(engine)
    if descriptor.layer_outputs is None:
        raise InfercmpError(
            f"debug-precision cannot look inside engine '{engine}': its descriptor declares no "
            "layer_outputs (docs/debug-precision.md)"
        )
    reason = descriptor.refusal("cpu", precision, Machine.current())
    if reason:
        raise InfercmpError(f"{engine} {precision} on cpu: {reason}")
    return descriptor


# -- the run --------------------------------------------------------------------------------
def debug_precision(request: DebugRequest) -> DebugResult:
    """Compare, rank, propose and measure; the result is also written to `out_dir`."""
    descriptor = check_request(request.engine, request.precision)
    options = descriptor.parse_options(dict(request.options))
    if not request.inputs:
        raise InfercmpError("debug-precision needs at least one sample")
    request.out_dir.mkdir(parents=True, exist_ok=True)
    if descriptor.artifact == "module":
        result = _debug_module(request)
    else:
        result = _debug_onnx(request, descriptor, options)
    text = json.dumps(_finite(result.as_dict()), indent=2)
    write_atomic(request.out_dir / RESULT_FILE, text)
    return result


def _context(request: DebugRequest, onnx_artifact: OnnxArtifact | None) -> ConvertContext:
    return ConvertContext(
        request.plugin,
        request.cache,
        onnx_artifact,
        request.progress,
        calibration=request.calibration,
    )


#: What ONNX Runtime's quantizer names the dequantized copy of a tensor T of the fp32 model.
QDQ_SUFFIX = "_DequantizeLinear_Output"


def _run_candidate(
    how: str | None, path: Path, precision: str, names: Sequence[str], inputs: Any
) -> dict[str, list[np.ndarray]]:
    if how == "ov-model":
        return capture.ov_activations(path, names, inputs, precision)
    if path.suffix != ".onnx":
        return capture.ort_activations(path, names, inputs)
    # In a Q/DQ model the fp32 tensor T's counterpart is the value after its Q/DQ pair
    # (`T_DequantizeLinear_Output`, what the next layer reads): T itself may be something
    # else there (ORT drops a Relu into the Q before it, so `relu` is the conv's raw output).
    produced = {o for node in onnx.load(str(path)).graph.node for o in node.output}
    alias = {n: n + QDQ_SUFFIX if n + QDQ_SUFFIX in produced else n for n in names}
    found = capture.ort_activations(path, list(alias.values()), inputs)
    return {name: found[a] for name, a in alias.items() if a in found}


def _outputs(how: str | None, path: Path, precision: str, inputs: Any) -> list[list[np.ndarray]]:
    if how == "ov-model":
        return capture.ov_outputs(path, inputs, precision)
    return capture.ort_outputs(path, inputs)


def _debug_onnx(request: DebugRequest, descriptor: EngineDescriptor, options: Any) -> DebugResult:
    plugin, precision, engine = request.plugin, request.precision, request.engine
    request.progress("ONNX export")
    exported = export_onnx(plugin, request.cache, progress=request.progress)
    converted = descriptor.convert(_context(request, exported), precision, options)
    candidate = model_file(exported.path, converted, request.options)
    model = onnx.load(str(exported.path))
    names = capture.float_tensors(model)
    request.progress(f"fp32 reference: {len(names)} tensors on {len(request.inputs)} samples")
    reference = capture.ort_activations(exported.path, names, request.inputs)
    request.progress(f"{engine} {precision}: the same tensors")
    errors = match_tensors(
        reference,
        _run_candidate(descriptor.layer_outputs, candidate, precision, names, request.inputs),
        precision,
    )
    layers = at_depth(onnx_layer_errors(model, errors), request.depth)
    top = rank_layers(layers, request.top, request.min_growth)
    paths = exclusion_paths(top)
    mixed_path = None
    if descriptor.mixed_fp16_option and precision == "fp16" and top:
        mixed_path = request.out_dir / "mixed-fp16.onnx"
        culprit_nodes = [n.name for n in model.graph.node if set(n.output) & {t.name for t in top}]
        write_mixed_fp16(model, paths, culprit_nodes, mixed_path)
    proposal = propose(descriptor, precision, paths, mixed_path)
    notes = [f"{len(errors)} of {len(names)} fp32 tensors matched in the {precision} model"]
    fp32 = capture.ort_outputs(exported.path, request.inputs)
    measured = _measure_onnx(request, descriptor, exported, converted, proposal, fp32)
    mechanism = f"{engine}: tensors exposed as outputs, matched by name"
    return _result(request, mechanism, layers, top, proposal, measured, notes)


def model_file(export: Path, converted: Converted | None, options: dict[str, Any]) -> Path:
    """The file the engine runs: a converted artifact, else a model file among the options
    (a conversion's, then the user's: `fp16_model`), else the export itself."""
    if converted is not None and converted.artifact is not None:
        return converted.artifact
    given = [*(converted.options if converted is not None else ()), *options.items()]
    for _name, value in given:
        if isinstance(value, str) and Path(value).suffix in (".onnx", ".xml"):
            if Path(value).is_file():
                return Path(value)
    return export


def _latency(
    request: DebugRequest, exported: OnnxArtifact, converted: Converted | None,
    options: dict[str, Any], name: str,
) -> dict[str, Any]:  # fmt: skip
    plugin = request.plugin
    reference = ensure_reference(plugin, request.cache, default_experiment(plugin.config))
    artifact = converted.artifact if converted is not None and converted.artifact else exported.path
    what = QuickLatency(
        request.engine,
        request.precision,
        artifact,
        {**dict(converted.options if converted is not None else ()), **options},
    )
    request.progress(f"quick latency check: {name}")
    return quick_latency(plugin, what, reference, request.out_dir / f"latency-{name}")


def _measure_onnx(
    request: DebugRequest,
    descriptor: EngineDescriptor,
    exported: OnnxArtifact,
    converted: Converted | None,
    proposal: Proposal,
    fp32: list[list[np.ndarray]],
) -> dict[str, Any]:
    """Accuracy (and the quick latency) of the original and the mixed model."""
    how, precision, inputs = descriptor.layer_outputs, request.precision, request.inputs
    evaluate = request.plugin.evaluate
    candidate = model_file(exported.path, converted, request.options)
    original = agreement(
        fp32, _outputs(how, candidate, precision, inputs), request.labels, evaluate
    )
    if proposal.options is None:
        return {"original": original, "mixed": None}
    mixed_options = {**request.options, **proposal.options}
    try:
        parsed = descriptor.parse_options(mixed_options)
        request.progress(f"making the mixed model ({proposal.engine_text})")
        mixed_converted = descriptor.convert(_context(request, exported), precision, parsed)
    except InfercmpError as exc:
        why = str(exc).splitlines()[0]
        return {
            "original": original,
            "mixed": None,
            "note": f"the mixed model cannot be made yet: {why}",
        }
    mixed_file = model_file(exported.path, mixed_converted, mixed_options)
    mixed = agreement(fp32, _outputs(how, mixed_file, precision, inputs), request.labels, evaluate)
    found: dict[str, Any] = {"original": original, "mixed": mixed}
    if request.latency:
        original["latency"] = _latency(request, exported, converted, request.options, "original")
        mixed["latency"] = _latency(request, exported, mixed_converted, mixed_options, "mixed")
        found["latency_note"] = QUICK_NOTE
    return found


def _debug_module(request: DebugRequest) -> DebugResult:
    plugin, precision = request.plugin, request.precision
    if precision == "int8":
        raise InfercmpError(
            f"debug-precision on {request.engine} int8 needs the quantized module, which "
            "forward hooks cannot look inside yet; use an engine that runs an ONNX or "
            "OpenVINO model for int8"
        )
    module, _identity = load_module(plugin)
    request.progress(f"fp32 and {precision} module: forward hooks on every leaf module")
    reference = capture.module_activations(module, request.inputs, "fp32")
    candidate = capture.module_activations(module, request.inputs, precision)
    layers = at_depth(module_layer_errors(reference, candidate, precision), request.depth)
    top = rank_layers(layers, request.top, request.min_growth)
    proposal = propose(get_descriptor(request.engine), precision, exclusion_paths(top), None)

    def flatten(result: Any) -> list[Any]:
        return flatten_outputs(result, plugin.config.output_names, plugin.name)

    fp32 = capture.torch_outputs(module, request.inputs, "fp32", flatten)
    reduced = capture.torch_outputs(module, request.inputs, precision, flatten)
    original = agreement(fp32, reduced, request.labels, plugin.evaluate)
    measured = {"original": original, "mixed": None}
    notes = [f"{len(layers)} leaf modules compared"]
    return _result(
        request,
        "pytorch: forward hooks, matched by module path",
        layers,
        top,
        proposal,
        measured,
        notes,
    )


def module_layer_errors(
    reference: dict[str, Any], candidate: dict[str, Any], precision: str = "fp32"
) -> list[LayerError]:
    """One `LayerError` per leaf module both runs saw (records with `op`, `inputs`,
    `outputs`: one flattened array per call), in the reference's call order."""
    layers = []
    for path, ref in reference.items():
        cand = candidate.get(path)
        if cand is None or len(cand.outputs) != len(ref.outputs):
            continue
        if any(
            r.shape != c.shape for r, c in zip(ref.outputs + ref.inputs, cand.outputs + cand.inputs)
        ):
            continue
        out = tensor_error(ref.outputs, cand.outputs, precision)
        sqnr_in = tensor_error(ref.inputs, cand.inputs).sqnr_db
        layers.append(
            LayerError(
                path, path, ref.op, sqnr_in, out.sqnr_db, out.max_rel, out.mean_rel,
                floor_db=out.floor_db,
            )
        )  # fmt: skip
    return layers


def _result(
    request: DebugRequest, mechanism: str, layers: list[LayerError], top: list[LayerError],
    proposal: Proposal, measured: dict[str, Any] | None, notes: list[str],
) -> DebugResult:  # fmt: skip
    return DebugResult(
        model=request.plugin.name,
        engine=request.engine,
        precision=request.precision,
        device="cpu",
        samples=len(request.inputs),
        samples_source=request.samples_source,
        mechanism=mechanism,
        depth=request.depth,
        layers=layers,
        top=top,
        proposal=proposal.as_dict(),
        measured=measured,
        notes=notes,
    )


def _finite(value: Any) -> Any:
    """`value` with every infinity and NaN as None: JSON has neither."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return finite_or_none(value)
