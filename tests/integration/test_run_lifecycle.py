"""One writer per run, and `bench --resume`: a crash, a kill or a second writer never leaves a
run unreadable, mixed or wrongly complete (issue 23: B.7-B.9, B.13, B.14, C.21, C.23, D.25)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from synthetic_runs import edit_run_json, only_run, only_store

from infercmp.cli import app
from infercmp.core.contract import Measurement
from infercmp.platform import gpus as devices
from infercmp.run.executors.base import BenchListener
from infercmp.run.loop import run_bench
from infercmp.run.plan import plan_bench
from infercmp.run.prepare import prepare_artifacts
from infercmp.run.worker_process import run_worker, worker_spec
from infercmp.store.run_store import RunStore
from infercmp.store.schema import RESULTS_LOG
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment

FAST = ["--warmup", "2", "--iters", "10", "--sample-hz", "0"]
TWO = ["tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "-e", "pytorch", *FAST]


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a GPU, whatever it has."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)


def _bench(runner, *args, out):
    return runner.invoke(app, ["bench", *args, "--out", str(out)])


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def _crash_after_first_commit(run):
    """What a kill -9 of bench in the middle of the second commit leaves: its line cut short,
    the run still "running", its writer process gone."""
    log = run / RESULTS_LOG
    first, second = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(first + second[: len(second) // 2])
    writer = {"pid": _dead_pid(), "hostname": socket.gethostname()}
    edit_run_json(run, lambda info: info.update(status="running", finished=None, writer=writer))


def _lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / RESULTS_LOG).read_bytes().splitlines()]


def _hold_writer_lock(run):
    """Another process that holds the run's writer lock until its stdin closes."""
    script = textwrap.dedent(
        """
        import sys
        from infercmp.store.run_store import RunStore
        store = RunStore.continue_run(sys.argv[1])
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_resume_after_a_commit_cut_short_leaves_a_readable_run(runner, tmp_path, no_gpu):
    """B.7: the resumed line used to be glued to the partial one; every reader refused."""
    first = _bench(runner, *TWO, out=tmp_path / "out")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path / "out")
    _crash_after_first_commit(run)

    resumed = _bench(runner, *TWO, "--resume", str(run), out=tmp_path / "unused")
    assert resumed.exit_code == 0, resumed.output
    assert [r["engine"] for r in _lines(run)] == ["onnxruntime", "pytorch"]
    store = RunStore.open(run)
    assert store.status == "complete" and [r.status for r in store.results] == ["ok", "ok"]
    report = runner.invoke(app, ["report", str(run), "-f", "json"])
    assert report.exit_code == 0, report.output
    again = runner.invoke(app, ["bench", "--resume", str(run)])  # nothing left to run
    assert again.exit_code == 0, again.output
    assert len(_lines(run)) == 2


def test_resume_alone_reuses_the_runs_flags_and_refuses_others(runner, tmp_path, no_gpu):
    """D.25 and C.23: `--resume RUN` alone continues the run as it started (both shapes here);
    a flag that contradicts the stored one is one line, and run.json keeps its settings."""
    shapes = ["-s", "32,32,3", "-s", "16,16,3"]
    first = _bench(runner, "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", *shapes, *FAST,
                   out=tmp_path / "out")  # fmt: skip
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path / "out")
    _crash_after_first_commit(run)
    settings = RunStore.open(run).meta["settings"]

    for other, said in [
        (["-e", "pytorch"], "the run was started with --engine onnxruntime, this command "
                            "gives --engine pytorch"),
        (["--exporter", "torchscript"], "the run was started with --exporter auto, this "
                                        "command gives --exporter torchscript"),
        (["--batch", "2"], "the run was started with no --batch, this command gives --batch 2"),
        (["tiny-two-io"], "the run was started with model tiny-cnn, this command gives model "
                          "tiny-two-io"),
    ]:  # fmt: skip
        refused = runner.invoke(app, ["bench", *other, "--resume", str(run)])
        assert refused.exit_code == 2, refused.output
        assert refused.output.strip().splitlines() == [
            f"error: --resume {run}: {said}; run 'infercmp bench --resume {run}' alone to "
            "continue it as it started"
        ]

    resumed = runner.invoke(app, ["bench", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    store = RunStore.open(run)
    assert sorted(r.shape_label for r in store.results) == ["16x16x3", "32x32x3"]
    assert store.status == "complete" and store.meta["settings"] == settings


def test_a_second_writer_is_refused_with_one_line(runner, tmp_path, no_gpu):
    """B.8: a --resume started while the first bench still ran wrote into the same run."""
    first = _bench(runner, *TWO, out=tmp_path / "out")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path / "out")
    _crash_after_first_commit(run)
    holder = _hold_writer_lock(run)
    before = (run / RESULTS_LOG).read_bytes()
    try:
        assert not RunStore.open(run).abandoned  # someone writes it
        refused = _bench(runner, *TWO, "--resume", str(run), out=tmp_path / "unused")
    finally:
        holder.communicate("")
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip().splitlines() == [
        f"error: {run} is being written by another infercmp process (it holds writer.lock); "
        "wait for it to end or stop it, then resume the run"
    ]
    assert (run / RESULTS_LOG).read_bytes() == before
    assert RunStore.open(run).abandoned  # the holder is gone


def test_a_running_run_nobody_writes_is_abandoned_whatever_its_pid_says(tmp_path):
    """C.23: a run from another machine with this hostname, whose pid happens to be alive
    here, read as being written (and could not be resumed); the lock says it is not."""
    script = (
        "import sys; from infercmp.store.run_store import RunStore; "
        "RunStore.create(sys.argv[1], 'm', {})"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    run = only_run(tmp_path)
    # The pid recorded is one alive on this host (this test's), as another machine's can be.
    alive_here = {"pid": os.getpid(), "hostname": socket.gethostname()}
    edit_run_json(run, lambda info: info.update(writer=alive_here))
    assert RunStore.open(run).status == "running"
    assert RunStore.open(run).abandoned


def test_batch_auto_finishes_the_run_once_at_the_end(runner, tmp_path, monkeypatch, no_gpu):
    """B.8: each --batch auto step marked the run complete, so a kill in step 2 read complete."""
    from infercmp.cli import bench as bench_cli

    seen = []
    run_step = bench_cli._run_with_progress

    def spy(bench_mod, plugin, plan, artifacts, measurement, store, *args, **kwargs):
        seen.append(RunStore.open(store.path).status)
        return run_step(bench_mod, plugin, plan, artifacts, measurement, store, *args, **kwargs)

    monkeypatch.setattr(bench_cli, "_run_with_progress", spy)
    result = _bench(runner, "tiny-two-io", "-d", "cpu", "-e", "onnxruntime", "--batch", "auto",
                    *FAST, out=tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(seen) >= 2 and set(seen) == {"running"}
    assert only_store(tmp_path / "out").status == "complete"


@pytest.mark.parametrize("batch", [[], ["--batch", "auto"]], ids=["plain", "batch-auto"])
def test_a_run_in_which_nothing_ran_exits_3_and_records_why(runner, tmp_path, no_gpu, batch):
    """B.14: `-d cuda` without a GPU exited 0 (and --batch auto left run.json "running")."""
    result = _bench(runner, "tiny-two-io", "-d", "cuda", "-e", "onnxruntime", *batch, *FAST,
                    out=tmp_path / "out")  # fmt: skip
    assert result.exit_code == 3, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: nothing ran: every one of the 1 combination(s) was skipped (no CUDA device is "
        "visible (NVML found no NVIDIA GPU)); see the notes above"
    )
    store = only_store(tmp_path / "out")
    assert store.status == "complete"
    assert [(r.device, r.status) for r in store.results] == [("cuda", "skipped")]


def test_resume_measures_a_combination_cut_short_of_its_repeats(runner, tmp_path, no_gpu):
    """B.13: an interrupted --repeat 2 run resumed to complete with one process."""
    args = ["tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "--repeat", "2", *FAST]
    first = _bench(runner, *args, out=tmp_path / "out")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path / "out")
    record = _lines(run)[0]
    record["processes"] = record["processes"][:1]  # as the interruption's commit leaves it
    (run / RESULTS_LOG).write_text(json.dumps(record) + "\n")
    edit_run_json(run, lambda info: info.update(status="interrupted"))

    resumed = _bench(runner, *args, "--resume", str(run), out=tmp_path / "unused")
    assert resumed.exit_code == 0, resumed.output
    (result,) = RunStore.open(run).results
    assert [p.process for p in result.processes] == [0, 1]


def test_resume_on_a_disk_that_refuses_writes_is_one_line(runner, tmp_path, monkeypatch, no_gpu):
    """C.21: OSError 28 or 30 while reopening the run was a traceback."""
    from infercmp.store import run_store as results

    first = _bench(runner, *TWO, out=tmp_path / "out")
    assert first.exit_code == 0, first.output
    run = only_run(tmp_path / "out")
    _crash_after_first_commit(run)

    def full(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(results, "write_atomic", full)
    refused = _bench(runner, *TWO, "--resume", str(run), out=tmp_path / "unused")
    assert refused.exit_code == 1, refused.output
    assert refused.output.strip().splitlines()[-1] == (
        f"error: cannot write the run directory {run}: No space left on device"
    )
    assert "Traceback" not in refused.output
    assert RunStore.open(run).abandoned  # not left locked


def test_a_report_never_replaces_a_file_of_a_run(runner, tmp_path, no_gpu):
    """C.23: `report -o RUN/results.jsonl` overwrote the run's commit log."""
    first = _bench(runner, "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", *FAST,
                   out=tmp_path / "out")  # fmt: skip
    run = only_run(tmp_path / "out")
    for target in (run / RESULTS_LOG, run / "run.json", run / "latency" / "x.parquet"):
        before = target.read_bytes() if target.exists() else None
        result = runner.invoke(app, ["report", str(run), "-o", str(target)])
        assert result.exit_code == 2, first.output + result.output
        assert result.output.strip() == (
            f"error: -o {target} is a file of the run directory {run}; write the report elsewhere"
        )
        assert (target.read_bytes() if target.exists() else None) == before
    fine = runner.invoke(app, ["report", str(run), "-o", str(run / "report.html")])
    assert fine.exit_code == 0, fine.output


def test_ctrl_c_prints_the_exact_resume_command(runner, tmp_path, monkeypatch, no_gpu):
    """D.25: an interrupted bench says how to continue it."""
    import signal

    from infercmp.cli import bench as bench_cli

    run_step = bench_cli._run_with_progress

    def interrupt_then_run(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return run_step(*args, **kwargs)

    monkeypatch.setattr(bench_cli, "_run_with_progress", interrupt_then_run)
    out = tmp_path / "out dir"
    result = _bench(runner, "tiny-cnn", "-d", "cpu", "-e", "onnxruntime", *FAST, out=out)
    assert result.exit_code == 1, result.output
    run = only_run(out)
    assert f"resume:  infercmp bench --resume '{run}'" in result.output.splitlines()
    monkeypatch.setattr(bench_cli, "_run_with_progress", run_step)
    resumed = runner.invoke(app, ["bench", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert RunStore.open(run).status == "complete"


def test_a_resumed_worker_never_reports_the_previous_attempts_result(shared_cache, tmp_path):
    """B.9: a crashed worker was stored as ok with the previous attempt's iterations and pid."""
    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    spec = worker_spec(
        plugin, plan.combinations[0], artifacts, Measurement(warmup_iters=2, iters=10),
        tmp_path / "workers" / "w.p0",
    )  # fmt: skip
    earlier = run_worker(spec, 120, 0, [])
    assert earlier.status == "ok" and earlier.result is not None
    again = run_worker(spec, 0.001, 0, [])  # killed before it can write anything
    assert again.status == "timeout"
    assert again.result is None and again.latency == {}


def test_a_repeat_cut_short_is_said_and_resume_measures_it_in_every_process(shared_cache, tmp_path):
    """B.13: an interrupted --repeat run was stored with fewer processes, unflagged, and
    resumed to complete as it was."""
    import signal

    from infercmp.run.resume import open_for_resume

    plugin = get_plugin("tiny-cnn")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    artifacts = prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    measurement = Measurement(warmup_iters=2, iters=10)
    store = RunStore.create(tmp_path, plugin.name, {"settings": {"repeat": 2}})

    class StopAfterTheFirstProcess(BenchListener):
        def worker_finished(self, combo, outcome):
            os.kill(os.getpid(), signal.SIGTERM)

    status = run_bench(
        plugin, plan, artifacts, measurement, store, samplers=[], repeat=2,
        listener=StopAfterTheFirstProcess(),
    )  # fmt: skip
    store.close()
    assert status == "interrupted"
    (short,) = RunStore.open(store.path).results
    assert len(short.processes) == 1
    assert short.warnings[-1] == (
        "measured in 1 of 2 worker processes (--repeat): the run was stopped; "
        "'infercmp bench --resume' measures it again in all of them"
    )

    store, done = open_for_resume(store.path, plugin.name, {"repeat": 2})
    assert done == frozenset()  # not whole
    store.reopen()
    status = run_bench(
        plugin, plan, artifacts, measurement, store, samplers=[], repeat=2, done=done
    )
    store.close()
    assert status == "complete"
    (whole,) = RunStore.open(store.path).results
    assert [p.process for p in whole.processes] == [0, 1]
    assert not any("of 2 worker processes" in w for w in whole.warnings)


def test_a_resumes_worse_second_try_never_replaces_the_stored_measurement(tmp_path):
    """Review of #23 B.13: resume measures again a combination cut short of --repeat; a crash
    in that try replaced the stored `ok` line, and its files went with it (B.8's defect)."""
    from synthetic_runs import Combo, make_run

    from infercmp.run.loop import _kept_measurement
    from infercmp.store.schema import ProcessSummary

    store = RunStore.open(make_run(tmp_path, [Combo("onnxruntime", processes=2)]))
    (stored,) = store.results
    stored.processes = [
        ProcessSummary(process=i, iterations=300, p50_ms=10.0, measure_seconds=1.0)
        for i in range(2)
    ]
    crashed = stored.model_copy(update={"status": "crashed", "error": "SIGKILL", "processes": []})
    assert _kept_measurement(store, crashed) is stored
    assert "measured again by a resume, which ended crashed (SIGKILL)" in stored.warnings[-1]
    shorter = stored.model_copy(update={"processes": stored.processes[:1], "warnings": []})
    assert _kept_measurement(store, shorter) is stored
    whole = stored.model_copy(update={"processes": [*stored.processes, stored.processes[0]]})
    assert _kept_measurement(store, whole) is None  # a whole measurement does replace it


def test_batch_auto_stopped_by_an_error_between_steps_is_failed_not_running(
    runner, tmp_path, monkeypatch, no_gpu
):
    """Review of #23 B.8: each step leaves the run running for the next, so an error outside
    a step (preparing a later batch's artifacts) left it running, then read as killed."""
    from infercmp.run import session

    def broken(*_args, **_kwargs):
        raise RuntimeError("no node can build batch 2")

    monkeypatch.setattr(session, "_search_batches", broken)
    result = _bench(runner, "tiny-two-io", "-d", "cpu", "-e", "onnxruntime", "--batch", "auto",
                    *FAST, out=tmp_path / "out")  # fmt: skip
    assert result.exit_code != 0
    store = only_store(tmp_path / "out")
    assert store.status == "failed"
    assert store.meta["detail"] == "RuntimeError: no node can build batch 2"
