"""Batch sweeps, concurrency and scenarios: stacking and ranges, the TensorRT profile for a
sweep, the flags' validation, the per-slot bookkeeping and a CPU run end to end."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from synthetic_runs import only_store

from infercmp.artifacts.reference import ensure_batched_reference
from infercmp.cli import app
from infercmp.core.contract import Load, Measurement, WorkerSpec
from infercmp.core.errors import InfercmpError
from infercmp.run.aggregate import ComboProgress, now_iso, outcome_to_result
from infercmp.run.loop import _worker_dir
from infercmp.run.plan import Combination, parse_engine, plan_bench
from infercmp.run.worker_process import WorkerOutcome
from infercmp.worker.load_run import run_load
from infercmp.workload.batching import (
    batch_range,
    parse_batches,
    profile_for_batches,
    stack,
)
from infercmp.workload.plugins import get_plugin
from infercmp.workload.scenarios import loads_from_flags
from infercmp.workload.shapes import default_experiment

FAST = ["--warmup", "5", "--iters", "40", "--sample-hz", "0"]


# -- batching ----------------------------------------------------------------------------------


def test_inputs_are_stacked_along_the_batch_axis_cycling_through_their_rows():
    two_rows = np.arange(2 * 3).reshape(2, 3)
    channels_first = np.arange(3 * 4).reshape(1, 3, 4)
    no_batch = np.arange(5)
    out = stack([two_rows, channels_first, no_batch], [0, 0, None], 5)
    assert out[0].shape == (5, 3)
    assert [list(r) for r in out[0]] == [[0, 1, 2], [3, 4, 5]] * 2 + [[0, 1, 2]]
    assert out[1].shape == (5, 3, 4) and all((r == channels_first[0]).all() for r in out[1])
    assert out[2] is no_batch  # shared by every row: left as it is


def test_batch_range_is_the_configs_optimisation_min_max():
    assert batch_range(get_plugin("tiny-two-io").config) == (1, 32)
    assert parse_batches("1, 8,32,8", get_plugin("tiny-two-io").config) == [1, 8, 32]
    assert parse_batches("auto", get_plugin("tiny-two-io").config) is None


@pytest.mark.parametrize(
    ("model", "text", "message"),
    [
        (
            "tiny-two-io",
            "1,64",
            "--batch 64: outside model 'tiny-two-io's declared batch_size range [1, 32]",
        ),
        ("tiny-two-io", "0", "--batch '0': '0' is not a positive integer"),
        ("tiny-two-io", "8,x", "--batch '8,x': 'x' is not a positive integer"),
        ("tiny-cnn", "4", "model 'tiny-cnn' fixes batch_size of input 'image' at 1"),
        ("tiny-cnn", "auto", "model 'tiny-cnn' fixes batch_size of input 'image' at 1"),
    ],
)
def test_a_batch_the_model_cannot_take_is_one_clear_error(model, text, message):
    with pytest.raises(InfercmpError, match="^" + message.replace("[", r"\[")):
        parse_batches(text, get_plugin(model).config)


def test_the_original_study_config_validates_with_batch_fixed_at_one():
    from pathlib import Path

    from infercmp.workload.config import load_config

    root = Path(__file__).resolve().parents[2] / "examples/models/resnet50/src/infercmp_resnet50"
    study = load_config(root / "study_config.yaml")
    assert study.inputs[0].shapes.runtime[0] == 1
    with pytest.raises(InfercmpError, match="fixes batch_size of input 'image' at 1"):
        parse_batches("8", study)
    dynamic = load_config(root / "config.yaml")
    assert batch_range(dynamic) == (1, 256)
    # The rest of the model is the study's: only the batch axis and its range changed.
    assert dynamic.inputs[0].shapes.optimization.opt == study.inputs[0].shapes.optimization.opt


def test_the_tensorrt_profile_spans_exactly_the_batches_asked():
    config = get_plugin("tiny-two-io").config
    swept = profile_for_batches(config, [8, 2, 16])
    for spec in swept.inputs:
        profile = spec.shapes.optimization
        assert (profile.min[0], profile.opt[0], profile.max[0]) == (2, 16, 16)
        # Other axes keep the config's profile.
        original = config.inputs[[i.name for i in config.inputs].index(spec.name)]
        assert profile.min[1:] == original.shapes.optimization.min[1:]
    assert profile_for_batches(config, []) is config
    with pytest.raises(InfercmpError, match="outside model 'tiny-two-io's declared"):
        profile_for_batches(config, [1, 64])


def test_the_plan_key_changes_with_the_batches_so_plans_never_mix(exported):
    from infercmp.engines.tensorrt.build import _plan_key

    plugin, onnx = exported("tiny-two-io")

    class Trt:
        backend, version = "tensorrt", "10"

    def key(batches):
        return _plan_key(
            profile_for_batches(plugin.config, batches), onnx, Trt, "fp16", "gpu", None
        )

    assert key([1, 8]) != key([1, 32]) != key([])
    assert key([1, 8]) == key([8, 1])


def test_the_batched_reference_is_the_stacked_example_and_its_stacked_outputs(shared_cache):
    from infercmp.workload.module import load_module, run_pytorch

    plugin = get_plugin("tiny-two-io")
    experiment = default_experiment(plugin.config)
    path = ensure_batched_reference(plugin, shared_cache, experiment, 10)
    with np.load(path) as data:
        features, tokens = data["input_0"], data["input_1"]
        score, embedding = data["output_0"], data["output_1"]
    assert features.shape == (10, 16) and tokens.shape == (10, 8)
    assert (features[4:8] == features[0:4]).all()  # the 4-row example, repeated
    assert score.shape == (10, 1) and embedding.shape == (10, 8)
    # Parity is judged on these stacked outputs: PyTorch itself agrees at batch 10.
    module, _ = load_module(plugin)
    direct = run_pytorch(plugin, module, [features, tokens])
    np.testing.assert_allclose(direct[0], score, rtol=1e-5, atol=1e-6)
    assert ensure_batched_reference(plugin, shared_cache, experiment, 10) == path  # cached
    assert ensure_batched_reference(plugin, shared_cache, experiment, None) != path


def test_a_plugins_own_batched_inputs_get_pytorch_reference_outputs(shared_cache):
    plugin = get_plugin("tiny-two-io")

    class Distinct(type(plugin)):
        def load_config(self):
            return plugin.config

        def batch_inputs(self, inputs, batch):
            rng = np.random.default_rng(1)
            return [
                rng.standard_normal((batch, 16)).astype(np.float32),
                rng.integers(0, 10, size=(batch, 8)).astype(np.int64),
            ]

    own = Distinct()
    path = ensure_batched_reference(own, shared_cache, default_experiment(own.config), 6)
    with np.load(path) as data:
        assert data["input_0"].shape == (6, 16)
        assert not (data["output_0"][0] == data["output_0"][1:]).all()  # real, distinct rows

    class Wrong(type(plugin)):
        def load_config(self):
            return plugin.config

        def batch_inputs(self, inputs, batch):
            return [np.zeros((3, 16), np.float32), np.zeros((3, 8), np.int64)]

    wrong = Wrong()
    with pytest.raises(InfercmpError, match="returned 'features' has 3, 'token_ids' has 3 rows"):
        ensure_batched_reference(wrong, shared_cache, default_experiment(wrong.config), 6)


# -- flags -------------------------------------------------------------------------------------


def test_no_load_flag_is_the_original_measurement():
    config = get_plugin("tiny-two-io").config
    assert loads_from_flags(config) == ([Load()], False)
    assert Load().label == "" and Load().is_default


def test_concurrency_means_offline_and_every_load_has_its_own_label():
    config = get_plugin("tiny-two-io").config
    loads, auto = loads_from_flags(config, batch="1,8", concurrency="1,2")
    assert not auto
    assert [x.label for x in loads] == [
        "b1-offline",
        "b1-c2-offline",
        "b8-offline",
        "b8-c2-offline",
    ]
    server, _ = loads_from_flags(config, scenario="server", qps="auto", slo_ms=5)
    assert server[0].label == "server-auto-slo5ms" and server[0].qps is None
    fixed, _ = loads_from_flags(config, scenario="server", qps="100,200")
    assert [x.qps for x in fixed] == [100.0, 200.0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"scenario": "batch"}, "--scenario 'batch': choose single-stream, offline, server"),
        ({"scenario": "server"}, "--scenario server needs --qps RATE"),
        ({"scenario": "server", "qps": "auto"}, "--qps auto searches the highest rate under"),
        ({"scenario": "server", "qps": "-3"}, "--qps '-3': give a positive rate"),
        ({"scenario": "server", "qps": "10", "slo_ms": 5}, "--slo-ms goes with --qps auto"),
        ({"qps": "10"}, "--qps and --slo-ms belong to --scenario server"),
        ({"concurrency": "0"}, "--concurrency '0': '0' is not a positive integer"),
        ({"concurrency": "2", "scenario": "single-stream"}, "--scenario single-stream keeps one"),
        ({"scenario": "server", "qps": "auto", "slo_ms": -1}, "--slo-ms must be a number of"),
        # Bounded up front: a search from 1000 / 1e-6 requests/s, or 1e9 requests/s for a
        # second, scheduled 7.45 GiB of arrivals and was recorded as the engine's oom.
        ({"scenario": "server", "qps": "auto", "slo_ms": 1e-6}, "--slo-ms must be a number of"),
        ({"scenario": "server", "qps": "1e9"}, "--qps '1e9': above 1,000,000 requests/s"),
    ],
)
def test_bad_scenario_flags_are_one_clear_error(flags, message):
    with pytest.raises(InfercmpError, match="^" + message.replace("(", r"\(")):
        loads_from_flags(get_plugin("tiny-two-io").config, **flags)


def test_results_of_different_loads_never_share_a_combo_id():
    plugin = get_plugin("tiny-two-io")
    loads, _ = loads_from_flags(plugin.config, batch="1,8", concurrency="1,2")
    plan = plan_bench(
        plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None, loads=loads
    )
    ids = {_worker_dir(c, 0) for c in plan.combinations}
    assert len(ids) == len(loads) == 4
    assert all(c.skip_reason is None for c in plan.combinations)


def test_an_engine_that_declares_no_concurrency_is_skipped_with_the_reason(monkeypatch):
    from infercmp.engines.registry import get_descriptor

    descriptor = get_descriptor("onnxruntime")
    monkeypatch.setattr(type(descriptor), "concurrency", {})
    plugin = get_plugin("tiny-two-io")
    loads, _ = loads_from_flags(plugin.config, concurrency="1,2")
    plan = plan_bench(
        plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None, loads=loads
    )
    assert {c.skip_reason for c in plan.combinations} == {
        "onnxruntime declares no way to keep several requests in flight on cpu"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny-cnn", "--batch", "4"], "model 'tiny-cnn' fixes batch_size of input 'image' at 1"),
        (["tiny-two-io", "--batch", "1,33"], "--batch 33: outside model 'tiny-two-io's declared"),
        (["tiny-two-io", "--scenario", "server"], "--scenario server needs --qps"),
        (["tiny-two-io", "--latency-limit-ms", "5"], "--latency-limit-ms goes with --batch auto"),
        (
            ["tiny-two-io", "--scenario", "server", "--qps", "1e9"],
            "--qps '1e9': above 1,000,000 requests/s",
        ),
        (
            ["tiny-two-io", "--scenario", "server", "--qps", "auto", "--slo-ms", "0.000001"],
            "--slo-ms must be a number of milliseconds from 0.1",
        ),
        (
            ["tiny-two-io", "--scenario", "server", "--qps", "2", "--duration", "0.2"],
            "--qps 2 over a 0.2 s window schedules no request",
        ),
        (
            ["tiny-two-io", "--scenario", "server", "--qps", "500000", "--duration", "60"],
            "requests, above the 5,000,000 one run can hold",
        ),
    ],
)
def test_bad_load_flags_exit_2_before_anything_runs(runner, tmp_path, args, message):
    result = runner.invoke(app, ["bench", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# -- the worker's bookkeeping ------------------------------------------------------------------


class _CountingEngineFake:
    """Stands in for a prepared engine: counts the requests run on it and the threads bound."""

    def __init__(self) -> None:
        self.computes = 0
        self.bound = 0
        self.started_ns: list[int] = []  # when each request's compute began

    def hot_path(self):
        def compute():
            self.computes += 1
            self.started_ns.append(time.perf_counter_ns())
            time.sleep(0.0002)  # gives the GIL to the other slots, as a real runtime does

        return (lambda: None), compute, (lambda: []), (lambda: None)

    def bind_thread(self) -> None:
        self.bound += 1


def _spec(tmp_path, load: Load, **measurement) -> WorkerSpec:
    return WorkerSpec(
        model="tiny-two-io",
        engine="onnxruntime",
        device="cpu",
        reference=tmp_path / "ref.npz",
        input_names=["features", "token_ids"],
        output_names=["score", "embedding"],
        result_dir=tmp_path,
        load=load,
        measurement=Measurement(warmup_seconds=0.01, **measurement),
    )


def test_offline_bookkeeping_requests_per_slot_and_items_per_second_fake(tmp_path):
    engines = [_CountingEngineFake() for _ in range(3)]
    load = Load(batch=4, concurrency=3, scenario="offline")
    arrays, result = run_load(
        engines, _spec(tmp_path, load, iters=300), "fake slots", items=load.batch
    )
    n = result.requests
    assert n == 300  # --iters N measures exactly N requests, whatever was in flight
    assert all(len(a) == n for a in arrays.values())
    slots = arrays["request.slot"]
    # Every slot ran requests, and the log attributes each one to the slot that ran it (the
    # warm-up's requests are run but not logged).
    assert set(np.unique(slots)) == {0, 1, 2}
    assert all(e.computes >= (slots == k).sum() for k, e in enumerate(engines))
    assert all(e.bound >= 1 for e in engines)  # each slot thread bound its engine
    assert result.slots == 3 and result.batch == 4
    assert result.items_per_s == pytest.approx(4 * n / result.window_s)
    assert result.requests_per_s == pytest.approx(n / result.window_s)
    # Per request: due <= started <= ended, and latency is end minus due.
    assert (arrays["request.issue"] <= arrays["request.start"]).all()
    assert (arrays["request.start"] <= arrays["request.end"]).all()
    assert (arrays["wall.total"] == arrays["request.end"] - arrays["request.issue"]).all()


def test_the_qps_search_reports_the_highest_passing_rate_and_the_generator_fake(tmp_path):
    engines = [_CountingEngineFake()]
    load = Load(scenario="server", slo_ms=50)
    arrays, result = run_load(engines, _spec(tmp_path, load, duration_s=0.2), "fake slots", items=1)
    assert result.generator is not None and result.generator["open_loop_max_qps"] > 0
    assert result.search, "the search tried no rate"
    passing = [p["qps"] for p in result.search if p["ok"]]
    assert result.best_qps == (max(passing) if passing else None)
    assert result.search_reason
    assert len(arrays["wall.total"]) == result.requests


def test_merged_load_results_sum_requests_and_windows_over_processes():
    from infercmp.core.contract import LoadResult
    from infercmp.workload.scenarios import merge_load_results

    def one(requests, seconds):
        return LoadResult(
            how="x",
            batch=8,
            slots=2,
            requests=requests,
            window_s=seconds,
            requests_per_s=requests / seconds,
            items_per_s=8 * requests / seconds,
        )

    merged = merge_load_results([one(100, 1.0), one(300, 2.0)])
    assert merged["requests"] == 400 and merged["window_s"] == 3.0
    assert merged["items_per_s"] == pytest.approx(8 * 400 / 3.0)
    assert merged["per_process_items_per_s"] == [800.0, 1200.0]
    assert merge_load_results([None]) is None


# -- the measured window: its phase and its energy ---------------------------------------------


def _recorded_loops(monkeypatch) -> list:
    """Every loadgen loop run from now on, as (given window callbacks, RequestLog)."""
    from infercmp.worker.loadgen import loops as loadgen

    runs = []
    for name in ("closed_loop", "open_loop"):

        def wrapped(*args, _real=getattr(loadgen, name), **kwargs):
            log = _real(*args, **kwargs)
            runs.append((kwargs.get("on_measure_start") is not None, log))
            return log

        monkeypatch.setattr(loadgen, name, wrapped)
    return runs


WINDOWED_LOADS = {
    "offline": (Load(concurrency=2, scenario="offline"), {"iters": 200}),
    "server": (Load(scenario="server", qps=200.0), {"duration_s": 0.3}),
    "server-auto": (Load(scenario="server", slo_ms=50), {"duration_s": 0.2}),
}


@pytest.mark.parametrize("name", WINDOWED_LOADS)
def test_the_window_edges_hold_exactly_the_counted_requests_fake(name, tmp_path, monkeypatch):
    load, measurement = WINDOWED_LOADS[name]
    runs = _recorded_loops(monkeypatch)
    engines = [_CountingEngineFake() for _ in range(load.concurrency)]
    edges: dict[str, int] = {}
    arrays, result = run_load(
        engines,
        _spec(tmp_path, load, **measurement),
        "fake slots",
        items=1,
        on_measure_start=lambda: edges.setdefault("start", time.perf_counter_ns()),
        on_measure_end=lambda: edges.setdefault("end", time.perf_counter_ns()),
    )
    (window,) = [log for given, log in runs if given]
    # The window lies between the edges, and every other run (the slots' warm-up, the
    # generator's self-check, each rate a search tried) ended before the first edge.
    assert edges["start"] <= window.window_ns[0] <= window.window_ns[1] <= edges["end"]
    assert all(log.window_ns[1] <= edges["start"] for given, log in runs if not given)
    # Between the edges ran the counted requests and nothing else: the energy's divisor.
    began = np.array([t for engine in engines for t in engine.started_ns])
    inside = int(((began >= edges["start"]) & (began <= edges["end"])).sum())
    assert inside == window.count == result.requests == len(arrays["wall.total"])
    assert (began < edges["start"]).any()  # the warm-up ran, before the window
    assert not (began > edges["end"]).any()
    assert result.window_s == window.window_s


class _StampedEvents:
    """The worker's event stream, each line stamped with perf_counter_ns as it is written."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self._line = ""

    def write(self, text: str) -> int:
        self._line += text
        if self._line.endswith("\n"):
            self.events.append((json.loads(self._line)["phase"], time.perf_counter_ns()))
            self._line = ""
        return len(text)

    def flush(self) -> None: ...


def test_a_load_runs_worker_events_keep_the_warmup_out_of_the_measure_phase(
    shared_cache, exported, tmp_path, monkeypatch
):
    from infercmp.artifacts.reference import ensure_reference
    from infercmp.worker.run import run_spec as run_worker

    plugin, onnx = exported("tiny-two-io")
    spec = WorkerSpec(
        model="tiny-two-io",
        engine="onnxruntime",
        device="cpu",
        artifact=onnx.path,
        reference=ensure_reference(plugin, shared_cache, default_experiment(plugin.config)),
        input_names=["features", "token_ids"],
        output_names=["score", "embedding"],
        result_dir=tmp_path,
        load=Load(concurrency=2, scenario="offline"),
        measurement=Measurement(warmup_seconds=0.05, iters=100),
    )
    runs = _recorded_loops(monkeypatch)
    stream = _StampedEvents()
    result = run_worker(spec, stream)
    assert result.status == "ok", result.error
    phases = [phase for phase, _ in stream.events]
    assert phases == ["load", "prepare", "warmup", "measure", "write", "parity", "done"]
    at = dict(stream.events)
    (window,) = [log for given, log in runs if given]
    assert all(at["warmup"] <= log.window_ns[1] <= at["measure"] for g, log in runs if not g)
    assert at["measure"] <= window.window_ns[0] <= window.window_ns[1] <= at["write"]
    # What the parent divides the measure phase's energy by, and over how long.
    assert result.iterations == result.load_result.requests == window.count
    assert result.measure_seconds == result.load_result.window_s == window.window_s
    assert result.warmup.seconds > 0


def _load_worker_spec(plugin, onnx, cache, tmp_path, load, **measurement) -> WorkerSpec:
    from infercmp.artifacts.reference import ensure_reference

    return WorkerSpec(
        model=plugin.name,
        engine="onnxruntime",
        device="cpu",
        artifact=onnx.path,
        reference=ensure_reference(plugin, cache, default_experiment(plugin.config)),
        input_names=["features", "token_ids"],
        output_names=["score", "embedding"],
        result_dir=tmp_path,
        load=load,
        measurement=Measurement(warmup_seconds=0.05, **measurement),
    )


def test_a_server_run_counts_the_examples_own_batch_as_items(shared_cache, exported, tmp_path):
    """tiny-two-io's example holds 4 items: a server run without --batch recorded batch 1 and
    items/s = requests/s, while single-stream and offline counted the 4."""
    from infercmp.worker.run import run_spec as run_worker

    plugin, onnx = exported("tiny-two-io")
    load = Load(scenario="server", qps=200.0)
    spec = _load_worker_spec(plugin, onnx, shared_cache, tmp_path, load, duration_s=0.3)
    result = run_worker(spec, _StampedEvents())
    assert result.status == "ok", result.error
    assert result.runtime_shapes["features"][0] == 4
    lr = result.load_result
    assert lr.batch == 4
    assert lr.items_per_s == pytest.approx(4 * lr.requests_per_s)


def test_a_window_with_no_request_says_what_happened_and_what_to_do(
    shared_cache, exported, tmp_path
):
    from infercmp.worker.run import run_spec as run_worker

    plugin, onnx = exported("tiny-two-io")
    load = Load(scenario="server", qps=1.0)  # 0.3 s at 1/s: no arrival is due
    spec = _load_worker_spec(plugin, onnx, shared_cache, tmp_path, load, duration_s=0.3)
    result = run_worker(spec, _StampedEvents())
    assert result.status == "failed"
    assert result.error.startswith("the 0.3 s window had no request due in it")
    assert "give a longer --duration or a higher --qps" in result.error


def test_a_load_scenarios_energy_is_its_windows_over_its_requests_fake():
    from infercmp.core.contract import LoadResult, WorkerResult

    plugin = get_plugin("tiny-two-io")
    combo = Combination(
        default_experiment(plugin.config),
        parse_engine("onnxruntime"),
        "cuda",
        "fp32",
        load=Load(batch=8, concurrency=2, scenario="offline"),
    )
    requests, window_s = 1000, 2.0
    # Sampler rows at 20 Hz: 1 s of the generator's warm-up at 600 W, the 2 s window at 200 W,
    # then the worker's bookkeeping at 80 W. NVML's counter (mJ) steps every 100 ms, as on
    # the H200.
    phases = [("warmup", 1.0, 600.0), ("measure", window_s, 200.0), ("write", 0.5, 80.0)]
    rows, joules, t = [], 0.0, 0.0
    for phase, seconds, watts in phases:
        for _ in range(round(seconds * 10)):  # one 100 ms counter step: two readings
            for half in (0.0, 0.05):
                row = {"t_s": t + half, "phase": phase, "gpu_power_w": watts}
                rows.append({**row, "gpu_energy_mj": round(joules * 1000)})
            joules += watts * 0.1
            t += 0.1
    load_result = LoadResult(
        how="fake slots", batch=8, slots=2, requests=requests, window_s=window_s,
        requests_per_s=requests / window_s, items_per_s=8 * requests / window_s,
    )  # fmt: skip
    worker_result = WorkerResult(
        status="ok", model=plugin.name, engine="onnxruntime", device="cuda", precision="fp32",
        device_resident=False, mode="iters", iterations=requests, measure_seconds=window_s,
        runtime_shapes={"features": [8, 16], "token_ids": [8, 12]}, load_result=load_result,
    )  # fmt: skip
    latency = {"wall.total": np.full(requests, 4_000_000, dtype=np.int64)}
    outcome = WorkerOutcome("ok", None, worker_result, latency, rows, "")
    progress = ComboProgress(combo, now_iso(), [outcome])
    result, _, _ = outcome_to_result(plugin, progress, power_limit_w=700.0)
    # The window's 400 J over its 1,000 requests (per request: a batch of 8), not the warm-up's
    # 600 J as well.
    assert result.energy_method == "energy counter"
    assert result.energy_j_per_inference == pytest.approx(200.0 * window_s / requests, rel=0.01)


# -- end to end --------------------------------------------------------------------------------


def test_a_batch_and_concurrency_sweep_runs_and_stores_each_point(runner, tmp_path):
    args = ["bench", "tiny-two-io", "-e", "onnxruntime", "-d", "cpu", "--batch", "2,8"]
    result = runner.invoke(app, [*args, "--concurrency", "1,2", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    store = only_store(tmp_path)
    by_load = {(r.load["batch"], r.load["concurrency"]): r for r in store.results}
    assert set(by_load) == {(2, 1), (2, 2), (8, 1), (8, 2)}
    for (batch, _), r in by_load.items():
        assert r.status == "ok", r.error
        assert r.runtime_shapes["features"] == [batch, 16]
        assert r.parity["ok"] is True  # judged on the stacked reference
        lr = r.load_result
        assert lr["items_per_s"] == pytest.approx(batch * lr["requests"] / lr["window_s"])
        # Judged by the one energy rule, like any window: a CPU run has no GPU readings.
        assert r.energy_j_per_inference is None
        assert r.energy_method.startswith("n/a: no GPU power readings")
    latency = store.latency()
    clocks = set(zip(latency["clock"], latency["phase"]))
    assert {("request", "issue"), ("request", "start"), ("request", "end")} <= clocks
    assert "b8-c2-offline" in result.output


def test_without_load_flags_the_stored_result_is_as_before(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "tiny-cnn", "-e", "onnxruntime", "-d", "cpu", "--out", str(tmp_path), *FAST]
    )
    assert result.exit_code == 0, result.output
    store = only_store(tmp_path)
    (r,) = store.results
    assert r.combo_id == "onnxruntime-cpu-fp32-32x32x3"
    assert r.load is None and r.load_result is None
    assert "loads" not in store.meta["settings"]
    latency = store.latency()
    assert set(latency["clock"].unique()) == {"wall"}


# -- --batch auto ------------------------------------------------------------------------------


def _auto_plan():
    plugin = get_plugin("tiny-two-io")
    return plan_bench(
        plugin,
        [default_experiment(plugin.config)],
        ["onnxruntime", "pytorch"],
        ["cpu"],
        None,
        loads=[Load(batch=1)],
    )


def _fake_step(throughput: dict[tuple[str, int], float | str], seen: list[list[int]]):
    """A run_step that 'measures' each combination as the table says (a number: items/s at a
    10 ms median; a string: that status)."""
    from types import SimpleNamespace

    stored: list = []

    def step(plan):
        seen.append(sorted({c.load.batch for c in plan.combinations}))
        for c in plan.combinations:
            value = throughput[c.engine.name, c.load.batch]
            ok = not isinstance(value, str)
            stored.append(
                SimpleNamespace(
                    engine=c.engine.name,
                    variant=c.engine.variant,
                    device=c.device,
                    precision=c.precision,
                    shape_label=c.experiment.label,
                    load=c.load.model_dump(),
                    status="ok" if ok else value,
                    error=None if ok else "CUDA out of memory",
                    latency={"p50_ms": 10.0 * c.load.batch, "throughput_per_s": value}
                    if ok
                    else None,
                    load_result=None,
                )
            )
        return "complete", list(stored)

    return step


def test_batch_auto_doubles_until_the_gain_is_small_or_memory_runs_out_fake():
    from infercmp.run.batch_search import search_batches

    table = {
        ("onnxruntime", 1): 100.0,
        ("onnxruntime", 2): 190.0,
        ("onnxruntime", 4): 300.0,
        ("onnxruntime", 8): 310.0,  # +3%: stop, best stays 4
        ("pytorch", 1): 50.0,
        ("pytorch", 2): 90.0,
        ("pytorch", 4): "oom",
    }
    seen: list[list[int]] = []
    curves, status = search_batches(_auto_plan(), 32, _fake_step(table, seen))
    assert status == "complete"
    assert seen == [[1], [2], [4], [8]]  # pytorch left the search at 4
    by_engine = {c.label.split("/")[0]: c for c in curves}
    assert by_engine["onnxruntime"].best == (4, 300.0)
    assert by_engine["onnxruntime"].stop == "batch 8 gains less than 5% over 4"
    assert by_engine["pytorch"].best == (2, 90.0)
    assert by_engine["pytorch"].stop == "out of memory at batch 4"


def test_batch_auto_stops_past_the_latency_limit_and_at_the_largest_batch_fake():
    from infercmp.run.batch_search import search_batches

    table = {(e, b): 100.0 * b for e in ("onnxruntime", "pytorch") for b in (1, 2, 4, 8)}
    curves, _ = search_batches(_auto_plan(), 4, _fake_step(table, []), latency_limit_ms=25)
    # Median is 10 ms x batch: batch 4 (40 ms) passes the 25 ms limit, so 2 is the best.
    assert {c.best for c in curves} == {(2, 200.0)}
    assert all("passes 25 ms" in c.stop for c in curves)
    curves, _ = search_batches(_auto_plan(), 4, _fake_step(table, []))
    assert {c.stop for c in curves} == {"batch 4 is the config's largest"}


def test_tensorrt_builds_its_plan_for_the_runs_batches_fake(monkeypatch):
    """The descriptor hands the run's --batch sizes to the builder (the build itself needs a
    GPU; the profile it makes of them is tested above)."""
    from pathlib import Path

    import infercmp.engines.tensorrt.build
    from infercmp.engines.descriptor import ConvertContext
    from infercmp.engines.registry import get_descriptor

    seen = {}

    def fake_build(plugin, cache, onnx, **kwargs):
        seen.update(kwargs)
        from types import SimpleNamespace

        return SimpleNamespace(path=Path("plan"), backend="tensorrt")

    monkeypatch.setattr(infercmp.engines.tensorrt.build, "build_engine", fake_build)
    descriptor = get_descriptor("tensorrt")
    context = ConvertContext(get_plugin("tiny-two-io"), None, None, lambda _m: None, (1, 8, 32))
    descriptor.convert(context, "fp16", descriptor.parse_options({}))
    assert seen["batches"] == (1, 8, 32)


def test_the_plan_covers_the_batches_the_run_uses():
    from infercmp.workload.batching import plan_batches

    plugin = get_plugin("tiny-two-io")
    experiment = default_experiment(plugin.config)  # its example has 4 rows

    def batches(loads):
        plan = plan_bench(plugin, [experiment], ["onnxruntime"], ["cpu"], None, loads=loads)
        return plan_batches(plugin, plan.combinations)

    assert batches([Load()]) == (4,)  # no --batch: the example's own, not the config's 1..32
    assert batches([Load(batch=8), Load(batch=2)]) == (2, 8)
    tiny_cnn = get_plugin("tiny-cnn")  # batch fixed at 1: the config's profile as it is
    plan = plan_bench(
        tiny_cnn, [default_experiment(tiny_cnn.config)], ["onnxruntime"], ["cpu"], None
    )
    assert plan_batches(tiny_cnn, plan.combinations) == ()


def test_a_slot_running_out_of_memory_reaches_the_worker_as_oom_fake(tmp_path):
    """loadgen wraps a slot's exception in SlotFailed; the worker classifies the slot's own."""
    import io

    from infercmp.core.contract import WorkerResult
    from infercmp.worker import run as worker

    class OutOfMemoryFake(_CountingEngineFake):
        def hot_path(self):
            def compute():
                raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            return (lambda: None), compute, (lambda: []), (lambda: None)

    spec = _spec(tmp_path, Load(scenario="offline"), iters=10)
    result = WorkerResult(
        status="ok", model="m", engine="onnxruntime", device="cpu", precision="fp32",
        device_resident=False, mode="iters",
    )  # fmt: skip
    events = worker._PhaseEvents(io.StringIO())
    with pytest.raises(MemoryError) as raised:
        worker._measure_load(OutOfMemoryFake(), [], spec, result, events)
    assert worker._is_oom(raised.value)


# -- labels --------------------------------------------------------------------------------------


def test_concurrency_one_alone_is_offline_as_in_a_list():
    """Issue 23, D.30: `-c 1,2` labelled both points offline, `-c 1` alone was not."""
    config = get_plugin("tiny-two-io").config
    (alone,), _ = loads_from_flags(config, concurrency="1")
    assert (alone.scenario, alone.label) == ("offline", "offline")
    listed, _ = loads_from_flags(config, concurrency="1,2")
    assert listed[0] == alone


def test_a_shapes_notes_print_once_and_say_what_a_batch_label_measures(runner, tmp_path):
    """Issue 23, D.30: the out-of-profile note printed once per --batch value, and a row
    labelled '2x600_2x600 b1' measured one item with nothing saying so. (-d cuda: every
    combination is skipped here, so nothing is measured.)"""
    args = ["bench", "tiny-encoder", "-s", "2,600;2,600", "--batch", "1,8", "-d", "cuda"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert "Traceback" not in result.output
    assert result.output.count("outside [4, 128] (the optimisation profile") == 1
    assert (
        "note: --batch sets the batch axis of --shape 2x600_2x600: '2x600_2x600 b1' measures "
        "1x600_1x600, '2x600_2x600 b8' measures 8x600_8x600"
    ) in " ".join(result.output.split())


def test_a_fixed_rate_server_run_that_fell_behind_did_not_hold_its_load():
    """Issue 23, A.3: --qps 100000 completed 74,630 requests/s, every request eventually (none
    cut), and the row said `ok` with a p99 that was the backlog's."""
    from infercmp.workload.scenarios import load_shortfall

    load = Load(scenario="server", qps=100_000.0).model_dump()
    behind = {"requests": 37_315, "cut": 0, "offered_qps": 100_000.0, "requests_per_s": 74_630.0}
    assert load_shortfall(load, behind) == (
        "completed 74,630 of the 100,000 requests/s offered (under 95%): requests queued up, "
        "so its latency is the backlog's"
    )
    kept_up = {**behind, "requests_per_s": 99_100.0}
    assert load_shortfall(load, kept_up) is None
    offline = Load(concurrency=2, scenario="offline").model_dump()
    assert load_shortfall(offline, {**behind, "offered_qps": None}) is None
