"""The CPU placement probe (infercmp.platform.placement): the probe itself on this machine's CPUs,
when two round trips are different states, and what a combination and `compare` make of it."""

from __future__ import annotations

import os

import pytest
from synthetic_runs import Combo, edit_results, make_run, run_main

from infercmp.platform import placement as handoff
from infercmp.platform.placement import (
    SAME_STATE_RATIO,
    STRADDLED,
    different_state,
    measure_handoff_ns,
    probe_cpus,
    process_state,
    shared_placement,
    state_warning,
    typical,
)
from infercmp.report import compare_runs, open_run
from infercmp.store.schema import ProcessSummary

two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to send a cache line between"
)


@two_cpus
def test_the_probe_measures_a_round_trip_between_the_first_and_last_cpu():
    pair = probe_cpus()
    assert pair == (min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0)))
    ns = measure_handoff_ns(pair)
    # A Python ping-pong: a few hundred ns, never below the hardware's tens of ns, and far
    # under the 5 s timeout's worth.
    assert ns is not None and 20 < ns < 1e6


def test_one_cpu_has_nothing_to_probe():
    assert probe_cpus({3}) is None
    assert probe_cpus({4, 0, 2}) == (0, 4)


def test_a_cpu_that_cannot_be_used_gives_no_figure_not_an_error():
    assert measure_handoff_ns((0, 10_000)) is None  # sched_setaffinity fails in the probe


def test_states_differ_by_the_ratio_and_missing_values_never_do():
    assert different_state(150.0, 150.0 * SAME_STATE_RATIO)
    assert different_state(700.0, 150.0)
    assert not different_state(150.0, 220.0)
    assert not different_state(None, 700.0) and not different_state(150.0, None)
    assert typical([150.0, None, 170.0, 700.0]) == 170.0
    assert typical([None]) is None


def test_a_combination_whose_processes_saw_two_states_says_so():
    warning = state_warning([152.0, 148.0, None, 731.0, 700.0])
    assert warning is not None and "ranged 148-731 ns" in warning
    assert "host moved this machine's CPUs" in warning
    assert state_warning([152.0, 148.0, 210.0]) is None
    assert state_warning([None, 700.0]) is None


def _with_handoff(run, ns: float):
    def edit(item):
        item["processes"] = [
            ProcessSummary(
                process=i, iterations=300, p50_ms=10.0, measure_seconds=1.0,
                cpu_handoff_ns=[ns, ns * 1.05],
            ).model_dump()
            for i in range(2)
        ]  # fmt: skip

    edit_results(run, edit)
    return run


def test_compare_names_a_change_of_cpu_placement_as_a_change_of_environment(tmp_path, capsys):
    base = _with_handoff(make_run(tmp_path / "a", [Combo("onnxruntime")]), 150.0)
    moved = _with_handoff(make_run(tmp_path / "b", [Combo("onnxruntime")], seed=1), 700.0)
    code, err = run_main(capsys, "compare", str(base), str(moved))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "CPU-to-CPU round trip 154 ns → 718 ns" in line  # the medians of each run's probes
    assert line.endswith("compare them anyway with --allow-env-change")


def test_compare_accepts_runs_measured_in_the_same_cpu_placement(tmp_path, capsys):
    base = _with_handoff(make_run(tmp_path / "a", [Combo("onnxruntime")]), 150.0)
    same = _with_handoff(make_run(tmp_path / "b", [Combo("onnxruntime")], seed=1), 190.0)
    # One process a side: the quiet machine's between-run noise is given, so the pair can pass.
    code, err = run_main(capsys, "compare", str(base), str(same), "--run-noise", "2")
    assert code == 0, err


FAST, SLOW = (150.0, 155.0), (400.0, 410.0)  # the two placements seen on the 2-vCPU VM


def _placed(root, medians, probes, seed):
    combo = Combo("onnxruntime", processes=len(medians), process_medians=medians,
                  handoff_ns=probes)  # fmt: skip
    return make_run(root, [combo], seed=seed)


def test_shared_placement_keeps_like_with_like_and_drops_straddlers():
    states = [process_state(p) for p in (FAST, FAST, SLOW, (150.0, 400.0), None)]
    assert states[2] == 405.0 and states[3] == STRADDLED and states[4] is None
    placement = shared_placement(states, [process_state(FAST)] * 3)
    assert placement.base == [0, 1] and placement.new == [0, 1, 2]
    assert placement.typical_ns == pytest.approx(152.5)
    # Most processes on the smaller side wins: two slow on each side beat three fast on one.
    mixed = shared_placement([405.0, 405.0, 152.0], [152.0, 405.0, 405.0, 405.0])
    assert mixed.base == [0, 1] and mixed.new == [1, 2, 3]
    assert not shared_placement([152.0], [405.0]).found
    unprobed = shared_placement([None, None], [None])  # GPU rows, older runs: keep all
    assert unprobed.found and unprobed.base == [0, 1] and unprobed.typical_ns is None


def test_identical_runs_in_mixed_placements_compare_their_shared_processes(tmp_path):
    """What the A/A test met: base's processes ran 13 us (fast placement) and 27 us (slow),
    new's all fast; compared as a whole, the pooled median moves by the mix."""
    base = _placed(
        tmp_path / "a", [13.0, 27.0, 13.0, 27.0, 27.0], [FAST, SLOW, FAST, SLOW, SLOW], 1
    )
    new = _placed(tmp_path / "b", [13.0] * 5, [FAST] * 5, 2)
    report = compare_runs(open_run(base), open_run(new))
    (row,) = report.comparisons
    assert row.verdict == "no significant change", row
    assert row.processes == (2, 5) and abs(row.change) < 0.02
    assert "same CPU placement (152 ns round trip): base 2 of 5, new 5 of 5" in row.note
    assert report.exit_code == 0 and report.environment_changes == []


def test_a_slowdown_is_found_among_the_processes_of_the_shared_placement(tmp_path):
    base = _placed(
        tmp_path / "a", [13.0, 27.0, 13.0, 13.0, 27.0], [FAST, SLOW, FAST, FAST, SLOW], 1
    )
    slower = _placed(
        tmp_path / "b", [19.5, 19.5, 40.0, 19.5, 19.5], [FAST, FAST, SLOW, FAST, FAST], 2
    )
    (row,) = compare_runs(open_run(base), open_run(slower)).comparisons
    assert row.verdict == "regression" and row.change == pytest.approx(0.5, abs=0.03)
    assert row.processes == (3, 4)


def test_a_worker_on_one_cpu_is_not_matched_on_placement():
    # ONNX Runtime with one intra-op thread: about one CPU busy, the same in both placements.
    assert process_state(SLOW, worker_cpus=1.02) is None
    assert process_state(SLOW, worker_cpus=1.9) == 405.0
    # One side insensitive: it keeps every process, the other its commonest placement.
    placement = shared_placement([None, None, None], [152.0, 405.0, 410.0])
    assert placement.base == [0, 1, 2] and placement.new == [1, 2]


def test_single_threaded_runs_in_different_placements_are_compared_whole(tmp_path):
    def run(root, probes, seed):
        combo = Combo("onnxruntime", processes=3, process_medians=[15.2, 15.3, 15.2],
                      handoff_ns=probes)  # fmt: skip
        path = make_run(root, [combo], seed=seed)

        def one_cpu(item):
            for process in item["processes"]:
                process["worker_cpus"] = 1.01

        edit_results(path, one_cpu)
        return path

    base, new = run(tmp_path / "a", [FAST] * 3, 1), run(tmp_path / "b", [SLOW] * 3, 2)
    report = compare_runs(open_run(base), open_run(new))
    (row,) = report.comparisons
    assert report.environment_changes == []
    assert row.processes == (3, 3) and row.verdict == "no significant change"


def test_worker_cpus_come_from_the_process_cpu_time_over_a_long_enough_loop_fake_outcomes():
    from infercmp.core.contract import WorkerResult
    from infercmp.run.aggregate import _worker_cpus
    from infercmp.run.worker_process import WorkerOutcome

    def outcome(cpu_s, window_s, rows=()):
        result = WorkerResult(status="ok", model="m", engine="e", device="cpu", precision="fp32",
                              device_resident=False, mode="fixed", measure_seconds=window_s,
                              measure_cpu_seconds=cpu_s)  # fmt: skip
        return WorkerOutcome("ok", None, result, {}, list(rows), "")

    assert _worker_cpus(outcome(2.4, 1.2)) == pytest.approx(2.0)
    # Over 0.3 ms the other threads' time is not accounted yet: the sampler's mean, or nothing.
    sampled = [{"phase": "measure", "proc_cpu_pct": 198.0, "t_s": i * 0.05} for i in range(20)]
    assert _worker_cpus(outcome(0.0003, 0.0003, sampled)) == pytest.approx(1.98)
    assert _worker_cpus(outcome(0.0003, 0.0003)) is None


def _probe_processes() -> list:
    """The probe processes of this test's own pair of CPUs (`handoff.py 0 0`) alive now."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[-3:] == [handoff.__file__, "0", "0"] and proc.info["status"] != "zombie":
            alive.append(proc)
    return alive


def test_a_probe_past_its_time_leaves_no_process_spinning(monkeypatch):
    """Issue 23's chaos: a probe killed at its timeout left the child it forked spinning on the
    shared byte for good (37 minutes of a CPU on the 2-vCPU machine). Both ends pinned to one
    CPU take seconds per round trip, so the timeout surely falls mid-probe."""
    import time

    monkeypatch.setattr(handoff, "TIMEOUT_S", 1.0)
    assert measure_handoff_ns((0, 0)) is None
    deadline = time.monotonic() + 3
    while _probe_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _probe_processes()


def test_the_probes_child_dies_with_the_probe():
    """kill -9 of the probe alone (as of a bench killed with its session) ends its child too."""
    import signal
    import subprocess
    import sys
    import time

    probe = subprocess.Popen([sys.executable, "-I", handoff.__file__, "0", "0"])
    try:
        deadline = time.monotonic() + 5
        while len(_probe_processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_probe_processes()) == 2, "the probe did not fork its child in time"
        probe.send_signal(signal.SIGKILL)
        probe.wait()
        deadline = time.monotonic() + 3
        while _probe_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _probe_processes()
    finally:
        for proc in _probe_processes():
            proc.kill()


def test_one_process_that_straddled_a_change_of_placement_matches_nothing(tmp_path):
    """Issue 27's A/A test, judged one process a side: process 0 of one run began in the near
    placement and ended in the far one (probes 138 and 363 ns, 25 us against 11.6 us); as a
    process "without placement" it matched anything and read as a +118% regression."""
    base = _placed(tmp_path / "a", [11.6], [FAST], 1)
    moved = _placed(tmp_path / "b", [25.4], [(138.0, 363.0)], 2)
    report = compare_runs(open_run(base), open_run(moved))
    (row,) = report.comparisons
    assert row.verdict == "not compared" and report.exit_code == 3
    assert "every worker process of the new run straddled a change" in row.note
    assert report.environment_changes == []  # one combination's fate, said in its row
    assert not shared_placement([STRADDLED], [STRADDLED]).found
