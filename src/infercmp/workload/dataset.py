"""A model's dataset: the samples (with optional labels) its plugin provides for accuracy and
int8 calibration (`ModelPlugin.load_dataset`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Sample:
    """One dataset sample: raw inputs as `load_example_inputs` returns them for one example
    (one array per config input; `preprocess` runs on them), and its label (None: none)."""

    inputs: Sequence[np.ndarray]
    label: Any = None
