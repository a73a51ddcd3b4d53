"""CUDA device discovery through NVML, without importing torch, honouring CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import functools
import os
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


def _parse_visible(value: str, handles: list[Any], nvml: Any) -> list[Any]:
    """Apply CUDA_VISIBLE_DEVICES to NVML's device list the way the CUDA runtime does.

    Entries are indices or (prefixes of) UUIDs; the list stops at the first entry that names
    no device, and a repeated device ends it too.
    """
    visible: list[Any] = []
    uuids: list[str] | None = None
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        handle = None
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if 0 <= index < len(handles):
                handle = handles[index]
        else:
            if uuids is None:
                uuids = [_decode(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            matches = [h for h, u in zip(handles, uuids) if u.startswith(entry)]
            if len(matches) == 1:
                handle = matches[0]
        if handle is None or handle in visible:
            break
        visible.append(handle)
    return visible


def _decode(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _visible_handles() -> list[Any]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception:
        return []
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return handles
    return _parse_visible(value, handles, nvml)


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


def gpu_name(index: int = 0) -> str | None:
    handle = nvml_handle(index)
    if handle is None:
        return None
    return _decode(_nvml().nvmlDeviceGetName(handle))


def compute_capability(index: int = 0) -> tuple[int, int] | None:
    handle = nvml_handle(index)
    if handle is None:
        return None
    major, minor = _nvml().nvmlDeviceGetCudaComputeCapability(handle)
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
