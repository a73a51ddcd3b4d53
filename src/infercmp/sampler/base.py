"""The Sampler protocol: one source of readings (a process, the system, a GPU) polled over time."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

Reading = dict[str, float | int | None]


class ProcessGone(Exception):
    """Raised by `Sampler.read` when the sampled process has exited: sampling ends quietly."""


@runtime_checkable
class Sampler(Protocol):
    """A source of readings taken by `SamplingSession` in the parent, on the worker's pid.

    Lifecycle: `unavailable_reason()` before the run (None when the sampler can work here),
    then `open(pid)`, `read()` many times from the sampling thread, `close()`. `read` returns
    the sampler's columns (None for a value it cannot give this time); it must be cheap, and
    raises `ProcessGone` when the process it follows has exited.

    A sampler may also define `mark_phase_edge()`: the session calls it (from the sampling
    thread) just before the first reading after each phase change, so a sampler that reads
    something costly only now and then can read it at the phase edges.
    """

    name: str

    def unavailable_reason(self) -> str | None: ...

    def open(self, pid: int) -> None: ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...
