"""The CPU placement probe (infercmp.sampler.handoff): the probe itself on this machine's CPUs,
when two round trips are different states, and what a combination and `compare` make of it."""

from __future__ import annotations

import os

import pytest
from synthetic_runs import Combo, edit_results, make_run, run_main

from infercmp.results import ProcessSummary
from infercmp.sampler.handoff import (
    SAME_STATE_RATIO,
    different_state,
    measure_handoff_ns,
    probe_cpus,
    state_warning,
    typical,
)

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
    code, err = run_main(capsys, "compare", str(base), str(same))
    assert code == 0, err
