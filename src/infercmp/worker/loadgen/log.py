"""What a load generator run recorded: every completed request's times (`RequestLog`), and the
error that stops a run when a slot raises (`SlotFailed`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from infercmp.core.errors import RunFailed


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
