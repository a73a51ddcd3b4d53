"""scikit-learn's 8x8 digits (1,797 labelled images, shipped inside its wheel) and the one
fixed split into the images the CNN trains on and the held-out images infercmp measures on."""

from __future__ import annotations

import numpy as np

# Pixels of load_digits are whole numbers 0..16 (counts of set pixels in 4x4 blocks).
PIXEL_MAX = 16
SPLIT_SEED = 0
TEST_FRACTION = 0.4


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Every image as uint8 [n, 8, 8] (0..16, the raw form) and its label, int64 [n]."""
    from sklearn.datasets import load_digits  # heavy: imported when the data is needed

    data = load_digits()
    return data.images.astype(np.uint8), data.target.astype(np.int64)


def split(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded permutation, the first TEST_FRACTION held out."""
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    held_out = round(count * TEST_FRACTION)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def to_runtime(images: np.ndarray) -> np.ndarray:
    """Raw uint8 images [n, 8, 8] as the model takes them: float32 [n, 1, 8, 8] in 0..1."""
    return (images.astype(np.float32) / PIXEL_MAX)[:, None]
