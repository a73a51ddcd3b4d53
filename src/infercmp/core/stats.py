"""Latency statistics from raw samples: percentiles, median CIs within and across processes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

Z95 = 1.959963984540054
# Fewer samples than this give no confidence interval of the median at all.
CI_MIN_SAMPLES = 8


def median_ci_ranks(n: int, z: float = Z95) -> tuple[int, int]:
    """0-based order-statistic ranks bounding the median with ~95% confidence.

    The count of samples below the median is Binomial(n, 1/2); its normal approximation gives
    the ranks (the method of Conover, *Practical Nonparametric Statistics*). No distribution
    is assumed for the latencies themselves, which are skewed.
    """
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return lo, hi


def median_ci(values: np.ndarray) -> tuple[float, float]:
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    lo, hi = median_ci_ranks(len(ordered))
    return float(ordered[lo]), float(ordered[hi])


def relative_ci_half_width(values: np.ndarray) -> float:
    """Half the width of the median's 95% CI, relative to the median (inf when too few)."""
    if len(values) < CI_MIN_SAMPLES:
        return math.inf
    lo, hi = median_ci(values)
    median = float(np.median(values))
    return (hi - lo) / 2 / median if median > 0 else math.inf


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one combination's per-iteration latencies, in milliseconds."""

    count: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    ci_low_ms: float
    ci_high_ms: float
    cv: float
    throughput_per_s: float

    @classmethod
    def from_ns(cls, values_ns: np.ndarray, batch_size: int = 1) -> LatencyStats:
        ms = np.asarray(values_ns, dtype=np.float64) / 1e6
        if ms.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        lo, hi = median_ci(ms)
        mean = float(ms.mean())
        std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
        return cls(
            count=int(ms.size),
            min_ms=float(ms.min()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(ms.max()),
            mean_ms=mean,
            std_ms=std,
            ci_low_ms=lo,
            ci_high_ms=hi,
            cv=std / mean if mean > 0 else 0.0,
            throughput_per_s=batch_size * 1000.0 / float(p50) if p50 > 0 else 0.0,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def outlier_mask(values: np.ndarray, k: float = 3.0) -> np.ndarray:
    """True for samples beyond k IQRs outside [Q1, Q3]: flagged for the report, never dropped."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 4:
        return np.zeros(values.shape, dtype=bool)
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    return (values < q1 - k * iqr) | (values > q3 + k * iqr)


# --------------------------------------------------------------------------- across processes
#
# Iterations of one worker process share its state (memory layout, clocks, which core it got),
# so they are not independent draws: two processes of the same combination can differ by more
# than either's CI. The hierarchical bootstrap resamples processes, then iterations within each
# chosen process, so its interval covers the spread between processes too.

# Within-process resamples drawn once per process and reused by the outer resamples, and the
# grid of values the pooled median is located on (quantiles of the pooled data, so the grid is
# finest where the median lies: about 0.2% of the data between two points).
_WITHIN_REPLICATES = 256
_GRID_POINTS = 512
_CHUNK_ELEMENTS = 8_000_000


def hierarchical_medians(
    groups: list[np.ndarray], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """`resamples` bootstrap replicates of the median of all iterations, resampled by process.

    Each replicate draws as many processes as there are, with replacement, then for each drawn
    process one of its within-process resamples (its iterations drawn with replacement), and
    takes the median of everything drawn. Vectorised: a within-process resample is kept as the
    count of its values below each grid point, so pooling processes is an addition and the
    median is where the pooled count crosses half (interpolated between grid points).
    """
    groups = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("no latency samples")
    pooled = np.concatenate(groups)
    grid = np.quantile(pooled, np.linspace(0.0, 1.0, _GRID_POINTS))
    below = np.stack([_within_counts(g, grid, rng) for g in groups])  # (P, W, G)
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    count = len(groups)
    out = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // (count * _GRID_POINTS))
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        chosen = rng.integers(0, count, size=(stop - start, count))
        replicate = rng.integers(0, _WITHIN_REPLICATES, size=(stop - start, count))
        cumulative = below[chosen, replicate].sum(axis=1)  # (rows, G): values <= each point
        half = sizes[chosen].sum(axis=1) / 2.0
        out[start:stop] = _crossing(cumulative, half, grid)
    return out


def _within_counts(values: np.ndarray, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(W, G): for each within-process resample, how many of its values are <= each point."""
    n = values.size
    # The grid cell of each value, found once: a resample is then a draw of cells.
    cells = np.searchsorted(grid, values, side="left").astype(np.int32)  # first point >= value
    counts = np.empty((_WITHIN_REPLICATES, grid.size), dtype=np.int32)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, _WITHIN_REPLICATES, rows):
        stop = min(_WITHIN_REPLICATES, start + rows)
        drawn = cells[rng.integers(0, n, size=(stop - start, n))]
        drawn += (np.arange(stop - start, dtype=np.int32) * (grid.size + 1))[:, None]
        hist = np.bincount(drawn.ravel(), minlength=(stop - start) * (grid.size + 1))
        counts[start:stop] = np.cumsum(hist.reshape(stop - start, grid.size + 1), axis=1)[:, :-1]
    return counts


def _crossing(cumulative: np.ndarray, half: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per row, the grid value where the nondecreasing count first reaches `half`."""
    k = np.clip((cumulative < half[:, None]).sum(axis=1), 1, grid.size - 1)
    rows = np.arange(cumulative.shape[0])
    low, high = cumulative[rows, k - 1], cumulative[rows, k]
    frac = np.clip((half - low) / np.maximum(high - low, 1), 0.0, 1.0)
    return grid[k - 1] + frac * (grid[k] - grid[k - 1])


def pooled_median(groups: list[np.ndarray]) -> float:
    """The median of every iteration of every process together."""
    return float(
        np.median(np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in groups]))
    )


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def hierarchical_median_ci(
    groups: list[np.ndarray], resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Median of all iterations and its percentile CI from the hierarchical bootstrap."""
    medians = hierarchical_medians(groups, resamples, np.random.default_rng(seed))
    return (pooled_median(groups), *_percentile_interval(medians, level))


def hierarchical_change_ci(
    base: list[np.ndarray], new: list[np.ndarray], resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Relative change of the median, new / base - 1, and its CI; each run resampled by process.

    The two runs are resampled independently; the CI is the percentile interval of the ratio.
    """
    rng = np.random.default_rng(seed)
    ratios = hierarchical_medians(new, resamples, rng) / hierarchical_medians(base, resamples, rng)
    low, high = _percentile_interval(ratios, level)
    return pooled_median(new) / pooled_median(base) - 1, low - 1, high - 1
