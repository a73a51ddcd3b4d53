"""The worker process: one engine x device x precision x shape, timed, checked and recorded.

Run as `python -m infercmp.worker SPEC.json` (a `WorkerSpec`). It prints one JSON phase event
per line on stdout and leaves `result.json` (a `WorkerResult`) and, once it has measured,
`latency.npz` in the spec's `result_dir`. It imports only its own engine's runtime.

Exit codes: 0 ok, 1 failed, 2 the spec itself is invalid (nothing written), 3 out of memory,
4 unsupported here (the run lists that combination as skipped).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np
from pydantic import ValidationError

from infercmp.core.contract import (
    LoadResult,
    Measurement,
    Phase,
    ProfileSpec,
    StopReason,
    WarmupInfo,
    WorkerResult,
    WorkerSpec,
    items_per_request,
)
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.core.files import write_atomic
from infercmp.core.parity import compare_outputs, default_rtol
from infercmp.core.stats import outlier_mask, relative_ci_half_width
from infercmp.engines import EngineSpec
from infercmp.engines.base import UnsupportedCombination
from infercmp.engines.registry import engine_class, get_descriptor
from infercmp.platform import gpus
from infercmp.worker import timing
from infercmp.worker.accuracy import accuracy_phase
from infercmp.worker.load_run import run_load
from infercmp.worker.loadgen.log import SlotFailed
from infercmp.worker.profile import profile_phase
from infercmp.worker.startup import StartupClock

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_OOM, EXIT_UNSUPPORTED = 0, 1, 2, 3, 4


# -- noise -------------------------------------------------------------------------------------


def _warmup_text(measurement: Measurement) -> str:
    iterations, seconds = measurement.warmup()
    parts = [f"{iterations} iterations"] if iterations else []
    parts += [f"{seconds:g} s"] if seconds else []
    return " and at least ".join(parts) or "none"


def noise_warnings(wall_ns: np.ndarray, spec: Measurement, device: str) -> list[str]:
    """Warnings about the measurement itself, in the words a user can act on (a CPU run gets
    no advice about a GPU)."""
    warnings: list[str] = []
    n = len(wall_ns)
    if n < 2:
        return warnings
    values = wall_ns.astype(np.float64)
    median = float(np.median(values))
    mean = float(values.mean())
    cv = float(values.std(ddof=1)) / mean if mean > 0 else 0.0
    if cv > spec.cv_warn:
        warnings.append(
            f"noisy measurement: coefficient of variation {cv:.0%} is above {spec.cv_warn:.0%}; "
            f"close other programs, pin the {'CPU/GPU' if device == 'cuda' else 'CPU'} clocks, "
            "or measure longer"
        )
    if n >= 20:
        head = max(3, n // 20)
        head_median = float(np.median(values[:head]))
        if median > 0 and head_median > spec.slow_start_ratio * median:
            warnings.append(
                f"the first {head} iterations are {head_median / median:.1f}x slower than the "
                f"median: the warm-up ({_warmup_text(spec)}) may be too short"
            )
    outliers = int(outlier_mask(values).sum())
    if outliers > 0.02 * n:
        warnings.append(
            f"{outliers} of {n} iterations are outliers (beyond 3 IQR); they are kept and flagged"
        )
    return warnings


# -- the run -----------------------------------------------------------------------------------


class _PhaseEvents:
    """Writes each phase change as a JSON line (the parent tags its sampler rows with it) and
    keeps the current phase, which a failure is recorded under."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.current: Phase = "spec"

    def __call__(self, phase: Phase) -> None:
        self.current = phase
        self._write(phase)

    def done(self) -> None:
        self._write("done")

    def _write(self, phase: str) -> None:
        self.stream.write(json.dumps({"event": "phase", "phase": phase, "time": time.time()}))
        self.stream.write("\n")
        self.stream.flush()


def load_reference(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inputs `input_0..` and outputs `output_0..` of a reference npz, in order."""
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        inputs = [data[f"input_{i}"] for i in range(len(keys)) if f"input_{i}" in keys]
        outputs = [data[f"output_{i}"] for i in range(len(keys)) if f"output_{i}" in keys]
    if not inputs:
        raise InfercmpError(f"reference {path} has no arrays named input_0, input_1, ...")
    return inputs, outputs


_OOM_MARKERS = (
    "out of memory",
    "failed to allocate memory",
    "cudaerrormemoryallocation",
    # PyTorch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: ..." (ENOMEM)
    "can't allocate memory",
    "cannot allocate memory",
)


def _is_oom(exc: BaseException) -> bool:
    # numpy raises a MemoryError subclass (_ArrayMemoryError), so match by type, not by name.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OOM_MARKERS)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, InfercmpError) else text


def write_result(result: WorkerResult, result_dir: Path) -> None:
    data = result.model_dump_json(indent=2).encode()
    write_atomic(result_dir / "result.json", data)


def write_latency(samples: dict[str, np.ndarray], result_dir: Path) -> None:
    arrays: dict[str, Any] = {k: v.astype(np.int64) for k, v in samples.items()}
    write_atomic(result_dir / "latency.npz", lambda f: np.savez(f, **arrays))


class _Held:
    """What `run_spec` releases whatever happens: the engine, the other slots' engines of a
    load, and the CUDA events ring."""

    def __init__(self) -> None:
        # An Engine; a load also drives EngineBase's slot_engine, bind_thread and hot_path.
        self.engine: Any = None
        self.slot_engines: list[Any] = []
        self.device_events: timing.CudaEvents | None = None
        self.startup: StartupClock | None = None  # one request at a time: its start-up moments


def run_spec(spec: WorkerSpec, events: TextIO) -> WorkerResult:
    """Load, warm up, measure and check one combination; always returns a result to write.

    With `spec.accuracy`, the samples then go through the same engine (`worker.accuracy`); a
    failure there is recorded in phase "accuracy", after latency.npz is written. With
    `spec.profile`, the engine's profiler runs last (`worker.profile`), in phase "profile".
    """
    phase_event = _PhaseEvents(events)
    result = WorkerResult(
        status="ok",
        model=spec.model,
        engine=spec.engine,
        device=spec.device,
        precision=spec.precision,
        process=spec.process,
        device_resident=spec.measurement.device_resident,
        mode=spec.measurement.mode,
        started=time.time(),
    )
    spec.result_dir.mkdir(parents=True, exist_ok=True)
    held = _Held()
    try:
        inputs, reference = _load_engine(spec, result, phase_event, held)
        engine = held.engine
        if not spec.load.one_at_a_time:
            held.slot_engines = _measure_load(engine, inputs, spec, result, phase_event)
            phase_event("parity")
            engine.bind_thread()  # this thread last drove another slot's engine
        else:
            _measure_one_at_a_time(
                engine, spec, result, phase_event, held.device_events, held.startup
            )
            phase_event("parity")
            # Device-resident runs copy out once here; for the others this repeats the last copy.
        outputs = engine.copy_out()
        engine.synchronize()
        _check_parity(spec, outputs, reference, result)
        if spec.accuracy is not None:  # untimed; latency.npz is written already
            phase_event("accuracy")
            result.accuracy = accuracy_phase(engine, spec.accuracy, spec.result_dir)
        if spec.profile is not None:  # untimed, last: latency.npz is written already
            _profile(engine, inputs, spec, spec.profile, result, phase_event)
    except BaseException as exc:  # recorded, whatever it is: the run goes on without us
        result.phase = phase_event.current
        result.error = _one_line(exc)
        result.traceback = traceback.format_exc()
        if isinstance(exc, UnsupportedCombination):
            result.status = "unsupported"
        elif _is_oom(exc):
            result.status = "oom"
        else:
            result.status = "failed"
    finally:
        _release(held, result)
    result.finished = time.time()
    write_result(result, spec.result_dir)
    phase_event.done()
    return result


def _load_engine(
    spec: WorkerSpec, result: WorkerResult, phase_event: _PhaseEvents, held: _Held
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The "load" and "prepare" phases: the reference's inputs and outputs, and the engine
    loaded, prepared on them and held (with its CUDA events ring when they are asked for)."""
    phase_event("load")
    load_started = time.perf_counter()
    inputs, reference = load_reference(spec.reference)
    result.runtime_shapes = {n: list(a.shape) for n, a in zip(spec.input_names, inputs)}
    engine = held.engine = engine_class(spec.engine)()
    clock = held.startup = StartupClock.now() if spec.load.one_at_a_time else None
    engine.load(
        EngineSpec(
            model=spec.model,
            device=spec.device,
            precision=spec.precision,
            artifact=spec.artifact,
            input_names=tuple(spec.input_names),
            output_names=tuple(spec.output_names),
            options=dict(spec.options),
            device_id=spec.device_id,
            cache_dir=spec.engine_cache_dir,
        )
    )
    if clock is not None:
        clock.loaded = time.time()
    result.options = dict(engine.effective_options)
    phase_event("prepare")
    engine.prepare(inputs)
    result.load_seconds = time.perf_counter() - load_started
    if clock is not None:
        clock.prepared = time.time()
    if spec.device == "cuda":
        result.gpu_name = gpus.gpu_name(spec.device_id)
        stream = engine.stream
        if spec.measurement.device_events and stream is not None:
            marks = 2 if spec.measurement.device_resident else 4
            held.device_events = timing.cuda_events(stream, timing.EVENT_SLOTS, marks)
    return inputs, reference


def _measure_one_at_a_time(
    engine: Any,
    spec: WorkerSpec,
    result: WorkerResult,
    phase_event: _PhaseEvents,
    device_events: timing.CudaEvents | None,
    clock: StartupClock | None = None,
) -> None:
    """The "warmup" and "measure" phases of the original timed loop (`timing.measure`), one
    request at a time; latency.npz written. With the `clock` of the load, `result.startup`
    once the warm-up's first call answered."""
    settings = spec.measurement
    phase_event("warmup")
    if settings.device_resident:
        engine.copy_in()
        engine.synchronize()
    warm_iters, warm_seconds = settings.warmup()
    warmup_started = time.time()
    warm = timing.warm_up(engine, warm_iters, warm_seconds, settings.device_resident, device_events)
    result.warmup = WarmupInfo(
        iterations=warm.iterations,
        seconds=warm.seconds,
        first_ms=float(warm.samples[timing.WALL_TOTAL][0]) / 1e6 if warm.iterations else None,
    )
    if clock is not None:  # its first_inference_ms is warmup.first_ms, from the same sample
        result.startup = clock.times(warmup_started, warm.samples[timing.WALL_TOTAL])

    phase_event("measure")
    rule = _stop_rule(settings)
    cpu_started = time.process_time()
    measured = timing.measure(engine, rule, settings.device_resident, device_events)
    result.measure_cpu_seconds = time.process_time() - cpu_started
    # Nothing above this line inside the loop logs or allocates; now there is time.
    if spec.device == "cuda":
        reasons = gpus.clock_slowdown_reasons(spec.device_id)
        if reasons:
            result.warnings.append(
                "the GPU was slowing its clocks at the end of measurement "
                f"({', '.join(reasons)}): the timings may be pessimistic"
            )
    _record_measurement(measured, spec, result)
    write_latency(measured.samples, spec.result_dir)


def _stop_rule(settings: Measurement) -> timing.StopRule:
    """--iters, --duration, or the adaptive rule (until the median's CI is narrow enough)."""
    if settings.iters is not None:
        return timing.FixedIterations(settings.iters)
    if settings.duration_s is not None:
        return timing.FixedDuration(settings.duration_s)
    return timing.AdaptiveStop(
        settings.ci_target,
        settings.min_iters,
        settings.max_seconds,
        min_seconds=settings.min_seconds,
    )


def _record_measurement(
    measured: timing.TimedSamples, spec: WorkerSpec, result: WorkerResult
) -> None:
    """The timed loop's figures and warnings on `result`."""
    settings = spec.measurement
    wall = measured.samples[timing.WALL_TOTAL]
    result.iterations = measured.iterations
    result.measure_seconds = measured.seconds
    # The measuring rules stop for a StopReason ("warmup" is the warm-up's own).
    result.stop_reason = cast(StopReason, measured.stop_reason)
    result.clocks = list(measured.samples)
    ci = relative_ci_half_width(wall)
    result.ci_half_width = ci if math.isfinite(ci) else None
    result.warnings.extend(noise_warnings(wall, settings, spec.device))
    if measured.stop_reason == "max_seconds" and settings.mode == "adaptive":
        result.warnings.append(
            f"stopped at the {settings.max_seconds:g} s cap before the median's 95% CI "
            f"reached ±{settings.ci_target:.1%} (it is ±{ci:.1%})"
        )


def _release(held: _Held, result: WorkerResult) -> None:
    """Close the events ring and release every engine; a failure to is a warning."""
    if held.device_events is not None:
        held.device_events.close()
    for other in held.slot_engines[1:]:
        try:
            other.release()
        except Exception as exc:
            result.warnings.append(f"release of a slot engine failed: {_one_line(exc)}")
    if held.engine is not None:
        try:
            held.engine.release()
        except Exception as exc:  # a release failure must not hide the result
            result.warnings.append(f"release failed: {_one_line(exc)}")
        # Read after release: engines add to it then (PyTorch: its allocator's peak).
        result.engine_info = dict(held.engine.info)


def _check_parity(
    spec: WorkerSpec, outputs: list[np.ndarray], reference: list[np.ndarray], result: WorkerResult
) -> None:
    if not reference:
        return
    settings = spec.measurement
    rtol = settings.rtol if settings.rtol is not None else default_rtol(spec.precision, spec.device)
    result.parity = compare_outputs(outputs, reference, spec.output_names, rtol, settings.atol)
    if not result.parity.ok:
        result.warnings.append(result.parity.failures())


def _profile(
    engine: Any,
    inputs: list[np.ndarray],
    spec: WorkerSpec,
    settings: ProfileSpec,
    result: WorkerResult,
    phase_event: _PhaseEvents,
) -> None:
    """The "profile" phase, one request at a time on the measured `inputs`, where the engine
    names a profiler. An engine that cannot profile this combination leaves a warning; any
    other failure is the phase's."""
    if get_descriptor(spec.engine).profiler is None:
        result.warnings.append(f"no profile: engine '{spec.engine}' has no per-layer profiler")
        return
    if not spec.load.one_at_a_time:
        result.warnings.append(
            "no profile: profiles are taken one request at a time (the single-stream "
            f"scenario), and this run measured the {spec.load.scenario} scenario"
        )
        return
    phase_event("profile")
    if spec.accuracy is not None:  # the accuracy phase left its last batch prepared
        engine.prepare(inputs)
    try:
        result.profile = profile_phase(
            engine, settings, spec.result_dir, spec.measurement.device_resident
        )
    except UnsupportedCombination as exc:
        result.warnings.append(f"no profile: {_one_line(exc)}")


def _measure_load(
    engine: Any,
    inputs: list[np.ndarray],
    spec: WorkerSpec,
    result: WorkerResult,
    phase_event: _PhaseEvents,
) -> list[Any]:
    """Measure a load other than one request at a time (infercmp.worker.load_run): one engine
    per slot, driven by the load generator. Returns every slot's engine (the first is
    `engine`) so the caller releases them.

    The phases bracket the window whose requests are counted: "warmup" holds the generator's
    warm-up (and a server run's self-check and --qps auto search), "measure" exactly the
    window (the generator calls back as it opens and closes), "write" the bookkeeping after.
    The sampler's energy over "measure" is then the window's, as for one request at a time.
    """
    how = get_descriptor(spec.engine).concurrency_on(spec.device)
    if how is None:
        raise UnsupportedCombination(
            f"{spec.engine} declares no way to keep several requests in flight on {spec.device}"
        )
    engines = [engine]
    try:
        for _ in range(spec.load.concurrency - 1):
            other = engine.slot_engine()
            engines.append(other)
            other.prepare(inputs)
        phase_event("warmup")
        warmup = [time.perf_counter(), 0.0]  # when the warm-up began, and when it ended

        def open_window() -> None:
            warmup[1] = time.perf_counter()
            phase_event("measure")

        if spec.measurement.device_resident:
            for each in engines:
                each.bind_thread()  # copy on the engine's own stream, which synchronize waits on
                each.copy_in()
                each.synchronize()
        arrays, load_result = run_load(
            engines,
            spec,
            how,
            items=items_per_request(result.runtime_shapes),
            on_measure_start=open_window,
            on_measure_end=lambda: phase_event("write"),
        )
    except SlotFailed as exc:
        _release_all(engines[1:])
        # The slot's own exception is what the worker classifies (out of memory, unsupported).
        raise exc.error from exc
    except BaseException:
        _release_all(engines[1:])
        raise
    if load_result.requests == 0:
        raise RunFailed(_empty_window(load_result))
    # The window, not the whole run: energy per request is the window's energy over its
    # requests. The generator does not count its warm-up's requests, only their time.
    result.measure_seconds = load_result.window_s
    result.warmup = WarmupInfo(seconds=warmup[1] - warmup[0])
    _record_load(arrays, load_result, spec, result)
    write_latency(arrays, spec.result_dir)
    return engines


def _record_load(
    arrays: dict[str, np.ndarray], load_result: LoadResult, spec: WorkerSpec, result: WorkerResult
) -> None:
    """A load's figures and warnings on `result`."""
    result.load_result = load_result
    wall = arrays["wall.total"]
    result.iterations = len(wall)
    result.stop_reason = "duration" if spec.measurement.duration_s else "max_seconds"
    result.clocks = list(arrays)
    result.warnings.extend(noise_warnings(wall, spec.measurement, spec.device))
    if load_result.generator_note:
        result.warnings.append(f"{load_result.generator_note}: latency measures it too")
    slo_ms = spec.load.slo_ms
    if load_result.best_qps is not None and slo_ms is not None:
        p99 = load_result.p99_ms
        if p99 is None or p99 > slo_ms:
            result.warnings.append(
                f"the measured run at the rate the search chose ({load_result.best_qps:.4g} "
                f"requests/s) missed the {slo_ms:g} ms SLO (p99 "
                + ("unbounded, too many cut" if p99 is None else f"{p99:.3g} ms")
                + "): that rate passed once and is at the edge; measure longer (--duration)"
            )
    if load_result.cut:
        result.warnings.append(
            f"{load_result.cut} requests due in the window never started (overload); they "
            "count as slower than any completed one in p99"
        )


def _empty_window(load_result: LoadResult) -> str:
    """What happened when a load's measured window completed no request, and what to do."""
    if load_result.cut:
        return (
            f"none of the {load_result.cut:,} requests due in the {load_result.window_s:.3g} s "
            "window started before the run was cut: one request takes longer than the window "
            "allows; give a longer --duration or a lower --qps"
        )
    return (
        f"the {load_result.window_s:.3g} s window had no request due in it (its rate x its "
        "seconds is under one request); give a longer --duration or a higher --qps"
    )


def _release_all(engines: list[Any]) -> None:
    for each in engines:
        with contextlib.suppress(Exception):
            each.release()


EXIT_CODES = {
    "ok": EXIT_OK,
    "failed": EXIT_FAILED,
    "oom": EXIT_OOM,
    "unsupported": EXIT_UNSUPPORTED,
}


def read_spec(path: Path) -> WorkerSpec:
    try:
        return WorkerSpec.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise InfercmpError(f"cannot read worker spec {path}: {exc.strerror}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InfercmpError(f"invalid worker spec {path}: {problems}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m infercmp.worker SPEC.json", file=sys.stderr)
        return EXIT_BAD_SPEC
    try:
        spec = read_spec(Path(args[0]))
    except InfercmpError as exc:
        print(f"infercmp worker: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    # Phase events get a private copy of stdout; anything a runtime prints goes to stderr so
    # it cannot be mistaken for an event.
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    result = run_spec(spec, events)
    events.close()
    return EXIT_CODES[result.status]
