"""Whole-machine CPU use and used RAM, through psutil (what the original research script kept)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.sampler.base import Reading

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")


class SystemSampler:
    """System CPU % (all cores, 0-100) and used RAM (psutil's `virtual_memory().used`)."""

    name = "system"
    columns = ("sys_cpu_pct", "sys_ram_used_bytes")

    def unavailable_reason(self) -> str | None:
        return None

    def __init__(self) -> None:
        self._primed = False

    def open(self, pid: int) -> None:
        # psutil keeps the CPU-time baseline per calling thread: the sampling thread's first
        # read() sets it.
        self._primed = False

    def read(self) -> Reading:
        cpu = psutil.cpu_percent(None)
        if not self._primed:
            # The first call in a thread compares with nothing: report no value, not 0 %.
            self._primed = True
            cpu = None
        return {"sys_cpu_pct": cpu, "sys_ram_used_bytes": psutil.virtual_memory().used}

    def close(self) -> None:
        pass
