"""The samples file: dataset samples as the model sees them, one row each, in one npz.

Three producers and readers share it: the evaluation and calibration sets
(`infercmp.artifacts.accuracy_set`), the worker's accuracy phase, which reads a set and writes
its engine's outputs in the same form, and the quantizers, which calibrate on a set.

Keys: `s{k}_i{i}` is input i of sample k (preprocessed, one row along the input's batch axis,
or the whole array when the input has none), `s{k}_o{j}` output j of sample k, `labels` the
samples' labels (absent: unlabelled). `count` holds the number of samples, so an empty set
and a truncated file are told apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from infercmp.core.errors import InfercmpError
from infercmp.core.files import write_atomic
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


@dataclass
class Samples:
    """Per-sample arrays: `inputs[k]` (and `outputs[k]`) are sample k's arrays in config order."""

    inputs: list[list[np.ndarray]]
    outputs: list[list[np.ndarray]] | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class CalibrationSet:
    """The samples an int8 conversion calibrates on: a samples file
    (`infercmp.artifacts.samples`, preprocessed, one row each) and what it is.

    `fingerprint` covers the arrays and their order: a quantized model's cache key includes
    it. `source` is "dataset" (the plugin's `load_dataset`, a split disjoint from the samples
    accuracy is measured on) or "random" (the model has no dataset: the example's random
    inputs, which the table and report label as such).
    """

    path: Path
    count: int
    fingerprint: str
    source: Literal["dataset", "random"]


def write_samples(path: Path, samples: Samples) -> None:
    """Write `samples` to `path` atomically (a reader never sees half a file)."""
    arrays: dict[str, np.ndarray] = {"count": np.asarray(len(samples), dtype=np.int64)}
    for k, row in enumerate(samples.inputs):
        arrays.update({f"s{k}_i{i}": a for i, a in enumerate(row)})
    for k, row in enumerate(samples.outputs or ()):
        arrays.update({f"s{k}_o{j}": a for j, a in enumerate(row)})
    if samples.labels is not None:
        arrays["labels"] = np.asarray(samples.labels)
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def write_outputs(path: Path, outputs: Sequence[Sequence[np.ndarray]]) -> None:
    """A samples file that holds outputs only (what the worker's accuracy phase writes)."""
    arrays: dict[str, np.ndarray] = {"count": np.asarray(len(outputs), dtype=np.int64)}
    for k, row in enumerate(outputs):
        arrays.update({f"s{k}_o{j}": a for j, a in enumerate(row)})
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def read_samples(path: Path) -> Samples:
    """Everything in a samples file; one line naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if "count" not in files:
                raise InfercmpError(f"{path} is not an infercmp samples file (no 'count')")
            count = int(data["count"])
            inputs = [_row(data, files, k, "i") for k in range(count)]
            outputs = [_row(data, files, k, "o") for k in range(count)]
            labels = data["labels"] if "labels" in files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InfercmpError(f"cannot read the samples file {path}: {exc}") from None
    has_outputs = any(outputs)
    return Samples(inputs=inputs, outputs=outputs if has_outputs else None, labels=labels)


def iter_inputs(path: Path) -> Iterator[list[np.ndarray]]:
    """Each sample's inputs in order (calibration reads them one at a time)."""
    yield from read_samples(path).inputs


def _row(data: np.lib.npyio.NpzFile, files: set[str], k: int, kind: str) -> list[np.ndarray]:
    row: list[np.ndarray] = []
    while f"s{k}_{kind}{len(row)}" in files:
        row.append(data[f"s{k}_{kind}{len(row)}"])
    return row
