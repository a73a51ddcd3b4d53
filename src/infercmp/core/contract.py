"""The typed contract between bench and its worker processes: `WorkerSpec` in, `WorkerResult` out.

Both sides read and write these models with pydantic, so every default is defined once, here:
the bench CLI passes only the flags a user gave, and a worker replayed by hand from its
spec.json measures exactly as it did under bench.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infercmp.core.errors import InfercmpError
from infercmp.core.parity import Parity
from infercmp.core.stats import CI_MIN_SAMPLES
from infercmp.core.types import Device, Precision, WorkerStatus

SCHEMA_VERSION = 2
DEFAULT_WARMUP_ITERS = 10  # when neither warm-up bound is given


Phase = Literal[
    "spec", "load", "prepare", "warmup", "measure", "parity", "accuracy", "profile", "write"
]
StopReason = Literal["iterations", "duration", "ci_target", "max_seconds"]
Scenario = Literal["single-stream", "offline", "server"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Measurement(_Model):
    """How long to warm up and measure each combination, and how to judge it.

    Warm-up runs until both bounds are reached (None counts as 0; both None: 10 iterations).
    With neither `iters` nor `duration_s`, the stop is adaptive: measure until the median's
    95% CI is within `ci_target` of it (after `min_iters` and `min_seconds`), or
    `max_seconds` pass.
    """

    warmup_iters: int | None = Field(None, gt=0)
    warmup_seconds: float | None = Field(1.0, gt=0)
    iters: int | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    ci_target: float = Field(0.01, gt=0, lt=1)
    min_iters: int = Field(100, ge=CI_MIN_SAMPLES)
    max_seconds: float = Field(20.0, gt=0)
    # Adaptive mode measures at least this long, so the sampler (20 Hz by default) and NVML's
    # energy counter (100 ms steps on the H200) see at least 10 readings of the window.
    min_seconds: float = Field(1.0, ge=0)
    device_resident: bool = False
    device_events: bool = True  # CUDA: also time phases with CUDA events
    rtol: float | None = Field(None, ge=0)  # None: infercmp.core.parity.default_rtol
    atol: float | None = Field(None, ge=0)  # None: rtol x max|reference|, per output
    cv_warn: float = Field(0.10, gt=0)
    slow_start_ratio: float = Field(1.5, gt=1)
    # Parent side: a worker running longer is killed.
    timeout_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> Measurement:
        if self.iters is not None and self.duration_s is not None:
            raise ValueError("give iters or duration_s, not both (neither: adaptive)")
        return self

    @classmethod
    def from_flags(
        cls, warmup: tuple[int | None, float | None] | None = None, **flags: Any
    ) -> Measurement:
        """From the bench CLI's flags (None: not given); one line naming the flag when wrong.

        `warmup` is `--warmup` parsed: (iterations, None) or (None, seconds).
        """
        given = {k: v for k, v in flags.items() if v is not None}
        if warmup is not None:
            given["warmup_iters"], given["warmup_seconds"] = warmup
        if flags.get("iters") is not None and flags.get("duration_s") is not None:
            raise InfercmpError("give either --iters or --duration, not both")
        for name in ("warmup_iters", "iters", "min_iters"):
            value = given.get(name)
            if value is not None and value <= 0:
                raise InfercmpError(f"{_FLAGS[name]} must be a positive integer, got {value}")
        for name in ("warmup_seconds", "duration_s", "max_seconds", "min_seconds", "timeout_s"):
            value = given.get(name)
            if value is not None and not (value > 0 and value < float("inf")):
                raise InfercmpError(
                    f"{_FLAGS[name]} must be a positive number of seconds, got {value}"
                )
        ci_target = given.get("ci_target")
        if ci_target is not None and not 0 < ci_target < 1:
            raise InfercmpError(f"--ci-target must be between 0 and 1, got {ci_target}")
        min_iters = given.get("min_iters")
        if min_iters is not None and min_iters < CI_MIN_SAMPLES:
            # Fewer samples give the median no confidence interval.
            raise InfercmpError(f"--min-iters must be at least {CI_MIN_SAMPLES}, got {min_iters}")
        return cls(**given)

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


_FLAGS = {
    "warmup_iters": "--warmup",
    "warmup_seconds": "--warmup",
    "iters": "--iters",
    "duration_s": "--duration",
    "min_iters": "--min-iters",
    "max_seconds": "--max-seconds",
    "min_seconds": "--min-seconds",
    "timeout_s": "--timeout",
}


# --- the limits of a load, and what its figures hold (parent and worker alike) -------------

#: Highest --qps: the Python dispatcher issues about 1e6 requests/s on a 2-core EPYC
#: (loadgen.generator_capacity), so a higher rate would measure the generator alone.
MAX_QPS = 1_000_000.0
#: Most arrivals one open-loop run schedules (rate x seconds): its arrays and the
#: dispatcher's list take about 100 bytes an arrival.
MAX_ARRIVALS = 5_000_000
#: An open loop keeps up with its rate when it completes at least this share of the offered
#: requests per second while arrivals are due (`RequestLog.achieved_qps`).
KEEP_UP = 0.95


def items_per_request(runtime_shapes: dict[str, list[int]] | None) -> int:
    """Items in one request (one timed iteration): the leading dimension of the first input
    (1 when unknown). Throughput and energy per item divide by it."""
    if runtime_shapes:
        first = next(iter(runtime_shapes.values()))
        if first:
            return int(first[0])
    return 1


def finite_or_none(value: Any) -> Any:
    """JSON has no infinity: a percentile no run could bound (too many cut) is stored as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class Load(_Model):
    """The load one combination runs under: batch size, requests in flight, arrival pattern.

    The default (`Load()`) is infercmp's original measurement: the model's own batch, one
    request at a time. `batch` None keeps the preprocessed example as it is; a number stacks
    it along the config's `batch_size` axis (infercmp.workload.batching). Frozen: a
    `Combination` holds
    it and is a dict key.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    batch: int | None = Field(None, gt=0)
    concurrency: int = Field(1, gt=0)
    scenario: Scenario = "single-stream"
    qps: float | None = Field(None, gt=0)  # server: Poisson arrival rate; None: search it
    slo_ms: float | None = Field(None, gt=0)  # server with qps None: the p99 limit searched

    @model_validator(mode="after")
    def _consistent(self) -> Load:
        if self.scenario == "single-stream" and self.concurrency != 1:
            raise ValueError("single-stream keeps one request in flight; use offline or server")
        if self.scenario != "server" and (self.qps is not None or self.slo_ms is not None):
            raise ValueError("qps and slo_ms belong to the server scenario")
        if self.scenario == "server" and self.qps is None and self.slo_ms is None:
            raise ValueError("the server scenario needs qps, or slo_ms to search the rate")
        return self

    @property
    def is_default(self) -> bool:
        return self == Load()

    @property
    def one_at_a_time(self) -> bool:
        """The original timed loop (timing.measure) measures it: single-stream, any batch."""
        return self.scenario == "single-stream"

    @property
    def label(self) -> str:
        """`b8`, `b8-c2-offline`, `server-q200`, `server-auto-slo50ms`; "" for the default."""
        parts = [f"b{self.batch}"] if self.batch is not None else []
        parts += [f"c{self.concurrency}"] if self.concurrency != 1 else []
        if self.scenario == "offline":
            parts.append("offline")
        elif self.scenario == "server":
            parts.append(
                f"server-q{self.qps:g}" if self.qps else f"server-auto-slo{self.slo_ms:g}ms"
            )
        return "-".join(parts)


class AccuracySpec(_Model):
    """The untimed accuracy phase (`bench --accuracy`): run every sample of a samples file
    (`infercmp.artifacts.samples`, preprocessed runtime inputs at one row each) through the
    measured engine, `batch` samples per call, after the timed phases and parity.

    `input_axes`/`output_axes` are the config's batch axes (None: the tensor has none, and
    every call carries one sample); the worker writes the outputs, one row per sample, as
    `accuracy_outputs.npz` in its result directory (the same samples format).
    """

    samples: Path
    batch: int = Field(1, gt=0)
    input_axes: list[int | None]
    output_axes: list[int | None]


class AccuracyOutputs(_Model):
    """What the accuracy phase did: how many samples, in how many calls, and for how long
    (wall time of the whole phase: never part of a latency)."""

    file: str  # name of the outputs file in the worker's result directory
    samples: int
    calls: int
    seconds: float


class ProfileSpec(_Model):
    """The untimed profile phase (`bench --profile`, `infercmp profile`): after the timed
    phases, parity and accuracy, the engine's own profiler over `iterations` calls of the
    measured inputs, after `warmup` unprofiled ones. Nothing here enters latency.npz; the
    engine may make a second, profiled instance of itself (a session with profiling on)."""

    iterations: int = Field(20, gt=0)
    warmup: int = Field(3, ge=0)


class ProfileEvent(_Model):
    """One op, node, layer or kernel as the engine's profiler saw it, summed over the
    profiled iterations, in the engine's own names.

    `origin` names the nodes of the engine's ONNX artifact it came from (a fused layer names
    several; empty: the engine made it, a reorder or copy, or cannot say); `module` is the
    PyTorch module path where the engine knows it directly (PyTorch's own hooks), else None.
    The parent attributes each event to a module from these (`infercmp.run.profile`).
    """

    name: str  # the engine's name for it: ORT node, OpenVINO layer, TensorRT layer, aten op
    op_type: str  # its type in the engine's words: Conv, FusedConv, Convolution, aten::addmm
    exec_type: str = ""  # the implementation chosen: jit_avx512_FP32, a CUDA kernel's name
    device: Device  # where the time was spent: "cpu" (op time) or "cuda" (kernel time)
    total_ms: float = Field(ge=0)  # over all profiled iterations
    calls: int = Field(0, ge=0)  # over all profiled iterations
    origin: list[str] = Field(default_factory=list)
    module: str | None = None


class RawProfile(_Model):
    """What the worker's profile phase writes as `profile.json` in its result directory."""

    profiler: str  # what took it, in words: "torch.profiler", "onnxruntime enable_profiling"
    iterations: int = Field(gt=0)
    # Each profiled iteration's wall time, host arrays in to host arrays out, in ms: the
    # profiled run's own clock (the profiler's overhead included).
    wall_ms: list[float]
    # The same calls unprofiled, on the timed engine in the same phase, half just before the
    # profiled run and half just after, each one's wall ms: what the profiler adds to a call,
    # apart from how the machine has changed since the timed phase. Filled by EngineBase.
    unprofiled_wall_ms: list[float] = Field(default_factory=list)
    # The timed phase ran --device-resident (compute alone, the inputs left on the device),
    # while these calls, profiled and not, carry the copies in and out. Set by the worker.
    device_resident: bool = False
    # CUDA: per iteration, the mean time at least one kernel of it ran (the union of kernel
    # intervals); None on the CPU or where the profiler gives no kernel times.
    device_busy_ms: float | None = None
    events: list[ProfileEvent]
    notes: list[str] = Field(default_factory=list)  # how it was taken, where it differs


class ProfileOutputs(_Model):
    """What the profile phase did: its file, iterations and wall seconds (never a latency)."""

    file: str  # name of the RawProfile file in the worker's result directory
    iterations: int
    seconds: float


class StartupTimes(_Model):
    """What starting this worker cost, measured by the worker (`bench --cold` runs it with
    every engine cache empty, then again warm). Seconds unless named _ms."""

    # From the worker process's start (its creation time) to the engine's load call: the
    # interpreter, infercmp and the engine's runtime imported, the spec and reference read.
    process_to_load_s: float = Field(ge=0)
    load_s: float = Field(ge=0)  # engine.load: session creation, compile_model, plan load
    prepare_s: float = Field(ge=0)  # engine.prepare: buffers bound (torch.compile: traced)
    first_inference_ms: float = Field(ge=0)  # the first call, compilation or algorithm search in it
    first_k_ms: list[float] = Field(default_factory=list)  # the first calls of the warm-up
    ready_s: float = Field(ge=0)  # process start to the first answer back on the host


class WorkerSpec(_Model):
    """Everything one worker needs; bench writes it as spec.json in the worker's directory."""

    model: str
    engine: str
    device: Device
    precision: Precision = "fp32"
    artifact: Path | None = None  # ONNX file or plan; None for engines that take the module
    reference: Path  # npz with input_0.. and output_0..
    input_names: list[str]
    output_names: list[str]
    options: dict[str, Any] = Field(default_factory=dict)
    device_id: int = Field(0, ge=0)
    measurement: Measurement = Field(default_factory=Measurement)
    process: int = Field(0, ge=0)  # which of the combination's repeated processes this is
    result_dir: Path
    load: Load = Field(default_factory=Load)
    accuracy: AccuracySpec | None = None
    profile: ProfileSpec | None = None
    # Where the engine keeps its own compiled-artifact caches (Inductor, Triton, OpenVINO's
    # CACHE_DIR, TensorRT's timing cache); None: the engine's defaults. `bench --cold` gives a
    # fresh directory, then the same one again warm.
    engine_cache_dir: Path | None = None


class WarmupInfo(_Model):
    iterations: int = 0
    seconds: float = 0.0
    first_ms: float | None = None  # the very first timed call: the cold-start cost


class LoadResult(_Model):
    """What a load other than one request at a time achieved in one worker process
    (`infercmp.workload.scenarios.run_load`): the figures of its `loadgen.RequestLog`, throughput in
    items (batch x requests), the generator's own capacity, and a --qps auto search."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)

    how: str  # how the engine kept requests in flight (its descriptor's words)
    batch: int
    slots: int
    requests: int
    cut: int = 0
    window_s: float
    requests_per_s: float
    items_per_s: float
    offered_qps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    lateness_p99_ms: float | None = None
    stop_reason: str = ""
    # loadgen.generator_capacity with this many slots (server scenario only).
    generator: dict[str, Any] | None = None
    # Why this point may measure the generator rather than the engine (loadgen.generator_limit:
    # a rate near its ceiling, or issue lateness large against the SLO); None: it need not.
    generator_note: str | None = None
    # --qps auto: each rate tried (loadgen.QpsPoint as a dict), the best one and why it stopped.
    search: list[dict[str, Any]] = Field(default_factory=list)
    best_qps: float | None = None
    search_reason: str | None = None
    # Several --repeat processes merged (scenarios.merge_load_results): each one's items/s.
    per_process_items_per_s: list[float] | None = None


class WorkerResult(_Model):
    """What result.json holds; bench reads it back with `model_validate_json`."""

    schema_version: int = SCHEMA_VERSION
    status: WorkerStatus
    phase: Phase | None = None  # where it failed; None when ok
    error: str | None = None  # one line
    traceback: str | None = None
    model: str
    engine: str
    device: str
    precision: str
    process: int = 0
    device_resident: bool
    mode: str
    stop_reason: StopReason | None = None
    iterations: int = 0
    load_seconds: float | None = None  # load + prepare, compilation and first run included
    runtime_shapes: dict[str, list[int]] = Field(default_factory=dict)  # input name -> shape
    measure_seconds: float = 0.0
    # CPU time of the whole process (all its threads) over the measured loop, one request at a
    # time only: divided by measure_seconds, how many CPUs the engine kept busy.
    measure_cpu_seconds: float | None = None
    ci_half_width: float | None = None  # relative, of the wall.total median, at the stop
    clocks: list[str] = Field(default_factory=list)  # keys of latency.npz
    warmup: WarmupInfo = Field(default_factory=WarmupInfo)
    warnings: list[str] = Field(default_factory=list)
    parity: Parity | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # effective engine options
    engine_info: dict[str, Any] = Field(default_factory=dict)
    load_result: LoadResult | None = None  # for a load other than one request at a time
    gpu_name: str | None = None
    accuracy: AccuracyOutputs | None = None  # the accuracy phase, when the spec asked for it
    profile: ProfileOutputs | None = None  # the profile phase, when the spec asked for it
    startup: StartupTimes | None = None  # one request at a time, once it answered
    pid: int = Field(default_factory=os.getpid)
    started: float = 0.0
    finished: float = 0.0
