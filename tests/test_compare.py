"""`infercmp compare`: bootstrap CI of the median ratio, verdicts, and the CI exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_runs import Combo, cpu_run, make_run, run_main
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.report import bootstrap_median_ratio, compare_runs, open_run
from infercmp.report.compare import classify

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
