"""The default executor: every unit in turn on this machine, the sampler in this process and
the worker a subprocess (`infercmp.run.worker_process.run_worker`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

from infercmp.platform.host import node_facts
from infercmp.run import worker_process
from infercmp.run.executors.base import BenchListener, WorkUnit
from infercmp.run.worker_process import WorkerOutcome


class LocalExecutor:
    """Every unit in turn on this machine: the sampler here, the worker a subprocess."""

    def __init__(self, sample_hz: float, samplers: list[Any], timeout_s: float) -> None:
        self.sample_hz = sample_hz
        self.samplers = samplers
        self.timeout_s = timeout_s

    def outcomes(
        self, units: Iterable[WorkUnit], listener: BenchListener, total: int
    ) -> Iterator[tuple[WorkUnit, WorkerOutcome]]:
        for index, unit in enumerate(units):
            listener.combination_started(unit.combo, index, total)
            # Through the module: a test replaces run_worker there, for every executor.
            outcome = worker_process.run_worker(
                unit.spec,
                self.timeout_s,
                self.sample_hz,
                self.samplers,
                on_phase=functools.partial(listener.phase, unit.combo),
            )
            outcome.node = node_facts(cuda=unit.combo.device == "cuda")
            yield unit, outcome
