"""The registry of engines: every descriptor registered under the `infercmp.engines` entry points.

Nothing is imported until asked: `engine_entries` lists the registered names, `get_descriptor`
loads one descriptor (which imports no runtime), `engine_class` imports its runtime (in the worker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infercmp.core.entrypoints import Registered, discover, load_named
from infercmp.core.lazy import lazy_import
from infercmp.engines import Engine

if TYPE_CHECKING:
    from infercmp.engines import descriptor
    from infercmp.engines.descriptor import EngineDescriptor
else:
    # Imported on the first check of a loaded descriptor, not by `engine_names()`: the --engine
    # help of `infercmp --help` lists the names, and the descriptor module brings pydantic
    # (about 150 ms of the 0.25 s that --help may take).
    descriptor = lazy_import("infercmp.engines.descriptor")

ENTRY_POINT_GROUP = "infercmp.engines"


def _check_descriptor(obj: Any, entry: Registered) -> EngineDescriptor:
    found = obj() if isinstance(obj, type) else obj
    if not isinstance(found, descriptor.EngineDescriptor):
        raise TypeError(f"{entry.target} is not an infercmp.engines.descriptor.EngineDescriptor")
    if getattr(found, "name", None) != entry.name:
        raise TypeError(
            f"{entry.target} has name {getattr(found, 'name', None)!r} but is registered "
            f"as {entry.name!r}"
        )
    found.check_declaration()
    return found


def engine_entries() -> dict[str, Registered]:
    """Every engine registered in the environment, by name; nothing is imported yet."""
    return discover(ENTRY_POINT_GROUP, "engine", _check_descriptor)


def engine_names() -> list[str]:
    """Registered engine names, without importing any engine (for help texts)."""
    return list(engine_entries())


def get_descriptor(name: str) -> EngineDescriptor:
    """The descriptor registered as `name`, or one clear error with the closest names."""
    return load_named(engine_entries(), name, "engine")


def engine_class(name: str) -> type[Engine]:
    """Import and return the runtime class of the engine registered as `name`."""
    return get_descriptor(name).load_runtime()


def reference_engine() -> str | None:
    """The engine that runs the model's own PyTorch module: what parity and speed-ups are
    measured against (None when no such engine is installed)."""
    for name, entry in engine_entries().items():
        loaded = entry.load()
        if loaded is not None and loaded.artifact == "module":
            return name
    return None
