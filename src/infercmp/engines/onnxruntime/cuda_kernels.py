"""CUDA kernel times of ONNX Runtime's nodes, from a torch.profiler (CUPTI) trace of the same runs.

ONNX Runtime's own profiler times a CUDA node on the host: how long launching its kernels
took, not how long they ran (unless ONNX Runtime was built with CUDA profiling, when it writes
`cat: "Kernel"` events itself). CUPTI sees every kernel of the process, ONNX Runtime's
included, and torch.profiler's Chrome trace gives each kernel (`cat: "kernel"`, also
`gpu_memcpy`, `gpu_memset`) with the host call that launched it (`cat: "cuda_runtime"`), joined
by `args.correlation`.

The two profilers keep different clocks. Each profiled run is wrapped in
`record_function(RUN_MARK)`: that range and ONNX Runtime's `model_run` event are the same call
seen on both clocks, which gives the offset between them run by run; it is then refined (a few
microseconds of Python lie between the two starts) to the shift that puts the most launches
inside some node's host interval. A launch belongs to the node whose shifted interval holds it;
one that falls in none belongs to no node (the parent files it under "no module").
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The name of the torch.profiler range the engine opens around each profiled run.
RUN_MARK = "infercmp.ort_run"
#: Trace categories of work on the device, and what each is.
DEVICE_CATEGORIES = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
#: How far (microseconds) the refined offset may move from the two starts' difference.
SEARCH_US = 100


@dataclass(frozen=True)
class Kernel:
    """One piece of device work of a profiled run: its name, the ONNX Runtime node that
    launched it (None: none did, as far as the clocks tell), its start and duration (us)."""

    name: str
    category: str  # "kernel", "memcpy" or "memset"
    node: str | None
    start_us: float
    dur_us: float


@dataclass(frozen=True)
class _Interval:
    start: float
    end: float
    node: str


class _Intervals:
    """Node intervals sorted by start, with the starts for bisection."""

    def __init__(self, items: Iterable[_Interval]) -> None:
        self.items = sorted(items, key=lambda iv: iv.start)
        self.starts = [iv.start for iv in self.items]


def node_name(event: Mapping[str, Any]) -> str:
    """ONNX Runtime's node event name without its `_kernel_time` suffix."""
    return str(event["name"]).removesuffix("_kernel_time")


def node_kernels(
    trace_events: Sequence[Mapping[str, Any]], ort_events: Sequence[Mapping[str, Any]]
) -> list[Kernel]:
    """Every kernel, copy and memset of the marked runs, each with the node that launched it.

    `trace_events`: torch.profiler's Chrome trace events (`traceEvents`); `ort_events`: ONNX
    Runtime's profile (a list of events). The last `model_run` events of ONNX Runtime pair
    with the RUN_MARK ranges in order (earlier runs, a warm-up, have no mark).
    """
    marks = sorted(
        (
            e
            for e in trace_events
            if e.get("cat") == "user_annotation" and e.get("name") == RUN_MARK
        ),
        key=lambda e: float(e["ts"]),
    )
    runs = sorted(
        (e for e in ort_events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: float(e["ts"]),
    )
    if not marks or len(runs) < len(marks):
        return []
    runs = runs[len(runs) - len(marks) :]
    nodes = sorted(
        (
            e
            for e in ort_events
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
        ),
        key=lambda e: float(e["ts"]),
    )
    launches = _launches(trace_events)
    device = {
        corr: e
        for e in trace_events
        if e.get("cat") in DEVICE_CATEGORIES
        and (corr := (e.get("args") or {}).get("correlation")) is not None
    }
    kernels: list[Kernel] = []
    for mark, run in zip(marks, runs):
        start, end = float(mark["ts"]), float(mark["ts"]) + float(mark.get("dur", 0))
        in_run = [launch for launch in launches if start <= launch[0] <= end]
        run_start, run_end = float(run["ts"]), float(run["ts"]) + float(run.get("dur", 0))
        intervals = _Intervals(
            _Interval(float(n["ts"]), float(n["ts"]) + float(n.get("dur", 0)), node_name(n))
            for n in nodes
            if run_start <= float(n["ts"]) <= run_end
        )
        shift = best_shift([t for t, _ in in_run], intervals, start - run_start)
        for t, corr in in_run:
            work = device.get(corr)
            if work is None:
                continue
            kernels.append(
                Kernel(
                    name=str(work.get("name", "")),
                    category=DEVICE_CATEGORIES[str(work["cat"])],
                    node=_holder(t - shift, intervals),
                    start_us=float(work["ts"]),
                    dur_us=float(work.get("dur", 0)),
                )
            )
    return kernels


def _launches(trace_events: Iterable[Mapping[str, Any]]) -> list[tuple[float, Any]]:
    """(host time, correlation id) of every launch or async copy call, in time order."""
    found = []
    for e in trace_events:
        if e.get("cat") != "cuda_runtime" and e.get("cat") != "cuda_driver":
            continue
        corr = (e.get("args") or {}).get("correlation")
        if corr is not None:
            found.append((float(e["ts"]), corr))
    return sorted(found, key=lambda item: item[0])


def best_shift(times: Sequence[float], intervals: _Intervals, guess: float) -> float:
    """The offset (trace clock minus ONNX Runtime's) within SEARCH_US of `guess`, in whole
    microseconds, that puts the most of `times` inside some interval; the closest to `guess`
    among equals."""
    best, best_count = guess, -1
    for step in sorted(range(-SEARCH_US, SEARCH_US + 1), key=abs):
        shift = guess + step
        count = sum(_holder(t - shift, intervals) is not None for t in times)
        if count > best_count:
            best, best_count = shift, count
    return best


def _holder(t: float, intervals: _Intervals) -> str | None:
    """The node whose interval holds time `t`, or None."""
    i = bisect.bisect_right(intervals.starts, t) - 1
    if i >= 0 and intervals.items[i].start <= t <= intervals.items[i].end:
        return intervals.items[i].node
    return None


def intervals_us(kernels: Sequence[Kernel]) -> list[tuple[float, float]]:
    """Each kernel's (start, end), in us: what `engines.base.busy_time` takes."""
    return [(k.start_us, k.start_us + k.dur_us) for k in kernels]


def traced_runs(run_once: Callable[[], None], iterations: int, trace_path: Path) -> list[Any]:
    """`iterations` calls of `run_once` under torch.profiler (CPU and CUDA activity), each in
    a RUN_MARK range: the Chrome trace's events (written to `trace_path`). Needs torch with
    CUDA in this process (ImportError or RuntimeError otherwise: the caller says n/a)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iterations):
            with record_function(RUN_MARK):
                run_once()
    prof.export_chrome_trace(str(trace_path))
    events = json.loads(trace_path.read_text()).get("traceEvents", [])
    return list(events)
