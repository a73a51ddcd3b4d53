"""Faults inside a run, injected on a test plugin: every finished combination stays on disk.

Each test runs `onnxruntime` first (it finishes before the fault) and then `pytorch`, whose
worker the fault hits; afterwards the run must be readable by `infercmp report`, say what
happened, and leave no worker process, temporary file or staging entry behind.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import test_reliability as support
from synthetic_runs import only_run, run_dirs
from test_reliability import FAULT_ENV, assert_report_renders
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.core.contract import Measurement
from infercmp.core.errors import InfercmpError
from infercmp.run.executors.base import BenchListener
from infercmp.run.loop import run_bench
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.sampler import default_samplers
from infercmp.store import run_store as results
from infercmp.store.run_store import RunStore
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

# Fixtures shared by the reliability modules.
plugin_site = support.plugin_site
reliability_plugins = support.reliability_plugins
isolated = support.isolated

ENGINES = ["onnxruntime", "pytorch"]
CLI = [sys.executable, "-c", "from infercmp.cli import main; main()"]
# Both engines on the fault-injecting plugin, short: the fault tests' common bench.
FAULTY_BENCH = [
    "bench", "rel-faulty", "-d", "cpu", "-e", "onnxruntime", "-e", "pytorch",
    "--warmup", "5", "--iters", "20",
]  # fmt: skip


def _bench_in_process(
    shared_cache, out: Path, monkeypatch, fault: str, measurement, listener=None
) -> tuple[str, RunStore]:
    """Plan and prepare with no fault (the parent computes references), then inject it."""
    plugin = get_plugin("rel-faulty")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ENGINES, ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    store = RunStore.create(out, plugin.name, {})
    monkeypatch.setenv(FAULT_ENV, fault)
    samplers, _ = default_samplers(gpu=False)
    status = run_bench(
        plugin, plan, artifacts, measurement, store, samplers=samplers, listener=listener
    )
    return status, RunStore.open(store.path)


def _first_ok_then(store: RunStore, status: str) -> str:
    first, second = store.results
    assert first.engine == "onnxruntime" and first.status == "ok", first.error
    assert first.iterations > 0 and not store.latency().is_empty()
    assert second.engine == "pytorch" and second.status == status, second.error
    return second.error or ""


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("load-raise", "failed", "RuntimeError: injected fault in load"),
        ("run-raise", "failed", "RuntimeError: injected fault in forward"),
    ],
)
def test_an_engine_that_raises_is_recorded_and_the_run_completes(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch, fault, status, message
):
    measurement = Measurement(warmup_iters=5, iters=20)
    run_status, store = _bench_in_process(
        shared_cache, tmp_path / "out", monkeypatch, fault, measurement
    )
    assert run_status == "complete" and store.status == "complete"
    assert message in _first_ok_then(store, status)
    assert_report_renders(store.path, tmp_path)
    isolated.assert_nothing_left(store.path)


def test_a_worker_hanging_in_load_is_killed_at_the_timeout(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch
):
    measurement = Measurement(warmup_iters=5, iters=20, timeout_s=4)
    run_status, store = _bench_in_process(
        shared_cache, tmp_path / "out", monkeypatch, "load-hang", measurement
    )
    assert run_status == "complete"
    assert "4 s timeout" in _first_ok_then(store, "timeout")
    samples = store.samples()
    hung = samples.filter(samples["combo_id"] == store.results[1].combo_id)
    assert set(hung["phase"].unique()) <= {"start", "load"}  # it never got past loading
    assert_report_renders(store.path, tmp_path)
    isolated.assert_nothing_left(store.path)


def test_a_worker_killed_during_measurement_leaves_a_readable_run(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch
):
    """tests/integration/test_bench.py kills a worker too; this one checks everything left
    afterwards."""

    class KillPytorchWorker(BenchListener):
        killed = 0

        def phase(self, combo, phase):
            if phase == "measure" and combo.engine.name == "pytorch":
                for worker in isolated.workers():
                    worker.send_signal(signal.SIGKILL)
                    self.killed += 1

    listener = KillPytorchWorker()
    # "run-slow" makes each pytorch iteration take 0.2 s, so the kill lands mid-measurement.
    measurement = Measurement(warmup_iters=1, iters=200)
    run_status, store = _bench_in_process(
        shared_cache, tmp_path / "out", monkeypatch, "run-slow", measurement, listener
    )
    assert listener.killed == 1
    assert run_status == "complete"
    assert "SIGKILL" in _first_ok_then(store, "crashed")
    assert_report_renders(store.path, tmp_path)
    isolated.assert_nothing_left(store.path)


def _limit_address_space(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_a_worker_out_of_memory_is_recorded_as_oom(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch
):
    """The bench runs under an address-space limit (ulimit -v); the worker's model exceeds it."""
    plugin = get_plugin("rel-faulty")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ENGINES, ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)  # no fault here
    out = tmp_path / "out"
    proc = subprocess.run(
        [*CLI, *FAULTY_BENCH, "--out", str(out)],
        env={**os.environ, FAULT_ENV: "run-alloc"},
        preexec_fn=_limit_address_space(12 * 2**30),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a combination did not finish
    assert "1 of 2 combination(s) did not finish (1 oom)" in proc.stdout + proc.stderr
    store = RunStore.open(only_run(out))
    error = _first_ok_then(store, "oom")
    assert "allocate" in error
    assert_report_renders(store.path, tmp_path)
    isolated.assert_nothing_left(store.path)


# --------------------------------------------------------------------------- failing writes


@pytest.mark.parametrize(
    ("code", "partial"),
    [(errno.ENOSPC, True), (errno.EROFS, False)],
    ids=["disk-full", "read-only"],
)
def test_a_failing_results_write_is_one_line_exit_1_and_keeps_earlier_results(
    reliability_plugins, isolated, tmp_path, monkeypatch, code, partial
):
    """The disk fills up (a write stops half-way) or turns read-only after the first result."""
    real_write, real_append = results.write_atomic, results._append
    state = {"committed": 0}

    def counting_append(log: Path, line: bytes) -> None:
        real_append(log, line)
        state["committed"] += 1

    def failing_write(path: Path, content) -> None:
        if state["committed"] < 1:
            return real_write(path, content)

        def fail(fh) -> None:
            if partial:  # the data lands in the temporary file, then the disk is full
                fh.write(b"x" * 4096)
            raise OSError(code, os.strerror(code), str(path))

        real_write(path, fail)

    monkeypatch.setattr(results, "write_atomic", failing_write)
    monkeypatch.setattr(results, "_append", counting_append)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [*FAULTY_BENCH, "--out", str(out)],
    )
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert os.strerror(code) in errors[0]
    assert "1 finished combination(s) are saved in" in errors[0]
    assert "Traceback" not in result.output
    monkeypatch.setattr(results, "write_atomic", real_write)  # the disk has room again
    run = only_run(out)
    store = RunStore.open(run)
    assert store.status == "running"  # run.json could not be updated either
    (first,) = store.results
    assert first.engine == "onnxruntime" and first.status == "ok"
    assert_report_renders(run, tmp_path)
    isolated.assert_nothing_left(run)


def test_a_results_dir_that_cannot_be_written_at_the_start_leaves_no_run_dir(
    reliability_plugins, isolated, tmp_path, monkeypatch
):
    def full(path: Path, content) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(results, "write_atomic", full)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["bench", "rel-faulty", "-d", "cpu", "-e", "pytorch", "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "cannot write the run directory" in result.output
    assert "Traceback" not in result.output
    assert run_dirs(out) == []
    isolated.assert_nothing_left()


# --------------------------------------------------------------------------- signals


def _start_bench(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "bench", "rel-faulty", "-d", "cpu", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _summary_len(out: Path) -> int:
    runs = run_dirs(out)
    try:
        return len(RunStore.open(runs[0]).results) if runs else 0
    except (OSError, ValueError, InfercmpError):
        return 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_parent_stopped_by_a_signal_keeps_finished_results(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch, signum
):
    plugin = get_plugin("rel-faulty")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ENGINES, ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    out = tmp_path / "out"
    monkeypatch.setenv(FAULT_ENV, "run-slow")  # the pytorch combination takes its time
    proc = _start_bench(
        out, "-e", "onnxruntime", "-e", "pytorch", "--warmup", "1", "--iters", "200"
    )
    try:
        _wait_for(lambda: _summary_len(out) == 1, "the first combination")
        _wait_for(lambda: isolated.workers(), "the second worker")
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert [line for line in output.splitlines() if line.startswith("error:")] == [
        f"error: run interrupted; 1 finished combination(s) are saved in {only_run(out)}"
    ]
    store = RunStore.open(only_run(out))
    assert store.status == "interrupted"
    assert signal.Signals(signum).name in store.meta["detail"]
    (first,) = store.results
    assert first.engine == "onnxruntime" and first.status == "ok"
    assert_report_renders(store.path, tmp_path)
    isolated.assert_nothing_left(store.path)


def test_sigterm_while_preparing_cleans_the_cache_staging_and_makes_no_run(
    reliability_plugins, isolated, tmp_path, monkeypatch
):
    """With a fresh cache the bench prepares artifacts first; SIGTERM then must unwind."""
    cache = tmp_path / "fresh-cache"
    out = tmp_path / "out"
    mark = tmp_path / "preparing"
    # The plugin's module load blocks, so the signal lands during preparation for sure
    # (waiting for a staging directory raced a fast export).
    monkeypatch.setenv(FAULT_ENV, "load-slow")
    monkeypatch.setenv("INFERCMP_TEST_FAULT_MARK", str(mark))
    proc = _start_bench(out, "-e", "onnxruntime", "--cache-dir", str(cache))
    try:
        _wait_for(mark.exists, "the bench to start preparing")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert "error: stopped by SIGTERM while preparing" in output
    assert run_dirs(out) == []
    isolated.assert_nothing_left(cache_root=cache)


def test_a_killed_parent_takes_its_worker_with_it(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch
):
    """SIGKILL cannot be caught, but the worker must not measure on alone for minutes."""
    plugin = get_plugin("rel-faulty")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["pytorch"], ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    out = tmp_path / "out"
    monkeypatch.setenv(FAULT_ENV, "run-slow")
    proc = _start_bench(out, "-e", "pytorch", "--warmup", "1", "--iters", "200")
    try:
        _wait_for(lambda: isolated.workers(), "the worker")
        workers = isolated.workers()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        gone, alive = psutil.wait_procs(workers, timeout=20)
    finally:
        proc.kill()
    assert not alive, "the worker outlived its bench process"
    store = RunStore.open(only_run(out))
    assert store.status == "running" and store.abandoned


@pytest.mark.parametrize("how", ["bench-finishes", "bench-killed"])
def test_a_process_the_model_started_does_not_outlive_bench(
    reliability_plugins, isolated, shared_cache, tmp_path, monkeypatch, how
):
    """The worker's whole process group ends with it, whether bench ends or is SIGKILLed."""
    plugin = get_plugin("rel-faulty")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["pytorch"], ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    mark = tmp_path / "child.pid"
    monkeypatch.setenv(FAULT_ENV, "load-child")
    monkeypatch.setenv("INFERCMP_TEST_FAULT_MARK", str(mark))
    iters = "5" if how == "bench-finishes" else "200"
    proc = _start_bench(tmp_path / "out", "-e", "pytorch", "--warmup", "1", "--iters", iters)
    try:
        _wait_for(lambda: mark.exists() and mark.read_text(), "the model's child process")
        child = psutil.Process(int(mark.read_text()))
        if how == "bench-killed":
            proc.send_signal(signal.SIGKILL)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            tree = [(p.pid, p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
            raise AssertionError(f"bench did not end: {tree}") from None
        gone, alive = psutil.wait_procs([child], timeout=20)
    finally:
        proc.kill()
    assert not alive, f"the model's child process outlived bench ({how})"


def test_a_plugin_hanging_in_the_parent_is_cut_at_the_timeout(
    reliability_plugins, isolated, tmp_path, monkeypatch
):
    """bench's own calls into the plugin (the reference outputs) are bounded like workers."""
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(tmp_path / "cold-cache"))  # nothing cached
    monkeypatch.setenv(FAULT_ENV, "load-hang")
    started = time.monotonic()
    proc = _start_bench(tmp_path / "out", "-e", "pytorch", "--iters", "10", "--timeout", "3")
    output, _ = proc.communicate(timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2, output
    assert output.strip().splitlines()[-1] == (
        "error: model 'rel-faulty' at shape 2x4: computing the PyTorch reference outputs "
        "failed: did not finish within 3 s (--timeout); the plugin's code may hang"
    )
    assert not (tmp_path / "out").exists() or not run_dirs(tmp_path / "out")


def test_a_signal_between_worker_exit_and_commit_keeps_the_measured_combination(
    shared_cache, tmp_path
):
    """The window of issue 18: the worker has finished, its result is not committed yet."""
    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(
        plugin, [default_experiment(plugin.config)], ["onnxruntime", "pytorch"], ["cpu"], None
    )
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    store = RunStore.create(tmp_path, plugin.name, {})

    class SignalInTheGap(BenchListener):
        def worker_finished(self, combo, outcome):
            assert outcome.status == "ok"
            os.kill(os.getpid(), signal.SIGTERM)  # handled here, before the commit

    status = run_bench(
        plugin, plan, artifacts, Measurement(warmup_iters=2, iters=30), store,
        listener=SignalInTheGap(), samplers=[],
    )  # fmt: skip
    assert status == "interrupted"
    saved = RunStore.open(store.path)
    assert saved.status == "interrupted"
    (result,) = saved.results  # the first combination, fully measured; the second never ran
    assert (result.engine, result.status, result.iterations) == ("onnxruntime", "ok", 30)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"])
def test_a_signal_before_the_first_combination_marks_the_run_interrupted(
    shared_cache, tmp_path, monkeypatch, signame
):
    """Between making the run directory and starting the first worker: no run stays "running"."""
    from infercmp.cli import bench as bench_cli

    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    run = bench_cli._run_with_progress

    def signal_then_run(*args, **kwargs):  # the run directory exists; no worker has started
        os.kill(os.getpid(), getattr(signal, signame))
        return run(*args, **kwargs)

    monkeypatch.setattr(bench_cli, "_run_with_progress", signal_then_run)
    result = CliRunner().invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime", "-d", "cpu", "--iters", "10",
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: run interrupted; 0 finished combination(s) are saved in "
        f"{only_run(tmp_path / 'out')}"
    )
    assert RunStore.open(only_run(tmp_path / "out")).status == "interrupted"
