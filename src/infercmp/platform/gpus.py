"""The one home of GPU facts: CUDA_VISIBLE_DEVICES, and NVML's identity of each device.

Everything else asks here which GPUs this process (or a worker, given its environment) may use,
and what they are: CUDA numbers the devices listed in CUDA_VISIBLE_DEVICES from 0, NVML ignores
that variable and sees every GPU, so reading NVML's GPU `i` for CUDA device `i` takes the wrong
card on a host with two kinds of GPU (issue 24). No torch, and no CUDA context: NVML only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

# NVML clock-event reasons that mean the GPU ran slower than it could: a benchmark taken under
# them is not representative. Idle, application-clock and sync-boost reasons are benign.
_SLOWDOWN_REASONS: dict[str, int] = {
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
}


@functools.lru_cache(maxsize=1)
def _nvml() -> Any | None:
    """The initialised pynvml module, or None when there is no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable GPU
        return None
    return pynvml


def _decode(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- CUDA_VISIBLE_DEVICES


def cuda_visible_devices(env: Mapping[str, str] | None = None) -> str | None:
    """CUDA_VISIBLE_DEVICES of `env` (this process's environment by default), None when unset."""
    return (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")


def _entries(value: str) -> list[int | str]:
    """CUDA_VISIBLE_DEVICES's entries as CUDA reads them before looking at any device: indices
    and (prefixes of) GPU-/MIG- UUIDs, up to the first empty or negative entry."""
    entries: list[int | str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            if int(entry) < 0:
                break  # CUDA stops at the first invalid entry
            entries.append(int(entry))
        else:
            entries.append(entry)  # GPU-<uuid> or MIG-<uuid>
    return entries


def visible_gpu(index: int = 0, env: Mapping[str, str] | None = None) -> int | str | None:
    """NVML's name for CUDA device `index`: an NVML index, a UUID string, or None if hidden.

    `env` is the environment of the process that uses the device (this one's by default).
    (CUDA and NVML both use PCI bus order when CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA's default
    "fastest first" can differ on mixed-GPU hosts.)
    """
    listed = cuda_visible_devices(env)
    if listed is None:
        return index
    entries = _entries(listed)
    return entries[index] if 0 <= index < len(entries) else None


def _match_uuid(uuids: list[str], prefix: str) -> int | None:
    """The position of the one UUID that starts with `prefix` (CUDA accepts a unique prefix)."""
    matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def _uuids(nvml: Any, handles: list[Any]) -> list[str]:
    return [str(_decode(nvml.nvmlDeviceGetUUID(h))) for h in handles]


def gpu_handle(nvml: Any, target: int | str) -> tuple[Any, int | None]:
    """NVML's handle (and index) of `target`, a `visible_gpu` answer: an NVML index, or a GPU
    UUID, whole or a prefix as CUDA accepts it (`GPU-8f3a`). LookupError when there is none."""
    count = nvml.nvmlDeviceGetCount()
    if isinstance(target, int):
        if target >= count:
            raise LookupError(f"GPU {target} asked for, but NVML sees {count} GPU(s)")
        return nvml.nvmlDeviceGetHandleByIndex(target), target
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    index = _match_uuid(_uuids(nvml, handles), target)
    if index is not None:
        return handles[index], index
    # A MIG instance (MIG-<uuid>) is not among the whole GPUs: NVML resolves it itself.
    return nvml.nvmlDeviceGetHandleByUUID(target), None


def _parse_visible(value: str, handles: list[Any], nvml: Any) -> list[Any]:
    """Apply CUDA_VISIBLE_DEVICES to NVML's device list the way the CUDA runtime does.

    The list stops at the first entry that names no device, and a repeated device ends it too.
    """
    visible: list[Any] = []
    uuids: list[str] | None = None
    for entry in _entries(value):
        position: int | None = None
        if isinstance(entry, int):
            position = entry if entry < len(handles) else None
        else:
            uuids = _uuids(nvml, handles) if uuids is None else uuids
            position = _match_uuid(uuids, entry)
        if position is None or handles[position] in visible:
            break
        visible.append(handles[position])
    return visible


def _visible_handles() -> list[Any]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception:
        return []
    value = cuda_visible_devices()
    if value is None:
        return handles
    return _parse_visible(value, handles, nvml)


# --------------------------------------------------------------------------- the visible devices


def cuda_device_count() -> int:
    """Number of CUDA devices this process may use (0 when there is no driver)."""
    return len(_visible_handles())


def nvml_handle(index: int = 0) -> Any | None:
    """NVML handle of the `index`-th visible CUDA device, or None when it does not exist.

    NVML numbers devices in PCI bus order; CUDA does too when CUDA_DEVICE_ORDER=PCI_BUS_ID
    (the default order, fastest first, only differs on machines with mixed GPUs).
    """
    handles = _visible_handles()
    return handles[index] if 0 <= index < len(handles) else None


def _query(index: int, ask: Callable[[Any, Any], Any]) -> Any:
    """`ask(nvml, handle)` for the `index`-th visible CUDA device; None when there is none."""
    nvml = _nvml()
    handle = nvml_handle(index)
    if nvml is None or handle is None:
        return None
    return ask(nvml, handle)


def gpu_name(index: int = 0) -> str | None:
    """The name of the `index`-th visible CUDA device, or None when it does not exist."""
    name = _query(index, lambda nvml, handle: nvml.nvmlDeviceGetName(handle))
    return None if name is None else str(_decode(name))


def compute_capability(index: int = 0) -> tuple[int, int] | None:
    """(major, minor) of the `index`-th visible CUDA device, or None when it does not exist."""
    capability = _query(index, lambda nvml, h: nvml.nvmlDeviceGetCudaComputeCapability(h))
    if capability is None:
        return None
    major, minor = capability
    return int(major), int(minor)


def clock_slowdown_reasons(index: int = 0) -> list[str]:
    """Names of the reasons NVML gives now for running the GPU below its maximum clocks.

    Only reasons that distort a measurement (power cap, thermal, hardware slowdown) are named;
    an empty list also means the driver could not say.
    """
    nvml = _nvml()
    handle = nvml_handle(index)
    if nvml is None or handle is None:
        return []
    query = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    if query is None:
        return []
    try:
        mask = int(query(handle))
    except Exception:  # not supported on this device or driver
        return []
    return [name for name, bit in _SLOWDOWN_REASONS.items() if mask & bit]


# --------------------------------------------------------------------------- every GPU, described


def _get(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return _decode(call(*args))
    except Exception:  # NotSupported on this GPU, or an older driver
        return None


def _driver(pynvml: Any) -> dict[str, Any]:
    cuda = _get(pynvml.nvmlSystemGetCudaDriverVersion_v2) or _get(
        pynvml.nvmlSystemGetCudaDriverVersion
    )
    if isinstance(cuda, int):
        cuda = f"{cuda // 1000}.{cuda % 1000 // 10}"
    return {
        "driver_version": _get(pynvml.nvmlSystemGetDriverVersion),
        "cuda_driver_version": cuda,
    }


def _describe(pynvml: Any, index: int, handle: Any, driver: dict[str, Any]) -> dict[str, Any]:
    """One GPU's entry of run.json's `gpus` (`infercmp.store.run_store.GpuInfo`'s keys)."""
    memory = _get(pynvml.nvmlDeviceGetMemoryInfo, handle)
    capability = _get(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    power_mw = _get(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle) or _get(
        pynvml.nvmlDeviceGetPowerManagementLimit, handle
    )
    pci = _get(pynvml.nvmlDeviceGetPciInfo, handle)
    sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
    return {
        "index": index,
        "name": _get(pynvml.nvmlDeviceGetName, handle),
        "driver_version": driver["driver_version"],
        "cuda_driver_version": driver["cuda_driver_version"],
        "uuid": _get(pynvml.nvmlDeviceGetUUID, handle),
        "memory_total_bytes": int(memory.total) if memory is not None else None,
        "compute_capability": (
            f"{capability[0]}.{capability[1]}" if capability is not None else None
        ),
        "sm_clock_mhz": _get(pynvml.nvmlDeviceGetClockInfo, handle, sm),
        "sm_clock_max_mhz": _get(pynvml.nvmlDeviceGetMaxClockInfo, handle, sm),
        "memory_clock_mhz": _get(pynvml.nvmlDeviceGetClockInfo, handle, mem),
        "memory_clock_max_mhz": _get(pynvml.nvmlDeviceGetMaxClockInfo, handle, mem),
        "power_limit_w": power_mw / 1000.0 if power_mw is not None else None,
        "pci_bus_id": _decode(getattr(pci, "busId", None)) if pci else None,
    }


def describe_gpus() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json's `nvml` summary and `gpus` list: every GPU NVML sees, visible or not. Never
    raises; NVML is started and shut down here, so a fresh driver state is read each time."""
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
        summary.update(_driver(pynvml))
        for index in range(_get(pynvml.nvmlDeviceGetCount) or 0):
            handle = _get(pynvml.nvmlDeviceGetHandleByIndex, index)
            if handle is not None:
                gpus.append(_describe(pynvml, index, handle, summary))
    except Exception as exc:  # never let metadata collection stop a run
        summary["reason"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return summary, gpus


def visible_entry(
    gpus: list[dict[str, Any]], index: int = 0, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The entry of `describe_gpus()`'s list (run.json's `gpus`) for CUDA device `index` of
    `env`'s CUDA_VISIBLE_DEVICES (this process's by default), matched by NVML index or UUID."""
    target = visible_gpu(index, env)
    if target is None:
        return None
    entries = [gpu for gpu in gpus if isinstance(gpu, dict)]
    if isinstance(target, int):
        return next((gpu for gpu in entries if gpu.get("index") == target), None)
    position = _match_uuid([str(gpu.get("uuid") or "") for gpu in entries], target)
    return None if position is None else entries[position]
