"""The load generator: closed and open loops, Poisson arrivals, overload, the QPS search.

Slots here are fakes (counters, sleeps, raisers); no assertion depends on how fast this
machine runs them, except bounds that physics sets (a sleep of S is never shorter than S).
"""

from __future__ import annotations

import math
import signal
import threading
import time

import numpy as np
import pytest

from infercmp.core.errors import RunFailed
from infercmp.worker import loadgen
from infercmp.worker.loadgen import RequestLog, SlotFailed


class CountingSlot:
    """A fake request: counts its calls, optionally sleeps."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


class RaisingSlot(CountingSlot):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def __call__(self) -> None:
        super().__call__()
        if self.calls > self.after:
            raise ValueError("fake engine broke")


def loadgen_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("loadgen-") and t.is_alive()]


def max_overlap(begin: np.ndarray, end: np.ndarray) -> int:
    """The most intervals [begin, end) open at one instant."""
    events = sorted([(int(b), 1) for b in begin] + [(int(e), -1) for e in end])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


# --------------------------------------------------------------------------- closed loop


def test_closed_loop_fake_slots_bookkeeping():
    # The fakes sleep, which releases the GIL as an engine's compute does; slots that hold it
    # (pure Python) run one at a time for a switch interval each.
    slots = [CountingSlot(sleep_s=0.0002) for _ in range(3)]
    log = loadgen.closed_loop(slots, min_requests=120, min_seconds=0.0, max_seconds=30.0)

    # Stops once the minimum is met; the other slots finish the request they are in.
    assert 120 <= log.count <= 120 + len(slots) - 1
    assert log.cut == 0 and log.slots == 3 and log.stop_reason == "minimums met"
    assert sorted(set(log.slot.tolist())) == [0, 1, 2]
    # Every call was logged (no warm-up), each under the slot that made it.
    assert [int((log.slot == k).sum()) for k in range(3)] == [s.calls for s in slots]
    assert np.all(log.issue_ns <= log.start_ns) and np.all(log.start_ns <= log.end_ns)
    assert log.window_ns == (int(log.issue_ns.min()), int(log.end_ns.max()))
    # Closed loop: a slot's next request is due when its previous one ended.
    for k in range(3):
        mine = log.slot == k
        assert np.array_equal(log.issue_ns[mine][1:], log.end_ns[mine][:-1])
    assert log.requests_per_s() == pytest.approx(log.count / log.window_s)
    assert np.all(np.diff(log.issue_ns) >= 0)


def test_closed_loop_fake_warmup_runs_but_is_not_logged():
    slots = [CountingSlot(sleep_s=0.0002), CountingSlot(sleep_s=0.0002)]
    log = loadgen.closed_loop(
        slots, min_requests=50, min_seconds=0.0, max_seconds=30.0, warmup_seconds=0.05
    )
    assert sum(s.calls for s in slots) > log.count
    # Both slots start measuring at the same instant, after every warm-up request.
    firsts = [int(log.issue_ns[log.slot == k][0]) for k in range(2)]
    assert firsts[0] == firsts[1] == log.window_ns[0]


def test_closed_loop_fake_stops_at_max_seconds_when_minimum_unreachable():
    log = loadgen.closed_loop(
        [CountingSlot(sleep_s=0.01)], min_requests=10**9, min_seconds=0.0, max_seconds=0.2
    )
    assert log.stop_reason == "max_seconds"
    assert 0 < log.count < 10**9


@pytest.mark.parametrize("warmup_seconds", [0.0, 0.05])
def test_closed_loop_fake_raising_slot_stops_run_and_names_slot(warmup_seconds):
    slots = [CountingSlot(sleep_s=0.001), RaisingSlot(after=3), CountingSlot(sleep_s=0.001)]
    with pytest.raises(SlotFailed, match="request slot 1 failed: ValueError: fake engine broke"):
        loadgen.closed_loop(
            slots, min_requests=10**9, min_seconds=60.0, max_seconds=60.0,
            warmup_seconds=warmup_seconds,
        )  # fmt: skip
    assert loadgen_threads() == []


def test_slot_failure_is_a_run_failure_with_the_cause_kept():
    with pytest.raises(RunFailed) as caught:
        loadgen.closed_loop([RaisingSlot(after=0)], min_requests=1, min_seconds=0, max_seconds=5)
    assert caught.value.slot == 0
    assert (
        isinstance(caught.value.error, ValueError) and caught.value.__cause__ is caught.value.error
    )


def test_closed_loop_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        loadgen.closed_loop([], min_requests=1, min_seconds=0, max_seconds=1)


# --------------------------------------------------------------------------- Poisson schedule


def test_poisson_schedule_fixed_seed_is_poisson():
    qps, seconds = 1000.0, 20.0
    schedule = loadgen.poisson_schedule(qps, seconds, seed=7)
    assert np.array_equal(schedule, loadgen.poisson_schedule(qps, seconds, seed=7))
    assert not np.array_equal(schedule[:100], loadgen.poisson_schedule(qps, seconds, seed=8)[:100])
    assert schedule.dtype == np.int64
    assert np.all(np.diff(schedule) >= 0) and schedule[0] >= 0 and schedule[-1] < seconds * 1e9

    assert len(schedule) == qps * seconds  # the rate asked, exactly: the count is given
    assert len(loadgen.poisson_schedule(100.0, 1.5)) == 150  # short runs too
    gaps = np.diff(schedule) / 1e9
    assert gaps.mean() == pytest.approx(1 / qps, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    # Kolmogorov-Smirnov against the exponential law (1% critical value 1.63 / sqrt(n)).
    ordered = np.sort(gaps)
    empirical = np.arange(1, len(ordered) + 1) / len(ordered)
    distance = np.max(np.abs(empirical - (1 - np.exp(-ordered * qps))))
    assert distance < 1.63 / math.sqrt(len(ordered))
    # Counts per 100 ms are Poisson too: variance about equal to the mean.
    counts = np.bincount((schedule // 100_000_000).astype(np.int64))
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.35)


def test_poisson_schedule_rejects_non_positive_rate():
    with pytest.raises(ValueError, match="qps > 0"):
        loadgen.poisson_schedule(0.0, 1.0)


# --------------------------------------------------------------------------- open loop


def test_open_loop_fake_slots_follow_the_schedule():
    qps, seconds, seed = 200.0, 0.5, 3
    slots = [CountingSlot(), CountingSlot()]
    log = loadgen.open_loop(slots, qps=qps, seconds=seconds, seed=seed)
    schedule = loadgen.poisson_schedule(qps, seconds, seed)

    assert log.cut == 0 and log.stop_reason == "all completed"
    assert log.count == len(schedule) == sum(s.calls for s in slots)
    assert log.offered_qps == pytest.approx(len(schedule) / seconds)
    # Requests are due exactly on the schedule, shifted to the run's start.
    assert np.array_equal(log.issue_ns - log.issue_ns[0], schedule - schedule[0])
    assert log.window_ns[0] <= log.issue_ns[0]
    assert log.window_ns[1] >= log.window_ns[0] + seconds * 1e9
    # Due <= dispatched <= started <= ended; latency = queueing + service.
    assert np.all(log.issue_ns <= log.dispatch_ns)
    assert np.all(log.dispatch_ns <= log.start_ns) and np.all(log.start_ns <= log.end_ns)
    np.testing.assert_allclose(log.latency_ms(), log.queue_ms() + log.service_ms())
    assert np.all(log.lateness_ms() >= 0)


def test_open_loop_fake_overload_is_cut_and_counted():
    service_s, seconds, drain_s = 0.01, 0.3, 0.1
    log = loadgen.open_loop(
        [CountingSlot(sleep_s=service_s)], qps=1000.0, seconds=seconds, drain_seconds=drain_s
    )
    due = len(loadgen.poisson_schedule(1000.0, seconds))
    # One slot of 10 ms cannot serve more than the run's length allows; the rest is cut.
    most = math.ceil((seconds + drain_s) / service_s) + 1
    assert log.count <= most
    assert log.count + log.cut == due and log.cut >= due - most
    assert log.stop_reason == f"{log.cut} cut"
    assert log.percentile_ms(99) == math.inf  # over 1% never ran: p99 is unbounded
    assert log.summary()["p99_ms"] is None and log.summary()["cut"] == log.cut
    assert loadgen_threads() == []


def test_open_loop_fake_max_outstanding_bounds_requests_in_flight():
    log = loadgen.open_loop(
        [CountingSlot(sleep_s=0.002) for _ in range(4)], qps=2000.0, seconds=0.2,
        max_outstanding=2, drain_seconds=0.1,
    )  # fmt: skip
    assert log.count > 0
    assert log.count + log.cut == len(loadgen.poisson_schedule(2000.0, 0.2))  # none lost
    assert max_overlap(log.dispatch_ns, log.end_ns) <= 2
    # Requests held back by the bound are late, and that counts in their latency.
    assert log.lateness_ms().max() > 0


def test_open_loop_fake_raising_slot_stops_run_and_names_slot():
    slots = [CountingSlot(), RaisingSlot(after=2)]
    with pytest.raises(SlotFailed, match="request slot 1 failed"):
        loadgen.open_loop(slots, qps=2000.0, seconds=5.0)
    assert loadgen_threads() == []


# --------------------------------------------------------------------------- percentiles


def fake_log(latency_ms: list[float], cut: int = 0) -> RequestLog:
    end = (np.asarray(latency_ms) * 1e6).astype(np.int64) + 10**9
    issue = np.full(len(end), 10**9, dtype=np.int64)
    return RequestLog(
        issue_ns=issue, start_ns=issue, end_ns=end, slot=np.zeros(len(end), dtype=np.int32),
        window_ns=(10**9, int(end.max())), dispatch_ns=issue, slots=1, cut=cut,
    )  # fmt: skip


def test_percentile_fake_log_matches_numpy_without_cuts():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 7.0]
    log = fake_log(values)
    for q in (0, 50, 90, 99, 100):
        assert log.percentile_ms(q) == pytest.approx(np.percentile(values, q))


def test_percentile_fake_log_counts_cut_requests_as_slowest():
    log = fake_log([float(v) for v in range(1, 100)], cut=1)  # 99 done, 1 cut
    assert log.percentile_ms(50) == pytest.approx(np.percentile(range(1, 101), 50))
    assert log.percentile_ms(100) == math.inf
    with pytest.raises(ValueError, match="rows"):
        RequestLog(
            issue_ns=np.zeros(2, np.int64), start_ns=np.zeros(1, np.int64),
            end_ns=np.zeros(1, np.int64), slot=np.zeros(1, np.int32), window_ns=(0, 1),
            dispatch_ns=np.zeros(1, np.int64), slots=1,
        )  # fmt: skip


def test_request_log_fake_round_trips_through_npz(tmp_path):
    log = loadgen.open_loop([CountingSlot(sleep_s=0.01)], qps=500.0, seconds=0.1, drain_seconds=0)
    np.savez(tmp_path / "latency.npz", **log.to_arrays())
    with np.load(tmp_path / "latency.npz") as stored:
        back = RequestLog.from_arrays(stored)
    for name in ("issue_ns", "start_ns", "end_ns", "slot", "dispatch_ns"):
        assert np.array_equal(getattr(back, name), getattr(log, name))
    assert (back.window_ns, back.slots, back.cut, back.issuing_ns) == (
        log.window_ns,
        log.slots,
        log.cut,
        log.issuing_ns,
    )
    assert back.cut > 0 and back.offered_qps == log.offered_qps
    assert back.percentile_ms(50) == log.percentile_ms(50)


# --------------------------------------------------------------------------- QPS search


def simulated_server(service_s: float, seconds: float = 20.0):
    """A fake `measure`: one slot of fixed service time fed the Poisson schedule, simulated.

    The Lindley recursion start_i = max(arrival_i, end_{i-1}) gives each request's times with
    no clock involved, so the theory holds exactly: the slot saturates at 1 / service_s.
    """
    service_ns = int(service_s * 1e9)

    def measure(qps: float) -> RequestLog:
        arrival = loadgen.poisson_schedule(qps, seconds, seed=0)
        start = np.empty_like(arrival)
        free = 0
        for i, due in enumerate(arrival.tolist()):
            start[i] = max(due, free)
            free = start[i] + service_ns
        end = start + service_ns
        horizon = int(seconds * 1e9)
        done = start < horizon + int(1e9)  # started before the end of a 1 s drain
        return RequestLog(
            issue_ns=arrival[done], start_ns=start[done], end_ns=end[done],
            slot=np.zeros(int(done.sum()), dtype=np.int32),
            window_ns=(0, max(horizon, int(end[done].max()))), dispatch_ns=arrival[done],
            slots=1, cut=int((~done).sum()), issuing_ns=(0, horizon),
        )  # fmt: skip

    return measure


def test_search_qps_fake_single_slot_lands_between_half_and_full_capacity():
    service_s = 0.005  # saturates at 200 requests/s
    slo_ms = 6 * service_s * 1e3  # M/D/1 reaches a p99 of 6 S near 60% load
    result = loadgen.search_qps(
        simulated_server(service_s), slo_ms=slo_ms, start_qps=20.0, tolerance=0.05
    )
    assert result.best is not None, result.reason
    assert 0.5 / service_s < result.best.offered_qps < 1 / service_s
    assert result.best.ok and result.best.percentile_ms <= slo_ms
    # The answer is bracketed: a rate within 5% above it failed.
    failing = [p.qps for p in result.points if not p.ok]
    assert min(q for q in failing if q > result.best.qps) <= result.best.qps * 1.05
    assert "bracketed within 5%" in result.reason
    assert len(result.points) <= 12


def test_search_qps_fake_none_when_even_the_lowest_rate_misses():
    result = loadgen.search_qps(
        simulated_server(0.05), slo_ms=10.0, start_qps=5.0, max_points=3
    )  # service 50 ms can never meet 10 ms
    assert result.best is None
    assert len(result.points) == 3 and not any(p.ok for p in result.points)
    assert result.reason.startswith("even 1.25 requests/s misses the p99 <= 10 ms SLO")


def test_search_qps_fake_overload_fails_on_keeping_up():
    # Far above capacity the queue grows without bound: the run falls behind the offered rate.
    point = loadgen.QpsPoint.from_log(
        1000.0, simulated_server(0.005)(1000.0), slo_ms=1e9, percentile=99, keep_up=0.95
    )
    assert not point.ok and point.achieved_qps < 0.95 * point.offered_qps
    assert point.achieved_qps == pytest.approx(200.0, rel=0.01)  # the slot's capacity, 1 / S


def test_search_qps_fake_sleep_slot_never_beats_its_service_time():
    # A real open loop over a sleeping slot: only the physical bound is asserted.
    service_s = 0.004

    def measure(qps: float) -> RequestLog:
        return loadgen.open_loop(
            [CountingSlot(sleep_s=service_s)], qps=qps, seconds=0.4, drain_seconds=0.1
        )

    result = loadgen.search_qps(measure, slo_ms=200.0, start_qps=25.0, max_points=6)
    for point in result.points:
        assert point.achieved_qps <= 1 / service_s
    if result.best is not None:
        assert result.best.achieved_qps <= 1 / service_s
    assert loadgen_threads() == []


# --------------------------------------------------------------------------- self-measurement


def test_generator_capacity_reports_positive_figures():
    capacity = loadgen.generator_capacity(seconds=0.2, slots=2)
    assert capacity["slots"] == 2
    for key in ("closed_loop_requests_per_s", "open_loop_max_qps", "open_loop_qps"):
        assert math.isfinite(capacity[key]) and capacity[key] > 0
    assert 0 <= capacity["lateness_p50_us"] <= capacity["lateness_p99_us"]
    assert capacity["closed_loop_overhead_us"] >= 0


# A generator that can issue 100,000 requests/s flat out.
FAKE_CAPACITY = loadgen.GeneratorCapacity(
    slots=1, closed_loop_requests_per_s=1e6, closed_loop_cost_us=1.0, closed_loop_overhead_us=0.1,
    open_loop_max_qps=100_000.0, open_loop_qps=10_000.0, lateness_p50_us=20.0, lateness_p99_us=80.0,
)  # fmt: skip


def test_generator_limit_fake_points():
    capacity = FAKE_CAPACITY

    def point(offered: float, lateness_ms: float) -> loadgen.QpsPoint:
        return loadgen.QpsPoint(
            qps=offered, offered_qps=offered, achieved_qps=offered, percentile_ms=5.0, ok=True,
            requests=1000, cut=0, lateness_p99_ms=lateness_ms,
        )  # fmt: skip

    assert loadgen.generator_limit(point(1000.0, 0.05), capacity, slo_ms=10.0) is None
    assert loadgen.generator_limit(point(60_000.0, 0.05), capacity, slo_ms=10.0) == (
        "60,000 requests/s is over 50% of the load generator's ceiling (100,000/s on this machine)"
    )
    assert loadgen.generator_limit(point(1000.0, 2.0), capacity, slo_ms=10.0) == (
        "the load generator issued requests up to 2 ms late (p99), over 10% of the 10 ms SLO"
    )


class InterruptingSlot(CountingSlot):
    """A fake request that sends the process SIGINT (Ctrl-C) on its third call."""

    def __call__(self) -> None:
        super().__call__()
        if self.calls == 3:
            signal.raise_signal(signal.SIGINT)
        time.sleep(0.001)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, whatever an earlier test in this process left installed
    (seen once in CI: SIGINT went to another handler and both loops ran their full 60 s)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("loop", ["closed", "open"])
def test_fake_ctrl_c_stops_every_thread_and_propagates(loop, python_sigint):
    slots = [InterruptingSlot(), CountingSlot(sleep_s=0.001)]
    with pytest.raises(KeyboardInterrupt):
        if loop == "closed":
            loadgen.closed_loop(slots, min_requests=10**9, min_seconds=60, max_seconds=60)
        else:
            loadgen.open_loop(slots, qps=500.0, seconds=60.0)
    assert loadgen_threads() == []


def test_open_loop_fake_warmup_runs_before_the_clock_and_is_not_logged():
    slots = [CountingSlot(sleep_s=0.001), CountingSlot(sleep_s=0.001)]
    log = loadgen.open_loop(slots, qps=200.0, seconds=0.3, warmup_seconds=0.05)
    warmup_calls = [s.calls - int((log.slot == k).sum()) for k, s in enumerate(slots)]
    assert all(calls > 0 for calls in warmup_calls)  # every slot warmed up, none of it logged
    assert log.cut == 0 and log.count == len(loadgen.poisson_schedule(200.0, 0.3))


def test_open_loop_fake_slot_raising_in_warmup_names_it():
    with pytest.raises(SlotFailed, match="request slot 0 failed"):
        loadgen.open_loop(
            [RaisingSlot(after=1), CountingSlot(sleep_s=0.001)], qps=100.0, seconds=5.0,
            warmup_seconds=0.5,
        )  # fmt: skip
    assert loadgen_threads() == []


def test_search_qps_fake_far_low_start_jumps_towards_implied_capacity():
    # From 1/s, doubling alone would take 8 runs to pass 200/s; the service times of the
    # first run imply 200/s, so the second run goes to half of that.
    result = loadgen.search_qps(simulated_server(0.005), slo_ms=30.0, start_qps=1.0)
    assert [round(p.qps) for p in result.points[:3]] == [1, 100, 200]
    assert result.best is not None and 100 <= result.best.qps < 200
    assert "bracketed within 5%" in result.reason and len(result.points) <= 8


def test_search_generator_limit_fake_checks_the_bounding_failure_too():
    capacity = FAKE_CAPACITY

    def point(qps: float, ok: bool, lateness_ms: float) -> loadgen.QpsPoint:
        return loadgen.QpsPoint(
            qps=qps, offered_qps=qps, achieved_qps=qps, percentile_ms=4.0 if ok else 8.0,
            ok=ok, requests=1000, cut=0, lateness_p99_ms=lateness_ms,
        )  # fmt: skip

    best = point(995.0, True, 0.3)
    clean = loadgen.QpsSearch(5.0, 99.0, [point(2000.0, False, 0.2), best], best)
    assert loadgen.search_generator_limit(clean, capacity) is None
    # The rate just above the answer failed while the generator was 1.6 ms late.
    late = loadgen.QpsSearch(
        5.0, 99.0, [point(8000.0, False, 0.2), point(1024.0, False, 1.6), best], best
    )
    assert loadgen.search_generator_limit(late, capacity) == (
        "1,024/s, the failing rate that bounds the search, ran where the load generator issued "
        "requests up to 1.6 ms late (p99), over 10% of the 5 ms SLO"
    )
    none_passed = loadgen.QpsSearch(5.0, 99.0, [point(50.0, False, 2.0)], None)
    assert loadgen.search_generator_limit(none_passed, capacity).startswith("50/s, the failing")


def test_search_qps_fake_never_tries_a_rate_above_its_bound():
    """Issue 23, C.19: a search from 1000 / 1e-6 requests/s scheduled 7.45 GiB of arrivals. A
    server that keeps up with anything stops the search at the bound, which it says."""
    result = loadgen.search_qps(
        simulated_server(0.00001), slo_ms=30.0, start_qps=1000.0, max_qps=20_000.0
    )
    assert max(p.qps for p in result.points) == 20_000.0
    assert result.best is not None and result.best.qps == 20_000.0
    assert result.reason == "every rate tried passed, up to the 2e+04 requests/s bound"
