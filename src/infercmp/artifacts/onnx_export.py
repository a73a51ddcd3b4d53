"""PyTorch -> ONNX export, checked (checker, shape inference, dynamic axes, parity) and cached.

Cache keys come from the module `load_pytorch_module()` actually returned, so a module that
depends on anything outside the plugin's files (an environment variable, a weights file, a
download) can never meet an artifact of another module. The key of an exported model covers
the module's fingerprint (`ModuleIdentity`: every parameter and buffer, by name, dtype, shape
and bytes; the module's class and its repr, which shows its structure and hyper-parameters;
every nn.Module class in it and the file defining it), the config, the plugin's
`cache_token()` if it defines one, a hash of the example inputs, the torch/onnx/onnxscript
versions, the exporter and the opset. A reference's key covers the same fingerprint, its
experiment, the runtime inputs it holds and the plugin's source files (its preprocess). So
every bench builds the module once in the parent; its tensors are hashed once per load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import io
import os
import re
import stat
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infercmp.artifacts.cache import (
    UNWRITABLE,
    ArtifactCache,
    CacheEntry,
    CacheUnwritable,
    content_key,
    file_sha256,
)
from infercmp.core.errors import InfercmpError
from infercmp.core.parity import DEFAULT_RTOL as DEFAULT_PARITY_RTOL
from infercmp.core.parity import OutputParity, compare_output
from infercmp.workload.config import DYNAMIC, ModelConfig
from infercmp.workload.outputs import flatten_outputs
from infercmp.workload.plugins import ModelPlugin, check_runtime_inputs
from infercmp.workload.shapes import Experiment, default_experiment

if TYPE_CHECKING:
    import torch

EXPORTERS = ("dynamo", "torchscript")
# The export is judged by infercmp.core.parity's rule at fp32 CPU tolerances; None: the absolute
# tolerance is rtol times the output's largest |value| (see infercmp.core.parity).
DEFAULT_RTOL = DEFAULT_PARITY_RTOL["fp32", "cpu"]
DEFAULT_ATOL: float | None = None
# onnxruntime 1.31 refuses IR 14 (what onnx 1.23 writes); TensorRT's parsers read up to IR 10.
MAX_IR_VERSION = 10
ONNX_FILE = "model.onnx"
PARITY_FILE = "parity.npz"
REFERENCE_FILE = "reference.npz"
LOG_FILE = "export.log"
_SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".toml")
_KEY_FORMAT = 2  # 2: keyed by the loaded module's fingerprint, no alias

Progress = Callable[[str], None]


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxArtifact:
    """An exported, checked ONNX model in the cache."""

    path: Path
    key: str
    cached: bool
    exporter: str
    seconds: float
    opset: int
    rtol: float
    atol: float | None
    parity: tuple[OutputParity, ...] = ()
    checked_shapes: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def parity_passed(self) -> bool:
        return all(p.ok for p in self.parity)


# -- parity --------------------------------------------------------------------------------
def _parity_error(model: str, exporter: str, failed: Sequence[OutputParity], rtol, atol) -> str:
    atol_text = f"atol {atol:g}" if atol is not None else "atol rtol x max|output|"
    lines = [
        f"model '{model}': the {exporter}-exported ONNX model does not match PyTorch fp32 "
        f"(rtol {rtol:g}, {atol_text}; loosen with --rtol/--atol):"
    ]
    lines += [f"  {p.describe()}" for p in failed]
    return "\n".join(lines)


# -- shapes and inputs ---------------------------------------------------------------------
def _fit(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Tile or crop `array` to `shape` along each axis, keeping real values (valid token ids)."""
    out = array
    for axis, size in enumerate(shape):
        if out.shape[axis] != size:
            out = np.take(out, np.arange(size) % out.shape[axis], axis=axis)
    return np.ascontiguousarray(out)


def example_runtime_inputs(plugin: ModelPlugin, experiment: Experiment) -> list[np.ndarray]:
    """The preprocessed runtime inputs of one experiment, checked against the config."""
    arrays = plugin.preprocess(plugin.load_example_inputs(experiment.shapes))
    check_runtime_inputs(plugin.config, arrays)
    return list(arrays)


def runtime_shapes(plugin: ModelPlugin, experiment: Experiment) -> list[tuple[int, ...]]:
    """The shapes the model sees for `experiment` (preprocess runs in numpy; no torch)."""
    return [tuple(a.shape) for a in example_runtime_inputs(plugin, experiment)]


#: The export check runs the batch axis at most at this size: two rows prove the axis dynamic,
#: while a batch-dynamic config's largest batch at its largest image (ResNet-50: 256 x 3 x 512
#: x 512) would take minutes and tens of GB in the parent. Larger batches are checked by parity
#: in the workers that run them.
CHECK_BATCH_MAX = 2


def profile_inputs(config: ModelConfig, example: Sequence[np.ndarray], which: str):
    """The example inputs fitted to the optimisation profile's `which` ("min"/"opt"/"max"),
    with the batch axis at most `CHECK_BATCH_MAX` (or the profile's min, if larger)."""
    from infercmp.workload.batching import batch_axis

    arrays = []
    for spec, array in zip(config.inputs, example):
        dims = list(getattr(spec.shapes.optimization, which))
        axis = batch_axis(spec.shapes.dims_names)
        if axis is not None:
            lowest = spec.shapes.optimization.min[axis]
            dims[axis] = min(dims[axis], max(lowest, CHECK_BATCH_MAX))
        arrays.append(_fit(array, dims))
    return arrays


#: The size a dynamic axis has while tracing when the example's is 1: the dynamo exporter
#: specialises an axis of size 0 or 1 into a constant, whatever dynamic_shapes says.
TRACE_MIN_DYNAMIC = 2


def trace_inputs(config: ModelConfig, example: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The example inputs with every dynamic axis of size 1 tiled to `TRACE_MIN_DYNAMIC`
    (where the profile allows that size), so `example: [1, 128]` exports a dynamic batch."""
    arrays = []
    for spec, array in zip(config.inputs, example):
        dims = list(array.shape)
        for axis in spec.shapes.dynamic_axes:
            if axis < len(dims) and dims[axis] == 1:
                if spec.shapes.optimization.max[axis] >= TRACE_MIN_DYNAMIC:
                    dims[axis] = TRACE_MIN_DYNAMIC
        arrays.append(_fit(array, dims))
    return arrays


# -- key material --------------------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=64)
def _tree_hash(directory: str, mtimes: tuple) -> str:
    digest = hashlib.sha256()
    for rel, _ in mtimes:
        digest.update(rel.encode())
        digest.update(Path(directory, rel).read_bytes())
    return digest.hexdigest()


def _source_tree_hash(directory: Path) -> str:
    """Hash the source files under `directory` (memoised on their mtimes within a process)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(_SOURCE_SUFFIXES):
                continue
            path = Path(root, name)
            info = path.stat()
            if stat.S_ISREG(info.st_mode):  # a FIFO would hang the read
                found.append((str(path.relative_to(directory)), info.st_mtime_ns))
    return _tree_hash(str(directory), tuple(found))


def _plugin_dirs(plugin: ModelPlugin) -> list[Path]:
    dirs = []
    for cls in type(plugin).__mro__:
        if cls in (ModelPlugin, object):
            continue
        try:
            path = Path(inspect.getfile(cls)).resolve().parent
        except (TypeError, OSError):
            continue
        if path not in dirs:
            dirs.append(path)
    return dirs


def _versions() -> dict[str, str]:
    return {d: _version(d) for d in ("torch", "onnx", "onnxscript", "infercmp")}


def _own_source() -> str:
    return file_sha256(Path(__file__))


@dataclass(frozen=True)
class ModuleIdentity:
    """The fingerprint of a loaded module, which its artifacts' cache keys cover."""

    tensors: str  # every parameter and buffer: name, dtype, shape and bytes
    structure: str  # the module's class and repr
    code: dict[str, str]  # every nn.Module class in it -> sha256 of its file


_LOADED: weakref.WeakKeyDictionary[ModelPlugin, tuple[Any, ModuleIdentity]] = (
    weakref.WeakKeyDictionary()
)


def _tensors_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (non-persistent ones too), each byte read once."""
    import torch

    digest = hashlib.sha256()
    named = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # a view: no copy
    return digest.hexdigest()


def _structure(module: torch.nn.Module) -> str:
    """The module's class and repr (its submodules, in order, with their hyper-parameters);
    object addresses a custom extra_repr may print are dropped, so the key stays stable."""
    cls = type(module)
    text = f"{cls.__module__}.{cls.__qualname__}\n{module!r}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _code_identity(module: torch.nn.Module) -> dict[str, str]:
    """Every module class in the model and a hash of the file defining it."""
    code = {}
    for sub in module.modules():
        cls = type(sub)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in code:
            continue
        try:
            code[name] = file_sha256(Path(inspect.getfile(cls)))
        except (TypeError, OSError):
            code[name] = "unknown"
    return code


def load_module(plugin: ModelPlugin) -> tuple[torch.nn.Module, ModuleIdentity]:
    """The plugin's module in fp32 eval mode on the CPU, and its identity (memoised)."""
    if plugin in _LOADED:
        return _LOADED[plugin]
    import torch

    try:
        module = plugin.load_pytorch_module()
    except InfercmpError:
        raise
    except Exception as exc:
        raise InfercmpError(
            f"model '{plugin.config.name}': load_pytorch_module() failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise InfercmpError(
            f"model '{plugin.config.name}': load_pytorch_module() returned "
            f"{type(module).__name__}, expected a torch.nn.Module"
        )
    module = module.float().eval().cpu()
    identity = ModuleIdentity(_tensors_hash(module), _structure(module), _code_identity(module))
    _LOADED[plugin] = (module, identity)
    return module, identity


def run_pytorch(plugin: ModelPlugin, module, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """PyTorch fp32 CPU outputs as numpy arrays, in config order."""
    import torch

    config = plugin.config
    with torch.inference_mode():
        result = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    outputs = flatten_outputs(result, config.output_names, config.name)
    return [o.detach().cpu().numpy() for o in outputs]


def _module_material(
    plugin: ModelPlugin, identity: ModuleIdentity, inputs: Sequence[np.ndarray], **options
) -> dict:
    """What an artifact's key covers (see the module doc); `inputs`: the example it was made
    from."""
    cls = type(plugin)
    token = getattr(plugin, "cache_token", None)
    return {
        "format": _KEY_FORMAT,
        "plugin": f"{cls.__module__}.{cls.__qualname__}",
        "config": plugin.config.model_dump(mode="json"),
        "token": token() if callable(token) else None,
        "tensors": identity.tensors,
        "structure": identity.structure,
        "code": identity.code,
        "inputs": _arrays_hash(inputs),
        "versions": _versions(),
        **options,
    }


def _arrays_hash(arrays: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}:{a.shape};".encode())
        digest.update(a.reshape(-1).view(np.uint8))
    return digest.hexdigest()


# -- ONNX helpers --------------------------------------------------------------------------
def _dynamic_axes(config: ModelConfig) -> dict[str, dict[int, str]]:
    axes = {i.name: i.shapes.dynamic_axes for i in config.inputs}
    for o in config.outputs:
        axes[o.name] = {
            k: n
            for k, (n, d) in enumerate(zip(o.shape.dims_names, o.shape.runtime))
            if d == DYNAMIC
        }
    return {k: v for k, v in axes.items() if v}


def _dynamic_shapes(config: ModelConfig):
    """torch.export dims, one per dims name, so axes sharing a name (batch) share a symbol."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes = []
    for spec in config.inputs:
        axes = {}
        for axis, name in spec.shapes.dynamic_axes.items():
            if name not in dims:
                symbol = re.sub(r"\W", "_", name)
                dims[name] = Dim(symbol if symbol.isidentifier() else f"d_{symbol}")
            axes[axis] = dims[name]
        shapes.append(axes or None)
    return tuple(shapes) if any(s is not None for s in shapes) else None


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions; keep stderr clean
    # Only the CPU provider: asking for CUDA/TensorRT without a GPU logs errors and falls back.
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _finish_onnx(path: Path, config: ModelConfig) -> int:
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
        raise InfercmpError(f"onnx.checker rejects the export: {_first_line(exc)}") from exc
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise InfercmpError(
            f"ONNX shape inference fails on the export: {_first_line(exc)}"
        ) from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    if inputs != config.input_names or outputs != config.output_names:
        raise InfercmpError(
            f"the exported graph has inputs {inputs} and outputs {outputs} but the config "
            f"declares {config.input_names} and {config.output_names}"
        )
    return next((o.version for o in opsets if o.domain in ("", "ai.onnx")), 0)


def _rename_values(graph, mapping: dict[str, str]) -> None:
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


def _rename_outputs(path: Path, names: Sequence[str]) -> None:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _static_dims_where_dynamic(path: Path, config: ModelConfig) -> list[str]:
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


def _check_outputs_against_config(config: ModelConfig, outputs, where: str) -> None:
    for spec, array in zip(config.outputs, outputs):
        runtime = spec.shape.runtime
        bad = array.ndim != len(runtime) or any(
            r != DYNAMIC and g != r for g, r in zip(array.shape, runtime)
        )
        if bad:
            raise InfercmpError(
                f"output '{spec.name}' has shape {list(array.shape)} at the {where} shape but "
                f"the config's runtime shape is {runtime}"
            )


def _verify_onnx(
    plugin: ModelPlugin,
    module,
    path: Path,
    example: list[np.ndarray],
    rtol: float,
    atol: float | None,
    exporter: str,
) -> tuple[list[OutputParity], dict[str, np.ndarray], dict[str, list[list[int]]]]:
    """Run the ONNX model in ONNX Runtime (CPU) at the example and profile shapes vs PyTorch."""
    config = plugin.config
    session = _ort_session(path)
    results: list[OutputParity] = []
    arrays: dict[str, np.ndarray] = {}
    checked: dict[str, list[list[int]]] = {}
    cases = [("example", example)] + [
        (which, profile_inputs(config, example, which)) for which in ("min", "opt", "max")
    ]
    for label, inputs in cases:
        feeds = dict(zip(config.input_names, inputs))
        try:
            got = session.run(config.output_names, feeds)
        except Exception as exc:
            shapes = ", ".join(f"{n}={list(a.shape)}" for n, a in feeds.items())
            # ONNX Runtime's own words first; then what we can tell of the cause. Which other
            # exporter to try is export_onnx's to say: it knows which ones were tried.
            static = _static_dims_where_dynamic(path, config)
            if static:
                why = f"; the graph fixes {', '.join(static)} although the config marks it dynamic"
            elif exporter == "torchscript":
                why = (
                    "; the TorchScript exporter probably baked a dynamic axis into the graph "
                    "as a constant (it does this to sequence axes)"
                )
            else:
                why = ""
            raise InfercmpError(
                f"ONNX Runtime cannot run the {exporter} export at the {label} shape "
                f"({shapes}): {_first_line(exc)}{why}"
            ) from exc
        _check_outputs_against_config(config, got, label)
        ref = run_pytorch(plugin, module, inputs)
        checked[label] = [list(a.shape) for a in inputs]
        for i, (spec, r, g) in enumerate(zip(config.outputs, ref, got)):
            results.append(compare_output(spec.name, r, g, rtol, atol, at=label, same_dtype=True))
            arrays[f"{label}.ref.{i}"] = r
            arrays[f"{label}.onnx.{i}"] = g
    return results, arrays, checked


def _recheck_parity(entry: CacheEntry, config: ModelConfig, rtol: float, atol: float):
    """Parity of a cached export under (possibly new) tolerances, from the stored outputs."""
    with np.load(entry.file(PARITY_FILE), allow_pickle=False) as data:
        results = []
        for label in entry.meta["checked_shapes"]:
            for i, spec in enumerate(config.outputs):
                results.append(
                    compare_output(
                        spec.name,
                        data[f"{label}.ref.{i}"],
                        data[f"{label}.onnx.{i}"],
                        rtol,
                        atol,
                        at=label,
                        same_dtype=True,
                    )
                )
    return results


class _ThreadRouted:
    """Stands in for sys.stdout/sys.stderr: writes from a thread in `_ROUTES` go to its log,
    all others to the stream it replaced.

    An export runs in a thread that a timeout or a signal can leave behind (bench.bounded); a
    process-wide redirect would then swallow everything bench prints after it, the error
    line included. Routing by thread leaves every other thread's output where it belongs.
    """

    def __init__(self, original) -> None:
        self.original = original

    def _target(self):
        return _ROUTES.get(threading.get_ident(), self.original)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str):
        return getattr(self._target(), name)


_ROUTES: dict[int, io.StringIO] = {}
_ROUTES_LOCK = threading.Lock()


def _route(stream: str) -> None:
    if not isinstance(getattr(sys, stream), _ThreadRouted):
        setattr(sys, stream, _ThreadRouted(getattr(sys, stream)))


def _unroute(stream: str) -> None:
    current = getattr(sys, stream)
    if isinstance(current, _ThreadRouted) and not _ROUTES:
        setattr(sys, stream, current.original)


def _show_warning_routed(message, category, filename, lineno, file=None, line=None) -> None:
    log = _ROUTES.get(threading.get_ident())
    if log is None:
        _show_warning(message, category, filename, lineno, file, line)
    else:
        log.write(f"warning: {category.__name__}: {message}\n")


_show_warning = warnings.showwarning


@contextlib.contextmanager
def _captured(log: io.StringIO):
    """Send this thread's exporter chatter (prints, warnings) to the entry's log, not the
    terminal; other threads' output is untouched, whether or not this thread ever ends."""
    global _show_warning
    with _ROUTES_LOCK:
        if not _ROUTES:
            _route("stdout")
            _route("stderr")
            if warnings.showwarning is not _show_warning_routed:
                _show_warning = warnings.showwarning
                warnings.showwarning = _show_warning_routed
        _ROUTES[threading.get_ident()] = log
    try:
        yield
    finally:
        with _ROUTES_LOCK:
            del _ROUTES[threading.get_ident()]
            if not _ROUTES:
                _unroute("stdout")
                _unroute("stderr")
                if warnings.showwarning is _show_warning_routed:
                    warnings.showwarning = _show_warning


def _in_config_order(module, config: ModelConfig):
    """`module`, returning a tuple in config order: the order the graph's outputs are named in.

    An exporter flattens a returned dict in insertion order, which need not be the config's.
    """
    import torch

    class InConfigOrder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args):
            result = self.module(*args)
            return tuple(flatten_outputs(result, config.output_names, config.name))

    # torch.export matches dynamic_shapes to forward's parameters: show it the module's own.
    InConfigOrder.forward.__signature__ = inspect.signature(type(module).forward)  # type: ignore[attr-defined]
    return InConfigOrder().eval()


def _run_exporter(
    exporter: str, module, example: list[np.ndarray], config: ModelConfig, opset, path: Path, log
):
    import logging

    import torch

    module = _in_config_order(module, config)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    param_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values())
    kwargs: dict[str, Any] = dict(
        input_names=config.input_names,
        output_names=config.output_names,
        opset_version=opset,
        dynamic_axes=_dynamic_axes(config) or None,
    )
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with _captured(log):
            if exporter == "dynamo":
                # Output names are set afterwards: the dynamo exporter can name an inner value
                # like a requested output ('embedding') and then write the name twice.
                kwargs["output_names"] = None
                kwargs["dynamic_axes"] = None
                kwargs["dynamic_shapes"] = _dynamic_shapes(config)
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    dynamo=True,
                    external_data=param_bytes > 1_800_000_000,
                    verbose=False,
                    **kwargs,
                )
                _rename_outputs(path, config.output_names)
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _onnx_key(
    plugin: ModelPlugin, identity: ModuleIdentity, example, exporter: str, opset: int | None
) -> str:
    return content_key(
        _module_material(plugin, identity, example, kind="onnx", exporter=exporter, opset=opset)
    )


def _unwritable_cause(exc: BaseException) -> OSError | None:
    """The full disk (or read-only file system...) behind an exporter's error, if that is it:
    exporters wrap the OSError of a failed write in their own exception types."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _export_one(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    exporter: str,
    module,
    identity: ModuleIdentity,
    example: list[np.ndarray],
    opset: int | None,
    rtol: float,
    atol: float | None,
    progress: Progress,
) -> tuple[CacheEntry, bool]:
    """Export with one exporter, check, and commit; or return the existing content entry."""
    config = plugin.config
    key = _onnx_key(plugin, identity, example, exporter, opset)
    with cache.lock("onnx", key):
        entry = cache.lookup("onnx", key)
        if entry is not None:
            return entry, True
        with cache.staging() as staged:
            path = staged / ONNX_FILE
            log = io.StringIO()
            progress(f"exporting {config.name} with the {exporter} exporter")
            try:
                _run_exporter(
                    exporter, module, trace_inputs(config, example), config, opset, path, log
                )
            except Exception as exc:
                full = _unwritable_cause(exc)
                if full is not None:  # the other exporter would meet the same disk
                    raise cache.unwritable(full) from exc
                raise InfercmpError(f"the {exporter} exporter failed: {_first_line(exc)}") from exc
            actual_opset = _finish_onnx(path, config)
            progress("checking dynamic axes and parity in ONNX Runtime (CPU)")
            parity, arrays, checked = _verify_onnx(
                plugin, module, path, example, rtol, atol, exporter
            )
            failed = [p for p in parity if not p.ok]
            if failed:
                raise InfercmpError(_parity_error(config.name, exporter, failed, rtol, atol))
            np.savez(staged / PARITY_FILE, **arrays)
            (staged / LOG_FILE).write_text(log.getvalue())
            meta = {
                "model": config.name,
                "exporter": exporter,
                "opset": actual_opset,
                "checked_shapes": checked,
                "versions": _versions(),
                "tensors": identity.tensors,
            }
            return cache.store("onnx", key, staged, meta), False


def export_onnx(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    *,
    exporter: str = "auto",
    opset: int | None = None,
    force: bool = False,
    rtol: float = DEFAULT_RTOL,
    atol: float | None = DEFAULT_ATOL,
    progress: Progress | None = None,
) -> OnnxArtifact:
    """Export `plugin`'s module to ONNX through the cache; checked and parity-verified.

    `exporter="auto"` tries dynamo (keeps every dynamic axis, sequence ones included) and
    falls back to TorchScript, saying why. Raises InfercmpError on failed parity or checks.
    """
    if exporter not in ("auto", *EXPORTERS):
        raise InfercmpError(f"unknown exporter '{exporter}'; choose auto, {', '.join(EXPORTERS)}")
    if rtol < 0 or (atol is not None and atol < 0):
        raise InfercmpError(f"tolerances must be non-negative, got rtol {rtol}, atol {atol}")
    progress = progress or (lambda _msg: None)
    start = time.perf_counter()
    config = plugin.config

    def artifact(entry: CacheEntry, cached: bool) -> OnnxArtifact:
        parity = _recheck_parity(entry, config, rtol, atol)
        failed = [p for p in parity if not p.ok]
        if failed:
            raise InfercmpError(
                _parity_error(config.name, entry.meta["exporter"], failed, rtol, atol)
            )
        return OnnxArtifact(
            path=entry.file(ONNX_FILE),
            key=entry.key,
            cached=cached,
            exporter=entry.meta["exporter"],
            seconds=time.perf_counter() - start,
            opset=int(entry.meta["opset"]),
            rtol=rtol,
            atol=atol,
            parity=tuple(parity),
            checked_shapes=entry.meta["checked_shapes"],
        )

    progress(f"loading the PyTorch module of {config.name}")
    module, identity = load_module(plugin)
    example = example_runtime_inputs(plugin, default_experiment(config))
    candidates = list(EXPORTERS) if exporter == "auto" else [exporter]
    failures = []
    for candidate in candidates:
        try:
            if force:
                cache.remove("onnx", _onnx_key(plugin, identity, example, candidate, opset))
            entry, cached = _export_one(
                plugin, cache, candidate, module, identity, example, opset, rtol, atol, progress
            )
        except CacheUnwritable:
            raise  # the other exporter would meet the same disk
        except InfercmpError as exc:
            failures.append((candidate, str(exc)))
            if candidate != candidates[-1]:
                progress(
                    f"the {candidate} export did not work ({str(exc).splitlines()[0]}); "
                    f"trying {candidates[candidates.index(candidate) + 1]}"
                )
            continue
        return artifact(entry, cached)
    untried = [e for e in EXPORTERS if e not in candidates]
    if len(failures) == 1:
        hint = f"; try --exporter {untried[0]}" if untried else ""
        raise InfercmpError(f"model '{config.name}': {failures[0][1]}{hint}")
    raise InfercmpError(
        f"model '{config.name}': no exporter produced a working ONNX model:\n"
        + "\n".join(f"  {name}: {message}" for name, message in failures)
    )


def ensure_reference(
    plugin: ModelPlugin, cache: ArtifactCache, experiment: Experiment, *, force: bool = False
) -> Path:
    """The npz of runtime inputs and PyTorch fp32 CPU outputs for `experiment` (cached).

    Keys are `input_0..` and `output_0..` in config order.
    """
    config = plugin.config
    shapes = [list(s) for s in experiment.shapes]
    inputs = example_runtime_inputs(plugin, experiment)
    module, identity = load_module(plugin)
    plugin_code = [_source_tree_hash(d) for d in _plugin_dirs(plugin)]
    key = content_key(
        _module_material(
            plugin, identity, inputs, kind="reference", experiment=shapes, plugin_code=plugin_code
        )
    )
    with cache.lock("reference", key):
        if force:
            cache.remove("reference", key)
        entry = cache.lookup("reference", key)
        if entry is None:
            outputs = run_pytorch(plugin, module, inputs)
            # Every engine is judged against these: an output contradicting the config is
            # the model's (or the config's) mistake, whichever engines run.
            _check_outputs_against_config(config, outputs, f"{experiment.label} example")
            with cache.staging() as staged:
                arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
                arrays.update({f"output_{i}": a for i, a in enumerate(outputs)})
                np.savez(staged / REFERENCE_FILE, **arrays)
                meta = {"model": config.name, "experiment": shapes, "label": experiment.label}
                entry = cache.store("reference", key, staged, meta)
    return entry.file(REFERENCE_FILE)
