"""The stored files of a run and their schema version: one validated model per file.

Bench builds results through these models, and every reader (report, compare, scripts using
`RunStore.open`) gets files through them, so a run written by someone else, damaged or
hand-edited, is one clear error instead of a crash in a report. The layout and its contract are
in the docstring of `infercmp.store.run_store` and in ``docs/results-format.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from infercmp.core.contract import Load, LoadResult, StartupTimes
from infercmp.core.errors import InfercmpError
from infercmp.core.types import ComboStatus, RunStatus
from infercmp.store.ids import safe_name

SCHEMA_VERSION = 2
# Version 1 is the layout before the commit log (summary.json, whole-run parquet files); runs
# published in it (docs/results/) are still read (infercmp.store.legacy).
READABLE_SCHEMA_VERSIONS = (1, 2)

RUN_FILE = "run.json"
RESULTS_LOG = "results.jsonl"
WRITER_LOCK = "writer.lock"
LATENCY_DIR = "latency"
SAMPLES_DIR = "samples"

_Count = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]  # what a parquet Int64 or C size holds
_Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
_Number = Annotated[float, Field(strict=True)]  # parity figures may be inf or NaN, and say so


class _Record(BaseModel):
    # Extra keys are kept: a newer writer (or bench's own metadata) may add them.
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class _LatencyRecord(_Record):
    """The keys of `infercmp.core.stats.LatencyStats.to_dict()`, all required and finite."""

    count: Annotated[_Finite, Field(ge=0)]  # schema 1 runs stored it as a float (426.0)
    min_ms: _Finite
    p50_ms: _Finite
    p90_ms: _Finite
    p95_ms: _Finite
    p99_ms: _Finite
    max_ms: _Finite
    mean_ms: _Finite
    std_ms: _Finite
    ci_low_ms: _Finite
    ci_high_ms: _Finite
    cv: _Finite
    throughput_per_s: _Finite


class _ParityOutputRecord(_Record):
    name: StrictStr
    ok: StrictBool
    shape: list[_Count] | None = None
    dtype: StrictStr | None = None
    max_abs: _Number | None = None
    max_rel: _Number | None = None
    cosine: _Number | None = None


class _ParityRecord(_Record):
    ok: StrictBool
    rtol: _Number | None = None
    atol: _Number | None = None
    outputs: list[_ParityOutputRecord] = Field(default_factory=list)


class _OutputAgreementRecord(_Record):
    """One output of the engine against PyTorch fp32 on the evaluation samples."""

    name: StrictStr
    p50_abs: _Number | None = None
    p99_abs: _Number | None = None
    max_abs: _Number | None = None
    cosine_mean: _Number | None = None
    cosine_min: _Number | None = None
    top1_agreement: _Number | None = None  # class outputs ([batch, classes]) only


class _AccuracyRecord(_Record):
    """`bench --accuracy`: a combination's accuracy (docs/results-format.md, "accuracy")."""

    samples: _Count
    labelled: StrictBool = False
    primary: StrictStr | None = None
    direction: StrictStr = "max"
    metrics: dict[str, _Number | None] = Field(default_factory=dict)
    reference_metrics: dict[str, _Number | None] = Field(default_factory=dict)
    change: dict[str, _Number | None] = Field(default_factory=dict)
    top1_agreement: _Number | None = None
    outputs: list[_OutputAgreementRecord] = Field(default_factory=list)
    calibration: StrictStr | None = None  # int8: "dataset" or "random"
    fingerprint: StrictStr | None = None
    calls: _Count | None = None
    seconds: _Number | None = None
    error: StrictStr | None = None


class _ProfileRowRecord(_Record):
    """One row of a profile: what ran in these leaf modules ([]: no module), per iteration."""

    modules: list[StrictStr]
    kind: StrictStr
    op_type: StrictStr = ""
    ms: Annotated[_Finite, Field(ge=0)]
    calls: _Count = 0


class _ProfileRecord(_Record):
    """`bench --profile`: a combination's profile (docs/results-format.md, "profile");
    only `error` where it has none (n/a, or the phase failed)."""

    profiler: StrictStr | None = None
    iterations: _Count | None = None
    measured_median_ms: _Number | None = None
    profiled_wall_ms: _Number | None = None
    profiled_mean_ms: _Number | None = None
    unprofiled_median_ms: _Number | None = None
    profiler_overhead: _Number | None = None
    op_total_ms: _Number | None = None
    device_busy_ms: _Number | None = None
    unexplained_ms: _Number | None = None
    launch_gaps_ms: _Number | None = None
    closure: _Number | None = None
    rows: list[_ProfileRowRecord] = Field(default_factory=list)
    notes: list[StrictStr] = Field(default_factory=list)
    hints: list[StrictStr] = Field(default_factory=list)
    error: StrictStr | None = None


class _StartupPassRecord(_Record):
    """One start-up pass of `bench --cold` (docs/results-format.md, "startup")."""

    export_s: _Finite | None = None
    export_hit: StrictBool | None = None
    convert_s: _Finite | None = None
    convert_hit: StrictBool | None = None
    worker: StartupTimes | None = None
    ready_s: _Finite | None = None
    error: StrictStr | None = None


class _StartupRecord(_Record):
    """What starting a combination costs (infercmp.run.startup)."""

    as_run: StartupTimes | None = None
    prepared: _StartupPassRecord | None = None  # the run's own export and conversion
    cold: _StartupPassRecord | None = None
    warm: _StartupPassRecord | None = None
    caches_cleared: list[StrictStr] = Field(default_factory=list)
    not_cleared: StrictStr | None = None


def _checked_by(model: type[BaseModel]):
    """An AfterValidator that checks a plain dict against `model` and keeps the dict itself."""
    adapter = TypeAdapter(model)

    def check(value: dict[str, Any]) -> dict[str, Any]:
        adapter.validate_python(value)
        return value

    return AfterValidator(check)


def _safe_combo_id(value: str) -> str:
    # The id names files in the run directory: nothing read from a file may point outside it.
    if safe_name(value) != value:
        raise ValueError(f"combo_id {value!r} is not filesystem-safe; build it with combo_id()")
    return value


class NodeInfo(BaseModel):
    """Where a worker process ran: the host, its CPU and, for CUDA, the GPU it used.

    Filled by the executor on the node itself (`infercmp.platform.host.node_facts`); a run on
    one machine records it too, so runs from several machines group the same way.
    """

    model_config = ConfigDict(extra="allow")

    hostname: StrictStr | None = None
    cpu_model: StrictStr | None = None
    gpu_name: StrictStr | None = None
    gpu_uuid: StrictStr | None = None
    gpu_index: _Count | None = None  # NVML's index on that node (not CUDA's)
    driver_version: StrictStr | None = None
    cuda_visible_devices: StrictStr | None = None
    ray_node_id: StrictStr | None = None  # only under `--executor ray`


class ProcessSummary(BaseModel):
    """One worker process of a combination (`--repeat` runs several, in fresh processes)."""

    model_config = ConfigDict(extra="ignore")

    process: int
    pid: int | None = None
    iterations: int
    p50_ms: float
    measure_seconds: float
    load_seconds: float | None = None
    stop_reason: str | None = None
    node: NodeInfo | None = None
    # A CPU worker's cache-line round trip between two of its CPUs, ns, just before and just
    # after it ran: the host's placement of the CPUs (infercmp.platform.placement).
    cpu_handoff_ns: list[float | None] | None = None
    # CPUs the worker kept busy while measuring (the process sampler's mean; None: too few
    # readings). About one: the engine ran on one thread, which the placement does not move.
    worker_cpus: float | None = None


class CombinationResult(BaseModel):
    """Everything measured for one model x engine x device x precision x shape."""

    model_config = ConfigDict(extra="ignore")

    combo_id: Annotated[StrictStr, AfterValidator(_safe_combo_id)]
    model: StrictStr
    engine: StrictStr
    device: StrictStr
    precision: StrictStr
    shape_label: StrictStr
    example_shapes: list[list[_Count]] = Field(default_factory=list)
    runtime_shapes: dict[str, list[_Count]] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    # The options the user asked for, as typed in `--engine NAME[...]`; `options` also holds
    # the engine's effective defaults.
    variant: StrictStr | None = None
    status: ComboStatus
    error: StrictStr | None = None
    iterations: _Count = 0
    # LatencyStats.to_dict() of wall.total, and of device.total (CUDA events) where measured.
    latency: Annotated[dict[str, Any], _checked_by(_LatencyRecord)] | None = None
    device_latency: Annotated[dict[str, Any], _checked_by(_LatencyRecord)] | None = None
    peak_rss_bytes: _Count | None = None
    peak_vram_bytes: _Count | None = None  # this process, from NVML
    # Per timed iteration, which is one request: a whole batch (the name predates batches).
    energy_j_per_inference: _Finite | None = None
    load_seconds: _Finite | None = None
    # What starting it costs: the measured run's first process (as_run) and, with bench
    # --cold, a cold and a warm start (infercmp.run.startup); None: no worker answered.
    startup: Annotated[dict[str, Any], _checked_by(_StartupRecord)] | None = None
    # What the engine reported of itself: library versions, providers, and for PyTorch on
    # CUDA the caching allocator's peak (torch_max_memory_reserved_bytes).
    engine_info: dict[str, Any] = Field(default_factory=dict)
    parity: Annotated[dict[str, Any], _checked_by(_ParityRecord)] | None = None
    warnings: list[StrictStr] = Field(default_factory=list)
    started: StrictStr | None = None
    finished: StrictStr | None = None
    # Where a combination that did not end ok stopped (worker phase) and its traceback.
    phase: StrictStr | None = None
    traceback: StrictStr | None = None
    stop_reason: StrictStr | None = None  # why the (last) process stopped measuring
    ci_method: StrictStr | None = None  # how latency's ci_low_ms/ci_high_ms were computed
    processes: list[ProcessSummary] = Field(default_factory=list)
    energy_method: StrictStr | None = None  # "energy counter", "integrated power", "n/a: why"
    gpu_util_pct: _Finite | None = None  # mean over the measure windows (None: too few)
    gpu_util_readings: _Count = 0
    # CPUs used by other processes while measuring (None: too few readings); see
    # infercmp.sampler.usage.background_load.
    background_cpus: _Finite | None = None
    node: NodeInfo | None = None  # where its (first) worker process ran; None: no worker ran
    # contract.Load.model_dump() when a --batch/--concurrency/--scenario flag was given, else
    # None; and what that load achieved (infercmp.workload.scenarios.LoadSummary), where measured.
    load: Annotated[dict[str, Any], _checked_by(Load)] | None = None
    load_result: Annotated[dict[str, Any], _checked_by(LoadResult)] | None = None
    # `bench --accuracy`: task metrics and agreement with PyTorch fp32 (infercmp.run.accuracy);
    # None when not asked, or when the combination measured nothing.
    accuracy: Annotated[dict[str, Any], _checked_by(_AccuracyRecord)] | None = None
    # `bench --profile`: per-module and per-kind times of the engine's own profiler
    # (infercmp.run.profile); None when not asked, or when the combination measured nothing.
    profile: Annotated[dict[str, Any], _checked_by(_ProfileRecord)] | None = None


def _iso_time(value: str) -> str:
    _dt.datetime.fromisoformat(value)  # raises ValueError: not an ISO 8601 time
    return value


_IsoTime = Annotated[StrictStr, AfterValidator(_iso_time)]


class _GpuRecord(_Record):
    name: StrictStr | None = None
    index: _Count | None = None
    driver_version: StrictStr | None = None
    cuda_driver_version: StrictStr | None = None
    memory_total_bytes: _Count | None = None
    compute_capability: StrictStr | None = None


class _NvmlRecord(_Record):
    available: StrictBool = False
    reason: StrictStr | None = None
    driver_version: StrictStr | None = None
    cuda_driver_version: StrictStr | None = None


class _EnvironmentRecord(_Record):
    """`infercmp.platform.host.collect_environment()`'s keys that readers rely on."""

    hostname: StrictStr | None = None
    cpu_model: StrictStr | None = None
    cpu_logical_cores: _Count | None = None
    cpu_physical_cores: _Count | None = None
    cpu_affinity_cores: _Count | None = None
    ram_total_bytes: _Count | None = None
    libraries: dict[str, StrictStr | None] = Field(default_factory=dict)
    nvml: _NvmlRecord | None = None
    gpus: list[_GpuRecord] = Field(default_factory=list)


class _WriterRecord(_Record):
    pid: StrictInt | None = None
    hostname: StrictStr | None = None


class RunInfo(_Record):
    """run.json: the store's keys, and those bench writes beside them."""

    schema_version: StrictInt
    infercmp_version: StrictStr | None = None
    model: StrictStr = ""
    status: RunStatus = "running"
    detail: StrictStr | None = None
    started: _IsoTime | None = None
    finished: _IsoTime | None = None
    combinations: _Count | None = None
    writer: _WriterRecord | None = None
    argv: list[StrictStr] | None = None
    config: dict[str, Any] | None = None
    model_config_: dict[str, Any] | None = Field(default=None, alias="model_config")
    settings: dict[str, Any] | None = None
    # The command's flags that decide what is measured (bench's: `--resume RUN` reuses them).
    flags: dict[str, Any] | None = None
    environment: _EnvironmentRecord | None = None


def validation_error(file: Path, what: str, exc: ValidationError) -> InfercmpError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the whole file"
    return InfercmpError(
        f"{file} holds an invalid {what} ({where}: {first['msg']}); the run directory is damaged "
        "or was not written by infercmp: re-run the bench"
    )


def validated_result(item: Any, file: Path) -> CombinationResult:
    """`item` as a CombinationResult, or one error naming `file` and the first bad key."""
    try:
        return CombinationResult.model_validate(item)
    except ValidationError as exc:
        raise validation_error(file, "combination result", exc) from exc


def read_json(path: Path, what: str) -> Any:
    """The JSON in `path`, or one error saying that the `what` it holds is damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InfercmpError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            f"the {what} is damaged: re-run the bench"
        ) from exc
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise InfercmpError(f"cannot read {path}: {exc}") from exc
