"""An engine loaded with a built-in model on the CPU at fp32 and prepared with the model's
example inputs at its default shape, as the engines' profile tests start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infercmp.engines import EngineSpec
from infercmp.workload.inputs import example_runtime_inputs
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment


def prepared_on_cpu(
    engine: Any, model: str, artifact: Path | None = None, **options: Any
) -> list[np.ndarray]:
    """Load `engine` with `model` (from `artifact`: None for a module engine) and prepare it;
    returns the inputs it was prepared with."""
    plugin = get_plugin(model)
    config = plugin.config
    engine.load(
        EngineSpec(
            model=model,
            device="cpu",
            precision="fp32",
            artifact=artifact,
            input_names=tuple(config.input_names),
            output_names=tuple(config.output_names),
            options=options,
        )
    )
    inputs = example_runtime_inputs(plugin, default_experiment(config))
    engine.prepare(inputs)
    return inputs
