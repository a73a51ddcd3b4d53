"""What the commit loop and an executor share: the unit of work (one worker process of one
combination), the `Executor` protocol that runs units, and the progress callbacks.

An executor takes the units lazily and yields each one's outcome as it finishes; the commit
loop (`infercmp.run.loop.run_bench`) stores it at once. `infercmp.run.executors.local` runs
each unit here, one at a time; `infercmp.run.executors.ray` runs the same parent-side logic
as a Ray task on the node that holds the unit's resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from infercmp.core.contract import WorkerSpec
from infercmp.run.plan import Combination
from infercmp.run.worker_process import WorkerOutcome


@dataclass(frozen=True)
class WorkUnit:
    """One worker process of one combination, with the spec it runs."""

    combo: Combination
    process: int
    spec: WorkerSpec


class Executor(Protocol):
    def outcomes(
        self, units: Iterable[WorkUnit], listener: BenchListener, total: int
    ) -> Iterator[tuple[WorkUnit, WorkerOutcome]]:
        """Run `units` and yield each with its outcome as it finishes, never raising for a
        unit's failure.

        `units` come round-robin over the processes (every combination's process 0, then every
        process 1, ...) and lazily: taken when they can start, a combination committed early
        gets no more. An executor that runs several units at once keeps each combination's
        processes in turn: process k+1 starts after process k ended, and none after one whose
        outcome `ends_combination`, so a combination is stored from the same processes as
        one at a time."""
        ...


class BenchListener:
    """Callbacks the CLI uses to show progress; the defaults do nothing."""

    def combination_started(self, combo: Combination, index: int, total: int) -> None: ...

    def phase(self, combo: Combination, phase: str) -> None: ...

    def worker_finished(self, combo: Combination, outcome: WorkerOutcome) -> None:
        """A worker process ended; its result is not committed yet (tests pause here)."""

    def combination_finished(self, combo: Combination, result: Any) -> None: ...
