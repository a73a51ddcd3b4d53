"""How long one cache line takes to go between two of the worker's CPUs and back: measured by the
parent just before and just after each CPU worker process, recorded with the process.

Why: on a virtual machine the host decides where the guest's CPUs run, and moves them. On the
2-vCPU development VM (2026-11-29) the round trip between vCPU 0 and 1, measured with a C
ping-pong, switched between about 90 ns, 400 ns and 1,200 ns for tens of seconds at a time, and
everything that synchronises threads many times per inference followed it: a C fork-join of
ten small steps took 3.9 or 7 us, ONNX Runtime's default two-thread pool on tiny-cnn 13 or 27 us
(one thread: 15.4 us in every state). Nothing a worker process sees in its own iterations tells
a state of the host from a change of the software; this probe does, so a run records the state
each process measured in, a combination whose processes saw different states says so, and
`compare` names a change of state between two runs as it names a change of machine.

The probe is pure Python (two processes spinning on one shared byte), so its figures are larger
than the hardware's (about 150 / 700 / 1,600+ ns for the three states above) and only their
ratio between measurements means something: SAME_STATE_RATIO. It runs in its own interpreter
(`python placement.py A B`), so the parent's threads and CPU affinity are never touched, and it
costs about 30 ms per measurement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

#: Two measurements within this factor are the same placement of the CPUs; the states seen
#: differ by 4x or more, repeated probes of one state by up to 1.5x.
SAME_STATE_RATIO = 2.0
#: A worker that kept at most this many CPUs busy while measuring ran its engine on one thread:
#: nothing it does crosses between CPUs many times per inference, and the placement does not
#: move it (ONNX Runtime with one intra-op thread: 14.7-15.7 us in both placements).
ONE_CPU = 1.25
#: `process_state` of a worker process whose probes before and after it differ: the host moved
#: the CPUs while it measured, so it matches no placement. Unlike None (not probed, or one
#: CPU), which matches any: a one-process run that straddled a change was compared with one
#: that had not, and read +118% (issue 27's A/A test, one process a side).
STRADDLED = -1.0
BLOCKS, ROUND_TRIPS = 8, 400
TIMEOUT_S = 5.0


def probe_cpus(cpus: set[int] | None = None) -> tuple[int, int] | None:
    """The pair of CPUs to probe: the lowest and highest the worker may run on (on common
    numberings the farthest apart); None with fewer than two."""
    allowed = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    return (allowed[0], allowed[-1]) if len(allowed) >= 2 else None


def measure_handoff_ns(pair: tuple[int, int] | None = None) -> float | None:
    """The round trip between the two CPUs in ns (best block of BLOCKS), or None when it cannot
    be measured here (one CPU, no sched_setaffinity, the probe failed or took too long)."""
    try:
        pair = pair or probe_cpus()
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return None
    if pair is None:
        return None
    try:
        # Its own session, so a probe past its time is killed with the child it forked: killed
        # alone, the probe left that child spinning on the shared byte for good (seen on the
        # 2-vCPU machine: 37 minutes of a CPU, after a probe timed out under load).
        probe = subprocess.Popen(
            [sys.executable, "-I", __file__, str(pair[0]), str(pair[1])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    except OSError:
        return None
    try:
        out, _ = probe.communicate(timeout=TIMEOUT_S)
        return float(out.strip()) if probe.returncode == 0 else None
    except (ValueError, subprocess.TimeoutExpired):
        return None
    finally:
        if probe.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()


def different_state(a: float | None, b: float | None) -> bool:
    """Whether two round trips come from different placements of the CPUs."""
    if not a or not b:
        return False
    return max(a, b) / min(a, b) >= SAME_STATE_RATIO


def placed(value: float | None) -> TypeGuard[float]:
    """Whether a state is a placement (not None, not STRADDLED)."""
    return value is not None and value > 0


def typical(values: Iterable[float | None]) -> float | None:
    """The median of the measured round trips (a run's state), None if there are none."""
    measured = [v for v in values if placed(v)]
    return statistics.median(measured) if measured else None


def moves_with_placement(worker_cpus: float | None) -> bool:
    """Whether a worker's figures can follow the placement: unless it kept at most `ONE_CPU`
    busy (one engine thread), or nobody knows how many it kept busy."""
    return worker_cpus is None or worker_cpus > ONE_CPU


def process_state(
    values: Sequence[float | None] | None, worker_cpus: float | None = None
) -> float | None:
    """One worker process's placement: the mean of its before and after round trips when both
    were measured in the same state; STRADDLED when they differ; None when it was not
    measured or the worker ran on one CPU (`ONE_CPU`), which the placement does not move."""
    if not moves_with_placement(worker_cpus):
        return None
    measured = [v for v in (values or ()) if v]
    if not measured:
        return None
    if different_state(min(measured), max(measured)):
        return STRADDLED
    return sum(measured) / len(measured)


@dataclass(frozen=True)
class SharedPlacement:
    """The processes of two runs' combinations measured in the placement they share most."""

    base: list[int]  # indices into the base side's processes
    new: list[int]
    typical_ns: float | None  # None: neither side was probed (GPU rows, older runs)

    @property
    def found(self) -> bool:
        return bool(self.base) and bool(self.new)


def shared_placement(base: Sequence[float | None], new: Sequence[float | None]) -> SharedPlacement:
    """Like with like: the processes of each side whose placement (`process_state`) is the
    same state, choosing the state with the most processes on the smaller side.

    A side with no placement at all (not probed, or its workers ran on one CPU) matches any:
    it keeps every process, and the other side keeps its commonest placement. A process that
    STRADDLED a change is left out, and a side left with none matches nothing.
    """
    if not any(base) and not any(new):
        return SharedPlacement(list(range(len(base))), list(range(len(new))), None)
    points = sorted(
        (value, side, index)
        for side, states in enumerate((base, new))
        for index, value in enumerate(states)
        if placed(value)
    )
    if not points:  # every probed process straddled a change
        return SharedPlacement([], [], None)
    clusters: list[list[tuple[float, int, int]]] = []
    for point in points:  # sorted, so a state is a run of values within the ratio of its first
        if clusters and not different_state(clusters[-1][0][0], point[0]):
            clusters[-1].append(point)
        else:
            clusters.append([point])
    one_sided = not any(base) or not any(new)

    def weight(cluster: list[tuple[float, int, int]]) -> tuple[int, int]:
        sides = [sum(1 for _, side, _ in cluster if side == s) for s in (0, 1)]
        return (sum(sides), 0) if one_sided else (min(sides), sum(sides))

    best = max(clusters, key=weight)

    def kept(side: int, states: Sequence[float | None]) -> list[int]:
        if not any(states):
            return list(range(len(states)))
        return sorted(i for _, s, i in best if s == side)

    return SharedPlacement(kept(0, base), kept(1, new), statistics.median(v for v, _, _ in best))


def state_warning(values: Iterable[float | None]) -> str | None:
    """A warning when one combination's processes measured in different states, else None."""
    measured = [v for v in values if v]
    if len(measured) < 2 or not different_state(min(measured), max(measured)):
        return None
    return (
        "the round trip of a cache line between two of the worker's CPUs ranged "
        f"{min(measured):,.0f}-{max(measured):,.0f} ns across this combination's processes: the "
        "host moved this machine's CPUs while it measured, and multi-threaded CPU figures "
        "follow that (see docs/performance.md)"
    )


def _echo(byte: memoryview, round_trips: int) -> None:
    for _ in range(round_trips):
        while byte[0] != 1:
            pass
        byte[0] = 0


def _ping(byte: memoryview, round_trips: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(round_trips):
        byte[0] = 1
        while byte[0] != 0:
            pass
    return (time.perf_counter_ns() - start) / round_trips


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when the probe that forked it dies (prctl
    PR_SET_PDEATHSIG), so a probe killed with -9 leaves no child spinning; a check in the spin
    loop itself would slow the echo it measures."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the probe died before the request took effect
        os._exit(1)


def _main(first: int, second: int) -> None:
    import mmap

    shared = mmap.mmap(-1, 64)  # anonymous and shared: the forked child sees the same byte
    byte = memoryview(shared)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # single-threaded here, so fork is safe
        _die_with(parent)
        os.sched_setaffinity(0, {second})
        _echo(byte, 1 + BLOCKS * ROUND_TRIPS)
        os._exit(0)
    os.sched_setaffinity(0, {first})
    _ping(byte, 1)  # waits until the child runs
    best = min(_ping(byte, ROUND_TRIPS) for _ in range(BLOCKS))
    os.waitpid(pid, 0)
    print(f"{best:.1f}")


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
