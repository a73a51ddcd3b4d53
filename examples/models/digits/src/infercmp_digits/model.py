"""The digits CNN, its deterministic training on the training split, and its weights, cached
in infercmp's artifact cache (`INFERCMP_CACHE_DIR`, else `.infercmp/cache`) under a key of
this package's source, the training settings and the library versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import torch
from torch import nn

from infercmp.artifacts.cache import (
    ArtifactCache,
    EntryMeta,
    content_key,
    register_kind,
    resolve_cache_dir,
)
from infercmp_digits import data

TRAINING = {"seed": 0, "epochs": 20, "batch": 32, "lr": 3e-3, "weight_decay": 1e-4}
WEIGHTS_FILE = "weights.pt"
KIND = "digits-weights"

register_kind(KIND, (WEIGHTS_FILE,), EntryMeta)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear classifier: [n, 1, 8, 8] -> logits [n, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def train(settings: dict[str, float] = TRAINING) -> dict[str, torch.Tensor]:
    """Train on the training split; the same settings give the same weights, bit for bit
    (seeded, one thread, deterministic algorithms; the global settings are restored)."""
    images, labels = data.digits()
    train_rows, _ = data.split(len(labels))
    x = torch.from_numpy(data.to_runtime(images[train_rows]))
    y = torch.from_numpy(labels[train_rows])
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # a reduction split over threads may sum in another order
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(settings["seed"]))
            model = DigitsCNN()
        order = torch.Generator().manual_seed(int(settings["seed"]))
        optimizer = torch.optim.Adam(
            model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
        batch = int(settings["batch"])
        model.train()
        for _ in range(int(settings["epochs"])):
            permutation = torch.randperm(len(y), generator=order)
            for start in range(0, len(y), batch):
                rows = permutation[start : start + batch]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def weights_key(settings: dict[str, float] = TRAINING) -> str:
    """What the cached weights depend on: this package's code, the settings, the versions."""
    here = Path(__file__).parent
    code = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(here.glob("*.py"))}
    versions = {d: importlib.metadata.version(d) for d in ("torch", "numpy", "scikit-learn")}
    return content_key({"code": code, "settings": settings, "versions": versions})


def trained_weights(cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """The trained weights: from the cache, or trained now (a few seconds) and cached."""
    cache = ArtifactCache(cache_dir if cache_dir is not None else resolve_cache_dir(None))
    key = weights_key()
    with cache.lock(KIND, key):
        entry = cache.lookup(KIND, key)
        if entry is None:
            weights = train()
            with cache.staging() as staged:
                torch.save(weights, staged / WEIGHTS_FILE)
                entry = cache.store(KIND, key, staged, {"settings": TRAINING})
    loaded = torch.load(entry.file(WEIGHTS_FILE), map_location="cpu", weights_only=True)
    return dict(loaded)


def load_model(cache_dir: Path | None = None) -> DigitsCNN:
    model = DigitsCNN()
    model.load_state_dict(trained_weights(cache_dir))
    return model.eval()
