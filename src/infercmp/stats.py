"""Latency statistics from raw samples: percentiles, and a distribution-free CI of the median."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


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
    if len(values) < 8:
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


def hierarchical_median_ci(
    groups: list[np.ndarray], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(median, low, high): a CI of the median of all iterations that covers between-process
    variation, by a hierarchical bootstrap (resample processes, then iterations within each).

    Each process contributes its sorted iterations; a resample draws processes with
    replacement, then for each drawn process draws iteration ranks with replacement. The
    median of the pooled draw is approximated by the median of per-draw quantile positions,
    which keeps it vectorised: `resamples` x processes x draws-per-process numbers.
    """
    sorted_groups = [np.sort(np.asarray(g, dtype=np.float64)) for g in groups if len(g)]
    pooled = np.concatenate(sorted_groups)
    median = float(np.median(pooled))
    k = len(sorted_groups)
    if k < 2:
        lo, hi = median_ci(pooled)
        return median, lo, hi
    rng = np.random.default_rng(seed)
    draws = 64  # iterations drawn per process per resample: enough for a stable median
    picks = rng.integers(0, k, size=(resamples, k))
    u = rng.random((resamples, k, draws))
    values = np.empty((resamples, k, draws))
    for index, group in enumerate(sorted_groups):
        chosen = picks == index
        if chosen.any():
            ranks = (u[chosen] * len(group)).astype(np.int64)
            values[chosen] = group[ranks]
    medians = np.median(values.reshape(resamples, -1), axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return median, float(lo), float(hi)
