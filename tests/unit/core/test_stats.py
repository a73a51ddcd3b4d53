"""Process-level statistics: the hierarchical bootstrap of the median, on synthetic latencies."""

from __future__ import annotations

import numpy as np
import pytest

from infercmp.core.stats import hierarchical_change_ci, hierarchical_median_ci, median_ci
from infercmp.report.compare import NO_CHANGE, decide
from infercmp.report.interval import ChangeInterval, bootstrap_median_ratio

NOISE_FLOOR = 0.01


def _verdict(change: float, low: float, high: float) -> str:
    """compare's rule at its defaults (5% threshold) on a relative change and its interval."""
    return decide(ChangeInterval(change, low, high, "hierarchical", (5, 5)), 0.05, NOISE_FLOOR)


def _processes(rng, level: float, offsets, n: int = 2000, cv: float = 0.03):
    """One array per worker process: lognormal iterations around level x (1 + offset)."""
    return [level * (1 + o) * rng.lognormal(0.0, cv, n) for o in offsets]


def test_one_process_gives_the_order_statistics_interval():
    rng = np.random.default_rng(1)
    values = rng.lognormal(0, 0.05, 3000)
    median, low, high = hierarchical_median_ci([values], resamples=2000, seed=0)
    assert median == pytest.approx(np.median(values))
    exact_low, exact_high = median_ci(values)
    width = exact_high - exact_low
    assert low == pytest.approx(exact_low, abs=0.15 * width)
    assert high == pytest.approx(exact_high, abs=0.15 * width)


def test_the_interval_widens_with_the_spread_between_processes():
    rng = np.random.default_rng(2)
    tight = _processes(rng, 1.0, [0, 0, 0, 0, 0])
    spread = _processes(rng, 1.0, [-0.04, -0.02, 0.0, 0.02, 0.04])
    _, tl, th = hierarchical_median_ci(tight, 2000, 0)
    _, sl, sh = hierarchical_median_ci(spread, 2000, 0)
    assert (sh - sl) > 5 * (th - tl)
    assert sl < 1.0 < sh


def test_seeded_and_repeatable():
    rng = np.random.default_rng(3)
    groups = _processes(rng, 1.0, [0.01, -0.01, 0.0])
    assert hierarchical_median_ci(groups, 500, 7) == hierarchical_median_ci(groups, 500, 7)


def test_between_process_offsets_are_not_a_regression_where_the_single_process_method_says_so():
    """Same distribution of process levels on both sides, different draws of it."""
    rng = np.random.default_rng(4)
    # Two ordinary draws of five process levels from N(0, 3%): the means differ by 1.6%.
    base = _processes(rng, 10.0, [-0.03, -0.01, 0.0, 0.01, 0.02])
    new = _processes(rng, 10.0, [-0.01, 0.0, 0.02, 0.03, 0.04])
    ratio, low, high = bootstrap_median_ratio(np.concatenate(base), np.concatenate(new), 2000, 0)
    # The precondition the test is about: pooling iterations calls the draw significant.
    assert _verdict(ratio - 1, low - 1, high - 1) != NO_CHANGE
    change, ci_low, ci_high = hierarchical_change_ci(base, new, 2000, 0)
    assert change == pytest.approx(ratio - 1)
    assert _verdict(change, ci_low, ci_high) == NO_CHANGE


def test_a_real_twenty_percent_slowdown_is_flagged():
    rng = np.random.default_rng(5)
    base = _processes(rng, 10.0, rng.normal(0, 0.03, 5))
    new = _processes(rng, 12.0, rng.normal(0, 0.03, 5))
    change, low, high = hierarchical_change_ci(base, new, 2000, 0)
    assert change == pytest.approx(0.2, abs=0.05)
    assert 0.08 < low < change < high
    assert _verdict(change, low, high) == "regression"
