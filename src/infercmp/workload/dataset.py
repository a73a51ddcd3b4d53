"""A model's dataset: the samples (with optional labels) its plugin provides for accuracy and
int8 calibration (`ModelPlugin.load_dataset`), loaded, preprocessed and checked once; the
seeded split into calibration and evaluation samples; and the plugin's task metrics, checked.

Every problem with what a plugin gives (a sample of the wrong shape, labels on some samples
only, a `load_dataset`, `preprocess` or `evaluate` that raises, a metric that is not a finite
number) is one `InfercmpError` line naming the model, its package when known, the sample and
what to do.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.batching import BATCH_DIM, input_axes, output_axes
from infercmp.workload.plugins import ModelPlugin, Sample, check_runtime_inputs, discover_plugins

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

__all__ = [
    "LoadedDataset",
    "Sample",
    "evaluate_checked",
    "load_samples",
    "model_label",
    "split",
    "stack_outputs",
    "stack_rows",
    "top1",
]

# Label dtypes a samples file holds without pickle: booleans, numbers, strings.
_LABEL_KINDS = "biufU"
_RAW_FORM = (
    "load_dataset() must give each sample's inputs in the raw form load_example_inputs() returns"
)


@dataclass(frozen=True)
class LoadedDataset:
    """A plugin's dataset, preprocessed and checked: `inputs[k]` are sample k's runtime arrays
    in config order (one row along each input's batch axis), `labels[k]` its label (None: the
    samples have none), `fingerprint` a sha256 over the arrays, their order and the labels."""

    inputs: list[list[np.ndarray]]
    labels: np.ndarray | None
    fingerprint: str

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def model_label(plugin: ModelPlugin) -> str:
    """ "model 'digits' (package 'infercmp-digits')": how errors name a plugin (the package when
    the plugin is the one registered under its name)."""
    name = plugin.config.name
    try:
        entry = discover_plugins().get(getattr(plugin, "name", name))
    except Exception:  # the name is enough; a broken environment must not hide the error
        entry = None
    if entry is None or entry.target.split(":")[0] != type(plugin).__module__:
        return f"model '{name}'"
    return f"model '{name}' (package '{entry.package}')"


def _error(plugin: ModelPlugin, message: str) -> InfercmpError:
    return InfercmpError(f"{model_label(plugin)}: {message}")


def _raised(exc: BaseException) -> str:
    """What an exception from plugin code says, in one line."""
    text = " ".join(str(exc).split())
    if isinstance(exc, InfercmpError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_samples(plugin: ModelPlugin, limit: int | None = None) -> LoadedDataset | None:
    """The plugin's dataset (its first `limit` samples), preprocessed and checked against the
    config; None when the plugin has no dataset (`load_dataset()` returns None)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    try:
        dataset = plugin.load_dataset()
        samples = None if dataset is None else iter(dataset)
    except Exception as exc:
        raise _error(plugin, f"load_dataset() failed: {_raised(exc)}") from exc
    if samples is None:
        return None
    inputs: list[list[np.ndarray]] = []
    labels: list[Any] = []
    for k, sample in enumerate(_guarded(plugin, samples)):
        inputs.append(_preprocessed(plugin, k, sample))
        labels.append(sample.label)
        if limit is not None and len(inputs) == limit:
            break
    if not inputs:
        raise _error(
            plugin,
            "load_dataset() gave no samples; return None from it when the model has no dataset",
        )
    label_array = _labels(plugin, labels)
    return LoadedDataset(inputs, label_array, _fingerprint(inputs, label_array))


def _guarded(plugin: ModelPlugin, samples: Iterator[Any]) -> Iterator[Sample]:
    """The samples, with an exception raised while producing sample k named as such."""
    k = 0
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except Exception as exc:
            raise _error(
                plugin, f"dataset sample {k}: load_dataset() failed: {_raised(exc)}"
            ) from exc
        if not isinstance(sample, Sample):
            raise _error(
                plugin,
                f"dataset sample {k}: load_dataset() gave {type(sample).__name__}; give "
                "infercmp.Sample(inputs, label) for each sample",
            )
        yield sample
        k += 1


def _preprocessed(plugin: ModelPlugin, k: int, sample: Sample) -> list[np.ndarray]:
    """Sample k's runtime arrays: preprocessed, checked against the config, one row each."""
    config = plugin.config
    where = f"dataset sample {k}"
    try:
        arrays = plugin.preprocess(list(sample.inputs))
    except Exception as exc:
        raise _error(plugin, f"{where}: preprocess() failed: {_raised(exc)}; {_RAW_FORM}") from exc
    try:
        check_runtime_inputs(config, arrays)
    except InfercmpError as exc:
        text = str(exc).removeprefix(f"model '{config.name}'").lstrip(",: ")
        shapes = ", ".join(str(tuple(getattr(a, "shape", ()))) for a in arrays)
        raise _error(
            plugin, f"{where}: {text} (preprocess() gave shapes {shapes}); {_RAW_FORM}"
        ) from None
    for spec, array, axis in zip(config.inputs, arrays, input_axes(config)):
        if axis is not None and array.shape[axis] != 1:
            raise _error(
                plugin,
                f"{where}: input '{spec.name}' has {array.shape[axis]} rows along "
                f"{BATCH_DIM} (shape {tuple(array.shape)}); a Sample is one example, so give "
                "one row per sample",
            )
    return [np.ascontiguousarray(a) for a in arrays]


def _labels(plugin: ModelPlugin, labels: Sequence[Any]) -> np.ndarray | None:
    """The labels as one array, or None when no sample has one; all or none must."""
    missing = [k for k, label in enumerate(labels) if label is None]
    if len(missing) == len(labels):
        return None
    if missing:
        labelled = next(k for k, label in enumerate(labels) if label is not None)
        raise _error(
            plugin,
            f"dataset sample {missing[0]} has no label but sample {labelled} has one; give "
            "every sample a label, or none",
        )
    try:
        array = np.asarray(labels)
    except ValueError as exc:  # ragged: numpy refuses to make one array of them
        raise _error(
            plugin, f"the dataset's labels cannot be one array ({exc}); give labels of one shape"
        ) from None
    if array.dtype.kind not in _LABEL_KINDS:
        raise _error(
            plugin,
            f"the dataset's labels have dtype {array.dtype}; give numbers, strings or arrays "
            "of one shape",
        )
    return array


def _update(digest: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}:{array.shape};".encode())
    digest.update(array.reshape(-1).view(np.uint8).data)


def _fingerprint(inputs: Sequence[Sequence[np.ndarray]], labels: np.ndarray | None) -> str:
    """sha256 over the samples in order (each array's dtype, shape and bytes) and the labels."""
    digest = hashlib.sha256(f"samples:{len(inputs)};".encode())
    for row in inputs:
        digest.update(f"sample:{len(row)};".encode())
        for array in row:
            _update(digest, array)
    if labels is None:
        digest.update(b"labels:none;")
    else:
        digest.update(b"labels:")
        _update(digest, labels)
    return digest.hexdigest()


def split(count: int, calibration: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Disjoint calibration and evaluation sample indices of a dataset of `count` samples.

    A seeded permutation of range(count): its first min(calibration, count // 2) indices
    calibrate (so a small dataset keeps at least half its samples for evaluation), the rest
    are evaluated. Both lists are in permutation order, so taking the first N evaluation
    indices takes a random subset. The same arguments give the same split.
    """
    if count < 0 or calibration < 0:
        raise ValueError(f"count and calibration must not be negative ({count}, {calibration})")
    taken = min(calibration, count // 2)
    order = [int(i) for i in np.random.default_rng(seed).permutation(count)]
    return order[:taken], order[taken:]


def evaluate_checked(
    plugin: ModelPlugin, outputs: Sequence[np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """The plugin's task metrics of `outputs` (config output j stacked over the samples, as
    `stack_outputs` gives them) against `labels`, checked; {} for unlabelled samples."""
    primary = plugin.config.accuracy_settings.primary
    if labels is None:
        if primary is not None:
            raise _error(
                plugin,
                f"the config's accuracy.primary is '{primary}' but the dataset has no labels; "
                "give each Sample a label, or remove accuracy.primary",
            )
        return {}
    try:
        metrics = plugin.evaluate(list(outputs), labels)
    except Exception as exc:
        raise _error(
            plugin, f"evaluate() failed: {_raised(exc)}; fix the plugin's evaluate()"
        ) from exc
    if not isinstance(metrics, Mapping):
        raise _error(
            plugin,
            f"evaluate() returned {type(metrics).__name__}; return a dict of metric name -> number",
        )
    checked = {name: _metric(plugin, name, value) for name, value in metrics.items()}
    if primary is not None and primary not in checked:
        got = ", ".join(checked) or "no metrics"
        raise _error(
            plugin,
            f"evaluate() returned no '{primary}', the config's accuracy.primary (it returned "
            f"{got}); return it, or name one of those in accuracy.primary",
        )
    return checked


def _metric(plugin: ModelPlugin, name: Any, value: Any) -> float:
    if not isinstance(name, str) or not name:
        raise _error(
            plugin, f"evaluate() returned a metric named {name!r}; names are non-empty strings"
        )
    # numpy's float and integer scalars are numbers.Real; a bool is not a metric
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _error(
            plugin,
            f"evaluate() returned {name} = {value!r} ({type(value).__name__}); every metric "
            "must be a finite number",
        )
    result = float(value)
    if not math.isfinite(result):
        raise _error(
            plugin, f"evaluate() returned {name} = {result}; every metric must be a finite number"
        )
    return result


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction (0..1) of samples whose highest-scoring class is their label; `logits` is
    [samples, classes], `labels` one class index per sample."""
    scores = np.asarray(logits)
    truth = np.asarray(labels).reshape(-1)
    if scores.ndim != 2:
        raise ValueError(f"top1 needs logits of shape [samples, classes], got {scores.shape}")
    if scores.shape[0] != truth.shape[0] or not truth.size:
        raise ValueError(
            f"top1 got {scores.shape[0]} rows of logits for {truth.shape[0]} labels; it needs "
            "one label per row, and at least one"
        )
    return float(np.mean(scores.argmax(axis=1) == truth))


def stack_rows(rows: Sequence[np.ndarray], axis: int | None) -> np.ndarray:
    """Per-sample arrays as one: concatenated along `axis` (the tensor's batch axis), or
    stacked on a new leading axis when it has none (None)."""
    if not rows:
        raise ValueError("no rows to stack")
    if axis is None:
        return np.stack(rows)
    return np.concatenate(rows, axis=axis)


def stack_outputs(plugin: ModelPlugin, outputs: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-sample outputs (`outputs[k][j]`: output j of sample k) as `evaluate` takes them:
    one array per config output, the samples stacked along its batch axis."""
    config = plugin.config
    stacked = []
    for j, (spec, axis) in enumerate(zip(config.outputs, output_axes(config))):
        try:
            stacked.append(stack_rows([row[j] for row in outputs], axis))
        except ValueError as exc:
            raise _error(
                plugin,
                f"output '{spec.name}' cannot be stacked over the samples for evaluate() "
                f"({exc}); every sample's output must have one shape outside {BATCH_DIM}",
            ) from None
    return stacked
