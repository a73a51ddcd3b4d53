"""`infercmp compare`: the interval of the change of each median, the one rule that decides from
it (issue 27), and the CI exit code."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
from synthetic_runs import Combo, cpu_run, make_run, run_main, server_combo
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.report import bootstrap_median_ratio, compare_runs, open_run
from infercmp.report.compare import (
    FASTER_WITHIN,
    INCONCLUSIVE,
    NO_CHANGE,
    PARITY_REGRESSION,
    SLOWER_WITHIN,
    decide,
)
from infercmp.report.interval import ChangeInterval, change_interval, process_sd
from infercmp.report.run_conditions import environment_changes
from infercmp.run.environment import collect_environment

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
    from infercmp.report import interval

    rng = np.random.default_rng(0)
    base, new = rng.lognormal(0, 0.05, 3000), rng.lognormal(0.01, 0.05, 3000)
    whole = bootstrap_median_ratio(base, new, resamples=300)
    monkeypatch.setattr(interval, "_CHUNK_ELEMENTS", 10_000)  # three resamples per chunk
    chunked = bootstrap_median_ratio(base, new, resamples=300)
    assert chunked == pytest.approx(whole)


def _interval(change: float, low: float, high: float) -> ChangeInterval:
    return ChangeInterval(change, low, high, "hierarchical", (5, 5))


@pytest.mark.parametrize(
    ("change", "low", "high", "verdict"),
    [
        (0.029, -0.006, 0.034, NO_CHANGE),  # issue 27's pair: inside +-5%, not significant
        (0.029, 0.012, 0.041, SLOWER_WITHIN),  # significant, but inside +-5%: named, passes
        (-0.03, -0.045, -0.01, FASTER_WITHIN),
        (0.2, 0.15, 0.25, "regression"),
        (0.06, 0.01, 0.11, "regression"),  # excludes no change and larger than the threshold
        (-0.2, -0.25, -0.15, "improvement"),
        (0.04, 0.01, 0.07, INCONCLUSIVE),  # reaches past 5% without showing a larger change
        (0.08, -0.01, 0.17, INCONCLUSIVE),  # larger than 5%, but not significant
        (0.0, -0.06, 0.06, INCONCLUSIVE),
        (0.004, 0.001, 0.008, NO_CHANGE),  # significant but under the 1% noise floor: a label
    ],
)
def test_one_rule_decides_from_the_interval(change, low, high, verdict):
    assert decide(_interval(change, low, high), threshold=0.05, noise_floor=0.01) == verdict


def test_single_process_runs_of_one_configuration_never_read_as_a_change(three_runs):
    """One process a side cannot show between-run noise: the interval is widened by --run-noise,
    so identical configurations are never a regression or an improvement (issue 27)."""
    base, same, _ = three_runs
    report = compare_runs(open_run(base), open_run(same))
    compared = [c for c in report.comparisons if c.verdict != "not compared"]
    assert len(compared) == 4
    assert all(c.verdict == INCONCLUSIVE for c in compared), compared
    assert all(c.method == "single-process" for c in compared)
    assert all(c.ci_low < -0.09 and c.ci_high > 0.09 for c in compared)  # +-10% allowed
    assert all("--run-noise" in c.note for c in compared)
    assert report.exit_code == 3
    assert all("--repeat 5" in p for p in report.problems), report.problems
    skipped = [c for c in report.comparisons if c.verdict == "not compared"]
    assert len(skipped) == 1 and "skipped" in skipped[0].note
    # On a machine whose runs differ by 2% at most, saying so lets one process a side pass.
    quiet = compare_runs(open_run(base), open_run(same), run_noise=0.02)
    assert {c.verdict for c in quiet.compared} == {NO_CHANGE} and quiet.exit_code == 0


def test_twenty_percent_slowdown_is_a_regression(three_runs):
    base, _, slow = three_runs
    report = compare_runs(open_run(base), open_run(slow))
    by = {(c.engine, c.shape): c for c in report.comparisons}
    for shape in ("224x224x3", "320x320x3"):
        ort = by[("onnxruntime", shape)]
        assert ort.verdict == "regression"
        assert ort.change == pytest.approx(0.2, abs=0.03)
        assert 0.05 < ort.ci_low < 0.15  # the 10% between-run allowance, and no more
        assert by[("pytorch", shape)].verdict not in ("regression", "improvement")
    assert report.exit_code == 1
    assert {c.engine for c in report.failing} == {"onnxruntime"}
    assert "bootstrap" in report.method


def test_a_change_below_the_threshold_passes_and_is_named(three_runs):
    base, _, slow = three_runs
    report = compare_runs(open_run(base), open_run(slow), threshold=0.40)
    ort = [c for c in report.compared if c.engine == "onnxruntime"]
    assert {c.verdict for c in ort} == {SLOWER_WITHIN}
    assert all(", below the 40% threshold" in c.note for c in ort)
    assert report.exit_code == 0


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
    ok = runner.invoke(app, ["compare", str(base), str(same), "--run-noise", "2"])
    assert ok.exit_code == 0, ok.output
    assert "no significant change" in ok.output and "bootstrap" in ok.output
    unsure = runner.invoke(app, ["compare", str(base), str(same)])
    assert unsure.exit_code == 3, unsure.output
    assert "FAIL (exit 3): inconclusive:" in unsure.output and "--repeat 5" in unsure.output
    bad = runner.invoke(app, ["compare", str(base), str(slow), "--threshold", "5"])
    assert bad.exit_code == 1
    assert "regression" in bad.output and "FAIL" in bad.output
    doc = runner.invoke(app, ["compare", str(base), str(slow), "--format", "json"])
    assert doc.exit_code == 1
    assert json.loads(doc.output)["exit_code"] == 1
    md = runner.invoke(app, ["compare", str(base), str(slow), "--format", "md"])
    assert "| onnxruntime cpu fp32 224x224x3 |" in md.output


def test_run_noise_out_of_range_is_one_line_exit_2(three_runs, capsys):
    base, same, _ = three_runs
    code, err = run_main(capsys, "compare", str(base), str(same), "--run-noise", "nan")
    assert code == 2
    assert err.strip() == "error: --run-noise nan is not a percentage; give a number >= 0, e.g. 10"


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
    result = _cli(str(base), str(same), "--run-noise", "2")
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    assert "method (single-process, 4 combination(s)): percentile bootstrap" in said
    assert "widened by +-2% (--run-noise)" in said
    assert "rule: no change when the whole interval lies within +-5%" in said
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
    allowed = _cli(str(base), str(new), "--allow-env-change", "--run-noise", "2")
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
    # A run from before engine runtimes were recorded does not know them: not a change. One
    # that recorded OpenVINO as not installed (null) does.
    old = make_run(tmp_path / "c", [Combo("openvino")], seed=2)
    assert "openvino" not in open_run(old).environment["libraries"]
    assert not any("openvino" in c for c in environment_changes(open_run(old), open_run(new)))
    without = libraries_with_openvino("2025.2") | {"openvino": None}
    gone = make_run(tmp_path / "d", [Combo("openvino")], seed=3, libraries=without)
    assert "openvino 2025.2 → not recorded or not installed" in environment_changes(
        open_run(new), open_run(gone)
    )


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
    assert only.verdict == NO_CHANGE and report.exit_code == 0
    assert "between processes" in report.methods["hierarchical"]
    assert "widened" not in only.note  # both sides show their spread between processes
    slower = compare_runs(open_run(base), open_run(slow))
    assert slower.comparisons[0].verdict == "regression" and slower.exit_code == 1
    # One side with a single process: still the process-level interval, widened by the other
    # side's spread between processes for what that side's one process cannot show.
    single = make_run(tmp_path / "d", [Combo("onnxruntime", median_ms=10.0)], seed=4)
    (mixed,) = compare_runs(open_run(base), open_run(single)).comparisons
    assert mixed.method == "hierarchical" and mixed.processes == (5, 1)
    assert "one side measured in one worker process" in mixed.note


def test_more_processes_narrow_the_interval_instead_of_widening_it(tmp_path):
    """Issue 27: the old rule's range of process medians grew with --repeat, so the advice to
    measure more processes made a row more inconclusive. The interval must shrink instead
    (on average over pairs of runs: with few processes a single interval's width is noisy)."""
    widths: dict[int, list[float]] = {3: [], 15: []}
    for processes, pair in ((p, k) for p in widths for k in range(4)):
        combo = dict(processes=processes, process_spread=0.02, iterations=100)
        a = make_run(tmp_path / f"a{processes}-{pair}", [Combo("onnxruntime", **combo)], seed=pair)
        b = make_run(
            tmp_path / f"b{processes}-{pair}", [Combo("onnxruntime", **combo)], seed=9 + pair
        )
        (row,) = compare_runs(open_run(a), open_run(b)).comparisons
        widths[processes].append(row.ci_high - row.ci_low)
    assert np.mean(widths[15]) < 0.7 * np.mean(widths[3]), widths


def test_process_sd_does_not_grow_with_the_number_of_processes():
    assert process_sd([np.full(5, m) for m in (9.0, 10.0, 11.0)]) == pytest.approx(0.1)
    assert process_sd([np.full(5, 10.0)]) == 0.0  # one process: no spread to speak of
    rng = np.random.default_rng(0)
    many = [np.full(3, m) for m in 10 * (1 + 0.03 * rng.standard_normal(400))]
    medians = np.array([g[0] for g in many])
    assert process_sd(many) == pytest.approx(0.03, rel=0.15)
    assert (medians.max() - medians.min()) / 10 > 0.15  # the range the old rule used: 5x more


def test_a_significant_change_below_the_threshold_passes_and_says_so(tmp_path):
    combo = dict(processes=5, process_spread=0.002, iterations=400)
    base = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0, **combo)], seed=1)
    drift = make_run(tmp_path / "b", [Combo("onnxruntime", median_ms=10.3, **combo)], seed=2)
    report = compare_runs(open_run(base), open_run(drift))
    (row,) = report.comparisons
    assert row.verdict == SLOWER_WITHIN and row.ci_low > 0 and row.ci_high < 0.05
    assert f"{row.change * 100:+.1f}%, below the 5% threshold" in row.note
    assert 0.02 < row.change < 0.04
    assert report.exit_code == 0


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
    such runs can neither pass nor fail a 5% gate; compare says so and how many processes would
    decide it, estimated from the spread it saw."""
    combo = dict(processes=5, process_spread=0.5)
    base = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0, **combo)], seed=1)
    slow = make_run(tmp_path / "b", [Combo("onnxruntime", median_ms=14.0, **combo)], seed=2)
    report = compare_runs(open_run(base), open_run(slow))
    (row,) = report.comparisons
    assert row.verdict == INCONCLUSIVE and row.ci_high - row.ci_low > 0.1
    assert report.exit_code == 3
    (problem,) = report.problems
    needed = int(problem.split("--repeat ")[1].split(")")[0])
    assert problem.startswith("inconclusive:") and needed > 5, problem


@pytest.mark.parametrize("processes", [1, 5])
@pytest.mark.parametrize("spread", [0.0, 0.5])
def test_a_run_compared_with_itself_is_no_change_exit_0(tmp_path, capsys, processes, spread):
    """Even a run whose processes disagree by 50%, or a run of one process."""
    combo = dict(processes=processes, process_spread=spread)
    run = make_run(tmp_path / "a", [Combo("onnxruntime", **combo), Combo("pytorch", **combo)])
    report = compare_runs(open_run(run), open_run(run))
    assert [c.verdict for c in report.comparisons] == [NO_CHANGE, NO_CHANGE]
    assert all(c.change == 0 and "the same measurements" in c.note for c in report.comparisons)
    assert report.exit_code == 0
    code, _ = run_main(capsys, "compare", str(run), str(run))
    assert code == 0


def test_every_published_run_compared_with_itself_exits_0(tmp_path, capsys):
    """The runs under docs/results (directories and tar archives), raw latencies or not."""
    import tarfile
    from pathlib import Path

    results = Path(__file__).resolve().parents[3] / "docs" / "results"
    for number, archive in enumerate(sorted(results.rglob("*.tar.gz"))):
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path / str(number), filter="data")
    runs = [p.parent for p in [*results.rglob("run.json"), *tmp_path.rglob("run.json")]]
    assert len(runs) >= 10
    for run in runs:
        code, err = run_main(capsys, "compare", str(run), str(run))
        assert code == 0, (run, err)


def test_outputs_that_go_wrong_are_a_regression_whatever_the_speed(tmp_path):
    """Issue 23 A.2: a NEW run whose outputs failed parity was called an improvement."""
    base = make_run(tmp_path / "a", [Combo("onnxruntime", median_ms=10.0, processes=3)], seed=1)
    wrong = make_run(
        tmp_path / "b",
        [Combo("onnxruntime", median_ms=5.0, processes=3, parity_ok=False)],
        seed=2,
    )
    report = compare_runs(open_run(base), open_run(wrong))
    (row,) = report.comparisons
    assert (row.base_parity, row.new_parity) == ("ok", "FAIL")
    assert row.verdict == PARITY_REGRESSION and report.exit_code == 1
    assert row.change < -0.4  # it did get faster: the outputs decide
    assert "outputs passed parity in base and fail in new (max abs err 5.0e-01)" in row.note
    doc = json.loads(runner.invoke(app, ["compare", str(base), str(wrong), "-f", "json"]).output)
    (shown,) = doc["comparisons"]
    assert (shown["base_parity"], shown["new_parity"]) == ("ok", "FAIL")
    assert doc["exit_code"] == 1 and doc["failing"] == [row.label]
    md = runner.invoke(app, ["compare", str(base), str(wrong), "-f", "md"])
    assert md.exit_code == 1 and "| ok → FAIL | parity regression |" in md.output
    text = runner.invoke(app, ["compare", str(base), str(wrong)])
    assert "ok → FAIL" in text.output and "FAIL (exit 1)" in text.output
    # Failing in both runs is shown, not a new regression.
    (both,) = compare_runs(open_run(wrong), open_run(wrong)).comparisons
    assert (both.base_parity, both.new_parity) == ("FAIL", "FAIL")
    assert both.verdict == NO_CHANGE


def test_one_latency_sample_is_named_as_too_few_not_as_none(tmp_path):
    one = make_run(tmp_path / "a", [Combo("onnxruntime", iterations=1, outliers=0)], seed=1)
    other = make_run(tmp_path / "b", [Combo("onnxruntime", iterations=50)], seed=2)
    (row,) = compare_runs(open_run(one), open_run(other)).comparisons
    assert row.verdict == "not compared"
    assert "base run has one latency sample, too few for an interval" in row.note


def test_the_bootstrap_cost_is_bounded_by_thinning_long_processes():
    """Issue 23 C.18: 100k iterations took 24 s; each process is thinned to an evenly spaced
    subsample, and the interval still brackets the true change (benchmarks/compare_cost.py)."""
    rng = np.random.default_rng(3)
    base = [rng.lognormal(0, 0.05, 100_000) for _ in range(2)]
    new = [1.1 * rng.lognormal(0, 0.05, 100_000) for _ in range(2)]
    interval = change_interval(base, new, resamples=500)
    assert interval.low < 0.1 < interval.high and interval.change == pytest.approx(0.1, abs=0.01)
    assert "bootstrap on 10,000 evenly spaced iterations of each process" in interval.note


def test_a_load_run_that_stops_holding_its_load_fails_the_gate(tmp_path):
    """Issue 23 A.3: a server run that cut 70,305 of 100,000 requests was `ok`; compare judged
    its completed requests' median as if the load had been served."""
    base = make_run(tmp_path / "a", [server_combo("onnxruntime", 4.0, chose=1000.0)], seed=1)
    cut = make_run(tmp_path / "b", [server_combo("onnxruntime", 4.0, chose=1000.0, cut=70_305)])
    report = compare_runs(open_run(base), open_run(cut))
    (row,) = report.comparisons
    assert row.verdict == "overloaded" and report.exit_code == 1
    assert row.note.startswith("the new run did not hold its load: 70,305 of 100,000 requests")
    # Chosen rates that differ are named: the medians were measured at different loads.
    slower = make_run(tmp_path / "c", [server_combo("onnxruntime", 4.0, chose=500.0)], seed=2)
    (row,) = compare_runs(open_run(base), open_run(slower)).comparisons
    assert "offered rates differ: base 1,000/s, new 500/s" in row.note
