"""SamplingSession: a parent-side thread polling samplers on the worker's pid at a fixed rate."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from infercmp.sampler.base import ProcessGone, Sampler


class SamplingSession:
    """Poll `samplers` on `pid` at `hz` readings per second until stopped or the pid exits.

    Use as a context manager around the worker's life; call `set_phase` as the worker reports
    its phases. Each row holds `t_s` (seconds since the session started, monotonic), `time`
    (Unix time), `phase` (the phase current when the row was read) and every sampler's columns.
    The schedule is absolute (tick k at start + k/hz), so it does not drift; ticks missed while
    the machine was busy are skipped, not bunched up. When the worker exits, sampling ends by
    itself with one last row from the samplers that can still read (the GPU's), so the energy
    counter closes the last phase.
    """

    def __init__(
        self, pid: int, samplers: Sequence[Sampler], hz: float = 20.0, phase: str = "start"
    ):
        if not (isinstance(hz, int | float) and math.isfinite(hz) and hz > 0):
            raise ValueError(f"sample rate must be a positive number of Hz, got {hz!r}")
        self.pid = pid
        self.hz = float(hz)
        self._samplers = list(samplers)
        self._phase = phase
        self._phases: list[tuple[float, str]] = []
        self._rows: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        # Set on a phase change too, so every phase gets a reading at its start, however
        # short it is (a 10 ms measurement would otherwise fall between 20 Hz ticks).
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._opened: list[Sampler] = []
        self.process_gone = False
        self.thread_cpu_s = 0.0

    # ----------------------------------------------------------------- control

    def start(self) -> SamplingSession:
        if self._thread is not None:
            raise RuntimeError("a SamplingSession starts once")
        for sampler in self._samplers:
            try:
                sampler.open(self.pid)
            except ProcessGone:
                self.process_gone = True
                break
            except Exception as exc:
                self._errors.append(f"{sampler.name} sampler failed to open: {exc}")
                continue
            self._opened.append(sampler)
        self._t0 = time.perf_counter()
        self._phases.append((0.0, self._phase))
        self._thread = threading.Thread(
            target=self._loop, name=f"infercmp-sampler-{self.pid}", daemon=True
        )
        if not self.process_gone:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        for sampler in self._opened:
            try:
                sampler.close()
            except Exception as exc:
                self._errors.append(f"{sampler.name} sampler failed to close: {exc}")
        self._opened = []

    def __enter__(self) -> SamplingSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_phase(self, phase: str) -> None:
        """Tag rows read from now on with `phase` (load, warmup, measure, parity, done)."""
        if phase != self._phase:
            self._phase = phase  # one reference assignment: atomic for the sampling thread
            self._phases.append((time.perf_counter() - self._t0, phase))
            self._wake.set()

    # ----------------------------------------------------------------- results

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def rows(self) -> list[dict[str, Any]]:
        """A copy of the rows read so far (safe to call while sampling)."""
        return list(self._rows)

    @property
    def phases(self) -> list[tuple[float, str]]:
        """(t_s, phase) at each phase change, starting with the initial phase at 0."""
        return list(self._phases)

    @property
    def cpu_per_reading_s(self) -> float | None:
        """CPU seconds the sampling thread spent per row (None before any row)."""
        return self.thread_cpu_s / len(self._rows) if self._rows else None

    @property
    def errors(self) -> list[str]:
        """One line per sampler that failed and was dropped (the rest kept sampling)."""
        return list(self._errors)

    # ----------------------------------------------------------------- the thread

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._sample(list(self._opened))
        finally:
            # The sampling thread's own CPU time: what sampling costs the machine.
            self.thread_cpu_s = time.thread_time() - cpu0

    def _sample(self, samplers: list[Sampler]) -> None:
        period = 1.0 / self.hz
        t0 = self._t0
        tick = 0
        last_phase = None
        while True:
            phase = self._phase
            if phase != last_phase:
                last_phase = phase
                _mark_phase_edge(samplers)
            try:
                self._rows.append(self._read(samplers, phase, t0))
            except ProcessGone:
                self.process_gone = True
                self._final_row(samplers, t0)
                return
            tick += 1
            now = time.perf_counter()
            if t0 + tick * period < now:
                tick = math.floor((now - t0) / period) + 1  # skip missed ticks
            self._wake.wait(t0 + tick * period - now)
            self._wake.clear()
            if self._stop.is_set():
                return

    def _read(self, samplers: list[Sampler], phase: str, t0: float) -> dict[str, Any]:
        row: dict[str, Any] = {"t_s": time.perf_counter() - t0, "time": time.time(), "phase": phase}
        for sampler in list(samplers):
            try:
                row.update(sampler.read())
            except ProcessGone:
                raise
            except Exception as exc:
                # One broken sampler must not end the others' readings.
                self._errors.append(f"{sampler.name} sampler failed and was dropped: {exc}")
                samplers.remove(sampler)
        return row

    def _final_row(self, samplers: list[Sampler], t0: float) -> None:
        """One last row from the samplers that outlive the process (the GPU's energy counter
        closes the last phase's window); none when nothing can be read any more."""
        _mark_phase_edge(samplers)
        row: dict[str, Any] = {
            "t_s": time.perf_counter() - t0,
            "time": time.time(),
            "phase": self._phase,
        }
        for sampler in samplers:
            try:
                row.update(sampler.read())
            except Exception:
                continue  # ProcessGone, or anything else this late: nothing to add
        if len(row) > 3:
            self._rows.append(row)


def _mark_phase_edge(samplers: list[Sampler]) -> None:
    for sampler in samplers:
        edge = getattr(sampler, "mark_phase_edge", None)
        if edge is not None:
            edge()
