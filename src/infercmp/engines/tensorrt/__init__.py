"""The TensorRT engine: runs a serialized plan from `infercmp build` on one CUDA device.

Works with the `tensorrt` module (TensorRT 10 and 11) and `tensorrt_rtx_bindings`
(TensorRT-RTX 1.x), which share one Python API. Buffers, copies and the stream go through
cuda-python (`cuda.bindings.runtime`); this module never imports torch, so a worker that runs it
carries no PyTorch runtime.

The shape, dtype and buffer logic is in pure functions (`check_input_shape`,
`resolve_output_shape`, `to_engine_dtype`, ...) so it can be tested without a GPU.
"""

from __future__ import annotations

import ctypes
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from infercmp.core.errors import MissingDependency, RunFailed
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.descriptor import (
    ConvertContext,
    Converted,
    EngineDescriptor,
    EngineOptions,
    Machine,
    SearchSpace,
    module_present,
)

# -- descriptor --------------------------------------------------------------------------------


class TensorRTOptions(EngineOptions):
    backend: Literal["tensorrt", "tensorrt-rtx"] | None = Field(
        None,
        description="which TensorRT builds and runs the plan; none: the first installed, "
        "tensorrt before tensorrt-rtx",
    )


class TensorRTDescriptor(EngineDescriptor):
    name = "tensorrt"
    summary = "a TensorRT or TensorRT-RTX plan built from infercmp's ONNX export"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "bf16")
    artifact = "onnx"
    options = TensorRTOptions
    runtime = "infercmp.engines.tensorrt:TensorRTEngine"
    # TensorRT and TensorRT-RTX, each a Python wheel over per-CUDA library wheels (cuda-python,
    # which the runtime also uses, is among infercmp.platform.environment's own libraries).
    distributions = (
        "tensorrt",
        "tensorrt-cu12",
        "tensorrt-cu13",
        "tensorrt-rtx",
        "tensorrt-rtx-cu12-bindings",
        "tensorrt-rtx-cu13-bindings",
        "tensorrt-rtx-cu13-libs",
    )
    keeps_profile = True
    builds_on_device = True
    # Precision is TensorRT's search: the plan is built per precision in `convert` (cached).
    search_space = SearchSpace(precisions={"cuda": ("fp32", "fp16", "bf16")})
    concurrency = {
        "cuda": "one deserialized engine per request in flight, each with its own execution "
        "context, buffers and CUDA stream, driven from its own thread"
    }

    def availability(self) -> str | None:
        from infercmp.engines.tensorrt import flavour as trt

        if not any(module_present(m) for m in trt.BACKENDS.values()):
            extras = " or ".join(f"pip install 'infercmp[{e}]'" for e in trt.EXTRAS.values())
            return (
                "neither TensorRT module ('tensorrt', 'tensorrt_rtx_bindings') is installed; "
                f"install one with: {extras}"
            )
        if not module_present("cuda.bindings"):
            return (
                "the TensorRT engine needs cuda-python ('cuda.bindings') for its buffers and "
                "stream; install it with: pip install 'infercmp[tensorrt]'"
            )
        return None

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only"
        return super().refusal(device, precision, machine)

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        from infercmp.engines.tensorrt.build import build_engine

        context.progress(f"TensorRT build ({precision})")
        plan = build_engine(
            context.plugin,
            context.cache,
            context.onnx,
            precision=precision,
            backend=getattr(options, "backend", None),
            progress=context.progress,
            batches=context.batches,
        )
        # Run the plan with the module that built it, not whichever one the worker finds first.
        return Converted(artifact=plan.path, options=(("backend", plan.backend),))


DESCRIPTOR = TensorRTDescriptor()

# -- backends ----------------------------------------------------------------------------------

BACKEND_LABELS: dict[str, str] = {"tensorrt": "TensorRT", "tensorrt_rtx_bindings": "TensorRT-RTX"}

NO_GPU_MESSAGE = "no CUDA device: the TensorRT engine needs an NVIDIA GPU"


class TensorRTUnavailable(UnsupportedCombination, MissingDependency):
    """Neither TensorRT module (or cuda-python) is installed: skipped, with the extra to install."""


class EngineRefused(UnsupportedCombination):
    """The runtime cannot run this plan on this GPU (TensorRT-RTX on compute capability 9.0)."""


def import_backend(backend: str | None) -> Any:
    """The TensorRT module for `backend` ("tensorrt", "tensorrt-rtx", or None: the first found).

    The choice is `infercmp.engines.tensorrt.flavour`'s, so the runtime picks the module
    `infercmp build` used.
    """
    from infercmp.engines.tensorrt import flavour as trt

    if backend is not None and backend not in trt.BACKENDS:
        raise EngineError(
            f"unknown TensorRT backend '{backend}'; use one of: {', '.join(trt.BACKENDS)}"
        )
    try:
        return trt.load_trt_module(backend).module
    except MissingDependency as exc:
        candidates = [backend] if backend else list(trt.PREFERENCE)
        wanted = " or ".join(f"'{trt.BACKENDS[b]}'" for b in candidates)
        extras = " or ".join(f"pip install 'infercmp[{trt.EXTRAS[b]}]'" for b in candidates)
        raise TensorRTUnavailable(
            f"the TensorRT engine needs the Python module {wanted}, which is not installed; "
            f"install it with: {extras}"
        ) from exc


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise TensorRTUnavailable(
            "the TensorRT engine needs cuda-python ('cuda.bindings.runtime') for its buffers "
            f"and stream, which is not installed ({exc}); install it with: "
            "pip install 'infercmp[tensorrt]'"
        ) from exc
    return runtime


def backend_label(module: Any) -> str:
    """'TensorRT 10.13' or 'TensorRT-RTX 1.7': the product and its major.minor version."""
    product = BACKEND_LABELS.get(module.__name__.split(".")[0], module.__name__)
    version = ".".join(str(getattr(module, "__version__", "?")).split(".")[:2])
    return f"{product} {version}"


def is_rtx(module: Any) -> bool:
    return module.__name__.split(".")[0] == "tensorrt_rtx_bindings"


def rtx_supported_ccs(module: Any) -> tuple[tuple[int, int], ...]:
    """Compute capabilities this TensorRT-RTX module can target, read from its own enum.

    `ComputeCapability` lists `SM75`, `SM80`, ..., `SM121` in TensorRT-RTX 1.7, matching
    docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/cpu-engines.html
    ("8.0, 8.6, 8.9, 12.0, and later"; 7.5 when asked for): the installed version knows best.
    """
    enum = getattr(module, "ComputeCapability", None)
    members = getattr(enum, "__members__", {}) if enum is not None else {}
    found = []
    for name in members:
        match = re.fullmatch(r"SM(\d+)(\d)", name)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    if found:
        return tuple(sorted(found))
    from infercmp.engines.tensorrt.flavour import RTX_COMPUTE_CAPABILITIES

    return tuple(sorted(RTX_COMPUTE_CAPABILITIES))


# TensorRT-RTX 1.7 on an H200 logs (seen there): "The engine cannot run on this GPU, which has
# compute capability 9.0. Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0. ..."
_LOGGED_CCS = re.compile(r"Supported compute capabilities:\s*((?:>?\d+\.\d+\s*)+)")


def logged_supported_ccs(messages: Sequence[str]) -> str | None:
    """The runtime's own list of supported compute capabilities from its log ("8.0/.../>12.0")."""
    for message in messages:
        match = _LOGGED_CCS.search(message)
        if match:
            return "/".join(match.group(1).split())
    return None


def format_ccs(ccs: Sequence[tuple[int, int]]) -> str:
    return "/".join(f"{major}.{minor}" for major, minor in ccs)


# -- logging -----------------------------------------------------------------------------------


def make_logger(trt: Any) -> Any:
    """A `trt.ILogger` that keeps warnings and errors, so a failure can say why in one line.

    TensorRT reports why deserialisation failed only through the logger (the call returns None).
    """

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 needs the base initialised explicitly
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            level = getattr(severity, "name", str(severity))
            if level in ("INTERNAL_ERROR", "ERROR", "WARNING"):
                self.messages.append((level, msg))

        def errors(self) -> list[str]:
            return [m for level, m in self.messages if level in ("INTERNAL_ERROR", "ERROR")]

    return CapturingLogger()


# -- pure shape, dtype and buffer logic -------------------------------------------------------

# TensorRT DataType member name -> host numpy dtype. BF16 has no numpy dtype: its host buffer
# holds the raw 16-bit patterns (uint16) and `to_engine_dtype` / `from_engine_dtype` convert.
_HOST_DTYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}


def host_dtype(trt_dtype: Any, tensor: str = "") -> np.dtype:
    """The numpy dtype of a host buffer for a TensorRT `DataType` (BF16 -> uint16 bits)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    try:
        return _HOST_DTYPES[name]
    except KeyError:
        where = f"tensor '{tensor}' has " if tensor else ""
        raise EngineError(
            f"{where}TensorRT type {name}, which infercmp cannot feed or read from numpy "
            f"(supported I/O types: {', '.join(_HOST_DTYPES)})"
        ) from None


def dtype_label(trt_dtype: Any) -> str:
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    return {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16"}.get(name, name.lower())


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest even) and return the bits as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    # A NaN must stay a NaN: rounding could carry its payload into the exponent (-> inf).
    nan = np.isnan(values)
    if nan.any():
        rounded = np.where(nan, (bits >> 16) | 0x0040, rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_engine_dtype(name: str, array: np.ndarray, trt_dtype: Any) -> np.ndarray:
    """Convert a host input to the dtype the engine binds, on the host, before any timing.

    Floats convert among themselves (float32 -> fp16/bf16 for reduced-precision plans);
    integers and booleans convert only where every value fits; anything else is an error.
    """
    target = host_dtype(trt_dtype, name)
    is_bf16 = dtype_label(trt_dtype) == "bfloat16"
    source = array.dtype
    if source == target and not is_bf16:
        return np.ascontiguousarray(array)
    if is_bf16 or target.kind == "f":
        if source.kind != "f":
            raise EngineError(
                f"input '{name}' is {source} but the engine expects {dtype_label(trt_dtype)}; "
                "pass floating-point data"
            )
        if is_bf16:
            return float32_to_bf16_bits(array.astype(np.float32, copy=False))
        return np.ascontiguousarray(array, dtype=target)
    if target.kind in "iu" and source.kind in "biu":
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise EngineError(
                f"input '{name}' has values in [{array.min()}, {array.max()}] that do not fit "
                f"the engine's {target} (range [{info.min}, {info.max}])"
            )
        return np.ascontiguousarray(array, dtype=target)
    if target.kind == "b" and source.kind == "b":
        return np.ascontiguousarray(array)
    raise EngineError(
        f"input '{name}' is {source} but the engine expects {dtype_label(trt_dtype)}; "
        "convert it before benchmarking"
    )


def from_engine_dtype(array: np.ndarray, trt_dtype: Any) -> np.ndarray:
    """A host output as numpy can hold it: bf16 bits widen to float32, the rest as bound."""
    if dtype_label(trt_dtype) == "bfloat16":
        return bf16_bits_to_float32(array)
    return array


@dataclass(frozen=True)
class InputProfile:
    """The engine's view of one input: its dims (-1 dynamic) and optimisation profile 0."""

    name: str
    dims: tuple[int, ...]
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def check_input_shape(shape: Sequence[int], profile: InputProfile) -> None:
    """Raise one clear line when `shape` is not a shape the engine accepts for this input."""
    shape = tuple(int(d) for d in shape)
    rank = len(profile.dims)
    allowed = f"allowed min {list(profile.min)}, max {list(profile.max)}"
    if len(shape) != rank:
        raise EngineError(
            f"input '{profile.name}' has shape {list(shape)} (rank {len(shape)}) but the "
            f"TensorRT engine expects rank {rank} ({allowed})"
        )
    for axis, (size, static) in enumerate(zip(shape, profile.dims)):
        if static != -1 and size != static:
            raise EngineError(
                f"input '{profile.name}' has shape {list(shape)} but dimension {axis} is fixed "
                f"at {static} in the TensorRT engine ({allowed})"
            )
    outside = [
        axis
        for axis, (size, lo, hi) in enumerate(zip(shape, profile.min, profile.max))
        if not lo <= size <= hi
    ]
    if outside:
        raise EngineError(
            f"input '{profile.name}' has shape {list(shape)}, outside the TensorRT engine's "
            f"optimisation profile in dimension {', '.join(map(str, outside))} ({allowed}); "
            "rebuild the engine with a wider profile (`optimization` in the model config)"
        )


def resolve_output_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape once input shapes are set; a -1 left means a data-dependent shape."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise EngineError(
            f"output '{name}' has shape {list(shape)} after the input shapes were set: its size "
            "depends on the data, which the TensorRT engine does not support yet"
        )
    return shape


def buffer_nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def match_io_names(
    role: str, expected: Sequence[str], engine_names: Sequence[str], artifact: Path | str
) -> None:
    """The engine's I/O tensors must be the model config's, or the plan is for another model."""
    if sorted(expected) != sorted(engine_names):
        raise EngineError(
            f"the TensorRT engine {artifact} has {role} {sorted(engine_names)} but the model "
            f"config names {sorted(expected)}; rebuild it with `infercmp build`"
        )


def deserialize_failure_message(
    module: Any,
    artifact: Path | str,
    gpu: str | None,
    cc: tuple[int, int] | None,
    log_errors: Sequence[str],
    validity: str | None = None,
) -> str:
    """One line saying why the runtime refused the plan, the GPU's part first."""
    label = backend_label(module)
    if is_rtx(module) and cc is not None and cc not in rtx_supported_ccs(module):
        # The runtime's logged list is exact for the plan; the module's enum is the fallback.
        supported = logged_supported_ccs(log_errors) or format_ccs(rtx_supported_ccs(module))
        return (
            f"{label} cannot run engines on {gpu or 'this GPU'} (compute capability "
            f"{cc[0]}.{cc[1]}); it supports {supported}; use the 'tensorrt' "
            "backend (pip install 'infercmp[tensorrt]')"
        )
    reasons = [validity] if validity else []
    reasons += [" ".join(e.split()) for e in log_errors[-2:]]
    why = "; ".join(reasons) if reasons else "the runtime logged no error"
    on = f" on {gpu} (compute capability {cc[0]}.{cc[1]})" if gpu and cc else ""
    return (
        f"{label} could not load the engine {artifact}{on}: {why}; a plan runs only with the "
        "TensorRT version and GPU family that built it: rebuild it with `infercmp build --force`"
    )


def rtx_validity(module: Any, runtime: Any, plan: bytes) -> str | None:
    """TensorRT-RTX's own verdict on a plan (`IRuntime.getEngineValidity`), or None."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return None
    try:
        validity, diagnostics = check(plan)
    except Exception:  # the check is advisory: the caller already has the failure
        return None
    names = [
        name
        for name, flag in module.EngineInvalidityDiagnostics.__members__.items()
        if int(diagnostics) & int(flag)
    ]
    verdict = getattr(validity, "name", str(validity))
    return f"engine validity {verdict}" + (f" ({', '.join(names)})" if names else "")


# -- CUDA through cuda-python ------------------------------------------------------------------


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python `(err, *values)` tuple; raise one line naming the call on error."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else text
        raise RunFailed(f"CUDA {what} failed: {getattr(err, 'name', err)}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_device(cudart: Any, index: int) -> tuple[str, tuple[int, int]]:
    """Name and compute capability of CUDA device `index`; one clear error when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        detail = f" ({getattr(err, 'name', err)})" if int(err) != 0 else ""
        raise UnsupportedCombination(NO_GPU_MESSAGE + detail)
    if not 0 <= index < count:
        raise EngineError(f"CUDA device {index} does not exist; this machine has {count}")
    attr = cudart.cudaDeviceAttr
    major = cuda_check(
        cudart,
        cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, index),
        "cudaDeviceGetAttribute",
    )
    minor = cuda_check(
        cudart,
        cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, index),
        "cudaDeviceGetAttribute",
    )
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    raw = props.name
    name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return name.split("\x00", 1)[0].strip(), (int(major), int(minor))


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) that numpy arrays can view.

    The memory is freed when the buffer is released and no array returned by `view` is alive
    any more, so outputs handed to the caller stay valid after `release()`.
    """

    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.nbytes = nbytes
        # cudaMallocHost(0) gives a null pointer; one byte keeps every buffer a real address.
        self.ptr = int(cuda_check(cudart, cudart.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
        self._finalizer = weakref.finalize(self, _free_host, cudart, self.ptr)

    def view(self, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        raw._owner = self  # the array's base chain keeps this buffer, hence the memory, alive
        return np.frombuffer(raw, dtype=dtype, count=math.prod(shape)).reshape(shape)


def _free_host(cudart: Any, ptr: int) -> None:
    try:
        cudart.cudaFreeHost(ptr)
    except Exception:  # at interpreter exit the CUDA library may already be gone
        pass


@dataclass
class _Binding:
    """One I/O tensor bound to device memory and a pinned host buffer."""

    name: str
    trt_dtype: Any
    shape: tuple[int, ...]
    nbytes: int
    device_ptr: int
    host: PinnedBuffer
    host_array: np.ndarray


# -- the engine --------------------------------------------------------------------------------


class TensorRTEngine(EngineBase):
    """A serialized TensorRT / TensorRT-RTX plan run with cuda-python buffers on one stream.

    Options: `backend` ("tensorrt" or "tensorrt-rtx"; default: whichever module is installed,
    `tensorrt` first), which must be the one that built the plan.
    """

    descriptor = DESCRIPTOR

    def __init__(self) -> None:
        super().__init__()
        self._trt: Any = None
        self._cudart: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._profiles: dict[str, InputProfile] = {}
        self._dtypes: dict[str, Any] = {}
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        self._bf16_outputs = False

    @property
    def stream(self) -> int | None:
        return None if self._stream is None else int(self._stream)

    # -- load --------------------------------------------------------------------------------

    def _load(self, spec: EngineSpec) -> None:
        options = self.effective_options
        if spec.artifact is None:
            raise EngineError(
                "the TensorRT engine needs a plan file; build one with `infercmp build`"
            )
        plan_path = Path(spec.artifact)
        if not plan_path.is_file():
            raise EngineError(
                f"TensorRT plan {plan_path} does not exist; build it with `infercmp build`"
            )
        trt = import_backend(options["backend"])
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        gpu, cc = cuda_device(cudart, spec.device_id)
        cuda_check(cudart, cudart.cudaSetDevice(spec.device_id), "cudaSetDevice")
        self.info.update(
            backend=trt.__name__, backend_version=str(getattr(trt, "__version__", "?")),
            gpu=gpu, compute_capability=f"{cc[0]}.{cc[1]}",
        )  # fmt: skip

        plan = plan_path.read_bytes()
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = None
        try:
            engine = self._runtime.deserialize_cuda_engine(plan)
        except Exception as exc:  # some versions raise instead of returning None
            self._logger.messages.append(("ERROR", str(exc)))
        if engine is None:
            validity = rtx_validity(trt, self._runtime, plan) if is_rtx(trt) else None
            raise EngineRefused(
                deserialize_failure_message(
                    trt, plan_path, gpu, cc, self._logger.errors(), validity
                )
            )
        self._engine = engine
        self._inspect(spec, plan_path)
        # STATIC: device memory for activations is allocated once here, not inside the timed loop.
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RunFailed(
                f"{backend_label(trt)} could not create an execution context for {plan_path}: "
                + ("; ".join(self._logger.errors()[-2:]) or "out of GPU memory?")
            )
        # A non-blocking stream: TensorRT warns that the legacy default stream adds
        # synchronisation (execute_async_v3 docstring).
        self._stream = cuda_check(
            cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "stream"
        )

    def _inspect(self, spec: EngineSpec, plan_path: Path) -> None:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            self._dtypes[name] = engine.get_tensor_dtype(name)
            host_dtype(self._dtypes[name], name)  # fail at load on an I/O type numpy cannot hold
            if mode == trt.TensorIOMode.INPUT:
                if engine.is_shape_inference_io(name):
                    raise EngineError(
                        f"input '{name}' of {plan_path} is a shape tensor, which the TensorRT "
                        "engine does not support"
                    )
                lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
                self._profiles[name] = InputProfile(
                    name, tuple(engine.get_tensor_shape(name)), tuple(lo), tuple(opt), tuple(hi)
                )
                inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                outputs.append(name)
        match_io_names("inputs", spec.input_names, inputs, plan_path)
        match_io_names("outputs", spec.output_names, outputs, plan_path)
        self.info["io_dtypes"] = {n: dtype_label(d) for n, d in self._dtypes.items()}
        self.info["profiles"] = {
            n: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
            for n, p in self._profiles.items()
        }

    # -- prepare -----------------------------------------------------------------------------

    def _prepare(self, inputs: list[np.ndarray]) -> None:
        spec, context = self.spec, self._context
        converted = []
        for name, array in zip(spec.input_names, inputs):
            check_input_shape(array.shape, self._profiles[name])
            converted.append(to_engine_dtype(name, array, self._dtypes[name]))
        for name, array in zip(spec.input_names, converted):
            if not context.set_input_shape(name, tuple(array.shape)):
                raise EngineError(
                    f"TensorRT refused shape {list(array.shape)} for input '{name}': "
                    + "; ".join(self._logger.errors()[-2:])
                )
        missing = context.infer_shapes()
        if missing:
            raise EngineError(f"TensorRT cannot infer shapes; inputs not specified: {missing}")
        out_shapes = [
            resolve_output_shape(n, context.get_tensor_shape(n)) for n in spec.output_names
        ]
        if self._inputs or self._outputs:
            self._synchronize()  # the old buffers may still be in a queued copy
        self._free_buffers()
        # Appended one by one so that a failure half-way leaves every allocation freeable.
        for name, array in zip(spec.input_names, converted):
            self._inputs.append(self._bind(name, array.shape, source=array))
        for name, shape in zip(spec.output_names, out_shapes):
            self._outputs.append(self._bind(name, shape))
        self._bf16_outputs = any(dtype_label(b.trt_dtype) == "bfloat16" for b in self._outputs)

    def _bind(self, name: str, shape: Sequence[int], source: np.ndarray | None = None) -> _Binding:
        cudart, trt_dtype = self._cudart, self._dtypes[name]
        dtype = host_dtype(trt_dtype, name)
        nbytes = buffer_nbytes(shape, dtype)
        device_ptr = int(cuda_check(cudart, cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        try:
            host = PinnedBuffer(cudart, nbytes)
        except Exception:
            cudart.cudaFree(device_ptr)
            raise
        binding = _Binding(
            name, trt_dtype, tuple(shape), nbytes, device_ptr, host, host.view(dtype, shape)
        )
        if source is not None:
            np.copyto(binding.host_array, source)
        if not self._context.set_tensor_address(name, device_ptr):
            cudart.cudaFree(device_ptr)
            raise RunFailed(f"TensorRT refused the device address for tensor '{name}'")
        return binding

    # -- the timed phases --------------------------------------------------------------------

    def _copy_in(self) -> None:
        cudart, stream = self._cudart, self._stream
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for b in self._inputs:
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(b.device_ptr, b.host.ptr, b.nbytes, kind, stream),
                f"copy of input '{b.name}' to the device",
            )

    def _compute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise RunFailed(
                f"{backend_label(self._trt)} failed to enqueue the engine: "
                + ("; ".join(self._logger.errors()[-2:]) or "no error logged")
            )

    def _copy_out(self) -> list[np.ndarray]:
        """Queue the device-to-host copies; the arrays hold the results after `synchronize()`.

        The arrays are views of pinned buffers reused by the next `copy_out()`. bf16 outputs
        are widened to float32 here, which needs the copies finished: the stream is
        synchronised first in that case.
        """
        cudart, stream = self._cudart, self._stream
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for b in self._outputs:
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(b.host.ptr, b.device_ptr, b.nbytes, kind, stream),
                f"copy of output '{b.name}' to the host",
            )
        if self._bf16_outputs:
            self._synchronize()
            return [from_engine_dtype(b.host_array, b.trt_dtype) for b in self._outputs]
        return [b.host_array for b in self._outputs]

    def _synchronize(self) -> None:
        cuda_check(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "stream sync")

    # -- release -----------------------------------------------------------------------------

    def _free_buffers(self) -> None:
        cudart = self._cudart
        for b in [*self._inputs, *self._outputs]:
            cudart.cudaFree(b.device_ptr)
        # Pinned memory goes with the last array that views it (PinnedBuffer).
        self._inputs, self._outputs = [], []

    def _release(self) -> None:
        cudart = self._cudart
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)  # no buffer is freed under a running copy
        if cudart is not None:
            self._free_buffers()
        # Context before engine before runtime: each depends on the next (TensorRT docs,
        # "the logger should be valid until all objects created are released").
        self._context = None
        self._engine = None
        self._runtime = None
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._stream = None
