"""PyTorch -> ONNX export: checks, dynamic axes run in ONNX Runtime, parity, cache behaviour."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from infercmp.artifacts import onnx_export as export
from infercmp.artifacts.cache import ArtifactCache, CacheUnwritable
from infercmp.artifacts.onnx_export import CHECK_BATCH_MAX, _fit, export_onnx
from infercmp.artifacts.reference import ensure_reference
from infercmp.core.errors import InfercmpError
from infercmp.core.parity import compare_output
from infercmp.models.tiny_encoder import TinyEncoder
from infercmp.workload import module as loaded
from infercmp.workload.config import parse_config
from infercmp.workload.inputs import runtime_shapes
from infercmp.workload.module import run_pytorch
from infercmp.workload.plugins import ModelPlugin, get_plugin
from infercmp.workload.shapes import default_experiment, parse_shape

MODELS = [
    "tiny-cnn",
    "tiny-two-io",
    "tiny-encoder",
    pytest.param("resnet50", marks=pytest.mark.slow),
]


def _dims(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.output]
    }, model.ir_version


@pytest.mark.parametrize("name", MODELS)
def test_export_checks_dynamic_axes_and_parity(exported, name):
    plugin, artifact = exported(name)
    config = plugin.config
    assert artifact.path.is_file()
    assert artifact.parity_passed
    assert set(artifact.checked_shapes) == {"example", "min", "opt", "max"}
    for spec, shape in zip(config.inputs, artifact.checked_shapes["max"]):
        # The batch axis is checked at a few rows only (export.CHECK_BATCH_MAX).
        batch = spec.shapes.dims_names.index("batch_size")
        top = spec.shapes.optimization.max
        assert shape[batch] == min(
            top[batch], max(CHECK_BATCH_MAX, spec.shapes.optimization.min[batch])
        )
        assert shape[:batch] + shape[batch + 1 :] == top[:batch] + top[batch + 1 :]
    assert {p.at for p in artifact.parity} == {"example", "min", "opt", "max"}
    for p in artifact.parity:
        assert p.reference_dtype == p.dtype == "float32"
        assert p.cosine > 0.9999
    dims, ir_version = _dims(artifact.path)
    assert ir_version <= 10  # onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes
    for spec in config.inputs:
        for axis, dim in enumerate(dims[spec.name]):
            runtime = spec.shapes.runtime[axis]
            assert dim == (spec.shapes.dims_names[axis] if runtime == -1 else runtime)
    assert list(dims) == config.input_names + config.output_names


def test_encoder_keeps_batch_and_sequence_dynamic(exported):
    import onnxruntime as ort

    plugin, artifact = exported("tiny-encoder")
    assert artifact.exporter == "dynamo"
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    module = plugin.load_pytorch_module()
    for shape in ["1,5;1,5", "3,17;3,17", "8,100;8,100"]:
        inputs = plugin.preprocess(
            plugin.load_example_inputs(parse_shape(shape, plugin.config).shapes)
        )
        assert all(a.dtype == np.int64 for a in inputs)
        got = session.run(plugin.config.output_names, dict(zip(plugin.config.input_names, inputs)))
        ref = run_pytorch(plugin, module, inputs)
        batch, seq = inputs[0].shape
        assert got[0].shape == (batch, seq, 32) and got[1].shape == (batch, 32)
        for r, g in zip(ref, got):
            assert _judge("x", shape, r, g, 1e-4, None).ok


def test_an_unchanged_module_is_a_hit_whatever_the_environment(exported, shared_cache, monkeypatch):
    plugin, first = exported("tiny-cnn")
    monkeypatch.setenv("INFERCMP_SOME_OPTION", "1")  # the environment changes, the module not
    again = export_onnx(plugin, shared_cache)
    assert again.cached and again.key == first.key


def test_tighter_tolerances_on_a_cached_export_fail_with_the_numbers(exported, shared_cache):
    plugin, _ = exported("tiny-two-io")
    with pytest.raises(InfercmpError, match=r"(?s)does not match PyTorch fp32 .*max abs .*cosine"):
        export_onnx(plugin, shared_cache, rtol=0.0, atol=0.0)


def test_force_exports_again(tmp_path):
    plugin = get_plugin("tiny-two-io")
    cache = ArtifactCache(tmp_path)
    first = export_onnx(plugin, cache, exporter="torchscript")
    assert not first.cached and first.exporter == "torchscript"
    assert export_onnx(plugin, cache, exporter="torchscript").cached
    forced = export_onnx(plugin, cache, exporter="torchscript", force=True)
    assert not forced.cached and forced.path.is_file()


def test_torchscript_bakes_the_sequence_axis_and_the_runtime_check_names_cause_then_dynamo(
    tmp_path,
):
    with pytest.raises(InfercmpError) as info:
        export_onnx(get_plugin("tiny-encoder"), ArtifactCache(tmp_path), exporter="torchscript")
    message = str(info.value)
    assert message.startswith(
        "model 'tiny-encoder': ONNX Runtime cannot run the torchscript export at the min shape"
    )
    assert message.endswith(
        "; the TorchScript exporter probably baked a dynamic axis into the graph as a constant "
        "(it does this to sequence axes); try --exporter dynamo"
    )


class _FailingSession:
    """Stands in for ONNX Runtime: every run fails as a model with a bad graph would."""

    def run(self, names, feeds):
        raise RuntimeError("Got invalid dimensions for input: image")


def test_a_dynamo_failure_never_suggests_dynamo_with_a_fake_onnxruntime_session(
    tmp_path, monkeypatch
):
    """Issue 14: 'try --exporter dynamo' was printed when dynamo was the exporter that failed."""
    import infercmp.artifacts.onnx_export

    monkeypatch.setattr(
        infercmp.artifacts.onnx_export, "_ort_session", lambda path: _FailingSession()
    )
    plugin = get_plugin("tiny-cnn")
    with pytest.raises(InfercmpError) as info:
        export_onnx(plugin, ArtifactCache(tmp_path / "dynamo"), exporter="dynamo")
    assert str(info.value) == (
        "model 'tiny-cnn': ONNX Runtime cannot run the dynamo export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image; "
        "try --exporter torchscript"
    )
    with pytest.raises(InfercmpError) as info:
        export_onnx(plugin, ArtifactCache(tmp_path / "auto"), exporter="auto")
    assert "try --exporter" not in str(info.value)  # both were tried
    assert str(info.value).splitlines() == [
        "model 'tiny-cnn': no exporter produced a working ONNX model:",
        "  dynamo: ONNX Runtime cannot run the dynamo export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image",
        "  torchscript: ONNX Runtime cannot run the torchscript export at the example shape "
        "(image=[1, 3, 32, 32]): RuntimeError: Got invalid dimensions for input: image; "
        "the TorchScript exporter probably baked a dynamic axis into the graph as a constant "
        "(it does this to sequence axes)",
    ]


def test_unknown_exporter_is_a_clear_error(tmp_path):
    with pytest.raises(InfercmpError, match="unknown exporter 'onnxscript'; choose auto"):
        export_onnx(get_plugin("tiny-cnn"), ArtifactCache(tmp_path), exporter="onnxscript")


def test_reference_npz_holds_inputs_and_outputs_in_config_order(exported, shared_cache):
    plugin, _ = exported("tiny-encoder")
    experiment = parse_shape("3,20;3,20", plugin.config)
    path = ensure_reference(plugin, shared_cache, experiment)
    with np.load(path) as data:
        assert sorted(data.files) == ["input_0", "input_1", "output_0", "output_1"]
        assert data["input_0"].shape == (3, 20) and data["input_0"].dtype == np.int64
        assert data["output_0"].shape == (3, 20, 32) and data["output_1"].shape == (3, 32)
    assert runtime_shapes(plugin, experiment) == [(3, 20), (3, 20)]
    assert ensure_reference(plugin, shared_cache, experiment) == path
    other = ensure_reference(plugin, shared_cache, default_experiment(plugin.config))
    assert other != path


def test_runtime_shapes_follow_preprocess_without_torch():
    plugin = get_plugin("tiny-cnn")
    assert runtime_shapes(plugin, parse_shape("40,48,3", plugin.config)) == [(1, 3, 40, 48)]


def test_fit_tiles_and_crops_real_values():
    ids = np.arange(6).reshape(2, 3)
    assert _fit(ids, (3, 5)).tolist() == [[0, 1, 2, 0, 1], [3, 4, 5, 3, 4], [0, 1, 2, 0, 1]]
    assert _fit(ids, (1, 2)).tolist() == [[0, 1]]


def _judge(name, at, reference, actual, rtol, atol):
    """The parity rule as export applies it: dtype kept, tolerances as given."""
    return compare_output(name, reference, actual, rtol, atol, at=at, same_dtype=True)


def test_compare_output_reports_every_mismatch_kind():
    ref = np.array([1.0, 2.0, 0.0], dtype=np.float32)
    same = _judge("y", "example", ref, ref.copy(), 1e-4, None)
    assert same.ok and same.max_abs == 0 and same.cosine == pytest.approx(1.0)
    off = _judge("y", "example", ref, ref + np.float32(1e-3), 1e-4, None)
    assert not off.ok and off.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert "max abs 0.001" in off.describe()
    assert not _judge("y", "example", ref, ref[:2], 1e-4, None).ok
    assert not _judge("y", "example", ref, ref.astype(np.float64), 1e-4, None).ok
    nan = ref.copy()
    nan[0] = np.nan
    assert not _judge("y", "example", ref, nan, 1e-4, None).ok
    # near-zero elements are judged against the output's scale, not their own magnitude
    assert _judge("y", "example", ref, ref + np.float32(1e-5), 1e-4, None).ok
    assert not _judge("y", "example", ref, ref + np.float32(1e-5), 1e-4, 0.0).ok


# --- the key is the module actually loaded ---------------------------------------------------


class EnvLayers(ModelPlugin):
    """A plugin whose module depends on something outside its files: $TEST_LAYERS."""

    name = "env-layers"

    def load_config(self):
        return parse_config(
            {
                "name": self.name,
                "inputs": [
                    {
                        "name": "x",
                        "dtype_str": "float32",
                        "shapes": {
                            "dims_names": ["batch_size", "features"],
                            "example": [2, 8],
                            "runtime": [-1, 8],
                            "optimization": {"min": [1, 8], "opt": [2, 8], "max": [4, 8]},
                        },
                    }
                ],
                "outputs": [
                    {"name": "y", "shape": {"runtime": [-1, 8], "dims_names": ["batch_size", "y"]}}
                ],
            },
            self.name,
        )

    def load_pytorch_module(self):
        import torch

        torch.manual_seed(0)
        layers = [torch.nn.Linear(8, 8) for _ in range(int(os.environ["TEST_LAYERS"]))]
        return torch.nn.Sequential(*layers).eval()


def _onnx_output(path, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": inputs[0]})[0]


def test_a_module_changed_outside_the_plugins_files_gets_a_new_onnx_and_reference(
    tmp_path, monkeypatch
):
    cache = ArtifactCache(tmp_path)
    experiment = default_experiment(EnvLayers().config)
    made = {}
    for layers in ("6", "2", "6"):
        monkeypatch.setenv("TEST_LAYERS", layers)
        plugin = EnvLayers()  # a new process would build the module again
        onnx = export_onnx(plugin, cache)
        reference = ensure_reference(plugin, cache, experiment)
        with np.load(reference) as data:
            inputs, expected = [data["input_0"]], data["output_0"]
        module, _ = loaded.load_module(plugin)
        np.testing.assert_array_equal(expected, run_pytorch(plugin, module, inputs)[0])
        np.testing.assert_allclose(_onnx_output(onnx.path, inputs), expected, rtol=1e-4)
        made.setdefault(layers, []).append((onnx.key, reference))
    (six, six_again), (two,) = made["6"], made["2"]
    assert two[0] != six[0] and two[1] != six[1]
    assert six_again == six  # the same module finds its own artifacts again


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m[0].weight.data.add_(1e-3),  # a value
        lambda m: m.register_buffer("scale", __import__("torch").ones(1), persistent=False),
        lambda m: m.append(__import__("torch").nn.ReLU()),  # structure, no new tensor
        lambda m: setattr(m[0], "out_features", 9),  # a hyper-parameter only the repr shows
    ],
    ids=["value", "non-persistent buffer", "structure", "hyper-parameter"],
)
def test_the_fingerprint_sees_values_buffers_and_structure(change, monkeypatch):
    monkeypatch.setenv("TEST_LAYERS", "2")
    module = EnvLayers().load_pytorch_module()
    before = loaded.ModuleIdentity(
        loaded._tensors_hash(module), loaded._structure(module), loaded._code_identity(module)
    )
    change(module)
    after = loaded.ModuleIdentity(
        loaded._tensors_hash(module), loaded._structure(module), loaded._code_identity(module)
    )
    assert after != before


# --- a dynamic batch axis with an example batch of 1 -----------------------------------------


class BatchOneEncoder(TinyEncoder):
    """tiny-encoder with `example: [1, 16]`, as a user's text classifier would declare it."""

    def load_config(self):
        config = TinyEncoder().config.model_copy(deep=True)
        for spec in config.inputs:
            spec.shapes.example[0] = 1
        return config


def test_a_dynamic_batch_with_an_example_batch_of_1_exports_and_runs_at_any_batch(tmp_path):
    import onnxruntime as ort

    plugin = BatchOneEncoder()
    assert [spec.shapes.example for spec in plugin.config.inputs] == [[1, 16], [1, 16]]
    artifact = export_onnx(plugin, ArtifactCache(tmp_path), exporter="dynamo")
    assert artifact.parity_passed
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    module, _ = loaded.load_module(plugin)
    for batch in (1, 2, 5):
        inputs = plugin.load_example_inputs([(batch, 16), (batch, 16)])
        got = session.run(None, dict(zip(plugin.config.input_names, inputs)))
        for ref, out in zip(run_pytorch(plugin, module, inputs), got):
            assert out.shape[0] == batch
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# --- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_during_export_says_so_with_the_path(tmp_path, monkeypatch):
    import torch

    def full_disk(module, args, path, **kwargs):
        raise RuntimeError("the exporter wraps it") from OSError(
            28, "No space left on device", str(path)
        )

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheUnwritable) as info:
        export_onnx(get_plugin("tiny-cnn"), cache)
    assert str(info.value).startswith(
        f"cannot write the artifact cache at {tmp_path}: No space left on device ({tmp_path}/"
        "staging/stage-w"
    )
    assert str(info.value).endswith(
        "/model.onnx); free space, make it writable, or choose another with --cache-dir"
    )
    assert info.value.exit_code == 1


# --- an export thread left behind -------------------------------------------------------------


def test_an_export_thread_left_running_does_not_swallow_other_threads_output(capsys):
    release, started = threading.Event(), threading.Event()

    def exporter() -> None:
        with export._captured(io.StringIO()):
            print("exporter chatter")
            started.set()
            release.wait()

    thread = threading.Thread(target=exporter, daemon=True)
    thread.start()
    started.wait(30)
    print("bench's table")
    out = capsys.readouterr().out
    release.set()
    thread.join(30)
    assert out == "bench's table\n"


# As bench.bounded runs an export: in a daemon thread, which a signal leaves running.
_SIGNALLED_DURING_EXPORT = """
import io, signal, sys, threading, time
from pathlib import Path

# A shell starts bench with SIGINT at its default; a pytest process that ran a Ray driver may
# have it ignored at the C level (Ray's core worker), and a child inherits an ignored signal:
# it then slept through the SIGINT (seen twice in full CI runs: the child reported SIG_IGN).
signal.signal(signal.SIGINT, signal.default_int_handler)
from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.onnx_export import _captured

cache = ArtifactCache(Path(sys.argv[1]))
ready = threading.Event()

def export():
    with _captured(io.StringIO()), cache.staging() as staged:
        (staged / "model.onnx").write_bytes(b"half")
        ready.set()
        time.sleep(600)

threading.Thread(target=export, daemon=True).start()
ready.wait()
Path(sys.argv[1], "exporting").touch()  # not on stdout: an old redirect would swallow it
try:
    time.sleep(600)
except KeyboardInterrupt:
    print("error: interrupted", flush=True)
    sys.exit(130)
"""


def test_a_signal_during_an_export_leaves_the_output_and_no_staging(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGNALLED_DURING_EXPORT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "exporting").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert out == "error: interrupted\n"
    assert list((tmp_path / "staging").iterdir()) == []
