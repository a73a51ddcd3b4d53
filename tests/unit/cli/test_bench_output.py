"""bench's table, notes and exit verdict, from stored results (no worker runs)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from synthetic_runs import Combo, make_run

from infercmp.cli.bench import bench_table
from infercmp.run.session import verdict
from infercmp.store.run_store import RunStore

SHARED = "the first 3 iterations are 2.0x slower than the median: the warm-up may be too short"


def _results(tmp_path: Path, combos: list[Combo]) -> list:
    results = RunStore.open(make_run(tmp_path, combos)).results
    for r in results:
        r.parity = None  # the synthetic verdicts are report-shaped, not infercmp.core.parity's
    return results


def _text(table) -> str:
    out = Console(file=io.StringIO(), width=200, color_system=None)
    out.print(table)
    return out.file.getvalue()


def test_a_note_shared_by_several_rows_is_printed_once_and_referred_to(tmp_path):
    """Issue 23, D.27: the same sentence was repeated in a note for every combination."""
    results = _results(tmp_path, [Combo("pytorch"), Combo("onnxruntime"), Combo("openvino")])
    for r in results:
        r.warnings = [SHARED]
    results[1].warnings.append("onnxruntime's own warning")
    table, notes = bench_table(results)
    assert notes == [SHARED, "onnxruntime's own warning"]
    references = [line.split()[-1] for line in _text(table).splitlines() if "224x224x3" in line]
    assert references == ["[1]", "[1,2]", "[1]"]


def _server(engine: str, cut: int) -> Combo:
    load = {"batch": None, "concurrency": 1, "scenario": "server", "qps": 1000.0}
    load_result = {
        "how": "slots", "batch": 1, "slots": 1, "requests": 100_000 - cut, "cut": cut,
        "window_s": 100.0, "requests_per_s": 300.0, "items_per_s": 300.0,
    }  # fmt: skip
    return Combo(engine, load=load, load_result=load_result)


def test_an_overloaded_server_run_is_not_ok_and_makes_bench_exit_1(tmp_path):
    """Issue 23, A.3: 70,305 of 100,000 requests never started, and the row said `ok`, exit 0."""
    results = _results(tmp_path, [_server("pytorch", 0), _server("onnxruntime", 70_305)])
    table, notes = bench_table(results)
    text = _text(table)
    assert "offered/s" in text
    (row,) = [line for line in text.splitlines() if line.strip().startswith("onnxruntime")]
    assert " overloaded " in row and " 1,000 " in row
    assert any("70,305 of 100,000 requests due in the window never started" in n for n in notes)
    assert verdict(results, tmp_path, ("ok", "skipped")) == (
        f"1 of 2 combination(s) did not hold their load (overloaded); see the notes above and "
        f"{tmp_path}"
    )
    assert verdict(results[:1], tmp_path, ("ok", "skipped")) is None
