"""What starting this worker cost (`core.contract.StartupTimes`): from the process's creation
to the engine's load call, the load and the prepare, and the warm-up's first calls.

The worker runs in the process bench started (`platform.lifeline` runs it with runpy, no
second process), so the process's creation time is when bench launched it: the interpreter's
start, infercmp's and the runtime's imports are all in `process_to_load_s`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infercmp.core.contract import StartupTimes
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import psutil
else:
    np = lazy_import("numpy")
    psutil = lazy_import("psutil")

#: How many of the warm-up's first calls `StartupTimes.first_k_ms` keeps.
FIRST_K = 10


def process_started() -> float:
    """When this process was created, in seconds since the epoch, to the kernel's clock tick
    (10 ms). On Linux from its age (/proc/uptime less /proc/self/stat's start, both counted
    from boot): psutil's create_time adds the boot time, which /proc/stat gives in whole
    seconds, and could be a second off."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
            age = float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return float(psutil.Process().create_time())


@dataclass
class StartupClock:
    """The moments the worker passes on its way to its first answer (epoch seconds)."""

    process_started: float
    load_called: float = 0.0
    loaded: float = 0.0
    prepared: float = 0.0

    @classmethod
    def now(cls) -> StartupClock:
        """A clock for this process, its load called now."""
        clock = cls(process_started())
        clock.load_called = time.time()
        return clock

    def times(self, warmup_started: float, warmup_wall_ns: np.ndarray) -> StartupTimes | None:
        """The start-up figures once the warm-up ran from `warmup_started` (epoch seconds) with
        these per-call wall times; None when it made no call. The first answer came back at
        the warm-up's start plus its first call (the loop's own bookkeeping before that call
        is a few microseconds)."""
        if len(warmup_wall_ns) == 0:
            return None
        first_k = [float(ns) / 1e6 for ns in warmup_wall_ns[:FIRST_K]]
        ready = warmup_started + first_k[0] / 1e3
        return StartupTimes(
            process_to_load_s=max(0.0, self.load_called - self.process_started),
            load_s=max(0.0, self.loaded - self.load_called),
            prepare_s=max(0.0, self.prepared - self.loaded),
            first_inference_ms=first_k[0],
            first_k_ms=first_k,
            ready_s=max(0.0, ready - self.process_started),
        )
