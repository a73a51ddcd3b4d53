"""`bench --accuracy` in the parent: what a combination's accuracy phase wrote, judged against
PyTorch fp32 on the same samples (`AccuracyJudge`), as the stored `accuracy` object
(docs/results-format.md).

Per combination: the plugin's task metrics on the engine's outputs (when the samples are
labelled), the same metrics of PyTorch fp32's outputs (the accuracy set computed them) and the
change; and agreement with PyTorch fp32 for every output: the absolute error over every element
of every sample (p50, p99, max), the cosine similarity of each sample's flattened output (mean
and min over the samples) and, for class outputs (2-D [batch, classes]), the share of samples
whose top-1 class is PyTorch's. None of it is timed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.accuracy_set import AccuracySet
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.batching import output_axes
from infercmp.workload.dataset import evaluate_checked, stack_outputs
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


@dataclass(frozen=True)
class AccuracyRequest:
    """`bench --accuracy [N]`: N evaluation samples, or None for all of them (capped by the
    config's `accuracy.max_samples`)."""

    samples: int | None = None


def measured_batch(reference: Path, load_batch: int | None, axes: Sequence[int | None]) -> int:
    """The batch the accuracy phase runs at: the measured one (`--batch`, else the rows of the
    reference's first input along its batch axis; 1 without one)."""
    if load_batch is not None:
        return load_batch
    axis = axes[0] if axes else None
    if axis is None:
        return 1
    with np.load(reference, allow_pickle=False) as data:
        shape = data["input_0"].shape
    return int(shape[axis]) if len(shape) > axis else 1


def read_outputs(path: Path) -> tuple[list[list[np.ndarray]], np.ndarray | None]:
    """Each sample's outputs in a samples file, and its labels; inputs are never read (an
    evaluation set of images would be hundreds of MB)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            count = int(data["count"])
            rows = []
            for k in range(count):
                row: list[np.ndarray] = []
                while f"s{k}_o{len(row)}" in files:
                    row.append(data[f"s{k}_o{len(row)}"])
                rows.append(row)
            labels = data["labels"] if "labels" in files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InfercmpError(f"cannot read the samples file {path}: {exc}") from None
    return rows, labels


def _flat(stacked: np.ndarray, axis: int | None, count: int) -> np.ndarray:
    """One row per sample: the sample's output flattened, as float64."""
    return np.moveaxis(stacked, axis or 0, 0).reshape(count, -1).astype(np.float64)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def output_agreement(
    name: str, got: np.ndarray, want: np.ndarray, axis: int | None, count: int
) -> dict[str, Any]:
    """One output's agreement with PyTorch fp32 over `count` samples (see the module)."""
    a, b = _flat(got, axis, count), _flat(want, axis, count)
    error = np.abs(a - b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, (a * b).sum(axis=1) / norms, np.all(a == b, axis=1) * 1.0)
    record: dict[str, Any] = {
        "name": name,
        "p50_abs": _finite(np.percentile(error, 50)),
        "p99_abs": _finite(np.percentile(error, 99)),
        "max_abs": _finite(error.max()),
        "cosine_mean": _finite(cosine.mean()),
        "cosine_min": _finite(cosine.min()),
        "top1_agreement": None,
    }
    classes = got.ndim == 2 and (axis or 0) == 0 and got.shape[1] > 1
    if classes and np.issubdtype(got.dtype, np.floating):
        record["top1_agreement"] = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return record


@dataclass
class AccuracyJudge:
    """Judges each combination's accuracy outputs against the accuracy set's reference."""

    plugin: ModelPlugin
    accuracy_set: AccuracySet
    calibration_source: str | None = None  # what int8 calibrated on: "dataset" or "random"
    _reference: tuple[list[np.ndarray], np.ndarray | None] | None = field(default=None)

    def reference(self) -> tuple[list[np.ndarray], np.ndarray | None]:
        """PyTorch fp32's outputs (stacked per output) and the labels, read once."""
        if self._reference is None:
            rows, labels = read_outputs(self.accuracy_set.evaluation)
            self._reference = stack_outputs(self.plugin, rows), labels
        return self._reference

    def judge(self, outputs_file: Path, precision: str) -> dict[str, Any]:
        """The stored `accuracy` object of one combination from its outputs file."""
        settings = self.plugin.config.accuracy_settings
        axes = output_axes(self.plugin.config)
        rows, _ = read_outputs(outputs_file)
        reference, labels = self.reference()
        count = self.accuracy_set.count
        if len(rows) != count:
            raise InfercmpError(
                f"the accuracy phase wrote {len(rows)} samples' outputs; {count} were sent"
            )
        got = stack_outputs(self.plugin, rows)
        names = self.plugin.config.output_names
        outputs = [
            output_agreement(n, g, w, a, count) for n, g, w, a in zip(names, got, reference, axes)
        ]
        record: dict[str, Any] = {
            "samples": count,
            "labelled": self.accuracy_set.labelled,
            "primary": settings.primary,
            "direction": settings.direction,
            "metrics": {},
            "reference_metrics": dict(self.accuracy_set.reference_metrics),
            "change": {},
            "top1_agreement": next(
                (o["top1_agreement"] for o in outputs if o["top1_agreement"] is not None), None
            ),
            "outputs": outputs,
            "calibration": self.calibration_source if precision == "int8" else None,
            "fingerprint": self.accuracy_set.dataset_fingerprint,
            "error": None,
        }
        if self.accuracy_set.labelled and labels is not None:
            try:
                metrics = evaluate_checked(self.plugin, got, labels)
            except InfercmpError as exc:  # the plugin's metric, on this engine's outputs
                record["error"] = str(exc)
                return record
            record["metrics"] = {k: _finite(v) for k, v in metrics.items()}
            record["change"] = {
                k: _finite(v - record["reference_metrics"][k])
                for k, v in metrics.items()
                if record["reference_metrics"].get(k) is not None
            }
        return record


#: The warning of an int8 combination calibrated on random inputs (the model has no dataset).
RANDOM_CALIBRATION = (
    "int8 calibrated on random inputs (the model has no dataset): its accuracy on real data "
    "is unknown; give the plugin a load_dataset() (docs/plugins.md)"
)


def random_calibration_note(calibration: Any) -> str | None:
    """RANDOM_CALIBRATION when `calibration` (a CalibrationSet) is random inputs, else None."""
    return RANDOM_CALIBRATION if getattr(calibration, "source", None) == "random" else None


def metric_failure(results: Sequence[Any]) -> InfercmpError | None:
    """A plugin metric that raised on some combination's outputs: one line (exit 2), after
    the run committed everything it measured; None when every metric ran."""
    failed = [r for r in results if r.accuracy and r.accuracy.get("error")]
    if not failed:
        return None
    others = f" (and {len(failed) - 1} other combination(s))" if len(failed) > 1 else ""
    return InfercmpError(
        f"{failed[0].accuracy['error']}: on the outputs of {failed[0].engine} "
        f"{failed[0].device} {failed[0].precision}{others}; the measurements are saved"
    )
