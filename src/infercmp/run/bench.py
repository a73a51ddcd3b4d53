"""The bench orchestrator: plan combinations, prepare artifacts, run one worker per combination
under the sampler, and store every finished result as it lands."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from infercmp.core.contract import Load, Measurement, WorkerResult, WorkerSpec
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.engines.descriptor import DEVICES, PRECISIONS, Converted, EngineDescriptor, Machine
from infercmp.workload.config import DYNAMIC, ModelConfig
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import Experiment

BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0  # for the CI across processes: repeatable
#: Each worker's directory inside the run (spec.json, worker.log, result.json, latency.npz);
#: kept for combinations that did not end ok, so they can be replayed by hand.
WORKERS_DIR = "workers"
RESULT_FILE, LATENCY_FILE = "result.json", "latency.npz"  # what a worker leaves (worker.py)


@dataclass(frozen=True)
class EngineChoice:
    """An `--engine` value: an engine name with options, e.g. `pytorch[cuda_graph=true]`.

    `variant` is the bracket text as the user typed it (whitespace aside), so labels echo
    `channels_last=true` rather than Python's `True`; `options` holds the typed values.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name


def _option_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        if isinstance(value, float) and not np.isfinite(value):
            raise InfercmpError(f"engine option value '{text}' is not a finite number")
        return value
    return text.strip().strip("'\"")


def parse_engine(text: str) -> EngineChoice:
    """Parse `NAME` or `NAME[key=value,...]`; the name is checked here, the options by the
    engine's descriptor when the run is planned."""
    from infercmp.engines.registry import get_descriptor

    text = text.strip()
    name, bracket, rest = text.partition("[")
    name = name.strip()
    get_descriptor(name)  # unknown or unavailable: one clear error now
    if not bracket:
        return EngineChoice(name)
    if not rest.endswith("]"):
        raise InfercmpError(
            f"--engine '{text}': options go in brackets, e.g. "
            "'pytorch[channels_last=true,cuda_graph=true]'"
        )
    options: list[tuple[str, Any]] = []
    items = [p.strip() for p in rest[:-1].split(",")]
    for item in filter(None, items):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InfercmpError(f"--engine '{text}': '{item}' is not key=value")
        options.append((key.strip(), _option_value(value)))
    variant = ",".join(
        f"{k.strip()}={v.strip()}" for k, _, v in (i.partition("=") for i in items if i)
    )
    return EngineChoice(name, tuple(options), variant or None)


@dataclass(frozen=True)
class Combination:
    """One job: an experiment on one engine (with options), device and precision, under a load
    (batch, concurrency, scenario; `Load()` is one request at a time at the model's batch)."""

    experiment: Experiment
    engine: EngineChoice
    device: str
    precision: str
    skip_reason: str | None = None
    load: Load = Load()

    @property
    def label(self) -> str:
        load = f" {self.load.label}" if self.load.label else ""
        return f"{self.engine.label}/{self.device}/{self.precision} @ {self.experiment.label}{load}"

    @property
    def reference_key(self) -> tuple[str, int | None]:
        """Which reference data the worker runs on: the experiment at the load's batch."""
        return self.experiment.label, self.load.batch


@dataclass
class BenchPlan:
    model: str
    config: ModelConfig
    experiments: list[Experiment]
    combinations: list[Combination]
    descriptors: dict[str, EngineDescriptor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> list[Combination]:
        return [c for c in self.combinations if c.skip_reason is None]


def _choices(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """Check names against `allowed`, dropping repeats but keeping the user's order."""
    for value in values:
        if value not in allowed:
            raise InfercmpError(f"unknown {what} '{value}'; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def check_profile(config: ModelConfig, runtime: Sequence[tuple[int, ...]]) -> list[str]:
    """Every runtime dimension outside the config's optimisation profile, in words."""
    outside = []
    for spec, shape in zip(config.inputs, runtime):
        profile = spec.shapes.optimization
        for axis, size in enumerate(shape):
            if spec.shapes.runtime[axis] != DYNAMIC:
                continue
            lo, hi = profile.min[axis], profile.max[axis]
            if not lo <= size <= hi:
                outside.append(
                    f"input '{spec.name}' has {spec.shapes.dims_names[axis]}={size}, outside "
                    f"[{lo}, {hi}]"
                )
    return outside


def _profile_text(outside: list[str]) -> str:
    return "; ".join(outside) + " (the optimisation profile of the model config)"


def plan_bench(
    plugin: ModelPlugin,
    experiments: list[Experiment],
    engines: Sequence[str] | None,
    devices: Sequence[str] | None,
    precisions: Sequence[str] | None,
    machine: Machine | None = None,
    loads: Sequence[Load] = (Load(),),
) -> BenchPlan:
    """Validate the request and list every combination, with a reason for each one skipped.

    Everything that is the user's mistake raises here, before any work starts. What each
    engine can run is its descriptor's answer; this function knows no engine by name.
    """
    from infercmp.engines.registry import engine_entries
    from infercmp.workload.inputs import runtime_shapes

    notes: list[str] = []
    explicit_engines = bool(engines)
    if engines:
        choices = list(dict.fromkeys(parse_engine(e) for e in engines))
    else:
        choices = []
        for name, entry in engine_entries().items():
            if entry.load() is None:
                notes.append(f"engine '{name}' ({entry.package}) is unavailable: {entry.error}")
            else:
                choices.append(EngineChoice(name))
    from infercmp.engines.registry import get_descriptor

    descriptors = {c.name: get_descriptor(c.name) for c in choices}
    for choice in choices:  # a misspelt option is the user's mistake: say so before running
        descriptors[choice.name].parse_options(dict(choice.options))
    explicit_devices = bool(devices)
    devices = _choices(devices or list(DEVICES), DEVICES, "device")
    precisions = _choices(precisions or ["fp32"], PRECISIONS, "precision")
    config = plugin.config
    machine = machine or Machine.current()

    from infercmp.workload.batching import batched_runtime_shapes, check_batches

    batches = [load.batch for load in loads if load.batch is not None]
    if batches:  # outside the config's declared range: the user's mistake, said now
        check_batches(batches, config)
    combos: list[Combination] = []
    for experiment, load in itertools.product(experiments, loads):
        shapes = batched_runtime_shapes(config, runtime_shapes(plugin, experiment), load.batch)
        outside = check_profile(config, shapes)
        if outside:
            keeping = [c.name for c in choices if descriptors[c.name].keeps_profile]
            if keeping and explicit_engines:
                raise InfercmpError(
                    f"--shape {experiment.label}: {_profile_text(outside)}; {', '.join(keeping)} "
                    "runs only inside it: pick a shape inside it or widen optimization.min/max "
                    "in the config"
                )
            notes.append(
                f"--shape {experiment.label}: {_profile_text(outside)}; engines that build for "
                "the profile skip it, the others run it"
            )
        for choice, device, precision in itertools.product(choices, devices, precisions):
            descriptor = descriptors[choice.name]
            if device not in descriptor.devices and not (explicit_engines and explicit_devices):
                continue  # e.g. TensorRT on the CPU: listing it would only be noise
            reason = _skip_reason(descriptor, choice, device, precision, machine, outside)
            reason = reason or _load_refusal(descriptor, device, load)
            combos.append(Combination(experiment, choice, device, precision, reason, load))
    return BenchPlan(plugin.name, config, experiments, combos, descriptors, notes)


def _skip_reason(
    descriptor: EngineDescriptor,
    choice: EngineChoice,
    device: str,
    precision: str,
    machine: Machine,
    outside: list[str],
) -> str | None:
    """Why this combination will not run here, or None; the first reason that applies."""
    if device in descriptor.devices and device == "cuda" and not machine.cuda_devices:
        return "no CUDA device is visible (NVML found no NVIDIA GPU)"
    if device in descriptor.devices and (missing := descriptor.availability()):
        return missing
    if refused := descriptor.refusal(device, precision, machine):
        return refused
    if descriptor.keeps_profile and outside:
        return _profile_text(outside)
    return _inapplicable_options(descriptor, choice, device)


def _load_refusal(descriptor: EngineDescriptor, device: str, load: Load) -> str | None:
    """Why the engine cannot keep `load.concurrency` requests in flight on `device`, or None."""
    if load.concurrency == 1 and load.scenario == "single-stream":
        return None
    how = descriptor.concurrency_on(device)
    if how is None:
        return f"{descriptor.name} declares no way to keep several requests in flight on {device}"
    return None


def _inapplicable_options(
    descriptor: EngineDescriptor, choice: EngineChoice, device: str
) -> str | None:
    wrong = [k for k, _ in choice.options if not descriptor.options.applies_to(k, device)]
    if not wrong:
        return None
    where = ", ".join(
        f"{k} applies to {' and '.join(descriptor.options.option_devices(k))} only" for k in wrong
    )
    return f"option {where}"


@dataclass
class Artifacts:
    """What the workers need, prepared through the cache before any worker starts.

    Whatever could not be made is recorded with the reason, and only the combinations that
    need it fail: a model that raises at one shape leaves the other shapes to run.
    """

    onnx: Any | None = None  # infercmp.artifacts.onnx_export.OnnxArtifact
    onnx_error: str | None = None
    # (engine choice, precision) -> the engine's own form, or why it could not be made
    converted: dict[tuple[EngineChoice, str], Converted] = field(default_factory=dict)
    convert_errors: dict[tuple[EngineChoice, str], str] = field(default_factory=dict)
    # Combination.reference_key (experiment label, batch) -> npz, or why it could not be made
    references: dict[tuple[str, int | None], Path] = field(default_factory=dict)
    reference_errors: dict[tuple[str, int | None], str] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)  # of the errors above, for --debug
    # The batch sizes conversions were made for (ConvertContext.batches): a node that builds a
    # `builds_on_device` artifact itself builds it for the same ones.
    batches: tuple[int, ...] = ()

    def missing(self, combo: Combination, descriptor: EngineDescriptor) -> str | None:
        """Why this combination cannot start its worker, or None when all it needs is here."""
        if combo.reference_key in self.reference_errors:
            return self.reference_errors[combo.reference_key]
        if descriptor.artifact == "onnx" and self.onnx_error is not None:
            return self.onnx_error
        failed = self.convert_errors.get((combo.engine, combo.precision))
        if failed is not None:
            return f"{combo.engine.name} could not make its artifact: {failed}"
        return None

    def errors(self) -> list[str]:
        """Every failure, once each, in the order a user should read them."""
        found = [*self.reference_errors.values(), self.onnx_error]
        found += [f"{c.name} {p}: {e}" for (c, p), e in self.convert_errors.items()]
        return list(dict.fromkeys(e for e in found if e))

    def anything_to_run(self, plan: BenchPlan) -> bool:
        return any(self.missing(c, plan.descriptors[c.engine.name]) is None for c in plan.runnable)


def _model_error(plugin: ModelPlugin, experiment: Experiment, step: str, exc: Exception) -> str:
    """One line naming the model, the shape, the step and the exception's own message."""
    text = " ".join(str(exc).split()) or "(no message)"
    if not isinstance(exc, InfercmpError):
        text = f"{type(exc).__name__}: {text}"
    return f"model '{plugin.name}' at shape {experiment.label}: {step} failed: {text}"


def bounded(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()` in a helper thread, given up after `seconds` with one clear error.

    For the parent's own calls into the user's plugin (loading the module, running it for
    the reference outputs, exporting it): a plugin that hangs there must not hang bench. The
    abandoned thread is a daemon; it ends with the process. Signals still reach the main
    thread, which only waits.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller as it is
            box["error"] = exc

    thread = threading.Thread(target=target, name="infercmp-plugin-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise InfercmpError(
            f"did not finish within {seconds:g} s (--timeout); the plugin's code may hang"
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


def prepare_artifacts(
    plugin: ModelPlugin,
    plan: BenchPlan,
    cache: Any,
    progress: Callable[[str], None],
    exporter: str = "auto",
    timeout_s: float = Measurement.model_fields["timeout_s"].default,
    on_nodes: bool = False,
) -> Artifacts:
    """Export, convert and compute references for the runnable combinations, through the cache.

    An error raised by the user's model (its loader, preprocess or forward) or by an engine's
    conversion is recorded for the combinations that need that artifact; the others still run.
    With `on_nodes` (a distributed executor) GPU-specific artifacts (`builds_on_device`) are
    left to the node that runs them.
    """
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.artifacts.reference import ensure_batched_reference
    from infercmp.engines.descriptor import ConvertContext
    from infercmp.workload.batching import plan_batches

    artifacts = Artifacts()
    runnable = plan.runnable
    for key, combo in {c.reference_key: c for c in runnable}.items():
        experiment, batch = combo.experiment, combo.load.batch
        at_batch = f" at batch {batch}" if batch is not None else ""
        progress(f"reference outputs for {experiment.label}{at_batch}")
        step = "computing the PyTorch reference outputs" + at_batch
        try:
            artifacts.references[key] = bounded(
                timeout_s,
                lambda e=experiment, b=batch: ensure_batched_reference(plugin, cache, e, b),
            )
        except Exception as exc:  # the user's code may raise anything
            artifacts.tracebacks.append("".join(traceback.format_exception(exc)))
            artifacts.reference_errors[key] = _model_error(plugin, experiment, step, exc)
    runnable = [c for c in runnable if c.reference_key in artifacts.references]
    if any(plan.descriptors[c.engine.name].artifact == "onnx" for c in runnable):
        progress("ONNX export")
        try:
            artifacts.onnx = bounded(
                timeout_s,
                lambda: export_onnx(plugin, cache, exporter=exporter, progress=progress),
            )
        except InfercmpError as exc:
            artifacts.onnx_error = f"ONNX export of model '{plugin.name}' failed: {exc}"
    artifacts.batches = plan_batches(plugin, runnable)
    context = ConvertContext(plugin, cache, artifacts.onnx, progress, artifacts.batches)
    for choice, precision in dict.fromkeys((c.engine, c.precision) for c in runnable):
        descriptor = plan.descriptors[choice.name]
        if descriptor.artifact == "onnx" and artifacts.onnx is None:
            continue
        if on_nodes and descriptor.builds_on_device:
            continue
        options = descriptor.parse_options(dict(choice.options))
        try:
            converted = descriptor.convert(context, precision, options)
        except InfercmpError as exc:
            artifacts.convert_errors[choice, precision] = str(exc)
            continue
        if converted is not None:
            artifacts.converted[choice, precision] = converted
    return artifacts


@dataclass
class WorkerOutcome:
    """What one worker process left behind, read back through the typed contract."""

    status: str
    error: str | None
    result: WorkerResult | None
    latency: dict[str, np.ndarray]
    samples: list[dict[str, Any]]
    log_tail: str
    sampler_errors: list[str] = field(default_factory=list)
    node: dict[str, Any] | None = None  # where it ran (infercmp.store.run_store.NodeInfo's keys)
    # A CPU worker's cache-line round trip between its CPUs in ns, just before and just after
    # it ran (infercmp.platform.placement); None where not measured.
    handoff_ns: tuple[float | None, float | None] | None = None

    @property
    def ends_combination(self) -> bool:
        """A process that did not end ok: its combination is stored from the processes that
        ran, and no further one starts (under every executor)."""
        return self.status != "ok"


class Interrupted(BaseException):
    """The parent was asked to stop (SIGINT or SIGTERM).

    A BaseException, like KeyboardInterrupt, so the many `except Exception` in exporters and
    runtimes (and our own) cannot swallow it or report it as their own failure.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


#: The signals that stop a run cleanly: finished results are saved and the run is marked.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)


def stop_on_signals() -> contextlib.AbstractContextManager[None]:
    """Turn SIGINT, SIGTERM, SIGHUP and SIGQUIT into one `Interrupted`, so finished results are
    kept and saved. Only the first signal raises: a second one (an impatient Ctrl-C) arriving
    while the first is being handled must not cut the saving short."""
    return _stop_on_signals()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    raised: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        if not raised:
            raised.append(signal.Signals(signum).name)
            raise Interrupted(raised[0])

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_worker(
    spec: WorkerSpec,
    timeout_s: float,
    sample_hz: float,
    samplers: list[Any],
    on_phase: Callable[[str], None] = lambda phase: None,
) -> WorkerOutcome:
    """Run one worker subprocess under the sampler; never raises for the worker's failures.

    The worker's directory (`spec.result_dir`) receives spec.json, worker.log, result.json
    and latency.npz; `python -m infercmp.worker DIR/spec.json` replays it in the foreground.
    """
    workdir = spec.result_dir
    workdir.mkdir(parents=True, exist_ok=True)
    # What an earlier attempt of this worker left (a resumed run) must not pass for this one's.
    for leftover in (RESULT_FILE, LATENCY_FILE):
        with contextlib.suppress(FileNotFoundError):
            (workdir / leftover).unlink()
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    log_path = workdir / "worker.log"
    from infercmp.platform.placement import measure_handoff_ns

    # The host's placement of the CPUs, which multi-threaded CPU engines follow; measured
    # before the worker starts and after it ends, never while it measures.
    probing = spec.device == "cpu"
    handoff_before = measure_handoff_ns() if probing else None
    with open(log_path, "wb") as log:
        # A new session keeps the terminal's Ctrl-C away from the worker: the parent decides.
        # The lifeline ends the worker's process group if this process dies (lifeline.py).
        proc = subprocess.Popen(
            [sys.executable, "-m", "infercmp.platform.lifeline", "infercmp.worker", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    status, error = None, None
    try:
        with _sampling(proc.pid, samplers, sample_hz) as session:
            reader = threading.Thread(
                target=_read_phases, args=(proc, session, on_phase), daemon=True
            )
            reader.start()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                status, error = "timeout", f"worker exceeded the {timeout_s:g} s timeout"
            _kill_group(proc)  # the worker, and anything the model started, on every path
            reader.join(timeout=5)
        samples = session.rows
        sampler_errors = session.errors
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if proc.stdout:
            proc.stdout.close()
    result, invalid = _read_result(workdir / RESULT_FILE)
    latency = _read_latency(workdir / LATENCY_FILE)
    log_tail = _tail(log_path)
    if status is None:
        status = result.status if result else None
        error = result.error if result else None
        if status is None:
            code = proc.returncode
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                status = "crashed"
                error = f"worker killed by {name}" + (
                    " (possibly the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
                )
            else:
                status = "crashed"
                last = log_tail.strip().splitlines()[-1:] or ["no output"]
                error = f"worker exited with code {code} without a result: {invalid or last[0]}"
    handoff = (handoff_before, measure_handoff_ns()) if probing else None
    return WorkerOutcome(
        status, error, result, latency, samples, log_tail, sampler_errors, handoff_ns=handoff
    )


class _NoSampling:
    """Stands in for a SamplingSession when sampling is off (--sample-hz 0)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def set_phase(self, phase: str) -> None: ...


@contextlib.contextmanager
def _sampling(pid: int, samplers: list[Any], hz: float) -> Iterator[Any]:
    from infercmp.sampler import SamplingSession

    if hz <= 0 or not samplers:
        yield _NoSampling()
        return
    with SamplingSession(pid, samplers, hz=hz) as session:
        yield session


def _read_phases(proc: subprocess.Popen, session: Any, on_phase: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue  # a library printing to stdout must not break the protocol
        if isinstance(event, dict) and event.get("event") == "phase":
            session.set_phase(str(event.get("phase")))
            on_phase(str(event.get("phase")))


def _read_result(path: Path) -> tuple[WorkerResult | None, str | None]:
    """The worker's result.json, or None and why (missing, or not following the contract)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    try:
        return WorkerResult.model_validate_json(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return (
            None,
            f"its result.json does not follow the worker contract ({where}: {first['msg']})",
        )


def _read_latency(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k], dtype=np.int64) for k in data.files}
    except (OSError, ValueError):
        return {}


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class BenchListener:
    """Callbacks the CLI uses to show progress; the defaults do nothing."""

    def combination_started(self, combo: Combination, index: int, total: int) -> None: ...

    def phase(self, combo: Combination, phase: str) -> None: ...

    def worker_finished(self, combo: Combination, outcome: WorkerOutcome) -> None:
        """A worker process ended; its result is not committed yet (tests pause here)."""

    def combination_finished(self, combo: Combination, result: Any) -> None: ...


def worker_spec(
    plugin: ModelPlugin,
    combo: Combination,
    artifacts: Artifacts,
    measurement: Measurement,
    result_dir: Path,
    process: int = 0,
) -> WorkerSpec:
    """The spec one worker runs: the engine's artifact, its options and the measurement.

    The artifact is the engine's own converted form when it made one, else the ONNX export
    for engines that start from it, else nothing (the engine builds from the plugin's module).
    The user's options win over the defaults a conversion set (e.g. the plan's backend).
    """
    from infercmp.engines.registry import get_descriptor

    converted = artifacts.converted.get((combo.engine, combo.precision), Converted())
    takes_onnx = get_descriptor(combo.engine.name).artifact == "onnx"
    onnx = artifacts.onnx.path if takes_onnx and artifacts.onnx is not None else None
    return WorkerSpec(
        model=plugin.name,
        engine=combo.engine.name,
        device=combo.device,
        precision=combo.precision,
        artifact=converted.artifact or onnx,
        reference=artifacts.references[combo.reference_key],
        input_names=plugin.config.input_names,
        output_names=plugin.config.output_names,
        options={**dict(converted.options), **dict(combo.engine.options)},
        measurement=measurement,
        process=process,
        result_dir=result_dir,
        load=combo.load,
    )


def _combo_result(plugin: ModelPlugin, combo: Combination, **fields: Any) -> Any:
    from infercmp.store.schema import CombinationResult

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
) -> tuple[Any, Any, Any]:
    """Turn what a combination's worker processes left behind into one stored result.

    Returns (CombinationResult, latency arrays with a `process` array, sampler rows). Every
    process's iterations are kept, tagged with its number; statistics are computed here,
    once, over all of them. A failed process's phase, error and traceback are kept.
    """
    from infercmp.core.stats import LatencyStats, hierarchical_median_ci
    from infercmp.platform.placement import state_warning
    from infercmp.sampler import background_load, energy_window, mean_over_measure, peak
    from infercmp.store.schema import ProcessSummary
    from infercmp.workload.scenarios import items_per_request, merge_load_results

    outcomes = progress.outcomes
    ok = [o for o in outcomes if o.status == "ok" and len(o.latency.get("wall.total", ())) > 0]
    failing = next((o for o in outcomes if o.status != "ok"), None)
    status, error = (failing.status, failing.error) if failing else ("ok", None)
    if status == "unsupported":  # the engine declined this combination up front
        status = "skipped"
    if failing is None and len(ok) < len(outcomes):
        status, error = "failed", "worker reported success but recorded no iterations"
    failed = failing.result if failing else None
    # What describes the combination: a measured process if any, else the failed one.
    source = ok[0].result if ok else failed

    per_process, samples = _per_process(ok)
    latency = {
        clock: np.concatenate([p.get(clock, np.empty(0, np.int64)) for p in per_process])
        for clock in dict.fromkeys(k for p in per_process for k in p)
    }
    wall = latency.get("wall.total")
    iterations = int(len(wall)) if wall is not None else 0
    runtime_shapes = source.runtime_shapes if source else {}
    batch = items_per_request(runtime_shapes)
    stats = LatencyStats.from_ns(wall, batch).to_dict() if iterations else None
    ci_method = "order statistics of the median (within one process)" if stats else None
    if stats is not None and len(ok) >= 2:
        _, stats["ci_low_ms"], stats["ci_high_ms"] = hierarchical_median_ci(
            [o.latency["wall.total"] / 1e6 for o in ok], BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
        )
        ci_method = "hierarchical bootstrap over processes, then iterations"
    device = latency.get("device.total")
    processes = [
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
    parity = (failed or source).parity if (failed or source) else None
    result = _combo_result(
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
        peak_rss_bytes=peak(samples, "proc_rss_bytes"),
        peak_vram_bytes=peak(samples, "proc_gpu_mem_bytes"),
        energy_j_per_inference=energy.joules_per_inference,
        energy_method=energy.method,
        gpu_util_pct=gpu_util,
        gpu_util_readings=util_readings,
        background_cpus=background.cpus,
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


#: Below this, a process's CPU time misses what its other threads ran since the last scheduler
#: tick (a two-thread ONNX Runtime read 1.05 CPUs over 0.3 ms, 1.97 over 1.2 s).
MIN_CPU_WINDOW_S = 0.1


def _worker_cpus(outcome: WorkerOutcome) -> float | None:
    """CPUs one worker process kept busy while measuring: its own CPU time over the measured
    loop when that lasted MIN_CPU_WINDOW_S, else the process sampler's mean, else None."""
    from infercmp.sampler import mean_over_measure

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


def run_bench(
    plugin: ModelPlugin,
    plan: BenchPlan,
    artifacts: Artifacts,
    measurement: Measurement,
    store: Any,
    sample_hz: float = 20.0,
    samplers: list[Any] | None = None,
    listener: BenchListener | None = None,
    repeat: int = 1,
    power_limit_w: float | None = None,
    executor: Any | None = None,
    done: frozenset[str] = frozenset(),
    last_step: bool = True,
) -> str:
    """Run every combination in `repeat` fresh worker processes and store each result.

    The processes are interleaved round-robin (all combinations' first process, then all
    second ones, ...) so that slow drift of the machine hits every combination alike. A
    combination is stored when its last process ends (or one fails); on an interruption,
    the processes already measured are stored too.

    The `executor` (infercmp.run.executors.local; default: here, one process at a time) runs each
    (combination, process) unit and hands its outcome back as it finishes; combinations whose
    id is in `done` (`--resume`: already in the store) are not run again.

    Returns the run's final status: "complete" or "interrupted" (the store is finished either
    way; results already measured are on disk). A step of `--batch auto` that is not the
    `last_step` leaves a completed run "running": its status becomes final once, at the end.
    """
    from infercmp.run.executors.local import LocalExecutor

    listener = listener or BenchListener()
    samplers = samplers if samplers is not None else []
    executor = executor or LocalExecutor(sample_hz, samplers, measurement.timeout_s)
    combinations = [c for c in plan.combinations if combination_id(c) not in done]
    total = len(combinations) * repeat
    pending: dict[Combination, ComboProgress] = {}
    try:
        with stop_on_signals():
            for combo in combinations:
                early = _without_worker(plugin, plan, combo, artifacts)
                if early is not None:
                    store.add_result(early, None, None)
                    listener.combination_finished(combo, early)
                else:
                    pending[combo] = ComboProgress(combo, now_iso())
            units = _units(plugin, pending, artifacts, measurement, store, repeat)
            for unit, outcome in executor.outcomes(units, listener, total):
                progress = pending.get(unit.combo)
                if progress is None:  # committed already: an earlier process of it failed
                    continue
                progress.outcomes.append(outcome)
                listener.worker_finished(unit.combo, outcome)
                if progress.done or len(progress.outcomes) == repeat:
                    # Committed before it leaves `pending`: a signal at any instant leaves
                    # it in one of the two, and an interruption commits what is pending.
                    _commit(plugin, store, progress, listener, power_limit_w)
                    del pending[unit.combo]
    except Interrupted as exc:
        _commit_partial(plugin, store, pending, listener, power_limit_w, repeat)
        finish_interrupted(store, exc.signame)
        return "interrupted"
    except OSError as exc:
        # A full disk, a read-only or vanished directory: say so in one line, keep what is saved.
        _finish(store, "failed", f"cannot write: {_os_error(exc)}")
        raise _write_failed(store, exc) from exc
    except BaseException as exc:
        _finish(store, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if last_step:
        finish_complete(store)
    return "complete"


def finish_complete(store: Any, detail: str | None = None) -> None:
    """Mark a run complete; a disk that refuses it is one line (the results are saved)."""
    try:
        store.finish("complete", detail)
    except OSError as exc:
        raise _write_failed(store, exc) from exc


def _units(
    plugin: ModelPlugin,
    pending: dict[Combination, ComboProgress],
    artifacts: Artifacts,
    measurement: Measurement,
    store: Any,
    repeat: int,
) -> Iterator[Any]:
    """Every (combination, process) unit, round-robin over the processes (all combinations'
    first process, then all second ones, ...), so slow drift of the machine hits every
    combination alike. Lazy: a combination committed early (a process failed) gets no more."""
    from infercmp.run.executors.local import WorkUnit

    for process in range(repeat):
        for combo in list(pending):
            if combo in pending:
                workdir = Path(store.path) / WORKERS_DIR / _worker_dir(combo, process)
                spec = worker_spec(plugin, combo, artifacts, measurement, workdir, process)
                yield WorkUnit(combo, process, spec)


def combination_id(combo: Combination) -> str:
    """The combination's id in the run store (`infercmp.store.run_store.combo_id`)."""
    from infercmp.store.ids import combo_id

    return combo_id(
        combo.engine.name,
        combo.device,
        combo.precision,
        combo.experiment.label,
        combo.engine.variant,
        combo.load.label,
    )


def _worker_dir(combo: Combination, process: int) -> str:
    return f"{combination_id(combo)}.p{process}"


def _commit(
    plugin: ModelPlugin,
    store: Any,
    progress: ComboProgress,
    listener: Any,
    power_limit_w: float | None,
    short: str | None = None,
) -> None:
    result, latency, samples = outcome_to_result(plugin, progress, power_limit_w)
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


def _kept_measurement(store: Any, result: Any) -> Any | None:
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
    store: Any,
    pending: dict[Combination, ComboProgress],
    listener: Any,
    power_limit_w: float | None,
    repeat: int = 1,
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
                _commit(plugin, store, progress, listener, power_limit_w, short)


def _without_worker(
    plugin: ModelPlugin, plan: BenchPlan, combo: Combination, artifacts: Artifacts
) -> Any | None:
    """The result of a combination that starts no worker (skipped, or an artifact is missing)."""
    status, error = "skipped", combo.skip_reason
    if error is None:
        error = artifacts.missing(combo, plan.descriptors[combo.engine.name])
        if error is None:
            return None
        status = "failed"
    return _combo_result(
        plugin,
        combo,
        status=status,
        error=error,
        phase="artifacts" if status == "failed" else None,
        options=dict(combo.engine.options),
        started=now_iso(),
        finished=now_iso(),
    )


def finish_interrupted(store: Any, signame: str) -> None:
    """Mark a run stopped by a signal; what finished before it stays."""
    _finish(store, "interrupted", f"stopped by {signame}; finished combinations are kept")


def finish_failed(store: Any, exc: BaseException) -> None:
    """Mark a run that stopped on an error outside any combination (say, preparing a later
    --batch auto step): it must not read as running, then as killed."""
    _finish(store, "failed", f"{type(exc).__name__}: {exc}")


def _finish(store: Any, status: str, detail: str) -> None:
    """Mark the run's end; on a disk that refuses writes run.json keeps status "running"."""
    with contextlib.suppress(OSError):
        store.finish(status, detail)


def _os_error(exc: OSError) -> str:
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {text}" if exc.filename else text


def _write_failed(store: Any, exc: OSError) -> RunFailed:
    saved = len(store.results)
    return RunFailed(
        f"cannot write the run's files ({_os_error(exc)}); {saved} finished combination(s) "
        f"are saved in {store.path}"
    )
