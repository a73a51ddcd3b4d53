"""`bench --accuracy [N]`: the optional value, and the table's accuracy column."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from synthetic_runs import Combo, make_run

from infercmp.cli.bench import bench_table, parse_accuracy, row_line
from infercmp.cli.options import with_bare_values
from infercmp.core.errors import InfercmpError
from infercmp.run.accuracy import AccuracyRequest
from infercmp.store.run_store import RunStore


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["m", "--accuracy"], ["m", "--accuracy=all"]),
        (["--accuracy", "--iters", "3", "m"], ["--accuracy=all", "--iters", "3", "m"]),
        (["--accuracy", "m"], ["--accuracy=all", "m"]),  # a model name is no count
        (["m", "--accuracy", "500"], ["m", "--accuracy", "500"]),
        (["m", "--accuracy=7"], ["m", "--accuracy=7"]),
        (["m", "--", "--accuracy"], ["m", "--", "--accuracy"]),
    ],
)
def test_accuracy_takes_a_count_or_none(args, expected):
    assert with_bare_values(args) == expected


def test_the_flags_value_becomes_the_request():
    assert parse_accuracy(None) is None
    assert parse_accuracy("all") == AccuracyRequest(None)
    assert parse_accuracy("250") == AccuracyRequest(250)
    for bad in ("0", "x", "-3"):
        with pytest.raises(InfercmpError, match="--accuracy"):
            parse_accuracy(bad)


def test_bench_parses_a_bare_accuracy_before_another_option(monkeypatch, capsys):
    from infercmp.cli import bench as bench_module

    seen = {}

    def stop(request, view, resources):
        seen["accuracy"] = request.accuracy
        seen["iters"] = request.measurement.iters
        raise InfercmpError("stop here")

    monkeypatch.setattr(bench_module.session, "run_session", stop)
    from synthetic_runs import run_main

    code, err = run_main(capsys, "bench", "tiny-cnn", "--accuracy", "--iters", "3")
    assert code == 2 and "stop here" in err
    assert seen == {"accuracy": AccuracyRequest(None), "iters": 3}
    code, _ = run_main(capsys, "bench", "tiny-cnn", "--accuracy", "40")
    assert seen["accuracy"] == AccuracyRequest(40)
    run_main(capsys, "bench", "tiny-cnn")
    assert seen["accuracy"] is None


def _text(table) -> str:
    out = Console(file=io.StringIO(), width=250, color_system=None)
    out.print(table)
    return out.file.getvalue()


def test_the_table_has_an_accuracy_column_only_when_measured(tmp_path):
    results = RunStore.open(make_run(tmp_path, [Combo("pytorch"), Combo("onnxruntime")])).results
    for r in results:
        r.parity = None
    assert "accuracy" not in _text(bench_table(results)[0])
    results[1].accuracy = {
        "samples": 10, "primary": "top1", "metrics": {"top1": 0.978},
        "reference_metrics": {"top1": 0.98}, "change": {"top1": -0.002},
        "calibration": "random",
    }  # fmt: skip
    text = _text(bench_table(results)[0])
    assert "accuracy" in text and "97.8% (-0.2) (random calib.)" in text
    assert "accuracy 97.8% (-0.2)" in row_line(results[1])


def test_arguments_that_are_not_strings_pass_through():
    # typer's CliRunner (and a script) may hand Paths and numbers; `tune ... -o PATH` broke
    from pathlib import Path

    args = ["bench", "m", "--out", Path("runs"), "--accuracy", Path("x")]
    assert with_bare_values(args) == [
        "bench",
        "m",
        "--out",
        Path("runs"),
        "--accuracy=all",
        Path("x"),
    ]
    assert with_bare_values(["--accuracy", 5]) == ["--accuracy", 5]
