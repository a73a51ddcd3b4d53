"""PyTorch -> ONNX export, checked (checker, shape inference, dynamic axes, parity) and cached.

The key of an exported model covers the loaded module's fingerprint, the config, the plugin's
`cache_token()`, a hash of the example inputs and the library versions
(`infercmp.artifacts.key_material`), and the exporter and the opset. Each bench builds the
module once in the parent (`infercmp.workload.module`). The export is run in ONNX Runtime (CPU)
at the example shape and at the profile's min, opt and max, and compared with PyTorch fp32;
the outputs of both are kept in the entry, so a cached export is judged again under new
tolerances without a rerun.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import StrictInt

from infercmp.artifacts.cache import (
    UNWRITABLE,
    ArtifactCache,
    CacheEntry,
    CacheUnwritable,
    EntryMeta,
    content_key,
    register_kind,
)
from infercmp.artifacts.key_material import module_material, versions
from infercmp.artifacts.onnx_graph import (
    dynamic_axes,
    dynamic_shapes,
    finish_onnx,
    first_line,
    rename_outputs,
    static_dims_where_dynamic,
)
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.core.parity import DEFAULT_RTOL as DEFAULT_PARITY_RTOL
from infercmp.core.parity import OutputParity, compare_output
from infercmp.workload.batching import batch_axis
from infercmp.workload.config import ModelConfig
from infercmp.workload.inputs import example_runtime_inputs
from infercmp.workload.module import (
    ModuleIdentity,
    check_outputs_against_config,
    load_module,
    run_pytorch,
)
from infercmp.workload.outputs import flatten_outputs
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import default_experiment

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import torch
else:
    np = lazy_import("numpy")
    torch = lazy_import("torch")

EXPORTERS = ("dynamo", "torchscript")
# The export is judged by infercmp.core.parity's rule at fp32 CPU tolerances; None: the absolute
# tolerance is rtol times the output's largest |value| (see infercmp.core.parity).
DEFAULT_RTOL = DEFAULT_PARITY_RTOL["fp32", "cpu"]
DEFAULT_ATOL: float | None = None
ONNX_FILE = "model.onnx"
PARITY_FILE = "parity.npz"
LOG_FILE = "export.log"

Progress = Callable[[str], None]


class OnnxMeta(EntryMeta):
    """An `onnx` entry's metadata, as `export_onnx` reads it back."""

    exporter: str
    opset: StrictInt
    checked_shapes: dict[str, list[list[StrictInt]]]


register_kind("onnx", (ONNX_FILE, PARITY_FILE, LOG_FILE), OnnxMeta)


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
        """Every output matched PyTorch at every checked shape."""
        return all(p.ok for p in self.parity)


# -- parity --------------------------------------------------------------------------------
def _parity_error(
    model: str, exporter: str, failed: Sequence[OutputParity], rtol: float, atol: float | None
) -> str:
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


#: The export check runs the batch axis at most at this size: two rows prove the axis dynamic,
#: while a batch-dynamic config's largest batch at its largest image (ResNet-50: 256 x 3 x 512
#: x 512) would take minutes and tens of GB in the parent. Larger batches are checked by parity
#: in the workers that run them.
CHECK_BATCH_MAX = 2


def profile_inputs(
    config: ModelConfig, example: Sequence[np.ndarray], which: str
) -> list[np.ndarray]:
    """The example inputs fitted to the optimisation profile's `which` ("min"/"opt"/"max"),
    with the batch axis at most `CHECK_BATCH_MAX` (or the profile's min, if larger)."""
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


# -- checking the export in ONNX Runtime ------------------------------------------------------
def _ort_session(path: Path) -> onnxruntime.InferenceSession:
    """A CPU session of the exported model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions; keep stderr clean
    # Only the CPU provider: asking for CUDA/TensorRT without a GPU logs errors and falls back.
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify_onnx(
    plugin: ModelPlugin,
    module: torch.nn.Module,
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
            raise _cannot_run(exc, path, config, exporter, label, feeds) from exc
        check_outputs_against_config(config, got, label)
        ref = run_pytorch(plugin, module, inputs)
        checked[label] = [list(a.shape) for a in inputs]
        for i, (spec, r, g) in enumerate(zip(config.outputs, ref, got)):
            results.append(compare_output(spec.name, r, g, rtol, atol, at=label, same_dtype=True))
            arrays[f"{label}.ref.{i}"] = r
            arrays[f"{label}.onnx.{i}"] = g
    return results, arrays, checked


def _cannot_run(
    exc: Exception,
    path: Path,
    config: ModelConfig,
    exporter: str,
    label: str,
    feeds: dict[str, np.ndarray],
) -> InfercmpError:
    """The error for an export ONNX Runtime cannot run at the `label` shape: ONNX Runtime's own
    words first, then what can be told of the cause. Which other exporter to try is
    export_onnx's to say: it knows which ones were tried."""
    shapes = ", ".join(f"{n}={list(a.shape)}" for n, a in feeds.items())
    static = static_dims_where_dynamic(path, config)
    if static:
        why = f"; the graph fixes {', '.join(static)} although the config marks it dynamic"
    elif exporter == "torchscript":
        why = (
            "; the TorchScript exporter probably baked a dynamic axis into the graph "
            "as a constant (it does this to sequence axes)"
        )
    else:
        why = ""
    return InfercmpError(
        f"ONNX Runtime cannot run the {exporter} export at the {label} shape "
        f"({shapes}): {first_line(exc)}{why}"
    )


def _recheck_parity(
    entry: CacheEntry, config: ModelConfig, rtol: float, atol: float | None
) -> list[OutputParity]:
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


# -- the exporter's chatter -------------------------------------------------------------------
class _ThreadRouted:
    """Stands in for sys.stdout/sys.stderr: writes from a thread in `_ROUTES` go to its log,
    all others to the stream it replaced.

    An export runs in a thread that a timeout or a signal can leave behind (bench.bounded); a
    process-wide redirect would then swallow everything bench prints after it, the error
    line included. Routing by thread leaves every other thread's output where it belongs.
    """

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def _target(self) -> TextIO:
        return _ROUTES.get(threading.get_ident(), self.original)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


_ROUTES: dict[int, TextIO] = {}
_ROUTES_LOCK = threading.Lock()


def _route(stream: str) -> None:
    if not isinstance(getattr(sys, stream), _ThreadRouted):
        setattr(sys, stream, _ThreadRouted(getattr(sys, stream)))


def _unroute(stream: str) -> None:
    current = getattr(sys, stream)
    if isinstance(current, _ThreadRouted) and not _ROUTES:
        setattr(sys, stream, current.original)


def _show_warning_routed(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """warnings.showwarning for a routed thread: one line in its log."""
    log = _ROUTES.get(threading.get_ident())
    if log is None:
        _show_warning(message, category, filename, lineno, file, line)
    else:
        log.write(f"warning: {category.__name__}: {message}\n")


_show_warning = warnings.showwarning


@contextlib.contextmanager
def _captured(log: io.StringIO) -> Iterator[None]:
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


# -- running an exporter ----------------------------------------------------------------------
def _in_config_order(module: torch.nn.Module, config: ModelConfig) -> torch.nn.Module:
    """`module`, returning a tuple in config order: the order the graph's outputs are named in.

    An exporter flattens a returned dict in insertion order, which need not be the config's.
    """

    class InConfigOrder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args: Any) -> tuple[Any, ...]:
            result = self.module(*args)
            return tuple(flatten_outputs(result, config.output_names, config.name))

    # torch.export matches dynamic_shapes to forward's parameters: show it the module's own.
    InConfigOrder.forward.__signature__ = inspect.signature(type(module).forward)  # type: ignore[attr-defined]
    return InConfigOrder().eval()


def _run_exporter(
    exporter: str,
    module: torch.nn.Module,
    example: list[np.ndarray],
    config: ModelConfig,
    opset: int | None,
    path: Path,
    log: io.StringIO,
) -> None:
    """Write `module` exported by `exporter` at `path`, its chatter going to `log`."""
    module = _in_config_order(module, config)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    param_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values())
    kwargs: dict[str, Any] = dict(
        input_names=config.input_names,
        output_names=config.output_names,
        opset_version=opset,
        dynamic_axes=dynamic_axes(config) or None,
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
                kwargs["dynamic_shapes"] = dynamic_shapes(config)
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    dynamo=True,
                    external_data=param_bytes > 1_800_000_000,
                    verbose=False,
                    **kwargs,
                )
                rename_outputs(path, config.output_names)
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


# -- exporting through the cache --------------------------------------------------------------
def _onnx_key(
    plugin: ModelPlugin,
    identity: ModuleIdentity,
    example: Sequence[np.ndarray],
    exporter: str,
    opset: int | None,
) -> str:
    """The cache key of `plugin`'s module exported by `exporter` at `opset`."""
    return content_key(
        module_material(plugin, identity, example, kind="onnx", exporter=exporter, opset=opset)
    )


def _unwritable_cause(exc: BaseException) -> OSError | None:
    """The full disk (or read-only file system...) behind an exporter's error, if that is it:
    exporters wrap the OSError of a failed write in their own exception types."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in UNWRITABLE:
            return current
        current = current.__cause__ or current.__context__
    return None


def _export_one(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    exporter: str,
    module: torch.nn.Module,
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
                raise InfercmpError(f"the {exporter} exporter failed: {first_line(exc)}") from exc
            actual_opset = finish_onnx(path, config)
            progress("checking dynamic axes and parity in ONNX Runtime (CPU)")
            parity, arrays, checked = _verify_onnx(
                plugin, module, path, example, rtol, atol, exporter
            )
            failed = [p for p in parity if not p.ok]
            if failed:
                raise InfercmpError(_parity_error(config.name, exporter, failed, rtol, atol))
            # numpy's stub reads a ** dict as possibly holding its allow_pickle flag
            np.savez(staged / PARITY_FILE, **arrays)  # type: ignore[arg-type]
            (staged / LOG_FILE).write_text(log.getvalue())
            meta = {
                "model": config.name,
                "exporter": exporter,
                "opset": actual_opset,
                "checked_shapes": checked,
                "versions": versions(),
                "tensors": identity.tensors,
            }
            return cache.store("onnx", key, staged, meta), False


def _artifact(
    entry: CacheEntry,
    cached: bool,
    config: ModelConfig,
    rtol: float,
    atol: float | None,
    start: float,
) -> OnnxArtifact:
    """The export in `entry`, its parity judged again under `rtol`/`atol`."""
    parity = _recheck_parity(entry, config, rtol, atol)
    failed = [p for p in parity if not p.ok]
    if failed:
        raise InfercmpError(_parity_error(config.name, entry.meta["exporter"], failed, rtol, atol))
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
        return _artifact(entry, cached, config, rtol, atol, start)
    untried = [e for e in EXPORTERS if e not in candidates]
    if len(failures) == 1:
        hint = f"; try --exporter {untried[0]}" if untried else ""
        raise InfercmpError(f"model '{config.name}': {failures[0][1]}{hint}")
    raise InfercmpError(
        f"model '{config.name}': no exporter produced a working ONNX model:\n"
        + "\n".join(f"  {name}: {message}" for name, message in failures)
    )
