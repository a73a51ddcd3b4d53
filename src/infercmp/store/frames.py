"""The raw frames of a run: latency (one row per iteration, clock and phase, in nanoseconds) and
sampler readings, their columns and types, and the check of a frame read back from parquet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import polars as pl
else:
    np = lazy_import("numpy")
    pl = lazy_import("polars")

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


def _polars_dtype(name: str) -> Any:
    return getattr(pl, name)


def latency_schema() -> dict[str, Any]:
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
    schema: dict[str, Any] = {"combo_id": pl.String}
    schema.update({name: _polars_dtype(dtype) for name, dtype in SAMPLE_COLUMNS.items()})
    schema.update({name: pl.Float64 for name in extra if name not in schema})
    return schema


LatencyArrays = Mapping[str, "np.ndarray"]


def latency_frame(combo: str, latency: LatencyArrays | Sequence[LatencyArrays]) -> pl.DataFrame:
    """Long-format rows from npz-like arrays keyed ``<clock>.<phase>`` (int64 nanoseconds).

    A sequence of such mappings is one per worker process, numbered 0, 1, ... in order.
    """
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
    if dtype == pl.String:
        return "text"
    if dtype.is_integer():
        return "integer"
    if dtype.is_numeric():
        return "number"
    if dtype == pl.Null:
        return "null"
    return str(dtype)


def validated_frame(
    frame: pl.DataFrame, file: Path, schema: dict[str, Any], required: tuple[str, ...]
) -> pl.DataFrame:
    """`frame` with `schema`'s columns in their types, or one error naming the bad column.

    Optional columns that are missing are added as nulls (old runs have no `process`: 0);
    columns beyond the schema (third-party samplers) must be numbers.
    """

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


def aligned_concat(frames: list[pl.DataFrame], base_schema: dict[str, Any]) -> pl.DataFrame:
    """Concatenate frames whose extra columns differ, keeping the fixed columns first."""
    frames = [f for f in frames if f is not None]
    if not frames:
        return pl.DataFrame(schema=base_schema)
    return pl.concat(frames, how="diagonal_relaxed")


def read_parquet(file: Path) -> pl.DataFrame | None:
    """The frame in `file`, None when there is no such file, one error when it is damaged."""
    if not file.is_file():
        return None
    try:
        return pl.read_parquet(file)
    except Exception as exc:  # polars raises several types for a damaged file
        raise InfercmpError(f"{file} cannot be read as parquet ({exc}); re-run the bench") from exc
