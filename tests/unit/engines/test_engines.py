"""One conformance suite for every engine x device that can load here, plus engine specifics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infercmp.core.parity import compare_outputs, default_rtol
from infercmp.engines import Engine, EngineSpec
from infercmp.engines.base import EngineError, UnsupportedCombination
from infercmp.engines.registry import engine_class, engine_entries, get_descriptor
from infercmp.worker.run import load_reference

MODELS = ("tiny-cnn", "tiny-two-io", "tiny-encoder")


def _onnxruntime_has_cuda_ep() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


requires_ort_cuda = pytest.mark.skipif(
    not _onnxruntime_has_cuda_ep(),
    reason="this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)",
)


def _engine_devices() -> list:
    """Every registered engine x each device its descriptor names: the conformance matrix.

    Built from the registry, so an engine added through an entry point is checked too.
    """
    params = []
    for name, entry in engine_entries().items():
        descriptor = entry.load()
        if descriptor is None:
            params.append(
                pytest.param(name, "cpu", id=name, marks=pytest.mark.skip(reason=entry.error))
            )
            continue
        for device in descriptor.devices:
            marks = [pytest.mark.cuda] if device == "cuda" else []
            if name == "onnxruntime" and device == "cuda":
                marks.append(requires_ort_cuda)
            missing = descriptor.availability()
            if missing:
                marks.append(pytest.mark.skip(reason=missing))
            params.append(pytest.param(name, device, id=f"{name}-{device}", marks=marks))
    return params


ENGINE_DEVICES = _engine_devices()


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory):
    """One artifact cache for the session; test files that share it export each model once."""
    from infercmp.artifacts.cache import ArtifactCache

    return ArtifactCache(tmp_path_factory.getbasetemp() / "artifact-cache")


class ModelCase:
    """A built-in model's names, reference npz and (on demand) ONNX file and TensorRT plan."""

    def __init__(self, name: str, cache) -> None:
        from infercmp.artifacts.reference import ensure_reference
        from infercmp.workload.plugins import get_plugin
        from infercmp.workload.shapes import default_experiment

        self.name = name
        self.cache = cache
        self.plugin = get_plugin(name)
        config = self.plugin.config
        self.input_names = tuple(config.input_names)
        self.output_names = tuple(config.output_names)
        self.reference = ensure_reference(self.plugin, cache, default_experiment(config))
        self._onnx = None
        self._plans: dict[tuple[str, str], tuple[Path | None, dict]] = {}

    @property
    def onnx(self):
        if self._onnx is None:
            from infercmp.artifacts.onnx_export import export_onnx

            self._onnx = export_onnx(self.plugin, self.cache)
        return self._onnx

    def artifact(self, engine: str, precision: str = "fp32") -> tuple[Path | None, dict]:
        """What bench would hand the engine: its descriptor's artifact and option defaults."""
        from infercmp.engines.descriptor import ConvertContext

        descriptor = get_descriptor(engine)
        if descriptor.artifact == "module" or precision not in descriptor.precisions:
            return (None if descriptor.artifact == "module" else self.onnx.path), {}
        key = (engine, precision)
        if key not in self._plans:
            context = ConvertContext(self.plugin, self.cache, self.onnx, lambda _msg: None)
            converted = descriptor.convert(context, precision, descriptor.options())
            self._plans[key] = (
                (converted.artifact or self.onnx.path, dict(converted.options))
                if converted
                else (self.onnx.path, {})
            )
        return self._plans[key]

    def spec(self, engine: str, device: str, precision: str = "fp32", **options) -> EngineSpec:
        artifact, defaults = self.artifact(engine, precision)
        return EngineSpec(
            model=self.name,
            device=device,
            precision=precision,
            artifact=artifact,
            input_names=self.input_names,
            output_names=self.output_names,
            options={**defaults, **options},
        )


@pytest.fixture(scope="session")
def model_cases(artifact_cache):
    cases: dict[str, ModelCase] = {}

    def get(name: str) -> ModelCase:
        if name not in cases:
            cases[name] = ModelCase(name, artifact_cache)
        return cases[name]

    return get


def run_once(engine) -> list[np.ndarray]:
    engine.copy_in()
    engine.compute()
    outputs = engine.copy_out()
    engine.synchronize()
    return [np.array(o, copy=True) for o in outputs]  # copy_out's arrays may be reused


def assert_matches(outputs, reference, names, precision="fp32", device="cpu"):
    parity = compare_outputs(outputs, reference, names, default_rtol(precision, device))
    assert parity.ok, parity.model_dump()


# -- the conformance suite ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("engine_name", "device"), ENGINE_DEVICES)
def test_lifecycle_gives_reference_outputs(engine_name, device, model, model_cases):
    case = model_cases(model)
    inputs, reference = load_reference(case.reference)
    engine = engine_class(engine_name)()
    assert isinstance(engine, Engine)
    assert engine.name == engine_name
    engine.load(case.spec(engine_name, device))
    engine.prepare(inputs)
    first = run_once(engine)
    second = run_once(engine)
    third = run_once(engine)
    engine.release()

    assert_matches(first, reference, case.output_names, device=device)
    for again in (second, third):
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("engine_name", "device"), ENGINE_DEVICES)
def test_stream_matches_device(engine_name, device, model_cases):
    case = model_cases("tiny-two-io")
    inputs, _ = load_reference(case.reference)
    engine = engine_class(engine_name)()
    engine.load(case.spec(engine_name, device))
    engine.prepare(inputs)
    if device == "cpu":
        assert engine.stream is None
    else:
        assert isinstance(engine.stream, int)
    engine.release()


@pytest.mark.parametrize(("engine_name", "device"), ENGINE_DEVICES)
def test_device_resident_compute_reuses_inputs(engine_name, device, model_cases):
    """copy_in once, compute many times, copy_out once: the device-resident mode's sequence."""
    case = model_cases("tiny-two-io")
    inputs, reference = load_reference(case.reference)
    engine = engine_class(engine_name)()
    engine.load(case.spec(engine_name, device))
    engine.prepare(inputs)
    engine.copy_in()
    for _ in range(3):
        engine.compute()
    outputs = engine.copy_out()
    engine.synchronize()
    assert_matches(outputs, reference, case.output_names, device=device)
    engine.release()


@pytest.mark.parametrize(("engine_name", "device"), ENGINE_DEVICES)
def test_invalid_use_raises_clear_errors(engine_name, device, model_cases):
    case = model_cases("tiny-two-io")
    inputs, _ = load_reference(case.reference)
    engine = engine_class(engine_name)()
    with pytest.raises(EngineError, match=r"call load\(\) and prepare\(\) before compute\(\)"):
        engine.compute()
    with pytest.raises(EngineError, match=r"call load\(\) before prepare\(\)"):
        engine.prepare(inputs)
    engine.load(case.spec(engine_name, device))
    with pytest.raises(EngineError, match=r"load\(\) is allowed once"):
        engine.load(case.spec(engine_name, device))
    with pytest.raises(EngineError, match=r"before copy_in\(\)"):
        engine.copy_in()
    with pytest.raises(EngineError, match=r"before hot_path\(\)"):
        engine.hot_path()  # the timed loops' hooks are handed out only once prepared
    with pytest.raises(EngineError, match=r"got 1 arrays for 2 inputs \(features, token_ids\)"):
        engine.prepare(inputs[:1])
    with pytest.raises(EngineError, match="input 'token_ids' is list, expected a numpy array"):
        engine.prepare([inputs[0], inputs[1].tolist()])
    engine.prepare(inputs)
    run_once(engine)
    engine.release()
    engine.release()  # twice is fine
    with pytest.raises(EngineError, match=r"is released; call load\(\) and prepare\(\)"):
        engine.copy_out()


@pytest.mark.parametrize(("engine_name", "device"), ENGINE_DEVICES)
def test_unknown_option_is_named(engine_name, device, model_cases):
    case = model_cases("tiny-two-io")
    engine = engine_class(engine_name)()
    with pytest.raises(EngineError, match=f"engine '{engine_name}': no option 'warp_speed'"):
        engine.load(case.spec(engine_name, device, warp_speed=9))


# -- PyTorch specifics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "device"),
    [
        ("bf16", "cpu"),
        ("fp16", "cpu"),
        pytest.param("fp16", "cuda", marks=pytest.mark.cuda),
        pytest.param("bf16", "cuda", marks=pytest.mark.cuda),
    ],
)
def test_pytorch_reduced_precision(precision, device, model_cases):
    case = model_cases("tiny-two-io")
    inputs, reference = load_reference(case.reference)
    engine = engine_class("pytorch")()
    engine.load(case.spec("pytorch", device, precision))
    engine.prepare(inputs)
    outputs = run_once(engine)
    engine.release()
    assert outputs[0].dtype == (np.float16 if precision == "fp16" else np.float32)
    assert_matches(outputs, reference, case.output_names, precision, device)


def test_pytorch_channels_last_and_threads(model_cases):
    case = model_cases("tiny-cnn")
    inputs, reference = load_reference(case.reference)
    engine = engine_class("pytorch")()
    engine.load(case.spec("pytorch", "cpu", channels_last=True, threads=1))
    assert engine.effective_options["channels_last"] is True
    assert engine.info["threads"] == 1
    engine.prepare(inputs)
    assert_matches(run_once(engine), reference, case.output_names)
    engine.release()


@pytest.mark.cuda
@pytest.mark.parametrize("model", MODELS)
def test_pytorch_cuda_graph(model, model_cases):
    case = model_cases(model)
    inputs, reference = load_reference(case.reference)
    engine = engine_class("pytorch")()
    engine.load(case.spec("pytorch", "cuda", cuda_graph=True))
    engine.prepare(inputs)
    first = run_once(engine)
    assert_matches(first, reference, case.output_names, device="cuda")
    np.testing.assert_array_equal(first[0], run_once(engine)[0])
    engine.release()


def test_pytorch_option_errors(model_cases):
    case = model_cases("tiny-two-io")
    with pytest.raises(UnsupportedCombination, match="option cuda_graph needs device 'cuda'"):
        engine_class("pytorch")().load(case.spec("pytorch", "cpu", cuda_graph=True))
    with pytest.raises(EngineError, match="option compile='fastest': Input should be 'default'"):
        engine_class("pytorch")().load(case.spec("pytorch", "cpu", compile="fastest"))
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(EngineError, match=f"compile='{mode}' already replays CUDA graphs"):
            engine_class("pytorch")().load(
                case.spec("pytorch", "cuda", compile=mode, cuda_graph=True)
            )


# -- ONNX Runtime specifics ----------------------------------------------------------------------


def test_onnxruntime_cuda_refused_without_gpu(model_cases, monkeypatch):
    from infercmp.platform import gpus as devices

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    case = model_cases("tiny-two-io")
    with pytest.raises(UnsupportedCombination, match="NVML sees 0 CUDA device"):
        engine_class("onnxruntime")().load(case.spec("onnxruntime", "cuda"))


def test_onnxruntime_checks_the_session_really_uses_the_ep(model_cases, monkeypatch):
    """A session that silently fell back to the CPU is an error, not a CUDA measurement."""
    import onnxruntime as ort

    from infercmp.engines.onnxruntime import runtime as ort_engine
    from infercmp.platform import gpus as devices

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(ort_engine.OnnxRuntimeEngine, "_create_stream", lambda self, i: None)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    real_session = ort.InferenceSession

    def cpu_only(path, options, providers):  # what ORT does when the CUDA EP cannot start
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", cpu_only)
    case = model_cases("tiny-two-io")
    with pytest.raises(
        UnsupportedCombination,
        match="asked for CUDAExecutionProvider but the session runs on CPUExecutionProvider",
    ):
        engine_class("onnxruntime")().load(case.spec("onnxruntime", "cuda"))


def test_onnxruntime_precisions(model_cases, tmp_path):
    case = model_cases("tiny-two-io")
    with pytest.raises(UnsupportedCombination, match="unsupported precision fp16"):
        # The fp32 file itself, not the fp16 conversion bench would hand it.
        engine_class("onnxruntime")().load(case.spec("onnxruntime", "cpu", "fp16", fp16_model=None))
    with pytest.raises(UnsupportedCombination, match="does not support precision 'bf16'"):
        engine_class("onnxruntime")().load(case.spec("onnxruntime", "cpu", "bf16"))
    with pytest.raises(UnsupportedCombination, match="'tensorrt' needs device 'cuda'"):
        engine_class("onnxruntime")().load(
            case.spec("onnxruntime", "cpu", execution_provider="tensorrt")
        )


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_onnxruntime_fp16_model(keep_io_types, model_cases, tmp_path):
    """An fp16-converted file runs; with fp16 inputs the engine casts the host arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    case = model_cases("tiny-two-io")
    converted = convert_float_to_float16(
        onnx.load(str(case.onnx.path)), keep_io_types=keep_io_types
    )
    fp16_path = tmp_path / "fp16.onnx"
    onnx.save(converted, str(fp16_path))

    inputs, reference = load_reference(case.reference)
    engine = engine_class("onnxruntime")()
    engine.load(case.spec("onnxruntime", "cpu", "fp16", fp16_model=str(fp16_path)))
    assert engine.info["artifact"] == str(fp16_path)
    engine.prepare(inputs)
    outputs = run_once(engine)
    engine.release()
    assert outputs[0].dtype == (np.float32 if keep_io_types else np.float16)
    assert_matches(outputs, reference, case.output_names, "fp16")


def test_onnxruntime_options_are_applied(model_cases):
    case = model_cases("tiny-two-io")
    engine = engine_class("onnxruntime")()
    engine.load(
        case.spec(
            "onnxruntime",
            "cpu",
            graph_optimization_level="basic",
            intra_op_threads=1,
            execution_mode="parallel",
        )
    )
    assert engine.effective_options["intra_op_threads"] == 1
    assert engine.info["providers"] == ["CPUExecutionProvider"]
    engine.release()
    with pytest.raises(EngineError, match="option graph_optimization_level='max': Input should be"):
        engine_class("onnxruntime")().load(
            case.spec("onnxruntime", "cpu", graph_optimization_level="max")
        )


def test_onnxruntime_rejects_mismatched_names(model_cases):
    case = model_cases("tiny-two-io")
    spec = case.spec("onnxruntime", "cpu")
    wrong = EngineSpec(**{**spec.__dict__, "input_names": ("a", "b")})
    with pytest.raises(EngineError, match=r"the ONNX file has inputs \['features', 'token_ids'\]"):
        engine_class("onnxruntime")().load(wrong)
