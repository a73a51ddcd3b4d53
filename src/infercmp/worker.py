"""The worker process: one engine x device x precision x shape, timed, checked and recorded.

Run as `python -m infercmp.worker SPEC.json` (a `WorkerSpec`). It prints one JSON phase event
per line on stdout and leaves `result.json` (a `WorkerResult`) and, once it has measured,
`latency.npz` in the spec's `result_dir`. It imports only its own engine's runtime.

Exit codes: 0 ok, 1 failed, 2 the spec itself is invalid (nothing written), 3 out of memory,
4 unsupported here (the run lists that combination as skipped).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infercmp.errors import InfercmpError

SCHEMA_VERSION = 1
EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_OOM, EXIT_UNSUPPORTED = 0, 1, 2, 3, 4
Status = Literal["ok", "failed", "oom", "unsupported"]
Phase = Literal["spec", "load", "prepare", "warmup", "measure", "parity", "write"]

DEFAULT_WARMUP_ITERS = 10
# (rtol, atol) for outputs compared with the PyTorch fp32 reference: fp16 keeps ~3 decimal
# digits and bf16 ~2, and errors grow through the layers.
# Relative tolerances against the PyTorch fp32 CPU reference. The absolute tolerance defaults
# to rtol x max|reference| per output (the rule `infercmp export` uses), so logits near zero do
# not fail a check that their scale makes meaningless. fp32 on CUDA gets 1e-3 because both
# PyTorch's cuDNN convolutions and ONNX Runtime's CUDA EP use TF32 by default on Ampere and
# newer (seen on the H200: 5e-4 of the output scale, cosine 0.9999998).
DEFAULT_RTOL: dict[tuple[str, str], float] = {
    ("fp32", "cpu"): 1e-4,
    ("fp32", "cuda"): 1e-3,
    ("fp16", "cpu"): 1e-2,
    ("fp16", "cuda"): 1e-2,
    ("bf16", "cpu"): 5e-2,
    ("bf16", "cuda"): 5e-2,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkerSpec(_Model):
    """Everything one worker needs; written by the orchestrator as JSON."""

    model: str
    engine: Literal["pytorch", "onnxruntime", "tensorrt"]
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    artifact: Path | None = None
    reference: Path
    options: dict[str, Any] = Field(default_factory=dict)
    device_id: int = Field(0, ge=0)
    input_names: list[str] | None = None  # None: from the model plugin's config
    output_names: list[str] | None = None
    # Warm-up runs until both are reached; None counts as 0, and both None as 10 iterations.
    warmup_iters: int | None = Field(None, ge=0)
    warmup_seconds: float | None = Field(None, ge=0)
    iters: int | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    # Adaptive, used when neither iters nor duration_s is set: measure until the median's 95%
    # CI is within ci_target of it (after min_iters), or max_seconds pass.
    ci_target: float = Field(0.01, gt=0, lt=1)
    min_iters: int = Field(30, ge=8)
    max_seconds: float = Field(30.0, gt=0)
    device_resident: bool = False
    device_events: bool = True  # CUDA: also time phases with CUDA events
    rtol: float | None = Field(None, ge=0)  # None: DEFAULT_RTOL[precision, device]
    atol: float | None = Field(None, ge=0)  # None: rtol x max|reference|, per output
    cv_warn: float = Field(0.10, gt=0)
    slow_start_ratio: float = Field(1.5, gt=1)
    result_dir: Path

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> WorkerSpec:
        if self.iters is not None and self.duration_s is not None:
            raise ValueError("give iters or duration_s, not both (neither: adaptive)")
        return self

    @property
    def mode(self) -> str:
        if self.iters is not None:
            return "iters"
        return "duration" if self.duration_s is not None else "adaptive"

    def warmup(self) -> tuple[int, float]:
        """(iterations, seconds) of warm-up."""
        if self.warmup_iters is None and self.warmup_seconds is None:
            return DEFAULT_WARMUP_ITERS, 0.0
        return self.warmup_iters or 0, self.warmup_seconds or 0.0

    def tolerances(self) -> tuple[float, float | None]:
        rtol = self.rtol if self.rtol is not None else DEFAULT_RTOL[self.precision, self.device]
        return rtol, self.atol


class OutputParity(_Model):
    name: str
    shape: list[int]
    reference_shape: list[int]
    dtype: str
    reference_dtype: str
    max_abs: float | None
    max_rel: float | None
    cosine: float | None
    atol: float | None = None  # the absolute tolerance applied to this output
    ok: bool


class Parity(_Model):
    ok: bool
    rtol: float
    atol: float | None  # None: rtol x max|reference| per output
    outputs: list[OutputParity]


class WarmupInfo(_Model):
    iterations: int = 0
    seconds: float = 0.0
    first_ms: float | None = None  # the very first timed call: the cold-start cost


class WorkerResult(_Model):
    """What `result.json` holds; the orchestrator reads it back with `model_validate_json`."""

    schema_version: int = SCHEMA_VERSION
    status: Status
    phase: Phase | None = None  # where it failed; None when ok
    error: str | None = None  # one line
    traceback: str | None = None
    model: str
    engine: str
    device: str
    precision: str
    device_resident: bool
    mode: str
    stop_reason: str | None = None
    iterations: int = 0
    load_seconds: float | None = None  # load + prepare, compilation and first run included
    runtime_shapes: dict[str, list[int]] = Field(default_factory=dict)  # input name -> shape
    measure_seconds: float = 0.0
    ci_half_width: float | None = None  # relative, of the wall.total median
    clocks: list[str] = Field(default_factory=list)  # keys of latency.npz
    stats: dict[str, dict[str, float]] = Field(default_factory=dict)  # LatencyStats per clock
    warmup: WarmupInfo = Field(default_factory=WarmupInfo)
    warnings: list[str] = Field(default_factory=list)
    parity: Parity | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # effective engine options
    engine_info: dict[str, Any] = Field(default_factory=dict)
    gpu_name: str | None = None
    pid: int = Field(default_factory=os.getpid)
    started: float = 0.0
    finished: float = 0.0


# -- parity ------------------------------------------------------------------------------------


def compare_outputs(
    actual: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    names: Sequence[str],
    rtol: float,
    atol: float | None = None,
) -> Parity:
    """Each engine output against the reference: shape, dtype, max abs/rel error, cosine."""
    if len(actual) != len(reference):
        raise InfercmpError(
            f"the engine returned {len(actual)} outputs but the reference has {len(reference)}"
        )
    outputs = []
    for name, got, want in zip(names, actual, reference):
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(got.shape),
            "reference_shape": list(want.shape),
            "dtype": str(got.dtype),
            "reference_dtype": str(want.dtype),
            "max_abs": None,
            "max_rel": None,
            "cosine": None,
            "ok": False,
        }
        if got.shape == want.shape:
            a = np.asarray(got, dtype=np.float64)
            r = np.asarray(want, dtype=np.float64)
            diff = np.abs(a - r)
            scale = float(np.abs(r).max()) if r.size else 0.0
            tol = atol if atol is not None else max(rtol * scale, 1e-12)
            big = np.abs(r) > tol  # relative error is meaningless next to zero
            entry.update(
                max_abs=float(diff.max()) if diff.size else 0.0,
                max_rel=float((diff[big] / np.abs(r[big])).max()) if big.any() else 0.0,
                cosine=_cosine(a, r),
                atol=tol,
                ok=bool(np.allclose(a, r, rtol=rtol, atol=tol)),
            )
        outputs.append(OutputParity(**entry))
    return Parity(ok=all(o.ok for o in outputs), rtol=rtol, atol=atol, outputs=outputs)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; 1.0 only when both are all zeros (an all-zero output is a failure)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


# -- noise -------------------------------------------------------------------------------------


def _warmup_text(spec: WorkerSpec) -> str:
    iterations, seconds = spec.warmup()
    parts = [f"{iterations} iterations"] if iterations else []
    parts += [f"{seconds:g} s"] if seconds else []
    return " and at least ".join(parts) or "none"


def noise_warnings(wall_ns: np.ndarray, spec: WorkerSpec) -> list[str]:
    """Warnings about the measurement itself, in the words a user can act on."""
    warnings = []
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
            "close other programs, pin the CPU/GPU clocks, or measure longer"
        )
    if n >= 20:
        head = max(3, n // 20)
        head_median = float(np.median(values[:head]))
        if median > 0 and head_median > spec.slow_start_ratio * median:
            warnings.append(
                f"the first {head} iterations are {head_median / median:.1f}x slower than the "
                f"median: the warm-up ({_warmup_text(spec)}) may be too short"
            )
    from infercmp.stats import outlier_mask

    outliers = int(outlier_mask(values).sum())
    if outliers > 0.02 * n:
        warnings.append(
            f"{outliers} of {n} iterations are outliers (beyond 3 IQR); they are kept and flagged"
        )
    return warnings


# -- the run -----------------------------------------------------------------------------------


class _PhaseEvents:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, phase: str) -> None:
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


def _write_atomic(path: Path, write: Any) -> None:
    from infercmp.files import write_atomic

    write_atomic(path, write)


def write_result(result: WorkerResult, result_dir: Path) -> None:
    data = result.model_dump_json(indent=2).encode()
    _write_atomic(result_dir / "result.json", lambda f: f.write(data))


def write_latency(samples: dict[str, np.ndarray], result_dir: Path) -> None:
    _write_atomic(
        result_dir / "latency.npz",
        lambda f: np.savez(f, **{k: v.astype(np.int64) for k, v in samples.items()}),
    )


def _names(spec: WorkerSpec) -> tuple[list[str], list[str]]:
    if spec.input_names is not None and spec.output_names is not None:
        return spec.input_names, spec.output_names
    from infercmp.plugins import get_plugin

    config = get_plugin(spec.model).config
    return (spec.input_names or config.input_names), (spec.output_names or config.output_names)


def run_worker(spec: WorkerSpec, events: TextIO) -> WorkerResult:
    """Load, warm up, measure and check one combination; always returns a result to write."""
    from infercmp import timing
    from infercmp.engines import EngineSpec, engine_class
    from infercmp.engines.base import UnsupportedCombination
    from infercmp.stats import LatencyStats, relative_ci_half_width

    phase_event = _PhaseEvents(events)
    result = WorkerResult(
        status="ok",
        model=spec.model,
        engine=spec.engine,
        device=spec.device,
        precision=spec.precision,
        device_resident=spec.device_resident,
        mode=spec.mode,
        started=time.time(),
    )
    spec.result_dir.mkdir(parents=True, exist_ok=True)
    engine = None
    device_events = None
    phase: Phase = "load"
    try:
        phase_event("load")
        load_started = time.perf_counter()
        inputs, reference = load_reference(spec.reference)
        input_names, output_names = _names(spec)
        result.runtime_shapes = {n: list(a.shape) for n, a in zip(input_names, inputs)}
        engine = engine_class(spec.engine)()
        engine.load(
            EngineSpec(
                model=spec.model,
                device=spec.device,
                precision=spec.precision,
                artifact=spec.artifact,
                input_names=tuple(input_names),
                output_names=tuple(output_names),
                options=dict(spec.options),
                device_id=spec.device_id,
            )
        )
        result.options = dict(getattr(engine, "effective_options", None) or spec.options)
        phase = "prepare"
        engine.prepare(inputs)
        result.load_seconds = time.perf_counter() - load_started
        if spec.device == "cuda":
            from infercmp import devices

            result.gpu_name = devices.gpu_name(spec.device_id)
            stream = engine.stream
            if spec.device_events and stream is not None:
                marks = 2 if spec.device_resident else 4
                device_events = timing.cuda_events(stream, timing.EVENT_SLOTS, marks)

        phase = "warmup"
        phase_event("warmup")
        if spec.device_resident:
            engine.copy_in()
            engine.synchronize()
        warm_iters, warm_seconds = spec.warmup()
        warm = timing.warm_up(engine, warm_iters, warm_seconds, spec.device_resident, device_events)
        result.warmup = WarmupInfo(
            iterations=warm.iterations,
            seconds=warm.seconds,
            first_ms=float(warm.samples[timing.WALL_TOTAL][0]) / 1e6 if warm.iterations else None,
        )

        phase = "measure"
        phase_event("measure")
        if spec.iters is not None:
            rule: timing.StopRule = timing.FixedIterations(spec.iters)
        elif spec.duration_s is not None:
            rule = timing.FixedDuration(spec.duration_s)
        else:
            rule = timing.AdaptiveStop(spec.ci_target, spec.min_iters, spec.max_seconds)
        measured = timing.measure(engine, rule, spec.device_resident, device_events)
        # Nothing above this line inside the loop logs or allocates; now there is time.
        if spec.device == "cuda":
            from infercmp import devices

            reasons = devices.clock_slowdown_reasons(spec.device_id)
            if reasons:
                result.warnings.append(
                    "the GPU was slowing its clocks at the end of measurement "
                    f"({', '.join(reasons)}): the timings may be pessimistic"
                )
        wall = measured.samples[timing.WALL_TOTAL]
        result.iterations = measured.iterations
        result.measure_seconds = measured.seconds
        result.stop_reason = measured.stop_reason
        result.clocks = list(measured.samples)
        ci = relative_ci_half_width(wall)
        result.ci_half_width = ci if math.isfinite(ci) else None
        result.stats = {
            clock: LatencyStats.from_ns(values).to_dict()
            for clock, values in measured.samples.items()
            if len(values)
        }
        result.warnings.extend(noise_warnings(wall, spec))
        if measured.stop_reason == "max_seconds" and spec.mode == "adaptive":
            result.warnings.append(
                f"stopped at the {spec.max_seconds:g} s cap before the median's 95% CI "
                f"reached ±{spec.ci_target:.1%} (it is ±{ci:.1%})"
            )
        write_latency(measured.samples, spec.result_dir)

        phase = "parity"
        phase_event("parity")
        # Device-resident runs copy out once here; for the others this repeats the last copy.
        outputs = engine.copy_out()
        engine.synchronize()
        rtol, atol = spec.tolerances()
        if reference:
            result.parity = compare_outputs(outputs, reference, output_names, rtol, atol)
            if not result.parity.ok:
                bad = [o for o in result.parity.outputs if not o.ok]
                detail = ", ".join(
                    f"{o.name} (max abs {o.max_abs:.3g}, cosine {o.cosine:.6f})"
                    if o.max_abs is not None
                    else f"{o.name} (shape {o.shape} != {o.reference_shape})"
                    for o in bad
                )
                limits = (
                    f"rtol={rtol:g}, atol={atol:g}"
                    if atol is not None
                    else (f"rtol={rtol:g}, atol=rtol x max|reference|")
                )
                result.warnings.append(
                    f"outputs differ from the PyTorch reference beyond {limits}: {detail}"
                )
    except BaseException as exc:  # recorded, whatever it is: the run goes on without us
        result.phase = phase
        result.error = _one_line(exc)
        result.traceback = traceback.format_exc()
        if isinstance(exc, UnsupportedCombination):
            result.status = "unsupported"
        elif _is_oom(exc):
            result.status = "oom"
        else:
            result.status = "failed"
    finally:
        if device_events is not None:
            device_events.close()
        if engine is not None:
            try:
                engine.release()
            except Exception as exc:  # a release failure must not hide the result
                result.warnings.append(f"release failed: {_one_line(exc)}")
            # Read after release: engines add to it then (PyTorch: its allocator's peak).
            result.engine_info = dict(getattr(engine, "info", None) or {})
    result.finished = time.time()
    write_result(result, spec.result_dir)
    phase_event("done")
    return result


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


#: Set by the bench process to its pid, so the worker can die with it (see `_die_with_parent`).
PARENT_PID_ENV = "INFERCMP_BENCH_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Have Linux SIGKILL this worker when the bench process dies, even of SIGKILL.

    The worker runs in its own session (so Ctrl-C reaches only the parent), which also means
    nothing else would stop it measuring on alone for minutes after its parent was killed.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not glibc/musl: the parent's own kill still applies
        return
    if str(os.getppid()) != parent:  # the parent died before the request took effect
        os._exit(EXIT_FAILED)


def main(argv: Sequence[str] | None = None) -> int:
    _die_with_parent()
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
    result = run_worker(spec, events)
    events.close()
    return EXIT_CODES[result.status]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is on disk (written atomically); skipping interpreter teardown saves about
    # 1.1 s per PyTorch worker (module and CUDA/thread-pool destructors) at no risk.
    os._exit(code)
