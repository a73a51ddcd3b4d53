"""A model's runtime inputs for one experiment: its example inputs, preprocessed and checked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.workload.plugins import ModelPlugin, check_runtime_inputs
from infercmp.workload.shapes import Experiment

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


def example_runtime_inputs(plugin: ModelPlugin, experiment: Experiment) -> list[np.ndarray]:
    """The preprocessed runtime inputs of one experiment, checked against the config."""
    arrays = plugin.preprocess(plugin.load_example_inputs(experiment.shapes))
    check_runtime_inputs(plugin.config, arrays)
    return list(arrays)


def runtime_shapes(plugin: ModelPlugin, experiment: Experiment) -> list[tuple[int, ...]]:
    """The shapes the model sees for `experiment` (preprocess runs in numpy; no torch)."""
    return [tuple(a.shape) for a in example_runtime_inputs(plugin, experiment)]


def random_like(arrays: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """Raw inputs like `arrays` (shape, dtype, range) drawn again with `seed` (random
    calibration, debug-precision's samples without a dataset): a float like the example's
    mean and spread, an integer uniform over the example's range, a bool either way."""
    rng = np.random.default_rng(seed)
    out = []
    for a in arrays:
        a = np.asarray(a)
        drawn: np.ndarray
        if a.dtype.kind == "f":
            drawn = rng.standard_normal(a.shape) * float(a.std()) + float(a.mean())
        elif a.dtype.kind == "b":
            drawn = rng.integers(0, 2, size=a.shape)
        elif a.dtype.kind in "iu" and a.size:
            drawn = rng.integers(int(a.min()), int(a.max()) + 1, size=a.shape)
        else:
            drawn = a.copy()
        out.append(drawn.astype(a.dtype))
    return out
