"""GPU utilisation, memory, power and energy of the GPU in use, through NVML (nvidia-ml-py)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.platform.gpus import cuda_visible_devices, gpu_handle, visible_gpu
from infercmp.sampler.base import Reading

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")


def gpu_of_processes(nvml: Any, pids: set[int]) -> tuple[Any, int] | None:
    """The GPU (handle, NVML index) on which one of `pids` holds a CUDA context, if any."""
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError:
            continue
        if any(p.pid in pids for p in running):
            return handle, index
    return None


def _environment_of(pid: int) -> dict[str, str]:
    """The worker's own environment (its CUDA_VISIBLE_DEVICES), else this process's."""
    try:
        return dict(psutil.Process(pid).environ())
    except Exception:  # gone, another user's, or no /proc: the worker inherited ours
        return dict(os.environ)


def nvml_error_name(exc: BaseException) -> str:
    return type(exc).__name__


class NvmlSampler:
    """One GPU's utilisation %, memory used, this process's memory, power (W) and energy (mJ).

    `index` is the CUDA device index the worker uses (default 0), mapped through the worker's
    CUDA_VISIBLE_DEVICES (indices or UUIDs) to NVML's GPU. Until the worker's process shows up
    on that GPU, each reading also looks for it on the others and follows it there (a device
    order that differs between CUDA and NVML, or a worker that picked another device); the
    `gpu_index` column says which GPU each reading is from. A reading NVML does not support on
    this GPU is None, and is not asked for again.

    The energy counter is expensive to read (3.4 ms of CPU per call on an H200 with driver 580,
    against 10-50 us for the other readings), so it is read on the first reading, on the first
    reading after each phase change (`mark_phase_edge`), and at most every `energy_interval_s`
    otherwise; other rows have None there. Energy over a phase needs only its edges.
    """

    name = "nvml"
    columns = (
        "gpu_util_pct",
        "gpu_mem_used_bytes",
        "proc_gpu_mem_bytes",
        "gpu_power_w",
        "gpu_energy_mj",
        "gpu_index",
    )

    def __init__(self, index: int = 0, energy_interval_s: float = 1.0):
        self.index = index
        self.energy_interval_s = energy_interval_s
        self._energy_due = True
        self._energy_at = -float("inf")
        self._nvml: Any = None
        self._handle: Any = None
        self._pids: set[int] = set()
        self._unsupported: set[str] = set()
        self._gpu_index: int | None = None
        self._located = False  # the worker's process was seen on the GPU sampled

    def _handle_for(self, nvml: Any, env: dict[str, str] | None = None) -> tuple[Any, int | None]:
        env = dict(os.environ) if env is None else env
        target = visible_gpu(self.index, env)
        if target is None:
            raise LookupError(
                f"CUDA device {self.index} is not in CUDA_VISIBLE_DEVICES="
                f"{cuda_visible_devices(env)!r}"
            )
        return gpu_handle(nvml, target)

    def unavailable_reason(self) -> str | None:
        try:
            import pynvml
        except ImportError:
            return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            no_driver = (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded)
            if isinstance(exc, no_driver):
                return f"no NVIDIA driver ({nvml_error_name(exc)})"
            return f"NVML cannot start ({nvml_error_name(exc)}: {exc})"
        except OSError as exc:
            return f"NVML cannot start ({exc})"
        try:
            self._handle_for(pynvml)
        except LookupError as exc:
            return str(exc)
        except pynvml.NVMLError as exc:
            return f"NVML cannot open CUDA device {self.index} ({nvml_error_name(exc)}: {exc})"
        finally:
            pynvml.nvmlShutdown()
        return None

    def open(self, pid: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle, self._gpu_index = self._handle_for(pynvml, _environment_of(pid))
        self._located = False
        self._pids = {pid}
        self._unsupported = set()
        self._energy_due = True
        try:
            # A worker's own children (rare) are counted as its GPU memory too.
            self._pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except Exception:
            pass

    def mark_phase_edge(self) -> None:
        """The worker changed phase: read the energy counter on the next reading."""
        self._energy_due = True

    def _get(self, column: str, call, *args) -> Any:
        if column in self._unsupported:
            return None
        try:
            return call(self._handle, *args)
        except self._nvml.NVMLError_NotSupported:
            self._unsupported.add(column)
        except self._nvml.NVMLError:
            pass  # transient (GPU lost, timeout): this reading only
        return None

    def _process_memory(self, handle: Any) -> int | None:
        nvml = self._nvml
        total = None
        for info in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            used = getattr(info, "usedGpuMemory", None)
            # NVML reports "not available" as a sentinel (e.g. under some containers).
            if info.pid in self._pids and used is not None and used < (1 << 63):
                total = (total or 0) + int(used)
        return total

    def _follow_worker(self) -> None:
        """Until the worker is seen on a GPU, look for it on all of them; switch if elsewhere."""
        try:
            found = gpu_of_processes(self._nvml, self._pids)
        except self._nvml.NVMLError:
            return
        if found is not None:
            if found[1] != self._gpu_index:
                self._energy_due = True  # another GPU's counter: read it afresh
            self._handle, self._gpu_index = found
            self._located = True

    def read(self) -> Reading:
        nvml = self._nvml
        if nvml is None:
            raise RuntimeError("NvmlSampler.read() before open()")
        if not self._located:
            self._follow_worker()
        util = self._get("gpu_util_pct", nvml.nvmlDeviceGetUtilizationRates)
        memory = self._get("gpu_mem_used_bytes", nvml.nvmlDeviceGetMemoryInfo)
        power_mw = self._get("gpu_power_w", nvml.nvmlDeviceGetPowerUsage)
        energy = None
        now = time.monotonic()
        if self._energy_due or now - self._energy_at >= self.energy_interval_s:
            energy = self._get("gpu_energy_mj", nvml.nvmlDeviceGetTotalEnergyConsumption)
            self._energy_due, self._energy_at = False, now
        return {
            "gpu_util_pct": float(util.gpu) if util is not None else None,
            "gpu_mem_used_bytes": int(memory.used) if memory is not None else None,
            "proc_gpu_mem_bytes": self._get("proc_gpu_mem_bytes", self._process_memory),
            "gpu_power_w": power_mw / 1000.0 if power_mw is not None else None,
            "gpu_energy_mj": int(energy) if energy is not None else None,
            "gpu_index": self._gpu_index,
        }

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
            self._handle = None
