"""The change of a median between two runs and its 95% interval, from raw latencies.

The interval is the hierarchical bootstrap's (processes, then iterations within each) whenever a
run has repeated processes. A side measured in one process cannot show how much a second process
of the same code would differ, so its share is added from the other side's spread between
processes, or, with one process on both sides, from `--run-noise`, the between-run noise allowed
for this machine. Report/compare.py decides a verdict from the interval (`decide`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import
from infercmp.core.stats import Z95, hierarchical_change_ci, pooled_median

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

# How the interval was made (`ChangeInterval.method`).
SINGLE_PROCESS = "single-process"
HIERARCHICAL = "hierarchical"

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
# How far two single-process runs of the same code may differ. On the 2-vCPU development
# machine identical single-process runs of tiny-cnn differed by up to 7.1% (issue 27's A/A
# pairs, 2026-12-06; docs/performance.md, "fifth pass"), so 10% keeps them from ever reading as
# a regression while a 20% slowdown still does.
DEFAULT_RUN_NOISE = 0.10
# The bootstrap's cost grows with iterations x resamples: above this many iterations a process
# it resamples an evenly spaced subsample (in time order), which widens the interval a little and
# never narrows it; the row's note says so.
MAX_BOOTSTRAP_SAMPLES = 10_000
# Bound on resamples x samples held in memory at once by the vectorised bootstrap.
_CHUNK_ELEMENTS = 8_000_000


def bootstrap_median_ratio(
    base: np.ndarray,
    new: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """median(new)/median(base) and its percentile-bootstrap CI, resampling each run independently.

    Vectorised: each chunk draws a (resamples x n) index matrix, bounded in memory.
    """
    base = np.asarray(base, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if base.size == 0 or new.size == 0:
        raise ValueError("both runs need latency samples")
    rng = np.random.default_rng(seed)
    ratio = float(np.median(new) / np.median(base))
    ratios = _bootstrap_medians(new, resamples, rng) / _bootstrap_medians(base, resamples, rng)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


def _bootstrap_medians(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(values[idx], axis=1)
    return out


@dataclass(frozen=True)
class ChangeInterval:
    """The relative change of the median (new / base - 1) and its 95% interval, with how made."""

    change: float
    low: float
    high: float
    method: str
    processes: tuple[int, int]
    # The share added for a side measured in one process (relative; 0 when none was).
    widened_by: float = 0.0
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def change_interval(
    base: list[np.ndarray],
    new: list[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    run_noise: float = DEFAULT_RUN_NOISE,
) -> ChangeInterval:
    """The change of the median between two runs' processes (raw latencies, one array each).

    The hierarchical bootstrap's interval (it reduces to the ordinary bootstrap over
    iterations when both sides have one process), widened for a side measured in one process
    by what a second process would differ by: 1.96 x the other side's standard deviation of
    process medians, or `run_noise` when neither side has repeated processes. The widening
    adds in quadrature to each half of the interval, as independent errors do.
    """
    processes = (len(base), len(new))
    change = pooled_median(new) / pooled_median(base) - 1
    thin_base, thin_new = [_thinned(g) for g in base], [_thinned(g) for g in new]
    thinned_change, low, high = hierarchical_change_ci(thin_base, thin_new, resamples, seed)
    # The interval's width comes from the thinned data; its centre from every iteration.
    low, high = low + change - thinned_change, high + change - thinned_change
    note = ""
    largest = max(g.size for g in [*base, *new])
    if largest > MAX_BOOTSTRAP_SAMPLES:
        note = (
            f"bootstrap on {MAX_BOOTSTRAP_SAMPLES:,} evenly spaced iterations of each process "
            f"(up to {largest:,} measured): the interval is a little wider, never narrower"
        )
    widen = _single_process_share(base, new, run_noise)
    if widen:
        low = change - math.hypot(change - low, widen)
        high = change + math.hypot(high - change, widen)
    return ChangeInterval(change, low, high, _method(processes), processes, widen, note)


def _method(processes: tuple[int, int]) -> str:
    return HIERARCHICAL if max(processes) >= 2 else SINGLE_PROCESS


def _thinned(values: np.ndarray) -> np.ndarray:
    """At most MAX_BOOTSTRAP_SAMPLES of a process's iterations, evenly spaced in time order."""
    values = np.asarray(values)
    if values.size <= MAX_BOOTSTRAP_SAMPLES:
        return values
    return values[np.linspace(0, values.size - 1, MAX_BOOTSTRAP_SAMPLES).round().astype(int)]


def process_sd(groups: list[np.ndarray]) -> float:
    """Standard deviation of the process medians relative to their mean (0 for one process).

    Unlike their range, it does not grow with the number of processes.
    """
    if len(groups) < 2:
        return 0.0
    medians = np.array([np.median(g) for g in groups], dtype=np.float64)
    centre = float(medians.mean())
    return float(medians.std(ddof=1) / centre) if centre > 0 else 0.0


def _single_process_share(base: list[np.ndarray], new: list[np.ndarray], run_noise: float) -> float:
    """What a side measured in one process leaves out of the interval (0 when none is)."""
    singles = (len(base) == 1) + (len(new) == 1)
    if singles == 2:
        return run_noise
    if singles == 1:
        return Z95 * process_sd(base if len(base) > 1 else new)
    return 0.0
