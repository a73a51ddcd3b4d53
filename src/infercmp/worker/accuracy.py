"""The worker's accuracy phase (`bench --accuracy`): every sample of a samples file through the
engine that was just measured, at the measured batch, untimed.

Samples go in calls of `batch` rows, stacked along each input's batch axis; the last call is
padded by repeating its last sample, and the padded rows' outputs are dropped. Each call is
`prepare` then `copy_in`, `compute`, `copy_out`, `synchronize`, as the timed loop runs one
iteration. Where a tensor has no batch axis, or the samples differ in shape, a call carries
one sample. The outputs, one row per
sample, go to a samples file (`infercmp.artifacts.samples.write_outputs`) beside result.json;
nothing here is timed beyond the phase's own wall time, and nothing enters latency.npz.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from infercmp.artifacts.samples import Samples, read_samples, write_outputs
from infercmp.core.contract import AccuracyOutputs, AccuracySpec
from infercmp.core.errors import InfercmpError

#: The outputs file the phase writes in the worker's result directory.
OUTPUTS_FILE = "accuracy_outputs.npz"


def calls_of(count: int, batch: int) -> list[list[int]]:
    """The sample indices of each call: `batch` per call, the last padded with its last index."""
    calls = []
    for start in range(0, count, batch):
        chunk = list(range(start, min(start + batch, count)))
        calls.append(chunk + [chunk[-1]] * (batch - len(chunk)))
    return calls


def stack_call(
    rows: Sequence[Sequence[np.ndarray]], axes: Sequence[int | None]
) -> list[np.ndarray]:
    """One call's inputs: input i of every sample in `rows`, concatenated along its batch axis
    (a tensor without one is the single sample's own)."""
    stacked = []
    for i, axis in enumerate(axes):
        arrays = [row[i] for row in rows]
        if axis is None:
            if len(arrays) != 1:
                raise InfercmpError(f"input {i} has no batch axis: a call carries one sample")
            stacked.append(np.ascontiguousarray(arrays[0]))
        else:
            stacked.append(np.ascontiguousarray(np.concatenate(arrays, axis=axis)))
    return stacked


def split_call(
    outputs: Sequence[np.ndarray], axes: Sequence[int | None], rows: int
) -> list[list[np.ndarray]]:
    """One call's outputs as `rows` per-sample rows (each keeps its batch axis, one long)."""
    if len(outputs) != len(axes):
        raise InfercmpError(
            f"the engine returned {len(outputs)} outputs; the config declares {len(axes)}"
        )
    per_sample: list[list[np.ndarray]] = [[] for _ in range(rows)]
    for j, (array, axis) in enumerate(zip(outputs, axes)):
        array = np.asarray(array)
        if axis is None:
            if rows != 1:
                raise InfercmpError(f"output {j} has no batch axis: a call carries one sample")
            per_sample[0].append(array.copy())
            continue
        if array.ndim <= axis or array.shape[axis] != rows:
            raise InfercmpError(
                f"output {j} has shape {list(array.shape)}: expected {rows} rows along its "
                f"batch axis {axis}"
            )
        for k in range(rows):
            per_sample[k].append(np.take(array, [k], axis=axis))
    return per_sample


def _ragged(samples: Samples) -> bool:
    """Whether the samples differ in shape (images of several sizes): one per call then."""
    shapes = {tuple(a.shape for a in row) for row in samples.inputs}
    return len(shapes) > 1


def run_accuracy(engine: Any, spec: AccuracySpec) -> tuple[list[list[np.ndarray]], int, float]:
    """Every sample of `spec.samples` through `engine`: each sample's outputs, the number of
    calls, and the phase's wall seconds."""
    started = time.perf_counter()
    samples = read_samples(spec.samples)
    if len(samples) == 0:
        raise InfercmpError(f"the samples file {spec.samples} holds no sample")
    one_each = any(a is None for a in (*spec.input_axes, *spec.output_axes)) or _ragged(samples)
    batch = 1 if one_each else spec.batch
    outputs: list[list[np.ndarray]] = []
    calls = calls_of(len(samples), batch)
    for call in calls:
        engine.prepare(stack_call([samples.inputs[k] for k in call], spec.input_axes))
        engine.copy_in()
        engine.compute()
        got = engine.copy_out()
        engine.synchronize()
        real = len(dict.fromkeys(call))  # the padded rows repeat the last index
        outputs.extend(split_call(got, spec.output_axes, batch)[:real])
    return outputs, len(calls), time.perf_counter() - started


def accuracy_phase(engine: Any, spec: AccuracySpec, result_dir: Any) -> AccuracyOutputs:
    """Run the phase and write its outputs file; what the result records of it."""
    outputs, calls, seconds = run_accuracy(engine, spec)
    write_outputs(result_dir / OUTPUTS_FILE, outputs)
    return AccuracyOutputs(file=OUTPUTS_FILE, samples=len(outputs), calls=calls, seconds=seconds)
