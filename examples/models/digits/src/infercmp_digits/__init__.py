"""infercmp plugin: a small CNN trained on scikit-learn's 8x8 digits, deterministically, in a few
seconds on the CPU; its dataset is the held-out test split, with labels, and its metric top-1.

Nothing heavy is imported here (`infercmp models` imports every plugin): torch in
`load_pytorch_module`, scikit-learn when the data is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from infercmp import ModelPlugin, Sample, top1
from infercmp_digits import data


class Digits(ModelPlugin):
    name = "digits"

    def load_example_inputs(self, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        (shape,) = shapes
        rng = np.random.default_rng(0)
        return [rng.integers(0, data.PIXEL_MAX + 1, size=shape, dtype=np.uint8)]

    def preprocess(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        (image,) = inputs  # one uint8 [8, 8] image of 0..16 values
        return [data.to_runtime(np.asarray(image)[None])]

    def load_dataset(self) -> Iterator[Sample]:
        """The held-out test split (never trained on), in the raw form, with labels."""
        images, labels = data.digits()
        _, test = data.split(len(labels))
        for k in test:
            yield Sample([images[k]], int(labels[k]))

    def evaluate(self, outputs: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, float]:
        (logits,) = outputs
        return {"top1": top1(logits, labels)}

    def load_pytorch_module(self):
        from infercmp_digits.model import load_model

        return load_model()
