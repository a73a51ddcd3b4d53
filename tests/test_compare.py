"""`infercmp compare`: bootstrap CI of the median ratio, verdicts, and the CI exit code."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
from synthetic_runs import Combo, cpu_run, make_run, run_main
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.environment import collect_environment
from infercmp.report import bootstrap_median_ratio, compare_runs, open_run
from infercmp.report.compare import classify, process_spread

runner = CliRunner()


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    base = cpu_run(root / "base", seed=1)
    same = cpu_run(root / "same", seed=2)  # same distribution, different draw
    slow = cpu_run(root / "slow", seed=3, slowdown=1.2)  # ONNX Runtime 20% slower
    return base, same, slow


def test_bootstrap_is_seeded_and_brackets_the_ratio():
    rng = np.random.default_rng(5)
    base = rng.lognormal(0, 0.05, 500)
    new = 1.2 * rng.lognormal(0, 0.05, 500)
    first = bootstrap_median_ratio(base, new, resamples=1000, seed=7)
    assert first == bootstrap_median_ratio(base, new, resamples=1000, seed=7)
    ratio, low, high = first
    assert low < ratio < high
    assert 1.15 < low and high < 1.25


def test_bootstrap_chunks_give_the_same_answer(monkeypatch):
    from infercmp.report import compare

    rng = np.random.default_rng(0)
    base, new = rng.lognormal(0, 0.05, 3000), rng.lognormal(0.01, 0.05, 3000)
    whole = bootstrap_median_ratio(base, new, resamples=300)
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 10_000)  # three resamples per chunk
    chunked = bootstrap_median_ratio(base, new, resamples=300)
    assert chunked == pytest.approx(whole)


def test_classify_needs_ci_and_noise_floor():
    assert classify(1.1, 1.3, 0.2, 0.01) == "regression"
    assert classify(0.7, 0.9, -0.2, 0.01) == "improvement"
    assert classify(0.95, 1.05, 0.02, 0.01) == "no significant change"  # CI spans 1
    assert classify(1.001, 1.008, 0.005, 0.01) == "no significant change"  # under the floor


def test_same_distribution_is_not_flagged(three_runs):
    base, same, _ = three_runs
    report = compare_runs(open_run(base), open_run(same))
    compared = [c for c in report.comparisons if c.verdict != "not compared"]
    assert len(compared) == 4
    assert all(c.verdict == "no significant change" for c in compared), compared
    assert report.exit_code == 0
    skipped = [c for c in report.comparisons if c.verdict == "not compared"]
    assert len(skipped) == 1 and "skipped" in skipped[0].note


def test_twenty_percent_slowdown_is_a_regression(three_runs):
    base, _, slow = three_runs
    report = compare_runs(open_run(base), open_run(slow))
    by = {(c.engine, c.shape): c for c in report.comparisons}
    for shape in ("224x224x3", "320x320x3"):
        ort = by[("onnxruntime", shape)]
        assert ort.verdict == "regression"
        assert ort.change == pytest.approx(0.2, abs=0.03)
        assert ort.ci_low > 0.1
        assert by[("pytorch", shape)].verdict == "no significant change"
    assert report.exit_code == 1
    assert {c.engine for c in report.failing} == {"onnxruntime"}
    assert "bootstrap" in report.method


def test_threshold_above_the_change_passes(three_runs):
    base, _, slow = three_runs
    assert compare_runs(open_run(base), open_run(slow), threshold=0.30).exit_code == 0


def test_changed_option_still_pairs_and_is_noted(tmp_path):
    base = make_run(tmp_path / "a", [Combo("onnxruntime", options={"intra_op_num_threads": 2})])
    new = make_run(
        tmp_path / "b",
        [Combo("onnxruntime", options={"intra_op_num_threads": 1}, median_ms=12.0)],
        seed=4,
    )
    report = compare_runs(open_run(base), open_run(new))
    (only,) = report.comparisons
    assert only.verdict == "regression"
    assert "intra_op_num_threads 2 → 1" in only.note
    assert not report.only_in_base and not report.only_in_new


def test_cli_exit_codes(three_runs, tmp_path):
    base, same, slow = three_runs
    ok = runner.invoke(app, ["compare", str(base), str(same)])
    assert ok.exit_code == 0, ok.output
    assert "no significant change" in ok.output and "bootstrap" in ok.output
    bad = runner.invoke(app, ["compare", str(base), str(slow), "--threshold", "5"])
    assert bad.exit_code == 1
    assert "regression" in bad.output and "FAIL" in bad.output
    doc = runner.invoke(app, ["compare", str(base), str(slow), "--format", "json"])
    assert doc.exit_code == 1
    assert json.loads(doc.output)["exit_code"] == 1
    md = runner.invoke(app, ["compare", str(base), str(slow), "--format", "md"])
    assert "| onnxruntime cpu fp32 224x224x3 |" in md.output


def test_cli_bad_run_dir_is_one_line_exit_2(three_runs, tmp_path, capsys):
    base, _, _ = three_runs
    code, err = run_main(capsys, "compare", str(base), str(tmp_path / "nope"))
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


# --------------------------------------------------------------------------- exit codes


def _cli(*args: str):
    result = runner.invoke(app, ["compare", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_two_different_models_compare_nothing_and_exit_3(tmp_path):
    base = make_run(tmp_path / "a", [Combo("onnxruntime")], model="tiny-cnn")
    new = make_run(tmp_path / "b", [Combo("onnxruntime")], model="tiny-encoder", seed=1)
    result = _cli(str(base), str(new))
    assert result.exit_code == 3, result.output
    assert "FAIL (exit 3): nothing compared: no combination was measured in both runs" in (
        " ".join(result.output.split())
    )
    assert "lost: tiny-cnn onnxruntime cpu fp32 224x224x3 (defaults) is ok in base and " in (
        " ".join(result.output.split())
    )
    doc = json.loads(_cli(str(base), str(new), "--format", "json").output)
    assert doc["exit_code"] == 3 and doc["verdict"] == "FAIL: not comparable"
    assert doc["problems"][0].startswith("nothing compared")
    md = _cli(str(base), str(new), "--format", "md").output
    assert "Verdict: **FAIL (exit 3): nothing compared" in md


def test_one_model_at_different_shapes_compares_nothing(tmp_path):
    base = make_run(tmp_path / "a", [Combo("onnxruntime", shape=(224, 224, 3))])
    new = make_run(tmp_path / "b", [Combo("onnxruntime", shape=(320, 320, 3))], seed=1)
    result = _cli(str(base), str(new), "--format", "json")
    assert result.exit_code == 3
    assert json.loads(result.output)["comparisons"] == []


@pytest.mark.parametrize("what", ["failed", "skipped", "missing"])
def test_a_combination_ok_in_base_and_lost_in_new_exits_3(tmp_path, what):
    base = make_run(tmp_path / "a", [Combo("pytorch"), Combo("onnxruntime")])
    lost = [] if what == "missing" else [Combo("onnxruntime", status=what, error="it broke")]
    new = make_run(tmp_path / "b", [Combo("pytorch"), *lost], seed=1)
    result = _cli(str(base), str(new))
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())
    detail = "missing in new" if what == "missing" else f"{what} in new: it broke"
    assert (
        f"FAIL (exit 3): lost: tiny-cnn onnxruntime cpu fp32 224x224x3 (defaults) is ok in "
        f"base and {detail}" in said
    )
    doc = json.loads(_cli(str(base), str(new), "-f", "json").output)
    assert len(doc["lost"]) == 1 and doc["exit_code"] == 3


def test_a_regression_outranks_a_lost_combination(tmp_path):
    base = make_run(tmp_path / "a", [Combo("pytorch"), Combo("onnxruntime")])
    new = make_run(tmp_path / "b", [Combo("pytorch", median_ms=14.0)], seed=1)
    result = _cli(str(base), str(new))
    assert result.exit_code == 1
    assert "FAIL (exit 1): regression above 5%" in result.output


def test_the_method_used_is_named(three_runs):
    base, same, _ = three_runs
    result = _cli(str(base), str(same))
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert "method (single-process, 4 combination(s)): percentile bootstrap" in said
    assert "OK: no regression above 5% in 4 compared combination(s)" in said


# --------------------------------------------------------------------------- environments


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"libraries": {"torch": "2.15.0", "onnxruntime": "1.31.1", "plotly": "7.1.0"}},
            "torch 2.14.1 → 2.15.0",
        ),
        ({"gpus": ["NVIDIA A100"]}, "GPUs not recorded or not installed → NVIDIA A100"),
    ],
)
def test_runs_from_different_environments_need_allow_env_change(tmp_path, capsys, changes, named):
    base = make_run(tmp_path / "a", [Combo("onnxruntime")])
    new = make_run(tmp_path / "b", [Combo("onnxruntime")], seed=1, **changes)
    code, err = run_main(capsys, "compare", str(base), str(new))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: the runs were measured in different environments (")
    assert named in line and line.endswith("compare them anyway with --allow-env-change")
    allowed = _cli(str(base), str(new), "--allow-env-change")
    assert allowed.exit_code == 0, allowed.output
    assert f"environment changed (allowed): {named}" in allowed.output
    doc = json.loads(_cli(str(base), str(new), "--allow-env-change", "-f", "json").output)
    assert named in doc["environment_changes"]


def test_runs_differing_only_in_the_openvino_version_are_different_environments(
    tmp_path, capsys, monkeypatch
):
    """OpenVINO is no library infercmp itself uses: its version reaches run.json only through
    the engine's descriptor, and compare must still see it change."""
    real_version = metadata.version

    def libraries_with_openvino(version: str) -> dict:
        with monkeypatch.context() as patch:
            patch.setattr(
                metadata, "version", lambda d: version if d == "openvino" else real_version(d)
            )
            return collect_environment()["libraries"]

    base = make_run(
        tmp_path / "a", [Combo("openvino")], libraries=libraries_with_openvino("2025.1")
    )
    new = make_run(
        tmp_path / "b", [Combo("openvino")], seed=1, libraries=libraries_with_openvino("2025.2")
    )
    code, err = run_main(capsys, "compare", str(base), str(new))
    assert code == 2
    assert "the runs were measured in different environments (openvino 2025.1 → 2025.2)" in err


# --------------------------------------------------------------------------- processes


def _repeated(root, median_ms: float, processes: int, seed: int):
    return make_run(
        root,
        [Combo("onnxruntime", median_ms=median_ms, processes=processes, process_spread=0.01)],
        seed=seed,
    )


def test_repeated_runs_are_compared_by_process_and_say_so(tmp_path):
    base = _repeated(tmp_path / "a", 10.0, 5, seed=1)
    same = _repeated(tmp_path / "b", 10.0, 5, seed=2)
    slow = _repeated(tmp_path / "c", 12.0, 5, seed=3)
    report = compare_runs(open_run(base), open_run(same))
    (only,) = report.comparisons
    assert only.method == "hierarchical" and only.processes == (5, 5)
    assert only.verdict == "no significant change"
    assert "between processes" in report.methods["hierarchical"]
    slower = compare_runs(open_run(base), open_run(slow))
    assert slower.comparisons[0].verdict == "regression" and slower.exit_code == 1
    # One side with a single process: the single-process method, and the output says which.
    single = make_run(tmp_path / "d", [Combo("onnxruntime", median_ms=10.0)], seed=4)
    mixed = compare_runs(open_run(base), open_run(single))
    assert mixed.comparisons[0].method == "single-process"
    assert mixed.comparisons[0].processes == (5, 1)


def test_a_change_within_the_spread_between_processes_is_not_significant(tmp_path):
    """Runs drift by as much as their processes do: a change inside that spread is noise."""
    combo = dict(processes=5, process_spread=0.01)
    base = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0, **combo)], seed=1)
    drift = make_run(tmp_path / "b", [Combo("onnxruntime", median_ms=10.2, **combo)], seed=1)
    slow = make_run(tmp_path / "c", [Combo("onnxruntime", median_ms=12.0, **combo)], seed=1)
    report = compare_runs(open_run(base), open_run(drift))
    (row,) = report.comparisons
    spread = process_spread(open_run(base).combinations[0].process_groups)
    assert 0.02 < spread < 0.05  # the synthetic processes really are that far apart
    assert row.change == pytest.approx(0.02, abs=0.003)
    assert row.noise_floor == pytest.approx(spread, rel=0.01)  # same seed: (almost) same spread
    assert row.verdict == "no significant change"
    assert "spread between processes" in row.note and report.exit_code == 0
    # The same spread does not hide a 20% slowdown.
    slower = compare_runs(open_run(base), open_run(slow)).comparisons[0]
    assert slower.verdict == "regression" and slower.noise_floor < 0.2


def test_process_spread_is_the_relative_range_of_process_medians():
    groups = [np.full(50, 10.0), np.full(50, 10.5), np.full(50, 9.8)]
    assert process_spread(groups) == pytest.approx(0.7 / 10.0)
    assert process_spread(groups[:1]) == 0.0  # one process: no spread to speak of


def test_a_run_measured_beside_other_work_is_named(tmp_path):
    busy = make_run(
        tmp_path / "b", [Combo("onnxruntime", median_ms=10.0, background_cpus=0.9)], seed=2
    )
    quiet = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0)], seed=1)
    (row,) = compare_runs(open_run(quiet), open_run(busy)).comparisons
    assert "new run measured beside other work (0.90 CPUs busy)" in row.note
    (row,) = compare_runs(open_run(quiet), open_run(quiet)).comparisons
    assert "beside other work" not in row.note


# --------------------------------------------------------------------------- which runs


def test_directories_of_runs_resolve_to_their_latest_run(tmp_path, capsys):
    """`bench --out base` then `compare base slow`, as a newcomer would type it."""
    base_dir, slow_dir = tmp_path / "base", tmp_path / "slow"
    cpu_run(base_dir, seed=1)
    newest = cpu_run(base_dir, seed=2)
    slow = cpu_run(slow_dir, seed=3, slowdown=1.2)
    code, err = run_main(capsys, "compare", str(base_dir), str(slow_dir))
    assert code == 1
    assert err.splitlines() == [
        f"'{base_dir}' holds runs; using the latest, {newest}",
        f"'{slow_dir}' holds runs; using the latest, {slow}",
    ]
    code, err = run_main(capsys, "report", str(base_dir), "-o", str(tmp_path / "r.html"))
    assert code == 0 and err.splitlines() == [
        f"'{base_dir}' holds runs; using the latest, {newest}"
    ]


def test_a_killed_run_reads_as_abandoned(tmp_path):
    import subprocess
    import sys

    from synthetic_runs import edit_run_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = cpu_run(tmp_path / "a", seed=1)
    run = cpu_run(tmp_path / "b", seed=2)
    edit_run_json(
        run,
        lambda info: info.update(
            status="running", finished=None, writer=dict(info["writer"], pid=dead.pid)
        ),
    )
    md = runner.invoke(app, ["report", str(run), "-f", "md"]).output
    assert f"status abandoned (its bench process (pid {dead.pid} on " in md
    doc = json.loads(runner.invoke(app, ["report", str(run), "-f", "json"]).output)
    assert doc["runs"][0]["status"] == "abandoned"
    html = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert html.exit_code == 0
    assert "the run is <b>abandoned</b>" in (tmp_path / "r.html").read_text()
    said = _cli(str(base), str(run)).output
    assert "the new run is abandoned: only its finished combinations count" in said


def test_processes_that_disagree_by_more_than_the_threshold_are_inconclusive_exit_3(tmp_path):
    """ONNX Runtime's default pool on 2 vCPUs ran some processes at 11 us and others at 25 us:
    such runs can neither pass nor fail a 5% gate, and compare says so instead of exiting 0."""
    combo = dict(processes=5, process_spread=0.5)
    base = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0, **combo)], seed=1)
    slow = make_run(tmp_path / "b", [Combo("onnxruntime", median_ms=14.0, **combo)], seed=2)
    report = compare_runs(open_run(base), open_run(slow))
    (row,) = report.comparisons
    assert row.verdict == "inconclusive" and row.noise_floor > report.threshold
    assert report.exit_code == 3
    assert any(p.startswith("inconclusive:") and "--repeat" in p for p in report.problems)
