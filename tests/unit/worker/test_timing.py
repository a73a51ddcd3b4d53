"""Timed loops, stopping rules and CUDA event rings, on fake engines (and a real GPU if any)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infercmp.worker import timing


class CountingEngine:
    """Records the order of calls; no work, so the loops themselves are what is tested."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def copy_in(self) -> None:
        self.calls.append("in")

    def compute(self) -> None:
        self.calls.append("compute")

    def copy_out(self) -> list[np.ndarray]:
        self.calls.append("out")
        return []

    def synchronize(self) -> None:
        self.calls.append("sync")


class FakeEvents(timing.CudaEvents):
    """An event ring whose marks record their order and whose elapsed time is mark distance."""

    def __init__(self, engine: CountingEngine, slots: int, marks: int) -> None:
        self.slots, self.marks = slots, marks
        self.recorders = [
            tuple((lambda k=k: engine.calls.append(f"mark{k}")) for k in range(marks))
            for _ in range(slots)
        ]

    def elapsed_ns(self, slot: int, first: int, last: int) -> int:
        return 1000 * (last - first)


def test_fixed_iterations_time_every_phase_in_order():
    engine = CountingEngine()
    result = timing.measure(engine, timing.FixedIterations(5))
    assert result.iterations == 5
    assert result.stop_reason == "iterations"
    assert list(result.samples) == ["wall.total"]
    assert result.samples["wall.total"].dtype == np.int64
    assert (result.samples["wall.total"] > 0).all()
    assert engine.calls == ["in", "compute", "out", "sync"] * 5


def test_resident_loop_times_compute_only():
    engine = CountingEngine()
    result = timing.measure(engine, timing.FixedIterations(3), resident=True)
    assert result.iterations == 3
    assert engine.calls == ["compute", "sync"] * 3


def test_iterations_beyond_one_batch_grow_the_arrays(monkeypatch):
    monkeypatch.setattr(timing, "MAX_BATCH", 7)
    result = timing.measure(CountingEngine(), timing.FixedIterations(3000))
    assert result.iterations == 3000
    assert len(result.samples["wall.total"]) == 3000
    assert (result.samples["wall.total"] > 0).all()


def test_events_bracket_each_phase():
    engine = CountingEngine()
    events = FakeEvents(engine, slots=4, marks=4)
    result = timing.measure(engine, timing.FixedIterations(10), events=events)
    assert result.iterations == 10
    assert set(result.samples) == set(timing.HOST_EVENT_CLOCKS)
    assert engine.calls[:9] == [
        "mark0",
        "in",
        "mark1",
        "compute",
        "mark2",
        "out",
        "mark3",
        "sync",
        "mark0",
    ]
    assert (result.samples["device.h2d"] == 1000).all()
    assert (result.samples["device.total"] == 3000).all()


def test_resident_events_give_compute_and_total():
    engine = CountingEngine()
    events = FakeEvents(engine, slots=3, marks=2)
    result = timing.measure(engine, timing.FixedIterations(7), resident=True, events=events)
    assert set(result.samples) == set(timing.RESIDENT_EVENT_CLOCKS)
    assert engine.calls[:4] == ["mark0", "compute", "mark1", "sync"]
    assert (result.samples["device.compute"] == 1000).all()


def test_duration_runs_at_least_its_duration():
    result = timing.measure(CountingEngine(), timing.FixedDuration(0.05))
    assert result.stop_reason == "duration"
    assert result.iterations > 0
    assert result.seconds >= 0.05


def test_warm_up_honours_count_and_seconds():
    engine = CountingEngine()
    assert timing.warm_up(engine, 4, 0.0).iterations == 4
    warm = timing.warm_up(engine, 1, 0.02)
    assert warm.iterations >= 1 and warm.seconds >= 0.02
    assert timing.warm_up(engine, 0, 0.0).iterations == 0


def test_adaptive_stops_when_the_median_ci_is_tight():
    rule = timing.AdaptiveStop(ci_target=0.01, min_iterations=30, max_seconds=10)
    steady = np.full(100, 1000, dtype=np.int64)
    # Enough for a CI whatever the clock says, then the rest of the minimum within the cap.
    assert rule.next_batch(0, 0, 0, steady) == timing.Batch(8, timing.NO_DEADLINE)
    assert rule.next_batch(8, 0, 8000, steady) == timing.Batch(22, 10_000_000_000)
    assert rule.next_batch(100, 0, 1_000_000, steady) is None
    assert rule.reason == "ci_target"
    assert rule.ci == 0.0


def test_adaptive_keeps_going_then_stops_at_the_cap():
    rule = timing.AdaptiveStop(ci_target=0.01, min_iterations=30, max_seconds=1.0)
    noisy = np.random.default_rng(0).integers(1000, 3000, size=100).astype(np.int64)
    batch = rule.next_batch(100, 0, 100_000_000, noisy)
    assert batch is not None and batch.iterations == 25
    assert batch.deadline == 350_000_000  # a quarter second later at least
    assert rule.ci > 0.01
    assert rule.next_batch(100, 0, 1_000_000_000, noisy) is None
    assert rule.reason == "max_seconds"


def test_the_time_cap_wins_over_the_minimum_count():
    # A ResNet-50 iteration of 0.8 s on a busy CPU must not stretch a 1 s cap to 24 s.
    rule = timing.AdaptiveStop(ci_target=0.01, min_iterations=30, max_seconds=1.0)
    noisy = np.random.default_rng(0).integers(1000, 3000, size=100).astype(np.int64)
    assert rule.next_batch(12, 0, 2_000_000_000, noisy) is None
    assert rule.reason == "max_seconds"
    assert rule.ci > 0.01  # reported, so the result says how wide it got


def test_adaptive_measurement_end_to_end():
    result = timing.measure(CountingEngine(), timing.AdaptiveStop(0.5, 30, 5.0))
    assert result.iterations >= 30
    assert result.stop_reason in ("ci_target", "max_seconds")


def test_samples_reserve_keeps_what_was_recorded():
    samples = timing.Samples(["wall.total"], capacity=2)
    samples.arrays["wall.total"][:2] = [5, 6]
    samples.count = 2
    samples.reserve(10)
    assert len(samples.arrays["wall.total"]) >= 12
    assert samples["wall.total"].tolist() == [5, 6]


@pytest.mark.cuda
def test_cuda_runtime_events_time_a_real_copy():
    from cuda.bindings import runtime as cudart

    err, stream = cudart.cudaStreamCreate()
    assert err == cudart.cudaError_t.cudaSuccess
    events = timing.CudaRuntimeEvents(int(stream), slots=2, marks=2)
    nbytes = 64 << 20
    err, src = cudart.cudaMalloc(nbytes)
    err, dst = cudart.cudaMalloc(nbytes)
    events.recorders[0][0]()
    cudart.cudaMemcpyAsync(dst, src, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
    events.recorders[0][1]()
    cudart.cudaStreamSynchronize(stream)
    elapsed = events.elapsed_ns(0, 0, 1)
    assert 0 < elapsed < 1e9 and not math.isnan(elapsed)
    events.close()
    cudart.cudaFree(src)
    cudart.cudaFree(dst)
    cudart.cudaStreamDestroy(stream)


@pytest.mark.parametrize("value", ["", "-1", "7", "GPU-nonexistent"])
def test_no_visible_device_for_invalid_cuda_visible_devices(value, monkeypatch):
    from infercmp.platform import gpus as devices

    class FakeNvml:
        @staticmethod
        def nvmlDeviceGetUUID(handle):
            return f"GPU-{handle}"

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert devices._parse_visible(value, ["a", "b"], FakeNvml) == []


def test_cuda_visible_devices_selects_and_orders_nvml_devices():
    from infercmp.platform import gpus as devices

    class FakeNvml:
        @staticmethod
        def nvmlDeviceGetUUID(handle):
            return f"GPU-{handle}-uuid"

    handles = ["h0", "h1", "h2"]
    assert devices._parse_visible("2,0", handles, FakeNvml) == ["h2", "h0"]
    assert devices._parse_visible("1,9,0", handles, FakeNvml) == ["h1"]  # stops at a bad entry
    assert devices._parse_visible("GPU-h2,1", handles, FakeNvml) == ["h2", "h1"]
    assert devices._parse_visible("0,0", handles, FakeNvml) == ["h0"]


def test_device_queries_without_a_driver(monkeypatch):
    from infercmp.platform import gpus as devices

    monkeypatch.setattr(devices, "_nvml", lambda: None)
    assert devices.cuda_device_count() == 0
    assert devices.gpu_name(0) is None
    assert devices.compute_capability(0) is None
    assert devices.clock_slowdown_reasons(0) == []


def test_clock_slowdown_reasons_name_only_harmful_ones(monkeypatch):
    from infercmp.platform import gpus as devices

    class FakeNvml:
        @staticmethod
        def nvmlDeviceGetCurrentClocksEventReasons(handle):
            return 0x1 | 0x4 | 0x40  # idle (benign), power cap, hardware thermal

    monkeypatch.setattr(devices, "_nvml", lambda: FakeNvml)
    monkeypatch.setattr(devices, "nvml_handle", lambda index=0: "h0")
    assert devices.clock_slowdown_reasons(0) == ["sw_power_cap", "hw_thermal_slowdown"]


@pytest.mark.cuda
def test_device_queries_agree_with_torch():
    import torch

    from infercmp.platform import gpus as devices

    assert devices.cuda_device_count() == torch.cuda.device_count()
    assert devices.compute_capability(0) == torch.cuda.get_device_capability(0)
    assert devices.gpu_name(0) == torch.cuda.get_device_name(0)
