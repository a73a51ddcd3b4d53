"""The bench orchestrator: plan combinations, prepare artifacts, run one worker per combination
under the sampler, and store every finished result as it lands."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from infercmp.config import DYNAMIC, ModelConfig
from infercmp.engines import DEVICES, ENGINE_MODULES, PRECISIONS
from infercmp.errors import InfercmpError, RunFailed
from infercmp.plugins import ModelPlugin
from infercmp.shapes import Experiment
from infercmp.timing import CI_MIN_SAMPLES

#: Engines that take their artifact from the ONNX export or the TensorRT build.
ONNX_ENGINES = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Measurement:
    """How long to warm up and measure each combination."""

    warmup_iters: int | None = None
    warmup_seconds: float | None = 1.0
    iters: int | None = None
    duration_s: float | None = None
    ci_target: float = 0.01
    min_iters: int = 100
    max_seconds: float = 20.0
    timeout_s: float = 600.0
    device_resident: bool = False

    def validate(self) -> None:
        for name in ("warmup_iters", "iters", "min_iters"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InfercmpError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value}"
                )
        for name in ("warmup_seconds", "duration_s", "max_seconds", "timeout_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and np.isfinite(value)):
                flag = {"duration_s": "duration", "timeout_s": "timeout"}.get(name, name)
                raise InfercmpError(
                    f"--{flag.replace('_', '-')} must be a positive number of seconds, got {value}"
                )
        if self.iters is not None and self.duration_s is not None:
            raise InfercmpError("give either --iters or --duration, not both")
        if not 0 < self.ci_target < 1:
            raise InfercmpError(f"--ci-target must be between 0 and 1, got {self.ci_target}")
        if self.min_iters < CI_MIN_SAMPLES:
            # Fewer samples give the median no confidence interval; the worker refuses them.
            raise InfercmpError(
                f"--min-iters must be at least {CI_MIN_SAMPLES}, got {self.min_iters}"
            )


@dataclass(frozen=True)
class EngineChoice:
    """An `--engine` value: an engine name with options, e.g. `pytorch[cuda_graph=true]`."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def variant(self) -> str | None:
        if not self.options:
            return None
        return ",".join(
            f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in self.options
        )

    @property
    def label(self) -> str:
        return f"{self.name}[{self.variant}]" if self.options else self.name


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
    """Parse `NAME` or `NAME[key=value,...]`; names and keys are checked, values typed."""
    text = text.strip()
    name, _, rest = text.partition("[")
    name = name.strip()
    if name not in ENGINE_MODULES:
        raise InfercmpError(f"unknown engine '{name}'; choose from {', '.join(ENGINE_MODULES)}")
    options: list[tuple[str, Any]] = []
    if rest:
        if not rest.endswith("]"):
            raise InfercmpError(
                f"--engine '{text}': options go in brackets, e.g. "
                "'pytorch[channels_last=true,cuda_graph=true]'"
            )
        for item in filter(None, (p.strip() for p in rest[:-1].split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip().isidentifier():
                raise InfercmpError(f"--engine '{text}': '{item}' is not key=value")
            options.append((key.strip(), _option_value(value)))
    return EngineChoice(name, tuple(options))


@dataclass(frozen=True)
class Combination:
    """One worker's job: an experiment on one engine (with options), device and precision."""

    experiment: Experiment
    engine: EngineChoice
    device: str
    precision: str
    skip_reason: str | None = None

    @property
    def label(self) -> str:
        return f"{self.engine.label}/{self.device}/{self.precision} @ {self.experiment.label}"


@dataclass
class BenchPlan:
    model: str
    config: ModelConfig
    experiments: list[Experiment]
    combinations: list[Combination]
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


def check_profile(config: ModelConfig, runtime: Sequence[tuple[int, ...]]) -> str | None:
    """Why these runtime shapes fall outside the TensorRT optimisation profile, or None."""
    for spec, shape in zip(config.inputs, runtime):
        profile = spec.shapes.optimization
        for axis, size in enumerate(shape):
            if spec.shapes.runtime[axis] != DYNAMIC:
                continue
            lo, hi = profile.min[axis], profile.max[axis]
            if not lo <= size <= hi:
                return (
                    f"input '{spec.name}' has {spec.shapes.dims_names[axis]}={size}, outside "
                    f"the TensorRT optimisation profile [{lo}, {hi}] of the model config"
                )
    return None


def plan_bench(
    plugin: ModelPlugin,
    experiments: list[Experiment],
    engines: Sequence[str] | None,
    devices: Sequence[str] | None,
    precisions: Sequence[str] | None,
) -> BenchPlan:
    """Validate the request and list every combination, with a reason for each one skipped.

    Everything that is the user's mistake raises here, before any work starts.
    """
    from infercmp import devices as gpu
    from infercmp.export import runtime_shapes

    explicit_engines = bool(engines)
    choices = list(dict.fromkeys(parse_engine(e) for e in (engines or list(ENGINE_MODULES))))
    names = {c.name for c in choices}
    devices = _choices(devices or list(DEVICES), DEVICES, "device")
    precisions = _choices(precisions or ["fp32"], PRECISIONS, "precision")
    config = plugin.config
    notes: list[str] = []

    cuda_count = gpu.cuda_device_count()
    no_cuda = None if cuda_count else "no CUDA device is visible (NVML found no NVIDIA GPU)"
    trt_missing = _tensorrt_unavailable() if "tensorrt" in names else None

    combos: list[Combination] = []
    for experiment in experiments:
        runtime = runtime_shapes(plugin, experiment)
        outside = check_profile(config, runtime)
        if outside and explicit_engines and "tensorrt" in names:
            raise InfercmpError(
                f"--shape {experiment.label}: {outside}; pick a shape inside it "
                "or widen optimization.min/max in the config"
            )
        for choice, device, precision in itertools.product(choices, devices, precisions):
            engine = choice.name
            reason = None
            if engine == "tensorrt" and device == "cpu":
                if not explicit_engines or devices == ["cpu"]:
                    continue  # TensorRT has no CPU runtime; listing it would only be noise
                reason = "TensorRT runs on NVIDIA GPUs only"
            elif device == "cuda" and no_cuda:
                reason = no_cuda
            elif engine == "tensorrt" and trt_missing:
                reason = trt_missing
            elif engine == "tensorrt" and outside:
                reason = outside
            elif engine == "onnxruntime" and precision == "bf16":
                reason = (
                    "ONNX Runtime's CPU and CUDA providers lack bf16 kernels for most ops; "
                    "bf16 is measured through PyTorch and TensorRT"
                )
            elif device == "cpu" and precision == "fp16" and engine == "pytorch":
                reason = "PyTorch fp16 on CPU is not a deployment target (use bf16 or fp32)"
            combos.append(Combination(experiment, choice, device, precision, reason))
    return BenchPlan(plugin.name, config, experiments, combos, notes)


def _tensorrt_unavailable() -> str | None:
    try:
        from infercmp.trt import load_trt_module

        load_trt_module(None)
    except InfercmpError as exc:
        return str(exc)
    except Exception as exc:  # a broken TensorRT install must not take the run down
        return f"TensorRT could not be loaded: {type(exc).__name__}: {exc}"
    return None


@dataclass
class Artifacts:
    """What the workers need, prepared through the cache before any worker starts."""

    onnx: Any | None = None  # infercmp.export.OnnxArtifact
    converted: dict[str, Path] = field(default_factory=dict)  # precision -> ONNX for ORT
    plans: dict[str, Any] = field(default_factory=dict)  # precision -> PlanArtifact
    plan_errors: dict[str, str] = field(default_factory=dict)  # precision -> why it failed
    references: dict[str, Path] = field(default_factory=dict)  # experiment label -> npz


def prepare_artifacts(
    plugin: ModelPlugin,
    plan: BenchPlan,
    cache: Any,
    progress: Callable[[str], None],
    exporter: str = "auto",
) -> Artifacts:
    """Export, build and compute references for the runnable combinations, through the cache."""
    from infercmp.export import ensure_reference, export_onnx

    artifacts = Artifacts()
    runnable = plan.runnable
    for experiment in plan.experiments:
        if any(c.experiment == experiment for c in runnable):
            progress(f"reference outputs for {experiment.label}")
            artifacts.references[experiment.label] = ensure_reference(plugin, cache, experiment)
    if any(c.engine.name in ONNX_ENGINES for c in runnable):
        progress("ONNX export")
        artifacts.onnx = export_onnx(plugin, cache, exporter=exporter, progress=progress)
    for precision in sorted(
        {c.precision for c in runnable if c.engine.name == "onnxruntime" and c.precision != "fp32"}
    ):
        from infercmp.build import ensure_converted_onnx

        progress(f"ONNX conversion to {precision}")
        artifacts.converted[precision] = ensure_converted_onnx(cache, artifacts.onnx, precision)
    for precision in sorted({c.precision for c in runnable if c.engine.name == "tensorrt"}):
        from infercmp.build import build_engine

        progress(f"TensorRT build ({precision})")
        try:
            artifacts.plans[precision] = build_engine(
                plugin, cache, artifacts.onnx, precision=precision, progress=progress
            )
        except InfercmpError as exc:
            artifacts.plan_errors[precision] = str(exc)
    return artifacts


@dataclass
class WorkerOutcome:
    status: str
    error: str | None
    result: dict[str, Any]
    latency: dict[str, np.ndarray]
    samples: list[dict[str, Any]]
    log_tail: str
    sampler_errors: list[str] = field(default_factory=list)


class Interrupted(BaseException):
    """The parent was asked to stop (SIGINT or SIGTERM).

    A BaseException, like KeyboardInterrupt, so the many `except Exception` in exporters and
    runtimes (and our own) cannot swallow it or report it as their own failure.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` so finished results are kept and saved."""

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
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
    spec: dict[str, Any],
    workdir: Path,
    timeout_s: float,
    sample_hz: float,
    samplers: list[Any],
    on_phase: Callable[[str], None] = lambda phase: None,
) -> WorkerOutcome:
    """Run one worker subprocess under the sampler; never raises for the worker's failures."""
    from infercmp.worker import PARENT_PID_ENV

    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "result_dir": str(workdir)}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log_path = workdir / "worker.log"
    with open(log_path, "wb") as log:
        # A new session keeps the terminal's Ctrl-C away from the worker: the parent decides.
        proc = subprocess.Popen(
            [sys.executable, "-m", "infercmp.worker", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # The worker asks the kernel to kill it if this process dies (worker.py).
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
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
                _kill_group(proc)
                status, error = "timeout", f"worker exceeded the {timeout_s:g} s timeout"
            reader.join(timeout=5)
        samples = session.rows
        sampler_errors = session.errors
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if proc.stdout:
            proc.stdout.close()
    result = _read_json(workdir / "result.json")
    latency = _read_latency(workdir / "latency.npz")
    log_tail = _tail(log_path)
    if status is None:
        status = result.get("status") if result else None
        error = result.get("error") if result else None
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
                error = f"worker exited with code {code} without a result: {last[0]}"
    return WorkerOutcome(status, error, result or {}, latency, samples, log_tail, sampler_errors)


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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

    def combination_finished(self, combo: Combination, result: Any) -> None: ...


def worker_spec(
    plugin: ModelPlugin,
    combo: Combination,
    artifacts: Artifacts,
    measurement: Measurement,
) -> dict[str, Any]:
    """The JSON spec one worker runs (see docs/architecture.md)."""
    engine = combo.engine.name
    artifact: Path | None = None
    options = dict(combo.engine.options)
    if engine == "onnxruntime":
        artifact = artifacts.onnx.path
        if combo.precision in artifacts.converted:
            options.setdefault("fp16_model", str(artifacts.converted[combo.precision]))
    elif engine == "tensorrt":
        plan = artifacts.plans[combo.precision]
        artifact = plan.path
        # Run the plan with the module that built it, not whichever one the worker finds first.
        options.setdefault("backend", plan.backend)
    return {
        "model": plugin.name,
        "engine": engine,
        "device": combo.device,
        "precision": combo.precision,
        "artifact": str(artifact) if artifact else None,
        "reference": str(artifacts.references[combo.experiment.label]),
        "input_names": plugin.config.input_names,
        "output_names": plugin.config.output_names,
        "options": options,
        "warmup_iters": measurement.warmup_iters,
        "warmup_seconds": measurement.warmup_seconds,
        "iters": measurement.iters,
        "duration_s": measurement.duration_s,
        "ci_target": measurement.ci_target,
        "min_iters": measurement.min_iters,
        "max_seconds": measurement.max_seconds,
        "device_resident": measurement.device_resident,
    }


def _combo_result(plugin: ModelPlugin, combo: Combination, **fields: Any) -> Any:
    from infercmp.results import CombinationResult, combo_id

    experiment = combo.experiment
    return CombinationResult(
        combo_id=combo_id(
            combo.engine.name, combo.device, combo.precision, experiment.label, combo.engine.variant
        ),
        model=plugin.name,
        engine=combo.engine.name,
        device=combo.device,
        precision=combo.precision,
        shape_label=experiment.label,
        example_shapes=[list(s) for s in experiment.shapes],
        variant=combo.engine.variant,
        **fields,
    )


def outcome_to_result(
    plugin: ModelPlugin, combo: Combination, outcome: WorkerOutcome, started: str
) -> Any:
    """Turn what a worker left behind into one stored `CombinationResult`."""
    from infercmp.sampler import energy_joules, peak
    from infercmp.stats import LatencyStats

    result = outcome.result
    wall = outcome.latency.get("wall.total")
    device = outcome.latency.get("device.total")
    batch = _batch_size(result.get("runtime_shapes"))
    iterations = int(len(wall)) if wall is not None else 0
    energy = energy_joules(outcome.samples, phase="measure")
    status = outcome.status
    error = outcome.error
    if status == "unsupported":  # the engine declined this combination up front
        status = "skipped"
    if status == "ok" and iterations == 0:
        status, error = "failed", "worker reported success but recorded no iterations"
    return _combo_result(
        plugin,
        combo,
        runtime_shapes=result.get("runtime_shapes") or {},
        options={**dict(combo.engine.options), **(result.get("options") or {})},
        status=status,
        error=error,
        iterations=iterations,
        latency=LatencyStats.from_ns(wall, batch).to_dict() if iterations else None,
        device_latency=(
            LatencyStats.from_ns(device, batch).to_dict()
            if device is not None and len(device)
            else None
        ),
        peak_rss_bytes=peak(outcome.samples, "proc_rss_bytes"),
        peak_vram_bytes=peak(outcome.samples, "proc_gpu_mem_bytes"),
        energy_j_per_inference=(energy / iterations if energy is not None and iterations else None),
        load_seconds=result.get("load_seconds"),
        engine_info=result.get("engine_info") or {},
        parity=result.get("parity"),
        # A sampler that broke mid-run leaves gaps in the charts: say so beside the numbers.
        warnings=[*(result.get("warnings") or []), *outcome.sampler_errors],
        started=started,
        finished=now_iso(),
    )


def _batch_size(runtime_shapes: dict[str, list[int]] | None) -> int:
    """Items per inference: the leading dimension of the first input (1 when unknown)."""
    if runtime_shapes:
        first = next(iter(runtime_shapes.values()))
        if first:
            return int(first[0])
    return 1


def run_bench(
    plugin: ModelPlugin,
    plan: BenchPlan,
    artifacts: Artifacts,
    measurement: Measurement,
    store: Any,
    sample_hz: float = 20.0,
    samplers: list[Any] | None = None,
    listener: BenchListener | None = None,
) -> str:
    """Run every combination in its own worker and store each result as soon as it lands.

    Returns the run's final status: "complete" or "interrupted" (the store is finished either
    way; results already measured are on disk).
    """
    listener = listener or BenchListener()
    samplers = samplers if samplers is not None else []
    total = len(plan.combinations)
    try:
        with stop_on_signals(), tempfile.TemporaryDirectory(prefix="infercmp-") as tmp:
            for index, combo in enumerate(plan.combinations):
                listener.combination_started(combo, index, total)
                result, latency, samples = _run_one(
                    plugin,
                    combo,
                    artifacts,
                    measurement,
                    Path(tmp) / f"w{index}",
                    sample_hz,
                    samplers,
                    listener,
                )
                store.add_result(result, latency, samples)
                listener.combination_finished(combo, result)
    except Interrupted as exc:
        _finish(store, "interrupted", f"stopped by {exc.signame}; finished combinations are kept")
        return "interrupted"
    except OSError as exc:
        # A full disk, a read-only or vanished directory: say so in one line, keep what is saved.
        _finish(store, "failed", f"cannot write: {_os_error(exc)}")
        raise _write_failed(store, exc) from exc
    except BaseException as exc:
        _finish(store, "failed", f"{type(exc).__name__}: {exc}")
        raise
    try:
        store.finish("complete")
    except OSError as exc:
        raise _write_failed(store, exc) from exc
    return "complete"


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


def _run_one(
    plugin: ModelPlugin,
    combo: Combination,
    artifacts: Artifacts,
    measurement: Measurement,
    workdir: Path,
    sample_hz: float,
    samplers: list[Any],
    listener: BenchListener,
) -> tuple[Any, dict[str, np.ndarray] | None, list[dict[str, Any]] | None]:
    started = now_iso()
    options = dict(combo.engine.options)
    if combo.skip_reason is not None:
        return (
            _combo_result(
                plugin,
                combo,
                status="skipped",
                error=combo.skip_reason,
                options=options,
                started=started,
                finished=now_iso(),
            ),
            None,
            None,
        )
    build_error = (
        artifacts.plan_errors.get(combo.precision) if combo.engine.name == "tensorrt" else None
    )
    if build_error is not None:
        return (
            _combo_result(
                plugin,
                combo,
                status="failed",
                error=f"TensorRT build failed: {build_error}",
                options=options,
                started=started,
                finished=now_iso(),
            ),
            None,
            None,
        )
    outcome = run_worker(
        worker_spec(plugin, combo, artifacts, measurement),
        workdir,
        measurement.timeout_s,
        sample_hz,
        samplers,
        on_phase=lambda phase: listener.phase(combo, phase),
    )
    result = outcome_to_result(plugin, combo, outcome, started)
    return result, outcome.latency or None, outcome.samples or None
