"""Shared fixtures and the markers that skip themselves when hardware or a module is absent."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("NO_COLOR", "1")
os.environ["COLUMNS"] = "200"  # a developer's terminal width must not change test output


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _tensorrt_module() -> str | None:
    for name in ("tensorrt", "tensorrt_rtx_bindings"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


# `@pytest.mark.cuda` and `@pytest.mark.tensorrt` select (`-m cuda`) and skip themselves where the
# hardware or module is absent; the markers are registered in pyproject.toml.
SKIP_REASONS = {
    "cuda": lambda: None if _has_cuda() else "needs a CUDA GPU; none is visible",
    "tensorrt": lambda: (
        None
        if _tensorrt_module() is not None
        else "needs the tensorrt or tensorrt_rtx_bindings module "
        "(pip install 'infercmp[tensorrt-rtx]')"
    ),
}


def pytest_collection_modifyitems(config, items):
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker, reason_of in SKIP_REASONS.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = reason_of()
            if reasons[marker] is not None:
                item.add_marker(pytest.mark.skip(reason=reasons[marker]))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private artifact cache for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One artifact cache for the whole session, so each model is exported once."""
    from infercmp.artifacts.cache import ArtifactCache

    return ArtifactCache(tmp_path_factory.getbasetemp() / "infercmp-shared-cache")


@pytest.fixture
def runner(shared_cache, monkeypatch):
    """A CLI runner whose commands use the session's shared artifact cache."""
    from typer.testing import CliRunner

    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    return CliRunner()


@pytest.fixture(scope="session")
def exported(shared_cache):
    """`exported(name)` -> (plugin, OnnxArtifact), each model exported once per session."""
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.workload.plugins import get_plugin

    artifacts = {}

    def get(name: str):
        if name not in artifacts:
            plugin = get_plugin(name)
            artifacts[name] = (plugin, export_onnx(plugin, shared_cache))
        return artifacts[name]

    return get
