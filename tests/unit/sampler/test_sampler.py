"""The sampler subsystem: protocol conformance, a real child process, phases, the schedule, NVML."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import types

import pytest

from infercmp.platform.gpus import visible_gpu
from infercmp.sampler import (
    NvmlSampler,
    ProcessGone,
    ProcessSampler,
    Sampler,
    SamplingSession,
    SystemSampler,
    available,
    default_samplers,
    energy_joules,
    peak,
)
from infercmp.sampler import polling as session_module

WAIT_S = 30.0  # generous upper bound for waits on a loaded CI machine; never asserted on


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("cls", [ProcessSampler, SystemSampler, NvmlSampler])
def test_samplers_conform_to_the_protocol(cls):
    sampler = cls()
    assert isinstance(sampler, Sampler)
    assert isinstance(sampler.name, str) and sampler.name
    reason = sampler.unavailable_reason()
    assert reason is None or (isinstance(reason, str) and "\n" not in reason)


CHILD = textwrap.dedent(
    """
    import sys
    print("ready", flush=True)
    sys.stdin.readline()
    hoard = b"\\x01" * (200 * 1024 * 1024)   # touched pages: counted in RSS
    print("allocated", flush=True)
    sys.stdin.readline()
    """
)


def test_rss_grows_when_the_child_allocates_and_rows_carry_phases():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with SamplingSession(child.pid, [ProcessSampler(), SystemSampler()], 50, "load") as s:
            _wait_for(lambda: len(s.rows) >= 3, "rows in the load phase")
            s.set_phase("measure")
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "allocated"
            allocated_at = len(s.rows)
            _wait_for(lambda: len(s.rows) >= allocated_at + 3, "rows after the allocation")
            exiting_at = len(s.rows)
            child.stdin.write("exit\n")
            child.stdin.flush()
            child.wait(timeout=WAIT_S)
            # The worker's exit ends sampling by itself.
            _wait_for(lambda: s.process_gone, "the session to notice the exit")
        rows = s.rows
    finally:
        child.kill()
        child.wait()

    assert s.errors == []
    # An exiting worker is not sampled; the row after its exit holds the system columns only.
    assert all(r["proc_rss_bytes"] > 0 for r in rows[:-1])
    assert "proc_rss_bytes" not in rows[-1] and rows[-1]["sys_ram_used_bytes"] > 0
    assert [row["phase"] for row in rows] == sorted(
        (row["phase"] for row in rows), key=["load", "measure"].index
    )
    load_rows = [r for r in rows if r["phase"] == "load"]
    assert len(load_rows) >= 3
    after = rows[allocated_at:exiting_at]
    assert all(r["phase"] == "measure" for r in after)
    assert (
        min(r["proc_rss_bytes"] for r in after)
        > max(r["proc_rss_bytes"] for r in load_rows) + 150 * 1024 * 1024
    )
    assert peak(rows, "proc_rss_bytes", "measure") == max(r["proc_rss_bytes"] for r in after)
    assert peak(rows, "proc_rss_bytes", "load") < peak(rows, "proc_rss_bytes")
    # Rows are stamped with the session clock and wall clock, in order.
    assert [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)
    assert all(abs(r["time"] - rows[0]["time"] - (r["t_s"] - rows[0]["t_s"])) < 5 for r in rows)
    assert all(r["sys_ram_used_bytes"] > 0 for r in rows)
    assert all(r["sys_cpu_pct"] is None or 0 <= r["sys_cpu_pct"] <= 100 for r in rows)
    assert rows[0]["sys_cpu_pct"] is None  # the first reading has no baseline
    assert [p for _, p in s.phases] == ["load", "measure"]


def test_children_of_the_worker_are_summed():
    script = textwrap.dedent(
        """
        import subprocess, sys
        hoard = b"\\x01" * (64 * 1024 * 1024)
        grandchild = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; h = b'\\\\x01' * (128 * 1024 * 1024); print('ok', flush=True);"
             " sys.stdin.readline()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        grandchild.stdout.readline()
        print("ready", flush=True)
        sys.stdin.readline()
        grandchild.stdin.close(); grandchild.wait()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        sampler = ProcessSampler()
        sampler.open(child.pid)
        reading = sampler.read()
        sampler.close()
    finally:
        child.stdin.close()
        child.wait(timeout=WAIT_S)
    assert reading["proc_rss_bytes"] > (64 + 128) * 1024 * 1024
    assert reading["proc_cpu_pct"] >= 0


def test_a_vanished_process_ends_sampling_quietly():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessGone):
        ProcessSampler().open(child.pid)
    with SamplingSession(child.pid, [ProcessSampler()], hz=50) as s:
        pass
    assert s.process_gone and s.rows == [] and s.errors == []
    # A final row only when some sampler still has something to say.
    with SamplingSession(child.pid, [_Constant()], hz=50) as s:
        _wait_for(lambda: len(s.rows) >= 2, "rows")
    assert not s.process_gone


def test_an_unreaped_worker_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    sampler = ProcessSampler()
    sampler.open(child.pid)
    _wait_for(lambda: _zombie(child.pid), "the child to exit")
    with pytest.raises(ProcessGone):
        sampler.read()
    child.wait()


def _zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _Broken:
    name = "broken"

    def unavailable_reason(self):
        return None

    def open(self, pid):
        pass

    def read(self):
        raise RuntimeError("sensor fell off")

    def close(self):
        pass


class _Constant:
    name = "constant"

    def unavailable_reason(self):
        return None

    def open(self, pid):
        self.opened = pid

    def read(self):
        return {"answer": 42}

    def close(self):
        self.closed = True


def test_a_failing_sampler_is_dropped_and_the_others_continue_with_fake_samplers():
    constant = _Constant()
    with SamplingSession(12345, [_Broken(), constant], hz=100) as s:
        _wait_for(lambda: len(s.rows) >= 3, "rows")
    assert constant.opened == 12345 and constant.closed
    assert s.errors == ["broken sampler failed and was dropped: sensor fell off"]
    assert all(row["answer"] == 42 for row in s.rows)


class _FakeClock:
    """perf_counter and Event.wait for the session, advancing only when the session waits."""

    def __init__(self):
        self.now = 100.0
        self.waits: list[float] = []

    def perf_counter(self):
        return self.now


def test_the_schedule_does_not_drift_and_skips_missed_ticks_on_a_fake_clock(monkeypatch):
    clock = _FakeClock()
    fake_time = types.SimpleNamespace(
        perf_counter=clock.perf_counter, time=lambda: clock.now, thread_time=lambda: 0.0
    )
    monkeypatch.setattr(session_module, "time", fake_time)

    class SlowReads:
        """Each read costs 3 ms, and read number 5 stalls for 2.5 sampling periods."""

        name = "slow"
        count = 0

        def unavailable_reason(self):
            return None

        def open(self, pid):
            pass

        def read(self):
            self.count += 1
            clock.now += 0.25 if self.count == 5 else 0.003
            return {}

        def close(self):
            pass

    s = SamplingSession(1, [SlowReads()], hz=10.0)

    class FakeEvent:
        def wait(self, delay):
            assert delay >= 0
            clock.waits.append(delay)
            clock.now += delay
            return len(clock.waits) >= 8

        def is_set(self):
            return len(clock.waits) >= 8

        def set(self):
            pass

        def clear(self):
            pass

    s._stop = s._wake = FakeEvent()
    s._t0 = clock.now
    s._opened = s._samplers
    s._loop()
    assert s.thread_cpu_s == 0.0
    starts = [round(row["t_s"], 9) for row in s.rows]
    # Ticks at exact multiples of 0.1 s; the stall after tick 4 (t=0.4) skips 0.5 and 0.6.
    assert starts == [0.0, 0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9]


def test_a_phase_change_is_read_at_once_however_short_the_phase_with_a_fake_sampler():
    class Counting:
        name = "counting"

        def unavailable_reason(self):
            return None

        def open(self, pid):
            pass

        def read(self):
            return {"reading": 1.0}

        def close(self):
            pass

    def phases() -> list[str]:
        return [row["phase"] for row in session.rows]

    # Waiting for each row instead of sleeping a fixed 50 ms keeps this true on a loaded
    # machine; the row's time then shows it was read for the change, not by the schedule.
    with SamplingSession(os.getpid(), [Counting()], hz=0.1) as session:  # a tick every 10 s
        _wait_for(lambda: "start" in phases(), "the first row")
        session.set_phase("measure")
        _wait_for(lambda: "measure" in phases(), "a row read at the change to measure")
        session.set_phase("done")
        _wait_for(lambda: "done" in phases(), "a row read at the change to done")
    changed_at = {phase: t_s for t_s, phase in session.phases}
    for phase in ("measure", "done"):
        first = next(row["t_s"] for row in session.rows if row["phase"] == phase)
        assert 0 <= first - changed_at[phase] < 2.0, (phase, first, changed_at)


def test_sample_rate_must_be_positive():
    for bad in (0, -1, float("nan"), float("inf"), "20"):
        with pytest.raises(ValueError, match="sample rate must be a positive number of Hz"):
            SamplingSession(1, [], hz=bad)


@pytest.mark.skipif(_nvml_works(), reason="NVML works on this machine: nothing to report missing")
def test_nvml_sampler_says_why_it_is_left_out():
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        expected = f"no NVIDIA driver ({type(exc).__name__})"
    assert NvmlSampler().unavailable_reason() == expected
    usable, messages = default_samplers()
    assert [s.name for s in usable] == ["process", "system"]
    assert messages == [f"NVML sampler left out: {expected}"]
    usable, messages = default_samplers(gpu=False)
    assert [s.name for s in usable] == ["process", "system"] and messages == []


def test_available_turns_a_crashing_check_into_a_message():
    class Crashes(_Constant):
        name = "thermo"

        def unavailable_reason(self):
            raise OSError("no sensor")

    usable, messages = available([_Constant(), Crashes()])
    assert [s.name for s in usable] == ["constant"]
    assert messages == ["thermo sampler left out: its check failed (OSError: no sensor)"]


def test_visible_gpu_follows_cuda_visible_devices():
    assert visible_gpu(0, {}) == 0
    assert visible_gpu(1, {}) == 1
    assert visible_gpu(0, {"CUDA_VISIBLE_DEVICES": "3,1"}) == 3
    assert visible_gpu(1, {"CUDA_VISIBLE_DEVICES": "3,1"}) == 1
    assert visible_gpu(2, {"CUDA_VISIBLE_DEVICES": "3,1"}) is None
    assert visible_gpu(0, {"CUDA_VISIBLE_DEVICES": ""}) is None
    assert visible_gpu(0, {"CUDA_VISIBLE_DEVICES": "-1"}) is None
    assert visible_gpu(1, {"CUDA_VISIBLE_DEVICES": "2,-1,3"}) is None
    assert visible_gpu(0, {"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == "GPU-abc"


def _fake_pynvml(monkeypatch, *, energy_supported=True, pids=(("me", 5 << 20),), gpus=1):
    """A stand-in for nvidia-ml-py with `gpus` GPUs (UUIDs GPU-0aaa..., GPU-1aaa...), enough
    for NvmlSampler; `nvml.pids_on`, when set, maps a GPU index to the processes on it."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's naming
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
        pass

    class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
        pass

    nvml.NVMLError = NVMLError
    nvml.NVMLError_NotSupported = NVMLError_NotSupported
    nvml.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    nvml.NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    nvml.calls = {"energy": 0, "init": 0, "shutdown": 0}
    nvml.nvmlInit = lambda: nvml.calls.__setitem__("init", nvml.calls["init"] + 1)
    nvml.nvmlShutdown = lambda: nvml.calls.__setitem__("shutdown", nvml.calls["shutdown"] + 1)
    nvml.nvmlDeviceGetCount = lambda: gpus
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nvml.nvmlDeviceGetHandleByUUID = lambda u: ("gpu", u)
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h[1]}aaa-bbbb"
    nvml.pids_on = None
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37, memory=5)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 << 30, total=80 << 30)
    nvml.nvmlDeviceGetPowerUsage = lambda h: 123456  # mW

    def energy(h):
        nvml.calls["energy"] += 1
        if not energy_supported:
            raise NVMLError_NotSupported()
        return 1_000_000 + 500 * nvml.calls["energy"]

    nvml.nvmlDeviceGetTotalEnergyConsumption = energy
    nvml.pids = pids

    def processes(h):
        listed = nvml.pids if nvml.pids_on is None else nvml.pids_on.get(h[1], ())
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in listed]

    nvml.nvmlDeviceGetComputeRunningProcesses = processes
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml


def test_nvml_sampler_reads_the_gpu_and_this_process_from_a_fake_pynvml(monkeypatch):
    nvml = _fake_pynvml(monkeypatch)
    me = subprocess.os.getpid()
    nvml.pids = ((me, 5 << 20), (me + 1, 7 << 20))
    sampler = NvmlSampler(energy_interval_s=0)
    assert sampler.unavailable_reason() is None
    sampler.open(me)
    first, second = sampler.read(), sampler.read()
    sampler.close()
    assert first == {
        "gpu_util_pct": 37.0,
        "gpu_mem_used_bytes": 3 << 30,
        "proc_gpu_mem_bytes": 5 << 20,
        "gpu_power_w": 123.456,
        "gpu_energy_mj": 1_000_500,
        "gpu_index": 0,
    }
    assert second["gpu_energy_mj"] == 1_001_000
    assert nvml.calls["init"] == nvml.calls["shutdown"] == 2


def test_nvml_sampler_stops_asking_for_what_is_not_supported_by_a_fake_pynvml(monkeypatch):
    nvml = _fake_pynvml(monkeypatch, energy_supported=False)
    nvml.pids = ((1, 2 << 20),)  # another process only
    sampler = NvmlSampler()
    sampler.open(subprocess.os.getpid())
    readings = [sampler.read() for _ in range(3)]
    assert nvml.calls["energy"] == 1
    assert all(r["gpu_energy_mj"] is None and r["proc_gpu_mem_bytes"] is None for r in readings)
    assert readings[0]["gpu_util_pct"] == 37.0


def test_nvml_sampler_refuses_a_hidden_device_of_a_fake_pynvml(monkeypatch):
    _fake_pynvml(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert NvmlSampler().unavailable_reason() == ("CUDA device 0 is not in CUDA_VISIBLE_DEVICES=''")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    assert NvmlSampler().unavailable_reason() == "GPU 4 asked for, but NVML sees 1 GPU(s)"


def test_peak_and_energy():
    rows = [
        {"phase": "load", "proc_rss_bytes": 10, "gpu_energy_mj": 1000},
        {"phase": "measure", "proc_rss_bytes": 30, "gpu_energy_mj": 2000},
        {"phase": "measure", "proc_rss_bytes": None, "gpu_energy_mj": None},
        {"phase": "measure", "proc_rss_bytes": 20, "gpu_energy_mj": 5500},
        {"phase": "parity", "proc_rss_bytes": 40, "gpu_energy_mj": 9000},
    ]
    assert peak(rows, "proc_rss_bytes") == 40
    assert peak(rows, "proc_rss_bytes", "measure") == 30
    assert peak(rows, "proc_rss_bytes", ["load", "parity"]) == 40
    assert peak(rows, "gpu_util_pct") is None
    assert peak([], "proc_rss_bytes") is None
    # From the first reading of the phase to the first one after it.
    assert energy_joules(rows) == 7.0
    assert energy_joules(rows, "load") == 1.0
    assert energy_joules(rows, "parity") == 0.0
    assert energy_joules(rows[:4]) == 3.5  # nothing after the phase: its last reading
    assert energy_joules(rows, "warmup") is None
    assert energy_joules([{"phase": "measure", "proc_rss_bytes": 1}]) is None


def test_energy_is_read_at_phase_edges_and_now_and_then(monkeypatch):
    nvml = _fake_pynvml(monkeypatch)
    sampler = NvmlSampler(energy_interval_s=3600)
    sampler.open(subprocess.os.getpid())
    readings = [sampler.read()["gpu_energy_mj"] for _ in range(3)]
    sampler.mark_phase_edge()
    readings += [sampler.read()["gpu_energy_mj"] for _ in range(2)]
    assert readings == [1_000_500, None, None, 1_001_000, None]
    assert nvml.calls["energy"] == 2
    sampler.energy_interval_s = 0
    assert sampler.read()["gpu_energy_mj"] == 1_001_500


def test_the_session_marks_phase_edges_and_closes_with_a_final_row(monkeypatch):
    _fake_pynvml(monkeypatch)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE
    )
    nvml = NvmlSampler(energy_interval_s=3600)
    with SamplingSession(child.pid, [ProcessSampler(), nvml], hz=100, phase="load") as s:
        _wait_for(lambda: len(s.rows) >= 3, "load rows")
        s.set_phase("measure")
        _wait_for(lambda: any(r["phase"] == "measure" for r in s.rows[-2:]), "measure rows")
        n = len(s.rows)
        _wait_for(lambda: len(s.rows) >= n + 2, "more measure rows")
        child.stdin.close()
        child.wait(timeout=WAIT_S)
        _wait_for(lambda: s.process_gone, "the exit")
    rows = s.rows
    with_energy = [i for i, r in enumerate(rows) if r.get("gpu_energy_mj") is not None]
    first_measure = next(i for i, r in enumerate(rows) if r["phase"] == "measure")
    assert with_energy == [0, first_measure, len(rows) - 1]
    assert "proc_rss_bytes" not in rows[-1] and rows[-1]["gpu_util_pct"] == 37.0
    assert energy_joules(rows) == 0.5


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, 0), ("1", 1), ("2,0", 2), ("GPU-2aaa-bbbb", 2), ("GPU-1aaa", 1)],
)
def test_nvml_sampler_maps_cuda_visible_devices_to_its_gpu_in_a_fake_pynvml(
    monkeypatch, visible, expected
):
    """CUDA device 0 of the worker's CUDA_VISIBLE_DEVICES (an index, or a UUID or its prefix,
    as Ray and CUDA write it) is the GPU sampled."""
    nvml = _fake_pynvml(monkeypatch, gpus=3)
    me = subprocess.os.getpid()
    nvml.pids_on = {expected: ((me, 9 << 20),)}
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    sampler = NvmlSampler()
    assert sampler.unavailable_reason() is None
    sampler.open(me)
    reading = sampler.read()
    sampler.close()
    assert reading["gpu_index"] == expected
    assert reading["proc_gpu_mem_bytes"] == 9 << 20


def test_nvml_sampler_follows_the_worker_to_the_gpu_it_is_on_in_a_fake_pynvml(monkeypatch):
    """A worker that shows up on another GPU than its CUDA_VISIBLE_DEVICES says (a different
    device order) is followed there; before it shows up, the mapped GPU is read."""
    nvml = _fake_pynvml(monkeypatch, gpus=2)
    me = subprocess.os.getpid()
    nvml.pids_on = {}
    sampler = NvmlSampler()
    sampler.open(me)
    before = sampler.read()
    nvml.pids_on = {1: ((me, 4 << 20),)}
    after = sampler.read()
    nvml.pids_on = {0: ((me, 1 << 20),), 1: ((me, 4 << 20),)}
    later = sampler.read()  # found once: no more searching
    sampler.close()
    assert (before["gpu_index"], before["proc_gpu_mem_bytes"]) == (0, None)
    assert (after["gpu_index"], after["proc_gpu_mem_bytes"]) == (1, 4 << 20)
    assert later["gpu_index"] == 1


def test_background_load_is_the_machine_minus_the_worker_over_the_measure_window():
    from infercmp.sampler import background_load

    def rows(sys_pct: float, proc_pct: float, n: int = 12) -> list[dict]:
        warm = [{"phase": "warmup", "sys_cpu_pct": 100.0, "proc_cpu_pct": 0.0}] * 5
        measure = [{"phase": "measure", "sys_cpu_pct": sys_pct, "proc_cpu_pct": proc_pct}] * n
        return warm + measure

    # 2 CPUs: the machine at 75% is 1.5 CPUs, the worker used 1.0: 0.5 CPU ran something else.
    busy = background_load([rows(75.0, 100.0)], cpu_count=2)
    assert busy.cpus == pytest.approx(0.5) and busy.readings == 12
    assert "0.50 of 2 CPUs" in busy.warning
    quiet = background_load([rows(52.0, 100.0)], cpu_count=2)  # the warm-up's 100% is ignored
    assert quiet.cpus == pytest.approx(0.04) and quiet.warning is None
    # Too few readings: no figure, and no warning resting on nothing.
    assert background_load([rows(75.0, 100.0, n=3)], cpu_count=2).cpus is None


# --------------------------------------------------------------------------- energy windows


def _gpu_rows(seconds: float, hz: float, watts: float, mj_step: float | None, idle_w=80.0):
    """Sampler rows of one worker: 0.5 s of loading at idle power, then `seconds` measuring.

    The energy counter (mJ) advances in steps of 100 ms, as NVML's did on the H200; `mj_step`
    None: no counter, power readings only.
    """
    rows = [{"t_s": i / hz, "phase": "load", "gpu_power_w": idle_w} for i in range(int(hz / 2))]
    start = rows[-1]["t_s"] + 1 / hz
    for i in range(int(seconds * hz) + 1):
        t = start + i / hz
        row = {"t_s": t, "phase": "measure", "gpu_power_w": watts}
        if mj_step is not None:
            row["gpu_energy_mj"] = mj_step * int((t - start) / 0.1)
        rows.append(row)
    rows.append({"t_s": rows[-1]["t_s"] + 1 / hz, "phase": "write", "gpu_power_w": idle_w})
    return rows


def test_energy_from_the_counter_when_the_window_spans_ten_steps():
    from infercmp.sampler import energy_window

    # 2 s at 200 W: the counter advances 20 J every 100 ms, 20 steps; 1000 iterations.
    rows = _gpu_rows(2.0, 20, 200.0, mj_step=200.0 * 0.1 * 1000)
    window = energy_window([(rows, 2.0)], iterations=1000, power_limit_w=700.0)
    assert window.method == "energy counter"
    assert window.joules_per_inference == pytest.approx(400.0 / 1000, rel=0.01)
    assert 190 < window.average_w < 210 and not window.warnings


def test_energy_integrates_power_when_the_counter_steps_too_rarely():
    from infercmp.sampler import energy_window

    # 0.6 s: 6 counter steps (too few), 13 power readings at 20 Hz (enough).
    rows = _gpu_rows(0.6, 20, 150.0, mj_step=150.0 * 0.1 * 1000)
    window = energy_window([(rows, 0.6)], iterations=300, power_limit_w=700.0)
    assert window.method == "integrated power"
    assert window.joules_per_inference == pytest.approx(150.0 * 0.6 / 300)


def test_energy_is_na_with_the_reason_when_the_window_is_too_short():
    from infercmp.sampler import energy_window

    # The transformer on the H200: 100 iterations in 30 ms, one or two readings.
    rows = _gpu_rows(0.03, 20, 300.0, mj_step=300.0 * 0.1 * 1000)
    window = energy_window([(rows, 0.03)], iterations=100, power_limit_w=700.0)
    assert window.joules_per_inference is None
    assert window.method.startswith("n/a:") and "--min-seconds" in window.method


@pytest.mark.parametrize(
    "watts, named",
    [(1200.0, "above the card's limit of 700 W"), (20.0, "below the lowest power the card drew")],
)
def test_energy_implying_impossible_power_is_rejected_with_a_warning(watts, named):
    from infercmp.sampler import energy_window

    # The counter says `watts` on average; the card idled at 80 W and is limited to 700 W.
    rows = _gpu_rows(2.0, 20, 200.0, mj_step=watts * 0.1 * 1000)
    window = energy_window([(rows, 2.0)], iterations=1000, power_limit_w=700.0)
    assert window.joules_per_inference is None
    assert named in window.method and named in window.warnings[0]


def test_energy_from_the_counter_read_only_at_edges_and_once_a_second():
    """The NVML sampler reads the costly counter at phase edges and about once a second: a
    2.5 s window has four readings but spans 25 of the counter's 100 ms steps (seen on the
    H200: such windows fell back to integrated power when readings were counted as steps)."""
    from infercmp.sampler import energy_window

    rows = _gpu_rows(2.5, 20, 200.0, mj_step=200.0 * 0.1 * 1000)
    measure = [r for r in rows if r["phase"] == "measure"]
    for i, row in enumerate(measure):
        if i % 20:  # keep one energy reading a second, as the sampler takes them
            row.pop("gpu_energy_mj")
    rows[-1]["gpu_energy_mj"] = 200.0 * 0.1 * 1000 * 25  # the edge reading after the window
    window = energy_window([(rows, 2.5)], iterations=1000, power_limit_w=700.0)
    assert window.method == "energy counter"
    assert window.joules_per_inference == pytest.approx(200.0 * 2.5 / 1000, rel=0.05)
