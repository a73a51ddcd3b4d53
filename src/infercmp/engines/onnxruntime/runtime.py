"""The ONNX Runtime engine's runtime: CPU, CUDA and TensorRT execution providers over IO binding."""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import RawProfile
from infercmp.core.lazy import lazy_import
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.onnxruntime import profile as ort_profile
from infercmp.engines.onnxruntime.descriptor import DESCRIPTOR, INT8_ON_CUDA
from infercmp.engines.onnxruntime.int8 import int8_summary
from infercmp.platform import gpus

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

GRAPH_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
# ONNX type -> the numpy dtype of its host buffer (by name: numpy is imported on first use)
ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so")


def tensorrt_libraries_present() -> bool:
    """Whether the TensorRT libraries the TensorRT EP loads can be found by the loader."""
    if importlib.util.find_spec("tensorrt_libs") is not None:
        return True
    for name in TENSORRT_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def _is_fp16_model(path: Path, session: Any) -> bool:
    """True when the model takes fp16 tensors or stores fp16 weights."""
    if any(
        arg.type == "tensor(float16)" for arg in [*session.get_inputs(), *session.get_outputs()]
    ):
        return True
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


class OnnxRuntimeEngine(EngineBase):
    """An `InferenceSession` driven through IO binding.

    CPU: the bound inputs are the prepared arrays themselves (or cast copies for an fp16
    model) and outputs go into preallocated numpy arrays, so copy_in and copy_out move nothing.
    CUDA: inputs and outputs are preallocated device OrtValues; copy_in is `update_inplace`
    (H2D), copy_out `OrtValue.numpy()` (D2H), and compute touches device memory only.
    """

    descriptor = DESCRIPTOR

    def __init__(self) -> None:
        super().__init__()
        self._ort: Any = None
        self._session: Any = None
        self._binding: Any = None
        self._stream_handle: int | None = None
        self._copyto: Any = None  # numpy.copyto, bound in prepare()
        self._int8: dict[str, Any] = {}
        # Set on the second, profiled engine that `profile()` makes: its trace and graph go here.
        self._profile_dir: Path | None = None
        self._release_buffers()

    def _release_buffers(self) -> None:
        self._host_inputs: list[np.ndarray] = []
        self._casts: list[tuple[np.ndarray, np.ndarray]] = []  # (bound buffer, source)
        self._device_inputs: list[tuple[Any, np.ndarray]] = []  # (OrtValue, host array)
        self._device_outputs: list[Any] = []
        self._host_outputs: list[np.ndarray] = []

    @property
    def stream(self) -> int | None:
        return self._stream_handle

    def _load(self, spec: EngineSpec) -> None:
        options = self.effective_options
        if spec.artifact is None:
            raise EngineError("engine 'onnxruntime' needs an ONNX file as its artifact")
        self._check_precision(spec)
        tensorrt_ep = options["execution_provider"] == "tensorrt"
        # The device is decided here, before a session exists: asking ONNX Runtime for a CUDA
        # EP without a GPU logs errors and silently falls back to the CPU.
        if spec.device == "cuda" and gpus.cuda_device_count() <= spec.device_id:
            raise UnsupportedCombination(
                f"engine 'onnxruntime' on device 'cuda': NVML sees {gpus.cuda_device_count()} "
                f"CUDA device(s), so device {spec.device_id} is not available"
            )
        if spec.device == "cpu" and tensorrt_ep:
            raise UnsupportedCombination(
                "engine 'onnxruntime': execution_provider 'tensorrt' needs device 'cuda'"
            )
        if tensorrt_ep and not tensorrt_libraries_present():
            raise UnsupportedCombination(
                "engine 'onnxruntime': the TensorRT EP needs the TensorRT libraries "
                f"({TENSORRT_LIBRARIES[0]}), which the loader cannot find; "
                "install them with: pip install 'infercmp[tensorrt]'"
            )
        artifact = Path(spec.artifact)
        if spec.precision == "fp16" and options["fp16_model"] is not None:
            artifact = Path(options["fp16_model"])
        if not artifact.is_file():
            raise EngineError(f"engine 'onnxruntime': ONNX file {artifact} does not exist")

        import onnxruntime as ort

        self._ort = ort
        providers = self._providers(spec, options, ort)
        available = ort.get_available_providers()
        wanted = providers[0][0]
        if wanted not in available:
            raise UnsupportedCombination(
                f"engine 'onnxruntime': {wanted} is not in this onnxruntime build "
                f"({ort.__version__}; available: {', '.join(available)}); for CUDA install "
                "onnxruntime-gpu"
            )
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_LEVELS[options["graph_optimization_level"]]
        )
        session_options.execution_mode = getattr(
            ort.ExecutionMode, EXECUTION_MODES[options["execution_mode"]]
        )
        if options["intra_op_threads"] is not None:
            session_options.intra_op_num_threads = options["intra_op_threads"]
        if options["inter_op_threads"] is not None:
            session_options.inter_op_num_threads = options["inter_op_threads"]
        if self._profile_dir is not None:
            # The TensorRT EP compiles subgraphs, which ORT cannot save as a graph.
            ort_profile.enable(session_options, self._profile_dir, save_optimized=not tensorrt_ep)
        session = self._session_for(spec, artifact, session_options, providers)
        used = session.get_providers()
        if wanted not in used:
            raise UnsupportedCombination(
                f"engine 'onnxruntime': asked for {wanted} but the session runs on "
                f"{', '.join(used)} (the EP failed to initialise; see the log above)"
            )
        if spec.precision == "fp16" and not tensorrt_ep and not _is_fp16_model(artifact, session):
            raise UnsupportedCombination(
                "engine 'onnxruntime': unsupported precision fp16 for this fp32 ONNX file; "
                "give an fp16-converted model with option fp16_model=PATH, or use "
                "execution_provider='tensorrt'"
            )
        self._check_names(session, spec)
        self._session = session
        self._artifact = artifact
        self.info = {
            "onnxruntime": ort.__version__,
            "providers": used,
            "artifact": str(artifact),
        }
        if spec.precision == "int8":
            self.info["int8"] = self._int8

    @staticmethod
    def _check_precision(spec: EngineSpec) -> None:
        if spec.precision == "int8" and spec.device != "cpu":
            raise UnsupportedCombination(
                f"engine 'onnxruntime' int8 on {spec.device}: {INT8_ON_CUDA}"
            )
        if spec.precision == "bf16":
            raise UnsupportedCombination(
                "engine 'onnxruntime' does not run precision bf16 (no bf16 kernels in its CPU "
                "and CUDA EPs); use fp32 or fp16"
            )

    def _session_for(
        self, spec: EngineSpec, artifact: Path, session_options: Any, providers: list[Any]
    ) -> Any:
        """The session; for int8 it also writes the graph it runs, whose INT8 ops the engine
        info records (`int8.int8_summary`)."""
        ort = self._ort
        if spec.precision != "int8" or self._profile_dir is not None:
            return ort.InferenceSession(str(artifact), session_options, providers=providers)
        with tempfile.TemporaryDirectory(prefix="infercmp-ort-int8-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            session_options.optimized_model_filepath = str(optimized)
            session = ort.InferenceSession(str(artifact), session_options, providers=providers)
            self._int8 = int8_summary(optimized)
        return session

    def _providers(self, spec: EngineSpec, options: dict[str, Any], ort: Any) -> list[Any]:
        if spec.device == "cpu":
            return [("CPUExecutionProvider", {})]
        cuda = {
            "device_id": spec.device_id,
            "cudnn_conv_algo_search": options["cudnn_conv_algo_search"],
            "enable_cuda_graph": "1" if options["enable_cuda_graph"] else "0",
        }
        stream = self._create_stream(spec.device_id)
        if stream is not None:
            # ONNX Runtime queues its kernels on our stream, so CUDA events can time them.
            cuda["user_compute_stream"] = str(stream)
        providers: list[Any] = [("CUDAExecutionProvider", cuda), ("CPUExecutionProvider", {})]
        if options["execution_provider"] == "tensorrt":
            trt: dict[str, Any] = {
                "device_id": spec.device_id,
                "trt_fp16_enable": spec.precision == "fp16",
            }
            cache_path = options["trt_engine_cache_path"]
            if cache_path is None and spec.cache_dir is not None:  # bench --cold's directory
                cache_path = spec.cache_dir / "ort-tensorrt"
                trt["trt_timing_cache_enable"] = True
                trt["trt_timing_cache_path"] = str(cache_path)
            if cache_path is not None:
                trt["trt_engine_cache_enable"] = True
                trt["trt_engine_cache_path"] = str(cache_path)
            if stream is not None:
                trt["user_compute_stream"] = str(stream)
            providers.insert(0, ("TensorrtExecutionProvider", trt))
        return providers

    def _create_stream(self, device_id: int) -> int | None:
        """A CUDA stream made with cuda-python, or None when it is not installed."""
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            return None
        (err,) = cudart.cudaSetDevice(device_id)
        err, stream = cudart.cudaStreamCreate()
        if err != cudart.cudaError_t.cudaSuccess:
            raise EngineError(f"engine 'onnxruntime': cudaStreamCreate failed: {err}")
        self._cudart = cudart
        self._cuda_stream = stream
        self._stream_handle = int(stream)
        return self._stream_handle

    def _check_names(self, session: Any, spec: EngineSpec) -> None:
        got_in = tuple(arg.name for arg in session.get_inputs())
        got_out = tuple(arg.name for arg in session.get_outputs())
        if got_in != tuple(spec.input_names) or got_out != tuple(spec.output_names):
            raise EngineError(
                f"engine 'onnxruntime': the ONNX file has inputs {list(got_in)} and outputs "
                f"{list(got_out)} but the model config declares {list(spec.input_names)} and "
                f"{list(spec.output_names)}; re-export the model"
            )

    def _prepare(self, inputs: list[np.ndarray]) -> None:
        if self._graph_rebind(inputs):
            return
        ort = self._ort
        spec = self.spec
        self._release_buffers()
        self._copyto = np.copyto  # bound here: the timed copy_in reads no lazy module
        binding = self._session.io_binding()
        cuda = spec.device == "cuda"
        for arg, array in zip(self._session.get_inputs(), inputs):
            dtype_name = ORT_DTYPES.get(arg.type)
            if dtype_name is None:
                raise EngineError(f"engine 'onnxruntime': input '{arg.name}' has type {arg.type}")
            want = np.dtype(dtype_name)
            source = array
            if array.dtype != want:
                if array.dtype.kind != "f" or want.kind != "f":
                    raise EngineError(
                        f"engine 'onnxruntime': input '{arg.name}' is {array.dtype} but the ONNX "
                        f"file takes {arg.type}"
                    )
                staging = np.empty_like(array, dtype=want)
                self._casts.append((staging, array))
                source = staging
            self._host_inputs.append(source)
            if cuda:
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    array.shape, want, "cuda", spec.device_id
                )
                self._device_inputs.append((value, source))
                binding.bind_ortvalue_input(arg.name, value)
            else:
                binding.bind_cpu_input(arg.name, source)
        # A probe run with engine-allocated outputs gives their shapes; then bind fixed buffers
        # so the timed runs allocate nothing (and CUDA graphs see stable addresses).
        device = "cuda" if cuda else "cpu"
        for arg in self._session.get_outputs():
            binding.bind_output(arg.name, device, spec.device_id if cuda else 0)
        self._binding = binding
        self._copy_in()
        self._session.run_with_iobinding(binding)
        probe = binding.get_outputs()
        binding.clear_binding_outputs()
        for arg, value in zip(self._session.get_outputs(), probe):
            dtype = np.dtype(ORT_DTYPES[value.data_type()])
            shape = value.shape()
            if cuda:
                # Keep the probe's own device outputs bound: with enable_cuda_graph the probe
                # run is the one ONNX Runtime captures, and the graph writes to the addresses
                # bound then. Fresh buffers bound afterwards would never be written (seen on
                # the H200: all-zero outputs; with this, parity passed there at every shape).
                # Holding the OrtValues keeps that memory ours.
                self._device_outputs.append(value)
                binding.bind_ortvalue_output(arg.name, value)
            else:
                host = np.empty(shape, dtype=dtype)
                self._host_outputs.append(host)
                binding.bind_output(arg.name, "cpu", 0, dtype, shape, host.ctypes.data)
        self._synchronize()

    def _graph_rebind(self, inputs: list[np.ndarray]) -> bool:
        """With `enable_cuda_graph`, a re-prepare at the shapes and dtypes already bound keeps
        the device buffers and only takes the new host arrays (True when it did).

        ONNX Runtime captured its graph on the first run with the addresses bound then and
        replays that graph from then on: new device buffers (the accuracy phase prepares each
        call's samples) would never be read, and every call would repeat the first outputs.
        """
        bound = self._device_inputs
        if not (self.effective_options.get("enable_cuda_graph") and bound):
            return False
        staged = {id(staging): k for k, (staging, _) in enumerate(self._casts)}
        same = [
            h.shape == a.shape and (id(h) in staged or h.dtype == a.dtype)
            for (_, h), a in zip(bound, inputs)
        ]
        if not all(same):
            raise EngineError(
                "engine 'onnxruntime': enable_cuda_graph replays the graph captured at the "
                "first prepare; another shape needs a new engine"
            )
        for i, ((value, host), new) in enumerate(zip(bound, inputs)):
            if id(host) in staged:  # a cast fills the bound host buffer: cast the new array
                k = staged[id(host)]
                self._casts[k] = (host, new)
            else:
                self._device_inputs[i] = (value, new)
                self._host_inputs[i] = new
        return True

    def _copy_in(self) -> None:
        for staging, source in self._casts:
            self._copyto(staging, source, casting="same_kind")
        for value, host in self._device_inputs:
            value.update_inplace(host)

    def _compute(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def _copy_out(self) -> list[np.ndarray]:
        if self._device_outputs:
            return [value.numpy() for value in self._device_outputs]
        return self._host_outputs

    def _synchronize(self) -> None:
        if self._stream_handle is not None:
            self._cudart.cudaStreamSynchronize(self._cuda_stream)

    def _profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """ORT's profiler on a second session of this engine (same artifact, options,
        providers and IO binding, profiling on), over the inputs this one was prepared with.

        With enable_cuda_graph the profiled session runs without the graph (a replay has no
        nodes) and wall_ms is timed on this engine's own hot path."""
        measured = self.hot_path()
        graph = bool(self.effective_options.get("enable_cuda_graph"))
        spec = self.spec
        if graph:
            spec = dataclasses.replace(spec, options={**spec.options, "enable_cuda_graph": False})
        profiled = type(self)()
        profiled._profile_dir = Path(workdir)
        try:
            profiled.load(spec)
            profiled.prepare(self._prepared_inputs)
            return ort_profile.profile_session(
                profiled._session,
                profiled.hot_path(),
                iterations,
                warmup,
                Path(workdir),
                profiled._artifact,
                cuda=spec.device == "cuda",
                measured=measured if graph else None,
                notes=self._profile_notes(graph),
            )
        finally:
            profiled.release()

    def _profile_notes(self, graph: bool) -> list[str]:
        notes = [ort_profile.CUDA_GRAPH] if graph else []
        if self.effective_options.get("execution_provider") == "tensorrt":
            notes.append(ort_profile.COMPILED_EP)
        return notes

    def _release(self) -> None:
        self._synchronize()
        self._release_buffers()
        self._binding = None
        self._session = None
        if self._stream_handle is not None:
            self._cudart.cudaStreamDestroy(self._cuda_stream)
            self._stream_handle = None
