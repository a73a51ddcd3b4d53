"""What starting costs, end to end on the CPU: the worker's StartupTimes, the engines' caches
under EngineSpec.cache_dir, and `bench --cold`'s cold and warm passes."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest
from synthetic_runs import only_store

from infercmp.artifacts.reference import ensure_reference
from infercmp.cli import app
from infercmp.core.contract import Measurement, WorkerResult, WorkerSpec
from infercmp.engines import EngineSpec
from infercmp.engines.registry import engine_class
from infercmp.worker.run import load_reference
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment


def engine_spec(plugin, engine: str, artifact=None, cache_dir=None, **options) -> EngineSpec:
    return EngineSpec(
        model=plugin.name, device="cpu", precision="fp32", artifact=artifact,
        input_names=tuple(plugin.config.input_names),
        output_names=tuple(plugin.config.output_names), options=options, cache_dir=cache_dir,
    )  # fmt: skip


def test_a_pytorch_worker_records_consistent_startup_times(shared_cache, tmp_path):
    plugin = get_plugin("tiny-cnn")
    reference = ensure_reference(plugin, shared_cache, default_experiment(plugin.config))
    spec = WorkerSpec(
        model="tiny-cnn", engine="pytorch", device="cpu", reference=reference,
        input_names=plugin.config.input_names, output_names=plugin.config.output_names,
        result_dir=tmp_path / "result", options={"threads": 1},
        measurement=Measurement(warmup_iters=12, warmup_seconds=None, iters=5),
    )  # fmt: skip
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "infercmp.worker", str(tmp_path / "spec.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = WorkerResult.model_validate_json((tmp_path / "result" / "result.json").read_text())
    times = result.startup
    assert times is not None
    assert times.ready_s >= times.load_s + times.prepare_s > 0
    assert times.ready_s >= times.process_to_load_s > 0  # the interpreter's start counts
    assert times.first_k_ms[0] == times.first_inference_ms == result.warmup.first_ms
    assert len(times.first_k_ms) == 10  # the first 10 of the 12 warm-up calls
    # load_seconds keeps its meaning: load + prepare, timed from the reference's read.
    assert result.load_seconds >= times.load_s + times.prepare_s


def test_openvino_keeps_its_compiled_model_in_the_cache_dir_and_reads_it_back(
    exported, shared_cache, tmp_path
):
    plugin, onnx = exported("tiny-cnn")
    reference = ensure_reference(plugin, shared_cache, default_experiment(plugin.config))
    inputs, _ = load_reference(reference)
    spec = engine_spec(plugin, "openvino", artifact=onnx.path, cache_dir=tmp_path)
    first = engine_class("openvino")()
    first.load(spec)
    first.prepare(inputs)
    first.release()
    written = [p for p in (tmp_path / "openvino").rglob("*") if p.is_file()]
    assert written, "compile_model wrote nothing under <cache_dir>/openvino"
    assert first.info["loaded_from_cache"] is False
    second = engine_class("openvino")()
    second.load(spec)
    second.prepare(inputs)
    second.release()
    assert second.info["loaded_from_cache"] is True
    plain = engine_class("openvino")()  # no cache_dir: OpenVINO's default, nothing said
    plain.load(engine_spec(plugin, "openvino", artifact=onnx.path))
    assert "CACHE_DIR" not in plain._config


@pytest.mark.slow  # torch.compile of tiny-cnn on 2 CPUs takes ~20 s
def test_pytorch_compile_writes_inductors_cache_under_the_cache_dir(
    shared_cache, tmp_path, monkeypatch
):
    # The engine sets the variables for its process; the test's process gets them back.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "not-here"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "not-here"))
    plugin = get_plugin("tiny-cnn")
    reference = ensure_reference(plugin, shared_cache, default_experiment(plugin.config))
    inputs, _ = load_reference(reference)
    engine = engine_class("pytorch")()
    engine.load(engine_spec(plugin, "pytorch", cache_dir=tmp_path / "engine", compile="default"))
    engine.prepare(inputs)
    engine.copy_in()
    engine.compute()
    engine.copy_out()
    engine.synchronize()
    engine.release()
    written = [p for p in (tmp_path / "engine" / "inductor").rglob("*") if p.is_file()]
    assert written, "Inductor wrote nothing under <cache_dir>/inductor"
    assert not (tmp_path / "not-here").exists()


@pytest.mark.slow  # six worker processes: 8 to 20 s on the 2-vCPU VM
def test_bench_cold_stores_a_cold_and_a_warm_start_and_removes_its_directory(
    runner, tmp_path, monkeypatch
):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the passes make their directory
    result = runner.invoke(
        app,
        ["bench", "tiny-cnn", "-e", "pytorch", "-e", "onnxruntime", "-d", "cpu", "--cold",
         "--warmup", "2", "--iters", "20", "--out", str(tmp_path / "runs")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--cold: after its measurement each combination starts twice more" in result.output
    assert " cold / " in result.output and " warm" in result.output  # bench's own table
    store = only_store(tmp_path / "runs")
    by_engine = {r.engine: r for r in store.results}
    for engine, takes_onnx in (("onnxruntime", True), ("pytorch", False)):
        startup = by_engine[engine].startup
        assert startup is not None, engine
        as_run, cold, warm = startup["as_run"], startup["cold"], startup["warm"]
        assert as_run["first_k_ms"][0] == as_run["first_inference_ms"]
        assert len(cold["worker"]["first_k_ms"]) == 10  # the pass's own short warm-up
        for name, start in (("cold", cold), ("warm", warm)):
            assert start.get("error") is None, (engine, name, start)
            worker = start["worker"]
            assert start["ready_s"] == pytest.approx(
                (start["export_s"] or 0) + (start["convert_s"] or 0) + worker["ready_s"]
            )
        if takes_onnx:
            assert (cold["export_hit"], warm["export_hit"]) == (False, True)
            assert cold["export_s"] > 0 and warm["export_s"] > 0
        else:  # PyTorch runs the module: nothing to export
            assert cold["export_hit"] is None and cold["export_s"] is None
        assert startup["caches_cleared"][0].startswith("infercmp's artifact cache")
        assert "page cache" in startup["not_cleared"]
    assert (
        "Inductor's cache (TORCHINDUCTOR_CACHE_DIR)"
        in by_engine["pytorch"].startup["caches_cleared"]
    )
    assert list(temp.iterdir()) == [], "the passes' temporary directory was left behind"
