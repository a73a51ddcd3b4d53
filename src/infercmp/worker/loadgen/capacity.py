"""The generator measured on itself (`generator_capacity`: its ceiling and per-request overhead with
no-op slots), and whether a server figure is the generator's rather than the system's."""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from infercmp.core.errors import RunFailed
from infercmp.worker.loadgen import loops
from infercmp.worker.loadgen.qps import QpsPoint, QpsSearch


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
    closed = loops.closed_loop(noop, min_requests=1, min_seconds=seconds, max_seconds=seconds)
    flood = loops.open_loop(
        noop, qps=FLOOD_QPS, seconds=min(seconds, FLOOD_SECONDS), drain_seconds=0.0
    )
    ceiling = flood.requests_per_s()
    if ceiling <= 0:
        raise RunFailed(
            "the load generator completed no request in its flat-out run: the machine is too "
            "busy to measure it; run again when it is quieter"
        )
    rate = min(ceiling / 4, LATENESS_MAX_QPS)
    paced = loops.open_loop(noop, qps=rate, seconds=seconds)
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
