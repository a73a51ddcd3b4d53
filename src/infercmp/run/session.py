"""One bench session: from checked flags to a stored run and the failure that sets the exit code.

`infercmp bench` parses its flags into a `BenchRequest` and hands it to `run_session` with a
`BenchView` (what to show while it runs: notes, the preparation status, the progress of each
step); everything between is here: the executor, the plan, the samplers, the artifacts, the
run directory (new, or `--resume RUN`), `--batch auto`'s steps and how the run ends. `tune`
shares the pieces that are not bench's own (the preparation guard, the samplers, opening a
run under signals, ending it). Nothing here prints.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
from infercmp.core.contract import Load, Measurement, ProfileSpec
from infercmp.core.errors import InfercmpError, NothingRan, RunFailed
from infercmp.platform.host import power_limit_w
from infercmp.run.accuracy import AccuracyRequest, metric_failure
from infercmp.run.batch_search import search_batches
from infercmp.run.environment import collect_environment
from infercmp.run.finish import (
    finish,
    finish_complete,
    finish_failed,
    finish_interrupted,
    os_error_text,
    write_failed,
)
from infercmp.run.loop import make_executor, run_bench
from infercmp.run.plan import BenchPlan, plan_bench
from infercmp.run.prepare import Artifacts, prepare_artifacts
from infercmp.run.resume import open_for_resume
from infercmp.run.signals import Interrupted, stop_on_signals
from infercmp.run.startup import ask_cold
from infercmp.sampler import default_samplers
from infercmp.store.run_store import RunStore
from infercmp.store.writer_lock import check_not_written
from infercmp.workload.batching import batch_range, batched_runtime_shapes
from infercmp.workload.inputs import runtime_shapes
from infercmp.workload.plugins import ModelPlugin, get_plugin
from infercmp.workload.scenarios import (
    OVERLOADED,
    check_server_window,
    loads_from_flags,
    shown_status,
)
from infercmp.workload.shapes import Experiment, default_experiment, parse_shape

T = TypeVar("T")

#: Bench's flags that decide what a run measures: stored in run.json, reused by `--resume RUN`
#: and refused there when they say otherwise.
RUN_FLAGS = (
    "model", "shape", "engine", "device", "precision", "repeat", "iters", "duration", "warmup",
    "ci_target", "min_iters", "min_seconds", "max_seconds", "timeout", "device_resident",
    "sample_hz", "exporter", "batch", "latency_limit_ms", "concurrency", "scenario", "qps",
    "slo_ms", "accuracy", "cold",
    "profile", "profile_iterations",
)  # fmt: skip
#: Where the workers run and find their artifacts: reused by `--resume RUN`, may be changed.
PLACE_FLAGS = ("cache_dir", "executor", "ray_address", "ray_accelerator_type", "ray_resource")


@dataclass(frozen=True)
class BenchRequest:
    """What one `infercmp bench` asks for, its flags checked and typed."""

    model: str
    shapes: Sequence[str]
    engines: Sequence[str]
    devices: Sequence[str]
    precisions: Sequence[str]
    measurement: Measurement
    repeat: int
    sample_hz: float
    out: Path
    cache_dir: str | None
    exporter: str
    executor: str
    ray_address: str | None
    ray_accelerator_type: str | None
    ray_resources: Sequence[str]
    resume: Path | None
    batch: str | None
    latency_limit_ms: float | None
    concurrency: str | None
    scenario: str | None
    qps: str | None
    slo_ms: float | None
    #: run.json's "flags": every flag of RUN_FLAGS and PLACE_FLAGS as given (for `--resume`)
    flags: dict[str, Any]
    accuracy: AccuracyRequest | None = None  # --accuracy [N]
    profile: ProfileSpec | None = None  # --profile, --profile-iterations N
    cold: bool = False  # --cold: cold and warm start-up passes (infercmp.run.startup)


class BenchView(Protocol):
    """What a session shows while it runs; the command line prints it."""

    def note(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...

    def traceback(self, text: str) -> None:
        """A failed preparation's traceback (shown with --debug only)."""

    def preparing(self) -> contextlib.AbstractContextManager[Callable[[str], None]]:
        """Around the first preparation of artifacts; yields where its progress goes."""

    def run_directory(self, path: Path) -> None: ...

    def run_step(
        self,
        run_bench: Callable[..., str],
        plugin: ModelPlugin,
        plan: BenchPlan,
        artifacts: Artifacts,
        measurement: Measurement,
        store: RunStore,
        sample_hz: float,
        samplers: list[Any],
        repeat: int,
        power_limit: float | None,
        executor: Any | None,
        done: frozenset[str],
        last_step: bool,
    ) -> str:
        """Call `run_bench` with these arguments (and a listener of its own): one step."""

    def batch_curve(self, line: str) -> None:
        """--batch auto: one configuration's batches and the best of them."""


@dataclass(frozen=True)
class BenchOutcome:
    """A session's end: the run directory, its status and what it holds."""

    run_dir: Path
    status: str  # "complete" or "interrupted"
    results: list[Any]
    auto_batch: bool

    def failure(self) -> InfercmpError | None:
        """The error that ends the command (exit 1, or 3 when nothing ran), None when none."""
        if self.status == "interrupted":
            finished = sum(r.status == "ok" for r in self.results)
            return RunFailed(
                f"run interrupted; {finished} finished combination(s) are saved in {self.run_dir}"
            )
        metric = metric_failure(self.results)  # the plugin's metric raised: exit 2
        if metric is not None:
            return metric
        nothing = nothing_ran(self.results)
        if nothing is not None:
            return nothing
        # --batch auto: running out of memory is one of its stopping rules, not a failure.
        fine = ("ok", "skipped", "oom") if self.auto_batch else ("ok", "skipped")
        failure = verdict(self.results, self.run_dir, fine)
        return RunFailed(failure) if failure else None


# ------------------------------------------------------------------ shared with tune


@contextlib.contextmanager
def preparation_guard() -> Iterator[None]:
    """Planning and artifact preparation: a signal or MemoryError becomes one clear line."""
    try:
        with stop_on_signals():
            yield
    except Interrupted as exc:
        raise RunFailed(
            f"stopped by {exc.signame} while preparing; no combination ran and no run "
            "directory was made"
        ) from None
    except MemoryError:
        raise InfercmpError(
            "not enough memory for the example inputs of this --shape; use a smaller shape"
        ) from None


def choose_samplers(
    sample_hz: float, gpu: bool, off_note: str, on_nodes: bool = False
) -> tuple[list[Any], list[str]]:
    """The samplers this process runs, and a note for each one left out (`off_note` when
    --sample-hz is 0). A distributed run samples on its nodes, not here."""
    if sample_hz <= 0:
        return [], [off_note]
    return ([], []) if on_nodes else default_samplers(gpu=gpu)


def opened(open_store: Callable[[], T]) -> T:
    """`open_store()` under `stop_on_signals()`: a signal now is one line."""
    try:
        return open_store()
    except Interrupted as exc:
        raise RunFailed(f"stopped by {exc.signame} while creating the run directory") from None


def mark_failed(store: RunStore, detail: str) -> None:
    """Mark a run failed, as far as the disk still takes writes."""
    finish(store, "failed", detail)


def write_failure(store: RunStore, exc: OSError) -> tuple[str, RunFailed]:
    """A write that failed: the run's detail, and the one-line error for the user."""
    return f"cannot write: {os_error_text(exc)}", write_failed(store, exc)


# ------------------------------------------------------------------ bench


def run_session(
    request: BenchRequest, view: BenchView, resources: contextlib.ExitStack
) -> BenchOutcome:
    """Plan, prepare, measure and store one bench; `resources` holds the executor and the run's
    writer lock until the caller has shown the outcome."""
    measurement = request.measurement
    runner = make_executor(
        request.executor, request.ray_address, request.ray_accelerator_type,
        list(request.ray_resources), request.sample_hz, measurement.timeout_s,
    )  # fmt: skip
    # Until the run starts, Ctrl-C or SIGTERM unwinds cleanly (the cache's staging dirs go)
    # and MemoryError from a huge --shape is one line, not a traceback.
    with preparation_guard():
        plugin, experiments, loads, auto_batch = _experiments_and_loads(request)
        machine = resources.enter_context(runner).machine() if runner else None  # its GPUs
        plan = plan_bench(
            plugin, experiments, request.engines, request.devices, request.precisions,
            machine, loads=loads,
        )  # fmt: skip
        plan.cold = ask_cold(request.cold, runner is not None, view.note)
        plan.profile = request.profile
        for note in [*dict.fromkeys(plan.notes), *batch_notes(plugin, experiments, loads)]:
            view.note(note)  # each once: loads share them
        samplers, left_out = choose_samplers(
            request.sample_hz,
            gpu=any(c.device == "cuda" for c in plan.runnable),
            off_note="sampler off (--sample-hz 0)",
            on_nodes=runner is not None,
        )
        for message in left_out:
            view.note(message)
        prepare = _Preparer(
            plugin, ArtifactCache(resolve_cache_dir(request.cache_dir)), request, runner
        )
        with view.preparing() as progress:
            artifacts = prepare(plan, progress)
    _check_artifacts(plan, artifacts, view)
    environment = collect_environment()
    meta = _run_meta(request, plugin, experiments, loads, artifacts, environment)
    step = _Step(plugin, request, samplers, power_limit_w(environment), runner, view)
    # From the moment the run directory exists to its last commit, a signal marks the run
    # interrupted (keeping what finished) instead of leaving it "running" for ever.
    with stop_on_signals():
        store, step.done = opened(lambda: _open_store(request, plugin.name, meta, view))
        resources.callback(store.close)  # the writer lock, held through every --batch auto step
        status = _measure(store, step, plan, artifacts, prepare, auto_batch, request, view)
    results = RunStore.open(store.path).results
    return BenchOutcome(store.path, status, results, auto_batch)


def _experiments_and_loads(
    request: BenchRequest,
) -> tuple[ModelPlugin, list[Experiment], list[Load], bool]:
    """The model, its experiments (one per --shape) and loads, and whether --batch is auto."""
    plugin = get_plugin(request.model)
    experiments = [parse_shape(s, plugin.config) for s in request.shapes] or [
        default_experiment(plugin.config)
    ]
    experiments = list(dict.fromkeys(experiments))
    loads, auto_batch = loads_from_flags(
        plugin.config, request.batch, request.concurrency, request.scenario, request.qps,
        request.slo_ms,
    )  # fmt: skip
    check_server_window(loads, request.measurement)
    limit = request.latency_limit_ms
    if limit is not None and not (auto_batch and limit > 0):
        raise InfercmpError(
            "--latency-limit-ms goes with --batch auto and must be a positive number"
        )
    if auto_batch:
        loads = [load.model_copy(update={"batch": 1}) for load in loads]
    return plugin, experiments, loads, auto_batch


class _Preparer:
    """A plan's artifacts, the way the executor wants them: GPU-specific ones (TensorRT
    plans) are left to the nodes that run them. Every step of --batch auto goes here."""

    def __init__(
        self, plugin: ModelPlugin, cache: ArtifactCache, request: BenchRequest, runner: Any
    ) -> None:
        self.plugin, self.cache, self.request, self.runner = plugin, cache, request, runner

    def __call__(self, plan: BenchPlan, progress: Callable[[str], None]) -> Artifacts:
        prepared = prepare_artifacts(
            self.plugin, plan, self.cache, progress, self.request.exporter,
            self.request.measurement.timeout_s, on_nodes=self.runner is not None,
            accuracy=self.request.accuracy,
        )  # fmt: skip
        if self.runner:
            self.runner.prepared(plan, prepared)  # one clear error if no node can run it
        return prepared


def _check_artifacts(plan: BenchPlan, artifacts: Artifacts, view: BenchView) -> None:
    for text in artifacts.tracebacks:
        view.traceback(text)
    if plan.runnable and not artifacts.anything_to_run(plan):
        # The model itself failed (its loader, preprocess or forward): nothing can be measured.
        raise InfercmpError(artifacts.errors()[0])
    for error in artifacts.errors():
        view.warning(error)


def _run_meta(
    request: BenchRequest,
    plugin: ModelPlugin,
    experiments: list[Experiment],
    loads: list[Load],
    artifacts: Artifacts,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """run.json's content at the run's start."""
    return {
        "argv": sys.argv,
        "model_config": plugin.config.model_dump(),
        "settings": {
            "experiments": [e.label for e in experiments],
            # Only when a load flag was given: a plain run's run.json is as it always was.
            **(
                {"loads": [x.model_dump() for x in loads]}
                if len(loads) > 1 or not loads[0].is_default
                else {}
            ),
            "measurement": request.measurement.model_dump(mode="json"),
            "repeat": request.repeat,
            "sample_hz": request.sample_hz,
            "exporter": getattr(artifacts.onnx, "exporter", None),
            "onnx": str(artifacts.onnx.path) if artifacts.onnx else None,
        },
        "environment": environment,
        "flags": request.flags,
    }


class _Step:
    """One call of run_bench through the view (one plan, or one --batch auto step)."""

    def __init__(
        self,
        plugin: ModelPlugin,
        request: BenchRequest,
        samplers: list[Any],
        power_limit_w: float | None,
        runner: Any,
        view: BenchView,
    ) -> None:
        self.plugin, self.request, self.samplers = plugin, request, samplers
        self.power_limit_w, self.runner, self.view = power_limit_w, runner, view
        self.done: frozenset[str] = frozenset()

    def __call__(
        self,
        store: RunStore,
        plan: BenchPlan,
        artifacts: Artifacts,
        last_step: bool = True,
    ) -> str:
        r = self.request
        return self.view.run_step(
            run_bench, self.plugin, plan, artifacts, r.measurement, store, r.sample_hz,
            self.samplers, r.repeat, self.power_limit_w, self.runner, self.done, last_step,
        )  # fmt: skip


def _measure(
    store: RunStore,
    step: _Step,
    plan: BenchPlan,
    artifacts: Artifacts,
    prepare: _Preparer,
    auto_batch: bool,
    request: BenchRequest,
    view: BenchView,
) -> str:
    """Run the plan (every --batch auto step) into `store`; the run's final status."""
    try:
        view.run_directory(store.path)
        if not auto_batch:
            return step(store, plan, artifacts)
        status = _search_batches(step, store, plan, artifacts, prepare, request, view)
        if status == "complete":  # once, after the last step
            finish_complete(store)
        return status
    except Interrupted as exc:
        finish_interrupted(store, exc.signame)
        return "interrupted"
    except BaseException as exc:
        if auto_batch:  # each step leaves the run running for the next: end it here
            finish_failed(store, exc)
        raise


def _search_batches(
    step: _Step,
    store: RunStore,
    plan: BenchPlan,
    artifacts: Artifacts,
    prepare: _Preparer,
    request: BenchRequest,
    view: BenchView,
) -> str:
    """--batch auto: run the plan at batch 1, 2, 4, ... (infercmp.run.batch_search) and show
    each configuration's best batch. `artifacts` are batch 1's; `prepare` makes a later
    batch's as the first's were made (under Ray: plans built on the nodes)."""

    def one(step_plan: BenchPlan) -> tuple[str, list[Any]]:
        if not step_plan.runnable or step_plan.runnable[0].load.batch == 1:
            step_artifacts = artifacts
        else:
            step_artifacts = prepare(step_plan, lambda _msg: None)
        status = step(store, step_plan, step_artifacts, last_step=False)  # finished by _measure
        return status, RunStore.open(store.path).results

    batch_max = batch_range(step.plugin.config)[1]
    curves, status = search_batches(plan, batch_max, one, request.latency_limit_ms)
    for curve in curves:
        view.batch_curve(curve.line())
    return status


def batch_notes(plugin: ModelPlugin, experiments: list[Experiment], loads: list[Load]) -> list[str]:
    """Where --batch replaces the batch of a --shape, what a row labelled `2x64 b1` measures."""
    notes = []
    batches = dict.fromkeys(load.batch for load in loads if load.batch is not None)
    for experiment in experiments:
        shapes = runtime_shapes(plugin, experiment)
        measured = {
            batch: "_".join("x".join(map(str, s)) for s in batched)
            for batch in batches
            if (batched := batched_runtime_shapes(plugin.config, shapes, batch)) != list(shapes)
        }
        if measured:
            rows = ", ".join(f"'{experiment.label} b{b}' measures {m}" for b, m in measured.items())
            notes.append(f"--batch sets the batch axis of --shape {experiment.label}: {rows}")
    return notes


def _open_store(
    request: BenchRequest, model: str, meta: dict[str, Any], view: BenchView
) -> tuple[RunStore, frozenset[str]]:
    """A new run store, or with `--resume` the given one and the combinations it holds whole;
    either way this process holds the run's writer lock until `store.close()`."""
    if request.resume is None:
        return RunStore.create(request.out, model, meta), frozenset()
    store, done = open_for_resume(request.resume, model, meta["settings"])
    try:
        short = [r for r in store.results if r.combo_id not in done]
        if short:
            view.note(
                f"{len(short)} combination(s) hold fewer worker processes than --repeat "
                f"{meta['settings']['repeat']} (the run was stopped); they are measured again "
                "in all of them"
            )
        store.reopen()
    except BaseException:
        store.close()
        raise
    return store, done


# ------------------------------------------------------------------ --resume


def resumed_flags(resume: Path, params: dict[str, Any], given: set[str]) -> dict[str, Any] | None:
    """`--resume RUN`: bench's arguments (`params`) with the run's stored flags filled in for
    those not `given` on the command line; a given flag that contradicts the stored one is one
    line. None: the run predates stored flags, so the command line must repeat them."""
    meta = RunStore.open(resume).meta
    if "tune" in (meta.get("settings") or {}):
        raise InfercmpError(
            f"--resume {resume}: that run was made by 'infercmp tune', whose budget is wall "
            "time; it cannot be continued: start a new tune"
        )
    check_not_written(resume)  # before preparing anything for it
    stored = meta.get("flags")
    if not isinstance(stored, dict):
        if "model" not in given:
            raise InfercmpError(
                f"--resume {resume}: this run does not store its flags (an older infercmp "
                "wrote it); repeat the command that started it, with --resume"
            )
        return None
    for name in RUN_FLAGS:
        if name in given and name in stored and plain(params[name]) != stored[name]:
            raise InfercmpError(
                f"--resume {resume}: the run was started with {_flag(name, stored[name])}, "
                f"this command gives {_flag(name, params[name])}; run 'infercmp bench "
                f"--resume {resume}' alone to continue it as it started"
            )
    reused = {n: stored[n] for n in (*RUN_FLAGS, *PLACE_FLAGS) if n in stored and n not in given}
    return {**params, **reused}


def plain(value: Any) -> Any:
    """A flag's value as run.json stores it (JSON has lists, not tuples)."""
    return list(value) if isinstance(value, tuple) else value


def _flag(name: str, value: Any) -> str:
    """A flag's value as typed on a command line: `--engine pytorch --engine onnxruntime`."""
    if name == "model":
        return f"model {value}"
    option = "--" + name.replace("_", "-")
    if value is None or value == []:
        return f"no {option}"
    if isinstance(value, bool):
        return option if value else f"no {option}"
    values = value if isinstance(value, list) else [value]
    return " ".join(f"{option} {shlex.quote(str(v))}" for v in values)


# ------------------------------------------------------------------ the exit status


def failed_parity(result: Any) -> bool:
    """Whether a result's outputs differ from PyTorch beyond tolerance."""
    return bool(result.parity) and not result.parity.get("ok", True)


def nothing_ran(results: Sequence[Any]) -> NothingRan | None:
    """A run in which no combination could run here (every one skipped) measured nothing."""
    if any(r.status != "skipped" for r in results):
        return None
    reasons = list(dict.fromkeys(r.error for r in results if r.error))
    why = f" ({reasons[0]}{'; ...' if len(reasons) > 1 else ''})" if reasons else ""
    return NothingRan(
        f"nothing ran: every one of the {len(results)} combination(s) was skipped{why}; "
        "see the notes above"
    )


def verdict(results: Sequence[Any], run_dir: Path, fine: tuple[str, ...]) -> str | None:
    """The last line of a run that must exit 1, counting what went wrong; None when nothing
    did. A combination whose outputs failed parity, or that did not hold its load, counts as
    surely as one that did not finish: its speed is not a result."""
    total = len(results)
    not_ok = [r for r in results if r.status not in fine]
    parts = []
    if not_ok:
        kinds = ", ".join(
            f"{sum(r.status == k for r in not_ok)} {k}"
            for k in dict.fromkeys(r.status for r in not_ok)
        )
        parts.append(f"{len(not_ok)} of {total} combination(s) did not finish ({kinds})")
    wrong = [r for r in results if r.status == "ok" and failed_parity(r)]
    if wrong:
        parts.append(
            f"{len(wrong)} of {total} combination(s) failed parity (outputs differ from "
            "PyTorch beyond tolerance)"
        )
    overloaded = [r for r in results if r.status == "ok" and shown_status(r) == OVERLOADED]
    if overloaded:
        parts.append(
            f"{len(overloaded)} of {total} combination(s) did not hold their load ({OVERLOADED})"
        )
    if not parts:
        return None
    return "; ".join(parts) + f"; see the notes above and {run_dir}"
