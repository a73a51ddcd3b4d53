"""Engine-agnostic load generator: closed-loop and Poisson open-loop runs over request slots.

The scenarios follow MLPerf LoadGen's definitions where they fit:

- SingleStream: `closed_loop` with one slot (the next request is issued when the previous ends);
  MultiStream is the same at a batch of several samples.
- Offline: `closed_loop` with N slots, each slot issuing its next request as soon as its
  previous one ends, so N requests are always in flight; the figure is throughput.
- Server: `open_loop`, Poisson arrivals scheduled in advance; a request's latency runs from
  its *scheduled* arrival, so time spent queued, and any lateness of the generator itself,
  counts against the system (LoadGen does the same). `search_qps` finds the highest rate whose
  latency percentile stays under a limit: what a LoadGen submitter searches for by hand, since
  LoadGen only checks one target QPS against its target latency.

A slot is one request of the engine layer (a CUDA stream, an execution context, an infer
request or a session of its own); the generator runs one thread per slot, so a slot is only
ever called from one thread. Threads, not processes: the engines release the GIL while they
compute. The generator's own ceiling and per-request overhead are measured by
`generator_capacity` (`benchmarks/loadgen_overhead.py`, docs/performance.md).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from infercmp.core.errors import RunFailed

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


class SlotFailed(RunFailed):
    """A slot raised: the run was stopped, every thread joined, and this names the slot.

    `error` is the slot's own exception (also the `__cause__`), for the caller to classify
    (an out-of-memory error is recorded as such, not as a generic failure).
    """

    def __init__(self, slot: int, error: BaseException) -> None:
        super().__init__(f"request slot {slot} failed: {type(error).__name__}: {error}")
        self.slot = slot
        self.error = error


@dataclass(frozen=True)
class RequestLog:
    """Every completed request's times, int64 ns on one clock (`time.perf_counter_ns`).

    Arrays are indexed by request, in issue order. `cut` requests were due in the run but had
    not started when it was cut (an overloaded open loop): they are counted, never dropped
    silently, and count as slower than any completed request in `percentile_ms`.
    """

    issue_ns: np.ndarray  # when the request was due (closed loop: when its slot became free)
    start_ns: np.ndarray  # when a slot began it
    end_ns: np.ndarray  # when its outputs were ready
    slot: np.ndarray  # which slot ran it (int32)
    window_ns: tuple[int, int]  # the measurement window (first issue .. last end)
    dispatch_ns: np.ndarray  # when the generator actually issued it (open loop; else issue_ns)
    slots: int  # how many slots the run had
    cut: int = 0  # requests due in the run that never started (overload)
    issuing_ns: tuple[int, int] | None = None  # open loop: the period arrivals were due in
    stop_reason: str = ""

    def __post_init__(self) -> None:
        n = len(self.end_ns)
        for name in ("issue_ns", "start_ns", "slot", "dispatch_ns"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RequestLog.{name} has {len(getattr(self, name))} rows, not {n}")

    @property
    def count(self) -> int:
        """Completed requests."""
        return len(self.end_ns)

    @property
    def window_s(self) -> float:
        return (self.window_ns[1] - self.window_ns[0]) / 1e9

    @property
    def offered_qps(self) -> float | None:
        """Open loop: arrivals due (completed + cut) per second of the issuing period."""
        if self.issuing_ns is None:
            return None
        return (self.count + self.cut) / ((self.issuing_ns[1] - self.issuing_ns[0]) / 1e9)

    def to_arrays(self, prefix: str = "request.") -> dict[str, np.ndarray]:
        """int64 arrays for an npz file (beside latency.npz's clocks); `from_arrays` reads back.

        `stop_reason` is not kept: the worker's result records why it stopped.
        """
        issuing = self.issuing_ns if self.issuing_ns is not None else (-1, -1)
        meta = [*self.window_ns, self.slots, self.cut, *issuing]
        columns = {"issue": self.issue_ns, "start": self.start_ns, "end": self.end_ns,
                   "dispatch": self.dispatch_ns, "slot": self.slot}  # fmt: skip
        arrays = {prefix + k: np.asarray(v, dtype=np.int64) for k, v in columns.items()}
        arrays[prefix + "meta"] = np.asarray(meta, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "request.") -> RequestLog:
        w0, w1, slots, cut, i0, i1 = (int(v) for v in arrays[prefix + "meta"])
        return cls(
            issue_ns=np.asarray(arrays[prefix + "issue"], dtype=np.int64),
            start_ns=np.asarray(arrays[prefix + "start"], dtype=np.int64),
            end_ns=np.asarray(arrays[prefix + "end"], dtype=np.int64),
            slot=np.asarray(arrays[prefix + "slot"], dtype=np.int32),
            window_ns=(w0, w1),
            dispatch_ns=np.asarray(arrays[prefix + "dispatch"], dtype=np.int64),
            slots=slots,
            cut=cut,
            issuing_ns=None if i0 < 0 else (i0, i1),
        )

    def latency_ms(self) -> np.ndarray:
        """End minus due time: what a client sees, queueing (and generator lateness) included."""
        return (self.end_ns - self.issue_ns) / 1e6

    def service_ms(self) -> np.ndarray:
        """End minus start: the slot's own time for the request."""
        return (self.end_ns - self.start_ns) / 1e6

    def queue_ms(self) -> np.ndarray:
        """Start minus due time: waiting for a free slot (closed loop: the generator's gap)."""
        return (self.start_ns - self.issue_ns) / 1e6

    def lateness_ms(self) -> np.ndarray:
        """Actual issue minus scheduled issue: the generator's own timing error (open loop)."""
        return (self.dispatch_ns - self.issue_ns) / 1e6

    def requests_per_s(self) -> float:
        """Completed requests over the window (0.0 for an empty window)."""
        seconds = self.window_s
        return self.count / seconds if seconds > 0 else 0.0

    def achieved_qps(self) -> float:
        """Open loop: requests completed while arrivals were due, per second of that period.

        Unlike `requests_per_s`, the drain after the last arrival does not dilute it, so a
        system that keeps up scores the offered rate less only what is in it at the end
        (about one request per slot busy), and an overloaded one its own capacity.
        Closed loop: `requests_per_s`.
        """
        if self.issuing_ns is None:
            return self.requests_per_s()
        begin, end = self.issuing_ns
        return int(np.count_nonzero(self.end_ns <= end)) / ((end - begin) / 1e9)

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile of latency; cut requests count as infinitely slow.

        So it is `math.inf` when more than (100 - q)% of the due requests were cut: the run
        cannot bound that percentile. NaN when nothing was due.
        """
        total = self.count + self.cut
        if total == 0:
            return math.nan
        if self.cut and q / 100 * (total - 1) > self.count - 1:
            return math.inf
        latencies = np.sort(self.latency_ms())
        # The percentile over all due requests, where the cut ones sort last.
        rank = q / 100 * (total - 1)
        lo = int(math.floor(rank))
        hi = min(lo + 1, total - 1)
        upper = latencies[hi] if hi < self.count else math.inf
        if hi == lo or upper == math.inf:
            return float(latencies[lo])
        return float(latencies[lo] + (rank - lo) * (upper - latencies[lo]))

    def summary(self) -> dict[str, float | int | str | None]:
        """The figures a report line needs, JSON-ready (inf and NaN as None)."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        lateness = self.lateness_ms()
        return {
            "requests": self.count,
            "cut": self.cut,
            "slots": self.slots,
            "window_s": self.window_s,
            "requests_per_s": self.requests_per_s(),
            "offered_qps": self.offered_qps,
            "achieved_qps": self.achieved_qps(),
            "p50_ms": finite(self.percentile_ms(50)),
            "p90_ms": finite(self.percentile_ms(90)),
            "p99_ms": finite(self.percentile_ms(99)),
            "lateness_p99_ms": float(np.percentile(lateness, 99)) if lateness.size else None,
            "stop_reason": self.stop_reason,
        }


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
    completed = itertools.count(1)  # next() on a count is atomic under the GIL
    tickets = itertools.count(1)  # requests started, against max_requests
    limit = max_requests if max_requests is not None else math.inf
    t0 = [0]

    def open_window() -> None:  # run by one slot thread while the others wait at the barrier
        if on_measure_start is not None:
            on_measure_start()
        t0[0] = now_ns()

    barrier = threading.Barrier(n, action=open_window)
    # array('q') holds 8 bytes a request where a list holds a 32-byte int object and a
    # pointer: the worker's memory, which the sampler reports, stays the engine's.
    issues = [array("q") for _ in range(n)]
    starts = [array("q") for _ in range(n)]
    ends = [array("q") for _ in range(n)]
    warmup_ns = int(warmup_seconds * 1e9)
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    stop = failure.stop

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

    with _gc_paused():
        threads = _SlotThreads(run_slot, n, "loadgen-closed")
        try:
            threads.wait()
        except BaseException:  # Ctrl-C: stop the slots, wait for them, re-raise
            stop.set()
            barrier.abort()
            threads.wait()
            raise
    failure.raise_if_any()
    if on_measure_end is not None:
        on_measure_end()
    slot_ids = np.concatenate([np.full(len(ends[k]), k, dtype=np.int32) for k in range(n)])
    issue = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in issues])
    order = np.argsort(issue, kind="stable")
    issue = issue[order]
    start = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in starts])[order]
    end = np.concatenate([np.frombuffer(a, dtype=np.int64) for a in ends])[order]
    window = (t0[0], int(end.max()) if end.size else t0[0])
    reached_max = end.size > 0 and int(end.max()) >= t0[0] + max_ns
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
    total = len(schedule)
    n = len(slots)
    start = np.zeros(total, dtype=np.int64)
    end = np.zeros(total, dtype=np.int64)
    dispatch = np.zeros(total, dtype=np.int64)
    slot_of = np.full(total, -1, dtype=np.int32)
    requests: queue.SimpleQueue[int] = queue.SimpleQueue()
    failure = _Failure()
    stop = failure.stop
    credits = threading.BoundedSemaphore(max_outstanding) if max_outstanding else None

    warmup_ns = int(warmup_seconds * 1e9)
    warmed = threading.Barrier(n + 1)  # the slots and the dispatcher

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

    # Python ints for the dispatcher, made before the clock starts: converting a million
    # arrivals takes tens of ms, which would make the first ones late.
    offsets = schedule.tolist()
    issued = 0
    with _gc_paused():
        threads = _SlotThreads(run_slot, n, "loadgen-open")
        put = requests.put
        try:
            try:
                warmed.wait()
            except threading.BrokenBarrierError:
                stop.set()  # a slot failed warming up: it is re-raised below
            if on_measure_start is not None and not stop.is_set():
                on_measure_start()
            t0 = now_ns() + LEAD_NS
            issue_end = t0 + int(seconds * 1e9)
            cut_at = issue_end + int(drain * 1e9)
            for i in range(total):
                _wait_until(t0 + offsets[i], stop)
                if stop.is_set() or now_ns() >= cut_at:
                    break
                if credits is not None and not _acquire(credits, cut_at, stop):
                    break
                dispatch[i] = now_ns()
                put(i)
                issued = i + 1
            for _ in range(n):
                put(_DONE)
            threads.wait(until_ns=cut_at, stop=stop)
        finally:
            warmed.abort()  # frees slots still warming up if the dispatcher was interrupted
            # Take back what no slot has started (requests and sentinels), then stop the threads.
            while True:
                try:
                    requests.get_nowait()
                except queue.Empty:
                    break
            for _ in range(n):
                put(_DONE)
            threads.wait()
    failure.raise_if_any()
    done = slot_of[:issued] >= 0
    cut = total - int(done.sum())
    last_end = int(end[:issued][done].max()) if done.any() else issue_end
    _wait_until(issue_end, stop)  # the window holds the whole issuing period, idle end too
    if on_measure_end is not None:
        on_measure_end()
    return RequestLog(
        issue_ns=(schedule + t0)[:issued][done],
        start_ns=start[:issued][done],
        end_ns=end[:issued][done],
        slot=slot_of[:issued][done],
        window_ns=(t0, max(issue_end, last_end)),
        dispatch_ns=dispatch[:issued][done],
        slots=n,
        cut=cut,
        issuing_ns=(t0, issue_end),
        stop_reason=f"{cut} cut" if cut else "all completed",
    )


# --------------------------------------------------------------------------- QPS search

#: An open loop keeps up with its rate when it completes at least this share of the offered
#: requests per second while arrivals are due (`RequestLog.achieved_qps`).
KEEP_UP = 0.95


@dataclass(frozen=True)
class QpsPoint:
    """One open-loop run of the search."""

    qps: float  # the rate asked for
    offered_qps: float  # arrivals actually scheduled / issuing period (Poisson count)
    achieved_qps: float  # completed while arrivals were due / that period (RequestLog.achieved_qps)
    percentile_ms: float  # the latency percentile the search targets (inf: too many cut)
    ok: bool  # under the SLO and keeping up with the offered rate
    requests: int
    cut: int
    lateness_p99_ms: float  # the generator's own error at this rate

    @classmethod
    def from_log(
        cls, qps: float, log: RequestLog, *, slo_ms: float, percentile: float, keep_up: float
    ) -> QpsPoint:
        p = log.percentile_ms(percentile)
        offered = log.offered_qps if log.offered_qps is not None else qps
        achieved = log.achieved_qps()
        lateness = log.lateness_ms()
        return cls(
            qps=qps,
            offered_qps=offered,
            achieved_qps=achieved,
            percentile_ms=p,
            ok=bool(p <= slo_ms and achieved >= keep_up * offered),
            requests=log.count,
            cut=log.cut,
            lateness_p99_ms=float(np.percentile(lateness, 99)) if lateness.size else math.nan,
        )


@dataclass(frozen=True)
class QpsSearch:
    """The rates tried, in order, and the highest one that met the SLO (None: none did)."""

    slo_ms: float
    percentile: float
    points: list[QpsPoint] = field(default_factory=list)
    best: QpsPoint | None = None
    reason: str = ""


def search_qps(
    measure: Callable[[float], RequestLog],
    *,
    slo_ms: float,
    percentile: float = 99.0,
    start_qps: float | None = None,
    max_points: int = 12,
    tolerance: float = 0.05,
    keep_up: float = KEEP_UP,
    max_qps: float = math.inf,
) -> QpsSearch:
    """The highest rate whose latency percentile stays under `slo_ms` and that is kept up with.

    `measure(qps)` runs one open loop at that rate. A rate passes when its `percentile`
    latency (queueing included, cut requests infinitely slow) is at most `slo_ms` and the
    achieved rate is at least `keep_up` x the offered one. From `start_qps` (default 1/slo,
    the rate of one request per latency budget) the rate doubles until one fails (halves until
    one passes when the start fails), then bisects on the geometric mean until the bracket is
    within `tolerance` of the passing rate or `max_points` runs are spent. While growing, each
    step also goes to at least half, and at most all, of the capacity the last run's service
    times imply (slots / median service time), so a start far below capacity costs no string
    of doublings and the first failing rate is not far past it. Noise can make a rate pass
    once and fail once; the search trusts each single run, so give `measure` enough seconds.
    No rate above `max_qps` is tried (the caller's bound on one run's arrivals).
    A slot failing raises `SlotFailed` out of `measure`, and out of here.
    """
    if slo_ms <= 0 or not 0 < percentile < 100 or max_points < 1 or tolerance <= 0:
        raise ValueError("search_qps needs slo_ms > 0, 0 < percentile < 100, max_points >= 1")
    points: list[QpsPoint] = []
    capacity = [math.inf]  # requests/s the last run's service times allow

    def trial(qps: float) -> QpsPoint:
        log = measure(qps)
        point = QpsPoint.from_log(qps, log, slo_ms=slo_ms, percentile=percentile, keep_up=keep_up)
        if log.count:
            capacity[0] = log.slots * 1e3 / float(np.median(log.service_ms()))
        points.append(point)
        return point

    def grow(qps: float) -> float:
        """Double, but to at least half and at most all of the implied capacity."""
        if capacity[0] <= qps * (1 + tolerance):  # the hint says no headroom: trust the runs
            return min(2 * qps, max_qps)
        return min(max(2 * qps, capacity[0] / 2), capacity[0], max_qps)

    qps = min(start_qps if start_qps is not None else 1000.0 / slo_ms, max_qps)
    passed: QpsPoint | None = None
    failed: QpsPoint | None = None
    first = trial(qps)
    if first.ok:
        passed = first
        while len(points) < max_points and passed.qps < max_qps:
            point = trial(grow(passed.qps))
            if not point.ok:
                failed = point
                break
            passed = point
    else:
        failed = first
        while len(points) < max_points:
            point = trial(failed.qps / 2)
            if point.ok:
                passed = point
                break
            failed = point
    if passed is None:
        return QpsSearch(
            slo_ms, percentile, points, None,
            f"even {failed.qps:.4g} requests/s misses the p{percentile:g} <= {slo_ms:g} ms SLO "
            f"(p{percentile:g} {failed.percentile_ms:.4g} ms, "
            f"{failed.achieved_qps:.4g} of {failed.offered_qps:.4g} requests/s done)",
        )  # fmt: skip
    while failed is not None and len(points) < max_points:
        if (failed.qps - passed.qps) / passed.qps <= tolerance:
            break
        point = trial(math.sqrt(passed.qps * failed.qps))
        if point.ok:
            passed = point
        else:
            failed = point
    if failed is None and passed.qps >= max_qps:
        reason = f"every rate tried passed, up to the {max_qps:.4g} requests/s bound"
    elif failed is None:
        reason = f"every rate tried passed, up to {passed.qps:.4g} requests/s (max_points reached)"
    elif (failed.qps - passed.qps) / passed.qps <= tolerance:
        reason = f"bracketed within {tolerance:.0%}: {failed.qps:.4g} requests/s fails"
    else:
        reason = f"max_points ({max_points}) reached; {failed.qps:.4g} requests/s fails"
    return QpsSearch(slo_ms, percentile, points, passed, reason)


# --------------------------------------------------------------------------- self-measurement


class GeneratorCapacity(TypedDict):
    """What the generator itself can do with slots that do nothing (JSON-ready)."""

    slots: int
    closed_loop_requests_per_s: float  # no-op requests completed per second, all slots
    closed_loop_cost_us: float  # 1 / that rate: the generator's whole serial cost a request
    closed_loop_overhead_us: float  # median gap between two requests of a slot (bookkeeping)
    open_loop_max_qps: float  # no-op requests issued and completed per second, flat out
    open_loop_qps: float  # the rate the lateness below was measured at
    lateness_p50_us: float  # actual minus scheduled issue time at that rate
    lateness_p99_us: float


# The flood run asks for more than a Python dispatcher can issue (about 1e6/s on a 2-core EPYC),
# for at most FLOOD_SECONDS, so its schedule stays a few MB.
FLOOD_QPS = 5e6
FLOOD_SECONDS = 0.2
# Lateness is measured at a quarter of the ceiling, capped at a rate servers reach in practice.
LATENESS_MAX_QPS = 10_000.0


def _noop() -> None:
    pass


def generator_capacity(seconds: float = 1.0, slots: int = 1) -> GeneratorCapacity:
    """Measure the generator with no-op slots: its ceiling and per-request overhead.

    Closed loop for `seconds`; open loop flat out (arrivals due faster than it can issue) for
    up to FLOOD_SECONDS, whose completed rate is the most the dispatcher, queue and slot
    threads can carry; then open loop for `seconds` at min(a quarter of that, 10,000/s) for
    the dispatcher's lateness. No-op slots hold the GIL, so with several slots these are the
    figures of one interpreter running the generator's Python, not of the slots in parallel.
    """
    noop = [_noop] * slots
    closed = closed_loop(noop, min_requests=1, min_seconds=seconds, max_seconds=seconds)
    flood = open_loop(noop, qps=FLOOD_QPS, seconds=min(seconds, FLOOD_SECONDS), drain_seconds=0.0)
    ceiling = flood.requests_per_s()
    if ceiling <= 0:
        raise RunFailed(
            "the load generator completed no request in its flat-out run: the machine is too "
            "busy to measure it; run again when it is quieter"
        )
    rate = min(ceiling / 4, LATENESS_MAX_QPS)
    paced = open_loop(noop, qps=rate, seconds=seconds)
    lateness = paced.lateness_ms() * 1e3
    closed_rate = closed.requests_per_s()
    return GeneratorCapacity(
        slots=slots,
        closed_loop_requests_per_s=closed_rate,
        closed_loop_cost_us=1e6 / closed_rate,
        closed_loop_overhead_us=float(np.median(closed.queue_ms()) * 1e3),
        open_loop_max_qps=ceiling,
        open_loop_qps=rate,
        lateness_p50_us=float(np.percentile(lateness, 50)),
        lateness_p99_us=float(np.percentile(lateness, 99)),
    )


# A server-scenario figure is the generator's rather than the system's when the generator runs
# near its own ceiling or its lateness eats a noticeable part of the latency budget.
CEILING_SHARE = 0.5
LATENESS_SHARE = 0.1


def generator_limit(point: QpsPoint, capacity: GeneratorCapacity, slo_ms: float) -> str | None:
    """Why `point` may measure the generator rather than the system, or None if it need not.

    Flags a rate over half the generator's flat-out ceiling, and a p99 issue lateness over a
    tenth of the SLO; the report shows the reason beside the figure.
    """
    ceiling = capacity["open_loop_max_qps"]
    if point.offered_qps > CEILING_SHARE * ceiling:
        return (
            f"{point.offered_qps:,.0f} requests/s is over {CEILING_SHARE:.0%} of the load "
            f"generator's ceiling ({ceiling:,.0f}/s on this machine)"
        )
    if point.lateness_p99_ms > LATENESS_SHARE * slo_ms:
        return (
            f"the load generator issued requests up to {point.lateness_p99_ms:.3g} ms late "
            f"(p99), over {LATENESS_SHARE:.0%} of the {slo_ms:.3g} ms SLO"
        )
    return None


def search_generator_limit(search: QpsSearch, capacity: GeneratorCapacity) -> str | None:
    """Why a QPS search's answer may be the generator's, or None if it need not be.

    The answer rests on two runs: the best rate, and the failing rate just above it (the
    lowest one tried, when none passed). Either may have measured the generator
    (`generator_limit`): a failure caused by the generator's lateness bounds the search as
    surely as the engine's queueing does. Seen on the 2-core machine: tiny-cnn's search at a
    5 ms SLO stopped at 995/s because 1,024/s failed with the generator 1.6 ms late at p99,
    while the best run itself was only 0.3 ms late.
    """
    if search.best is not None:
        note = generator_limit(search.best, capacity, search.slo_ms)
        if note is not None:
            return note
        failed = [p for p in search.points if not p.ok and p.qps > search.best.qps]
    else:
        failed = [p for p in search.points if not p.ok]
    if not failed:
        return None
    bound = min(failed, key=lambda p: p.qps)
    note = generator_limit(bound, capacity, search.slo_ms)
    if note is None:
        return None
    return f"{bound.offered_qps:,.0f}/s, the failing rate that bounds the search, ran where {note}"
