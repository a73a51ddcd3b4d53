"""The bench orchestrator end to end on the CPU: workers, skips, a killed worker, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from typer.testing import CliRunner

from infercmp import bench
from infercmp.cli import app
from infercmp.plugins import get_plugin
from infercmp.results import RunStore
from infercmp.shapes import default_experiment

FAST = ["--warmup", "5", "--iters", "50"]


@pytest.fixture
def runner(shared_cache, monkeypatch):
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    return CliRunner()


def _only_run(root):
    (run,) = list(root.iterdir())
    return RunStore.open(run)


def test_bench_runs_each_engine_in_a_worker_and_stores_everything(runner, tmp_path):
    result = runner.invoke(app, ["bench", "tiny-cnn", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    store = _only_run(tmp_path)
    assert store.status == "complete"
    by_key = {(r.engine, r.device): r for r in store.results}
    for engine in ("pytorch", "onnxruntime"):
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
    assert latency.filter(latency["phase"] == "total").height == 100
    samples = store.samples()
    assert samples.height > 0
    assert {"load", "measure"} <= set(samples["phase"].unique())
    assert "skipped" in result.output and "no CUDA device" in result.output


def test_a_worker_killed_mid_run_is_recorded_and_the_run_goes_on(shared_cache, tmp_path):
    plugin = get_plugin("tiny-two-io")
    plan = bench.plan_bench(
        plugin, [default_experiment(plugin.config)], ["pytorch", "onnxruntime"], ["cpu"], None
    )
    artifacts = bench.prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    store = RunStore.create(tmp_path, plugin.name, {})

    class KillFirstWorker(bench.BenchListener):
        killed = False

        def phase(self, combo, phase):
            if phase == "measure" and not self.killed:
                for child in psutil.Process().children(recursive=True):
                    if "infercmp.worker" in " ".join(child.cmdline()):
                        child.send_signal(signal.SIGKILL)
                        self.killed = True

    listener = KillFirstWorker()
    # A long measurement so the kill lands during it.
    measurement = bench.Measurement(warmup_iters=5, duration_s=30)
    status = bench.run_bench(
        plugin, plan, artifacts, measurement, store, listener=listener, samplers=[]
    )
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
    assert result.exit_code == 0, result.output
    (r,) = _only_run(tmp_path).results
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
        (["tiny-cnn", "-e", "tensorrt", "-s", "512,512,3"], "outside the TensorRT optimisation"),
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
    (r,) = _only_run(tmp_path).results
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
    store = _only_run(tmp_path)
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
    plan = bench.plan_bench(
        plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None
    )
    artifacts = bench.prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
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

    measurement = bench.Measurement(warmup_iters=5, iters=50)
    bench.run_bench(plugin, plan, artifacts, measurement, store, samplers=[Broken()])
    (result,) = RunStore.open(store.path).results
    assert result.status == "ok"
    assert any("broken sampler failed" in w and "sensor unplugged" in w for w in result.warnings)
