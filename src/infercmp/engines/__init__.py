"""The Engine protocol every inference runtime implements, and the `EngineSpec` it loads.

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
An engine never imports another engine's runtime; the registry (`infercmp.engines.registry`)
finds engines through entry points and imports each runtime only when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from infercmp.core.types import Device, Precision

if TYPE_CHECKING:
    import numpy as np

    from infercmp.core.contract import RawProfile


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
    # Where the engine keeps its own compiled-artifact caches (WorkerSpec.engine_cache_dir):
    # OpenVINO's CACHE_DIR, TensorRT's timing cache; None: the engine's defaults.
    cache_dir: Path | None = None


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

    def profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """The engine's own profiler over `iterations` calls of the prepared inputs, after
        `warmup` unprofiled ones, untimed (the worker's profile phase, after measuring). It
        may build a second, profiled instance of itself; its files go under `workdir`. Only
        engines whose descriptor names a `profiler` are asked."""
        ...
