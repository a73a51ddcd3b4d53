"""The worker's side of a load other than one request at a time: one request slot per engine,
driven by the load generator (`infercmp.worker.loadgen`) under the spec's `Load`, and the
window's figures as a `LoadResult` and the arrays of latency.npz.

single-stream is not here: it is infercmp's original timed loop (`timing.measure`). offline
keeps `concurrency` requests in flight back to back (a closed loop); server issues requests at
Poisson arrival times at `qps` (an open loop), so latency includes queueing; with `qps` None the
rate is searched for the highest one whose p99 stays under `slo_ms`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from infercmp.core.contract import (
    KEEP_UP,
    MAX_ARRIVALS,
    MAX_QPS,
    Load,
    LoadResult,
    Measurement,
    WorkerSpec,
    finite_or_none,
)
from infercmp.worker.loadgen import loops
from infercmp.worker.loadgen.capacity import (
    GeneratorCapacity,
    generator_capacity,
    generator_limit,
    search_generator_limit,
)
from infercmp.worker.loadgen.log import RequestLog
from infercmp.worker.loadgen.loops import Slot, WindowEdge
from infercmp.worker.loadgen.qps import QpsPoint, QpsSearch, search_qps

#: Seconds of each open-loop run of a --qps auto search when --duration is not given.
SEARCH_POINT_SECONDS = 1.0
#: Fewest arrivals the first point of a --qps auto search schedules (a long SLO's rate of
#: one request per SLO would schedule none in a short point).
SEARCH_MIN_ARRIVALS = 20
#: Seconds the generator measures itself for (closed, flood and paced loops: about 2.5x this).
CAPACITY_SECONDS = 0.4


def request_slot(engine: Any, resident: bool) -> Callable[[], None]:
    """One request on `engine`, as the load generator calls it: inputs in, outputs back (or
    compute only with --device-resident), complete when it returns."""
    copy_in, compute, copy_out, synchronize = engine.hot_path()
    bound = threading.local()

    def request() -> None:
        if not getattr(bound, "done", False):  # a new thread (loadgen starts one per run)
            engine.bind_thread()
            bound.done = True
        if not resident:
            copy_in()
        compute()
        if not resident:
            copy_out()
        synchronize()

    return request


def _windows(settings: Measurement) -> tuple[int, float, float, int | None]:
    """(min requests, min seconds, max seconds, max requests) of a closed loop, from the
    measurement flags: `--iters N` is exactly N requests."""
    if settings.iters is not None:
        return settings.iters, 0.0, 1e9, settings.iters
    if settings.duration_s is not None:
        return 1, settings.duration_s, settings.duration_s, None
    return settings.min_iters, settings.min_seconds, settings.max_seconds, None


@dataclasses.dataclass(frozen=True)
class _ServerRun:
    """What the server scenario ran: the window's open loop and what came before it."""

    log: RequestLog  # the window
    qps: float  # the rate the window's open loop ran at
    generator: GeneratorCapacity  # the generator measured on itself, first
    search: QpsSearch | None  # --qps auto: the rates tried before the window


def run_load(
    engines: Sequence[Any],
    spec: WorkerSpec,
    how: str,
    *,
    items: int,
    on_measure_start: WindowEdge | None = None,
    on_measure_end: WindowEdge | None = None,
) -> tuple[dict[str, np.ndarray], LoadResult]:
    """Drive `engines` (one per slot, prepared) under `spec.load`; the latency arrays for
    latency.npz and the load's figures. `items`: the items in one request
    (`items_per_request` of the inputs: the example's own batch when --batch is not given),
    which throughput counts, as for one request at a time.

    Everything before the measured window (the slots' warm-up; for the server scenario the
    generator's self-check too, and every rate a --qps auto search tried) runs before
    `on_measure_start` is called; `on_measure_end` is called as the window closes. The
    window's requests are what the arrays and `LoadResult` count, and nothing else runs
    between the two calls. A --qps auto search is followed by one more run at the rate it
    chose, of the search's point length: that run is the window.

    latency.npz gets `wall.total` (each request's latency: end minus due time, queueing
    included), `request.issue`, `request.start`, `request.end` (ns from the window's start)
    and `request.slot`, one row per completed request in issue order.
    """
    load, settings = spec.load, spec.measurement
    slots = [request_slot(engine, settings.device_resident) for engine in engines]
    warmup_s = settings.warmup()[1] or 0.1
    if load.scenario == "offline":
        log = _offline(slots, settings, warmup_s, on_measure_start, on_measure_end)
        result = _load_result(log, how, items)
    else:
        run = _server(slots, load, settings, warmup_s, on_measure_start, on_measure_end)
        log = run.log
        result = _load_result(log, how, items, run.generator, _generator_note(run, load))
        if run.search is not None:
            result.search = [
                {k: finite_or_none(v) for k, v in dataclasses.asdict(p).items()}
                for p in run.search.points
            ]
            result.best_qps = run.search.best.qps if run.search.best else None
            result.search_reason = run.search.reason
    return _latency_arrays(log), result


def _offline(
    slots: Sequence[Slot],
    settings: Measurement,
    warmup_s: float,
    on_measure_start: WindowEdge | None,
    on_measure_end: WindowEdge | None,
) -> RequestLog:
    """The offline scenario: a closed loop with a warm-up, whose log is the window."""
    min_requests, min_seconds, max_seconds, max_requests = _windows(settings)
    return loops.closed_loop(
        slots,
        min_requests=min_requests,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        max_requests=max_requests,
        warmup_seconds=warmup_s,
        on_measure_start=on_measure_start,
        on_measure_end=on_measure_end,
    )


def _server(
    slots: Sequence[Slot],
    load: Load,
    settings: Measurement,
    warmup_s: float,
    on_measure_start: WindowEdge | None,
    on_measure_end: WindowEdge | None,
) -> _ServerRun:
    """The server scenario: the generator's self-check, the slots' warm-up, a --qps auto
    search when no rate was given, then the window's open loop."""
    generator = generator_capacity(CAPACITY_SECONDS, len(slots))
    # Warm every slot up for the warm-up time (a closed loop with zero minimums would stop
    # after its first request).
    loops.closed_loop(slots, min_requests=1, min_seconds=warmup_s, max_seconds=warmup_s)
    qps, seconds = load.qps or 0.0, settings.duration_s or settings.max_seconds
    search = None
    if load.qps is None:
        search, qps, seconds = _search(slots, load, settings)
    log = loops.open_loop(
        slots,
        qps=qps,
        seconds=seconds,
        on_measure_start=on_measure_start,
        on_measure_end=on_measure_end,
    )
    return _ServerRun(log, qps, generator, search)


def _search(
    slots: Sequence[Slot], load: Load, settings: Measurement
) -> tuple[QpsSearch, float, float]:
    """--qps auto: the search, and the rate and seconds of the window that measures its
    answer."""
    slo_ms = load.slo_ms
    assert slo_ms is not None  # Load: the server scenario without qps has slo_ms
    point_s = settings.duration_s or max(settings.min_seconds, SEARCH_POINT_SECONDS)

    def measure(qps: float) -> RequestLog:
        return loops.open_loop(slots, qps=qps, seconds=point_s)

    search = search_qps(
        measure,
        slo_ms=slo_ms,
        # One request per SLO, but enough arrivals that the first point measures.
        start_qps=max(1000.0 / slo_ms, SEARCH_MIN_ARRIVALS / point_s),
        max_qps=min(MAX_QPS, MAX_ARRIVALS / point_s),
    )
    # The search's runs are not the window: the one at the chosen rate need not be its
    # last (bisection ends on whichever side it ends), and energy needs the window to
    # be one phase. So the chosen rate runs once more, as the measurement.
    return search, (search.best or search.points[-1]).qps, point_s


def _generator_note(run: _ServerRun, load: Load) -> str | None:
    """Why the server figures may be the generator's rather than the engine's, or None."""
    # The window's run may have measured the generator; with a search, so may the runs its
    # answer rests on (the best rate and the failing one above it), which are named first.
    slo_ms = load.slo_ms if run.search is not None and load.slo_ms else math.inf
    point = QpsPoint.from_log(run.qps, run.log, slo_ms=slo_ms, percentile=99, keep_up=KEEP_UP)
    note = generator_limit(point, run.generator, slo_ms)
    if run.search is not None:
        note = search_generator_limit(run.search, run.generator) or note
    return note


def _load_result(
    log: RequestLog,
    how: str,
    items: int,
    generator: GeneratorCapacity | None = None,
    note: str | None = None,
) -> LoadResult:
    """The window's figures. Open loop: completions while arrivals were due (the drain does
    not dilute it); closed loop: completions over the window."""
    summary = log.summary()
    rate = log.achieved_qps()
    return LoadResult(
        how=how,
        batch=items,
        slots=log.slots,
        requests=log.count,
        cut=log.cut,
        window_s=log.window_s,
        requests_per_s=rate,
        items_per_s=items * rate,
        offered_qps=log.offered_qps,
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        lateness_p99_ms=summary["lateness_p99_ms"],
        stop_reason=log.stop_reason,
        generator=dict(generator) if generator is not None else None,
        generator_note=note,
    )


def _latency_arrays(log: RequestLog) -> dict[str, np.ndarray]:
    """latency.npz's arrays of a load run: ns, the request times from the window's start."""
    t0 = log.window_ns[0]
    return {
        "wall.total": log.end_ns - log.issue_ns,
        "request.issue": log.issue_ns - t0,
        "request.start": log.start_ns - t0,
        "request.end": log.end_ns - t0,
        "request.dispatch": log.dispatch_ns - t0,  # when the generator really issued it
        "request.slot": log.slot.astype(np.int64),
    }
