"""report and compare on runs written by someone else: wrong types, bad options, odd outputs.

Every case ends in exit 2 and exactly one `error:` line naming the file and the field, never
a traceback (issue 18, items 8 and 9).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from synthetic_runs import Combo, cpu_run, edit_results, edit_run_json, make_run, run_main

# --------------------------------------------------------------------------- damaged stores


def _edit_parquet(run: Path, kind: str, edit: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    for file in (run / kind).glob("*.parquet"):
        edit(pl.read_parquet(file)).write_parquet(file)


def _each_ok(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage every measured combination of a run (skipped ones have no latency or parity)."""
    return lambda run: edit_results(run, lambda item: item["status"] == "ok" and edit(item))


def _set_gpus(info: dict) -> None:
    info["environment"]["gpus"] = ["x"]


MALFORMED: dict[str, tuple[Callable[[Path], None], str]] = {
    "a latency without p50_ms": (
        _each_ok(lambda item: item["latency"].pop("p50_ms")),
        "results.jsonl holds an invalid combination result (latency.p50_ms: Field required)",
    ),
    "peak_rss_bytes of 10**400": (
        _each_ok(lambda item: item.update(peak_rss_bytes=10**400)),
        "results.jsonl holds an invalid combination result (peak_rss_bytes: ",
    ),
    "parity outputs that are not objects": (
        _each_ok(lambda item: item["parity"].update(outputs=[1, "x"])),
        "results.jsonl holds an invalid combination result (parity.outputs.0: ",
    ),
    "a latency of NaN": (
        lambda run: (run / "results.jsonl").write_text(
            (run / "results.jsonl").read_text().replace('"p50_ms": ', '"p50_ms": NaN, "x": ')
        ),
        "results.jsonl holds an invalid combination result (latency.p50_ms: ",
    ),
    "environment.gpus of strings": (
        lambda run: edit_run_json(run, _set_gpus),
        "run.json holds an invalid run metadata (environment.gpus.0: ",
    ),
    "latency ns as strings": (
        lambda run: _edit_parquet(run, "latency", lambda f: f.with_columns(pl.col("ns").cast(str))),
        "column 'ns' holds text values where integer values belong",
    ),
    "samples without t_s": (
        lambda run: _edit_parquet(run, "samples", lambda f: f.drop("t_s")),
        "column 't_s' is missing",
    ),
    "a combo_id that leaves the run directory": (
        lambda run: edit_results(run, lambda item: item.update(combo_id="../../etc/passwd")),
        "is not filesystem-safe",
    ),
}


@pytest.fixture(scope="module")
def good_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return cpu_run(root / "base", seed=1), cpu_run(root / "new", seed=2)


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", ["html", "md", "compare"])
def test_a_malformed_store_is_one_error_line(good_pair, tmp_path, capsys, case, command):
    import shutil

    damage, expected = MALFORMED[case]
    base, new = good_pair
    run = Path(shutil.copytree(new, tmp_path / "run"))
    damage(run)
    out = tmp_path / "out"
    if command == "compare":
        code, err = run_main(capsys, "compare", str(base), str(run))
    else:
        code, err = run_main(capsys, "report", str(run), "-f", command, "-o", str(out))
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert not out.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["report", "-f", "md"], ["compare", "--format", "json"]])
def test_standard_output_on_a_full_disk_is_one_error_line(good_pair, args):
    base, new = good_pair
    runs = [str(new)] if args[0] == "report" else [str(base), str(new)]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from infercmp.cli import main; main()",
                *args[:1],
                *runs,
                *args[1:],
            ],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: cannot write to standard output: [Errno 28] No space left on device"
    ]


# --------------------------------------------------------------------------- compare's options


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--threshold", "nan", "--threshold nan is not a percentage; give a number >= 0, e.g. 5"),
        ("--threshold", "inf", "--threshold inf is not a percentage; give a number >= 0, e.g. 5"),
        ("--threshold", "-1", "--threshold -1 is not a percentage; give a number >= 0, e.g. 5"),
        (
            "--noise-floor",
            "nan",
            "--noise-floor nan is not a percentage; give a number >= 0, e.g. 1",
        ),
        ("--seed", "-1", "--seed -1 is not a seed; give an integer from 0 to 2**63 - 1"),
        (
            "--seed",
            str(2**64),
            f"--seed {2**64} is not a seed; give an integer from 0 to 2**63 - 1",
        ),
        ("--resamples", "99", "--resamples 99 is out of range; use 100 to 1000000"),
        ("--resamples", str(10**12), f"--resamples {10**12} is out of range; use 100 to 1000000"),
    ],
)
def test_compare_refuses_options_that_switch_the_check_off(
    good_pair, capsys, option, value, message
):
    base, new = good_pair
    code, err = run_main(capsys, "compare", str(base), str(new), option, value)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {message}"]


# --------------------------------------------------------------------------- CSV


def test_csv_text_cells_cannot_become_spreadsheet_formulas(tmp_path):
    import csv
    import io

    from infercmp.report import load_runs, render_csv

    formulas = ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\t=x", "\r=x", "\n=x"]
    run = make_run(
        tmp_path,
        [
            Combo("onnxruntime", shape=(i + 1,), status="failed", error=f)
            for i, f in enumerate(formulas)
        ]
        + [Combo("pytorch", median_ms=-0.0 + 3.0)],
        model='=HYPERLINK("http://x")',
    )
    rows = list(csv.DictReader(io.StringIO(render_csv(load_runs([run])), newline="")))
    errors = [r["error"] for r in rows if r["status"] == "failed"]
    assert errors == ["'" + f.replace("\r", "\n") for f in formulas]
    assert all(r["model"] == '\'=HYPERLINK("http://x")' for r in rows)
    # Numbers stay numbers, a negative one included: only text is neutralised.
    ok = next(r for r in rows if r["status"] == "ok")
    assert float(ok["p50_ms"]) > 0 and not ok["p50_ms"].startswith("'")
