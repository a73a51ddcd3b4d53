"""`bench --executor ray` on a local Ray instance (this machine's CPUs, no GPU), and `--resume`.

Each bench runs in a subprocess, as a user runs it: Ray starts for the run and stops with it.
Worker processes are told apart from other tests' by a marker in their environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import namedtuple
from pathlib import Path

import psutil
import pytest
import test_reliability as support
from synthetic_runs import only_run
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.store.run_store import RunStore
from infercmp.store.schema import RESULTS_LOG

pytest.importorskip("ray", reason="needs the ray package (pip install 'infercmp[ray]')")

CLI = [sys.executable, "-c", "from infercmp.cli import main; main()"]
MARK = "INFERCMP_TEST_RAY_MARK"
plugin_site = support.plugin_site  # the fault-injecting test plugin (rel-faulty)
reliability_plugins = support.reliability_plugins
# Two CPU combinations and one that is skipped (no GPU here): the layout covers all three kinds.
MATRIX = ["tiny-cnn", "-d", "cpu", "-d", "cuda", "-e", "pytorch", "-e", "onnxruntime"]
SHORT = ["--warmup", "2", "--max-seconds", "0.3", "--min-seconds", "0.1"]
# Fields that describe a combination, not its timing: they must match between executors.
SAME = ("combo_id", "model", "engine", "device", "precision", "shape_label", "status", "error")


# Test-only fakes, importable by Ray's worker processes (they inherit PYTHONPATH):
# - `fake-plan`, an engine that `builds_on_device` like TensorRT; its build records where it
#   ran in $INFERCMP_TEST_BUILDS, and it runs as ONNX Runtime on the CPU;
# - `fake_unit`, a stand-in for the Ray task `_run_unit` that records when it runs.
BUILDS = "INFERCMP_TEST_BUILDS"
FAKES_SOURCE = f'''
"""Test-only fakes for tests/integration/test_ray_executor.py."""

import json
import os
import sys
import time
import uuid

from infercmp.engines.onnxruntime.descriptor import OnnxRuntimeDescriptor
from infercmp.engines.onnxruntime.runtime import OnnxRuntimeEngine


class FakePlanDescriptor(OnnxRuntimeDescriptor):
    name = "fake-plan"
    summary = "ONNX Runtime on the CPU, with a device build that records where it ran"
    devices = ("cpu",)
    precisions = ("fp32",)
    builds_on_device = True
    runtime = "infercmp_test_ray_fakes:FakePlanEngine"

    def convert(self, context, precision, options):
        ray = sys.modules.get("ray")
        in_task = ray is not None and ray.is_initialized() and (
            ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        )
        record = {{"pid": os.getpid(), "in_task": in_task, "batches": list(context.batches)}}
        path = os.path.join(os.environ["{BUILDS}"], uuid.uuid4().hex + ".json")
        with open(path, "w") as f:
            json.dump(record, f)
        return super().convert(context, precision, options)


DESCRIPTOR = FakePlanDescriptor()


class FakePlanEngine(OnnxRuntimeEngine):
    descriptor = DESCRIPTOR


def fake_unit(spec, shipped, build, sample_hz, timeout_s, driver=None):
    """`_run_unit`'s stand-in. Engine "fails" fails; "b" and "c" wait for each other in their
    first process (so they must run side by side). Each writes NAME.pK.started in the parent
    of its result_dir and holds NAME.running while it runs: a second process of the same
    combination running at once fails."""
    from pathlib import Path

    from infercmp.run.worker_process import WorkerOutcome

    events = Path(spec.result_dir).parent
    name, process = spec.engine, spec.process
    running = events / f"{{name}}.running"
    try:
        os.close(os.open(running, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return WorkerOutcome("failed", "two processes at once", None, {{}}, [], ""), {{}}
    try:
        (events / f"{{name}}.p{{process}}.started").touch()
        if name == "fails":
            return WorkerOutcome("failed", "injected failure", None, {{}}, [], ""), {{}}
        if process == 0:
            other = events / ("c.p0.started" if name == "b" else "b.p0.started")
            deadline = time.monotonic() + 60
            while not other.exists():
                if time.monotonic() > deadline:
                    return WorkerOutcome("failed", "ran alone", None, {{}}, [], ""), {{}}
                time.sleep(0.05)
        time.sleep(0.2)
        return WorkerOutcome("ok", None, None, {{}}, [], ""), {{}}
    finally:
        running.unlink()
'''


@pytest.fixture(scope="session")
def fakes_site(tmp_path_factory) -> Path:
    """A directory holding the fakes and a dist-info registering `fake-plan`."""
    site = tmp_path_factory.mktemp("ray-fakes-site")
    (site / "infercmp_test_ray_fakes.py").write_text(FAKES_SOURCE)
    info = site / "infercmp_test_ray_fakes-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: infercmp-test-ray-fakes\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [infercmp.engines]
            fake-plan = infercmp_test_ray_fakes:DESCRIPTOR
            """
        )
    )
    return site


@pytest.fixture
def bench_env(tmp_path, shared_cache):
    mark = uuid.uuid4().hex
    env = {
        **os.environ,
        MARK: mark,
        "INFERCMP_CACHE_DIR": str(shared_cache.root),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    return env, mark


def _bench(env: dict, out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "bench", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _workers(mark: str) -> list[psutil.Process]:
    """This test's worker processes (lifeline or worker), wherever Ray started them."""
    found = []
    for proc in _marked(mark):
        try:
            if "infercmp.worker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _marked(mark: str) -> list[psutil.Process]:
    """Every process this test started, Ray's own included (they inherit the driver's env)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == mark:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / RESULTS_LOG).read_text().splitlines()]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_the_ray_executor_writes_the_store_the_local_one_does(tmp_path, bench_env):
    env, mark = bench_env
    local = _bench(env, tmp_path / "local", *MATRIX, *SHORT)
    assert local.returncode == 0, local.stdout + local.stderr
    home = tmp_path / "home"  # where Ray would write a token file it made
    home.mkdir()
    ray_env = {**env, "HOME": str(home)}
    distributed = _bench(ray_env, tmp_path / "ray", *MATRIX, *SHORT, "--executor", "ray")
    assert distributed.returncode == 0, distributed.stdout + distributed.stderr
    assert "Traceback" not in distributed.stderr
    local_run, ray_run = only_run(tmp_path / "local"), only_run(tmp_path / "ray")

    assert _files(local_run) == _files(ray_run)
    by_id = {r["combo_id"]: r for r in _records(local_run)}
    ray_records = _records(ray_run)
    assert sorted(by_id) == sorted(r["combo_id"] for r in ray_records)
    assert [r["status"] for r in ray_records].count("ok") == 2
    for record in ray_records:
        assert {k: record[k] for k in SAME} == {k: by_id[record["combo_id"]][k] for k in SAME}
        assert (record["parity"] or {}).get("ok") == (
            by_id[record["combo_id"]]["parity"] or {}
        ).get("ok")
        if record["status"] == "ok":  # where it ran: this host, through Ray
            assert record["node"]["hostname"] == by_id[record["combo_id"]]["node"]["hostname"]
            assert record["node"]["ray_node_id"] and not by_id[record["combo_id"]]["node"].get(
                "ray_node_id"
            )
            assert record["iterations"] > 0
    assert RunStore.open(ray_run).status == "complete"
    assert _workers(mark) == []
    # The local instance's token lived in its processes' environment, not in a file that
    # Ray makes readable by every user (~/.ray/auth_token, mode 0644).
    assert not (home / ".ray" / "auth_token").exists()


def test_resume_runs_only_the_combinations_missing_from_the_run(tmp_path, bench_env):
    env, _ = bench_env
    both = ["tiny-cnn", "-d", "cpu", "-e", "pytorch", "-e", "onnxruntime", *SHORT]
    first = _bench(env, tmp_path / "out", *both)
    assert first.returncode == 0, first.stdout + first.stderr
    run = only_run(tmp_path / "out")
    log = run / RESULTS_LOG
    log.write_bytes(log.read_bytes().splitlines(keepends=True)[0])  # the second never landed
    (before,) = _records(run)

    # Alone: the run's stored flags say what it measures.
    resumed = _bench(env, tmp_path / "unused", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _records(run)
    assert [r["combo_id"] for r in after] == [before["combo_id"], "onnxruntime-cpu-fp32-32x32x3"]
    assert after[0] == before  # not run again
    store = RunStore.open(run)
    assert store.status == "complete" and len(store.meta["resumed"]) == 1
    assert not (tmp_path / "unused").exists()


def test_resume_refuses_other_measurement_settings(tmp_path, bench_env):
    env, _ = bench_env
    first = _bench(env, tmp_path / "out", "tiny-cnn", "-d", "cpu", "-e", "pytorch", *SHORT)
    assert first.returncode == 0, first.stdout + first.stderr
    run = only_run(tmp_path / "out")
    other = ["--warmup", "3", "--max-seconds", "0.3", "--min-seconds", "0.1"]
    again = _bench(env, tmp_path / "out", "tiny-cnn", "-d", "cpu", *other, "--resume", str(run))
    assert again.returncode == 2
    assert f"error: --resume {run}: the run was started with --warmup 2, this command gives " \
        "--warmup 3;" in again.stderr  # fmt: skip
    assert "Traceback" not in again.stderr
    wrong_model = _bench(env, tmp_path / "out", "tiny-two-io", *SHORT, "--resume", str(run))
    assert wrong_model.returncode == 2
    assert "started with model tiny-cnn, this command gives model tiny-two-io" in (
        wrong_model.stderr
    )


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_an_interrupted_ray_run_keeps_what_finished_and_leaves_no_worker(tmp_path, bench_env):
    env, mark = bench_env
    out = tmp_path / "out"
    slow = ["--warmup", "2", "--duration", "4"]  # each worker measures 4 s: time to interrupt
    args = ["tiny-cnn", "-d", "cpu", "-e", "onnxruntime", "-e", "pytorch", *slow]
    proc = subprocess.Popen(
        [*CLI, "bench", *args, "--executor", "ray", "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        # The CPU slot runs one CPU combination at a time: the second starts after the first.
        while not (
            out.is_dir()
            and any(out.iterdir())
            and len(_records(only_run(out))) == 1
            and _workers(mark)
        ):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the second combination never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    run = only_run(out)
    assert "error: run interrupted; 1 finished combination(s) are saved in" in output
    store = RunStore.open(run)
    assert store.status == "interrupted"
    (finished,) = store.results
    assert finished.status == "ok"
    deadline = time.monotonic() + 30
    while _workers(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers(mark) == []

    resumed = _bench(env, out, *args, "--executor", "ray", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = _records(run)
    assert len(records) == 2 and records[0]["combo_id"] == finished.combo_id
    assert RunStore.open(run).status == "complete"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "dask"], "--executor 'dask': choose local or ray"),
        (["--ray-accelerator-type", "H200"], "--ray-accelerator-type apply to --executor ray"),
        (["--executor", "ray", "--ray-resource", "a=-1"], "AMOUNT must be a positive number"),
    ],
)
def test_bad_executor_flags_are_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(app, ["bench", "tiny-cnn", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_device_build_runs_on_the_node_from_its_copy_of_the_export_with_a_fake_engine(
    tmp_path, monkeypatch
):
    """A TensorRT-like engine (`builds_on_device`) converts in the task, from the node's copy of
    the ONNX file; its artifact and default options go into the spec, the user's options win."""
    import dataclasses

    from infercmp.artifacts.samples import CalibrationSet
    from infercmp.core.contract import WorkerSpec
    from infercmp.engines.descriptor import Converted
    from infercmp.run.executors.ray_node import _build_on_node, _DeviceBuild

    seen = {}

    class FakePlanEngine:
        builds_on_device = True

        def parse_options(self, options):
            return options

        def convert(self, context, precision, options):
            seen.update(
                onnx=context.onnx.path,
                precision=precision,
                options=options,
                batches=context.batches,
                calibration=context.calibration,
            )
            return Converted(artifact=tmp_path / "plan.bin", options=(("backend", "b"), ("x", 1)))

    monkeypatch.setattr(
        "infercmp.run.executors.ray_node.get_descriptor", lambda name: FakePlanEngine()
    )
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(tmp_path / "node-cache"))
    spec = WorkerSpec(
        model="tiny-cnn",
        engine="fake-plan",
        device="cuda",
        precision="fp16",
        artifact=tmp_path / "driver.onnx",
        reference=tmp_path / "reference.npz",
        input_names=["x"],
        output_names=["y"],
        options={"x": 2},
        result_dir=tmp_path / "worker",
    )
    # The export as the driver made it (an OnnxArtifact-like dataclass), its path the driver's.
    onnx = dataclasses.make_dataclass("Onnx", ["path", "key"])(Path("/driver/model.onnx"), "k")
    # int8: the calibration samples travel too, and the node calibrates on its own copy.
    calibration = CalibrationSet(Path("/driver/calibration.npz"), 16, "f" * 64, "dataset")
    build = _DeviceBuild(onnx, (("x", 2),), batches=(1, 8), calibration=calibration)
    local = {
        "/driver/model.onnx": tmp_path / "node.onnx",
        "/driver/calibration.npz": tmp_path / "calibration.npz",
    }
    built = _build_on_node(spec, build, local)
    assert seen == {
        "onnx": tmp_path / "node.onnx",
        "precision": "fp16",
        "options": {"x": 2},
        "batches": (1, 8),  # the run's batch sizes, as the driver's build would get them
        "calibration": dataclasses.replace(calibration, path=tmp_path / "calibration.npz"),
    }
    assert built.artifact == tmp_path / "plan.bin"
    assert built.options == {"backend": "b", "x": 2}


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        app, ["bench", "tiny-cnn", "-d", "cpu", "--ray-address", f"127.0.0.1:{port}"]
    )
    assert result.exit_code == 2, result.output
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_a_cluster_that_wants_a_token_is_explained_with_a_fake_error():
    from infercmp.run.executors.ray import _connect_error

    class AuthenticationError(Exception):  # ray.exceptions.AuthenticationError's name
        pass

    text = _connect_error("10.0.0.1:6379", AuthenticationError("no token"))
    assert "requires token authentication" in text and "RAY_AUTH_TOKEN" in text


def test_a_failing_combination_under_ray_is_recorded_with_its_worker_files(
    reliability_plugins, bench_env, shared_cache, tmp_path
):
    """The run goes on past it, and its worker's files come back from the node into workers/."""
    from infercmp.run.plan import plan_bench
    from infercmp.run.prepare import prepare_artifacts
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    # References and export made without the fault (the parent runs the model too), then
    # the fault is injected in the workers only.
    plugin = get_plugin("rel-faulty")
    experiments = [default_experiment(plugin.config)]
    plan = plan_bench(plugin, experiments, ["onnxruntime", "pytorch"], ["cpu"], None)
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    env, _ = bench_env
    env = {**env, support.FAULT_ENV: "run-raise", "PYTHONPATH": os.environ["PYTHONPATH"]}
    args = ["rel-faulty", "-d", "cpu", "-e", "onnxruntime", "-e", "pytorch", *SHORT]
    result = _bench(env, tmp_path / "out", *args, "--executor", "ray")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 2 combination(s) did not finish (1 failed)" in result.stderr
    store = RunStore.open(only_run(tmp_path / "out"))
    by_engine = {r.engine: r for r in store.results}
    assert by_engine["onnxruntime"].status == "ok"
    failed = by_engine["pytorch"]
    assert failed.status == "failed" and "injected fault in forward" in failed.error
    (workdir,) = (store.path / "workers").iterdir()
    assert {"spec.json", "worker.log", "result.json"} <= {p.name for p in workdir.iterdir()}


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_batch_auto_under_ray_builds_every_batchs_device_artifact_in_a_task(
    fakes_site, bench_env, tmp_path
):
    """Each --batch auto step's `builds_on_device` artifact is made on the node that runs it
    (in the Ray task), for that step's batch, as the first step's is; never on the driver."""
    builds = tmp_path / "builds"
    builds.mkdir()
    env, _ = bench_env
    path = os.pathsep.join([str(fakes_site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**env, "PYTHONPATH": path, BUILDS: str(builds)}
    args = ["tiny-two-io", "-d", "cpu", "-e", "fake-plan", "--batch", "auto", *SHORT]
    driver = subprocess.Popen(
        [*CLI, "bench", *args, "--executor", "ray", "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, out + err
    measured = sorted(r.load["batch"] for r in RunStore.open(only_run(tmp_path / "out")).results)
    assert measured[:2] == [1, 2], out  # batch 2 is always tried after a measured batch 1
    records = [json.loads(p.read_text()) for p in builds.iterdir()]
    assert [r for r in records if not r["in_task"] or r["pid"] == driver.pid] == []
    # One build per unit, each for its own step's batch (the profile the driver would use).
    assert sorted(r["batches"] for r in records) == [[b] for b in measured]


Combo = namedtuple("Combo", "name device")  # what the executor reads of a combination


class _Recorder:
    """A bench listener that keeps every call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_ray_runs_a_combinations_processes_in_turn_and_none_after_one_failed(
    fakes_site, monkeypatch, tmp_path
):
    """With --repeat 3: "fails" fails in its first process and gets no other; "b" and "c" run
    their processes 0, 1, 2 one after another, the two combinations side by side."""
    import ray

    from infercmp.core.contract import WorkerSpec
    from infercmp.run.executors import ray as ray_executor
    from infercmp.run.executors.base import WorkUnit

    monkeypatch.syspath_prepend(str(fakes_site))
    path = os.pathsep.join([str(fakes_site), *filter(None, [os.environ.get("PYTHONPATH")])])
    monkeypatch.setenv("PYTHONPATH", path)
    import infercmp_test_ray_fakes as fakes

    events = tmp_path / "events"
    events.mkdir()
    combos = [Combo("fails", "cpu"), Combo("b", "cpu"), Combo("c", "cpu")]
    units = [
        WorkUnit(
            combo,
            process,
            WorkerSpec(
                model="m",
                engine=combo.name,
                device="cpu",
                reference=tmp_path / "reference.npz",
                input_names=["x"],
                output_names=["y"],
                process=process,
                result_dir=events / f"{combo.name}.p{process}",
            ),
        )
        for process in range(3)
        for combo in combos
    ]
    monkeypatch.setattr(ray_executor, "_shipped_paths", lambda spec: [])
    listener = _Recorder()
    with ray_executor.RayExecutor(sample_hz=0) as executor:
        executor._task = ray.remote(fakes.fake_unit)
        # No slot: any number of units may run at once, so only the executor keeps order.
        executor.request = lambda device: {"num_cpus": 0, "max_retries": 0}
        executor._device_build = lambda unit: None  # the fake engines build nothing
        ended = [
            (unit.combo.name, unit.process, outcome.status, outcome.error)
            for unit, outcome in executor.outcomes(iter(units), listener, len(units))
        ]
    assert sorted(ended) == sorted(
        [("fails", 0, "failed", "injected failure")]
        + [(name, p, "ok", None) for name in ("b", "c") for p in range(3)]
    )
    for name in ("b", "c"):
        assert [p for n, p, *_ in ended if n == name] == [0, 1, 2]
    assert sorted(p.name for p in events.glob("*.started")) == sorted(
        ["fails.p0.started"] + [f"{n}.p{p}.started" for n in ("b", "c") for p in range(3)]
    )
    assert listener.calls == []  # nothing claims a queued task started


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_with_repeat_a_failed_process_ends_its_combination_under_ray_as_locally(
    reliability_plugins, bench_env, shared_cache, tmp_path
):
    """The failed combination's record and the run's files are the local executor's: its
    later processes never run (no worker directory of theirs comes back)."""
    from infercmp.run.plan import plan_bench
    from infercmp.run.prepare import prepare_artifacts
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    plugin = get_plugin("rel-faulty")  # references and export made without the fault
    plan = plan_bench(
        plugin, [default_experiment(plugin.config)], ["onnxruntime", "pytorch"], ["cpu"], None
    )
    prepare_artifacts(plugin, plan, shared_cache, lambda _msg: None)
    env, _ = bench_env
    env = {**env, support.FAULT_ENV: "run-raise", "PYTHONPATH": os.environ["PYTHONPATH"]}
    args = ["rel-faulty", "-d", "cpu", "-e", "onnxruntime", "-e", "pytorch", *SHORT]
    args += ["--repeat", "3"]
    runs = {}
    for executor in ("local", "ray"):
        result = _bench(env, tmp_path / executor, *args, "--executor", executor)
        assert result.returncode == 1, result.stdout + result.stderr
        runs[executor] = only_run(tmp_path / executor)
    assert _files(runs["ray"]) == _files(runs["local"])
    assert {p.name for p in (runs["ray"] / "workers").iterdir()} == {"pytorch-cpu-fp32-2x4.p0"}
    local = {r["combo_id"]: r for r in _records(runs["local"])}
    for record in _records(runs["ray"]):
        expected = local[record["combo_id"]]
        assert {k: record[k] for k in SAME} == {k: expected[k] for k in SAME}
        assert len(record["processes"]) == len(expected["processes"])


def test_the_progress_line_names_the_worker_that_finished():
    """Under Ray the line is set by finished workers only (the executor cannot see a queued
    task start); it names that worker's combination and how it ended."""
    from types import SimpleNamespace

    from infercmp.cli.bench import ProgressLine

    updates = []
    progress = SimpleNamespace(update=lambda task, **fields: updates.append((task, fields)))
    line = ProgressLine(progress, "bench", repeat=3)
    combo = SimpleNamespace(label="pytorch/cpu/fp32 @ 2x4", skip_reason=None)
    line.worker_finished(combo, SimpleNamespace(status="failed"))
    assert updates == [
        ("bench", {"advance": 1, "description": "pytorch/cpu/fp32 @ 2x4: finished, failed"})
    ]


# --------------------------------------------------------------------------- node directory


@pytest.fixture
def node_tmp(tmp_path, monkeypatch) -> Path:
    """A temp directory of the test's own, where `_node_dir` makes infercmp-ray-<uid>."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_the_node_directory_is_the_users_own_with_mode_0700(node_tmp):
    from infercmp.run.executors.ray_node import _node_dir

    path = _node_dir()
    assert path == node_tmp / f"infercmp-ray-{os.getuid()}"
    assert path.stat().st_mode & 0o777 == 0o700 and path.stat().st_uid == os.getuid()
    assert _node_dir() == path  # found as made: accepted again


@pytest.mark.parametrize("wrong", ["mode", "owner", "link"])
def test_a_node_directory_another_user_owns_or_may_enter_is_refused(node_tmp, monkeypatch, wrong):
    from infercmp.core.errors import InfercmpError
    from infercmp.run.executors.ray_node import _node_dir

    uid = os.getuid()
    if wrong == "owner":  # the directory is this process's; the process now runs as another
        uid += 1
        monkeypatch.setattr(os, "getuid", lambda: uid)
    path = node_tmp / f"infercmp-ray-{uid}"
    if wrong == "link":
        (node_tmp / "theirs").mkdir(mode=0o700)
        path.symlink_to(node_tmp / "theirs")
    else:
        path.mkdir()
        path.chmod(0o755 if wrong == "mode" else 0o700)
    expected = {
        "mode": "has mode 0755, which lets other users in",
        "owner": f"belongs to uid {uid - 1}, not to this user (uid {uid})",
        "link": "is not a directory (a link or a file)",
    }[wrong]
    with pytest.raises(InfercmpError, match="needs it to be a directory of this user's") as err:
        _node_dir()
    assert str(err.value).startswith(f"{path} {expected};")


def test_a_local_ray_run_refuses_a_node_directory_others_may_enter_before_ray_starts(
    tmp_path, bench_env
):
    env, _ = bench_env
    shared = tmp_path / "tmp" / f"infercmp-ray-{os.getuid()}"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    env = {**env, "TMPDIR": str(tmp_path / "tmp")}
    result = _bench(env, tmp_path / "out", "tiny-cnn", "-d", "cpu", "--executor", "ray", *SHORT)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: {shared} has mode 0777, which lets other users in; infercmp keeps Ray's "
        "artifact copies there and needs it to be a directory of this user's with mode 0700: "
        "remove it, or set TMPDIR elsewhere"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", ["bytes", "added file", "none"])
def test_a_changed_copy_of_the_artifacts_fails_its_combination_before_the_worker(
    node_tmp, monkeypatch, tmp_path, change
):
    """The node checks its copy against the driver's sha256 of each file every time a task
    uses it: a copy changed after it was written fails that combination, with the reason."""
    from types import SimpleNamespace

    import ray

    from infercmp.core.contract import WorkerSpec
    from infercmp.run import worker_process
    from infercmp.run.executors import ray_node as ray_executor
    from infercmp.run.worker_process import WorkerOutcome

    files = {"model.onnx": b"the driver's model", "reference.npz": b"the driver's outputs"}
    shipped = ray_executor._Shipped.of(files, ref=None)  # the copy exists: nothing is fetched
    copy = ray_executor._node_dir() / "artifacts" / shipped.digest
    copy.mkdir(parents=True)
    for name, data in files.items():
        (copy / name).write_bytes(data)
    if change == "bytes":
        (copy / "model.onnx").write_bytes(b"a constant-output model")
    elif change == "added file":
        (copy / "model.onnx.data").write_bytes(b"weights of someone else's")
    monkeypatch.setattr(
        ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-1")
    )
    ran = []

    def run_worker(spec, *args):
        ran.append(spec)
        return WorkerOutcome("ok", None, None, {}, [], "")

    monkeypatch.setattr(worker_process, "run_worker", run_worker)
    driver_entry = Path("/driver/cache/entries/k")
    spec = WorkerSpec(
        model="tiny-cnn",
        engine="onnxruntime",
        device="cpu",
        artifact=driver_entry / "model.onnx",
        reference=driver_entry / "reference.npz",
        input_names=["image"],
        output_names=["logits"],
        result_dir=tmp_path / "worker",
    )
    shipping = {str(spec.artifact): shipped, str(spec.reference): shipped}
    outcome, _ = ray_executor._run_unit(spec, shipping, None, 0.0, 10.0)
    if change == "none":
        (used,) = ran
        assert (outcome.status, used.artifact) == ("ok", copy / "model.onnx")
        return
    assert ran == [] and outcome.status == "failed"
    assert outcome.error.startswith(
        f"onnxruntime cannot use its artifacts on {socket.gethostname()}"
    )
    assert {
        "bytes": f"the node's copy {copy / 'model.onnx'} does not match what the driver shipped",
        "added file": "has other files than the driver shipped (model.onnx.data)",
    }[change] in outcome.error
    assert f"remove {copy} and run again" in outcome.error


# --------------------------------------------------------------------------- stopping


def test_a_stop_signal_while_ray_starts_waits_for_it_and_then_shuts_it_down(node_tmp, monkeypatch):
    """Ray interrupted inside `ray.init` left processes `ray.shutdown` did not know of: the
    signal is held until init returns, the instance is shut down, then the run stops."""
    from types import SimpleNamespace

    from infercmp.run.executors import ray as ray_executor
    from infercmp.run.signals import Interrupted, stop_on_signals

    calls = []

    def init(**kwargs):
        calls.append("init started")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # a handler that raises does so here, inside init
        calls.append("init finished")

    fake_ray = SimpleNamespace(
        init=init, shutdown=lambda: calls.append("shutdown"), remote=lambda f: f
    )
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: fake_ray)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token set in this process
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    executor = ray_executor.RayExecutor()
    with pytest.raises(Interrupted, match="SIGTERM"), stop_on_signals():
        executor.start()
    assert calls == ["init started", "init finished", "shutdown"]
    assert executor._ray is None  # nothing left for close() to do


def test_a_stop_signal_while_ray_shuts_down_lets_it_finish(monkeypatch):
    """The run is ending: a Ctrl-C inside `ray.shutdown` would leave the instance half stopped."""
    from types import SimpleNamespace

    from infercmp.run.executors import ray as ray_executor

    calls = []

    def shutdown():
        calls.append("shutdown started")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the default handler raises KeyboardInterrupt here, inside shutdown
        calls.append("shutdown finished")

    executor = ray_executor.RayExecutor()
    executor._ray = SimpleNamespace(shutdown=shutdown)
    executor.close()
    assert calls == ["shutdown started", "shutdown finished"] and executor._ray is None


def test_ctrl_c_while_ray_starts_is_one_line_and_leaves_no_ray_process(tmp_path, bench_env):
    env, mark = bench_env
    driver = subprocess.Popen(
        [*CLI, "bench", "tiny-cnn", "-d", "cpu", *SHORT, "--executor", "ray", "--out",
         str(tmp_path / "out")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any("gcs_server" in " ".join(p.cmdline()) for p in _marked(mark)):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "Ray never started"
            time.sleep(0.05)
        driver.send_signal(signal.SIGINT)  # Ray has started its first process, not its last
        _, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 1, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: stopped by SIGINT while preparing; no combination ran")
    left = psutil.wait_procs(_marked(mark), timeout=10)[1]
    assert left == [], [p.cmdline() for p in left]


def test_a_task_ends_with_its_worker_when_the_driver_dies(tmp_path):
    """Killed with SIGKILL, the driver leaves no one to cancel its tasks: a task on its machine
    watches it, and dies with it; the worker's lifeline then ends the worker."""
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    task_source = textwrap.dedent(
        """\
        import subprocess, sys, time
        from infercmp.run.executors.ray_node import _Driver, _ends_with_driver

        with _ends_with_driver(_Driver(int(sys.argv[1]), float(sys.argv[2]))):
            worker = subprocess.Popen(
                [sys.executable, "-m", "infercmp.platform.lifeline", "sleeper"],
                start_new_session=True,
            )
            print(worker.pid, flush=True)
            time.sleep(60)
        """
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    task = None
    try:
        started = psutil.Process(driver.pid).create_time()
        task = subprocess.Popen(
            [sys.executable, "-c", task_source, str(driver.pid), repr(started)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        worker = psutil.Process(int(task.stdout.readline()))
        time.sleep(0.5)
        assert task.poll() is None and worker.is_running()  # the driver lives: both run on
        driver.kill()  # not reaped: a zombie driver is a dead one
        task.wait(timeout=5)
        assert task.returncode == -signal.SIGKILL
        psutil.wait_procs([worker], timeout=5)
        assert not worker.is_running()
    finally:
        driver.kill()
        driver.wait()
        if task is not None:
            task.kill()
            task.wait()


def test_a_task_that_cannot_see_the_driver_does_not_watch_it():
    """On another machine (or in another PID namespace) the driver's pid is someone else's, or
    no one's: such a task leaves the driver's death to Ray."""
    import threading

    from infercmp.run.executors.ray_node import _Driver, _ends_with_driver

    me = psutil.Process()
    for driver in (_Driver(me.pid, me.create_time() - 5.0), _Driver(2**22 + 1, 0.0), None):
        with _ends_with_driver(driver):
            assert "infercmp-driver-watch" not in [t.name for t in threading.enumerate()]
    with _ends_with_driver(_Driver(me.pid, me.create_time())):
        assert "infercmp-driver-watch" in [t.name for t in threading.enumerate()]
