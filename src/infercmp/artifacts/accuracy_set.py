"""The accuracy set: a model's dataset split once into calibration and evaluation samples, with
PyTorch's fp32 CPU outputs for the evaluation samples, as one cache entry; and, for a model
without a dataset, a calibration set made from its example (labelled "random").

An `accuracy-set` entry holds two samples files (`infercmp.artifacts.samples`): the
evaluation samples (inputs, reference outputs, labels) that every engine's accuracy phase
runs, and the calibration samples (inputs) that int8 conversions calibrate on. The two are
disjoint (`infercmp.workload.dataset.split`). The key covers the loaded module's fingerprint,
the plugin's source files, the dataset's fingerprint and both counts.

How many samples are read: at most `calibration + max(evaluation, max_samples)` from the
start of `load_dataset()`, so the calibration samples, and every int8 model calibrated on
them, stay the same whatever `--accuracy N` asks for up to the config's `max_samples`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import StrictBool, StrictInt

from infercmp.artifacts.cache import (
    ArtifactCache,
    CacheEntry,
    EntryMeta,
    content_key,
    register_kind,
)
from infercmp.artifacts.key_material import arrays_hash, module_material, plugin_code
from infercmp.artifacts.samples import CalibrationSet, Samples, write_samples
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.batching import input_axes, output_axes
from infercmp.workload.config import DYNAMIC
from infercmp.workload.dataset import (
    evaluate_checked,
    load_samples,
    model_label,
    split,
    stack_outputs,
    stack_rows,
)
from infercmp.workload.inputs import random_like
from infercmp.workload.module import check_outputs_against_config, load_module, run_pytorch
from infercmp.workload.plugins import ModelPlugin, check_runtime_inputs
from infercmp.workload.shapes import Experiment

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np = lazy_import("numpy")

EVALUATION_FILE = "evaluation.npz"
CALIBRATION_FILE = "calibration.npz"
# Samples per PyTorch call when the reference outputs are made (where the model has a batch
# axis): batching makes ResNet-50's references several times faster on the CPU.
REFERENCE_BATCH = 32
_FORMAT = 1


class AccuracySetMeta(EntryMeta):
    """An `accuracy-set` entry's metadata."""

    model: str
    dataset: str
    evaluation: StrictInt
    calibration: StrictInt
    calibration_fingerprint: str
    labelled: StrictBool
    metrics: dict[str, float]
    evaluation_indices: list[StrictInt]
    calibration_indices: list[StrictInt]


class RandomCalibrationMeta(EntryMeta):
    """A `random-calibration` entry's metadata."""

    model: str
    experiment: list[list[StrictInt]]
    count: StrictInt
    fingerprint: str


register_kind("accuracy-set", (EVALUATION_FILE, CALIBRATION_FILE), AccuracySetMeta)
register_kind("random-calibration", (CALIBRATION_FILE,), RandomCalibrationMeta)


@dataclass(frozen=True)
class AccuracySet:
    """What the accuracy phase and int8 calibration use, from one cache entry.

    `evaluation` is the evaluation samples file (inputs, PyTorch fp32 CPU outputs, labels when
    `labelled`) of `count` samples; `calibration` the disjoint calibration samples;
    `reference_metrics` the plugin's task metrics of the PyTorch fp32 outputs ({} when
    unlabelled), against which an engine's metrics show their change.
    """

    evaluation: Path
    count: int
    labelled: bool
    calibration: CalibrationSet
    dataset_fingerprint: str
    reference_metrics: dict[str, float]


def samples_fingerprint(rows: Sequence[Sequence[np.ndarray]]) -> str:
    """sha256 over a set of samples: their number, and each array in order."""
    flat = [array for row in rows for array in row]
    return hashlib.sha256(f"{len(rows)}:{arrays_hash(flat)}".encode()).hexdigest()


def ensure_accuracy_set(
    plugin: ModelPlugin, cache: ArtifactCache, *, evaluation: int | None, calibration: int
) -> AccuracySet | None:
    """The model's accuracy set (cached), or None when its plugin has no dataset.

    `evaluation`: how many samples to evaluate (None: all that remain after calibration, at
    most the config's `accuracy.max_samples`; 0: none, for a calibration set alone);
    `calibration`: how many to calibrate on (the config's `accuracy.calibration_samples`,
    usually). A dataset smaller than both gives what it has (`split` keeps at least half for
    evaluation); `count` and `calibration.count` say how many.
    """
    if evaluation is not None and evaluation < 0:
        raise InfercmpError(
            f"the number of accuracy samples must not be negative, not {evaluation}"
        )
    if calibration < 0:
        raise ValueError(f"calibration must not be negative, not {calibration}")
    settings = plugin.config.accuracy_settings
    wanted = settings.max_samples if evaluation is None else evaluation
    dataset = load_samples(plugin, limit=calibration + max(wanted, settings.max_samples))
    if dataset is None:
        return None
    if not dataset.labelled:
        evaluate_checked(plugin, [], None)  # a primary metric without labels: say so now
    calibrate, evaluate = split(len(dataset), calibration)
    evaluate = evaluate[:wanted]
    module, identity = load_module(plugin)
    material = module_material(
        plugin,
        identity,
        [],
        kind="accuracy-set",
        format=_FORMAT,
        plugin_code=plugin_code(plugin),
        dataset=dataset.fingerprint,
        evaluation=len(evaluate),
        calibration=len(calibrate),
    )
    key = content_key(material)
    with cache.lock("accuracy-set", key):
        entry = cache.lookup("accuracy-set", key)
        if entry is None:
            eval_inputs = [dataset.inputs[k] for k in evaluate]
            cal_inputs = [dataset.inputs[k] for k in calibrate]
            outputs = reference_outputs(plugin, module, eval_inputs, evaluate)
            labels = None if dataset.labels is None else dataset.labels[evaluate]
            metrics = (
                evaluate_checked(plugin, stack_outputs(plugin, outputs), labels) if evaluate else {}
            )
            meta = AccuracySetMeta(
                model=plugin.config.name,
                dataset=dataset.fingerprint,
                evaluation=len(evaluate),
                calibration=len(calibrate),
                calibration_fingerprint=samples_fingerprint(cal_inputs),
                labelled=dataset.labelled,
                metrics=metrics,
                evaluation_indices=evaluate,
                calibration_indices=calibrate,
            )
            with cache.staging() as staged:
                write_samples(staged / EVALUATION_FILE, Samples(eval_inputs, outputs, labels))
                write_samples(staged / CALIBRATION_FILE, Samples(cal_inputs))
                entry = cache.store("accuracy-set", key, staged, meta.model_dump())
    return _accuracy_set(entry)


def _accuracy_set(entry: CacheEntry) -> AccuracySet:
    meta = AccuracySetMeta.model_validate(entry.meta)
    calibration = CalibrationSet(
        entry.file(CALIBRATION_FILE), meta.calibration, meta.calibration_fingerprint, "dataset"
    )
    return AccuracySet(
        evaluation=entry.file(EVALUATION_FILE),
        count=meta.evaluation,
        labelled=meta.labelled,
        calibration=calibration,
        dataset_fingerprint=meta.dataset,
        reference_metrics=dict(meta.metrics),
    )


def _chunks(samples: Sequence[Sequence[np.ndarray]], size: int) -> list[range]:
    """Runs of consecutive samples of one shape, at most `size` long (1 when not batchable)."""
    chunks: list[range] = []
    start = 0
    for k in range(1, len(samples) + 1):
        same = k < len(samples) and [a.shape for a in samples[k]] == [
            a.shape for a in samples[start]
        ]
        if not same or k - start == size:
            chunks.append(range(start, k))
            start = k
    return chunks


def reference_outputs(
    plugin: ModelPlugin,
    module: torch.nn.Module,
    samples: Sequence[Sequence[np.ndarray]],
    indices: Sequence[int] | None = None,
) -> list[list[np.ndarray]]:
    """PyTorch's fp32 CPU outputs for each sample (`[k][j]`: output j of sample k, one row),
    `REFERENCE_BATCH` samples per call where every input and output has a dynamic batch
    axis. `indices` are the samples' numbers in the dataset, for errors."""
    config = plugin.config
    ins, outs = input_axes(config), output_axes(config)
    batchable = all(a is not None for a in [*ins, *outs]) and all(
        spec.shapes.runtime[a] == DYNAMIC for spec, a in zip(config.inputs, ins) if a is not None
    )
    numbers = list(indices) if indices is not None else list(range(len(samples)))
    results: list[list[np.ndarray]] = []
    for chunk in _chunks(samples, REFERENCE_BATCH if batchable else 1):
        rows = [samples[k] for k in chunk]
        which = f"dataset sample {numbers[chunk[0]]}" + (
            f" (and {len(chunk) - 1} more in one batch)" if len(chunk) > 1 else ""
        )
        batch = (
            [stack_rows([r[i] for r in rows], a) for i, a in enumerate(ins)]
            if len(rows) > 1
            else list(rows[0])
        )
        try:
            outputs = run_pytorch(plugin, module, batch)
            check_outputs_against_config(config, outputs, which)
        except Exception as exc:
            text = " ".join(str(exc).split())
            raise InfercmpError(
                f"{model_label(plugin)}: {which}: PyTorch fp32 failed on it: "
                f"{type(exc).__name__}: {text}"
            ) from exc
        results.extend(_unstack(plugin, outputs, outs, len(rows), which))
    return results


def _unstack(
    plugin: ModelPlugin,
    outputs: Sequence[np.ndarray],
    axes: Sequence[int | None],
    count: int,
    which: str,
) -> list[list[np.ndarray]]:
    """A batched call's outputs as `count` samples' rows."""
    if count == 1:
        return [[np.ascontiguousarray(o) for o in outputs]]
    per_output = []
    for spec, array, axis in zip(plugin.config.outputs, outputs, axes):
        assert axis is not None, "only outputs with a batch axis are batched"
        if array.shape[axis] != count:
            raise InfercmpError(
                f"{model_label(plugin)}: {which}: output '{spec.name}' has {array.shape[axis]} "
                f"rows for {count} samples along its batch axis; the config's dims_names say "
                "that axis holds one row per sample"
            )
        per_output.append([np.ascontiguousarray(r) for r in np.split(array, count, axis=axis)])
    return [[rows[k] for rows in per_output] for k in range(count)]


def _first_rows(plugin: ModelPlugin, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One row of each input along its batch axis (a samples file holds one row per sample)."""
    return [
        np.ascontiguousarray(a if axis is None else np.take(a, [0], axis=axis))
        for a, axis in zip(arrays, input_axes(plugin.config))
    ]


def random_calibration(
    plugin: ModelPlugin, cache: ArtifactCache, experiment: Experiment, count: int
) -> CalibrationSet:
    """`count` calibration samples for a model without a dataset (source "random", cached):
    the plugin's example for `experiment` and `count - 1` raw inputs drawn like it with seeds
    1, 2, ..., each through `preprocess` (one row along each batch axis)."""
    if count < 1:
        raise ValueError(f"count must be positive, not {count}")
    config = plugin.config
    shapes = [list(s) for s in experiment.shapes]
    example = plugin.load_example_inputs(experiment.shapes)
    cls = type(plugin)
    token = getattr(plugin, "cache_token", None)
    key = content_key(
        {
            "kind": "random-calibration",
            "format": _FORMAT,
            "plugin": f"{cls.__module__}.{cls.__qualname__}",
            "config": config.model_dump(mode="json"),
            "token": token() if callable(token) else None,
            "code": plugin_code(plugin),
            "experiment": shapes,
            "example": arrays_hash(example),
            "count": count,
        }
    )
    with cache.lock("random-calibration", key):
        entry = cache.lookup("random-calibration", key)
        if entry is None:
            rows = []
            for seed in range(count):
                raw = example if seed == 0 else random_like(example, seed)
                arrays = plugin.preprocess(raw)
                check_runtime_inputs(config, arrays)
                rows.append(_first_rows(plugin, arrays))
            meta = RandomCalibrationMeta(
                model=config.name,
                experiment=shapes,
                count=count,
                fingerprint=samples_fingerprint(rows),
            )
            with cache.staging() as staged:
                write_samples(staged / CALIBRATION_FILE, Samples(rows))
                entry = cache.store("random-calibration", key, staged, meta.model_dump())
    meta = RandomCalibrationMeta.model_validate(entry.meta)
    return CalibrationSet(entry.file(CALIBRATION_FILE), meta.count, meta.fingerprint, "random")


def calibration_for(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    experiment: Experiment,
    accuracy_set: AccuracySet | None = None,
) -> CalibrationSet:
    """The samples int8 calibrates on: the dataset's calibration split when the plugin has a
    dataset, else `random_calibration` of `experiment` (source "random"); as many as the
    config's `accuracy.calibration_samples`. bench and debug-precision both calibrate here.

    `accuracy_set`: one the caller already made (bench's `--accuracy`), so the dataset is not
    read again; None: made here with no evaluation samples.
    """
    count = plugin.config.accuracy_settings.calibration_samples
    if accuracy_set is None:
        accuracy_set = ensure_accuracy_set(plugin, cache, evaluation=0, calibration=count)
    if accuracy_set is not None:
        return accuracy_set.calibration
    return random_calibration(plugin, cache, experiment, count)
