"""Timed loops over an engine's phases: perf_counter_ns wall time, CUDA events, stopping rules.

The loops run in batches. Inside a batch each iteration does the engine calls between two
`perf_counter_ns` readings and one store into a preallocated int64 array; everything else
(reading CUDA event times, growing arrays, checking the stopping rule) happens between batches,
outside any timed span.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infercmp.core.stats import CI_MIN_SAMPLES, relative_ci_half_width

WALL_TOTAL = "wall.total"
DEVICE_H2D = "device.h2d"
DEVICE_COMPUTE = "device.compute"
DEVICE_D2H = "device.d2h"
DEVICE_TOTAL = "device.total"
HOST_CLOCKS = (WALL_TOTAL,)
HOST_EVENT_CLOCKS = (WALL_TOTAL, DEVICE_H2D, DEVICE_COMPUTE, DEVICE_D2H, DEVICE_TOTAL)
RESIDENT_EVENT_CLOCKS = (WALL_TOTAL, DEVICE_COMPUTE, DEVICE_TOTAL)

EVENT_SLOTS = 256  # iterations per batch when CUDA events are recorded (4 events each)
MAX_BATCH = 1 << 16
NO_DEADLINE = sys.maxsize


class TimingError(RuntimeError):
    """A CUDA call made for timing failed."""


# -- CUDA events -----------------------------------------------------------------------------


class CudaEvents:
    """A ring of CUDA events, `marks` per iteration slot, recorded on one stream.

    `recorders[slot][k]` records mark k of that slot with no arguments to look up, so the
    timed loop pays one C call per mark. Times are read with `elapsed_ns` after a synchronize.
    """

    slots: int
    marks: int
    recorders: list[tuple[Callable[[], Any], ...]]

    def elapsed_ns(self, slot: int, first: int, last: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


@functools.lru_cache(maxsize=1)
def _driver_event_record() -> Any | None:
    """The driver's `cuEventRecord` through ctypes, or None where libcuda cannot be loaded.

    A ctypes call with pre-converted arguments costs a fraction of a microsecond; a
    cuda-python call costs a few, and four of them sit inside every timed CUDA iteration.
    Event and stream handles are the driver's, whichever runtime created them.
    """
    try:
        record = ctypes.CDLL("libcuda.so.1").cuEventRecord
    except (OSError, AttributeError):
        return None
    record.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    record.restype = ctypes.c_int
    return record


class CudaRuntimeEvents(CudaEvents):
    """Events through cuda-python's `cuda.bindings.runtime`: no torch needed."""

    def __init__(self, stream: int, slots: int, marks: int) -> None:
        from cuda.bindings import runtime as cudart

        self._rt = cudart
        self.slots, self.marks = slots, marks
        handle = cudart.cudaStream_t(stream)
        driver_record = _driver_event_record()
        self._events: list[list[Any]] = []
        self.recorders = []
        for _ in range(slots):
            row = []
            for _ in range(marks):
                err, event = cudart.cudaEventCreate()
                self._check(err, "cudaEventCreate")
                row.append(event)
            self._events.append(row)
            if driver_record is not None:
                # Errors surface when the times are read (cudaEventElapsedTime checks them).
                stream_ptr = ctypes.c_void_p(stream)
                self.recorders.append(
                    tuple(
                        functools.partial(driver_record, ctypes.c_void_p(int(e)), stream_ptr)
                        for e in row
                    )
                )
            else:
                self.recorders.append(
                    tuple(functools.partial(cudart.cudaEventRecord, e, handle) for e in row)
                )

    def _check(self, err: Any, call: str) -> None:
        if err != self._rt.cudaError_t.cudaSuccess:
            raise TimingError(f"{call} failed: {err.name if hasattr(err, 'name') else err}")

    def elapsed_ns(self, slot: int, first: int, last: int) -> int:
        row = self._events[slot]
        err, ms = self._rt.cudaEventElapsedTime(row[first], row[last])
        self._check(err, "cudaEventElapsedTime")
        return round(ms * 1e6)

    def close(self) -> None:
        for row in self._events:
            for event in row:
                self._rt.cudaEventDestroy(event)
        self._events = []
        self.recorders = []


class TorchCudaEvents(CudaEvents):
    """Events through `torch.cuda.Event`, for a process that has torch loaded anyway."""

    def __init__(self, stream: int, slots: int, marks: int) -> None:
        import torch

        self.slots, self.marks = slots, marks
        torch_stream = torch.cuda.ExternalStream(stream)
        self._events = [
            [torch.cuda.Event(enable_timing=True) for _ in range(marks)] for _ in range(slots)
        ]
        self.recorders = [
            tuple(functools.partial(e.record, torch_stream) for e in row) for row in self._events
        ]

    def elapsed_ns(self, slot: int, first: int, last: int) -> int:
        row = self._events[slot]
        return round(row[first].elapsed_time(row[last]) * 1e6)


def cuda_events(stream: int, slots: int, marks: int) -> CudaEvents:
    """cuda-python events when it is installed, else torch's when torch is already imported."""
    try:
        return CudaRuntimeEvents(stream, slots, marks)
    except ImportError:
        if "torch" not in sys.modules:
            raise
    return TorchCudaEvents(stream, slots, marks)


# -- growable sample arrays ------------------------------------------------------------------


class Samples:
    """Per-iteration int64 nanoseconds for each clock, grown between batches only."""

    def __init__(self, clocks: Sequence[str], capacity: int = 1024) -> None:
        self.count = 0
        self.arrays = {clock: np.zeros(capacity, dtype=np.int64) for clock in clocks}

    def reserve(self, extra: int) -> None:
        needed = self.count + extra
        for clock, array in self.arrays.items():
            if len(array) < needed:
                grown = np.zeros(max(needed, 2 * len(array)), dtype=np.int64)
                grown[: self.count] = array[: self.count]
                self.arrays[clock] = grown

    def __getitem__(self, clock: str) -> np.ndarray:
        return self.arrays[clock][: self.count]

    def trimmed(self) -> dict[str, np.ndarray]:
        return {clock: array[: self.count].copy() for clock, array in self.arrays.items()}


# -- the timed loops ---------------------------------------------------------------------------


def hooks(engine: Any) -> tuple[Any, Any, Any, Any]:
    """(copy_in, compute, copy_out, synchronize) for a timed loop.

    Engines built on EngineBase hand out their hooks after one state check (`hot_path`), so
    no check runs per iteration; any other Engine is driven through its public methods.
    """
    hot_path = getattr(engine, "hot_path", None)
    if hot_path is not None:
        return hot_path()
    return engine.copy_in, engine.compute, engine.copy_out, engine.synchronize


# Each runs iterations [start, stop) or until an iteration ends past `deadline` (ns), stores
# one wall time per iteration and returns the next index. They are separate functions, not one
# with flags, so that no branch runs inside the timed span.


def loop_host(engine: Any, wall: np.ndarray, start: int, stop: int, deadline: int) -> int:
    copy_in, compute, copy_out, sync = hooks(engine)
    clock = time.perf_counter_ns
    i = start
    while i < stop:
        t0 = clock()
        copy_in()
        compute()
        copy_out()
        sync()
        t1 = clock()
        wall[i] = t1 - t0
        i += 1
        if t1 >= deadline:
            break
    return i


def loop_resident(engine: Any, wall: np.ndarray, start: int, stop: int, deadline: int) -> int:
    _, compute, _, sync = hooks(engine)
    clock = time.perf_counter_ns
    i = start
    while i < stop:
        t0 = clock()
        compute()
        sync()
        t1 = clock()
        wall[i] = t1 - t0
        i += 1
        if t1 >= deadline:
            break
    return i


def loop_host_events(
    engine: Any, wall: np.ndarray, start: int, stop: int, deadline: int, events: CudaEvents
) -> int:
    copy_in, compute, copy_out, sync = hooks(engine)
    recorders = events.recorders
    clock = time.perf_counter_ns
    i = start
    while i < stop:
        r0, r1, r2, r3 = recorders[i - start]
        t0 = clock()
        r0()
        copy_in()
        r1()
        compute()
        r2()
        copy_out()
        r3()
        sync()
        t1 = clock()
        wall[i] = t1 - t0
        i += 1
        if t1 >= deadline:
            break
    return i


def loop_resident_events(
    engine: Any, wall: np.ndarray, start: int, stop: int, deadline: int, events: CudaEvents
) -> int:
    _, compute, _, sync = hooks(engine)
    recorders = events.recorders
    clock = time.perf_counter_ns
    i = start
    while i < stop:
        r0, r1 = recorders[i - start]
        t0 = clock()
        r0()
        compute()
        r1()
        sync()
        t1 = clock()
        wall[i] = t1 - t0
        i += 1
        if t1 >= deadline:
            break
    return i


# -- stopping rules ----------------------------------------------------------------------------


@dataclass
class Batch:
    """The next batch: at most `iterations`, ending after the iteration that passes `deadline`."""

    iterations: int
    deadline: int


class StopRule:
    """Decides, between batches, whether to stop and how large the next batch is."""

    reason: str = ""

    def next_batch(self, done: int, started: int, now: int, wall: np.ndarray) -> Batch | None:
        raise NotImplementedError


class FixedIterations(StopRule):
    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    def next_batch(self, done: int, started: int, now: int, wall: np.ndarray) -> Batch | None:
        if done >= self.iterations:
            self.reason = "iterations"
            return None
        return Batch(self.iterations - done, NO_DEADLINE)


class FixedDuration(StopRule):
    def __init__(self, seconds: float, min_iterations: int = 1) -> None:
        self.seconds = seconds
        self.min_iterations = min_iterations

    def next_batch(self, done: int, started: int, now: int, wall: np.ndarray) -> Batch | None:
        end = started + int(self.seconds * 1e9)
        if now >= end and done >= self.min_iterations:
            self.reason = "duration"
            return None
        if now >= end:
            return Batch(self.min_iterations - done, NO_DEADLINE)
        return Batch(MAX_BATCH, end)


class AdaptiveStop(StopRule):
    """Stop when the 95% CI of the median wall time is within `ci_target` of the median.

    The rule is checked between batches that grow with the sample (a quarter of it, and at
    least a quarter second), so the sorting it needs costs a small, bounded share of the run.
    It never stops before `min_seconds`: the sampler's readings and NVML's energy counter
    (which advances every 100 ms on the H200) need a window long enough to mean something.
    """

    def __init__(
        self,
        ci_target: float = 0.01,
        min_iterations: int = 30,
        max_seconds: float = 30.0,
        min_batch_seconds: float = 0.25,
        min_seconds: float = 0.0,
    ) -> None:
        self.ci_target = ci_target
        self.min_iterations = max(min_iterations, CI_MIN_SAMPLES)
        self.max_seconds = max_seconds
        self.min_batch_seconds = min_batch_seconds
        self.min_seconds = min(min_seconds, max_seconds)
        self.ci = math.inf

    def next_batch(self, done: int, started: int, now: int, wall: np.ndarray) -> Batch | None:
        end = started + int(self.max_seconds * 1e9)
        long_enough = now - started >= self.min_seconds * 1e9
        if done >= CI_MIN_SAMPLES:
            self.ci = relative_ci_half_width(wall[:done])
            if done >= self.min_iterations and self.ci <= self.ci_target and long_enough:
                self.reason = "ci_target"
                return None
            # The time cap wins over the minimum count: a 0.8 s iteration must not turn a
            # 20 s cap into 80 s. The result then carries the CI it reached.
            if now >= end:
                self.reason = "max_seconds"
                return None
        if done < CI_MIN_SAMPLES:
            return Batch(CI_MIN_SAMPLES - done, NO_DEADLINE)
        if done < self.min_iterations:
            return Batch(self.min_iterations - done, end)
        seconds = max(self.min_batch_seconds, (now - started) / 4e9)
        return Batch(max(10, done // 4), min(end, now + int(seconds * 1e9)))


# -- driving a measurement ---------------------------------------------------------------------


@dataclass
class TimedSamples:
    samples: dict[str, np.ndarray]
    iterations: int
    seconds: float
    stop_reason: str


def clocks_for(resident: bool, events: bool) -> tuple[str, ...]:
    if not events:
        return HOST_CLOCKS
    return RESIDENT_EVENT_CLOCKS if resident else HOST_EVENT_CLOCKS


def measure(
    engine: Any,
    rule: StopRule,
    resident: bool = False,
    events: CudaEvents | None = None,
) -> TimedSamples:
    """Run timed iterations of `engine` until `rule` stops them; returns the raw samples.

    `resident`: the inputs are already on the device (copy_in called before), and only
    compute + synchronize is timed. `events`: a ring with 4 marks per slot (2 if resident).
    The garbage collector is off meanwhile, as in `timeit`, so no collection lands in a span.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(engine, rule, resident, events)
    finally:
        if was_enabled:
            gc.enable()


def _measure(
    engine: Any, rule: StopRule, resident: bool, events: CudaEvents | None
) -> TimedSamples:
    samples = Samples(clocks_for(resident, events is not None))
    loop: Callable[..., int]  # one of the four loops; `extra` holds the events' argument
    if events is None:
        loop = loop_resident if resident else loop_host
        extra: tuple[Any, ...] = ()
        batch_cap = MAX_BATCH
    else:
        loop = loop_resident_events if resident else loop_host_events
        extra = (events,)
        batch_cap = events.slots
    clock = time.perf_counter_ns
    started = clock()
    now = started
    while True:
        batch = rule.next_batch(samples.count, started, now, samples.arrays[WALL_TOTAL])
        if batch is None:
            break
        size = max(1, min(batch.iterations, batch_cap))
        samples.reserve(size)
        start = samples.count
        wall = samples.arrays[WALL_TOTAL]
        samples.count = loop(engine, wall, start, start + size, batch.deadline, *extra)
        if events is not None:
            _read_events(events, samples, start, resident)
        now = clock()
    return TimedSamples(samples.trimmed(), samples.count, (now - started) / 1e9, rule.reason)


def _read_events(events: CudaEvents, samples: Samples, start: int, resident: bool) -> None:
    arrays = samples.arrays
    for slot in range(samples.count - start):
        i = start + slot
        if resident:
            compute = events.elapsed_ns(slot, 0, 1)
            arrays[DEVICE_COMPUTE][i] = compute
            arrays[DEVICE_TOTAL][i] = compute
        else:
            arrays[DEVICE_H2D][i] = events.elapsed_ns(slot, 0, 1)
            arrays[DEVICE_COMPUTE][i] = events.elapsed_ns(slot, 1, 2)
            arrays[DEVICE_D2H][i] = events.elapsed_ns(slot, 2, 3)
            arrays[DEVICE_TOTAL][i] = events.elapsed_ns(slot, 0, 3)


def warm_up(
    engine: Any,
    iterations: int,
    seconds: float,
    resident: bool = False,
    events: CudaEvents | None = None,
) -> TimedSamples:
    """Run the measured iteration until both `iterations` and `seconds` are reached."""

    class _Warm(StopRule):
        def next_batch(self, done: int, started: int, now: int, wall: np.ndarray) -> Batch | None:
            end = started + int(seconds * 1e9)
            if done >= iterations and now >= end:
                self.reason = "warmup"
                return None
            if done < iterations:
                return Batch(iterations - done, NO_DEADLINE)
            return Batch(MAX_BATCH, end)

    return measure(engine, _Warm(), resident, events)
