"""The configurations tune measures: each engine's declared cheap options and precisions, and its
expensive values on top of its best screened configuration; those the rules reject, with why."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from infercmp.core.errors import InfercmpError
from infercmp.engines.descriptor import EngineDescriptor, Machine, SearchSpace

#: Mixes the search space's rules or options model may reject for each candidate kept.
REJECTED_PER_CANDIDATE = 20


def option_text(value: Any) -> str:
    """A value as `--engine` reads it back: true, none, 3, max-autotune."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class Candidate:
    """One configuration to measure: options (only those that differ from the engine's
    defaults) and a precision, on one device."""

    engine: str
    device: str
    precision: str
    options: tuple[tuple[str, Any], ...] = ()
    cost_s: float = 0.0  # declared extra load cost of its expensive values

    @property
    def variant(self) -> str | None:
        return ",".join(f"{k}={option_text(v)}" for k, v in self.options) or None

    @property
    def engine_text(self) -> str:
        """The `--engine` value that asks for exactly this configuration."""
        return f"{self.engine}[{self.variant}]" if self.variant else self.engine

    @property
    def label(self) -> str:
        return f"{self.engine_text} {self.precision}"

    @property
    def is_default(self) -> bool:
        return not self.options and self.precision == DEFAULT_PRECISION

    def with_option(self, name: str, value: Any, cost_s: float) -> Candidate:
        options = dict(self.options)
        options[name] = value
        return Candidate(
            self.engine, self.device, self.precision, tuple(options.items()), self.cost_s + cost_s
        )


DEFAULT_PRECISION = "fp32"  # bench's default: what "the engine's defaults" means


@dataclass(frozen=True)
class Excluded:
    """A configuration the search leaves out before measuring, and why."""

    label: str
    reason: str


def search_space(descriptor: EngineDescriptor) -> SearchSpace:
    """The engine's declaration, or the empty one: defaults (at its precisions) only."""
    return descriptor.search_space or SearchSpace()


def cheap_candidates(
    descriptor: EngineDescriptor,
    device: str,
    machine: Machine,
    precisions: Sequence[str] | None,
    limit: int | None = None,
) -> tuple[list[Candidate], list[Excluded]]:
    """The cheap configurations of one engine on `device`, the defaults first, then those that
    change fewest options; at most `limit` of them, made one at a time (a declared space can
    be too large to list)."""
    space = search_space(descriptor)
    wanted = precisions_of(descriptor, device, precisions)
    found: list[Candidate] = []
    excluded: list[Excluded] = []
    if not precisions and DEFAULT_PRECISION not in wanted:
        # The defaults are always measured: they are what each speed-up is over.
        if not descriptor.refusal(device, DEFAULT_PRECISION, machine):
            found.append(Candidate(descriptor.name, device, DEFAULT_PRECISION))
    allowed = [p for p in wanted if not _refused(descriptor, device, p, machine, excluded)]
    if not allowed:  # nothing to pair the options with: walking them would yield nothing, slowly
        return found, excluded
    # Each precision's defaults, then each precision with one option changed, and so on.
    mixes: Iterator[tuple[dict[str, Any], str]] = (
        (options, p) for options in space.iter_cheap(device) for p in allowed
    )
    if limit is not None:  # rules may reject most mixes: look at a bounded number of them
        mixes = itertools.islice(mixes, limit * REJECTED_PER_CANDIDATE)
    for options, precision in mixes:
        if limit is not None and len(found) >= limit:
            break
        candidate = Candidate(descriptor.name, device, precision, tuple(options.items()))
        if reason := _invalid(descriptor, space, options, device, precision):
            excluded.append(Excluded(candidate.label, reason))
        else:
            found.append(candidate)
    return found, excluded


def precisions_of(
    descriptor: EngineDescriptor, device: str, precisions: Sequence[str] | None
) -> Sequence[str]:
    """The precisions tune tries: those asked for, else those the engine declares, int8 left
    out (parity on random inputs cannot judge a quantized model: docs/int8.md)."""
    if precisions:
        return precisions
    declared = search_space(descriptor).precisions.get(device, descriptor.precisions)
    return [p for p in declared if p != "int8"]


def _refused(
    descriptor: EngineDescriptor,
    device: str,
    precision: str,
    machine: Machine,
    excluded: list[Excluded],
) -> bool:
    if refused := descriptor.refusal(device, precision, machine):
        excluded.append(Excluded(f"{descriptor.name} {precision}", refused))
    return bool(refused)


def expensive_candidates(
    descriptor: EngineDescriptor, base: Candidate
) -> tuple[list[Candidate], list[Excluded]]:
    """The engine's expensive values applied to `base` (its best screened configuration)."""
    space = search_space(descriptor)
    found: list[Candidate] = []
    excluded: list[Excluded] = []
    for name, value, cost in space.expensive(base.device):
        candidate = base.with_option(name, value, cost)
        options = dict(candidate.options)
        if reason := _invalid(descriptor, space, options, base.device, base.precision):
            excluded.append(Excluded(candidate.label, reason))
        else:
            found.append(candidate)
    return found, excluded


def _invalid(
    descriptor: EngineDescriptor,
    space: SearchSpace,
    options: dict[str, Any],
    device: str,
    precision: str,
) -> str | None:
    if reason := space.rejects(options, device, precision):
        return reason
    try:
        descriptor.parse_options(options)
    except InfercmpError as exc:
        return str(exc)
    return None
