"""The generator's two loops over request slots: `closed_loop` (N requests always in flight) and
`open_loop` (Poisson arrivals, queued to the slots), with the thread machinery they share.

Every time is an int64 nanosecond reading of `time.perf_counter_ns`; the hot loops do no
logging and no allocation beyond appending integers, and the garbage collector is off while a
run measures (as in `timing.measure`).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from infercmp.worker.loadgen.log import RequestLog, SlotFailed

WindowEdge = Callable[[], None]
"""Called by the generator as its measured window opens or closes (a worker's phase event)."""

Slot = Callable[[], None]
"""One request on one slot: blocks until that request's outputs are ready.

Called from exactly one thread (the generator runs one thread per slot), so a slot need not
be thread-safe with itself, only with the other slots.
"""

now_ns = time.perf_counter_ns

# The dispatcher sleeps until this close to an arrival, then loops on time.sleep(0), which
# gives the GIL back each turn: a pure-Python spin would hold it, and a slot thread finishing a
# request would wait for the 5 ms switch interval (measured: time.sleep(100 us) in another
# thread took 5.4 ms at p50 against a Python spin, 0.14 ms against a sleep(0) loop).
# Sleeping alone wakes 60-70 us late on the 2-core EPYC; the yield loop brings the median
# lateness to 15-30 us for a few % more CPU (benchmarks/loadgen_overhead.py, docs/performance.md).
SPIN_NS = 200_000
# Longest single sleep of a waiting loop, so a failed slot or Ctrl-C stops the run promptly.
POLL_NS = 20_000_000
# How far ahead of the first arrival the clock starts, so thread start-up makes nothing late.
LEAD_NS = 2_000_000


# --------------------------------------------------------------------------- shared machinery


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Failure:
    """The first exception any slot thread raised, and the event that stops the others."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.slot: int | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def record(self, slot: int, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.slot, self.error = slot, error
        self.stop.set()

    def raise_if_any(self) -> None:
        if self.error is not None:
            assert self.slot is not None
            raise SlotFailed(self.slot, self.error) from self.error


class _SlotThreads:
    """One daemon thread per slot, and a wait for them that a Ctrl-C cannot fool.

    A `Thread.join` interrupted by a signal can mark a thread that is still running as stopped
    (CPython's fix for bpo-45274 releases the lock it finds held), so each thread sets an
    event of its own as its target returns, and the waits read those.
    """

    def __init__(self, target: Callable[[int], None], n: int, name: str) -> None:
        self._done = [threading.Event() for _ in range(n)]

        def run(k: int) -> None:
            try:
                target(k)
            finally:
                self._done[k].set()

        self._threads = [
            threading.Thread(target=run, args=(k,), name=f"{name}-{k}", daemon=True)
            for k in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def wait(self, until_ns: int | None = None, stop: threading.Event | None = None) -> bool:
        """Wait until every thread has finished (True), `until_ns` passes or `stop` is set."""
        for done in self._done:
            while not done.is_set():
                if stop is not None and stop.is_set():
                    return False
                remaining = POLL_NS if until_ns is None else min(until_ns - now_ns(), POLL_NS)
                if remaining <= 0:
                    return False
                done.wait(remaining / 1e9)
        for thread in self._threads:
            thread.join()  # its target has returned: this is immediate
        return True


def _check_slots(slots: Sequence[Slot]) -> None:
    if not slots:
        raise ValueError("the load generator needs at least one slot")


# --------------------------------------------------------------------------- closed loop


def closed_loop(
    slots: Sequence[Slot],
    *,
    min_requests: int,
    min_seconds: float,
    max_seconds: float,
    warmup_seconds: float = 0.0,
    max_requests: int | None = None,
    on_measure_start: WindowEdge | None = None,
    on_measure_end: WindowEdge | None = None,
) -> RequestLog:
    """Keep len(slots) requests in flight: each slot issues its next one when its last ends.

    Stops when both `min_requests` and `min_seconds` are met, or at `max_seconds`; requests in
    flight then finish and are logged (the window ends at the last one). With `max_requests`
    no more than that many start (`--iters N` measures exactly N): the slots then drain,
    the last requests with fewer in flight. Warm-up requests run
    for `warmup_seconds` on every slot but are not logged; all slots then start measuring at
    the same instant. A request's due time is when its slot became free, so `queue_ms` is the
    generator's own gap between two requests of a slot.

    `on_measure_start` is called after the warm-up, just before the window opens, and
    `on_measure_end` just after it closes (not when a slot failed): between them run exactly
    the requests the log holds.
    """
    _check_slots(slots)
    if max_seconds <= 0 or min_seconds < 0 or min_requests < 0 or warmup_seconds < 0:
        raise ValueError("closed_loop needs max_seconds > 0 and non-negative minimums")
    n = len(slots)
    failure = _Failure()
    limit = max_requests if max_requests is not None else math.inf
    t0 = [0]

    def open_window() -> None:  # run by one slot thread while the others wait at the barrier
        if on_measure_start is not None:
            on_measure_start()
        t0[0] = now_ns()

    barrier = threading.Barrier(n, action=open_window)
    # array('q') holds 8 bytes a request where a list holds a 32-byte int object and a
    # pointer: the worker's memory, which the sampler reports, stays the engine's.
    logs = _SlotLogs([array("q") for _ in range(n)], [array("q") for _ in range(n)],
                     [array("q") for _ in range(n)])  # fmt: skip
    warmup_ns = int(warmup_seconds * 1e9)
    window_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    run_slot = _closed_slot(slots, failure, barrier, t0, logs, warmup_ns, window_ns,
                            min_requests, limit)  # fmt: skip
    _run_closed(run_slot, n, failure.stop, barrier)
    failure.raise_if_any()
    if on_measure_end is not None:
        on_measure_end()
    return _closed_log(logs, t0[0], window_ns[1])


@dataclass(frozen=True)
class _SlotLogs:
    """A closed loop's times, one array per slot: when each request was due, started, ended."""

    issues: list[array[int]]
    starts: list[array[int]]
    ends: list[array[int]]


def _closed_slot(
    slots: Sequence[Slot],
    failure: _Failure,
    barrier: threading.Barrier,
    t0: list[int],
    logs: _SlotLogs,
    warmup_ns: int,
    window_ns: tuple[int, int],
    min_requests: int,
    limit: float,
) -> Callable[[int], None]:
    """The body of slot k's thread in a closed loop: warm up, wait for the others at
    `barrier` (whose action sets `t0[0]`), then issue requests back to back, logging each,
    until the minimums (`window_ns[0]` and `min_requests`) or the maximum (`window_ns[1]`, or
    `limit` requests started by all slots) are reached."""
    completed = itertools.count(1)  # next() on a count is atomic under the GIL
    tickets = itertools.count(1)  # requests started, against max_requests
    stop = failure.stop
    min_ns, max_ns = window_ns
    issues, starts, ends = logs.issues, logs.starts, logs.ends

    def run_slot(k: int) -> None:
        request = slots[k]
        try:
            warm_until = now_ns() + warmup_ns
            while now_ns() < warm_until and not stop.is_set():
                request()
            barrier.wait()
            start0 = t0[0]
            min_end, max_end = start0 + min_ns, start0 + max_ns
            issue_log, start_log, end_log = issues[k].append, starts[k].append, ends[k].append
            free = start0
            while not stop.is_set() and next(tickets) <= limit:
                start = now_ns()
                request()
                end = now_ns()
                issue_log(free)
                start_log(start)
                end_log(end)
                free = end
                done = next(completed)
                if (end >= min_end and done >= min_requests) or end >= max_end:
                    stop.set()
        except threading.BrokenBarrierError:
            pass  # another slot failed during warm-up
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller as SlotFailed
            failure.record(k, exc)
            barrier.abort()

    return run_slot


def _run_closed(
    run_slot: Callable[[int], None], n: int, stop: threading.Event, barrier: threading.Barrier
) -> None:
    """Run the closed loop's slot threads to their end, the garbage collector paused."""
    with _gc_paused():
        threads = _SlotThreads(run_slot, n, "loadgen-closed")
        try:
            threads.wait()
        except BaseException:  # Ctrl-C: stop the slots, wait for them, re-raise
            stop.set()
            barrier.abort()
            threads.wait()
            raise


def _closed_log(logs: _SlotLogs, t0: int, max_ns: int) -> RequestLog:
    """The closed loop's log from each slot's times, in issue order."""
    issues, starts, ends = logs.issues, logs.starts, logs.ends
    n = len(ends)
    slot_ids = np.concatenate([np.full(len(ends[k]), k, dtype=np.int32) for k in range(n)])
    issue = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in issues])
    order = np.argsort(issue, kind="stable")
    issue = issue[order]
    start = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in starts])[order]
    end = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in ends])[order]
    window = (t0, int(end.max()) if end.size else t0)
    reached_max = end.size > 0 and int(end.max()) >= t0 + max_ns
    return RequestLog(
        issue_ns=issue,
        start_ns=start,
        end_ns=end,
        slot=slot_ids[order],
        window_ns=window,
        dispatch_ns=issue,
        slots=n,
        stop_reason="max_seconds" if reached_max else "minimums met",
    )


# --------------------------------------------------------------------------- open loop


def poisson_schedule(qps: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Arrival offsets in ns from the start: Poisson at `qps` over [0, seconds), given its count.

    Exactly round(qps x seconds) arrivals, spaced by exponential draws from
    `numpy.random.default_rng(seed)` scaled so that one more would land at `seconds`: the
    arrival times of a Poisson process conditioned on its count (uniform order statistics).
    Drawing the count too would make a short run's rate random (seed 0 offered 11-13% less
    than asked at a few hundred arrivals), and the QPS search would bracket that noise. The
    same seed and rate give the same schedule, so two engines see the same arrivals.
    """
    if qps <= 0 or seconds <= 0:
        raise ValueError("a Poisson schedule needs qps > 0 and seconds > 0")
    count = round(qps * seconds)
    gaps = np.random.default_rng(seed).exponential(1.0, size=count + 1)
    offsets = np.cumsum(gaps[:-1]) * (seconds / gaps.sum())
    return (offsets * 1e9).astype(np.int64)


def _wait_until(deadline: int, stop: threading.Event) -> None:
    """Sleep, then yield-spin the last SPIN_NS, until perf_counter_ns() >= deadline."""
    while True:
        remaining = deadline - now_ns()
        if remaining <= 0 or stop.is_set():
            return
        if remaining > SPIN_NS:
            time.sleep(min(remaining - SPIN_NS, POLL_NS) / 1e9)
        else:
            time.sleep(0)


_DONE = -1  # queue sentinel: the slot thread exits


def _acquire(credits: threading.BoundedSemaphore, deadline: int, stop: threading.Event) -> bool:
    """Take one in-flight credit, waiting for a request to finish; False past the deadline."""
    while not credits.acquire(timeout=POLL_NS / 1e9):
        if stop.is_set() or now_ns() >= deadline:
            return False
    return True


def open_loop(
    slots: Sequence[Slot],
    *,
    qps: float,
    seconds: float,
    seed: int = 0,
    max_outstanding: int | None = None,
    drain_seconds: float | None = None,
    warmup_seconds: float = 0.0,
    on_measure_start: WindowEdge | None = None,
    on_measure_end: WindowEdge | None = None,
) -> RequestLog:
    """MLPerf's server scenario: Poisson arrivals at `qps` for `seconds`, queued to the slots.

    The schedule is drawn in advance (`poisson_schedule`); the calling thread dispatches each
    arrival when it is due into one queue that every slot thread takes from. Latency runs from
    the scheduled time, so queueing and the generator's lateness (`RequestLog.lateness_ms`) count.

    `max_outstanding`: at most this many requests issued and not finished; the dispatcher
    waits for one to finish (it is then late, and that shows in latency), as LoadGen's
    max_async_queries. Every arrival is due before `seconds`; the run is cut `drain_seconds`
    later (default: a fifth of `seconds`, at least 1 s), whatever happened: arrivals not started
    by then, still queued or never issued (a dispatcher held back or behind), are counted in
    `RequestLog.cut`. A dispatcher that wakes a little late for the last arrivals so still
    issues them, rather than cutting them at `seconds`.

    `warmup_seconds`: every slot first runs requests back to back for that long, unlogged;
    the schedule's clock starts when all have finished warming up.

    `on_measure_start` is called after the warm-up, just before the window opens, and
    `on_measure_end` just after it closes (not when a slot failed). The window runs to the
    end of the issuing period or the last request's end, whichever is later: a run whose
    requests are all done early waits out the period, so the time between the two calls is
    the window and holds exactly the requests the log holds.
    """
    _check_slots(slots)
    if max_outstanding is not None and max_outstanding < 1:
        raise ValueError("max_outstanding must be at least 1")
    drain = max(1.0, seconds / 5) if drain_seconds is None else drain_seconds
    schedule = poisson_schedule(qps, seconds, seed)
    n = len(slots)
    times = _OpenTimes.unstarted(len(schedule))
    requests: queue.SimpleQueue[int] = queue.SimpleQueue()
    failure = _Failure()
    credits = threading.BoundedSemaphore(max_outstanding) if max_outstanding else None
    warmed = threading.Barrier(n + 1)  # the slots and the dispatcher
    run_slot = _open_slot(slots, failure, warmed, int(warmup_seconds * 1e9), requests,
                          times, credits)  # fmt: skip
    # Python ints for the dispatcher, made before the clock starts: converting a million
    # arrivals takes tens of ms, which would make the first ones late.
    offsets = schedule.tolist()
    with _gc_paused():
        threads = _SlotThreads(run_slot, n, "loadgen-open")
        try:
            try:
                warmed.wait()
            except threading.BrokenBarrierError:
                failure.stop.set()  # a slot failed warming up: it is re-raised below
            if on_measure_start is not None and not failure.stop.is_set():
                on_measure_start()
            t0 = now_ns() + LEAD_NS
            issue_end = t0 + int(seconds * 1e9)
            cut_at = issue_end + int(drain * 1e9)
            issued = _dispatch(offsets, t0, cut_at, failure.stop, credits, times.dispatch,
                               requests.put)  # fmt: skip
            for _ in range(n):
                requests.put(_DONE)
            threads.wait(until_ns=cut_at, stop=failure.stop)
        finally:
            warmed.abort()  # frees slots still warming up if the dispatcher was interrupted
            _stop_open(threads, requests, n)
    failure.raise_if_any()
    log = _open_log(times, schedule + t0, issued, (t0, issue_end), n)
    _wait_until(issue_end, failure.stop)  # the window holds the whole issuing period, idle end too
    if on_measure_end is not None:
        on_measure_end()
    return log


@dataclass(frozen=True)
class _OpenTimes:
    """An open loop's times, one row per arrival due (slot -1: never started)."""

    start: np.ndarray
    end: np.ndarray
    dispatch: np.ndarray  # when the dispatcher actually issued it
    slot: np.ndarray

    @classmethod
    def unstarted(cls, total: int) -> _OpenTimes:
        return cls(
            start=np.zeros(total, dtype=np.int64),
            end=np.zeros(total, dtype=np.int64),
            dispatch=np.zeros(total, dtype=np.int64),
            slot=np.full(total, -1, dtype=np.int32),
        )


def _open_slot(
    slots: Sequence[Slot],
    failure: _Failure,
    warmed: threading.Barrier,
    warmup_ns: int,
    requests: queue.SimpleQueue[int],
    times: _OpenTimes,
    credits: threading.BoundedSemaphore | None,
) -> Callable[[int], None]:
    """The body of slot k's thread in an open loop: warm up, wait at `warmed` with the others
    and the dispatcher, then run each request `requests` gives until the `_DONE` sentinel."""
    stop = failure.stop
    start, end, slot_of = times.start, times.end, times.slot

    def run_slot(k: int) -> None:
        request, take = slots[k], requests.get
        try:
            warm_until = now_ns() + warmup_ns
            while now_ns() < warm_until and not stop.is_set():
                request()
            warmed.wait()
            while True:
                i = take()
                if i == _DONE:
                    return
                if stop.is_set():  # a slot failed: leave the rest to be cut
                    continue
                s = now_ns()
                request()
                e = now_ns()
                start[i], end[i], slot_of[i] = s, e, k
                if credits is not None:
                    credits.release()
        except threading.BrokenBarrierError:
            pass  # another slot failed while warming up, or the run was interrupted
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller as SlotFailed
            failure.record(k, exc)
            warmed.abort()

    return run_slot


def _stop_open(threads: _SlotThreads, requests: queue.SimpleQueue[int], n: int) -> None:
    """Take back what no slot has started (requests and sentinels), then stop the threads."""
    while True:
        try:
            requests.get_nowait()
        except queue.Empty:
            break
    for _ in range(n):
        requests.put(_DONE)
    threads.wait()


def _dispatch(
    offsets: list[int],
    t0: int,
    cut_at: int,
    stop: threading.Event,
    credits: threading.BoundedSemaphore | None,
    dispatch: np.ndarray,
    put: Callable[[int], None],
) -> int:
    """Issue each arrival when it is due (`t0` + its offset) until the run is cut; the
    number issued. Its actual issue time goes to `dispatch`."""
    issued = 0
    for i in range(len(offsets)):
        _wait_until(t0 + offsets[i], stop)
        if stop.is_set() or now_ns() >= cut_at:
            break
        if credits is not None and not _acquire(credits, cut_at, stop):
            break
        dispatch[i] = now_ns()
        put(i)
        issued = i + 1
    return issued


def _open_log(
    times: _OpenTimes, due: np.ndarray, issued: int, issuing: tuple[int, int], n: int
) -> RequestLog:
    """The open loop's log: the completed requests (`due`: when each arrival was due), and the
    due ones that never started, cut."""
    t0, issue_end = issuing
    done = times.slot[:issued] >= 0
    cut = len(due) - int(done.sum())
    last_end = int(times.end[:issued][done].max()) if done.any() else issue_end
    return RequestLog(
        issue_ns=due[:issued][done],
        start_ns=times.start[:issued][done],
        end_ns=times.end[:issued][done],
        slot=times.slot[:issued][done],
        window_ns=(t0, max(issue_end, last_end)),
        dispatch_ns=times.dispatch[:issued][done],
        slots=n,
        cut=cut,
        issuing_ns=issuing,
        stop_reason=f"{cut} cut" if cut else "all completed",
    )
