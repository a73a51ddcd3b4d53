"""The profile section of reports (infercmp.report.profile): the module x engine table at a
depth in model order, the kind table, differences in words, and the md/csv/json/html hooks."""

from __future__ import annotations

import csv
import io
import json

import pytest
from profile_runs import RESNET_LIKE, add_profiles, record
from synthetic_runs import Combo, make_run

from infercmp.report import load_runs
from infercmp.report.formats import render_csv, render_json, render_markdown
from infercmp.report.html.page import render_html
from infercmp.report.profile import (
    aligned,
    differences,
    kind_rows,
    module_rows,
    profile_tables,
    words,
)
from infercmp.report.summary import combinations


@pytest.fixture()
def run(tmp_path):
    made = make_run(
        tmp_path / "runs",
        [Combo("pytorch", median_ms=4.0), Combo("onnxruntime", median_ms=2.2), Combo("openvino")],
    )
    return add_profiles(made, RESNET_LIKE)


def test_module_rows_at_a_depth():
    rows = module_rows(RESNET_LIKE["onnxruntime"], 1)
    assert list(rows) == ["bn1+relu (fused)", "layer1", "fc", "no module", "unexplained"]
    assert rows["layer1"] == pytest.approx(1.1)  # fused within layer1.0: one module at depth 1
    assert rows["unexplained"] == pytest.approx(2.3 - 2.1)
    deep = module_rows(RESNET_LIKE["onnxruntime"], 3)
    assert "layer1.0 (fused)" in deep
    pytorch = module_rows(RESNET_LIKE["pytorch"], 1)
    assert list(pytorch)[-3:] == ["fc", "(top level)", "unexplained"]


def test_rows_one_engine_fused_are_merged_in_every_column():
    eager = {"layer1.0.conv1": 1.0, "layer1.0.bn1": 0.5, "layer1.1.conv1": 2.0, "fc": 0.1}
    fused = {"layer1.0 (fused)": 0.8, "layer1.1.conv1": 1.5, "fc": 0.1}
    assert aligned([eager, fused]) == [
        {"layer1.0 (fused)": 1.5, "layer1.1.conv1": 2.0, "fc": 0.1},
        fused,
    ]
    # Fusions of siblings that share a module join into one group, in every column.
    columns = [{"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a+b (fused)": 1.0, "c": 1.0},
               {"a": 1.0, "b+c (fused)": 1.0, "d": 1.0}]  # fmt: skip
    assert aligned(columns) == [
        {"a+b+c (fused)": 3.0, "d": 1.0},
        {"a+b+c (fused)": 2.0},
        {"a+b+c (fused)": 2.0, "d": 1.0},
    ]
    # What no module explains is never merged into a module.
    assert aligned([{"no module": 1.0, "unexplained": 2.0}]) == [
        {"no module": 1.0, "unexplained": 2.0}
    ]


def test_cuda_rows_split_launch_gaps_from_host_overhead():
    cuda = record([(["conv1"], "conv/matmul", "k", 0.2)], wall=1.0, median=1.0, busy=0.25)
    rows = module_rows(cuda, 1)
    assert rows["launch gaps"] == pytest.approx(0.75)
    assert rows["unexplained"] == pytest.approx(0.05)
    assert kind_rows(cuda) == pytest.approx(
        {"conv/matmul": 0.2, "launch gaps": 0.75, "unexplained": 0.05}
    )


def test_the_aligned_table_and_its_words(run):
    (table,) = profile_tables(combinations(load_runs([run])), depth=1)
    assert len(table.labels) == 2  # openvino has none: said, not a column
    # PyTorch's bn1 joins onnxruntime's fusion of bn1 and relu: both columns stand for it.
    assert table.rows == ["conv1", "bn1+relu (fused)", "layer1", "fc", "(top level)",
                          "no module", "unexplained"]  # fmt: skip
    pytorch = table.labels.index(next(lbl for lbl in table.labels if "pytorch" in lbl))
    assert table.cell("layer1", pytorch) == "2.4 (57%)"  # of the 4.2 ms profiled call
    assert table.total_cells()[pytorch] == "4.2 / 4 (+5%)"
    lines = differences(table)
    assert lines[0].startswith("layer1: ") and "2.4 ms" in lines[0] and "1.1 ms" in lines[0]
    assert lines[1].startswith("bn1+relu (fused): ") and "0.2 ms" in lines[1]
    assert len(lines) == 3  # conv1 is in one column only
    said = words(table)
    assert any("layout conversions" in line for line in said)
    assert any("openvino" in line and "n/a" in line for line in said)


def test_reports_carry_the_section(run):
    runs = load_runs([run])
    md = render_markdown(runs)
    assert "### profile: tiny-cnn" in md and "| layer1 |" in md and "kind of work" in md
    document = json.loads(render_json(runs))
    (table,) = document["profiles"]
    assert {c["label"].split(" ")[0] for c in table["combinations"]} == {"pytorch", "onnxruntime"}
    rows = {r["engine"]: r for r in csv.DictReader(io.StringIO(render_csv(runs)))}
    assert float(rows["onnxruntime"]["profile_data_movement_ms"]) == pytest.approx(0.4)
    assert rows["openvino"]["profile_error"].startswith("n/a")
    html = render_html(runs)
    assert 'id="profile"' in html and "where the time goes" in html


def test_the_profilers_own_cost_is_shown_beside_the_closure(tmp_path):
    """A profile with the same calls timed unprofiled beside it says what the profiler added
    in the total row, the csv and the json."""
    made = make_run(tmp_path / "runs", [Combo("pytorch", median_ms=4.0)])
    measured = dict(RESNET_LIKE["pytorch"], unprofiled_median_ms=4.0, profiler_overhead=0.05)
    runs = load_runs([add_profiles(made, {"pytorch": measured})])
    (table,) = profile_tables(combinations(runs), depth=1)
    assert table.total_cells() == ["4.2 / 4 (+5%; profiler +5%)"]
    (row,) = csv.DictReader(io.StringIO(render_csv(runs)))
    assert float(row["profiler_overhead"]) == pytest.approx(0.05)
    assert float(row["profile_unprofiled_median_ms"]) == pytest.approx(4.0)
    (combo,) = json.loads(render_json(runs))["profiles"][0]["combinations"]
    assert combo["profiler_overhead"] == pytest.approx(0.05)


def test_reports_without_profiles_are_unchanged(tmp_path):
    runs = load_runs([make_run(tmp_path / "runs", [Combo("pytorch")])])
    assert "profile" not in render_markdown(runs)
    assert "profiles" not in json.loads(render_json(runs))
    assert "profile_error" not in render_csv(runs)
    assert 'id="profile"' not in render_html(runs)
