"""The run directory: a versioned store of a bench run, committed one combination at a time.

Layout (the contract is ``docs/results-format.md``)::

    <root>/<YYYYmmdd-HHMMSS>-<model>/
        run.json                     schema version, infercmp version, status, times, argv, env
        results.jsonl                the commit log: one line per finished combination
        writer.lock                  flock-ed by the one process writing the run
        latency/<combo>.<n>.parquet  one row per iteration, clock and phase (raw nanoseconds)
        samples/<combo>.<n>.parquet  one row per sampler reading, tagged with the worker's phase

A combination is committed by appending its line to results.jsonl after its parquet files are
on disk (``n`` is the line's commit number), so a commit costs the same however large the run
is, and a signal or crash at any instant leaves the previous consistent run or the new one.
Runs of schema version 1 (summary.json, whole-run parquet files) are still read.

One process writes a run: it holds an exclusive `flock` on writer.lock from creating (or
reopening) the run to its end, so a second writer is refused, and a run that says "running"
while nobody holds the lock was abandoned (its writer was killed). A lock, not a pid, because
a pid means nothing in another PID namespace or on another host sharing the directory.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Literal

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

from infercmp.core.contract import Load, LoadResult
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.core.files import write_atomic

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

SCHEMA_VERSION = 2
# Version 1 is the layout before the commit log (summary.json, whole-run parquet files); runs
# published in it (docs/results/) are still read.
READABLE_SCHEMA_VERSIONS = (1, 2)

RUN_FILE = "run.json"
RESULTS_LOG = "results.jsonl"
WRITER_LOCK = "writer.lock"
LATENCY_DIR = "latency"
SAMPLES_DIR = "samples"
# Files of schema version 1, read only.
SUMMARY_FILE = "summary.json"
LATENCY_FILE = "latency.parquet"
SAMPLES_FILE = "samples.parquet"

RunStatus = Literal["running", "complete", "interrupted", "failed"]
ComboStatus = Literal["ok", "failed", "skipped", "timeout", "crashed", "oom", "interrupted"]

# Keys of run.json owned by the store; the caller's meta may not reuse them.
_RESERVED_KEYS = frozenset(
    {
        "schema_version",
        "infercmp_version",
        "model",
        "status",
        "detail",
        "started",
        "finished",
        "writer",
    }
)

LATENCY_CLOCKS = ("wall", "device")
LATENCY_PHASES = ("total", "h2d", "compute", "d2h")

# Sampler columns with fixed types, always present in samples.parquet so scripts can rely on
# them (null where that sampler did not run). Columns from third-party samplers are added as
# Float64 after these.
SAMPLE_COLUMNS: dict[str, str] = {
    "t_s": "Float64",
    "time": "Float64",
    "phase": "String",
    "process": "Int64",
    "proc_rss_bytes": "Int64",
    "proc_cpu_pct": "Float64",
    "sys_cpu_pct": "Float64",
    "sys_ram_used_bytes": "Int64",
    "gpu_util_pct": "Float64",
    "gpu_mem_used_bytes": "Int64",
    "proc_gpu_mem_bytes": "Int64",
    "gpu_power_w": "Float64",
    "gpu_energy_mj": "Int64",
    "gpu_index": "Int64",  # NVML's index of the GPU sampled: the one the worker uses
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ID_LEN = 120  # leaves room for ".json" and temp-file affixes under the 255-byte name limit


# --------------------------------------------------------------------------- ids and names


def safe_name(text: str, max_len: int = _MAX_ID_LEN) -> str:
    """`text` reduced to [A-Za-z0-9._-], never empty, '.', '..' or hidden, at most `max_len`.

    When anything had to change, a short hash of the original is appended so two different
    names cannot collide on disk (``a/b`` and ``a_b`` stay distinct).
    """
    cleaned = _UNSAFE.sub("_", text)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if cleaned == text and 0 < len(cleaned) <= max_len:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def combo_id(
    engine: str,
    device: str,
    precision: str,
    shape_label: str,
    variant: str | None = None,
    load_label: str = "",
) -> str:
    """The filesystem-safe id of one combination, e.g. ``onnxruntime-cpu-fp32-224x224x3``.

    Used as a file name under the run directory, so nothing in it can escape that directory.
    """
    parts = [engine, device, precision, shape_label]
    if variant:
        parts.append(variant)
    if load_label:  # contract.Load.label: "" for one request at a time at the model's batch
        parts.append(load_label)
    return safe_name("-".join(parts))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).astimezone()


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- models
#
# One validated model per stored file. Bench builds results through them, and every reader
# (report, compare, scripts using RunStore.open) gets files through them, so a run written by
# someone else, damaged or hand-edited, is one clear error instead of a crash in a report.

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

    Filled by the executor on the node itself (`infercmp.platform.environment.node_facts`); a run on
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
    # infercmp.sampler.aggregate.background_load.
    background_cpus: _Finite | None = None
    node: NodeInfo | None = None  # where its (first) worker process ran; None: no worker ran
    # contract.Load.model_dump() when a --batch/--concurrency/--scenario flag was given, else
    # None; and what that load achieved (infercmp.workload.scenarios.LoadSummary), where measured.
    load: Annotated[dict[str, Any], _checked_by(Load)] | None = None
    load_result: Annotated[dict[str, Any], _checked_by(LoadResult)] | None = None


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
    """`infercmp.platform.environment.collect_environment()`'s keys that readers rely on."""

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


def _validation_error(file: Path, what: str, exc: ValidationError) -> InfercmpError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the whole file"
    return InfercmpError(
        f"{file} holds an invalid {what} ({where}: {first['msg']}); the run directory is damaged "
        "or was not written by infercmp: re-run the bench"
    )


# --------------------------------------------------------------------------- frames


def _polars_dtype(name: str):
    import polars as pl

    return getattr(pl, name)


def latency_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "combo_id": pl.String,
        "iteration": pl.Int64,
        "clock": pl.String,
        "phase": pl.String,
        "ns": pl.Int64,
        # The worker process (0..N-1) of a combination measured in N processes; runs of schema
        # version 1 and single-process runs read as process 0.
        "process": pl.Int64,
    }


def samples_schema(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    import polars as pl

    schema: dict[str, Any] = {"combo_id": pl.String}
    schema.update({name: _polars_dtype(dtype) for name, dtype in SAMPLE_COLUMNS.items()})
    schema.update({name: pl.Float64 for name in extra if name not in schema})
    return schema


LatencyArrays = Mapping[str, "np.ndarray"]


def latency_frame(combo: str, latency: LatencyArrays | Sequence[LatencyArrays]) -> pl.DataFrame:
    """Long-format rows from npz-like arrays keyed ``<clock>.<phase>`` (int64 nanoseconds).

    A sequence of such mappings is one per worker process, numbered 0, 1, ... in order.
    """
    import numpy as np
    import polars as pl

    per_process = [latency] if isinstance(latency, Mapping) else list(latency)
    parts = []
    for process, arrays in enumerate(per_process):
        for key in sorted(arrays.keys()):
            clock, sep, phase = key.partition(".")
            if not sep or not clock or not phase:
                raise ValueError(f"latency key {key!r} is not '<clock>.<phase>'")
            ns = np.asarray(arrays[key]).astype(np.int64, copy=False).ravel()
            parts.append(
                pl.DataFrame(
                    {
                        "combo_id": pl.Series([combo] * len(ns), dtype=pl.String),
                        "iteration": pl.Series(np.arange(len(ns), dtype=np.int64)),
                        "clock": pl.Series([clock] * len(ns), dtype=pl.String),
                        "phase": pl.Series([phase] * len(ns), dtype=pl.String),
                        "ns": pl.Series(ns),
                        "process": pl.Series(np.full(len(ns), process, dtype=np.int64)),
                    },
                    schema=latency_schema(),
                )
            )
    if not parts:
        return pl.DataFrame(schema=latency_schema())
    return pl.concat(parts)


def samples_frame(combo: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Sampler rows (dicts from `SamplingSession.rows`) as a frame with the fixed columns."""
    import polars as pl

    extra = tuple(
        dict.fromkeys(k for row in rows for k in row if k not in SAMPLE_COLUMNS and k != "combo_id")
    )
    schema = samples_schema(extra)
    columns: dict[str, Any] = {"combo_id": [combo] * len(rows)}
    for name in schema:
        if name != "combo_id":
            columns[name] = [row.get(name) for row in rows]
    return pl.DataFrame(columns, schema=schema, strict=False)


def _frame_kind(dtype: Any) -> str:
    import polars as pl

    if dtype == pl.String:
        return "text"
    if dtype.is_integer():
        return "integer"
    if dtype.is_numeric():
        return "number"
    if dtype == pl.Null:
        return "null"
    return str(dtype)


def _validated_frame(
    frame: pl.DataFrame, file: Path, schema: dict[str, Any], required: tuple[str, ...]
) -> pl.DataFrame:
    """`frame` with `schema`'s columns in their types, or one error naming the bad column.

    Optional columns that are missing are added as nulls (old runs have no `process`: 0);
    columns beyond the schema (third-party samplers) must be numbers.
    """
    import polars as pl

    def bad(column: str, why: str) -> InfercmpError:
        return InfercmpError(
            f"{file}: column '{column}' {why}; the run directory is damaged or was not written "
            "by infercmp: re-run the bench"
        )

    wanted = {**schema, **{c: pl.Float64 for c in frame.columns if c not in schema}}
    columns = []
    for name, dtype in wanted.items():
        if name not in frame.columns:
            if name in required:
                raise bad(name, "is missing")
            fill = 0 if name == "process" else None
            columns.append(pl.lit(fill, dtype=dtype).alias(name))
            continue
        have, need = _frame_kind(frame.schema[name]), _frame_kind(dtype)
        fits = have == need or have == "null" or (need == "number" and have == "integer")
        if not fits:
            raise bad(name, f"holds {have} values where {need} values belong")
        columns.append(pl.col(name).cast(dtype))
    return frame.select(columns)


def _aligned_concat(frames: list[pl.DataFrame], base_schema: dict[str, Any]) -> pl.DataFrame:
    """Concatenate frames whose extra columns differ, keeping the fixed columns first."""
    import polars as pl

    frames = [f for f in frames if f is not None]
    if not frames:
        return pl.DataFrame(schema=base_schema)
    return pl.concat(frames, how="diagonal_relaxed")


def _read_parquet(file: Path) -> pl.DataFrame | None:
    import polars as pl

    if not file.is_file():
        return None
    try:
        return pl.read_parquet(file)
    except Exception as exc:  # polars raises several types for a damaged file
        raise InfercmpError(f"{file} cannot be read as parquet ({exc}); re-run the bench") from exc


def _write_parquet(path: Path, frame: pl.DataFrame) -> None:
    write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd"))


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


# --------------------------------------------------------------------------- the store


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InfercmpError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            f"the {what} is damaged: re-run the bench"
        ) from exc
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise InfercmpError(f"cannot read {path}: {exc}") from exc


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _append(log: Path, line: bytes) -> None:
    """Append one whole line to `log` and fsync it; a part of a line is never left behind.

    A short write (a full disk) is taken back, so the next commit starts on a line of its own;
    a signal cannot split a write to a regular file, it lands before or after it.
    """
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            if start < os.fstat(fd).st_size < start + len(line):
                os.ftruncate(fd, start)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


# How long a writer retries a lock held for an instant by a reader testing it (`writer_alive`).
_LOCK_PATIENCE_S = 0.5


def _hold_writer_lock(path: Path) -> BinaryIO:
    """Take the run's writer lock, held until the returned file is closed (or the process ends).

    Another process holding it is one line (exit 2): two writers would interleave their
    commits and worker directories.
    """
    # O_NONBLOCK: a FIFO planted at that name must not hang the open (it fails with ENXIO).
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        lock = os.fdopen(os.open(path / WRITER_LOCK, flags, 0o666), "ab")
    except OSError as exc:
        raise RunFailed(f"cannot write the run directory {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(lock.fileno()).st_mode):
        lock.close()
        raise InfercmpError(f"{path / WRITER_LOCK} is not a regular file; the run is damaged")
    deadline = time.monotonic() + _LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            lock.close()
            raise _written_elsewhere(path) from None
        except OSError as exc:
            lock.close()
            raise RunFailed(
                f"cannot lock {path / WRITER_LOCK}: {exc.strerror or exc}; the file system may "
                "not support locks"
            ) from exc


def _written_elsewhere(path: Path) -> InfercmpError:
    return InfercmpError(
        f"{path} is being written by another infercmp process (it holds {WRITER_LOCK}); "
        "wait for it to end or stop it, then resume the run"
    )


def check_not_written(path: Path) -> None:
    """One line if another process writes the run now (before preparing work for it; the
    lock itself is what keeps a second writer out)."""
    if writer_alive(path):
        raise _written_elsewhere(Path(path))


def writer_alive(path: Path) -> bool | None:
    """Whether a process holds the run's writer lock; None where that cannot be tested (a run
    written before the lock existed, or a lock file this user cannot open)."""
    try:
        fd = os.open(Path(path) / WRITER_LOCK, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


def _cut_partial_line(log: Path) -> None:
    """Cut results.jsonl back to its last complete line: what follows is a commit a crash cut
    short, which readers ignore and an appended line must not be glued to."""
    with open(log, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(keep, 1 << 16)
            fh.seek(keep - step)
            chunk = fh.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = keep - step + newline + 1
                break
            keep -= step
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


# The files at the top of a run directory (tune.json: `infercmp.tune.search.TUNE_FILE`).
_RUN_TOP_FILES = (RUN_FILE, RESULTS_LOG, WRITER_LOCK, "tune.json")


def run_owning(path: Path) -> Path | None:
    """The run directory whose own file `path` is (run.json, results.jsonl, a parquet file,
    a worker's file ...), or None: an output such as a report must never replace one."""
    target = Path(os.path.realpath(path))
    for depth, folder in enumerate(list(target.parents)[:3]):
        if (folder / RUN_FILE).is_file() and (folder / RESULTS_LOG).exists():
            return folder if depth > 0 or target.name in _RUN_TOP_FILES else None
    return None


class RunStore:
    """One run directory, written by `bench` and read by `report` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        results: list[CombinationResult],
        commits: dict[str, int] | None = None,
    ):
        self._path = path
        self._info = info
        self._results = results
        self._lock: BinaryIO | None = None  # held while this store writes (`_hold_writer_lock`)
        # combo_id -> commit number of its line in results.jsonl; None: a schema 1 run.
        self._commits = commits
        self._next_commit = max(commits.values(), default=0) + 1 if commits is not None else 1

    # ----------------------------------------------------------------- writing

    @classmethod
    def create(cls, root: Path, model: str, meta: dict[str, Any]) -> RunStore:
        """Make a new run directory under `root` and write its run.json (status "running").

        `meta` holds the caller's metadata (``argv``, ``config``, ``settings``, ``environment``);
        its keys sit at the top level of run.json beside the store's own keys.
        """
        clash = sorted(_RESERVED_KEYS & set(meta))
        if clash:
            raise ValueError(f"meta keys {clash} are reserved by the run store")
        from infercmp import __version__

        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfercmpError(f"cannot create the results directory {root}: {exc}") from exc
        started = _now()
        stem = f"{started:%Y%m%d-%H%M%S}-{safe_name(model, 80)}"
        path = root / stem
        # mkdir without exist_ok is the atomic claim: two runs starting in the same second (or
        # in two processes) get distinct directories and never share or overwrite one.
        for attempt in range(1, 10_000):
            path = root / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise InfercmpError(f"cannot create the run directory {path}: {exc}") from exc
        else:  # pragma: no cover - ten thousand runs in one second
            raise InfercmpError(f"cannot find a free run directory name under {root}")
        info = {
            "schema_version": SCHEMA_VERSION,
            "infercmp_version": __version__,
            "model": model,
            "status": "running",
            "detail": None,
            "started": _iso(started),
            "finished": None,
            "writer": {"pid": os.getpid(), "hostname": socket.gethostname()},
            **meta,
        }
        lock = None
        try:
            lock = _hold_writer_lock(path)  # first: nobody else may write it, ever
            (path / LATENCY_DIR).mkdir()
            (path / SAMPLES_DIR).mkdir()
            write_atomic(path / RESULTS_LOG, b"")
            _write_json(path / RUN_FILE, info)  # last: a directory with run.json is a run
        except (OSError, InfercmpError) as exc:
            # A run directory without its run.json is no run: leave nothing half-made behind.
            shutil.rmtree(path, ignore_errors=True)
            if lock is not None:
                lock.close()
            if isinstance(exc, InfercmpError):
                raise
            raise RunFailed(
                f"cannot write the run directory {path}: {exc.strerror or exc}"
            ) from exc
        store = cls(path, info, [], {})
        store._hold(lock)
        return store

    @classmethod
    def continue_run(cls, path: Path) -> RunStore:
        """Open an existing run to write more into it (`bench --resume`), holding its writer lock.

        A run another process writes is refused with one line; a commit a crash cut short is
        cut off results.jsonl first. The run keeps its status until `reopen`.
        """
        store = cls.open(path)  # one clear error for anything that is not a readable run
        if store._commits is None:
            raise InfercmpError(f"{path} is a schema version 1 run; it cannot be extended")
        if writer_alive(store.path) is None and store.status == "running" and not store.abandoned:
            # Written before the lock existed: its writer's pid, if on this host, is the test.
            writer = store.meta.get("writer") or {}
            if writer.get("hostname") == socket.gethostname():
                raise InfercmpError(
                    f"{path} is still being written by process {writer.get('pid')} on "
                    f"{writer.get('hostname')}; wait for it to end or stop it, then resume it"
                )
        lock = _hold_writer_lock(store.path)
        try:
            _cut_partial_line(store.path / RESULTS_LOG)
            store = cls.open(path)  # read again: it may have changed until the lock was ours
        except OSError as exc:
            lock.close()
            raise RunFailed(f"cannot write the run directory {path}: {_strerror(exc)}") from exc
        except BaseException:
            lock.close()
            raise
        store._hold(lock)
        return store

    def _hold(self, lock: BinaryIO) -> None:
        self._lock = lock
        # Released when the store goes, too: a forgotten close must not lock the run for good.
        weakref.finalize(self, lock.close)

    def close(self) -> None:
        """Release the writer lock (the process's end releases it as well)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _data_file(self, kind: str, cid: str, commit: int) -> Path:
        return self._path / kind / f"{cid}.{commit}.parquet"

    def add_result(
        self,
        result: CombinationResult,
        latency: LatencyArrays | Sequence[LatencyArrays] | None,
        samples: list[dict[str, Any]] | None,
    ) -> None:
        """Commit one finished combination now; a result with the same combo_id is replaced.

        `latency` is one mapping ``<clock>.<phase> -> int64 ns`` per worker process (a single
        mapping: one process). The combination's parquet files are written first, each
        atomically; appending its line to results.jsonl is the commit. Nothing already on disk
        is rewritten, so the cost does not grow with the run, and a signal at any instant
        leaves either the previous run or the new one.
        """
        if self._commits is None:
            raise RunFailed(f"{self._path} is a schema version 1 run; it is read only")
        result = CombinationResult.model_validate(result.model_dump())  # re-check after edits
        cid, commit = result.combo_id, self._next_commit
        log = self._path / RESULTS_LOG
        start = log.stat().st_size
        written: list[Path] = []
        line = b""
        try:
            for kind, frame in (
                (LATENCY_DIR, latency_frame(cid, latency) if latency else None),
                (SAMPLES_DIR, samples_frame(cid, samples) if samples else None),
            ):
                if frame is not None:
                    path = self._data_file(kind, cid, commit)
                    written.append(path)
                    _write_parquet(path, frame)
            record = {"commit": commit, **result.model_dump(mode="json")}
            line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
            _append(log, line)
        except BaseException:
            # A signal or error may have come at any point, even just after the line was
            # written: the log's size says whether the combination is committed. If it is not,
            # its files go (a reader would ignore them anyway).
            if line and log.stat().st_size == start + len(line):
                self._remember(result, commit)
            else:
                for path in written:
                    with contextlib.suppress(OSError):
                        path.unlink()
            raise
        self._remember(result, commit)

    def _remember(self, result: CombinationResult, commit: int) -> None:
        cid = result.combo_id
        previous = self._commits.get(cid)
        self._results = [r for r in self._results if r.combo_id != cid] + [result]
        self._commits[cid] = commit
        self._next_commit = commit + 1
        if previous is not None:  # superseded files: no reader looks at them any more
            for kind in (LATENCY_DIR, SAMPLES_DIR):
                with contextlib.suppress(OSError):
                    self._data_file(kind, cid, previous).unlink()

    def finish(
        self, status: Literal["complete", "interrupted", "failed"], detail: str | None = None
    ) -> None:
        """Record how the run ended (and when) in run.json."""
        if status not in ("complete", "interrupted", "failed"):
            raise ValueError(f"run status {status!r} is not complete, interrupted or failed")
        info = dict(self._info)
        info.update(
            status=status,
            detail=detail,
            finished=_iso(_now()),
            combinations=len(self._results),
        )
        _write_json(self._path / RUN_FILE, info)
        self._info = info

    def reopen(self) -> None:
        """Mark a run opened with `continue_run` "running" again, written by this process."""
        if self._commits is None:
            raise RunFailed(f"{self._path} is a schema version 1 run; it is read only")
        if self._lock is None:
            raise RuntimeError("reopen() needs the writer lock: open the run with continue_run()")
        info = dict(self._info)
        resumed = [*info.get("resumed", []), _iso(_now())]
        info.update(
            status="running",
            detail=None,
            finished=None,
            resumed=resumed,
            writer={"pid": os.getpid(), "hostname": socket.gethostname()},
        )
        try:
            _write_json(self._path / RUN_FILE, info)
        except OSError as exc:
            raise RunFailed(
                f"cannot write the run directory {self._path}: {_strerror(exc)}"
            ) from exc
        self._info = info

    # ----------------------------------------------------------------- reading

    @classmethod
    def open(cls, path: Path) -> RunStore:
        """Open an existing run directory, checking every file against its model."""
        path = Path(path)
        if not path.exists():
            raise InfercmpError(f"{path} does not exist; pass a run directory made by 'bench'")
        if not path.is_dir():
            raise InfercmpError(f"{path} is not a directory; pass a run directory made by 'bench'")
        run_file = path / RUN_FILE
        if not run_file.is_file():
            raise InfercmpError(
                f"{path} is not an infercmp run directory (no {RUN_FILE}); "
                "pass a directory made by 'bench'"
            )
        info = _read_json(run_file, "run metadata")
        if not isinstance(info, dict) or "schema_version" not in info:
            raise InfercmpError(f"{run_file} has no schema_version; it was not written by infercmp")
        version = info["schema_version"]
        if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
            raise InfercmpError(
                f"{path} uses results schema version {version!r}; this infercmp reads versions "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: open it with the infercmp "
                f"version that wrote it ({info.get('infercmp_version', 'unknown')})"
            )
        try:
            RunInfo.model_validate(info)
        except ValidationError as exc:
            raise _validation_error(run_file, "run metadata", exc) from exc
        if version == 1:
            return cls(path, info, _read_summary(path), None)
        results, commits = _read_log(path)
        return cls(path, info, results, commits)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def meta(self) -> dict[str, Any]:
        """The whole of run.json: the store's keys and the caller's (argv, environment, ...)."""
        return self._info

    @property
    def model(self) -> str:
        return self._info.get("model", "")

    @property
    def status(self) -> str:
        """running, complete, interrupted or failed (see also `abandoned`)."""
        return self._info.get("status", "running")

    @property
    def abandoned(self) -> bool:
        """True when run.json says "running" but no process writes it any more: nobody holds
        its writer lock (runs from before the lock: its writer's pid on this host is gone)."""
        if self.status != "running":
            return False
        alive = writer_alive(self._path)
        if alive is not None:
            return not alive
        writer = self._info.get("writer") or {}
        pid = writer.get("pid")
        if writer.get("hostname") != socket.gethostname() or not isinstance(pid, int):
            return False  # cannot tell from here
        if pid <= 0:
            return True  # no process ever had that id
        try:
            import psutil

            return not psutil.pid_exists(pid)
        except (ImportError, OverflowError, ValueError):  # pragma: no cover
            return False

    @property
    def results(self) -> list[CombinationResult]:
        return list(self._results)

    def _frames(self, kind: str, old_file: str, schema: dict[str, Any], required) -> pl.DataFrame:
        import polars as pl

        if self._commits is None:  # schema version 1: one file; rows beyond the summary ignored
            file = self._path / old_file
            frame = _read_parquet(file)
            if frame is None:
                return pl.DataFrame(schema=schema)
            frame = _validated_frame(frame, file, schema, required)
            return frame.filter(pl.col("combo_id").is_in([r.combo_id for r in self._results]))
        frames = []
        for result in self._results:
            file = self._data_file(kind, result.combo_id, self._commits[result.combo_id])
            frame = _read_parquet(file)
            if frame is not None:
                frame = _validated_frame(frame, file, schema, required)
                frames.append(frame.filter(pl.col("combo_id") == result.combo_id))
        return _aligned_concat(frames, schema)

    def latency(self) -> pl.DataFrame:
        """combo_id, iteration, clock, phase, ns (int64), process: one row per measurement."""
        return self._frames(
            LATENCY_DIR,
            LATENCY_FILE,
            latency_schema(),
            ("combo_id", "iteration", "clock", "phase", "ns"),
        )

    def samples(self) -> pl.DataFrame:
        """combo_id, t_s, time, phase and every sampler column (see SAMPLE_COLUMNS)."""
        return self._frames(SAMPLES_DIR, SAMPLES_FILE, samples_schema(), ("combo_id", "t_s"))

    def __repr__(self) -> str:
        return f"RunStore({str(self._path)!r}, status={self.status!r})"


def _validated_result(item: Any, file: Path) -> CombinationResult:
    try:
        return CombinationResult.model_validate(item)
    except ValidationError as exc:
        raise _validation_error(file, "combination result", exc) from exc


def _read_summary(path: Path) -> list[CombinationResult]:
    """Schema version 1: summary.json lists the committed combinations."""
    summary_file = path / SUMMARY_FILE
    if not summary_file.is_file():
        raise InfercmpError(f"{path} has no {SUMMARY_FILE}; the run directory is incomplete")
    raw = _read_json(summary_file, "summary")
    if not isinstance(raw, list):
        raise InfercmpError(f"{summary_file} is not a list of combination results")
    return [_validated_result(item, summary_file) for item in raw]


def _read_log(path: Path) -> tuple[list[CombinationResult], dict[str, int]]:
    """The committed combinations of results.jsonl: the last line of each combo_id wins."""
    log = path / RESULTS_LOG
    if not log.is_file():
        raise InfercmpError(f"{path} has no {RESULTS_LOG}; the run directory is incomplete")
    try:
        raw = log.read_bytes()
    except OSError as exc:
        raise InfercmpError(f"cannot read {log}: {exc}") from exc
    # Only whole lines are commits: text after the last newline is an append cut short.
    lines = raw.split(b"\n")[:-1]
    latest: dict[str, tuple[int, CombinationResult]] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise InfercmpError(
                f"{log} line {number} is not a JSON object; the run directory is damaged: "
                "re-run the bench"
            ) from exc
        commit = record.get("commit") if isinstance(record, dict) else None
        if isinstance(commit, bool) or not isinstance(commit, int) or not 0 < commit < 2**63:
            raise InfercmpError(
                f"{log} line {number} has no commit number; the run directory is damaged: "
                "re-run the bench"
            )
        result = _validated_result(record, log)
        latest.pop(result.combo_id, None)  # a replaced combination moves to the end
        latest[result.combo_id] = (commit, result)
    return [r for _, r in latest.values()], {cid: c for cid, (c, _) in latest.items()}


def _started_key(run: Path) -> tuple[_dt.datetime, str]:
    try:
        info = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
        started = _dt.datetime.fromisoformat(info["started"])
        if started.tzinfo is None:
            started = started.astimezone()
    except (OSError, ValueError, KeyError, TypeError):
        started = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return started, run.name


def latest_run(root: Path) -> Path:
    """The most recently started run directory under `root`."""
    root = Path(root)
    try:
        runs = (
            [p for p in root.iterdir() if p.is_dir() and (p / RUN_FILE).is_file()]
            if root.is_dir()
            else []
        )
    except OSError as exc:
        raise InfercmpError(f"cannot list the runs under {root}: {exc}") from exc
    if not runs:
        raise InfercmpError(
            f"no infercmp runs under {root}; "
            "run 'infercmp bench MODEL' first or pass a run directory"
        )
    return max(runs, key=_started_key)
