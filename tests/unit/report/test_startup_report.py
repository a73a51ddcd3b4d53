"""Start-up figures in the report: the "ready in" column and the "time to first answer"
section, from synthetic runs carrying the `startup` record bench stores."""

from __future__ import annotations

import csv
import io
import json

import pytest
from synthetic_runs import Combo, edit_results, make_run

from infercmp.report import open_run, render_csv, render_json, render_markdown
from infercmp.report.html.page import render_html
from infercmp.report.startup import STARTUP_COLUMNS, fmt_seconds, ready_fields, startup_rows
from infercmp.report.summary import COLUMNS, combinations
from infercmp.store.schema import CombinationResult


def times(ready: float, first: float = 30.0) -> dict:
    """A StartupTimes as stored: `ready` s to the first answer, first calls from `first` ms."""
    return {
        "process_to_load_s": 0.5, "load_s": 0.25, "prepare_s": 0.05, "first_inference_ms": first,
        "first_k_ms": [first, first / 2, first / 4, first / 4], "ready_s": ready,
    }  # fmt: skip


def start(export_s, export_hit, worker_ready, error=None) -> dict:
    worker = times(worker_ready) if error is None else None
    return {
        "export_s": export_s, "export_hit": export_hit, "convert_s": None, "convert_hit": None,
        "worker": worker, "ready_s": None if error else export_s + worker_ready, "error": error,
    }  # fmt: skip


COLD = {
    "as_run": times(0.9),
    "prepared": {"export_s": 0.01, "export_hit": True, "convert_s": None, "convert_hit": None},
    "cold": start(2.0, False, 1.5),
    "warm": start(0.01, True, 0.7),
    "caches_cleared": ["infercmp's artifact cache", "OpenVINO's model cache (CACHE_DIR)"],
    "not_cleared": "the OS page cache",
}


def with_startup(tmp_path, records: dict):
    """A synthetic run (PyTorch 10 ms, OpenVINO 5 ms) whose results carry records[engine]."""
    path = make_run(tmp_path, [Combo("pytorch", median_ms=10.0), Combo("openvino", median_ms=5.0)])

    def edit(item):
        result = item.get("result", item)
        result["startup"] = records.get(result["engine"])

    edit_results(path, edit)
    return open_run(path)


def test_the_ready_column_says_cold_and_warm_or_the_run_as_measured(tmp_path):
    run = with_startup(tmp_path, {"openvino": COLD, "pytorch": {"as_run": times(1.25)}})
    by_engine = {c.engine: c for c in combinations([run])}
    assert ready_fields(by_engine["openvino"])["ready_in"] == "3.5 s cold / 710 ms warm"
    assert ready_fields(by_engine["pytorch"]) == {
        "ready_in": "1.25 s", "ready_as_run_s": 1.25, "ready_cold_s": None, "ready_warm_s": None,
    }  # fmt: skip
    text = render_markdown([run])
    table = text.split("### shape")[1].split("###")[0]
    header = next(line for line in table.splitlines() if line.startswith("| engine"))
    assert "| ready in |" in header
    assert "3.5 s cold / 710 ms warm" in table and "| 1.25 s |" in table
    assert "Ready in is the time from the worker process's start" in text  # the legend
    rows = list(csv.DictReader(io.StringIO(render_csv([run]))))
    assert list(rows[0]) == COLUMNS + STARTUP_COLUMNS
    assert {r["engine"]: r["ready_cold_s"] for r in rows} == {"pytorch": "", "openvino": "3.5"}
    assert json.loads(render_json([run]))["rows"][1]["ready_warm_s"] == pytest.approx(0.71)


def test_time_to_first_answer_shows_each_start_step_by_step(tmp_path):
    run = with_startup(tmp_path, {"openvino": COLD})
    rows = {(r.label.split(" ")[0], r.start): r for r in startup_rows(combinations([run]))}
    assert set(rows) == {("openvino", "as run"), ("openvino", "cold"), ("openvino", "warm")}
    cold, warm, as_run = (
        rows["openvino", "cold"],
        rows["openvino", "warm"],
        rows["openvino", "as run"],
    )
    assert (cold.export, warm.export, as_run.export) == ("2 s (miss)", "10 ms (hit)", "10 ms (hit)")
    assert (cold.worker_start, cold.load, cold.prepare) == ("500 ms", "250 ms", "50 ms")
    # The first calls' mean (30+15+7.5+7.5)/4 = 15 ms against the 5 ms median.
    assert cold.first_k == "3.0x the median (4 calls)"
    assert cold.ready == "3.5 s" and cold.first_inference == "30 ms"
    section = render_markdown([run]).split("### time to first answer")[1]
    assert "| openvino · cpu · fp32 | 224x224x3 | cold | 2 s (miss) |" in section
    assert "cold cleared openvino: infercmp's artifact cache; OpenVINO's model cache" in section
    assert "never cleared: the OS page cache" in section
    page = render_html([run])
    assert '<section id="startup"><h2>Time to first answer</h2>' in page
    assert 'href="#startup"' in page and "3.0x the median (4 calls)" in page


def test_a_failed_pass_reads_failed_and_runs_without_startup_show_nothing(tmp_path):
    failed = {**COLD, "warm": start(0.01, True, 0.0, error="worker killed by SIGKILL")}
    run = with_startup(tmp_path / "a", {"openvino": failed})
    openvino = next(c for c in combinations([run]) if c.engine == "openvino")
    assert ready_fields(openvino)["ready_in"] == "3.5 s cold / failed warm"
    assert "failed: worker killed by SIGKILL" in render_markdown([run])
    plain = with_startup(tmp_path / "b", {})
    assert "ready in" not in render_markdown(
        [plain]
    ) and "time to first answer" not in render_markdown([plain])
    assert next(csv.reader(io.StringIO(render_csv([plain])))) == COLUMNS
    assert 'id="startup"' not in render_html([plain])


def test_the_stored_record_is_checked():
    base = {"combo_id": "m-pytorch-cpu-fp32-1", "model": "m", "engine": "pytorch",
            "device": "cpu", "precision": "fp32", "shape_label": "1", "status": "ok"}  # fmt: skip
    assert CombinationResult(**base, startup=COLD).startup == COLD
    with pytest.raises(ValueError, match="export_hit"):
        CombinationResult(**base, startup={"cold": {"export_hit": "yes"}})
    with pytest.raises(ValueError, match="ready_s"):
        CombinationResult(**base, startup={"as_run": {**times(1.0), "ready_s": -1}})


def test_seconds_read_as_ms_below_one_second():
    assert [fmt_seconds(v) for v in (None, 0.0123, 0.9994, 1.0, 12.345)] == [
        "–", "12 ms", "999 ms", "1 s", "12.3 s",
    ]  # fmt: skip


def test_benchs_own_table_shows_ready_in_only_after_cold():
    from infercmp.cli.bench import bench_table, row_line

    base = {"model": "m", "device": "cpu", "precision": "fp32", "shape_label": "1",
            "status": "ok"}  # fmt: skip
    cold = CombinationResult(**base, combo_id="a", engine="openvino", startup=COLD)
    plain = CombinationResult(**base, combo_id="b", engine="pytorch", startup={"as_run": times(1)})
    assert "ready in 3.5 s cold / 710 ms warm" in row_line(cold)
    assert "ready in" not in row_line(plain)
    headers = [c.header for c in bench_table([cold, plain])[0].columns]
    assert "ready in" in headers
    assert "ready in" not in [c.header for c in bench_table([plain])[0].columns]
