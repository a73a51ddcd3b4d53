"""A tiny convolutional classifier with dynamic height and width (an image model in miniature)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


class TinyCNN(ModelPlugin):
    name = "tiny-cnn"
    config_file = "tiny_cnn.yaml"

    def load_example_inputs(self, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        (shape,) = shapes
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, size=shape, dtype=np.uint8)]

    def preprocess(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        (image,) = inputs  # HWC uint8
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
        return [chw[None]]

    def load_pytorch_module(self):
        import torch
        from torch import nn

        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        ).eval()
