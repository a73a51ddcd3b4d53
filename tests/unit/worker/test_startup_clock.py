"""The worker's start-up figures (`worker.startup`), from given moments."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest

from infercmp.worker.startup import FIRST_K, StartupClock, process_started


def test_the_figures_follow_from_the_moments_and_the_first_calls():
    clock = StartupClock(process_started=100.0, load_called=100.5, loaded=101.25, prepared=101.5)
    wall_ns = np.array([40e6, 2e6, *[1e6] * 20], dtype=np.int64)  # 40 ms, 2 ms, then 1 ms each
    times = clock.times(warmup_started=101.6, warmup_wall_ns=wall_ns)
    assert times is not None
    assert (times.process_to_load_s, times.load_s, times.prepare_s) == pytest.approx(
        (0.5, 0.75, 0.25)
    )
    assert times.first_inference_ms == times.first_k_ms[0] == 40.0
    assert times.first_k_ms == [40.0, 2.0, *[1.0] * (FIRST_K - 2)]
    assert times.ready_s == pytest.approx(1.64)  # the warm-up's start plus its first call
    assert times.ready_s >= times.process_to_load_s + times.load_s + times.prepare_s


def test_no_call_no_figures():
    assert StartupClock(1.0).times(2.0, np.array([], dtype=np.int64)) is None


def test_this_process_started_when_the_kernel_says():
    started = process_started()
    assert started <= time.time()
    # psutil adds a boot time given in whole seconds: it agrees to within one.
    assert abs(started - psutil.Process().create_time()) < 1.05
    assert StartupClock.now().load_called >= started
