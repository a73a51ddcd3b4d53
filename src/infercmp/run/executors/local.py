"""Where bench's units of work run: here, one worker at a time (the default), or elsewhere.

A unit is one worker process of one combination (`--repeat` makes several per combination).
An executor takes the units lazily and yields each one's outcome as it finishes; bench commits
it to the run store at once (`infercmp.run.bench.run_bench`). The local executor runs each unit
in this process (sampler threads here, the worker a subprocess); `infercmp.run.executors.ray` runs
the same parent-side logic as a Ray task on the node that holds the unit's resources.

`--resume RUN` (either executor) reopens a run store and names the combinations it already
holds, so only the missing ones run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from infercmp.core.errors import InfercmpError

if TYPE_CHECKING:
    from infercmp.core.contract import WorkerSpec
    from infercmp.run.bench import BenchListener, Combination, WorkerOutcome
    from infercmp.store.run_store import RunStore

EXECUTORS = ("local", "ray")


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


class LocalExecutor:
    """Every unit in turn on this machine: the sampler here, the worker a subprocess."""

    def __init__(self, sample_hz: float, samplers: list[Any], timeout_s: float) -> None:
        self.sample_hz = sample_hz
        self.samplers = samplers
        self.timeout_s = timeout_s

    def outcomes(
        self, units: Iterable[WorkUnit], listener: BenchListener, total: int
    ) -> Iterator[tuple[WorkUnit, WorkerOutcome]]:
        from infercmp.platform.environment import node_facts
        from infercmp.run.bench import run_worker

        for index, unit in enumerate(units):
            listener.combination_started(unit.combo, index, total)
            outcome = run_worker(
                unit.spec,
                self.timeout_s,
                self.sample_hz,
                self.samplers,
                on_phase=lambda phase, combo=unit.combo: listener.phase(combo, phase),
            )
            outcome.node = node_facts(cuda=unit.combo.device == "cuda")
            yield unit, outcome


def open_for_resume(
    run_dir: Path, model: str, settings: dict[str, Any]
) -> tuple[RunStore, frozenset[str]]:
    """The run store to continue, holding its writer lock, and the ids of the combinations
    it holds whole.

    Bad input (another model, other measurement settings, a run still being written) is one
    clear error: resuming must not mix results measured under different settings. A
    combination with fewer worker processes than `--repeat` (an interruption cut it short) is
    not whole: it is measured again in all of them, and the short one kept until then.
    """
    from infercmp.store.run_store import RunStore

    store = RunStore.continue_run(run_dir)
    try:
        _check_resumable(store, run_dir, model, settings)
    except BaseException:
        store.close()
        raise
    repeat = settings.get("repeat") or 1
    whole = (r for r in store.results if r.status != "ok" or len(r.processes) >= repeat)
    return store, frozenset(r.combo_id for r in whole)


def _check_resumable(store: RunStore, run_dir: Path, model: str, settings: dict[str, Any]) -> None:
    if store.model != model:
        raise InfercmpError(
            f"--resume {run_dir}: that run measured model '{store.model}', not '{model}'; "
            "resume it with the command that started it"
        )
    before = store.meta.get("settings") or {}
    for key in ("experiments", "loads", "measurement", "repeat", "sample_hz"):
        # "loads" is stored only when a load flag was given: its absence is a setting too.
        if (key in before or key == "loads") and before.get(key) != settings.get(key):
            raise InfercmpError(
                f"--resume {run_dir}: its {key} was {_setting(before.get(key))}, this command "
                f"asks for {_setting(settings.get(key))}; run 'infercmp bench --resume "
                f"{run_dir}' alone to continue it with the flags that started it"
            )


def _setting(value: Any) -> str:
    """A stored setting in one line, as JSON reads (not Python's repr of a dict)."""
    import json

    return json.dumps(value, sort_keys=True, default=str) if value is not None else "the default"


def make_executor(
    name: str,
    ray_address: str | None,
    accelerator_type: str | None,
    resources: list[str],
    sample_hz: float,
    timeout_s: float,
) -> Any | None:
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
    from infercmp.run.executors.ray import RayExecutor, parse_resource

    return RayExecutor(
        ray_address,
        accelerator_type,
        dict(parse_resource(r) for r in resources),
        sample_hz,
        timeout_s,
    )
