"""The run directory: one versioned, atomically written store of a bench run's results.

Layout (the contract is ``docs/results-format.md``)::

    <root>/<YYYYmmdd-HHMMSS>-<model>/
        run.json            schema version, infercmp version, status, times, argv, config, env
        summary.json        one CombinationResult per finished combination
        latency.parquet     one row per iteration, clock and phase (raw nanoseconds)
        samples.parquet     one row per sampler reading, tagged with the worker's phase
        parity/<combo>.json output-by-output comparison with the PyTorch reference

summary.json is the commit point: every other file is written first, and readers only show
rows of combinations listed in it, so a crash at any moment leaves the previous consistent run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infercmp.errors import InfercmpError, RunFailed

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

SCHEMA_VERSION = 1

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
LATENCY_FILE = "latency.parquet"
SAMPLES_FILE = "samples.parquet"
PARITY_DIR = "parity"

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
    engine: str, device: str, precision: str, shape_label: str, variant: str | None = None
) -> str:
    """The filesystem-safe id of one combination, e.g. ``onnxruntime-cpu-fp32-224x224x3``.

    Used as a file name under the run directory, so nothing in it can escape that directory.
    """
    parts = [engine, device, precision, shape_label]
    if variant:
        parts.append(variant)
    return safe_name("-".join(parts))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).astimezone()


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- models


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


class CombinationResult(BaseModel):
    """Everything measured for one model x engine x device x precision x shape."""

    model_config = ConfigDict(extra="ignore")

    combo_id: str
    model: str
    engine: str
    device: str
    precision: str
    shape_label: str
    example_shapes: list[list[int]] = Field(default_factory=list)
    runtime_shapes: dict[str, list[int]] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    # The options the user asked for, as typed in `--engine NAME[...]`; `options` also holds
    # the engine's effective defaults.
    variant: str | None = None
    status: ComboStatus
    error: str | None = None
    iterations: int = 0
    latency: dict[str, float] | None = None  # LatencyStats.to_dict() of wall.total
    device_latency: dict[str, float] | None = None  # LatencyStats.to_dict() of device.total
    peak_rss_bytes: int | None = None
    peak_vram_bytes: int | None = None  # this process, from NVML
    energy_j_per_inference: float | None = None
    load_seconds: float | None = None
    # What the engine reported of itself: library versions, providers, and for PyTorch on
    # CUDA the caching allocator's peak (torch_max_memory_reserved_bytes).
    engine_info: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    started: str | None = None
    finished: str | None = None
    # Where a combination that did not end ok stopped (worker phase) and its traceback.
    phase: str | None = None
    traceback: str | None = None
    stop_reason: str | None = None  # why the (last) process stopped measuring
    ci_method: str | None = None  # how latency's ci_low_ms/ci_high_ms were computed
    processes: list[ProcessSummary] = Field(default_factory=list)
    energy_method: str | None = None  # "energy counter", "integrated power", "n/a: why"
    gpu_util_pct: float | None = None  # mean over the measure windows (None: too few readings)
    gpu_util_readings: int = 0


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    Readers see the old file or the new one, never a partial one; the temporary file is removed
    if writing fails.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _atomic_write_parquet(path: Path, frame: pl.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.write_parquet(tmp, compression="zstd"))


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
        "process": pl.Int64,  # which worker process of the combination (--repeat); 0 if one
    }


def samples_schema(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    import polars as pl

    schema: dict[str, Any] = {"combo_id": pl.String}
    schema.update({name: _polars_dtype(dtype) for name, dtype in SAMPLE_COLUMNS.items()})
    schema.update({name: pl.Float64 for name in extra if name not in schema})
    return schema


def latency_frame(combo: str, latency: Mapping[str, np.ndarray]) -> pl.DataFrame:
    """Long-format rows from npz-like arrays keyed ``<clock>.<phase>`` (int64 nanoseconds).

    An optional ``process`` array numbers the worker process of each iteration.
    """
    import numpy as np
    import polars as pl

    latency = dict(latency)
    process = latency.pop("process", None)
    parts = []
    for key in sorted(latency.keys()):
        clock, sep, phase = key.partition(".")
        if not sep or not clock or not phase:
            raise ValueError(f"latency key {key!r} is not '<clock>.<phase>'")
        ns = np.asarray(latency[key]).astype(np.int64, copy=False).ravel()
        parts.append(
            pl.DataFrame(
                {
                    "combo_id": pl.Series([combo] * len(ns), dtype=pl.String),
                    "iteration": pl.Series(np.arange(len(ns), dtype=np.int64)),
                    "clock": pl.Series([clock] * len(ns), dtype=pl.String),
                    "phase": pl.Series([phase] * len(ns), dtype=pl.String),
                    "ns": pl.Series(ns),
                    "process": pl.Series(
                        np.zeros(len(ns), dtype=np.int64)
                        if process is None or len(process) != len(ns)
                        else np.asarray(process, dtype=np.int64)
                    ),
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


def _aligned_concat(frames: list[pl.DataFrame], base_schema: dict[str, Any]) -> pl.DataFrame:
    """Concatenate frames whose extra columns differ, keeping the fixed columns first."""
    import polars as pl

    frames = [f for f in frames if f is not None]
    if not frames:
        return pl.DataFrame(schema=base_schema)
    return pl.concat(frames, how="diagonal_relaxed")


# --------------------------------------------------------------------------- the store


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InfercmpError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            f"the {what} is damaged: re-run the bench"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InfercmpError(f"cannot read {path}: {exc}") from exc


class RunStore:
    """One run directory, written by `bench` and read by `report` (see the module docstring)."""

    def __init__(self, path: Path, info: dict[str, Any], results: list[CombinationResult]):
        self._path = path
        self._info = info
        self._results = results

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
        try:
            (path / PARITY_DIR).mkdir()
            _atomic_write_json(path / RUN_FILE, info)
            _atomic_write_json(path / SUMMARY_FILE, [])
        except OSError as exc:
            # A run directory without its run.json is no run: leave nothing half-made behind.
            shutil.rmtree(path, ignore_errors=True)
            raise RunFailed(
                f"cannot write the run directory {path}: {exc.strerror or exc}"
            ) from exc
        return cls(path, info, [])

    def add_result(
        self,
        result: CombinationResult,
        latency: Mapping[str, np.ndarray] | None,
        samples: list[dict[str, Any]] | None,
    ) -> None:
        """Persist one finished combination now; a result with the same combo_id is replaced.

        Order matters: parity, samples and latency first, summary.json (the commit point) last.
        """
        cid = result.combo_id
        if safe_name(cid) != cid:
            raise ValueError(f"combo_id {cid!r} is not filesystem-safe; build it with combo_id()")

        parity_path = self._path / PARITY_DIR / f"{cid}.json"
        if result.parity is not None:
            _atomic_write_json(parity_path, {"combo_id": cid, **result.parity})
        else:
            with contextlib.suppress(FileNotFoundError):
                parity_path.unlink()

        self._replace_rows(
            SAMPLES_FILE, cid, samples_frame(cid, samples) if samples else None, samples_schema()
        )
        self._replace_rows(
            LATENCY_FILE, cid, latency_frame(cid, latency) if latency else None, latency_schema()
        )

        results = [r for r in self._results if r.combo_id != cid] + [result]
        _atomic_write_json(self._path / SUMMARY_FILE, [r.model_dump(mode="json") for r in results])
        self._results = results

    def _replace_rows(
        self, name: str, cid: str, rows: pl.DataFrame | None, schema: dict[str, Any]
    ) -> None:
        """Rewrite one parquet file with `cid`'s old rows swapped for `rows`."""
        import polars as pl

        old = self._read_parquet(name)
        had_rows = old is not None and cid in set(old["combo_id"].unique().to_list())
        if rows is None and not had_rows:
            return
        kept = old.filter(pl.col("combo_id") != cid) if old is not None else None
        _atomic_write_parquet(self._path / name, _aligned_concat([kept, rows], schema))

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
        _atomic_write_json(self._path / RUN_FILE, info)
        self._info = info

    # ----------------------------------------------------------------- reading

    @classmethod
    def open(cls, path: Path) -> RunStore:
        """Open an existing run directory, checking it is one this infercmp can read."""
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
        if version != SCHEMA_VERSION:
            raise InfercmpError(
                f"{path} uses results schema version {version!r}; this infercmp reads version "
                f"{SCHEMA_VERSION}: open it with the infercmp version that wrote it "
                f"({info.get('infercmp_version', 'unknown')})"
            )
        _check_run_info(info, run_file)
        summary_file = path / SUMMARY_FILE
        if not summary_file.is_file():
            raise InfercmpError(f"{path} has no {SUMMARY_FILE}; the run directory is incomplete")
        raw = _read_json(summary_file, "summary")
        if not isinstance(raw, list):
            raise InfercmpError(f"{summary_file} is not a list of combination results")
        try:
            results = [CombinationResult.model_validate(item) for item in raw]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InfercmpError(
                f"{summary_file} holds an invalid combination result ({where}: {first['msg']})"
            ) from exc
        return cls(path, info, results)

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
        """True when run.json says "running" but its writer process on this host is gone."""
        if self.status != "running":
            return False
        writer = self._info.get("writer") or {}
        if writer.get("hostname") != socket.gethostname() or not isinstance(writer.get("pid"), int):
            return False  # cannot tell from here
        try:
            import psutil

            return not psutil.pid_exists(writer["pid"])
        except ImportError:  # pragma: no cover - psutil is a dependency
            return False

    @property
    def results(self) -> list[CombinationResult]:
        return list(self._results)

    def _read_parquet(self, name: str) -> pl.DataFrame | None:
        import polars as pl

        file = self._path / name
        if not file.is_file():
            return None
        try:
            return pl.read_parquet(file)
        except Exception as exc:  # polars raises several types for a damaged file
            raise InfercmpError(
                f"{file} cannot be read as parquet ({exc}); re-run the bench"
            ) from exc

    def _committed(self, name: str, schema: dict[str, Any]) -> pl.DataFrame:
        import polars as pl

        frame = self._read_parquet(name)
        if frame is None:
            return pl.DataFrame(schema=schema)
        # Rows of a combination not (yet) in summary.json belong to a write cut short.
        ids = [r.combo_id for r in self._results]
        return frame.filter(pl.col("combo_id").is_in(ids))

    def latency(self) -> pl.DataFrame:
        """Columns combo_id, iteration, clock, phase, ns (int64): one row per measurement."""
        return self._committed(LATENCY_FILE, latency_schema())

    def samples(self) -> pl.DataFrame:
        """combo_id, t_s, time, phase and every sampler column (see SAMPLE_COLUMNS)."""
        return self._committed(SAMPLES_FILE, samples_schema())

    def __repr__(self) -> str:
        return f"RunStore({str(self._path)!r}, status={self.status!r})"


# The types of run.json's top-level keys (docs/results-format.md), checked on open so a damaged
# or hand-edited file is one clear error instead of a crash somewhere in a report.
_RUN_INFO_TYPES: dict[str, tuple[type, ...]] = {
    "infercmp_version": (str,),
    "model": (str,),
    "status": (str,),
    "detail": (str, type(None)),
    "started": (str,),
    "finished": (str, type(None)),
    "combinations": (int,),
    "writer": (dict,),
    "argv": (list,),
    "config": (dict,),
    "model_config": (dict,),
    "settings": (dict,),
    "environment": (dict,),
}


def _check_run_info(info: dict[str, Any], run_file: Path) -> None:
    def bad(key: str, why: str) -> InfercmpError:
        return InfercmpError(f"{run_file}: '{key}' {why}; the run metadata is damaged")

    for key, types in _RUN_INFO_TYPES.items():
        if key not in info:
            continue
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise bad(key, f"is {type(value).__name__}, expected {names}")
    if info.get("status", "running") not in ("running", "complete", "interrupted", "failed"):
        raise bad("status", f"is {info['status']!r}, not running, complete, interrupted or failed")
    if not all(isinstance(a, str) for a in info.get("argv", [])):
        raise bad("argv", "holds something other than strings")
    for key in ("started", "finished"):
        if isinstance(info.get(key), str):
            try:
                _dt.datetime.fromisoformat(info[key])
            except ValueError:
                raise bad(key, f"is {info[key]!r}, not an ISO 8601 time") from None


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
    runs = (
        [p for p in root.iterdir() if p.is_dir() and (p / RUN_FILE).is_file()]
        if root.is_dir()
        else []
    )
    if not runs:
        raise InfercmpError(
            f"no infercmp runs under {root}; "
            "run 'infercmp bench MODEL' first or pass a run directory"
        )
    return max(runs, key=_started_key)
