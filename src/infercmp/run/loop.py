"""The commit loop of a bench: run every combination's worker processes through an executor
and store each combination as soon as its last process ends (`run_bench`); a stop signal or a
full disk leaves what was measured saved and the run marked."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infercmp.core.contract import Measurement, ProfileSpec
from infercmp.core.errors import InfercmpError
from infercmp.engines.descriptor import Converted
from infercmp.engines.registry import get_descriptor
from infercmp.run.accuracy import AccuracyJudge, random_calibration_note
from infercmp.run.aggregate import ComboProgress, combination_result, now_iso, outcome_to_result
from infercmp.run.executors.base import BenchListener, Executor, WorkUnit
from infercmp.run.executors.local import LocalExecutor
from infercmp.run.executors.ray import RayExecutor, parse_resource
from infercmp.run.finish import (
    finish,
    finish_complete,
    finish_interrupted,
    os_error_text,
    write_failed,
)
from infercmp.run.plan import BenchPlan, Combination, combination_id
from infercmp.run.prepare import Artifacts
from infercmp.run.profile import attach_profile
from infercmp.run.signals import Interrupted, stop_on_signals
from infercmp.run.startup import StartupPasses, combination_startup
from infercmp.run.worker_process import worker_spec
from infercmp.store.run_store import RunStore
from infercmp.store.schema import CombinationResult
from infercmp.workload.plugins import ModelPlugin

#: Each worker's directory inside the run (spec.json, worker.log, result.json, latency.npz);
#: kept for combinations that did not end ok, so they can be replayed by hand.
WORKERS_DIR = "workers"

#: The `--executor` choices; `make_executor` turns one into an executor.
EXECUTORS = ("local", "ray")


def run_bench(
    plugin: ModelPlugin,
    plan: BenchPlan,
    artifacts: Artifacts,
    measurement: Measurement,
    store: RunStore,
    sample_hz: float = 20.0,
    samplers: list[Any] | None = None,
    listener: BenchListener | None = None,
    repeat: int = 1,
    power_limit_w: float | None = None,
    executor: Executor | None = None,
    done: frozenset[str] = frozenset(),
    last_step: bool = True,
) -> str:
    """Run every combination in `repeat` fresh worker processes and store each result.

    The processes are interleaved round-robin (all combinations' first process, then all
    second ones, ...) so that slow drift of the machine hits every combination alike. A
    combination is stored when its last process ends (or one fails); on an interruption,
    the processes already measured are stored too.

    The `executor` (infercmp.run.executors; default: here, one process at a time) runs each
    (combination, process) unit and hands its outcome back as it finishes; combinations whose
    id is in `done` (`--resume`: already in the store) are not run again.

    Returns the run's final status: "complete" or "interrupted" (the store is finished either
    way; results already measured are on disk). A step of `--batch auto` that is not the
    `last_step` leaves a completed run "running": its status becomes final once, at the end.
    """
    listener = listener or BenchListener()
    samplers = samplers if samplers is not None else []
    executor = executor or LocalExecutor(sample_hz, samplers, measurement.timeout_s)
    combinations = [c for c in plan.combinations if combination_id(c) not in done]
    total = len(combinations) * repeat
    pending: dict[Combination, ComboProgress] = {}
    cold = StartupPasses(plugin, plan, artifacts, measurement, listener) if plan.cold else None
    try:
        with stop_on_signals():
            for combo in combinations:
                early = _without_worker(plugin, plan, combo, artifacts)
                if early is not None:
                    store.add_result(early, None, None)
                    listener.combination_finished(combo, early)
                else:
                    pending[combo] = ComboProgress(combo, now_iso())
            units = _units(plugin, pending, artifacts, measurement, store, repeat, plan.profile)
            for unit, outcome in executor.outcomes(units, listener, total):
                progress = pending.get(unit.combo)
                if progress is None:  # committed already: an earlier process of it failed
                    continue
                progress.outcomes.append(outcome)
                listener.worker_finished(unit.combo, outcome)
                if progress.done or len(progress.outcomes) == repeat:
                    # Committed before it leaves `pending`: a signal at any instant leaves
                    # it in one of the two, and an interruption commits what is pending.
                    _commit(
                        plugin, store, progress, listener, power_limit_w, artifacts,
                        cold=cold, profile=plan.profile,
                    )  # fmt: skip
                    del pending[unit.combo]
    except Interrupted as exc:
        _commit_partial(
            plugin, store, pending, listener, power_limit_w, repeat, artifacts, plan.profile
        )
        finish_interrupted(store, exc.signame)
        return "interrupted"
    except OSError as exc:
        # A full disk, a read-only or vanished directory: say so in one line, keep what is saved.
        finish(store, "failed", f"cannot write: {os_error_text(exc)}")
        raise write_failed(store, exc) from exc
    except BaseException as exc:
        finish(store, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if last_step:
        finish_complete(store)
    return "complete"


def _units(
    plugin: ModelPlugin,
    pending: dict[Combination, ComboProgress],
    artifacts: Artifacts,
    measurement: Measurement,
    store: RunStore,
    repeat: int,
    profile: ProfileSpec | None = None,
) -> Iterator[WorkUnit]:
    """Every (combination, process) unit, round-robin over the processes (all combinations'
    first process, then all second ones, ...), so slow drift of the machine hits every
    combination alike. Lazy: a combination committed early (a process failed) gets no more."""
    for process in range(repeat):
        for combo in list(pending):
            if combo in pending:
                workdir = Path(store.path) / WORKERS_DIR / _worker_dir(combo, process)
                spec = worker_spec(plugin, combo, artifacts, measurement, workdir, process, profile)
                yield WorkUnit(combo, process, spec)


def _worker_dir(combo: Combination, process: int) -> str:
    """The directory of one worker process of `combo`, under the run's WORKERS_DIR."""
    return f"{combination_id(combo)}.p{process}"


def _commit(
    plugin: ModelPlugin,
    store: RunStore,
    progress: ComboProgress,
    listener: BenchListener,
    power_limit_w: float | None,
    artifacts: Artifacts | None = None,
    short: str | None = None,
    cold: StartupPasses | None = None,
    profile: ProfileSpec | None = None,
) -> None:
    """Store the combination from its processes' outcomes, unless a better try is stored;
    with `bench --accuracy`, judged first (its worker's outputs file goes with the commit);
    with `bench --cold`, its start-up passes run first (`run.startup`); with `bench
    --profile`, its profile read and attributed (infercmp.run.profile)."""
    result, latency, samples = outcome_to_result(plugin, progress, power_limit_w)
    combo = progress.combo
    if artifacts is not None and artifacts.judge is not None:
        _judge(artifacts.judge, store, progress, result)
    if artifacts is not None and profile is not None:
        _profile(store, progress, result, artifacts)
    if artifacts is not None:
        _add_conversion_facts(result, artifacts.converted.get((combo.engine, combo.precision)))
        descriptor = get_descriptor(combo.engine.name)
        result.startup = combination_startup(progress.outcomes, combo, artifacts, descriptor, cold)
    if artifacts is not None and progress.combo.precision == "int8":
        note = random_calibration_note(artifacts.calibration)
        if note:
            result.warnings.append(note)
    if short and result.status == "ok":
        result.warnings.append(short)
    kept = _kept_measurement(store, result)
    if kept is not None:  # a resume's second try came out worse: the measurement stays
        listener.combination_finished(progress.combo, kept)
        return
    store.add_result(result, latency, samples)
    if result.status == "ok":  # measured and stored: the worker's files are copies now
        for outcome in progress.outcomes:
            if outcome.result is not None:
                workdir = _worker_dir(progress.combo, outcome.result.process)
                shutil.rmtree(Path(store.path) / WORKERS_DIR / workdir, ignore_errors=True)
    listener.combination_finished(progress.combo, result)


def _add_conversion_facts(result: CombinationResult, converted: Converted | None) -> None:
    """What the engine's conversion says of itself (int8: method, calibration samples and
    seconds, what it quantized) joins the engine info, key by key: the runtime's own facts
    under the same key (what really ran int8) are kept beside the conversion's."""
    for key, value in (converted.facts if converted is not None else {}).items():
        mine = result.engine_info.get(key)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            result.engine_info[key] = {**value, **mine}
        else:
            result.engine_info.setdefault(key, value)


def _judge(
    judge: AccuracyJudge, store: RunStore, progress: ComboProgress, result: CombinationResult
) -> None:
    """`result.accuracy` from the process that ran the accuracy phase (the first one)."""
    for outcome in progress.outcomes:
        done = outcome.result.accuracy if outcome.result is not None else None
        if outcome.result is None or done is None:
            continue
        workdir = (
            Path(store.path) / WORKERS_DIR / _worker_dir(progress.combo, outcome.result.process)
        )
        try:
            record = judge.judge(workdir / done.file, progress.combo.precision)
        except InfercmpError as exc:  # what the worker wrote cannot be read: no accuracy
            result.warnings.append(f"accuracy not judged: {exc}")
            return
        result.accuracy = {**record, "calls": done.calls, "seconds": done.seconds}
        return


def _profile(
    store: RunStore, progress: ComboProgress, result: CombinationResult, artifacts: Artifacts
) -> None:
    """`result.profile`, its events attributed through the ONNX the engine ran and the
    fp32 export (infercmp.run.profile.attach_profile)."""
    combo = progress.combo
    converted = artifacts.converted.get((combo.engine, combo.precision))
    attach_profile(
        result,
        progress.outcomes,
        lambda process: Path(store.path) / WORKERS_DIR / _worker_dir(combo, process),
        [converted.artifact if converted else None, getattr(artifacts.onnx, "path", None)],
        get_descriptor(combo.engine.name),
        combo.engine.label,
    )


def _kept_measurement(store: RunStore, result: CombinationResult) -> CombinationResult | None:
    """The stored result a new one must not replace, or None.

    A resume measures again a combination an interruption cut short of --repeat; if that try
    fails, crashes or is cut shorter still, committing it would hide the measurement the run
    already holds (issue 23, B.8 and B.13). The stored one is kept, and says why (in memory:
    the commit log is append-only, and the failed try's worker files stay for a look).
    """
    old = next((r for r in store.results if r.combo_id == result.combo_id), None)
    if old is None or old.status != "ok":
        return None
    if result.status == "ok" and len(result.processes) >= len(old.processes):
        return None
    why = result.error or f"{len(result.processes)} worker process(es)"
    old.warnings.append(
        f"measured again by a resume, which ended {result.status} ({why}); the measurement "
        f"in {len(old.processes)} worker process(es) is kept"
    )
    return old


def _commit_partial(
    plugin: ModelPlugin,
    store: RunStore,
    pending: dict[Combination, ComboProgress],
    listener: BenchListener,
    power_limit_w: float | None,
    repeat: int = 1,
    artifacts: Artifacts | None = None,
    profile: ProfileSpec | None = None,
) -> None:
    """Store the combinations that have at least one measured process when the run stops,
    saying so in those measured in fewer processes than `repeat`."""
    for progress in pending.values():
        measured = sum(o.status == "ok" for o in progress.outcomes)
        if measured:
            short = (
                f"measured in {measured} of {repeat} worker processes (--repeat): the run was "
                "stopped; 'infercmp bench --resume' measures it again in all of them"
            )
            with contextlib.suppress(OSError):
                _commit(
                    plugin, store, progress, listener, power_limit_w, artifacts, short,
                    profile=profile,
                )  # fmt: skip


def _without_worker(
    plugin: ModelPlugin, plan: BenchPlan, combo: Combination, artifacts: Artifacts
) -> CombinationResult | None:
    """The result of a combination that starts no worker (skipped, or an artifact is missing)."""
    status, error = "skipped", combo.skip_reason
    if error is None:
        error = artifacts.missing(combo, plan.descriptors[combo.engine.name])
        if error is None:
            return None
        status = "failed"
    return combination_result(
        plugin,
        combo,
        status=status,
        error=error,
        phase="artifacts" if status == "failed" else None,
        options=dict(combo.engine.options),
        started=now_iso(),
        finished=now_iso(),
    )


def make_executor(
    name: str,
    ray_address: str | None,
    accelerator_type: str | None,
    resources: list[str],
    sample_hz: float,
    timeout_s: float,
) -> RayExecutor | None:
    """The executor the `bench` flags ask for; None for the local one (bench's default).

    A Ray executor is returned unstarted (it is a context manager); `ray` is imported only
    when it starts.
    """
    if name not in EXECUTORS:
        raise InfercmpError(f"--executor '{name}': choose {' or '.join(EXECUTORS)}")
    if ray_address:
        name = "ray"
    if name == "local":
        used = [
            flag
            for flag, value in (
                ("--ray-accelerator-type", accelerator_type),
                ("--ray-resource", resources),
            )
            if value
        ]
        if used:
            raise InfercmpError(f"{' and '.join(used)} apply to --executor ray only; add it")
        return None
    return RayExecutor(
        ray_address,
        accelerator_type,
        dict(parse_resource(r) for r in resources),
        sample_hz,
        timeout_s,
    )
