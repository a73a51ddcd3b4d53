"""What a combination's worker processes left behind, turned into one stored result: latency
pooled over the processes with its statistics, per-process summaries, the sampler's readings
(energy, utilisation, background load) and the warnings, each once (`outcome_to_result`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import items_per_request
from infercmp.core.lazy import lazy_import
from infercmp.core.stats import LatencyStats, hierarchical_median_ci
from infercmp.platform.placement import state_warning
from infercmp.run.plan import Combination, combination_id
from infercmp.run.worker_process import WorkerOutcome
from infercmp.sampler import background_load, energy_window, mean_over_measure, peak
from infercmp.store.schema import CombinationResult, ProcessSummary
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.scenarios import merge_load_results

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0  # for the CI across processes: repeatable
#: Worker phases outside every measured summary (peak memory, utilisation, energy): the
#: accuracy phase runs other inputs, the profile phase a profiler, untimed, after the
#: measurement; a failure in either keeps the latency measured before it.
UNTIMED_PHASES = frozenset({"accuracy", "profile"})


def now_iso() -> str:
    """This moment in UTC, to the second: when a combination started or finished."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ComboProgress:
    """The processes of one combination measured so far (one per `--repeat`)."""

    combo: Combination
    started: str
    outcomes: list[WorkerOutcome] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """No further process is worth starting: one did not end ok."""
        return any(o.ends_combination for o in self.outcomes)


def outcome_to_result(
    plugin: ModelPlugin, progress: ComboProgress, power_limit_w: float | None = None
) -> tuple[CombinationResult, list[dict[str, np.ndarray]] | None, list[dict[str, Any]] | None]:
    """Turn what a combination's worker processes left behind into one stored result.

    Returns (CombinationResult, latency arrays with a `process` array, sampler rows). Every
    process's iterations are kept, tagged with its number; statistics are computed here,
    once, over all of them. A failed process's phase, error and traceback are kept.
    """
    outcomes = progress.outcomes
    ok = [o for o in outcomes if _measured(o) and len(o.latency.get("wall.total", ())) > 0]
    failing = next((o for o in outcomes if o.status != "ok"), None)
    status, error = _verdict(outcomes, ok, failing)
    failed = failing.result if failing else None
    # What describes the combination: a measured process if any, else the failed one.
    source = ok[0].result if ok else failed

    per_process, samples = _per_process(ok)
    timed = [row for row in samples if row.get("phase") not in UNTIMED_PHASES]
    latency = _pooled(per_process)
    wall = latency.get("wall.total")
    iterations = int(len(wall)) if wall is not None else 0
    runtime_shapes = source.runtime_shapes if source else {}
    batch = items_per_request(runtime_shapes)
    stats, ci_method = _latency_stats(ok, wall, batch, iterations)
    device = latency.get("device.total")
    processes = _process_summaries(ok)
    warnings, readings = _machine_readings(outcomes, ok, iterations, power_limit_w)
    described = failed or source
    parity = described.parity if described else None
    result = combination_result(
        plugin,
        progress.combo,
        runtime_shapes=runtime_shapes,
        options={**dict(progress.combo.engine.options), **(source.options if source else {})},
        status=status,
        error=error,
        phase=failed.phase if failed else None,
        traceback=failed.traceback if failed else None,
        stop_reason=processes[-1].stop_reason if processes else None,
        iterations=iterations,
        latency=stats,
        ci_method=ci_method,
        device_latency=(
            LatencyStats.from_ns(device, batch).to_dict()
            if device is not None and len(device)
            else None
        ),
        processes=processes,
        peak_rss_bytes=peak(timed, "proc_rss_bytes"),
        peak_vram_bytes=peak(timed, "proc_gpu_mem_bytes"),
        **readings,
        load_seconds=source.load_seconds if source else None,
        engine_info=source.engine_info if source else {},
        load_result=merge_load_results([o.result.load_result for o in ok if o.result]),
        parity=parity.model_dump() if parity else None,
        warnings=warnings,
        started=progress.started,
        finished=now_iso(),
        node=next((o.node for o in [*ok, *outcomes] if o.node), None),
    )
    return result, per_process or None, samples or None


def _measured(outcome: WorkerOutcome) -> bool:
    """A process whose measurement stands: it ended ok, or it failed in an untimed phase
    (accuracy, profile), after its latency was written."""
    result = outcome.result
    return outcome.status == "ok" or (result is not None and result.phase in UNTIMED_PHASES)


def _verdict(
    outcomes: list[WorkerOutcome], ok: list[WorkerOutcome], failing: WorkerOutcome | None
) -> tuple[str, str | None]:
    """The combination's status and error: the first process that did not end ok decides."""
    status, error = (failing.status, failing.error) if failing else ("ok", None)
    phase = failing.result.phase if failing is not None and failing.result is not None else None
    if phase in UNTIMED_PHASES:
        error = f"the {phase} phase failed (the latency measured before it is kept): {error}"
    if status == "unsupported":  # the engine declined this combination up front
        status = "skipped"
    if failing is None and len(ok) < len(outcomes):
        status, error = "failed", "worker reported success but recorded no iterations"
    return status, error


def _pooled(per_process: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each clock's iterations of every process, one after another in process order."""
    return {
        clock: np.concatenate([p.get(clock, np.empty(0, np.int64)) for p in per_process])
        for clock in dict.fromkeys(k for p in per_process for k in p)
    }


def _latency_stats(
    ok: list[WorkerOutcome], wall: np.ndarray | None, batch: int, iterations: int
) -> tuple[dict[str, Any] | None, str | None]:
    """The latency statistics over every process's iterations, and how their CI was made."""
    stats = LatencyStats.from_ns(wall, batch).to_dict() if wall is not None and iterations else None
    ci_method = "order statistics of the median (within one process)" if stats else None
    if stats is not None and len(ok) >= 2:
        _, stats["ci_low_ms"], stats["ci_high_ms"] = hierarchical_median_ci(
            [o.latency["wall.total"] / 1e6 for o in ok], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
        )
        ci_method = "hierarchical bootstrap over processes, then iterations"
    return stats, ci_method


def _process_summaries(ok: list[WorkerOutcome]) -> list[ProcessSummary]:
    """One summary per measured process, as the store keeps it."""
    return [
        ProcessSummary(
            process=o.result.process,
            pid=o.result.pid,
            iterations=len(o.latency["wall.total"]),
            p50_ms=float(np.median(o.latency["wall.total"])) / 1e6,
            measure_seconds=o.result.measure_seconds,
            load_seconds=o.result.load_seconds,
            stop_reason=o.result.stop_reason,
            node=o.node,
            cpu_handoff_ns=list(o.handoff_ns) if o.handoff_ns else None,
            worker_cpus=_worker_cpus(o),
        )
        for o in ok
        if o.result is not None
    ]


def _machine_readings(
    outcomes: list[WorkerOutcome],
    ok: list[WorkerOutcome],
    iterations: int,
    power_limit_w: float | None,
) -> tuple[list[str], dict[str, Any]]:
    """The combination's warnings, each kind once, and the result's fields read from the
    samplers: energy per inference, GPU utilisation and the CPUs others kept busy."""
    warnings = _merge_warnings(
        [
            (o.result.process if o.result else i, [*(o.result.warnings if o.result else [])])
            for i, o in enumerate(outcomes)
        ]
        + [(i, o.sampler_errors) for i, o in enumerate(outcomes) if o.sampler_errors]
    )
    # Every scenario's worker marks exactly its counted window as the measure phase (a load
    # scenario's generator warm-up and QPS search are in "warmup"), so one rule judges all:
    # energy over the window / the requests in it.
    windows = [(o.samples, o.result.measure_seconds if o.result else 0.0) for o in ok]
    energy = energy_window(windows, iterations, power_limit_w)
    warnings.extend(energy.warnings)
    handoff = state_warning(v for o in outcomes for v in (o.handoff_ns or ()))
    if handoff:
        warnings.append(handoff)
    gpu_util, util_readings = mean_over_measure([o.samples for o in ok], "gpu_util_pct")
    background = background_load([o.samples for o in ok], os.cpu_count() or 1)
    if background.warning:
        warnings.append(background.warning)
    return warnings, {
        "energy_j_per_inference": energy.joules_per_inference,
        "energy_method": energy.method,
        "gpu_util_pct": gpu_util,
        "gpu_util_readings": util_readings,
        "background_cpus": background.cpus,
    }


def combination_result(plugin: ModelPlugin, combo: Combination, **fields: Any) -> CombinationResult:
    """The stored result of `combo`: what identifies it, and `fields`."""
    experiment = combo.experiment
    return CombinationResult(
        combo_id=combination_id(combo),
        model=plugin.name,
        engine=combo.engine.name,
        device=combo.device,
        precision=combo.precision,
        shape_label=experiment.label,
        example_shapes=[list(s) for s in experiment.shapes],
        variant=combo.engine.variant,
        load=None if combo.load.is_default else combo.load.model_dump(),
        **fields,
    )


#: Below this, a process's CPU time misses what its other threads ran since the last scheduler
#: tick (a two-thread ONNX Runtime read 1.05 CPUs over 0.3 ms, 1.97 over 1.2 s).
MIN_CPU_WINDOW_S = 0.1


def _worker_cpus(outcome: WorkerOutcome) -> float | None:
    """CPUs one worker process kept busy while measuring: its own CPU time over the measured
    loop when that lasted MIN_CPU_WINDOW_S, else the process sampler's mean, else None."""
    result = outcome.result
    if (
        result is not None
        and result.measure_cpu_seconds is not None
        and result.measure_seconds >= MIN_CPU_WINDOW_S
    ):
        return result.measure_cpu_seconds / result.measure_seconds
    percent, _ = mean_over_measure([outcome.samples], "proc_cpu_pct")
    return percent / 100 if percent is not None else None


def _merge_warnings(per_process: list[tuple[int, list[str]]]) -> list[str]:
    """One warning per kind across a combination's processes, saying in how many it arose.

    Warnings of the same kind differ only in their figures ("3 of 100 iterations are
    outliers"); the first process's words are kept.
    """
    kinds: dict[str, tuple[str, list[int]]] = {}
    for process, warnings in per_process:
        for warning in warnings:
            first, processes = kinds.setdefault(re.sub(r"\d[\d.,]*", "#", warning), (warning, []))
            if process not in processes:
                processes.append(process)
    total = len({process for process, _ in per_process})
    if total < 2:
        return [first for first, _ in kinds.values()]
    return [
        f"{first} (in {len(processes)} of {total} processes; figures from process {processes[0]})"
        if len(processes) > 1
        else f"{first} (process {processes[0]} of {total})"
        for first, processes in kinds.values()
    ]


def _per_process(
    outcomes: list[WorkerOutcome],
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Each process's latency arrays, in process order (the store numbers them), and every
    process's sampler rows tagged with its number."""
    ordered = sorted(outcomes, key=lambda o: o.result.process if o.result else 0)
    samples = [
        {**row, "process": o.result.process if o.result else 0}
        for o in ordered
        for row in o.samples
    ]
    return [o.latency for o in ordered], samples
