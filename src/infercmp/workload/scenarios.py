"""Deployment scenarios after MLPerf LoadGen: the `--batch`, `--concurrency`, `--scenario`,
`--qps` and `--slo-ms` flags turned into `contract.Load`s, and the worker's side of a load
other than one request at a time (slots driven by `infercmp.worker.loadgen`).

single-stream (the default) is infercmp's original timed loop (`timing.measure`), unchanged.
offline keeps `concurrency` requests in flight back to back (a closed loop); server issues
requests at Poisson arrival times at `qps` (an open loop), so latency includes queueing; with
`qps` None the rate is searched for the highest one whose p99 stays under `slo_ms`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from infercmp.core.contract import Load, LoadResult, Measurement, Scenario, WorkerSpec
from infercmp.core.errors import InfercmpError
from infercmp.worker.loadgen import KEEP_UP
from infercmp.workload.config import ModelConfig

SCENARIOS: tuple[Scenario, ...] = ("single-stream", "offline", "server")
MAX_CONCURRENCY = 256
#: Highest --qps: the Python dispatcher issues about 1e6 requests/s on a 2-core EPYC
#: (loadgen.generator_capacity), so a higher rate would measure the generator alone.
MAX_QPS = 1_000_000.0
#: Lowest --slo-ms: the generator's own p99 issue lateness is tens of microseconds, and a
#: --qps auto search starts at one request per SLO (1000 / slo_ms requests/s).
MIN_SLO_MS = 0.1
#: Most arrivals one open-loop run schedules (rate x seconds): its arrays and the
#: dispatcher's list take about 100 bytes an arrival.
MAX_ARRIVALS = 5_000_000


def _positive_ints(text: str, flag: str, limit: int | None = None) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        # ASCII digits only: '²' is a digit to str.isdigit() but not to int().
        if not (part.isascii() and part.isdigit()) or not part.strip("0"):
            raise InfercmpError(f"{flag} '{text}': '{part}' is not a positive integer")
        digits = part.lstrip("0")  # int() refuses over 4300 digits: compare lengths first
        if limit is not None and (len(digits) > len(str(limit)) or int(digits) > limit):
            raise InfercmpError(f"{flag} '{text[:40]}': {part[:40]} is above the limit of {limit}")
        values.append(int(digits))
    return list(dict.fromkeys(values))


def loads_from_flags(
    config: ModelConfig,
    batch: str | None = None,
    concurrency: str | None = None,
    scenario: str | None = None,
    qps: str | None = None,
    slo_ms: float | None = None,
) -> tuple[list[Load], bool]:
    """The loads a bench run measures, and whether `--batch auto` asked for a batch search.

    No flag: `[Load()]`, the original measurement. One clear error for any wrong value.
    `--concurrency N` without `--scenario` means offline (for N = 1 too): single-stream is the
    original one-request-at-a-time loop, which --concurrency does not ask for.
    """
    from infercmp.workload.batching import parse_batches

    if scenario is not None and scenario not in SCENARIOS:
        raise InfercmpError(f"--scenario '{scenario}': choose {', '.join(SCENARIOS)}")
    auto_batch = False
    batches: list[int | None] = [None]
    if batch is not None:
        parsed = parse_batches(batch, config)
        auto_batch = parsed is None
        batches = [None] if parsed is None else list(parsed)
    counts = _positive_ints(concurrency, "--concurrency", MAX_CONCURRENCY) if concurrency else [1]
    # --concurrency asks for the closed loop whatever its values: `-c 1` alone is offline with
    # one request in flight, labelled so, as `-c 1,2` labels both its points.
    chosen: Scenario = scenario or ("offline" if concurrency else "single-stream")  # type: ignore[assignment]
    if chosen == "single-stream" and max(counts) > 1:
        raise InfercmpError(
            "--scenario single-stream keeps one request in flight; use --scenario offline or "
            "server with --concurrency"
        )
    if slo_ms is not None and not (MIN_SLO_MS <= slo_ms < math.inf):
        raise InfercmpError(
            f"--slo-ms must be a number of milliseconds from {MIN_SLO_MS:g} (the load "
            f"generator's own timing error is tens of microseconds), got {slo_ms:g}"
        )
    rates: list[float | None] = [None]
    if chosen == "server":
        if qps is None:
            raise InfercmpError(
                "--scenario server needs --qps RATE (requests per second) or --qps auto with "
                "--slo-ms LIMIT"
            )
        if qps.strip().lower() == "auto":
            if slo_ms is None:
                raise InfercmpError("--qps auto searches the highest rate under --slo-ms: give it")
        else:
            rates = [_positive_rate(part) for part in qps.split(",")]
            if slo_ms is not None:
                raise InfercmpError("--slo-ms goes with --qps auto; with a fixed --qps drop it")
    elif qps is not None or slo_ms is not None:
        raise InfercmpError("--qps and --slo-ms belong to --scenario server")
    loads = [
        Load(
            batch=b,
            concurrency=c,
            scenario=chosen,
            qps=q,
            slo_ms=slo_ms if chosen == "server" and q is None else None,
        )
        for b, c, q in itertools.product(batches, counts, rates)
    ]
    return loads, auto_batch


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise InfercmpError(f"--qps '{text}': give a positive rate in requests per second, or auto")
    if value > MAX_QPS:
        raise InfercmpError(
            f"--qps '{text}': above {MAX_QPS:,.0f} requests/s, the most the load generator can "
            "issue; give a lower rate"
        )
    return value


def check_server_window(loads: Sequence[Load], settings: Measurement) -> None:
    """One clear error for a server rate whose window holds no request or too many to hold.

    The window is --duration, else --max-seconds (the open loop runs that long at a fixed
    rate; a --qps auto search's points last `SEARCH_POINT_SECONDS` or --duration).
    """
    for load in loads:
        if load.scenario != "server" or load.qps is None:
            continue
        seconds = settings.duration_s or settings.max_seconds
        arrivals = load.qps * seconds
        if arrivals < 1:
            raise InfercmpError(
                f"--qps {load.qps:g} over a {seconds:g} s window schedules no request; raise "
                f"--qps or --duration so that rate x seconds is at least 1"
            )
        if arrivals > MAX_ARRIVALS:
            raise InfercmpError(
                f"--qps {load.qps:g} over a {seconds:g} s window schedules {arrivals:,.0f} "
                f"requests, above the {MAX_ARRIVALS:,} one run can hold; lower --qps or give a "
                "shorter --duration"
            )


def load_labels(loads: Sequence[Load]) -> list[str]:
    return [load.label or "single-stream" for load in loads]


def shape_and_load(shape_label: str, load: dict | None) -> str:
    """A stored result's shape label with its load's (`224x224x3 b8-c2-offline`); the label
    alone for the original measurement, so reports of plain runs read as they always did."""
    if not load:
        return shape_label
    label = Load.model_validate(load).label
    return f"{shape_label} {label}" if label else shape_label


def items_per_request(runtime_shapes: dict[str, list[int]] | None) -> int:
    """Items in one request (one timed iteration): the leading dimension of the first input
    (1 when unknown). Throughput and energy per item divide by it."""
    if runtime_shapes:
        first = next(iter(runtime_shapes.values()))
        if first:
            return int(first[0])
    return 1


def items_per_s(latency: dict | None, load_result: dict | None) -> float | None:
    """Items (batch x requests) per second: measured over the window for a load with several
    requests in flight, else batch / median latency (one request at a time)."""
    if load_result and load_result.get("items_per_s") is not None:
        return float(load_result["items_per_s"])
    return float(latency["throughput_per_s"]) if latency else None


#: The status a finished load run is shown with when it did not hold its load
#: (`load_shortfall`): its figures are kept, but they are not the load's.
OVERLOADED = "overloaded"


def load_shortfall(load: dict | None, load_result: dict | None) -> str | None:
    """Why a measured load run did not hold the load asked for, or None when it did.

    A run that cut requests (due, never started) measured an overloaded system: its p99 is
    over the completed ones. A --qps auto run whose search found no rate under the SLO, or
    whose measured window at the chosen rate missed it, has no rate to report. Derived from
    the stored figures, so runs written before this check read the same way.
    """
    if not load or not load_result:
        return None
    cut, done = int(load_result.get("cut") or 0), int(load_result.get("requests") or 0)
    if cut:
        return (
            f"{cut:,} of {cut + done:,} requests due in the window never started (overload); "
            "its latency is not the offered rate's (lower --qps, or see --qps auto)"
        )
    spec = Load.model_validate(load)
    if spec.scenario != "server":
        return None
    offered, achieved = load_result.get("offered_qps"), load_result.get("requests_per_s")
    if offered and achieved is not None and achieved < KEEP_UP * offered:
        return (
            f"completed {_rate(achieved)} of the {_rate(offered)} requests/s offered (under "
            f"{KEEP_UP:.0%}): requests queued up, so its latency is the backlog's"
        )
    if spec.qps is not None or spec.slo_ms is None:
        return None
    if load_result.get("best_qps") is None:
        reason = load_result.get("search_reason") or "the search found none"
        return f"no rate met the p99 <= {spec.slo_ms:g} ms SLO ({reason})"
    p99 = load_result.get("p99_ms")
    if p99 is None or p99 > spec.slo_ms:
        measured = "unbounded" if p99 is None else f"{p99:.3g} ms"
        return (
            f"the window at the chosen {_rate(load_result['best_qps'])} requests/s missed the "
            f"p99 <= {spec.slo_ms:g} ms SLO (p99 {measured}); measure longer (--duration)"
        )
    return None


def _rate(value: float) -> str:
    """Requests per second as a person reads them: 74,630 or 2.5."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def shown_status(result: Any) -> str:
    """The status a stored result shows: a finished load run that did not hold its load is
    OVERLOADED, not `ok` (the one rule for bench's table, the report and compare)."""
    load_result = getattr(result, "load_result", None)
    if hasattr(load_result, "model_dump"):
        load_result = load_result.model_dump(mode="json")
    load = getattr(result, "load", None)
    if hasattr(load, "model_dump"):
        load = load.model_dump(mode="json")
    if result.status == "ok" and load_shortfall(load, load_result):
        return OVERLOADED
    return result.status


def served_qps(load: dict | None, load_result: dict | None) -> float | None:
    """The rate a server run's window was offered: --qps, or the rate a --qps auto search
    chose (None where it chose none, and for the other scenarios)."""
    if not load or load.get("scenario") != "server":
        return None
    if load.get("qps") is not None:
        return float(load["qps"])
    best = (load_result or {}).get("best_qps")
    return float(best) if best is not None else None


# -- the worker's side -------------------------------------------------------------------------

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


def run_load(
    engines: Sequence[Any],
    spec: WorkerSpec,
    how: str,
    *,
    items: int,
    on_measure_start: Callable[[], None] | None = None,
    on_measure_end: Callable[[], None] | None = None,
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
    from infercmp.worker import loadgen

    load, settings = spec.load, spec.measurement
    resident = settings.device_resident
    slots = [request_slot(engine, resident) for engine in engines]
    warmup_s = settings.warmup()[1] or 0.1
    generator = None
    search: loadgen.QpsSearch | None = None
    asked_qps = load.qps or 0.0  # the rate the window's open loop ran at
    if load.scenario == "offline":
        min_requests, min_seconds, max_seconds, max_requests = _windows(settings)
        log = loadgen.closed_loop(
            slots,
            min_requests=min_requests,
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            max_requests=max_requests,
            warmup_seconds=warmup_s,
            on_measure_start=on_measure_start,
            on_measure_end=on_measure_end,
        )
    else:
        generator = dict(loadgen.generator_capacity(CAPACITY_SECONDS, len(slots)))
        # Warm every slot up for the warm-up time (a closed loop with zero minimums would stop
        # after its first request).
        loadgen.closed_loop(slots, min_requests=1, min_seconds=warmup_s, max_seconds=warmup_s)
        seconds = settings.duration_s or settings.max_seconds
        if load.qps is None:
            point_s = settings.duration_s or max(settings.min_seconds, SEARCH_POINT_SECONDS)

            def measure(qps: float) -> loadgen.RequestLog:
                return loadgen.open_loop(slots, qps=qps, seconds=point_s)

            search = loadgen.search_qps(
                measure,
                slo_ms=load.slo_ms,
                # One request per SLO, but enough arrivals that the first point measures.
                start_qps=max(1000.0 / load.slo_ms, SEARCH_MIN_ARRIVALS / point_s),
                max_qps=min(MAX_QPS, MAX_ARRIVALS / point_s),
            )
            # The search's runs are not the window: the one at the chosen rate need not be its
            # last (bisection ends on whichever side it ends), and energy needs the window to
            # be one phase. So the chosen rate runs once more, as the measurement.
            asked_qps, seconds = (search.best or search.points[-1]).qps, point_s
        log = loadgen.open_loop(
            slots,
            qps=asked_qps,
            seconds=seconds,
            on_measure_start=on_measure_start,
            on_measure_end=on_measure_end,
        )
    summary = log.summary()
    offered = log.offered_qps
    # Open loop: completions while arrivals were due (the drain does not dilute it); closed
    # loop: completions over the window.
    rate = log.achieved_qps()
    note = None
    if generator is not None:
        # The window's run may have measured the generator; with a search, so may the runs its
        # answer rests on (the best rate and the failing one above it), which are named first.
        slo_ms = load.slo_ms if search is not None and load.slo_ms else math.inf
        point = loadgen.QpsPoint.from_log(
            asked_qps, log, slo_ms=slo_ms, percentile=99, keep_up=KEEP_UP
        )
        note = loadgen.generator_limit(point, generator, slo_ms)
        if search is not None:
            note = loadgen.search_generator_limit(search, generator) or note
    result = LoadResult(
        how=how,
        batch=items,
        slots=log.slots,
        requests=log.count,
        cut=log.cut,
        window_s=log.window_s,
        requests_per_s=rate,
        items_per_s=items * rate,
        offered_qps=offered,
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        lateness_p99_ms=summary["lateness_p99_ms"],
        stop_reason=log.stop_reason,
        generator=generator,
        generator_note=note,
    )
    if search is not None:
        result.search = [
            {k: _finite_or_none(v) for k, v in dataclasses.asdict(p).items()} for p in search.points
        ]
        result.best_qps = search.best.qps if search.best else None
        result.search_reason = search.reason
    t0 = log.window_ns[0]
    arrays = {
        "wall.total": log.end_ns - log.issue_ns,
        "request.issue": log.issue_ns - t0,
        "request.start": log.start_ns - t0,
        "request.end": log.end_ns - t0,
        "request.dispatch": log.dispatch_ns - t0,  # when the generator really issued it
        "request.slot": log.slot.astype(np.int64),
    }
    return arrays, result


def _finite_or_none(value: Any) -> Any:
    """JSON has no infinity: a percentile no run could bound (too many cut) is stored as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def merge_load_results(per_process: Sequence[LoadResult | None]) -> dict[str, Any] | None:
    """One combination's load figures over its --repeat processes: requests and windows
    summed (so throughput is total items over total measured time), the rest from the first
    process, with every process's throughput kept."""
    found = [r for r in per_process if r is not None]
    if not found:
        return None
    merged = found[0].model_dump()
    if len(found) > 1:
        requests = sum(r.requests for r in found)
        seconds = sum(r.window_s for r in found)
        merged.update(
            requests=requests,
            cut=sum(r.cut for r in found),
            window_s=seconds,
            requests_per_s=requests / seconds if seconds > 0 else 0.0,
            items_per_s=found[0].batch * requests / seconds if seconds > 0 else 0.0,
            per_process_items_per_s=[r.items_per_s for r in found],
        )
    return {k: _finite_or_none(v) for k, v in merged.items()}
