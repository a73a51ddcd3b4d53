"""Accuracy in the report and in compare (`bench --accuracy`), from synthetic runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from synthetic_runs import Combo, make_run

from infercmp.report import compare_runs, open_run, render_csv, render_json, render_markdown
from infercmp.report.accuracy import (
    ACCURACY_COLUMNS,
    ACCURACY_REGRESSION,
    accuracy_points,
    fmt_accuracy,
    headline,
)
from infercmp.report.compare import EXIT_OK, EXIT_REGRESSION
from infercmp.report.html.page import render_html
from infercmp.report.summary import COLUMNS, combinations
from infercmp.store.run_store import RunStore


def accuracy(top1: float | None, reference: float = 0.98, **extra) -> dict:
    """A stored accuracy object (docs/results-format.md) with a top-1 as the primary metric."""
    metrics = {} if top1 is None else {"top1": top1}
    change = {} if top1 is None else {"top1": top1 - reference}
    return {
        "samples": 200,
        "labelled": top1 is not None,
        "primary": "top1" if top1 is not None else None,
        "direction": "max",
        "metrics": metrics,
        "reference_metrics": {"top1": reference} if top1 is not None else {},
        "change": change,
        "top1_agreement": 0.99,
        "outputs": [
            {
                "name": "logits",
                "p50_abs": 1e-6,
                "p99_abs": 1e-4,
                "max_abs": 2e-3,
                "cosine_mean": 0.99998,
                "cosine_min": 0.9991,
                "top1_agreement": 0.99,
            }
        ],  # fmt: skip
        "calibration": None,
        "fingerprint": "f",
        "calls": 200,
        "seconds": 0.4,
        "error": None,
        **extra,
    }


def run_with_accuracy(
    root: Path, monkeypatch, combos: list[Combo], accuracies: dict, seed: int = 0
) -> Path:
    """A synthetic run whose results carry `accuracies[(engine, precision)]`."""
    add = RunStore.add_result

    def with_accuracy(self, result, latency, samples):
        result.accuracy = accuracies.get((result.engine, result.precision))
        return add(self, result, latency, samples)

    monkeypatch.setattr(RunStore, "add_result", with_accuracy)
    try:
        return make_run(root, combos, seed=seed)
    finally:
        monkeypatch.setattr(RunStore, "add_result", add)


COMBOS = [Combo("pytorch", median_ms=10.0), Combo("onnxruntime", median_ms=6.0),
          Combo("onnxruntime", precision="int8", median_ms=3.0)]  # fmt: skip


def test_the_headline_is_the_primary_metric_and_its_change_in_points():
    assert fmt_accuracy(accuracy(0.978)) == "97.8% (-0.2)"
    assert fmt_accuracy(accuracy(None)) == "agree 99.0%"
    no_class = accuracy(None, top1_agreement=None)
    assert fmt_accuracy(no_class) == "cos 0.99998"
    assert fmt_accuracy(accuracy(0.9, calibration="random")) == "90.0% (-8.0) (random calib.)"
    assert fmt_accuracy(accuracy(0.9, error="model 'm': evaluate() raised")) == "metric failed"
    assert fmt_accuracy(None) == "–"
    loss = accuracy(None, primary="loss", metrics={"loss": 2.5}, change={"loss": 0.25},
                    reference_metrics={"loss": 2.25}, direction="min")  # fmt: skip
    shown = headline(loss)
    assert shown is not None and not shown.percent and shown.text() == "2.5 (+0.25)"


def test_a_run_without_accuracy_has_the_rows_it_always_had(tmp_path):
    run = open_run(make_run(tmp_path, COMBOS))
    rows = json.loads(render_json([run]))["rows"]
    assert list(rows[0]) == COLUMNS
    assert next(csv.reader(io.StringIO(render_csv([run])))) == COLUMNS
    assert "accuracy" not in render_markdown([run]).split("###")[1]
    assert 'id="accuracy"' not in render_html([run])


def test_a_run_with_accuracy_shows_it_in_every_format(tmp_path, monkeypatch):
    accuracies = {("pytorch", "fp32"): accuracy(0.98),
                  ("onnxruntime", "int8"): accuracy(0.971, calibration="dataset")}  # fmt: skip
    run = open_run(run_with_accuracy(tmp_path, monkeypatch, COMBOS, accuracies))
    rows = json.loads(render_json([run]))["rows"]
    assert list(rows[0]) == COLUMNS + ACCURACY_COLUMNS
    int8 = next(r for r in rows if r["precision"] == "int8")
    assert int8["accuracy"] == 0.971 and int8["accuracy_change"] == pytest.approx(-0.009)
    assert int8["accuracy_shown"] == "97.1% (-0.9)" and int8["calibration"] == "dataset"
    assert int8["max_abs_error"] == 2e-3 and int8["accuracy_samples"] == 200
    header = next(csv.reader(io.StringIO(render_csv([run]))))
    assert header == COLUMNS + ACCURACY_COLUMNS
    markdown = render_markdown([run])
    assert "| accuracy |" in markdown and "97.1% (-0.9)" in markdown
    assert "None" not in markdown  # a row without accuracy (skipped, failed) shows a dash
    page = render_html([run])
    assert 'id="accuracy"' in page and "accuracy against latency" in page


def test_the_pareto_front_keeps_what_nothing_faster_beats(tmp_path, monkeypatch):
    accuracies = {("pytorch", "fp32"): accuracy(0.98), ("onnxruntime", "fp32"): accuracy(0.98),
                  ("onnxruntime", "int8"): accuracy(0.95)}  # fmt: skip
    run = open_run(run_with_accuracy(tmp_path, monkeypatch, COMBOS, accuracies))
    points = {(p.combo.engine, p.combo.precision): p.pareto for p in
              accuracy_points(combinations([run]))}  # fmt: skip
    # int8 is fastest; onnxruntime fp32 is faster than pytorch at the same accuracy.
    assert points == {
        ("onnxruntime", "int8"): True,
        ("onnxruntime", "fp32"): True,
        ("pytorch", "fp32"): False,
    }


def _compare(tmp_path, monkeypatch, base: dict, new: dict, threshold: float = 1.0):
    a = run_with_accuracy(tmp_path / "a", monkeypatch, COMBOS, base, seed=0)
    b = run_with_accuracy(tmp_path / "b", monkeypatch, COMBOS, new, seed=0)
    # The same latencies on both sides, and no run-to-run noise allowed: speed is no change,
    # so the verdict is accuracy's alone.
    return compare_runs(open_run(a), open_run(b), run_noise=0.0, accuracy_threshold=threshold)


def test_compare_passes_identical_accuracy_and_fails_a_drop_beyond_the_threshold(
    tmp_path, monkeypatch
):
    base = {("onnxruntime", "int8"): accuracy(0.975)}
    same = _compare(tmp_path / "same", monkeypatch, base, base)
    assert same.exit_code == EXIT_OK and same.accuracy_threshold == 1.0
    row = next(c for c in same.comparisons if c.precision == "int8")
    assert row.accuracy is not None and row.accuracy["drop"] == 0.0

    dropped = {("onnxruntime", "int8"): accuracy(0.95)}
    report = _compare(tmp_path / "drop", monkeypatch, base, dropped)
    assert report.exit_code == EXIT_REGRESSION  # same speed, lower accuracy: it fails
    (failing,) = report.failing
    assert failing.verdict == ACCURACY_REGRESSION and "2.50 points" in failing.note
    assert failing.accuracy == pytest.approx(
        {"metric": "top1", "base": 97.5, "new": 95.0, "drop": 2.5, "unit": "points"}
    )
    # Within the threshold, or a threshold above the drop: it passes.
    assert _compare(tmp_path / "wide", monkeypatch, base, dropped, 3.0).exit_code == EXIT_OK
    better = {("onnxruntime", "int8"): accuracy(0.99)}
    assert _compare(tmp_path / "up", monkeypatch, base, better).exit_code == EXIT_OK


def test_a_compare_without_accuracy_reads_as_before(tmp_path):
    a, b = make_run(tmp_path / "a", COMBOS), make_run(tmp_path / "b", COMBOS)
    document = compare_runs(open_run(a), open_run(b)).to_dict()
    assert "accuracy_threshold" not in document
    assert all("accuracy" not in row for row in document["comparisons"])


def test_a_debug_precision_result_stored_in_the_run_is_a_report_section(tmp_path):
    """`infercmp debug-precision --run RUN` stores its result in the run; the report (HTML
    and markdown) shows it as a "where the precision breaks" section."""
    from infercmp.store.debug_precision import RESULT_FILE, result_dir

    path = make_run(tmp_path, COMBOS)
    stored = result_dir(path, "m", "onnxruntime", "int8")
    stored.mkdir(parents=True)
    layer = {"name": "logits", "path": "fc", "op": "Gemm", "sqnr_in": 36.5, "sqnr_out": 25.1,
             "max_rel": 0.22, "mean_rel": 0.02, "fused_by": None, "floor_db": 45.7,
             "growth": 11.4}  # fmt: skip
    result = {
        "model": "m", "engine": "onnxruntime", "precision": "int8", "device": "cpu",
        "samples": {"count": 16, "source": "dataset"}, "mechanism": "graph outputs",
        "top": [layer], "proposal": {"paths": ["fc"], "engine": "onnxruntime[int8_exclude='fc']",
        "note": ""}, "measured": {"original": {"max_abs": 5.8}, "mixed": {"max_abs": 0.32}},
        "notes": [],
    }  # fmt: skip
    (stored / RESULT_FILE).write_text(json.dumps(result))
    run = open_run(path)
    page = render_html([run])
    assert 'id="precision-debug"' in page and "int8_exclude=&#x27;fc&#x27;" in page
    assert "| fc | Gemm |" in render_markdown([run])
    # a run without one has no such section
    other = open_run(make_run(tmp_path / "other", COMBOS))
    assert 'id="precision-debug"' not in render_html([other])
