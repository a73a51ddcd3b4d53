"""A base class that checks an engine's lifecycle once, in its public methods (template method).

Engines derive from `EngineBase` and implement the `_load`, `_prepare`, `_copy_in`, `_compute`,
`_copy_out`, `_synchronize` and `_release` hooks; the public methods of the `Engine` protocol
check the state and the arguments, then call them. The per-iteration methods check one
attribute only, so the timed loop pays a few tens of nanoseconds for the safety.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from infercmp.engines import DEVICES, PRECISIONS, EngineSpec
from infercmp.errors import InfercmpError


class EngineError(InfercmpError):
    """An engine used out of order or given inputs it cannot take."""


class UnsupportedCombination(EngineError):
    """The engine cannot run this device, precision or option here; the message says why.

    Workers record it as status "unsupported", which the run lists as skipped.
    """


_NEW, _LOADED, _PREPARED, _RELEASED = "new", "loaded", "prepared", "released"


def check_options(engine: str, options: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Options merged over their defaults; an unknown name is one clear error listing the known."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise EngineError(
            f"engine '{engine}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"known options: {', '.join(sorted(known))}"
        )
    return {**known, **options}


class EngineBase(abc.ABC):
    """Lifecycle checks shared by the engines; implements the `Engine` protocol."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = DEVICES
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS

    def __init__(self) -> None:
        self._state = _NEW
        self._spec: EngineSpec | None = None
        self.effective_options: dict[str, Any] = {}
        # What the engine really ran with (providers, versions): recorded in result.json.
        self.info: dict[str, Any] = {}

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
        if spec.device not in self.devices:
            raise UnsupportedCombination(
                f"engine '{self.name}' does not run on device '{spec.device}' "
                f"(it runs on: {', '.join(self.devices)})"
            )
        if spec.precision not in self.precisions:
            raise UnsupportedCombination(
                f"engine '{self.name}' does not support precision '{spec.precision}' "
                f"(it supports: {', '.join(self.precisions)})"
            )
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
        self._prepare([np.ascontiguousarray(a) for a in inputs])
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

    def release(self) -> None:
        """Free the engine's buffers and runtime objects; calling it again does nothing."""
        if self._state in (_NEW, _RELEASED):
            self._state = _RELEASED
            return
        try:
            self._release()
        finally:
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
