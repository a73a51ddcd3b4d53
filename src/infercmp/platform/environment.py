"""Machine metadata for run.json: Python, CPU, RAM, library versions and GPUs, read cheaply."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

from infercmp.engines import registry as engines
from infercmp.workload import plugins

# Distributions whose versions a run records besides the engines' own (each engine descriptor
# names its runtime's, `EngineDescriptor.distributions`); read from package metadata, never
# imported (importing torch alone takes seconds). torch is here as the exporter's too.
LIBRARIES = (
    "infercmp",
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "numpy",
    "polars",
    "plotly",
    "cuda-python",
    "cuda-bindings",
    "nvidia-ml-py",
    "psutil",
    "pydantic",
)


def _library_versions() -> dict[str, str | None]:
    # Every library is listed, null when absent: `compare` then tells a library removed from
    # one that a run did not record at all (an older infercmp's run).
    versions: dict[str, str | None] = {name: _version(name) for name in LIBRARIES}
    try:
        versions.update(_plugin_versions())
    except Exception:  # unreadable entry points: the other libraries still count
        pass
    return versions


def _plugin_versions() -> dict[str, str | None]:
    """Every installed engine's runtime distributions (null when absent), and the package of
    every engine and model plugin: a run measured with another OpenVINO or another release of a
    plugin package is another environment for `compare`. Never raises."""
    versions: dict[str, str | None] = {}
    engine_entries = engines.engine_entries().values()
    for entry in [*engine_entries, *plugins.discover().values()]:
        if (version := _version(entry.package)) is not None:
            versions[entry.package] = version
    for entry in engine_entries:
        descriptor = entry.load()  # None for a broken engine: its package is recorded above
        try:
            versions.update(descriptor.runtime_versions() if descriptor else {})
        except Exception:  # a third-party descriptor may raise anything; its package counts
            pass
    return versions


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except Exception:  # not installed, or a broken METADATA file: never stop a run
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels only "Hardware" or "Model".
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    if value.strip():
                        return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_and_memory() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": None,
        "cpu_affinity_cores": None,
        "ram_total_bytes": None,
    }
    try:
        import psutil

        info["cpu_logical_cores"] = psutil.cpu_count(logical=True)
        info["cpu_physical_cores"] = psutil.cpu_count(logical=False)
        info["ram_total_bytes"] = psutil.virtual_memory().total
    except Exception:
        pass
    try:
        # The cores this process may run on (containers and taskset restrict them).
        info["cpu_affinity_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return info


def _decode(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _nvml_gpus() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary: dict[str, Any] = {
        "available": False,
        "reason": None,
        "driver_version": None,
        "cuda_driver_version": None,
    }
    try:
        import pynvml
    except ImportError:
        summary["reason"] = "nvidia-ml-py is not installed"
        return summary, []
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        summary["reason"] = f"{type(exc).__name__}: {exc}"
        return summary, []
    gpus: list[dict[str, Any]] = []
    try:
        summary["available"] = True

        def get(call, *args):
            try:
                return _decode(call(*args))
            except Exception:  # NotSupported on this GPU, or an older driver
                return None

        summary["driver_version"] = get(pynvml.nvmlSystemGetDriverVersion)
        cuda = get(pynvml.nvmlSystemGetCudaDriverVersion_v2) or get(
            pynvml.nvmlSystemGetCudaDriverVersion
        )
        if isinstance(cuda, int):
            cuda = f"{cuda // 1000}.{cuda % 1000 // 10}"
        summary["cuda_driver_version"] = cuda
        for index in range(get(pynvml.nvmlDeviceGetCount) or 0):
            handle = get(pynvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            memory = get(pynvml.nvmlDeviceGetMemoryInfo, handle)
            capability = get(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
            power_mw = get(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle) or get(
                pynvml.nvmlDeviceGetPowerManagementLimit, handle
            )
            pci = get(pynvml.nvmlDeviceGetPciInfo, handle)
            sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
            gpus.append(
                {
                    "index": index,
                    "name": get(pynvml.nvmlDeviceGetName, handle),
                    "driver_version": summary["driver_version"],
                    "cuda_driver_version": summary["cuda_driver_version"],
                    "uuid": get(pynvml.nvmlDeviceGetUUID, handle),
                    "memory_total_bytes": int(memory.total) if memory is not None else None,
                    "compute_capability": (
                        f"{capability[0]}.{capability[1]}" if capability is not None else None
                    ),
                    "sm_clock_mhz": get(pynvml.nvmlDeviceGetClockInfo, handle, sm),
                    "sm_clock_max_mhz": get(pynvml.nvmlDeviceGetMaxClockInfo, handle, sm),
                    "memory_clock_mhz": get(pynvml.nvmlDeviceGetClockInfo, handle, mem),
                    "memory_clock_max_mhz": get(pynvml.nvmlDeviceGetMaxClockInfo, handle, mem),
                    "power_limit_w": power_mw / 1000.0 if power_mw is not None else None,
                    "pci_bus_id": _decode(getattr(pci, "busId", None)) if pci else None,
                }
            )
    except Exception as exc:  # never let metadata collection stop a run
        summary["reason"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return summary, gpus


def collect_environment() -> dict[str, Any]:
    """Everything run.json records about the machine; fast (no heavy imports) and never raises."""
    env: dict[str, Any] = {}
    steps = {
        "python": lambda: {
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "python_executable": sys.executable,
        },
        "platform": lambda: {
            "platform": platform.platform(),
            "system": platform.system(),
            "machine": platform.machine(),
            "hostname": socket.gethostname(),
        },
        "cpu": _cpu_and_memory,
        "libraries": lambda: {"libraries": _library_versions()},
        "cuda_visible_devices": lambda: {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")
        },
    }
    errors = []
    for name, step in steps.items():
        try:
            env.update(step())
        except Exception as exc:  # pragma: no cover - each step already guards itself
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        env["nvml"], env["gpus"] = _nvml_gpus()
    except Exception as exc:  # pragma: no cover
        env["nvml"], env["gpus"] = {"available": False, "reason": str(exc)}, []
    if errors:
        env["errors"] = errors
    return env


def node_facts(cuda: bool) -> dict[str, Any]:
    """Where a worker runs: this host, its CPU and, when `cuda`, the GPU the worker will use.

    The worker uses CUDA device 0 of its CUDA_VISIBLE_DEVICES (an executor such as Ray sets
    that variable per task); that device is matched to NVML by index or UUID. The keys are
    `infercmp.store.run_store.NodeInfo`'s. Never raises.
    """
    from infercmp.sampler.nvml import visible_gpu

    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if not cuda:
        return facts
    try:
        target = visible_gpu(0)
        _, gpus = _nvml_gpus()
    except Exception:  # never let metadata collection stop a run
        return facts
    for gpu in gpus:
        uuid = gpu.get("uuid") or ""
        if target == gpu["index"] or (isinstance(target, str) and uuid.startswith(target)):
            facts.update(
                gpu_name=gpu.get("name"),
                gpu_uuid=gpu.get("uuid"),
                gpu_index=gpu["index"],
                driver_version=gpu.get("driver_version"),
            )
            break
    return facts
