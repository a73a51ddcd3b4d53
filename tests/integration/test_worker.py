"""The worker process end to end (subprocess), and its parity and noise checks as functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infercmp.core.contract import Measurement, WorkerResult, WorkerSpec
from infercmp.core.parity import compare_outputs
from infercmp.worker.run import (
    EXIT_BAD_SPEC,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    _is_oom,
    noise_warnings,
)

PHASES = ["load", "prepare", "warmup", "measure", "parity", "done"]
NAMES = {"input_names": ["features", "token_ids"], "output_names": ["score", "embedding"]}


@pytest.fixture(scope="session")
def two_io(tmp_path_factory):
    """tiny-two-io's reference npz and ONNX file, through the session's shared artifact cache."""
    from infercmp.artifacts.cache import ArtifactCache
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.artifacts.reference import ensure_reference
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    cache = ArtifactCache(tmp_path_factory.getbasetemp() / "artifact-cache")
    plugin = get_plugin("tiny-two-io")
    reference = ensure_reference(plugin, cache, default_experiment(plugin.config))
    return reference, export_onnx(plugin, cache).path


def make_spec(tmp_path: Path, **fields) -> WorkerSpec:
    """A WorkerSpec from flat fields: the measurement's go into `measurement`, as bench does."""
    settings = {k: fields.pop(k) for k in list(fields) if k in Measurement.model_fields}
    fields.setdefault("result_dir", tmp_path / "result")
    settings = {"warmup_iters": 2, "warmup_seconds": None, **settings}
    return WorkerSpec(**NAMES, **fields, measurement=Measurement(**settings))


def run_worker(tmp_path: Path, **fields) -> tuple[subprocess.CompletedProcess, Path]:
    spec = make_spec(tmp_path, **fields)
    result_dir = spec.result_dir
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "infercmp.worker", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, result_dir


def phases(stdout: str) -> list[str]:
    return [json.loads(line)["phase"] for line in stdout.splitlines()]


def read_result(result_dir: Path) -> WorkerResult:
    return WorkerResult.model_validate_json((result_dir / "result.json").read_text())


def ort_spec(two_io, **extra) -> dict:
    reference, onnx_path = two_io
    return {
        "model": "tiny-two-io",
        "engine": "onnxruntime",
        "device": "cpu",
        "artifact": onnx_path,
        "reference": reference,
        **extra,
    }


def test_iterations_mode_writes_result_and_latency(two_io, tmp_path):
    proc, result_dir = run_worker(tmp_path, **ort_spec(two_io, iters=50))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert phases(proc.stdout) == PHASES
    result = read_result(result_dir)
    assert result.status == "ok" and result.error is None
    assert (result.mode, result.stop_reason, result.iterations) == ("iters", "iterations", 50)
    assert result.clocks == ["wall.total"]
    assert result.parity is not None and result.parity.ok
    assert [o.name for o in result.parity.outputs] == ["score", "embedding"]
    assert result.options["graph_optimization_level"] == "all"
    assert result.engine_info["providers"] == ["CPUExecutionProvider"]
    assert result.warmup.iterations == 2 and result.warmup.first_ms > 0
    assert result.runtime_shapes == {"features": [4, 16], "token_ids": [4, 8]}
    assert result.load_seconds > 0
    assert result.ci_half_width is not None and result.ci_half_width > 0
    with np.load(result_dir / "latency.npz") as latency:
        assert latency.files == ["wall.total"]
        wall = latency["wall.total"]
    assert wall.dtype == np.int64 and wall.shape == (50,) and (wall > 0).all()
    assert not list(result_dir.glob(".*.tmp"))  # atomic writes leave no temp files


def test_duration_mode(two_io, tmp_path):
    proc, result_dir = run_worker(tmp_path, **ort_spec(two_io, duration_s=0.2))
    assert proc.returncode == EXIT_OK, proc.stderr
    result = read_result(result_dir)
    assert result.stop_reason == "duration"
    assert result.iterations > 0 and result.measure_seconds >= 0.2


def test_adaptive_mode_and_device_resident(two_io, tmp_path):
    proc, result_dir = run_worker(
        tmp_path,
        **ort_spec(two_io, device_resident=True, ci_target=0.2, max_seconds=5),
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    result = read_result(result_dir)
    assert result.mode == "adaptive" and result.device_resident
    assert result.stop_reason in ("ci_target", "max_seconds")
    assert result.iterations >= 30
    assert result.parity.ok


def test_pytorch_worker(two_io, tmp_path):
    reference, _ = two_io
    proc, result_dir = run_worker(
        tmp_path,
        model="tiny-two-io",
        engine="pytorch",
        device="cpu",
        reference=reference,
        iters=20,
        options={"threads": 1},
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    result = read_result(result_dir)
    assert result.iterations == 20 and result.parity.ok
    assert result.options["threads"] == 1


def test_onnxruntime_worker_never_imports_torch(two_io, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        make_spec(
            tmp_path, **ort_spec(two_io, iters=5, result_dir=tmp_path / "r")
        ).model_dump_json()
    )
    modules_file = tmp_path / "modules.json"
    script = textwrap.dedent(
        f"""
        import json, sys
        from infercmp.worker.run import main  # what `python -m infercmp.worker` runs
        code = main([{str(spec_path)!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt"))
        open({str(modules_file)!r}, "w").write(json.dumps({{"code": code, "heavy": heavy}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(modules_file.read_text())
    assert seen == {"code": EXIT_OK, "heavy": []}


def test_failure_is_recorded_with_phase_and_traceback(two_io, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file")
    proc, result_dir = run_worker(tmp_path, **ort_spec(two_io, artifact=broken, iters=5))
    assert proc.returncode == EXIT_FAILED
    assert phases(proc.stdout) == ["load", "done"]
    result = read_result(result_dir)
    assert result.status == "failed" and result.phase == "load"
    assert "\n" not in result.error and "InvalidProtobuf" in result.error
    assert "Traceback" in result.traceback
    assert not (result_dir / "latency.npz").exists()


def test_unsupported_combination_is_its_own_status(two_io, tmp_path):
    proc, result_dir = run_worker(tmp_path, **ort_spec(two_io, precision="bf16", iters=5))
    assert proc.returncode == EXIT_UNSUPPORTED
    result = read_result(result_dir)
    assert result.status == "unsupported"
    assert result.error == (
        "engine 'onnxruntime' does not support precision 'bf16' (it supports: fp32, fp16, int8)"
    )


def test_parity_mismatch_is_a_warning_not_a_failure(two_io, tmp_path):
    reference, _ = two_io
    with np.load(reference) as data:
        arrays = dict(data)
    arrays["output_1"] = arrays["output_1"] + 1.0
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    proc, result_dir = run_worker(tmp_path, **ort_spec(two_io, reference=wrong, iters=5))
    assert proc.returncode == EXIT_OK, proc.stderr
    result = read_result(result_dir)
    assert not result.parity.ok
    assert [o.ok for o in result.parity.outputs] == [True, False]
    assert any(
        w.startswith("outputs differ from PyTorch beyond rtol 0.0001, atol rtol x max|ref|: ")
        and "output 'embedding': max abs 1 " in w
        for w in result.warnings
    )


def test_invalid_spec_exits_2_with_one_line(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        json.dumps(
            {
                "model": "tiny-two-io",
                "engine": "onnxruntime",
                "device": "cpu",
                "reference": "r.npz",
                "result_dir": str(tmp_path),
                **NAMES,
                "measurement": {"iters": 5, "duration_s": 1},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "infercmp.worker", str(spec_path)], capture_output=True, text=True
    )
    assert proc.returncode == EXIT_BAD_SPEC
    assert "give iters or duration_s, not both" in proc.stderr
    assert not (tmp_path / "result.json").exists()


def test_measurement_defaults_to_adaptive_with_precision_tolerances():
    from infercmp.core.parity import default_rtol

    settings = Measurement()
    assert settings.mode == "adaptive"
    assert (settings.ci_target, settings.min_seconds, settings.atol) == (0.01, 1.0, None)
    assert settings.warmup() == (0, 1.0)
    assert Measurement(warmup_seconds=None).warmup() == (10, 0.0)
    assert default_rtol("fp32", "cpu") == 1e-4
    assert default_rtol("fp32", "cuda") == 1e-3  # TF32
    assert default_rtol("fp16", "cuda") == 1e-2


def test_compare_outputs():
    ref = [np.array([1.0, 2.0, 0.0], dtype=np.float32), np.ones((2, 2), dtype=np.float32)]
    got = [np.array([1.0, 2.001, 0.0], dtype=np.float16), np.ones((2, 3), dtype=np.float32)]
    parity = compare_outputs(got, ref, ["a", "b"], rtol=1e-2, atol=1e-3)
    a, b = parity.outputs
    assert a.ok and a.dtype == "float16" and a.reference_dtype == "float32"
    assert a.max_abs == pytest.approx(0.0, abs=2e-3)
    assert a.cosine == pytest.approx(1.0)
    assert not b.ok and b.max_abs is None and b.shape == [2, 3]
    assert not parity.ok


def test_all_zero_output_fails_parity_with_cosine_zero():
    # What a CUDA graph replaying into a buffer nobody reads looks like.
    ref = [np.linspace(-140, 140, 1000, dtype=np.float32)]
    parity = compare_outputs([np.zeros(1000, dtype=np.float32)], ref, ["probs"], rtol=1e-3)
    (out,) = parity.outputs
    assert not parity.ok
    assert out.cosine == 0.0 and out.max_rel == pytest.approx(1.0)


def test_default_atol_scales_with_the_output():
    ref = [np.array([140.0, -3.0, 1e-6], dtype=np.float32)]
    tf32_like = [ref[0] + np.float32(0.07)]  # 5e-4 of the scale, as TF32 gives on the H200
    assert compare_outputs(tf32_like, ref, ["probs"], rtol=1e-3).ok
    assert not compare_outputs(tf32_like, ref, ["probs"], rtol=1e-4).ok
    assert not compare_outputs(tf32_like, ref, ["probs"], rtol=1e-3, atol=1e-5).ok


def test_noise_warnings():
    spec = Measurement(warmup_seconds=None)
    steady = np.full(200, 1_000_000, dtype=np.int64)
    assert noise_warnings(steady, spec, "cpu") == []
    slow_start = steady.copy()
    slow_start[:10] = 5_000_000
    warnings = noise_warnings(slow_start, spec, "cpu")
    assert any("first 10 iterations are 5.0x slower" in w for w in warnings)
    assert any("coefficient of variation" in w for w in warnings)


def test_a_cpu_run_is_never_told_to_pin_a_gpus_clocks():
    spec = Measurement(warmup_seconds=None)
    noisy = np.tile(np.array([1_000_000, 3_000_000], dtype=np.int64), 100)
    (cpu,) = [w for w in noise_warnings(noisy, spec, "cpu") if "coefficient" in w]
    assert "GPU" not in cpu and "pin the CPU clocks" in cpu
    (cuda,) = [w for w in noise_warnings(noisy, spec, "cuda") if "coefficient" in w]
    assert "pin the CPU/GPU clocks" in cuda


@pytest.mark.parametrize(
    ("exc", "oom"),
    [
        (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory."), True),
        (RuntimeError("[ONNXRuntimeError] Failed to allocate memory for requested buffer"), True),
        (MemoryError(), True),
        (ValueError("shape mismatch"), False),
    ],
)
def test_out_of_memory_is_recognised(exc, oom):
    assert _is_oom(exc) is oom


def test_worker_module_runs_from_any_directory(tmp_path, two_io):
    """The parent may start workers with another cwd; paths in the spec are all it needs."""
    spec_path = tmp_path / "spec.json"
    spec = make_spec(tmp_path, **ort_spec(two_io, iters=3, result_dir=tmp_path / "r"))
    spec_path.write_text(spec.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "infercmp.worker", str(spec_path)],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(tmp_path),
    )
    assert proc.returncode == EXIT_OK, proc.stderr


def test_spec_bench_writes_is_the_spec_the_worker_reads(tmp_path):
    """One typed contract: bench's WorkerSpec survives JSON with every default intact."""
    from infercmp.run.plan import plan_bench
    from infercmp.run.prepare import Artifacts
    from infercmp.run.worker_process import worker_spec
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    plugin = get_plugin("tiny-two-io")
    plan = plan_bench(plugin, [default_experiment(plugin.config)], ["onnxruntime"], ["cpu"], None)
    artifacts = Artifacts(references={(plan.experiments[0].label, None): tmp_path / "ref.npz"})
    spec = worker_spec(plugin, plan.runnable[0], artifacts, Measurement(), tmp_path, 3)
    again = WorkerSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert again.process == 3 and again.input_names == ["features", "token_ids"]
    assert again.measurement.min_iters == Measurement.model_fields["min_iters"].default == 100
    assert again.measurement.mode == "adaptive" and again.measurement.warmup() == (0, 1.0)


@pytest.mark.cuda
@pytest.mark.parametrize("resident", [False, True])
def test_pytorch_cuda_worker_records_device_clocks(two_io, tmp_path, resident):
    reference, _ = two_io
    proc, result_dir = run_worker(
        tmp_path,
        model="tiny-two-io",
        engine="pytorch",
        device="cuda",
        reference=reference,
        iters=300,  # more than one batch of CUDA event slots
        device_resident=resident,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    result = read_result(result_dir)
    expected = (
        ["wall.total", "device.compute", "device.total"]
        if resident
        else ["wall.total", "device.h2d", "device.compute", "device.d2h", "device.total"]
    )
    assert result.clocks == expected
    assert result.gpu_name
    with np.load(result_dir / "latency.npz") as latency:
        for clock in expected:
            assert latency[clock].shape == (300,) and (latency[clock] > 0).all()
        assert (latency["device.total"] <= latency["wall.total"]).mean() > 0.9
    assert result.parity.ok
