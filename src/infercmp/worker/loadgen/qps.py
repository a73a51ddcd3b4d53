"""`search_qps`: the highest Poisson rate whose latency percentile stays under an SLO, found by
doubling and bisecting over open-loop runs (`QpsPoint` each, `QpsSearch` in all)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from infercmp.core.contract import KEEP_UP
from infercmp.worker.loadgen.log import RequestLog


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

    start = min(start_qps if start_qps is not None else 1000.0 / slo_ms, max_qps)
    passed, failed = _bracket(trial, grow, start, points, max_points, max_qps)
    if passed is None:
        assert failed is not None  # the first rate failed, and every halving after it
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
    reason = _stop_reason(passed, failed, max_qps, max_points, tolerance)
    return QpsSearch(slo_ms, percentile, points, passed, reason)


def _bracket(
    trial: Callable[[float], QpsPoint],
    grow: Callable[[float], float],
    qps: float,
    points: list[QpsPoint],
    max_points: int,
    max_qps: float,
) -> tuple[QpsPoint | None, QpsPoint | None]:
    """(passed, failed): from a passing `qps`, grow until a rate fails; from a failing one,
    halve until one passes (or `max_points` runs are in `points`, or `max_qps` passed)."""
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
    return passed, failed


def _stop_reason(
    passed: QpsPoint, failed: QpsPoint | None, max_qps: float, max_points: int, tolerance: float
) -> str:
    """Why a search that found a passing rate stopped there."""
    if failed is None and passed.qps >= max_qps:
        return f"every rate tried passed, up to the {max_qps:.4g} requests/s bound"
    if failed is None:
        return f"every rate tried passed, up to {passed.qps:.4g} requests/s (max_points reached)"
    if (failed.qps - passed.qps) / passed.qps <= tolerance:
        return f"bracketed within {tolerance:.0%}: {failed.qps:.4g} requests/s fails"
    return f"max_points ({max_points}) reached; {failed.qps:.4g} requests/s fails"
