"""The report: summary rows, md/csv/json content, merged runs, escaping, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from synthetic_runs import XSS, Combo, cpu_run, edit_results, make_run, run_main, server_combo
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.report import (
    load_runs,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    summary_rows,
)
from infercmp.report.html.page import script_json

runner = CliRunner()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cpu = cpu_run(root)
    gpu = make_run(
        root,
        [
            Combo("pytorch", device="cuda", median_ms=2.0),
            Combo("tensorrt", device="cuda", precision="fp16", median_ms=0.5),
        ],
        host="gpu-box",
        gpus=["NVIDIA H200"],
        seed=1,
    )
    return root, cpu, gpu


def test_summary_rows_have_statistics_and_speedup(runs_root):
    _, cpu, _ = runs_root
    rows = summary_rows(load_runs([cpu]))
    by = {(r["engine"], r["shape"]): r for r in rows}
    ort = by[("onnxruntime", "224x224x3")]
    assert ort["status"] == "ok"
    assert ort["p50_ms"] == pytest.approx(8.0, rel=0.05)
    assert ort["ci_low_ms"] <= ort["p50_ms"] <= ort["ci_high_ms"]
    assert ort["speedup"] == pytest.approx(12.0 / 8.0, rel=0.05)
    assert ort["baseline"] == "pytorch cpu fp32"
    assert by[("pytorch", "224x224x3")]["speedup"] == pytest.approx(1.0)
    assert ort["outliers"] >= 3  # planted outliers are counted, and kept in the statistics
    assert ort["parity_ok"] is True
    skipped = by[("tensorrt", "224x224x3")]
    assert skipped["status"] == "skipped"
    assert "no CUDA GPU" in skipped["error"]
    assert skipped["p50_ms"] is None and skipped["speedup"] is None


def test_baseline_option_changes_reference(runs_root):
    _, cpu, _ = runs_root
    rows = summary_rows(load_runs([cpu]), baseline_engine="onnxruntime")
    pt = next(r for r in rows if r["engine"] == "pytorch" and r["shape"] == "224x224x3")
    assert pt["speedup"] == pytest.approx(8.0 / 12.0, rel=0.05)


def test_markdown_tables(runs_root):
    _, cpu, _ = runs_root
    text = render_markdown(load_runs([cpu]))
    assert "### shape 224x224x3" in text and "### shape 320x320x3" in text
    table = [line for line in text.splitlines() if line.startswith("| onnxruntime")]
    assert len(table) == 2
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "1.50×" in table[0]
    assert "skipped: no CUDA GPU is visible on this machine" in text


def test_csv_and_json_agree(runs_root):
    _, cpu, _ = runs_root
    runs = load_runs([cpu])
    rows = list(csv.DictReader(io.StringIO(render_csv(runs))))
    doc = json.loads(render_json(runs))
    assert len(rows) == len(doc["rows"]) == 5
    assert doc["format"] == "infercmp-report-summary"
    assert doc["runs"][0]["host"] == "bench-host"
    for row, obj in zip(rows, doc["rows"]):
        assert row["engine"] == obj["engine"]
        if obj["p50_ms"] is not None:
            assert float(row["p50_ms"]) == pytest.approx(obj["p50_ms"])
        else:
            assert row["p50_ms"] == ""


def test_merged_runs_are_labelled_by_host_and_gpu(runs_root):
    _, cpu, gpu = runs_root
    runs = load_runs([cpu, gpu])
    rows = summary_rows(runs)
    assert {r["host"] for r in rows} == {"bench-host", "gpu-box"}
    trt = next(r for r in rows if r["engine"] == "tensorrt" and r["status"] == "ok")
    assert trt["gpu"] == "NVIDIA H200"
    # Speedup stays within a run: TensorRT fp16 against PyTorch on the same GPU machine.
    assert trt["speedup"] == pytest.approx(2.0 / 0.5, rel=0.05)
    md = render_markdown(runs)
    assert "gpu-box (NVIDIA H200)" in md and "bench-host (no GPU)" in md
    page = render_html(runs)
    assert "gpu-box (NVIDIA H200)" in page and "bench-host (no GPU)" in page


def test_html_is_one_offline_file(runs_root):
    _, cpu, gpu = runs_root
    page = render_html(load_runs([cpu, gpu]))
    assert page.count("plotly.js v") <= 2  # the library's own banner, embedded once
    assert len(re.findall(r"<script\b", page)) == 3  # plotly, figure data, page script
    assert "cdn.plot.ly" not in page.split("<script>", 1)[0]
    assert 'src="http' not in page and "src='http" not in page
    for text in ("Latency distribution", "Latency over iterations", "Process memory (RSS)"):
        assert text in page
    assert "outliers (beyond 3" in page and "flagged (red ×)" in page
    assert "options: defaults" in page
    assert len(page) < 8_000_000


def test_cpu_only_run_hides_gpu_charts_with_a_note(runs_root):
    _, cpu, _ = runs_root
    page = render_html(load_runs([cpu]))
    assert page.count("not shown: no GPU was sampled") == 4  # VRAM and GPU %, two shapes
    figures = json.loads(re.search(r'id="infercmp-figures">(.*?)</script>', page, re.S).group(1))
    titles = [f["layout"]["title"]["text"] for f in figures.values()]
    assert "GPU utilisation" not in titles


def test_plugin_names_are_escaped_everywhere(tmp_path):
    run = make_run(
        tmp_path,
        [
            Combo("pytorch", options={"note": XSS}),
            Combo("onnxruntime", status="failed", error=f"boom {XSS}"),
        ],
        model=f"evil{XSS}",
        input_name=f"<script>{XSS}",
        host=f"h{XSS}",
    )
    runs = load_runs([run])
    page = render_html(runs)
    assert "<script>window.__pwned" not in page
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in page
    data = re.search(r'id="infercmp-figures">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data
    json.loads(data)
    md = render_markdown(runs)
    assert "<script>" not in md and "</script>" not in md
    assert "&lt;/script&gt;" in md


def test_script_json_cannot_close_its_element():
    text = script_json({"name": "</script><!--", "x": "\u2028&"})
    assert "</" not in text and "<!--" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><!--", "x": "\u2028&"}


def test_long_series_are_downsampled_for_drawing_only(tmp_path):
    run = make_run(tmp_path, [Combo("pytorch", iterations=50_000)])
    runs = load_runs([run])
    page = render_html(runs)
    assert "every statistic uses all samples" in page
    row = summary_rows(runs)[0]
    assert row["iterations"] == 50_000
    assert row["outliers"] >= 3
    assert len(page) < 7_000_000


def test_cli_report_formats(runs_root, tmp_path):
    root, cpu, gpu = runs_root
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(cpu), str(gpu), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["report", str(cpu), "--format", "md"])
    assert result.exit_code == 0 and "### shape 224x224x3" in result.output
    result = runner.invoke(app, ["report", "--runs-dir", str(root), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["runs"][0]["path"] == str(gpu)  # the latest run
    csv_out = tmp_path / "s.csv"
    result = runner.invoke(app, ["report", str(cpu), "-o", str(csv_out)])
    assert result.exit_code == 0 and csv_out.read_text().startswith("run,host,")


def test_cli_report_bad_inputs(tmp_path, capsys):
    def run(*args):
        return run_main(capsys, *args)

    code, err = run("report", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err
    code, err = run("report", str(tmp_path))
    assert code == 2 and "not an infercmp run directory" in err
    code, err = run("report", "--runs-dir", str(tmp_path / "none"))
    assert code == 2 and "infercmp bench" in err
    code, err = run("report", str(tmp_path), "--format", "pdf")
    assert code == 2 and "--format 'pdf'" in err


def test_overview_reads_the_real_environment_keys():
    """Cores, RAM and the driver come from collect_environment()'s own keys."""
    from infercmp.report.html.facts import cpu_text as _cpu_text
    from infercmp.report.html.facts import gpu_text as _gpu_text
    from infercmp.run.environment import collect_environment

    env = collect_environment()
    text = _cpu_text(env)
    cores = env["cpu_physical_cores"] or env["cpu_logical_cores"]
    assert f"{cores} cores" in text
    assert f"{env['ram_total_bytes'] / 2**30:.0f} GiB RAM" in text
    # A GPU entry as collect_environment() writes it (this machine may have none).
    env["gpus"] = [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "driver_version": "580.159.04",
            "cuda_driver_version": "13.0",
            "memory_total_bytes": 150754820096,
            "compute_capability": "9.0",
        }
    ]
    assert _gpu_text(env) == "NVIDIA H200 (140 GiB), driver 580.159.04"
    env["cpu_logical_cores"], env["cpu_physical_cores"], env["cpu_affinity_cores"] = 16, 8, 4
    assert "8 cores / 16 threads (4 usable by this process)" in _cpu_text(env)


def test_gpu_time_column_and_tuned_baseline(tmp_path):
    """CUDA-event medians get a column; a tuned PyTorch config is compared to the plain one."""
    run = make_run(
        tmp_path,
        [
            Combo("pytorch", device="cuda", median_ms=3.0),
            Combo("pytorch", device="cuda", median_ms=1.0, options={"cuda_graph": True}),
            Combo("onnxruntime", device="cuda", median_ms=1.5),
        ],
        gpus=["NVIDIA H200"],
    )
    # Device statistics as the worker writes them, from the CUDA-event clock.
    edit_results(
        run,
        lambda item: item.update(
            device_latency=dict(item["latency"], p50_ms=item["latency"]["p50_ms"] * 0.9)
        ),
    )
    runs = load_runs([run])
    rows = summary_rows(runs)
    graph = next(r for r in rows if "cuda_graph=on" in r["options"])
    assert graph["device_p50_ms"] == pytest.approx(graph["p50_ms"] * 0.9)
    assert graph["speedup"] == pytest.approx(3.0, rel=0.05)
    assert graph["baseline"] == "pytorch cuda fp32"
    header = '<th class="num">GPU p50 <small'
    assert header in render_html(runs)
    assert "| GPU p50 |" in render_markdown(runs)
    assert "device_p50_ms" in render_csv(runs).splitlines()[0]
    # A CPU-only run keeps the table narrow.
    cpu = cpu_run(tmp_path / "cpu")
    cpu_page = render_html(load_runs([cpu]))
    assert header not in cpu_page
    assert "peak VRAM" not in cpu_page and "J / request" not in cpu_page
    assert "GPU p50" not in render_markdown(load_runs([cpu]))


def test_energy_is_labelled_per_request_with_per_item_beside_it_for_batches(tmp_path):
    """Energy is measured per timed iteration, which is one request: at batch 8 that is eight
    items. Every format says "per request", and gives per item where a request holds several."""
    combos = [Combo("pytorch", device="cuda"), Combo("tensorrt", device="cuda", precision="fp16")]
    batched = make_run(tmp_path / "batched", combos, gpus=["NVIDIA H200"])

    def at_batch_8(item):
        if item["engine"] == "tensorrt":
            item["runtime_shapes"] = {"image": [8, 224, 224, 3]}

    edit_results(batched, at_batch_8)
    runs = load_runs([batched])
    rows = {r["engine"]: r for r in summary_rows(runs)}
    assert rows["tensorrt"]["energy_j_per_request"] == 0.5  # as stored
    assert rows["tensorrt"]["energy_j_per_item"] == pytest.approx(0.5 / 8)
    assert rows["pytorch"]["energy_j_per_item"] == rows["pytorch"]["energy_j_per_request"]
    markdown = render_markdown(runs)
    assert "| J/request | J/item |" in markdown and "| 0.5000 | 0.0625 |" in markdown
    header = next(csv.reader(io.StringIO(render_csv(runs))))
    assert {"energy_j_per_request", "energy_j_per_item"} <= set(header)
    assert "energy_j_per_inference" not in header
    assert json.loads(render_json(runs))["rows"][0].keys() >= {"energy_j_per_item"}
    page = render_html(runs)
    assert "J / request" in page and "J / item" in page and "J / inference" not in page
    # At batch 1 a request is one item: no second column repeating the first.
    single = load_runs([make_run(tmp_path / "single", combos, gpus=["NVIDIA H200"])])
    assert "J/request" in render_markdown(single) and "J/item" not in render_markdown(single)
    assert "J / item" not in render_html(single)


def test_unset_options_are_not_listed():
    from infercmp.report.runs import format_options

    assert format_options({"compile": None, "threads": None}) == "defaults"
    assert format_options({"cuda_graph": True, "threads": None}) == "cuda_graph=on"
    long = "/tmp/infercmp-cache/entries/onnx-precision/16dd504c680bb584ef0c29b0ed327727/model.onnx"
    assert format_options({"fp16_model": long}) == (
        "fp16_model=…/16dd504c680bb584ef0c29b0ed327727/model.onnx"
    )


def test_a_run_where_nothing_was_measured_says_so_instead_of_a_green_banner(tmp_path):
    run = make_run(
        tmp_path,
        [Combo("onnxruntime", device="cuda", status="skipped", error="no CUDA GPU is visible")],
    )
    page = render_html(load_runs([run]))
    assert "<b>Nothing was measured</b>: no combination produced a latency." in page
    assert "No noise warnings" not in page


def test_rows_show_only_the_options_that_apply_to_their_device(tmp_path):
    cuda_only = {"enable_cuda_graph": False, "cudnn_conv_algo_search": "EXHAUSTIVE"}
    run = make_run(
        tmp_path,
        [
            Combo("onnxruntime", options={**cuda_only, "intra_op_threads": 2}),
            Combo("onnxruntime", device="cuda", options={**cuda_only, "intra_op_threads": 2}),
            Combo("pytorch", options={"cuda_graph": False, "channels_last": True}),
        ],
    )
    rows = {(r["engine"], r["device"]): r["options"] for r in summary_rows(load_runs([run]))}
    assert rows == {
        ("onnxruntime", "cpu"): "intra_op_threads=2",
        ("onnxruntime", "cuda"): (
            "cudnn_conv_algo_search=EXHAUSTIVE, enable_cuda_graph=off, intra_op_threads=2"
        ),
        ("pytorch", "cpu"): "channels_last=on",
    }


def test_a_skipped_row_shows_the_options_asked_for(tmp_path):
    run = make_run(
        tmp_path, [Combo("pytorch", device="cuda", status="skipped", error="no CUDA GPU")]
    )
    edit_results(run, lambda item: item.update(variant="cuda_graph=true"))
    (row,) = summary_rows(load_runs([run]))
    assert row["options"] == "cuda_graph=true"


def test_the_environment_section_is_written_for_a_person(tmp_path):
    from synthetic_runs import edit_run_json

    run = cpu_run(tmp_path)

    def edit(info):
        info["environment"]["nvml"] = {
            "available": False,
            "reason": "NVMLError_LibraryNotFound: NVML Shared Library Not Found",
        }
        info["environment"]["python_implementation"] = "CPython"
        info["settings"] = {
            "experiments": ["224x224x3", "320x320x3"],
            "measurement": {
                "warmup_iters": None,
                "warmup_seconds": 1.0,
                "iters": None,
                "duration_s": None,
                "ci_target": 0.01,
                "min_iters": 100,
                "max_seconds": 2.0,
                "timeout_s": 600.0,
                "device_resident": False,
            },
            "sample_hz": 20.0,
            "exporter": "dynamo",
        }

    edit_run_json(run, edit)
    page = render_html(load_runs([run]))
    section = page[page.index('<section id="environment">') :]
    section = section[: section.index("</section>")]
    import html

    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", section)).split())
    for said in (
        "none found no NVIDIA driver is installed",
        "Python 3.11.2 (CPython)",
        "shapes 224x224x3, 320x320x3",
        "warm-up 1 s",
        "measured until the median's 95% CI is within ±1% (at least 100 iterations, at most 2 s)",
        "worker timeout 600 s",
        "inputs copied from the host on every call",
        "sampling 20 readings per second",
        "exporter dynamo",
    ):
        assert said in text, (said, text)
    for raw in ("NVMLError", "warmup_iters", "None", "available", "python_executable"):
        assert raw not in text, (raw, text)


def test_a_load_run_that_did_not_hold_its_load_is_not_ok_and_never_the_best(tmp_path):
    """Issue 23, A.3: 70,305 of 100,000 requests never started, yet the row said `ok` and the
    report named it the best within the SLO; the chosen rate was only inside a note."""
    run = make_run(
        tmp_path,
        [
            server_combo("pytorch", 8.0, chose=500.0),
            server_combo("onnxruntime", 4.0, chose=1000.0, cut=70_305),
            server_combo("openvino", 5.0, chose=800.0, p99=35.0),
        ],
    )
    runs = load_runs([run])
    by = {r["engine"]: r for r in summary_rows(runs)}
    assert by["pytorch"]["status"] == "ok" and by["pytorch"]["qps"] == 500.0
    ort, ov = by["onnxruntime"], by["openvino"]
    assert ort["status"] == "overloaded"
    assert "70,305 of 100,000 requests due in the window never started" in ort["error"]
    assert ov["status"] == "overloaded" and "missed the p99 <= 20 ms SLO" in ov["error"]
    # Measured at other offered rates (and overloaded): no speedup, and the reason.
    assert ort["speedup"] is None and ort["speedup_note"].startswith("overloaded")
    assert ov["speedup"] is None
    markdown = render_markdown(runs)
    assert "offered req/s" in markdown and "| 500.0 |" in markdown
    assert "pytorch: best with p99 within 20 ms" in markdown
    assert "tiny-cnn: onnxruntime: best" not in markdown
    assert "no point held its load" in markdown
    rows = list(csv.DictReader(io.StringIO(render_csv(runs))))
    assert {r["engine"]: r["qps"] for r in rows} == {
        "pytorch": "500.0", "onnxruntime": "1000.0", "openvino": "800.0"
    }  # fmt: skip
    document = json.loads(render_json(runs))
    assert {r["engine"]: r["status"] for r in document["rows"]}["onnxruntime"] == "overloaded"
    assert "onnxruntime" not in " ".join(document["curves"]["best"]["tiny-cnn: onnxruntime"])
    html = render_html(runs)
    assert ">overloaded</span>" in html and "offered" in html


def test_a_speedup_under_cpu_contention_is_marked_and_the_remedy_is_the_engines_own(tmp_path):
    """Issue 23, A.6: PyTorch's threads beside 1.3 busy CPUs measured 215.6 ms against 2.13 ms
    on one thread, and the report showed a green 71.66x with "pin the CPU/GPU clocks"."""
    run = make_run(
        tmp_path,
        [
            Combo("pytorch", median_ms=215.6, background_cpus=1.3),
            Combo("pytorch", median_ms=2.13, background_cpus=1.3, options={"threads": 1}),
            Combo("onnxruntime", median_ms=3.0, background_cpus=1.3),
        ],
    )
    runs = load_runs([run])
    rows = summary_rows(runs)
    plain = next(r for r in rows if r["engine"] == "pytorch" and r["options"] == "defaults")
    one = next(r for r in rows if r["engine"] == "pytorch" and r["options"] == "threads=1")
    ort = next(r for r in rows if r["engine"] == "onnxruntime")
    assert "measure pytorch[threads=1] too" in plain["warnings"]
    assert "measure onnxruntime[intra_op_threads=1] too" in ort["warnings"]
    assert "measure" not in one["warnings"]  # one thread already
    assert "GPU" not in plain["warnings"] + ort["warnings"]
    assert ort["speedup"] is not None
    assert ort["speedup_note"].startswith("not a result:")
    assert "under CPU contention" in ort["speedup_note"]
    markdown = render_markdown(runs)
    assert re.search(r"\| \d+\.\d\d× \(contended\) \|", markdown)
    html = render_html(runs)
    assert "faster" not in re.findall(r'<td class="num ([a-z]*)" title="against', html)
    assert "measure pytorch[threads=1] too" in html  # in the run's warnings too


def test_the_parity_column_sits_beside_the_status_so_a_wide_table_never_hides_it(runs_root):
    """Issue 23, D.27: at 1400 px the last column, parity, was scrolled out of sight."""
    _, cpu, _ = runs_root
    html = render_html(load_runs([cpu]))
    head = re.search(r"<table class=\"summary\"><thead><tr>(.*?)</tr>", html).group(1)
    titles = re.findall(r"<th[^>]*>([a-z0-9 ]+)", head)
    assert titles[:4] == ["configuration", "status", "parity ", "p50 "]


def test_merged_runs_of_two_models_keep_model_names_and_variant_labels(tmp_path):
    """Issue 23, D.28: two models' runs on one machine were both `pytorch · cpu · fp32 @ vm`
    and `[threads=1]` was lost, without a warning."""
    cnn = make_run(tmp_path, [Combo("pytorch"), Combo("onnxruntime")], model="tiny-cnn")
    encoder = make_run(
        tmp_path,
        [Combo("pytorch", options={"threads": 1}), Combo("onnxruntime")],
        model="tiny-encoder",
        seed=1,
    )
    runs = load_runs([cnn, encoder])
    labels = [c.label for run in runs for c in run.combinations]
    assert len(set(labels)) == len(labels), labels
    assert "tiny-encoder: pytorch · cpu · fp32 [threads=1] @ bench-host (no GPU)" in labels[2]
    assert labels[0].startswith("tiny-cnn: pytorch · cpu · fp32 @ bench-host (no GPU) ")
    html = render_html(runs)
    assert "tiny-encoder: pytorch · cpu · fp32 [threads=1]" in html
