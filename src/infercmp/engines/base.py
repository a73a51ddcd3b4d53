"""A base class that checks an engine's lifecycle once, in its public methods (template method).

Engines derive from `EngineBase` and implement the `_load`, `_prepare`, `_copy_in`, `_compute`,
`_copy_out`, `_synchronize` and `_release` hooks; the public methods of the `Engine` protocol
check the state and the arguments, then call them. The per-iteration methods check one
attribute only, so the timed loop pays a few tens of nanoseconds for the safety.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.engines import EngineSpec
from infercmp.engines.descriptor import EngineDescriptor, EngineOptions

if TYPE_CHECKING:
    import numpy as np

    from infercmp.core.contract import RawProfile
else:
    np = lazy_import("numpy")


#: An engine's hot path as `Engine.hot_path` gives it: copy_in, compute, copy_out, synchronize.
HotPath = tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any], Callable[[], Any]]


def timed_calls(hot_path: HotPath, calls: int) -> list[float]:
    """`calls` calls of an engine's hot path (copy in, compute, copy out, synchronize; what
    `Engine.hot_path` gives), each one's wall ms: a profile's `wall_ms`, or its warm-up."""
    copy_in, compute, copy_out, synchronize = hot_path
    wall: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        copy_in()
        compute()
        copy_out()
        synchronize()
        wall.append((time.perf_counter() - start) * 1e3)
    return wall


def busy_time(intervals: Iterable[tuple[float, float]]) -> float:
    """The time at least one of the (start, end) intervals covers (the union's length, in
    their unit): a profile's device busy time from its kernels' intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class EngineError(InfercmpError):
    """An engine used out of order or given inputs it cannot take."""


class UnsupportedCombination(EngineError):
    """The engine cannot run this device, precision or option here; the message says why.

    Workers record it as status "unsupported", which the run lists as skipped.
    """


_NEW, _LOADED, _PREPARED, _RELEASED = "new", "loaded", "prepared", "released"


class EngineBase(abc.ABC):
    """Lifecycle checks shared by the engines; implements the `Engine` protocol.

    A subclass sets `descriptor`; its name, devices, precisions and options come from there,
    so what planning promised and what the runtime accepts cannot drift apart.
    """

    descriptor: ClassVar[EngineDescriptor]
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "descriptor" in cls.__dict__:
            cls.name = cls.descriptor.name

    def __init__(self) -> None:
        self._state = _NEW
        self._spec: EngineSpec | None = None
        self.options: EngineOptions | None = None  # the validated options, set by load()
        self.effective_options: dict[str, Any] = {}
        # What the engine really ran with (providers, versions): recorded in result.json.
        self.info: dict[str, Any] = {}
        # The arrays prepare() was last given: an engine's profile prepares its profiled twin
        # (a second session or compile) with them.
        self._prepared_inputs: list[np.ndarray] = []

    # -- the Engine protocol ------------------------------------------------------------------

    @property
    def stream(self) -> int | None:
        return None

    @property
    def spec(self) -> EngineSpec:
        if self._spec is None:
            raise EngineError(f"engine '{self.name}': call load() first")
        return self._spec

    def load(self, spec: EngineSpec) -> None:
        if self._state != _NEW:
            raise EngineError(
                f"engine '{self.name}' is {self._state}; load() is allowed once, on a new engine"
            )
        descriptor = self.descriptor
        if spec.device not in descriptor.devices:
            raise UnsupportedCombination(
                f"engine '{self.name}' does not run on device '{spec.device}' "
                f"(it runs on: {', '.join(descriptor.devices)})"
            )
        if spec.precision not in descriptor.precisions:
            raise UnsupportedCombination(
                f"engine '{self.name}' does not support precision '{spec.precision}' "
                f"(it supports: {', '.join(descriptor.precisions)})"
            )
        try:
            self.options = descriptor.parse_options(dict(spec.options))
        except InfercmpError as exc:
            raise EngineError(str(exc)) from None
        self.effective_options = self.options.model_dump()
        self._spec = spec
        self._load(spec)
        self._state = _LOADED

    def prepare(self, inputs: Sequence[np.ndarray]) -> None:
        if self._state not in (_LOADED, _PREPARED):
            raise EngineError(
                f"engine '{self.name}' is {self._state}; call load() before prepare()"
            )
        names = self.spec.input_names
        if len(inputs) != len(names):
            raise EngineError(
                f"engine '{self.name}': prepare() got {len(inputs)} arrays for "
                f"{len(names)} inputs ({', '.join(names)})"
            )
        for name, array in zip(names, inputs):
            if not isinstance(array, np.ndarray):
                raise EngineError(
                    f"engine '{self.name}': input '{name}' is {type(array).__name__}, "
                    "expected a numpy array"
                )
        self._state = _LOADED  # a failed re-prepare must not leave stale buffers usable
        arrays = [np.ascontiguousarray(a) for a in inputs]
        self._prepare(arrays)
        self._prepared_inputs = arrays
        self._state = _PREPARED

    def copy_in(self) -> None:
        if self._state is not _PREPARED:
            self._not_prepared("copy_in")
        self._copy_in()

    def compute(self) -> None:
        if self._state is not _PREPARED:
            self._not_prepared("compute")
        self._compute()

    def copy_out(self) -> list[np.ndarray]:
        if self._state is not _PREPARED:
            self._not_prepared("copy_out")
        return self._copy_out()

    def synchronize(self) -> None:
        if self._state is not _PREPARED:
            self._not_prepared("synchronize")
        self._synchronize()

    def hot_path(self) -> tuple[Any, Any, Any, Any]:
        """The per-iteration hooks (copy_in, compute, copy_out, synchronize), checked once.

        The timed loops call these instead of the public methods, whose state check would
        otherwise run four times per iteration (about 0.3 us of a 5 us ONNX Runtime call).
        """
        if self._state is not _PREPARED:
            self._not_prepared("hot_path")
        return self._copy_in, self._compute, self._copy_out, self._synchronize

    def profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """The engine's own profiler over `iterations` calls of the prepared inputs after
        `warmup` unprofiled ones (the worker's untimed profile phase); files it keeps go
        under `workdir`, which the engine creates if it writes any.

        Around it, `iterations` calls of the same hot path unprofiled, half before and half
        after (`RawProfile.unprofiled_wall_ms`): the profiler's own cost is the profiled calls
        against these, not against the timed phase, which ran earlier on a machine that may
        since have changed."""
        if self._state is not _PREPARED:
            self._not_prepared("profile")
        if iterations < 1 or warmup < 0:
            raise EngineError(
                f"engine '{self.name}': profile() needs iterations >= 1 and warmup >= 0, "
                f"got {iterations} and {warmup}"
            )
        before = (iterations + 1) // 2
        unprofiled = timed_calls(self.hot_path(), warmup + before)[warmup:]
        raw = self._profile(iterations, warmup, workdir)
        unprofiled += timed_calls(self.hot_path(), iterations - before)
        return raw.model_copy(update={"unprofiled_wall_ms": unprofiled})

    def slot_engine(self) -> EngineBase:
        """Another engine for one more request in flight (`--concurrency`), loaded with the
        same spec; the caller prepares it. One instance per slot gives each its own buffers,
        stream, CUDA graph or session; an engine that can share more overrides this."""
        other = type(self)()
        other.load(self.spec)
        return other

    def bind_thread(self) -> None:
        """Called once in each thread that will drive this engine, before its first request:
        state a runtime keeps per thread (PyTorch's current CUDA stream) is set here."""
        return None  # nothing is per thread unless the runtime says so

    def release(self) -> None:
        """Free the engine's buffers and runtime objects; calling it again does nothing."""
        if self._state in (_NEW, _RELEASED):
            self._state = _RELEASED
            return
        try:
            self._release()
        finally:
            self._prepared_inputs = []
            self._state = _RELEASED

    def _not_prepared(self, method: str) -> None:
        raise EngineError(
            f"engine '{self.name}' is {self._state}; call load() and prepare() before {method}()"
        )

    # -- hooks --------------------------------------------------------------------------------

    @abc.abstractmethod
    def _load(self, spec: EngineSpec) -> None: ...

    @abc.abstractmethod
    def _prepare(self, inputs: list[np.ndarray]) -> None: ...

    @abc.abstractmethod
    def _copy_in(self) -> None: ...

    @abc.abstractmethod
    def _compute(self) -> None: ...

    @abc.abstractmethod
    def _copy_out(self) -> list[np.ndarray]: ...

    @abc.abstractmethod
    def _synchronize(self) -> None: ...

    @abc.abstractmethod
    def _release(self) -> None: ...

    def _profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """Overridden by an engine whose descriptor names a `profiler`."""
        raise UnsupportedCombination(f"{self.name} has no per-layer profiler")
