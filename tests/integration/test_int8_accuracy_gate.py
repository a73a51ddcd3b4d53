"""compare's accuracy gate on a real int8 model: the digits example quantized by ONNX Runtime
with its own calibration split, then again with a deliberately bad calibration set (blank
images: every activation range collapses to a point), both measured with --accuracy.

The first run must land within a point of PyTorch fp32's top-1; compare of the first against
the second must fail with an accuracy regression (exit 1), whatever the speed, and pass the
first against itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infercmp.artifacts import accuracy_set
from infercmp.artifacts.samples import CalibrationSet, Samples, read_samples, write_samples
from infercmp.cli import app
from infercmp.report.compare import EXIT_OK, EXIT_REGRESSION
from infercmp.run import prepare

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow

BENCH = ["bench", "digits", "-d", "cpu", "-e", "onnxruntime", "-p", "int8", "--accuracy"]
FAST = ["--iters", "30", "--warmup", "5"]


def _bad_calibration(good: CalibrationSet, where: Path) -> CalibrationSet:
    """As many samples as the good set, every one a blank image."""
    rows = read_samples(good.path).inputs
    path = where / "blank-calibration.npz"
    write_samples(path, Samples([[np.zeros_like(a) for a in row] for row in rows]))
    return CalibrationSet(path, len(rows), "blank-" + good.fingerprint[:16], "dataset")


def _bench(tmp_path: Path, out: Path, exit_code: int = 0) -> Path:
    result = CliRunner().invoke(
        app, [*BENCH, *FAST, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    )
    assert result.exit_code == exit_code, result.output
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _accuracy(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r["engine"] == "onnxruntime" and r["status"] == "ok"]
    return row["accuracy"]


def test_compare_fails_an_int8_model_calibrated_on_blank_images(tmp_path, monkeypatch):
    good = _bench(tmp_path, tmp_path / "good")
    good_accuracy = _accuracy(good)
    assert good_accuracy["calibration"] == "dataset"
    assert abs(good_accuracy["change"]["top1"]) <= 0.01  # within a point of PyTorch fp32

    made = accuracy_set.ensure_accuracy_set

    def with_blank_calibration(*args, **kwargs):
        found = made(*args, **kwargs)
        bad = _bad_calibration(found.calibration, tmp_path)
        return dataclasses.replace(found, calibration=bad)

    monkeypatch.setattr(prepare, "ensure_accuracy_set", with_blank_calibration)
    # Its outputs also fail parity on random inputs (max abs err about 14 against logits of
    # about 30 here), which fails bench itself (exit 1); the run is stored all the same.
    bad = _bench(tmp_path, tmp_path / "bad", exit_code=1)
    bad_accuracy = _accuracy(bad)
    assert bad_accuracy["change"]["top1"] < -0.05, bad_accuracy  # the blank calibration hurts

    runner = CliRunner()
    same = runner.invoke(app, ["compare", str(good), str(good)])
    assert same.exit_code == EXIT_OK, same.output
    worse = runner.invoke(
        app, ["compare", str(good), str(bad), "--accuracy-threshold", "1", "--allow-env-change"]
    )
    assert worse.exit_code == EXIT_REGRESSION, worse.output
    assert "accuracy regression" in worse.output
