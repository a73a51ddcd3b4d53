"""A model's runtime inputs for one experiment: its example inputs, preprocessed and checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infercmp.workload.plugins import ModelPlugin, check_runtime_inputs
from infercmp.workload.shapes import Experiment

if TYPE_CHECKING:
    import numpy as np


def example_runtime_inputs(plugin: ModelPlugin, experiment: Experiment) -> list[np.ndarray]:
    """The preprocessed runtime inputs of one experiment, checked against the config."""
    arrays = plugin.preprocess(plugin.load_example_inputs(experiment.shapes))
    check_runtime_inputs(plugin.config, arrays)
    return list(arrays)


def runtime_shapes(plugin: ModelPlugin, experiment: Experiment) -> list[tuple[int, ...]]:
    """The shapes the model sees for `experiment` (preprocess runs in numpy; no torch)."""
    return [tuple(a.shape) for a in example_runtime_inputs(plugin, experiment)]
