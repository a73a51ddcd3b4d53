"""Figures for the summary from sampler rows: peaks per phase and energy over the measure phase."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _values(rows: Sequence[dict[str, Any]], column: str, phases: Iterable[str] | None):
    wanted = None if phases is None else {phases} if isinstance(phases, str) else set(phases)
    for row in rows:
        if wanted is not None and row.get("phase") not in wanted:
            continue
        value = row.get(column)
        if value is not None:
            yield value


def peak(
    rows: Sequence[dict[str, Any]], column: str, phases: Iterable[str] | str | None = None
) -> float | int | None:
    """Largest value of `column` in rows of the given phases (all phases when None)."""
    return max(_values(rows, column, phases), default=None)


def energy_joules(rows: Sequence[dict[str, Any]], phase: str = "measure") -> float | None:
    """GPU energy spent during `phase`, in joules, from the NVML energy counter (millijoules).

    From the first reading of the phase to the first reading after it (the first row of the
    next phase; the last reading within the phase when none follows), so the window matches
    the phase to within one sampling period at each end. None when the phase has no energy
    reading (no NVML, or not supported). Divide by the iterations measured for J/inference.
    """
    first = end = None
    inside = False
    for row in rows:
        value = row.get("gpu_energy_mj")
        if row.get("phase") == phase:
            inside = True
            if value is not None:
                if first is None:
                    first = value
                end = value
        elif inside and first is not None and value is not None:
            end = value  # the first reading after the phase: its closing edge
            break
    if first is None:
        return None
    return (end - first) / 1000.0
