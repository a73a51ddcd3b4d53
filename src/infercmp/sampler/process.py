"""Memory and CPU use of the worker process and its children, through psutil."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.sampler.base import ProcessGone, Reading

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")


class ProcessSampler:
    """RSS and CPU % of the worker plus all its descendants (summed).

    Finding descendants scans every process on the machine, so the list is refreshed every
    `children_refresh_s` seconds; in between, the known psutil.Process objects are reused,
    which also keeps their CPU-time baselines for `cpu_percent`.
    """

    name = "process"
    columns = ("proc_rss_bytes", "proc_cpu_pct")

    def __init__(self, children_refresh_s: float = 2.0):
        self.children_refresh_s = children_refresh_s
        self._proc: psutil.Process | None = None
        self._children: dict[int, psutil.Process] = {}
        self._children_at = -float("inf")

    def unavailable_reason(self) -> str | None:
        return None  # psutil is a dependency and reads our own children on every platform

    def open(self, pid: int) -> None:
        try:
            self._proc = psutil.Process(pid)
            self._proc.cpu_percent(None)  # baseline: the first reading is then meaningful
        except psutil.NoSuchProcess as exc:
            raise ProcessGone(pid) from exc

    def _refresh_children(self, proc: psutil.Process) -> None:
        now = time.monotonic()
        if now - self._children_at < self.children_refresh_s:
            return
        self._children_at = now
        found = {}
        for child in proc.children(recursive=True):
            known = self._children.get(child.pid)
            # Same pid but a different start time is a new process that reused the pid.
            if known is not None and known == child:
                found[child.pid] = known
            else:
                found[child.pid] = child
                try:
                    child.cpu_percent(None)
                except psutil.Error:
                    found.pop(child.pid)
        self._children = found

    def read(self) -> Reading:
        proc = self._proc
        if proc is None:
            raise RuntimeError("ProcessSampler.read() before open()")
        try:
            with proc.oneshot():
                # An exited worker the parent has not reaped yet still has a pid: stop there.
                if proc.status() == psutil.STATUS_ZOMBIE:
                    raise ProcessGone(proc.pid)
                rss = proc.memory_info().rss
                cpu = proc.cpu_percent(None)
            if rss == 0:
                # Mid-exit, after its memory is released and before it becomes a zombie.
                raise ProcessGone(proc.pid)
            self._refresh_children(proc)
        except psutil.NoSuchProcess as exc:  # also a zombie: exited, not yet reaped
            raise ProcessGone(proc.pid) from exc
        for pid, child in list(self._children.items()):
            try:
                with child.oneshot():
                    rss += child.memory_info().rss
                    cpu += child.cpu_percent(None)
            except psutil.Error:
                del self._children[pid]
        return {"proc_rss_bytes": rss, "proc_cpu_pct": cpu}

    def close(self) -> None:
        self._proc = None
        self._children = {}
