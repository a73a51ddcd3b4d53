"""Batch sizes: the config's `batch_size` axis, its declared range, stacked inputs and the
reference outputs that go with them, and the optimisation profile that covers a batch sweep.

A model can run at `--batch B` when every input that names a `batch_size` dimension marks it
dynamic (-1) in `runtime` and B lies inside its `optimization` min..max. The inputs at batch B
are the preprocessed example repeated B times along that axis (`stack`), unless the plugin's
`batch_inputs` hook returns its own; the reference that goes with them is made and cached by
`infercmp.artifacts.reference.ensure_batched_reference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.workload.config import DYNAMIC, ModelConfig
from infercmp.workload.inputs import runtime_shapes

if TYPE_CHECKING:
    import numpy as np

    from infercmp.workload.plugins import ModelPlugin
else:
    np = lazy_import("numpy")

BATCH_DIM = "batch_size"
MAX_BATCH = 1 << 16


def batch_axis(dims_names: Sequence[str]) -> int | None:
    """The index of the `batch_size` dimension, or None when the tensor has none."""
    return list(dims_names).index(BATCH_DIM) if BATCH_DIM in dims_names else None


def batch_range(config: ModelConfig) -> tuple[int, int]:
    """The batch sizes the config allows: (min, max) over every input with a batch axis.

    Raises one clear error when no input has a dynamic `batch_size` dimension.
    """
    lo, hi, found = 1, MAX_BATCH, False
    for spec in config.inputs:
        axis = batch_axis(spec.shapes.dims_names)
        if axis is None:
            continue
        if spec.shapes.runtime[axis] != DYNAMIC:
            raise InfercmpError(
                f"model '{config.name}' fixes {BATCH_DIM} of input '{spec.name}' at "
                f"{spec.shapes.runtime[axis]}; --batch needs it dynamic: set runtime[{axis}] "
                "to -1 and optimization min/max to the batch sizes it allows"
            )
        found = True
        lo = max(lo, spec.shapes.optimization.min[axis])
        hi = min(hi, spec.shapes.optimization.max[axis])
    if not found:
        raise InfercmpError(
            f"model '{config.name}' has no input with a '{BATCH_DIM}' dimension in its "
            "dims_names; --batch stacks inputs along it"
        )
    return lo, hi


#: Far above any batch a model declares; a longer size is refused before int() sees it.
MAX_BATCH_DIGITS = 12


def parse_batches(text: str, config: ModelConfig) -> list[int] | None:
    """`--batch 1,8,32` checked against the config's range; None for `auto`."""
    raw = text.strip().lower()
    if raw == "auto":
        batch_range(config)  # the model must allow batching at all
        return None
    batches: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        # ASCII digits only: '²' is a digit to str.isdigit() but not to int().
        if not (part.isascii() and part.isdigit()) or not part.strip("0"):
            raise InfercmpError(
                f"--batch '{text}': '{part}' is not a positive integer; give sizes like "
                "'1,8,32' or 'auto'"
            )
        if len(part.lstrip("0")) > MAX_BATCH_DIGITS:  # int() refuses over 4300 digits
            raise InfercmpError(f"--batch: a size of {len(part)} digits is too large")
        batches.append(int(part))
    check_batches(batches, config)
    return list(dict.fromkeys(batches))


def check_batches(batches: Sequence[int], config: ModelConfig) -> None:
    """One clear error when a batch size lies outside the config's `batch_size` range."""
    lo, hi = batch_range(config)
    outside = [b for b in batches if not lo <= b <= hi]
    if outside:
        raise InfercmpError(
            f"--batch {','.join(map(str, outside))}: outside model '{config.name}'s declared "
            f"{BATCH_DIM} range [{lo}, {hi}] (optimization min/max in its config); pick sizes "
            "inside it or widen the range"
        )


def stack(arrays: Sequence[np.ndarray], axes: Sequence[int | None], batch: int) -> list[np.ndarray]:
    """Each array repeated along its batch axis to `batch` rows (cycling through the rows it
    has); arrays without a batch axis are returned as they are."""
    out = []
    for array, axis in zip(arrays, axes):
        if axis is None or array.shape[axis] == batch:
            out.append(array)
            continue
        rows = np.arange(batch) % array.shape[axis]
        out.append(np.ascontiguousarray(np.take(array, rows, axis=axis)))
    return out


def input_axes(config: ModelConfig) -> list[int | None]:
    """Each input's batch axis (None where it has none), in config order."""
    return [batch_axis(spec.shapes.dims_names) for spec in config.inputs]


def output_axes(config: ModelConfig) -> list[int | None]:
    """Each output's batch axis (None where it has none), in config order."""
    return [batch_axis(spec.shape.dims_names) for spec in config.outputs]


def batched_runtime_shapes(
    config: ModelConfig, shapes: Sequence[tuple[int, ...]], batch: int | None
) -> list[tuple[int, ...]]:
    """The runtime shapes at `batch` (None: unchanged)."""
    if batch is None:
        return list(shapes)
    out = []
    for shape, axis in zip(shapes, input_axes(config)):
        dims = list(shape)
        if axis is not None:
            dims[axis] = batch
        out.append(tuple(dims))
    return out


def profile_for_batches(config: ModelConfig, batches: Sequence[int]) -> ModelConfig:
    """The config with each input's optimisation profile spanning exactly `batches` on its
    batch axis: min the smallest, max the largest, opt the largest (a batch sweep is run for
    throughput, and TensorRT tunes its kernels for opt). Other axes keep the config's values.
    """
    if not batches:
        return config
    lo, hi = min(batches), max(batches)
    check_batches([lo, hi], config)
    inputs = []
    for spec in config.inputs:
        axis = batch_axis(spec.shapes.dims_names)
        if axis is None:
            inputs.append(spec)
            continue
        profile = spec.shapes.optimization
        dims = {}
        for which, size in (("min", lo), ("opt", hi), ("max", hi)):
            values = list(getattr(profile, which))
            values[axis] = size
            dims[which] = values
        shapes = spec.shapes.model_copy(update={"optimization": profile.model_copy(update=dims)})
        inputs.append(spec.model_copy(update={"shapes": shapes}))
    return config.model_copy(update={"inputs": inputs})


def plan_batches(plugin: ModelPlugin, combos: Sequence[Any]) -> tuple[int, ...]:
    """The batch sizes a plan built for a profile must cover: each combination's `--batch`, or
    its example's own batch; () when the config has no dynamic batch axis (its profile as is).

    So a run without --batch builds ResNet-50's plan for batch 1, as before the config became
    batch-dynamic, not for 256 images at 512x512 (whose activation memory a TensorRT context
    would reserve).
    """
    config = plugin.config
    try:
        batch_range(config)
    except InfercmpError:
        return ()
    sizes: set[int] = set()
    for combo in combos:
        if combo.load.batch is not None:
            sizes.add(combo.load.batch)
            continue
        for axis, shape in zip(input_axes(config), runtime_shapes(plugin, combo.experiment)):
            if axis is not None:
                sizes.add(shape[axis])
                break
    return tuple(sorted(sizes))
