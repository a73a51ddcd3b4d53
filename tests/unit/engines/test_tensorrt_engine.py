"""The TensorRT engine: pure shape/dtype logic, the lifecycle over fakes, and the real modules.

Where TensorRT can run nothing here (no GPU; the H200 refuses TensorRT-RTX), the lifecycle runs
over a fake `trt` module whose plan is the identity, with a fake CUDA runtime on the CPU and
with the real cuda-python runtime where a GPU exists, so the buffers, copies and stream are real.
"""

from __future__ import annotations

import ctypes
import enum
import gc
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from infercmp.core.errors import MissingDependency
from infercmp.engines import Engine, EngineSpec
from infercmp.engines.base import EngineError, UnsupportedCombination
from infercmp.engines.registry import engine_class
from infercmp.engines.tensorrt import runtime as trt_engine
from infercmp.engines.tensorrt.diagnostics import deserialize_failure_message, rtx_supported_ccs
from infercmp.engines.tensorrt.io import (
    InputProfile,
    bf16_bits_to_float32,
    buffer_nbytes,
    check_input_shape,
    float32_to_bf16_bits,
    from_engine_dtype,
    host_dtype,
    resolve_output_shape,
    to_engine_dtype,
)
from infercmp.engines.tensorrt.loading import NO_GPU_MESSAGE, TensorRTUnavailable
from infercmp.engines.tensorrt.runtime import EngineRefused, TensorRTEngine

# -- fakes -------------------------------------------------------------------------------------


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3


class ComputeCapability(enum.Enum):
    NONE = 0
    SM75 = 75
    SM86 = 86
    SM89 = 89
    SM120 = 120


class EngineInvalidityDiagnostics(enum.IntEnum):
    VERSION_MISMATCH = 1
    UNSUPPORTED_CC = 2


ITEMSIZE = {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT32": 4, "INT64": 8, "INT8": 1, "BOOL": 1}


class FakeEngine:
    """A plan whose every output `y_<x>` is a copy of input `<x>` (the identity)."""

    def __init__(self, desc: dict, module: types.ModuleType) -> None:
        self.desc, self.module = desc, module
        self.tensors = [(t["name"], TensorIOMode.INPUT) for t in desc["inputs"]]
        self.tensors += [(f"y_{t['name']}", TensorIOMode.OUTPUT) for t in desc["inputs"]]
        self.by_name = {t["name"]: t for t in desc["inputs"]}

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i][0]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return dict(self.tensors)[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.by_name[name.removeprefix("y_")]["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.by_name[name.removeprefix("y_")]["dims"])

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        t = self.by_name[name]
        return [tuple(t["min"]), tuple(t["opt"]), tuple(t["max"])]

    def is_shape_inference_io(self, name: str) -> bool:
        return False

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.launches = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def infer_shapes(self) -> list[str]:
        return [n for n in self.engine.by_name if n not in self.shapes]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name.removeprefix("y_")]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        cudart = self.engine.module.cudart
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        for name, shape in self.shapes.items():
            n = int(np.prod(shape)) * ITEMSIZE[self.engine.by_name[name]["dtype"]]
            err = cudart.cudaMemcpyAsync(
                self.addresses[f"y_{name}"], self.addresses[name], n, kind, stream
            )
            assert int(err[0]) == 0
        self.launches += 1
        return True


class FakeRuntime:
    def __init__(self, logger) -> None:
        self.logger = logger
        self.module = FAKE_MODULES[-1]

    def deserialize_cuda_engine(self, plan: bytes):
        desc = json.loads(plan)
        if "refuse" in desc:
            self.logger.log(Severity.ERROR, desc["refuse"])
            return None
        return FakeEngine(desc, self.module)

    def get_engine_validity(self, plan: bytes):
        invalid = types.SimpleNamespace(name="INVALID")
        return invalid, int(EngineInvalidityDiagnostics.UNSUPPORTED_CC)


FAKE_MODULES: list[types.ModuleType] = []


def fake_trt(module_name: str, version: str, cudart) -> types.ModuleType:
    module = types.ModuleType(module_name)
    module.__version__ = version

    class ILogger:
        def __init__(self) -> None:
            pass

    module.ILogger = ILogger
    module.Runtime = FakeRuntime
    module.DataType = DataType
    module.TensorIOMode = TensorIOMode
    module.ComputeCapability = ComputeCapability
    module.EngineInvalidityDiagnostics = EngineInvalidityDiagnostics
    module.cudart = cudart
    FAKE_MODULES.append(module)
    return module


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class FakeStream:
    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class FakeCudart:
    """The slice of `cuda.bindings.runtime` the engine uses, on host memory, counting frees."""

    cudaStreamNonBlocking = 1

    class cudaDeviceAttr(enum.Enum):  # noqa: N801 - named as in cuda-python
        cudaDevAttrComputeCapabilityMajor = 75
        cudaDevAttrComputeCapabilityMinor = 76

    class cudaMemcpyKind(enum.Enum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    def __init__(self, devices: int = 1, cc: tuple[int, int] = (8, 9)) -> None:
        self.devices, self.cc = devices, cc
        self.device_mem: dict[int, ctypes.Array] = {}
        self.host_mem: dict[int, ctypes.Array] = {}
        self.streams: set[int] = set()
        self.copies: list[str] = []

    def _ok(self, *values):
        return (CudaError.cudaSuccess, *values)

    def cudaGetErrorString(self, err):  # noqa: N802
        return self._ok(b"fake error")

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.devices == 0:
            return CudaError.cudaErrorNoDevice, 0
        return self._ok(self.devices)

    def cudaDeviceGetAttribute(self, attr, index):  # noqa: N802
        major = attr is self.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor
        return self._ok(self.cc[0] if major else self.cc[1])

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return self._ok(types.SimpleNamespace(name=b"NVIDIA Fake GPU\x00\x00"))

    def cudaSetDevice(self, index):  # noqa: N802
        return self._ok()

    def _alloc(self, table, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        table[ctypes.addressof(buf)] = buf
        return self._ok(ctypes.addressof(buf))

    def cudaMalloc(self, nbytes):  # noqa: N802
        return self._alloc(self.device_mem, nbytes)

    def cudaMallocHost(self, nbytes):  # noqa: N802
        return self._alloc(self.host_mem, nbytes)

    def cudaFree(self, ptr):  # noqa: N802
        del self.device_mem[ptr]
        return self._ok()

    def cudaFreeHost(self, ptr):  # noqa: N802
        del self.host_mem[ptr]
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        assert int(stream) in self.streams
        self.copies.append(kind.name)
        ctypes.memmove(dst, src, nbytes)
        return self._ok()

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        stream = FakeStream(1000 + len(self.streams))
        self.streams.add(int(stream))
        return self._ok(stream)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return self._ok()

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.streams.remove(int(stream))
        return self._ok()


def write_plan(tmp_path: Path, inputs: list[dict], **extra) -> Path:
    path = tmp_path / "model.plan"
    path.write_text(json.dumps({"inputs": inputs, **extra}))
    return path


X_FLOAT = {"name": "x", "dtype": "FLOAT", "dims": [-1, 3], "min": [1, 3], "opt": [2, 3]}
X_FLOAT["max"] = [4, 3]


def spec_for(plan: Path, inputs: list[dict], **options) -> EngineSpec:
    names = tuple(t["name"] for t in inputs)
    return EngineSpec(
        model="identity",
        device="cuda",
        precision="fp32",
        artifact=plan,
        input_names=names,
        output_names=tuple(f"y_{n}" for n in names),
        options=options,
    )


@pytest.fixture
def fake_backend(monkeypatch):
    """Install a fake CUDA runtime and fake TensorRT-RTX module; returns (cudart, module)."""
    cudart = FakeCudart()
    module = fake_trt("tensorrt_rtx_bindings", "1.7.1.116", cudart)
    monkeypatch.setattr(trt_engine, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_engine, "import_backend", lambda backend: module)
    return cudart, module


def run_once(engine: TensorRTEngine) -> list[np.ndarray]:
    engine.copy_in()
    engine.compute()
    outputs = engine.copy_out()
    engine.synchronize()
    return outputs


# -- (a) pure logic ----------------------------------------------------------------------------


def test_host_dtypes_map_each_tensorrt_type():
    assert host_dtype(DataType.FLOAT) == np.float32
    assert host_dtype(DataType.HALF) == np.float16
    assert host_dtype(DataType.BF16) == np.uint16  # raw bits; see to_engine_dtype
    assert host_dtype(DataType.INT32) == np.int32
    assert host_dtype(DataType.INT64) == np.int64
    assert host_dtype(DataType.INT8) == np.int8
    assert host_dtype(DataType.UINT8) == np.uint8
    assert host_dtype(DataType.BOOL) == np.bool_
    with pytest.raises(EngineError, match=r"^tensor 'q' has TensorRT type FP8, which infercmp"):
        host_dtype(DataType.FP8, "q")


def test_float32_inputs_convert_to_fp16_on_the_host():
    x = np.array([[1.0, 1.0 / 3.0, 65504.0]], dtype=np.float32)
    out = to_engine_dtype("x", x, DataType.HALF)
    assert out.dtype == np.float16 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float16))


def test_bf16_conversion_matches_ml_dtypes_rounding():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(10_000).astype(np.float32) * 1e3,
            np.array([0.0, -0.0, np.inf, -np.inf, 1.00390625, 1.01171875, 3.4e38], np.float32),
        ]
    )
    bits = to_engine_dtype("x", x, DataType.BF16)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(bits, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    widened = from_engine_dtype(bits, DataType.BF16)
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened, x.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_bf16_keeps_nan_a_nan():
    nan_with_payload = np.array([0x7FFFFFFF], dtype=np.uint32).view(np.float32)
    back = bf16_bits_to_float32(float32_to_bf16_bits(nan_with_payload))
    assert np.isnan(back).all()


def test_integer_inputs_narrow_only_when_every_value_fits():
    ids = np.array([[1, 2, 30000]], dtype=np.int64)
    assert to_engine_dtype("ids", ids, DataType.INT32).dtype == np.int32
    big = np.array([2**40], dtype=np.int64)
    with pytest.raises(EngineError, match=r"^input 'ids' has values in \[1099511627776, "):
        to_engine_dtype("ids", big, DataType.INT32)


def test_kind_mismatch_is_one_clear_error():
    with pytest.raises(
        EngineError, match=r"^input 'x' is int64 but the engine expects float16; pass floating"
    ):
        to_engine_dtype("x", np.zeros(3, np.int64), DataType.HALF)
    with pytest.raises(EngineError, match=r"^input 'ids' is float32 but the engine expects int32"):
        to_engine_dtype("ids", np.zeros(3, np.float32), DataType.INT32)


PROFILE = InputProfile("input_ids", dims=(-1, -1), min=(1, 8), opt=(4, 128), max=(8, 512))


def test_profile_accepts_its_bounds_inclusive():
    check_input_shape((1, 8), PROFILE)
    check_input_shape((8, 512), PROFILE)


def test_shape_outside_profile_names_input_shape_and_bounds():
    with pytest.raises(EngineError) as err:
        check_input_shape((16, 128), PROFILE)
    assert str(err.value) == (
        "input 'input_ids' has shape [16, 128], outside the TensorRT engine's optimisation "
        "profile in dimension 0 (allowed min [1, 8], max [8, 512]); rebuild the engine with a "
        "wider profile (`optimization` in the model config)"
    )


def test_wrong_rank_and_static_dims_are_rejected():
    with pytest.raises(EngineError, match=r"has shape \[4\] \(rank 1\) but the TensorRT engine"):
        check_input_shape((4,), PROFILE)
    image = InputProfile("image", dims=(-1, 3, 224, 224), min=(1, 3, 224, 224),
                         opt=(1, 3, 224, 224), max=(8, 3, 224, 224))  # fmt: skip
    with pytest.raises(EngineError, match=r"dimension 1 is fixed at 3 in the TensorRT engine"):
        check_input_shape((1, 4, 224, 224), image)


def test_output_shapes_resolve_or_say_data_dependent():
    assert resolve_output_shape("logits", (2, 1000)) == (2, 1000)
    with pytest.raises(EngineError, match=r"^output 'boxes' has shape \[-1, 4\] after the input"):
        resolve_output_shape("boxes", (-1, 4))


def test_buffer_sizes():
    assert buffer_nbytes((8, 3, 224, 224), np.dtype(np.float16)) == 8 * 3 * 224 * 224 * 2
    assert buffer_nbytes((), np.dtype(np.float32)) == 4
    assert buffer_nbytes((0, 3), np.dtype(np.float32)) == 0


def test_refusal_message_for_compute_capability_9_0():
    module = fake_trt("tensorrt_rtx_bindings", "1.7.1.116", None)
    message = deserialize_failure_message(
        module, "m.plan", "NVIDIA H200", (9, 0), ["IRuntime::deserializeCudaEngine: Error"]
    )
    assert message == (
        "TensorRT-RTX 1.7 cannot run engines on NVIDIA H200 (compute capability 9.0); it "
        "supports 7.5/8.6/8.9/12.0; use the 'tensorrt' backend (pip install 'infercmp[tensorrt]')"
    )


# What TensorRT-RTX 1.7.1 logged on an NVIDIA H200, captured there by this engine's logger.
H200_LOG_ERROR = (
    "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine cannot run on "
    "this GPU, which has compute capability 9.0. Supported compute capabilities: 8.0 8.6 8.9 "
    "12.0 12.1 >12.0. TensorRT-RTX does not support this compute capability, so the engine "
    "cannot be rebuilt for it. In throwUnlessComputeCapSupported at "
    "/_src/runtime/dispatch/runtime.cpp:84)"
)


def test_refusal_message_uses_the_runtimes_own_list_when_logged():
    module = fake_trt("tensorrt_rtx_bindings", "1.7.1.116", None)
    message = deserialize_failure_message(module, "m.plan", "NVIDIA H200", (9, 0), [H200_LOG_ERROR])
    assert message == (
        "TensorRT-RTX 1.7 cannot run engines on NVIDIA H200 (compute capability 9.0); it "
        "supports 8.0/8.6/8.9/12.0/12.1/>12.0; use the 'tensorrt' backend "
        "(pip install 'infercmp[tensorrt]')"
    )


def test_other_deserialize_failures_quote_the_runtime_log():
    module = fake_trt("tensorrt", "10.13.0.35", None)
    message = deserialize_failure_message(
        module, "m.plan", "NVIDIA H200", (9, 0), ["Error Code 6:  The engine plan file\n is old"]
    )
    assert message == (
        "TensorRT 10.13 could not load the engine m.plan on NVIDIA H200 (compute capability 9.0):"
        " Error Code 6: The engine plan file is old; a plan runs only with the TensorRT version "
        "and GPU family that built it: rebuild it with `infercmp build --force`"
    )


# -- (b) the lifecycle over a fake TensorRT and a fake CUDA runtime ----------------------------


def test_tensorrt_engine_satisfies_the_protocol():
    assert engine_class("tensorrt") is TensorRTEngine
    assert isinstance(TensorRTEngine(), Engine)
    assert TensorRTEngine.name == "tensorrt"


def test_lifecycle_runs_the_plan_and_release_frees_everything_on_a_fake_tensorrt(
    tmp_path, fake_backend
):
    cudart, _ = fake_backend
    plan = write_plan(tmp_path, [X_FLOAT])
    engine = TensorRTEngine()
    engine.load(spec_for(plan, [X_FLOAT]))
    assert engine.stream in cudart.streams
    assert engine.info["gpu"] == "NVIDIA Fake GPU"
    assert engine.info["compute_capability"] == "8.9"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    engine.prepare([x])
    (y,) = run_once(engine)
    np.testing.assert_array_equal(y, x)
    assert cudart.copies == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToDevice",
                             "cudaMemcpyDeviceToHost"]  # fmt: skip

    # A second prepare with another batch replaces the buffers instead of leaking them.
    engine.prepare([np.ones((4, 3), np.float32)])
    assert len(cudart.device_mem) == 2
    (y,) = run_once(engine)
    np.testing.assert_array_equal(y, np.ones((4, 3)))

    engine.release()
    engine.release()  # idempotent
    assert cudart.device_mem == {} and cudart.streams == set()
    # The caller's output array stays valid after release; its pinned buffer goes with it.
    np.testing.assert_array_equal(y, np.ones((4, 3)))
    assert len(cudart.host_mem) == 1
    del y
    gc.collect()
    assert cudart.host_mem == {}


@pytest.mark.parametrize(
    ("dtype", "expect"),
    [("HALF", np.float16), ("BF16", np.float32)],
)
def test_reduced_precision_plans_take_float32_inputs_on_a_fake_tensorrt(
    tmp_path, fake_backend, dtype, expect
):
    tensor = {**X_FLOAT, "dtype": dtype}
    engine = TensorRTEngine()
    engine.load(spec_for(write_plan(tmp_path, [tensor]), [tensor]))
    x = np.array([[0.1, 1.0 / 3.0, -2.5]], dtype=np.float32)
    engine.prepare([x])
    (y,) = run_once(engine)
    assert y.dtype == expect
    np.testing.assert_allclose(y, x, rtol=1e-2)
    assert engine.info["io_dtypes"]["x"] == {"HALF": "float16", "BF16": "bfloat16"}[dtype]
    engine.release()


def test_prepare_checks_the_profile_before_allocating_on_a_fake_tensorrt(tmp_path, fake_backend):
    cudart, _ = fake_backend
    engine = TensorRTEngine()
    engine.load(spec_for(write_plan(tmp_path, [X_FLOAT]), [X_FLOAT]))
    with pytest.raises(EngineError, match=r"^input 'x' has shape \[5, 3\], outside the TensorRT"):
        engine.prepare([np.zeros((5, 3), np.float32)])
    assert cudart.device_mem == {}
    engine.release()


def test_plan_for_another_model_is_rejected_on_a_fake_tensorrt(tmp_path, fake_backend):
    plan = write_plan(tmp_path, [X_FLOAT])
    spec = EngineSpec("m", "cuda", "fp32", plan, ("input",), ("y_x",))
    with pytest.raises(EngineError, match=r"has inputs \['x'\] but the model config names"):
        TensorRTEngine().load(spec)


def test_missing_plan_says_how_to_build_one_on_a_fake_tensorrt(tmp_path, fake_backend):
    with pytest.raises(EngineError, match=r"does not exist; build it with `infercmp build`"):
        TensorRTEngine().load(spec_for(tmp_path / "absent.plan", [X_FLOAT]))


def test_cpu_device_is_unsupported(tmp_path):
    spec = EngineSpec("m", "cpu", "fp32", tmp_path / "m.plan", ("x",), ("y",))
    with pytest.raises(UnsupportedCombination, match=r"does not run on device 'cpu'"):
        TensorRTEngine().load(spec)


# -- (c) error paths ---------------------------------------------------------------------------


def test_no_gpu_is_one_clear_line_on_a_fake_tensorrt(tmp_path, fake_backend):
    cudart, _ = fake_backend
    cudart.devices = 0
    with pytest.raises(UnsupportedCombination) as err:
        TensorRTEngine().load(spec_for(write_plan(tmp_path, [X_FLOAT]), [X_FLOAT]))
    assert str(err.value) == NO_GPU_MESSAGE + " (cudaErrorNoDevice)"


def test_rtx_refusing_compute_capability_9_0_is_explained_on_a_fake_tensorrt(
    tmp_path, fake_backend
):
    cudart, _ = fake_backend
    cudart.cc = (9, 0)
    plan = write_plan(tmp_path, [X_FLOAT], refuse="Error Code 1: the engine is not supported")
    with pytest.raises(EngineRefused) as err:
        TensorRTEngine().load(spec_for(plan, [X_FLOAT]))
    assert str(err.value) == (
        "TensorRT-RTX 1.7 cannot run engines on NVIDIA Fake GPU (compute capability 9.0); it "
        "supports 7.5/8.6/8.9/12.0; use the 'tensorrt' backend (pip install 'infercmp[tensorrt]')"
    )


def test_refusal_on_a_supported_gpu_gives_the_runtime_reasons_on_a_fake_tensorrt(
    tmp_path, fake_backend
):
    plan = write_plan(tmp_path, [X_FLOAT], refuse="Error Code 1: version tag mismatch")
    with pytest.raises(EngineRefused) as err:
        TensorRTEngine().load(spec_for(plan, [X_FLOAT]))
    assert "engine validity INVALID (UNSUPPORTED_CC); Error Code 1: version tag mismatch" in str(
        err.value
    )


def test_missing_module_names_the_extra(monkeypatch):
    from infercmp.engines.tensorrt.flavour import load_trt_module

    load_trt_module.cache_clear()  # it caches the module found by earlier tests
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)
    with pytest.raises(TensorRTUnavailable) as err:
        trt_engine.import_backend(None)
    message = str(err.value)
    assert isinstance(err.value, MissingDependency)
    assert isinstance(err.value, UnsupportedCombination)
    assert message.startswith(
        "the TensorRT engine needs the Python module 'tensorrt' or 'tensorrt_rtx_bindings', "
        "which is not installed"
    )
    assert message.endswith(
        "install it with: pip install 'infercmp[tensorrt]' or pip install 'infercmp[tensorrt-rtx]'"
    )
    with pytest.raises(TensorRTUnavailable, match=r"pip install 'infercmp\[tensorrt-rtx\]'$"):
        trt_engine.import_backend("tensorrt-rtx")
    with pytest.raises(EngineError, match=r"^unknown TensorRT backend 'trt'; use one of"):
        trt_engine.import_backend("trt")


def test_missing_cuda_python_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(TensorRTUnavailable, match=r"needs cuda-python .* 'infercmp\[tensorrt\]'$"):
        trt_engine.import_cudart()


def test_importing_the_engine_and_its_runtimes_does_not_import_torch():
    code = (
        "import sys\n"
        "import infercmp.engines.tensorrt.runtime\n"
        "import infercmp.engines.tensorrt.loading as m\n"
        "for name in ('tensorrt', 'tensorrt-rtx'):\n"
        "    try:\n"
        "        m.import_backend(name)\n"
        "    except m.TensorRTUnavailable:\n"
        "        pass\n"
        "try:\n"
        "    m.import_cudart()\n"
        "except m.TensorRTUnavailable:\n"
        "    pass\n"
        "print(sorted(n for n in sys.modules if n == 'torch' or n.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- real TensorRT-RTX / TensorRT --------------------------------------------------------------


def build_identity_relu_plan(trt, path: Path) -> Path:
    """A real plan, y = relu(x) with x of shape (-1, 3), built with the builder API."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.DataType.FLOAT, (-1, 3))
    relu = network.add_activation(x, trt.ActivationType.RELU)
    relu.get_output(0).name = "y"
    network.mark_output(relu.get_output(0))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 3), (2, 3), (4, 3))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "the builder returned no plan"
    path.write_bytes(bytes(plan))
    return path


@pytest.fixture(scope="module")
def real_plan(tmp_path_factory):
    trt = trt_engine.import_backend(None)
    return trt, build_identity_relu_plan(trt, tmp_path_factory.mktemp("trt") / "relu.plan")


def real_spec(plan: Path, trt) -> EngineSpec:
    backend = "tensorrt-rtx" if trt_engine.is_rtx(trt) else "tensorrt"
    return EngineSpec("relu", "cuda", "fp32", plan, ("x",), ("y",), {"backend": backend})


def _has_gpu() -> bool:
    try:
        from cuda.bindings import runtime
    except ImportError:
        return False
    err, count = runtime.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


@pytest.mark.tensorrt
def test_real_module_knows_its_supported_compute_capabilities():
    trt = trt_engine.import_backend(None)
    if not trt_engine.is_rtx(trt):
        pytest.skip("only TensorRT-RTX limits compute capabilities; this is TensorRT")
    ccs = rtx_supported_ccs(trt)
    assert (8, 9) in ccs and (12, 0) in ccs and (9, 0) not in ccs


@pytest.mark.tensorrt
@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path; a CUDA device is visible")
def test_real_load_without_gpu_says_no_cuda_device(real_plan):
    trt, plan = real_plan
    with pytest.raises(UnsupportedCombination, match=rf"^{NO_GPU_MESSAGE} \(cudaError"):
        TensorRTEngine().load(real_spec(plan, trt))


@pytest.mark.tensorrt
@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path; a CUDA device is visible")
def test_real_runtime_without_gpu_logs_why_and_the_message_quotes_it(real_plan):
    """What deserialising does without a GPU, for real: None, with the reason in the log."""
    trt, plan = real_plan
    logger = trt_engine.make_logger(trt)
    runtime = trt.Runtime(logger)
    data = plan.read_bytes()
    assert runtime.deserialize_cuda_engine(data) is None
    assert any("CUDA driver version is insufficient" in e for e in logger.errors())
    validity = trt_engine.rtx_validity(trt, runtime, data) if trt_engine.is_rtx(trt) else None
    message = deserialize_failure_message(trt, plan, None, None, logger.errors(), validity)
    assert "could not load the engine" in message and "\n" not in message


def _gpu_the_runtime_refuses(trt) -> tuple[str, tuple[int, int]] | None:
    """GPU 0 and its compute capability when this TensorRT flavour cannot run plans on it."""
    from cuda.bindings import runtime

    gpu, cc = trt_engine.cuda_device(runtime, 0)
    if trt_engine.is_rtx(trt) and cc not in rtx_supported_ccs(trt):
        return gpu, cc
    return None


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_real_plan_on_a_gpu_the_runtime_refuses_is_one_line_with_the_reason(real_plan):
    trt, plan = real_plan
    refused = _gpu_the_runtime_refuses(trt)
    if refused is None:
        pytest.skip(
            f"{trt_engine.backend_label(trt)} runs plans on this GPU: nothing is refused "
            "(test_real_plan_computes_relu runs the plan instead)"
        )
    gpu, cc = refused
    with pytest.raises(EngineRefused) as info:
        TensorRTEngine().load(real_spec(plan, trt))
    message = str(info.value)
    assert message.startswith(
        f"{trt_engine.backend_label(trt)} cannot run engines on {gpu} (compute capability "
        f"{cc[0]}.{cc[1]}); it supports "
    )
    assert message.endswith("; use the 'tensorrt' backend (pip install 'infercmp[tensorrt]')")
    assert "8.6/8.9/12.0" in message


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_real_plan_computes_relu(real_plan):
    trt, plan = real_plan
    refused = _gpu_the_runtime_refuses(trt)
    if refused is not None:
        gpu, cc = refused
        pytest.skip(
            f"{trt_engine.backend_label(trt)} cannot run plans on {gpu} (compute capability "
            f"{cc[0]}.{cc[1]}), so no plan runs here; the refusal itself is checked by "
            "test_real_plan_on_a_gpu_the_runtime_refuses_is_one_line_with_the_reason"
        )
    engine = TensorRTEngine()
    engine.load(real_spec(plan, trt))
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], dtype=np.float32)
    engine.prepare([x])
    engine.copy_in()
    engine.compute()
    (y,) = engine.copy_out()
    engine.synchronize()
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    engine.release()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["FLOAT", "HALF", "BF16"])
def test_buffers_copies_and_stream_on_a_real_gpu(tmp_path, monkeypatch, dtype):
    """The engine's cuda-python path for real: pinned memory, device memory, async copies, a
    stream, through an identity 'plan' whose launch is a device-to-device copy."""
    from cuda.bindings import runtime

    module = fake_trt("tensorrt_rtx_bindings", "1.7.1.116", runtime)
    monkeypatch.setattr(trt_engine, "import_backend", lambda backend: module)
    tensors = [{**X_FLOAT, "dtype": dtype}, {**X_FLOAT, "name": "z", "max": [64, 3]}]
    engine = TensorRTEngine()
    engine.load(spec_for(write_plan(tmp_path, tensors), tensors))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    z = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    engine.prepare([x, z])
    for _ in range(3):
        outputs = run_once(engine)
    expect_x = from_engine_dtype(to_engine_dtype("x", x, DataType[dtype]), DataType[dtype])
    np.testing.assert_array_equal(outputs[0], expect_x)
    np.testing.assert_array_equal(outputs[1], z)
    free_before = runtime.cudaMemGetInfo()[1]
    engine.release()
    engine.release()
    assert runtime.cudaMemGetInfo()[1] >= free_before
    np.testing.assert_array_equal(outputs[1], z)  # still readable after release
