"""The reference infercmp plugin: torchvision's ResNet-50 and ResNet-152.

Weights are random unless INFERCMP_PRETRAINED=1 and torchvision's pretrained weights are
already in the local torch hub cache; nothing is ever downloaded. The dataset is 512 generated
images without labels: with random weights no label means anything, so `bench --accuracy`
measures agreement with PyTorch fp32 only (and int8 calibrates on these images).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from infercmp import ModelPlugin, Sample
from infercmp.workload.config import ModelConfig

MEAN = 0.45
STD = 0.225
DATASET_SIZE = 512
DATASET_SEED = 1
DATASET_IMAGE = (224, 224, 3)


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


def synthetic_image(index: int, shape: tuple[int, int, int] = DATASET_IMAGE) -> np.ndarray:
    """Generated image `index` (HWC uint8, seeded by its index): a colour gradient at a random
    angle, a few flat rectangles and discs, and sensor-like noise. Structured, unlike the
    uniform noise of the example, so activations spread as they do on photographs."""
    rng = np.random.default_rng([DATASET_SEED, index])
    height, width, channels = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0, 255, size=(2, channels))
    image = start + (end - start) * ramp[..., None]
    for _ in range(int(rng.integers(2, 7))):
        colour = rng.uniform(0, 255, size=channels)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        if rng.random() < 0.5:
            inside = (np.abs(ys - cy) < ry) & (np.abs(xs - cx) < rx)
        else:
            inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
        image[inside] = colour
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


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

    def load_dataset(self) -> Iterator[Sample]:
        """512 generated 224x224 images (`synthetic_image`), unlabelled: agreement only."""
        for index in range(DATASET_SIZE):
            yield Sample([synthetic_image(index)])

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
