"""Measuring candidates: what a measurement gives back, the measurer protocol the search calls,
and the real measurer, which runs bench's workers and commits each result to the run store."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infercmp.core.contract import Load
from infercmp.core.parity import Parity
from infercmp.engines.descriptor import Machine
from infercmp.engines.registry import get_descriptor
from infercmp.run import worker_process
from infercmp.run.aggregate import ComboProgress, now_iso, outcome_to_result
from infercmp.run.loop import WORKERS_DIR
from infercmp.run.plan import BenchPlan, plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.run.signals import Interrupted
from infercmp.store.ids import combo_id
from infercmp.store.run_store import RunStore
from infercmp.store.tune_file import RoundPlan
from infercmp.tune.candidates import Candidate


@dataclass
class Measured:
    """What the measurer reports for one candidate in one round."""

    candidate: Candidate
    status: str  # the combination's status: ok, failed, timeout, crashed, oom, skipped
    error: str | None = None
    parity_ok: bool = True
    parity_text: str | None = None
    p50_ms: float | None = None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    items_per_s: float | None = None
    memory_bytes: int | None = None
    processes: int = 0
    wall_s: float = 0.0
    measure_s: float = 0.0  # of the wall time, the warm-up and measurement windows


class Measurer(Protocol):
    """Measures candidates for the search: bench's workers for real, a fake in tests."""

    def measure(
        self, candidates: list[Candidate], plan: RoundPlan, timeout_s: Callable[[Candidate], float]
    ) -> Iterator[Measured]:
        """Yield each candidate's result as it is committed. `timeout_s(candidate)` is the
        time its next process may take; it raises `BudgetSpent` when nothing is left."""
        ...


class BudgetSpent(Exception):
    """The budget has no room for another worker."""


@dataclass
class WorkerMeasurer:
    """Measures candidates in bench's worker processes and commits each to the run store.

    Everything is bench's: `plan_bench` checks a candidate as `infercmp bench -e ...` would,
    `prepare_artifacts` makes what it needs through the cache, `run_worker`/`worker_spec` run
    it, `outcome_to_result` turns the processes into one stored result (the hierarchical CI
    when there are several). Repeated processes are interleaved as `run_bench` does.
    """

    plugin: Any
    experiment: Any  # infercmp.workload.shapes.Experiment
    cache: Any
    store: RunStore
    machine: Machine
    samplers: list[Any]
    sample_hz: float = 20.0
    exporter: str = "auto"
    device_resident: bool = False
    power_limit_w: float | None = None
    prepare_timeout_s: float = 600.0
    load: Load = field(default_factory=Load)  # bench's load: the batch every candidate runs at
    progress: Callable[[str], None] = lambda line: None
    on_phase: Callable[[Candidate, str], None] = lambda candidate, phase: None

    def measure(
        self, candidates: list[Candidate], plan: RoundPlan, timeout_s: Callable[[Candidate], float]
    ) -> Iterator[Measured]:
        combos = {c: self._combination(c) for c in candidates}
        descriptors = {c.engine: get_descriptor(c.engine) for c in candidates}
        bench_plan = BenchPlan(
            self.plugin.name,
            self.plugin.config,
            [self.experiment],
            list(combos.values()),
            descriptors,
        )
        artifacts = prepare_artifacts(
            self.plugin, bench_plan, self.cache, self.progress, self.exporter,
            self.prepare_timeout_s,
        )  # fmt: skip
        measurement = plan.measurement.model_copy(update={"device_resident": self.device_resident})
        pending: dict[Candidate, Any] = {}
        walls: dict[Candidate, float] = {}
        for c, combo in combos.items():
            reason = combo.skip_reason or artifacts.missing(combo, descriptors[c.engine])
            if reason is not None:
                yield Measured(c, "skipped" if combo.skip_reason else "failed", reason)
            else:
                pending[c] = ComboProgress(combo, now_iso())
                walls[c] = 0.0
        try:
            for process in range(plan.repeat):
                for c, progress in list(pending.items()):
                    seconds = timeout_s(c)
                    workdir = self._workdir(progress.combo, plan.name, process)
                    spec = worker_process.worker_spec(
                        self.plugin, progress.combo, artifacts, measurement, workdir, process
                    )
                    started = time.monotonic()
                    outcome = worker_process.run_worker(
                        spec, seconds, self.sample_hz, self.samplers,
                        on_phase=self._phases_of(c),
                    )  # fmt: skip
                    walls[c] += time.monotonic() - started
                    progress.outcomes.append(outcome)
                    if progress.done or process == plan.repeat - 1:
                        del pending[c]
                        yield self._commit(c, progress, walls[c], plan.name)
        except (BudgetSpent, Interrupted):
            # What already has a measured process is kept, as bench keeps it on a signal.
            for c, progress in list(pending.items()):
                if any(o.status == "ok" for o in progress.outcomes):
                    del pending[c]
                    yield self._commit(c, progress, walls[c], plan.name)
            raise

    def _phases_of(self, candidate: Candidate) -> Callable[[str], None]:
        """The worker's phase callback, telling `on_phase` which candidate it is about."""
        return lambda phase: self.on_phase(candidate, phase)

    def _combination(self, candidate: Candidate) -> Any:
        plan = plan_bench(
            self.plugin,
            [self.experiment],
            [candidate.engine_text],
            [candidate.device],
            [candidate.precision],
            self.machine,
            loads=[self.load],
        )
        return plan.combinations[0]

    def _workdir(self, combo: Any, round_name: str, process: int) -> Path:
        name = combo_id(
            combo.engine.name, combo.device, combo.precision, combo.experiment.label,
            combo.engine.variant,
        )  # fmt: skip
        return Path(self.store.path) / WORKERS_DIR / f"{name}.{round_name}.p{process}"

    def _commit(
        self, candidate: Candidate, progress: Any, wall_s: float, round_name: str
    ) -> Measured:
        result, latency, samples = outcome_to_result(self.plugin, progress, self.power_limit_w)
        self.store.add_result(result, latency, samples)
        if result.status == "ok":  # stored: the worker's files are copies now
            for process in range(len(progress.outcomes)):
                workdir = self._workdir(progress.combo, round_name, process)
                shutil.rmtree(workdir, ignore_errors=True)
        parity = Parity.model_validate(result.parity) if result.parity else None
        lat = result.latency or {}
        windows = sum(
            o.result.warmup.seconds + o.result.measure_seconds
            for o in progress.outcomes
            if o.result is not None
        )
        memory = result.peak_vram_bytes if candidate.device == "cuda" else result.peak_rss_bytes
        return Measured(
            candidate,
            result.status,
            result.error,
            parity_ok=parity is None or parity.ok,
            parity_text=parity.failures() if parity is not None and not parity.ok else None,
            p50_ms=lat.get("p50_ms"),
            ci_low_ms=lat.get("ci_low_ms"),
            ci_high_ms=lat.get("ci_high_ms"),
            items_per_s=lat.get("throughput_per_s"),
            memory_bytes=memory,
            processes=len(progress.outcomes),
            wall_s=wall_s,
            measure_s=windows,
        )
