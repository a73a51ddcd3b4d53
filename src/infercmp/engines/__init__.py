"""The Engine protocol every inference runtime implements, and the registry of engines.

A worker drives an engine through one lifecycle:

    engine.load(spec)            # artifact for a device, precision and options
    engine.prepare(inputs)       # allocate and bind buffers for these host arrays
    loop:
        engine.copy_in()         # host arrays -> engine-owned input buffers (H2D on CUDA)
        engine.compute()         # run the model once on the bound buffers
        outputs = engine.copy_out()   # engine buffers -> host numpy arrays (D2H on CUDA)
        engine.synchronize()     # wait for all work queued on `engine.stream`
    engine.release()

The three phases are separate so the worker can time them with CUDA events on `stream`; the
headline latency covers all three ("host array in to host array out"), the device-resident
mode times `compute()` alone. On CPU `copy_in`/`copy_out` may be no-ops or conversions.
An engine never imports another engine's runtime; the registry below imports lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from infercmp.core.entrypoints import Registered
    from infercmp.engines.descriptor import EngineDescriptor

Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16", "bf16"]

ENTRY_POINT_GROUP = "infercmp.engines"


@dataclass(frozen=True)
class EngineSpec:
    """What an engine loads: the artifact for a device, precision and engine options."""

    model: str
    device: Device
    precision: Precision
    artifact: Path | None  # ONNX file, engine plan, or None for PyTorch (built from the plugin)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    device_id: int = 0


@runtime_checkable
class Engine(Protocol):
    """One inference runtime bound to one device; see the module docstring for the lifecycle."""

    name: ClassVar[str]
    #: The options the engine really ran with (defaults filled in): recorded in the results.
    effective_options: dict[str, Any]
    #: What the engine really ran with (providers, versions, allocator peak): read after release.
    info: dict[str, Any]

    @property
    def stream(self) -> int | None:
        """Handle of the CUDA stream the engine's work is queued on, or None on CPU."""
        ...

    def load(self, spec: EngineSpec) -> None: ...

    def prepare(self, inputs: Sequence[np.ndarray]) -> None: ...

    def copy_in(self) -> None: ...

    def compute(self) -> None: ...

    def copy_out(self) -> list[np.ndarray]: ...

    def synchronize(self) -> None: ...

    def release(self) -> None: ...

    def hot_path(self) -> tuple[Any, Any, Any, Any]:
        """The bound copy_in, compute, copy_out and synchronize the timed loops call."""
        ...


def _check_descriptor(obj: Any, entry: Registered) -> EngineDescriptor:
    from infercmp.engines.descriptor import EngineDescriptor

    descriptor = obj() if isinstance(obj, type) else obj
    if not isinstance(descriptor, EngineDescriptor):
        raise TypeError(f"{entry.target} is not an infercmp.engines.descriptor.EngineDescriptor")
    if getattr(descriptor, "name", None) != entry.name:
        raise TypeError(
            f"{entry.target} has name {getattr(descriptor, 'name', None)!r} but is registered "
            f"as {entry.name!r}"
        )
    descriptor.check_declaration()
    return descriptor


def engine_entries() -> dict[str, Registered]:
    """Every engine registered in the environment, by name; nothing is imported yet."""
    from infercmp.core.entrypoints import discover

    return discover(ENTRY_POINT_GROUP, "engine", _check_descriptor)


def engine_names() -> list[str]:
    """Registered engine names, without importing any engine (for help texts)."""
    return list(engine_entries())


def get_descriptor(name: str) -> EngineDescriptor:
    """The descriptor registered as `name`, or one clear error with the closest names."""
    from infercmp.core.entrypoints import load_named

    return load_named(engine_entries(), name, "engine")


def engine_class(name: str) -> type[Engine]:
    """Import and return the runtime class of the engine registered as `name`."""
    return get_descriptor(name).load_runtime()


def reference_engine() -> str | None:
    """The engine that runs the model's own PyTorch module: what parity and speed-ups are
    measured against (None when no such engine is installed)."""
    for name, entry in engine_entries().items():
        descriptor = entry.load()
        if descriptor is not None and descriptor.artifact == "module":
            return name
    return None
