"""The bench orchestrator end to end on the CPU: workers, skips, a killed worker, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from synthetic_runs import only_store

from infercmp.cli import app
from infercmp.core.contract import Measurement
from infercmp.run import loop
from infercmp.run.aggregate import outcome_to_result
from infercmp.run.executors.base import BenchListener
from infercmp.run.loop import run_bench
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.store.run_store import RunStore
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

FAST = ["--warmup", "5", "--iters", "50"]


def test_bench_runs_each_engine_in_a_worker_and_stores_everything(runner, tmp_path):
    result = runner.invoke(app, ["bench", "tiny-cnn", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    store = only_store(tmp_path)
    assert store.status == "complete"
    by_key = {(r.engine, r.device): r for r in store.results}
    cpu_engines = ("pytorch", "onnxruntime", "openvino")  # every installed engine with a CPU
    for engine in cpu_engines:
        ok = by_key[(engine, "cpu")]
        assert ok.status == "ok", ok.error
        assert ok.iterations == 50
        assert ok.latency["p50_ms"] > 0
        assert ok.parity["ok"] is True
        assert ok.peak_rss_bytes and ok.peak_rss_bytes > 10 * 2**20
    # No GPU here: every CUDA combination is listed as skipped, with the reason.
    for (_engine, device), r in by_key.items():
        if device == "cuda":
            assert r.status == "skipped"
            assert "no CUDA device" in r.error
    assert ("tensorrt", "cuda") in by_key
    latency = store.latency()
    assert set(latency["combo_id"].unique()) == {
        r.combo_id for r in store.results if r.status == "ok"
    }
    assert latency.filter(latency["phase"] == "total").height == 50 * len(cpu_engines)
    samples = store.samples()
    assert samples.height > 0
    assert {"load", "measure"} <= set(samples["phase"].unique())
    assert "skipped" in result.output and "no CUDA device" in result.output


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_a_worker_killed_mid_run_is_recorded_and_the_run_goes_on(shared_cache, tmp_path):
    plugin = get_plugin("tiny-two-io")
    plan = plan_bench(
        plugin, [default_experiment(plugin.config)], ["pytorch", "onnxruntime"], ["cpu"], None
    )
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    store = RunStore.create(tmp_path, plugin.name, {})

    class KillFirstWorker(BenchListener):
        killed = False

        def phase(self, combo, phase):
            if phase == "measure" and not self.killed:
                for child in psutil.Process().children(recursive=True):
                    if "infercmp.worker" in " ".join(child.cmdline()):
                        child.send_signal(signal.SIGKILL)
                        self.killed = True

    listener = KillFirstWorker()
    # A long measurement so the kill lands during it.
    measurement = Measurement(warmup_iters=5, duration_s=30)
    status = run_bench(plugin, plan, artifacts, measurement, store, listener=listener, samplers=[])
    assert listener.killed
    assert status == "complete"
    first, second = RunStore.open(store.path).results
    assert first.engine == "pytorch" and first.status == "crashed"
    assert "SIGKILL" in first.error
    assert second.engine == "onnxruntime" and second.status == "ok"


def test_a_hung_worker_is_killed_at_the_timeout(runner, tmp_path):
    result = runner.invoke(
        app,
        [
            "bench",
            "tiny-cnn",
            "-e",
            "onnxruntime",
            "-d",
            "cpu",
            "--warmup",
            "5",
            "--duration",
            "60",
            "--timeout",
            "8",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith("error: 1 of 1 combination(s) did not finish (1 timeout)")
    )
    (r,) = only_store(tmp_path).results
    assert r.status == "timeout"
    assert "8 s timeout" in r.error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny-cnn", "-s", "32,32"], "takes a rank-3 example shape"),
        (["tiny-cnn", "-e", "tensorflow"], "unknown engine 'tensorflow'"),
        (["tiny-cnn", "-d", "tpu"], "unknown device 'tpu'"),
        (["tiny-cnn", "-p", "int4"], "unknown precision 'int4'"),
        (["tiny-cnn", "--iters", "0"], "--iters must be a positive integer"),
        (["tiny-cnn", "--duration", "-1"], "--duration must be a positive number"),
        (["tiny-cnn", "--iters", "5", "--duration", "1"], "either --iters or --duration"),
        (["tiny-cnn", "--warmup", "soon"], "--warmup 'soon'"),
        (["tiny-cnn", "-e", "tensorrt", "-s", "512,512,3"], "height=512, outside [16, 128]; input"),
        (["tiny-cnn", "-e", "pytorch[cuda_graph]"], "is not key=value"),
        (["tiny-cnnn"], "unknown model 'tiny-cnnn'; did you mean 'tiny-cnn'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(runner, tmp_path, args, message):
    result = runner.invoke(app, ["bench", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_engine_options_reach_the_worker_and_the_results(runner, tmp_path):
    result = runner.invoke(
        app,
        [
            "bench",
            "tiny-two-io",
            "-d",
            "cpu",
            "-e",
            "onnxruntime[intra_op_threads=1]",
            *FAST,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    (r,) = only_store(tmp_path).results
    assert r.status == "ok"
    assert r.options["intra_op_threads"] == 1
    assert "intra_op_threads_1" in r.combo_id
    # What the engine says of itself is kept with the numbers (which library, which providers).
    assert r.engine_info["providers"] == ["CPUExecutionProvider"]
    assert r.engine_info["onnxruntime"]


def test_sigint_keeps_finished_combinations_and_marks_the_run(shared_cache, tmp_path):
    env = {**os.environ, "INFERCMP_CACHE_DIR": str(shared_cache.root)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from infercmp.cli import main; main()",
            "bench",
            "tiny-cnn",
            "-d",
            "cpu",
            "-e",
            "onnxruntime",
            "-e",
            "pytorch",
            "--warmup",
            "5",
            "--duration",
            "4",
            "--out",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Wait until the first combination is stored, then interrupt during the second.
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = list(tmp_path.glob("*/results.jsonl"))
        if runs and '"onnxruntime"' in runs[0].read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "interrupted" in output
    store = only_store(tmp_path)
    assert store.status == "interrupted"
    (first,) = store.results
    assert first.engine == "onnxruntime" and first.status == "ok"
    assert not [
        p
        for p in psutil.Process().children(recursive=True)
        if "infercmp.worker" in " ".join(p.cmdline())
    ]


def test_a_sampler_that_breaks_is_reported_beside_the_numbers(shared_cache, tmp_path):
    plugin = get_plugin("tiny-two-io")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    store = RunStore.create(tmp_path, plugin.name, {})

    class Broken:
        name = "broken"

        def unavailable_reason(self):
            return None

        def open(self, pid):
            pass

        def read(self):
            raise RuntimeError("sensor unplugged")

        def close(self):
            pass

    measurement = Measurement(warmup_iters=5, iters=50)
    run_bench(plugin, plan, artifacts, measurement, store, samplers=[Broken()])
    (result,) = RunStore.open(store.path).results
    assert result.status == "ok"
    assert any("broken sampler failed" in w and "sensor unplugged" in w for w in result.warnings)


ENCODER_MISMATCH = ["tiny-encoder", "-s", "8,128;8,64", "-d", "cpu"]  # the inputs disagree
ENCODER_ERROR = (
    "error: model 'tiny-encoder' at shape 8x128_8x64: computing the PyTorch reference outputs "
    "failed: RuntimeError: For mask_type == 1 mask shape should be (B, L)"
)


def test_a_model_that_raises_is_one_line_naming_model_shape_and_step(runner, tmp_path):
    result = runner.invoke(app, ["bench", *ENCODER_MISMATCH, "--out", str(tmp_path), *FAST])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [ENCODER_ERROR]
    assert not list(tmp_path.iterdir())  # nothing measured: no run directory
    debug = runner.invoke(app, ["--debug", "bench", *ENCODER_MISMATCH, *FAST])
    assert "Traceback (most recent call last)" in debug.output
    assert "mask_type == 1" in debug.output


def test_a_model_that_raises_at_one_shape_leaves_the_others_to_run(runner, tmp_path):
    args = ["bench", *ENCODER_MISMATCH, "-s", "8,64;8,64", "-e", "pytorch", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 1, result.output
    bad, good = sorted(only_store(tmp_path).results, key=lambda r: r.status != "failed")
    assert (bad.shape_label, bad.status, bad.phase) == ("8x128_8x64", "failed", "artifacts")
    assert bad.error == ENCODER_ERROR.removeprefix("error: ")
    assert (good.shape_label, good.status) == ("8x64_8x64", "ok")
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith("error: 1 of 2 combination(s) did not finish (1 failed)")
    )


def test_every_combination_failing_exits_1_with_a_count(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime[fp16_model=/nonexistent.onnx]", "-p", "fp16",
              "-d", "cpu", "--out", str(tmp_path), *FAST],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith("error: 1 of 1 combination(s) did not finish (1 failed)")
    )
    (r,) = only_store(tmp_path).results
    assert r.status == "failed" and r.phase == "load" and "Traceback" in r.traceback
    # The failed worker's files stay, for a replay in the foreground.
    kept = tmp_path / only_store(tmp_path).path.name / "workers"
    (workdir,) = kept.iterdir()
    assert {p.name for p in workdir.iterdir()} >= {"spec.json", "worker.log", "result.json"}


def test_a_misspelt_engine_option_is_refused_before_anything_runs(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime[graph_optimisation_level=basic]",
              "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: engine 'onnxruntime': no option 'graph_optimisation_level' (known options: "
    )
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_repeats_run_in_fresh_processes_interleaved(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime", "-e", "pytorch", "-d", "cpu",
              "--repeat", "3", "--out", str(tmp_path), "--warmup", "5", "--iters", "30"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = only_store(tmp_path)
    for r in store.results:
        assert r.status == "ok"
        assert [p.process for p in r.processes] == [0, 1, 2]
        assert len({p.pid for p in r.processes}) == 3  # three fresh processes
        assert r.iterations == 90
        assert r.ci_method == "hierarchical bootstrap over processes, then iterations"
        assert r.latency["ci_low_ms"] <= r.latency["p50_ms"] <= r.latency["ci_high_ms"]
        if len(os.sched_getaffinity(0)) >= 2:  # the CPU placement, before and after each process
            assert all(len(p.cpu_handoff_ns) == 2 for p in r.processes)
            assert all(0 < ns < 1e6 for p in r.processes for ns in p.cpu_handoff_ns)
    latency = store.latency()
    counts = latency.filter(latency["phase"] == "total").group_by("combo_id", "process").len()
    assert sorted(counts["len"].to_list()) == [30] * 6
    # Interleaved: every combination's process 0 started before any process 1.
    starts = sorted((s, r.engine, p.process) for r in store.results for p, s in
                    zip(r.processes, _process_starts(store, r)))  # fmt: skip
    assert [p for _, _, p in starts] == [0, 0, 1, 1, 2, 2]
    # The report shows each process's median beside the pooled one.
    report = runner.invoke(app, ["report", str(store.path), "-f", "md"])
    assert report.exit_code == 0, report.output
    header = next(line for line in report.output.splitlines() if line.startswith("| engine"))
    assert "p50 per process" in header
    row = next(line for line in report.output.splitlines() if line.startswith("| onnxruntime"))
    assert row.count(" / ") == 2  # three medians


def _process_starts(store, result) -> list[float]:
    """When each process of a combination first reported a sampler reading."""
    import polars as pl

    samples = store.samples().filter(pl.col("combo_id") == result.combo_id)
    firsts = samples.group_by("process").agg(pl.col("time").min().alias("first")).sort("process")
    return firsts["first"].to_list()


def test_an_output_contradicting_the_config_is_caught_whichever_engines_run(shared_cache):
    """Export checked output shapes; `bench -e pytorch` alone did not (issue 14)."""
    from infercmp.models.tiny_cnn import TinyCNN
    from infercmp.workload.config import parse_config

    class WrongOutputs(TinyCNN):
        name = "wrong-outputs"

        def load_config(self):
            data = TinyCNN().config.model_dump()
            data["outputs"][0]["shape"]["runtime"] = [-1, 7]  # the module gives 10 classes
            return parse_config({**data, "name": "wrong-outputs"}, "wrong-outputs")

    plugin = WrongOutputs()
    experiment = default_experiment(plugin.config)
    plan = plan_bench(plugin, [experiment], ["pytorch"], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    error = artifacts.reference_errors[experiment.label, None]
    assert error.startswith(
        f"model 'wrong-outputs' at shape {experiment.label}: computing the PyTorch reference "
        "outputs failed: output 'logits' has shape [1, 10]"
    )
    assert error.endswith("but the config's runtime shape is [-1, 7]")
    assert not artifacts.anything_to_run(plan)


def test_a_shape_outside_the_profile_is_a_warning_for_every_engine(runner, tmp_path):
    result = runner.invoke(
        # A cache of its own: tiny-cnn at another shape must not enter the shared one.
        app, ["bench", "tiny-cnn", "-s", "512,512,3", "-e", "onnxruntime", "-d", "cpu",
              "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "note: --shape 512x512x3: input 'image' has height=512, outside [16, 128]; input 'image' "
        "has width=512, outside [16, 128]"
    ) in " ".join(result.output.split())


def test_a_combination_that_fails_parity_exits_1_with_a_count_and_rows_print_as_they_land(
    runner, tmp_path, monkeypatch
):
    """Issue 23, A.2: bench exited 0 when a combination's outputs were wrong; D.24: nothing was
    shown until every combination had finished."""
    real = outcome_to_result

    def wrong_outputs(*args, **kwargs):  # the worker's parity verdict, as a wrong engine gets
        result, latency, samples = real(*args, **kwargs)
        result.parity = {**result.parity, "ok": False}
        return result, latency, samples

    monkeypatch.setattr(loop, "outcome_to_result", wrong_outputs)
    args = ["bench", "tiny-cnn", "-e", "onnxruntime", "-d", "cpu", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 1, result.output
    lines = [line.strip() for line in result.output.strip().splitlines()]
    assert lines[-1] == (
        "error: 1 of 1 combination(s) failed parity (outputs differ from PyTorch beyond "
        f"tolerance); see the notes above and {only_store(tmp_path).path}"
    )
    landed = next(i for i, line in enumerate(lines) if line.startswith("onnxruntime cpu fp32"))
    assert landed < lines.index("infercmp bench")  # before the table, as it finished
    assert lines[landed].startswith("onnxruntime cpu fp32 32x32x3: ok, p50 ms ")
    assert "parity FAIL " in lines[landed]
