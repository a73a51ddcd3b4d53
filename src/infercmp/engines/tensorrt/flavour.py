"""Pick the TensorRT flavour (`tensorrt` or `tensorrt_rtx_bindings`) and state what it can do.

Both modules expose the same Python API. The facts that differ live here, so the builder and
the runtime engine ask one place: which module, its version, whether the network must be
strongly typed (no FP16/BF16 builder flags), and which GPUs the runtime refuses.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from infercmp.core.errors import InfercmpError, MissingDependency
from infercmp.platform import gpus as devices

# backend name (what users type) -> Python module, and the infercmp extra that installs it
BACKENDS: dict[str, str] = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx_bindings"}
EXTRAS: dict[str, str] = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt-rtx"}
# Preference when the user names no backend: full TensorRT runs on every CUDA GPU.
PREFERENCE: tuple[str, ...] = ("tensorrt", "tensorrt-rtx")

# TensorRT-RTX support matrix (1.0-1.7): Turing, Ampere, Ada, Blackwell. The runtime's own log
# on the H200 listed "8.0 8.6 8.9 12.0 12.1 >12.0"; Hopper (9.0) and B200 (10.0) are refused.
RTX_COMPUTE_CAPABILITIES: frozenset[tuple[int, int]] = frozenset(
    {(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}
)
RTX_NO_BF16: frozenset[tuple[int, int]] = frozenset({(7, 5)})


@dataclass(frozen=True)
class TrtModule:
    """An imported TensorRT flavour: the module, its backend name and version."""

    module: ModuleType
    backend: str  # "tensorrt" | "tensorrt-rtx"
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def strongly_typed(self) -> bool:
        """True when the network's types come from the ONNX file and FP16/BF16 flags are gone.

        TensorRT-RTX is always strongly typed; TensorRT 11 removed weak typing.
        """
        return self.backend == "tensorrt-rtx" or self.major >= 11

    def precision_flag(self, precision: str):
        """The BuilderFlag enabling `precision`, or None where the module has none."""
        if precision == "fp32":
            return None
        name = {"fp16": "FP16", "bf16": "BF16"}[precision]
        return getattr(self.module.BuilderFlag, name, None)

    @property
    def has_timing_cache(self) -> bool:
        """TensorRT persists tactic timings; in TensorRT-RTX (>= 1.2) they are deprecated no-ops."""
        return self.backend == "tensorrt" and hasattr(self.module, "ITimingCache")


def installed_backends() -> list[str]:
    """Backends whose module can be found, in preference order; nothing is imported."""
    return [b for b in PREFERENCE if importlib.util.find_spec(BACKENDS[b]) is not None]


def _missing_message(backend: str | None) -> str:
    if backend is not None:
        return (
            f"TensorRT backend '{backend}' needs the Python module '{BACKENDS[backend]}', which "
            f"is not installed; install it with: pip install 'infercmp[{EXTRAS[backend]}]'"
        )
    return (
        "building a TensorRT engine needs the 'tensorrt' or 'tensorrt_rtx_bindings' module and "
        "neither is installed; install one with: pip install 'infercmp[tensorrt]' "
        "or pip install 'infercmp[tensorrt-rtx]'"
    )


@functools.cache
def load_trt_module(backend: str | None = None) -> TrtModule:
    """Import the TensorRT flavour `backend` ("tensorrt" | "tensorrt-rtx"), or the first installed.

    Raises MissingDependency (one line naming the extra) when it is not installed.
    """
    if backend is not None and backend not in BACKENDS:
        raise InfercmpError(
            f"unknown TensorRT backend '{backend}'; choose one of {', '.join(BACKENDS)}"
        )
    candidates = [backend] if backend else installed_backends()
    if not candidates:
        raise MissingDependency(_missing_message(None))
    name = candidates[0]
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise MissingDependency(f"{_missing_message(backend)} ({exc})") from exc
    return TrtModule(module=module, backend=name, version=str(module.__version__))


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


def visible_gpus() -> tuple[GpuInfo, ...]:
    """The GPUs this process may use, CUDA device 0 first (CUDA_VISIBLE_DEVICES applied by
    `infercmp.platform.gpus`; no CUDA context is created); empty without a driver."""
    found = []
    try:
        for index in range(devices.cuda_device_count()):
            name, capability = devices.gpu_name(index), devices.compute_capability(index)
            if name is None or capability is None:  # gone since it was counted
                break
            found.append(GpuInfo(name=name, compute_capability=capability))
    except Exception:  # an NVML error: as without a driver
        return ()
    return tuple(found)


def gpu_model(device_id: int = 0) -> str:
    """The GPU name that engine keys carry, or "cpu-only" when no GPU is visible."""
    gpus = visible_gpus()
    if not gpus:
        return "cpu-only"
    return gpus[min(device_id, len(gpus) - 1)].name


def runtime_refusal(
    backend: str, compute_capability: tuple[int, int] | None, precision: str = "fp32"
) -> str | None:
    """Why `backend` cannot run an engine on a GPU of `compute_capability`, or None if it can.

    TensorRT-RTX only runs on RTX-class GPUs; data-centre GPUs such as the H200 (9.0) are
    refused when the engine is deserialised, with a message that does not say why.
    """
    if compute_capability is None:
        return f"{backend} engines need a CUDA GPU and none is visible"
    major, minor = compute_capability
    if backend == "tensorrt-rtx":
        if compute_capability not in RTX_COMPUTE_CAPABILITIES:
            supported = ", ".join(f"{a}.{b}" for a, b in sorted(RTX_COMPUTE_CAPABILITIES))
            return (
                f"TensorRT-RTX does not run on compute capability {major}.{minor} (supported: "
                f"{supported}, RTX-class GPUs); use --backend tensorrt on this GPU"
            )
        if precision == "bf16" and compute_capability in RTX_NO_BF16:
            return f"TensorRT-RTX has no bf16 on compute capability {major}.{minor}"
    return None
