"""The reference infercmp plugin: torchvision's ResNet-50 and ResNet-152.

Weights are random unless INFERCMP_PRETRAINED=1 and torchvision's pretrained weights are
already in the local torch hub cache; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infercmp import ModelPlugin
from infercmp.workload.config import ModelConfig

MEAN = 0.45
STD = 0.225


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HWC image with bilinear interpolation, in numpy (no torch in the parent)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


class ResNet50(ModelPlugin):
    name = "resnet50"
    arch = "resnet50"
    weights_enum = "ResNet50_Weights"

    def load_config(self) -> ModelConfig:
        config = super().load_config()  # the study's config, shared by both depths
        return config.model_copy(update={"name": self.name})

    def load_example_inputs(self, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        (shape,) = shapes
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, size=shape, dtype=np.uint8)]  # an HWC 8-bit image

    def preprocess(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The original study's preprocessing: resize, HWC->CHW, /255, normalise, add batch."""
        (image,) = inputs
        height, width = image.shape[:2]
        resized = _resize_bilinear(image, height, width)
        chw = resized.transpose(2, 0, 1).astype(np.float32) / 255.0
        return [np.ascontiguousarray(((chw - MEAN) / STD)[None], dtype=np.float32)]

    def load_pytorch_module(self):
        import torch
        import torchvision

        builder = getattr(torchvision.models, self.arch)
        torch.manual_seed(0)
        if os.environ.get("INFERCMP_PRETRAINED") == "1":
            weights = getattr(torchvision.models, self.weights_enum).DEFAULT
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            if not cached.exists():
                raise FileNotFoundError(
                    f"INFERCMP_PRETRAINED=1 but {cached} is not in the local cache; infercmp "
                    "never downloads weights"
                )
            model = builder(weights=None)
            model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        else:
            model = builder(weights=None)
        return model.eval()


class ResNet152(ResNet50):
    name = "resnet152"
    arch = "resnet152"
    weights_enum = "ResNet152_Weights"


class ResNet50Study(ResNet50):
    """ResNet-50 with the original study's config, batch fixed at 1 (`resnet50` is
    batch-dynamic for --batch sweeps); the same model and preprocessing."""

    name = "resnet50-study"
    config_file = "study_config.yaml"
