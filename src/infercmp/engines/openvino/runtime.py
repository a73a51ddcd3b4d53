"""The OpenVINO engine: infercmp's ONNX export compiled by OpenVINO for the CPU.

OpenVINO reads the cached ONNX file directly (no IR conversion step to cache). The model is
reshaped to the prepared inputs' static shapes before compiling, as `benchmark_app -shape`
does, so the CPU plugin picks kernels for those shapes. Inputs and outputs are OpenVINO
tensors that share memory with numpy arrays made in prepare(): copy_in and copy_out move
nothing (as in ONNX Runtime on CPU), so the timed phases mean the same in both engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import RawProfile
from infercmp.core.lazy import lazy_import
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.openvino import profile as ov_profile
from infercmp.engines.openvino.descriptor import DESCRIPTOR
from infercmp.engines.openvino.int8 import int8_summary

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

# OpenVINO's inference precision hint per infercmp precision; inputs and outputs stay fp32.
# int8: the quantized ops run INT8 and the others f32, pinned because the CPU plugin's default
# is bf16 on AMX CPUs (measured): "int8" means int8+f32, and the engine info says so.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# OPTIMIZATION_CAPABILITIES names the CPU plugin reports for bf16 and fp16.
CAPABILITY_FOR = {"bf16": "BF16", "fp16": "FP16"}


class OpenVINOEngine(EngineBase):
    """An OpenVINO `CompiledModel` on the CPU, run through one `InferRequest`."""

    descriptor = DESCRIPTOR

    def __init__(self) -> None:
        super().__init__()
        self._ov: Any = None
        self._core: Any = None
        self._model: Any = None
        self._config: dict[str, Any] = {}
        self._copyto: Any = None  # numpy.copyto, bound in prepare()
        self._perf_count = False  # set on the second, profiled engine that profile() makes
        self._release_buffers()

    def _release_buffers(self) -> None:
        self._compiled: Any = None
        self._request: Any = None
        self._infer: Any = None
        self._inputs: list[np.ndarray] = []  # arrays the input tensors share memory with
        self._casts: list[tuple[np.ndarray, np.ndarray]] = []  # (bound buffer, source)
        self._outputs: list[np.ndarray] = []

    def _load(self, spec: EngineSpec) -> None:
        if spec.artifact is None:
            raise EngineError("engine 'openvino' needs an ONNX file as its artifact")
        if spec.precision == "int8" and Path(spec.artifact).suffix != ".xml":
            raise EngineError(
                "engine 'openvino' int8 runs the NNCF-quantized IR (.xml) that its conversion "
                f"makes, not {spec.artifact.name}"
            )
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        if spec.precision in CAPABILITY_FOR:
            capabilities = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if CAPABILITY_FOR[spec.precision] not in capabilities:
                raise UnsupportedCombination(
                    f"engine 'openvino': this CPU has no native {spec.precision} "
                    f"(OpenVINO's CPU capabilities: {', '.join(capabilities)})"
                )
        model = self._core.read_model(str(spec.artifact))
        got_in = [p.get_any_name() for p in model.inputs]
        got_out = [p.get_any_name() for p in model.outputs]
        if got_in != list(spec.input_names) or got_out != list(spec.output_names):
            raise EngineError(
                f"engine 'openvino': the ONNX file has inputs {got_in} and outputs {got_out} but "
                f"the model config declares {list(spec.input_names)} and "
                f"{list(spec.output_names)}; re-export the model"
            )
        options = self.effective_options
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": options["performance_hint"].upper(),
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[spec.precision],
        }
        if options["streams"] is not None:
            config["NUM_STREAMS"] = str(options["streams"])
        if options["threads"] is not None:
            config["INFERENCE_NUM_THREADS"] = options["threads"]
        if spec.cache_dir is not None:  # compile_model writes its blob there, then reads it
            config["CACHE_DIR"] = str(spec.cache_dir / "openvino")
        if self._perf_count:
            config["PERF_COUNT"] = True
        self._model = model
        self._config = config
        self.info = {"openvino": ov.get_version(), "device": "CPU"}

    def _prepare(self, inputs: list[np.ndarray]) -> None:
        ov = self._ov
        self._release_buffers()
        self._copyto = np.copyto  # bound here: the timed copy_in reads no lazy module
        model = self._model
        model.reshape(
            {port: ov.PartialShape(list(a.shape)) for port, a in zip(model.inputs, inputs)}
        )
        compiled = self._core.compile_model(model, "CPU", self._config)
        if "CACHE_DIR" in self._config:
            self.info["loaded_from_cache"] = bool(compiled.get_property("LOADED_FROM_CACHE"))
        request = compiled.create_infer_request()
        for index, (port, array) in enumerate(zip(compiled.inputs, inputs)):
            want = np.dtype(port.get_element_type().to_dtype())
            bound = array
            if array.dtype != want:
                if array.dtype.kind != want.kind:
                    raise EngineError(
                        f"engine 'openvino': input '{port.get_any_name()}' is {array.dtype} but "
                        f"the model takes {want}"
                    )
                bound = np.empty_like(array, dtype=want)
                self._casts.append((bound, array))
            self._inputs.append(bound)
            request.set_input_tensor(index, ov.Tensor(bound, shared_memory=True))
        for index, port in enumerate(compiled.outputs):
            shape = tuple(port.get_shape())
            host = np.empty(shape, dtype=np.dtype(port.get_element_type().to_dtype()))
            self._outputs.append(host)
            request.set_output_tensor(index, ov.Tensor(host, shared_memory=True))
        self._compiled, self._request = compiled, request
        self._infer = request.infer
        self._copy_in()
        self._infer()
        self.info.update(
            streams=int(compiled.get_property("NUM_STREAMS")),
            threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
            inference_precision=str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        )
        if self.spec.precision == "int8":
            self.info["precision_mix"] = "int8+f32"
            self.info["int8"] = int8_summary(compiled.get_runtime_model())

    def _copy_in(self) -> None:
        for bound, source in self._casts:
            self._copyto(bound, source, casting="same_kind")

    def _compute(self) -> None:
        self._infer()

    def _copy_out(self) -> list[np.ndarray]:
        return self._outputs

    def _synchronize(self) -> None:
        pass  # infer() returns when the outputs are written

    def _profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """OpenVINO's per-layer counters on a second compile of this engine's model (same
        properties plus PERF_COUNT) over the inputs this one was prepared with; `workdir`
        is unused (the counters are read in memory).

        The counters are per stream, so with several streams the profiled model gets one,
        with the threads one stream of this model has (what one request runs on).
        """
        profiled = type(self)()
        profiled._perf_count = True
        notes: list[str] = []
        try:
            profiled.load(self.spec)
            # Compiled here, not imported from a model cache: the counters and runtime model
            # are the profiled compile's own.
            profiled._config.pop("CACHE_DIR", None)
            streams = int(self.info.get("streams", 1))
            if streams > 1:
                threads = max(1, int(self.info["threads"]) // streams)
                profiled._config.update(NUM_STREAMS="1", INFERENCE_NUM_THREADS=threads)
                notes.append(
                    f"profiled with 1 stream of {threads} thread(s), what one request gets of "
                    f"the measured {streams} streams: OpenVINO's counters are per stream"
                )
            profiled.prepare(self._prepared_inputs)
            artifact = Path(self.spec.artifact or "")
            names, producers = ov_profile.artifact_names(artifact, profiled._core.read_model)
            origins = ov_profile.runtime_origins(
                profiled._compiled.get_runtime_model(),
                names,
                producers,
                shortest=artifact.suffix != ".onnx",
            )
            return ov_profile.profile_request(
                profiled._request,
                profiled.hot_path(),
                iterations,
                warmup,
                origins,
                runs_before=1,  # prepare's probe run
                notes=notes,
            )
        finally:
            profiled.release()

    def _release(self) -> None:
        self._release_buffers()
        self._model = None
        self._core = None
