"""The reader of runs of schema version 1: summary.json and whole-run parquet files, read only.

Runs published in that layout (docs/results/) are still reported and compared; nothing writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.store.frames import read_parquet, validated_frame
from infercmp.store.schema import CombinationResult, read_json, validated_result

if TYPE_CHECKING:
    import polars as pl
else:
    pl = lazy_import("polars")

SUMMARY_FILE = "summary.json"
LATENCY_FILE = "latency.parquet"
SAMPLES_FILE = "samples.parquet"


def read_summary(path: Path) -> list[CombinationResult]:
    """Schema version 1: summary.json lists the committed combinations."""
    summary_file = path / SUMMARY_FILE
    if not summary_file.is_file():
        raise InfercmpError(f"{path} has no {SUMMARY_FILE}; the run directory is incomplete")
    raw = read_json(summary_file, "summary")
    if not isinstance(raw, list):
        raise InfercmpError(f"{summary_file} is not a list of combination results")
    return [validated_result(item, summary_file) for item in raw]


def read_frame(
    file: Path, schema: dict[str, Any], required: tuple[str, ...], combo_ids: Sequence[str]
) -> pl.DataFrame:
    """Schema version 1's one parquet file of the run (latency or samples), checked against
    `schema`, keeping the rows of `combo_ids` (rows beyond the summary are ignored)."""
    frame = read_parquet(file)
    if frame is None:
        return pl.DataFrame(schema=schema)
    frame = validated_frame(frame, file, schema, required)
    return frame.filter(pl.col("combo_id").is_in(list(combo_ids)))
