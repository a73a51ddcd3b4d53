"""run.json's `environment`: this host's facts (platform.environment) and every library version,
the engines' runtimes and the engine and model plugins' packages included."""

from __future__ import annotations

from typing import Any

from infercmp.engines import registry as engines
from infercmp.platform.host import distribution_version, host_environment
from infercmp.workload import plugins

# Distributions whose versions a run records besides the engines' own (each engine descriptor
# names its runtime's, `EngineDescriptor.distributions`); read from package metadata, never
# imported (importing torch alone takes seconds). torch is here as the exporter's too.
LIBRARIES = (
    "infercmp",
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "numpy",
    "polars",
    "plotly",
    "cuda-python",
    "cuda-bindings",
    "nvidia-ml-py",
    "psutil",
    "pydantic",
)


def collect_environment() -> dict[str, Any]:
    """Everything run.json records about the machine; fast (no heavy imports) and never raises."""
    return host_environment(_library_versions)


def _library_versions() -> dict[str, str | None]:
    # Every library is listed, null when absent: `compare` then tells a library removed from
    # one that a run did not record at all (an older infercmp's run).
    versions = {name: distribution_version(name) for name in LIBRARIES}
    try:
        versions.update(_plugin_versions())
    except Exception:  # unreadable entry points: the other libraries still count
        pass
    return versions


def _plugin_versions() -> dict[str, str | None]:
    """Every installed engine's runtime distributions (null when absent), and the package of
    every engine and model plugin: a run measured with another OpenVINO or another release of a
    plugin package is another environment for `compare`. Never raises."""
    versions: dict[str, str | None] = {}
    engine_entries = engines.engine_entries().values()
    packages = [e.package for e in engine_entries] + [
        p.package for p in plugins.discover_plugins().values()
    ]
    for package in packages:
        if (version := distribution_version(package)) is not None:
            versions[package] = version
    for entry in engine_entries:
        descriptor = entry.load()  # None for a broken engine: its package is recorded above
        try:
            versions.update(descriptor.runtime_versions() if descriptor else {})
        except Exception:  # a third-party descriptor may raise anything; its package counts
            pass
    return versions
