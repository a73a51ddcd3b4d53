"""The TensorRT engine's runtime: a serialized plan from `infercmp build` on one CUDA device.

Works with the `tensorrt` module (TensorRT 10 and 11) and `tensorrt_rtx_bindings`
(TensorRT-RTX 1.x), which share one Python API. Buffers, copies and the stream go through
cuda-python (`bindings`); this module never imports torch, so a worker that runs it carries no
PyTorch runtime. The shape and dtype logic is in `io`, testable without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import RawProfile
from infercmp.core.errors import RunFailed
from infercmp.core.lazy import lazy_import
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.tensorrt.bindings import Binding, PinnedBuffer, cuda_check, cuda_device
from infercmp.engines.tensorrt.descriptor import DESCRIPTOR
from infercmp.engines.tensorrt.diagnostics import (
    backend_label,
    deserialize_failure_message,
    is_rtx,
    rtx_validity,
)
from infercmp.engines.tensorrt.io import (
    InputProfile,
    buffer_nbytes,
    check_input_shape,
    dtype_label,
    from_engine_dtype,
    host_dtype,
    match_io_names,
    resolve_output_shape,
    to_engine_dtype,
)
from infercmp.engines.tensorrt.loading import import_backend, import_cudart
from infercmp.engines.tensorrt.logger import make_logger
from infercmp.engines.tensorrt.profile import inspect_layers, make_layer_times, take_profile

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


class EngineRefused(UnsupportedCombination):
    """The runtime cannot run this plan on this GPU (TensorRT-RTX on compute capability 9.0)."""


class TensorRTEngine(EngineBase):
    """A serialized TensorRT / TensorRT-RTX plan run with cuda-python buffers on one stream.

    Options: `backend` ("tensorrt" or "tensorrt-rtx"; default: whichever module is installed,
    `tensorrt` first), which must be the one that built the plan.
    """

    descriptor = DESCRIPTOR

    def __init__(self) -> None:
        super().__init__()
        self._trt: Any = None
        self._cudart: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._profiles: dict[str, InputProfile] = {}
        self._dtypes: dict[str, Any] = {}
        self._inputs: list[Binding] = []
        self._outputs: list[Binding] = []
        self._bf16_outputs = False
        self._layer_times: Any = None  # the IProfiler the context points at, kept alive

    @property
    def stream(self) -> int | None:
        return None if self._stream is None else int(self._stream)

    # -- load --------------------------------------------------------------------------------

    def _load(self, spec: EngineSpec) -> None:
        options = self.effective_options
        if spec.artifact is None:
            raise EngineError(
                "the TensorRT engine needs a plan file; build one with `infercmp build`"
            )
        plan_path = Path(spec.artifact)
        if not plan_path.is_file():
            raise EngineError(
                f"TensorRT plan {plan_path} does not exist; build it with `infercmp build`"
            )
        trt = import_backend(options["backend"])
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        gpu, cc = cuda_device(cudart, spec.device_id)
        cuda_check(cudart, cudart.cudaSetDevice(spec.device_id), "cudaSetDevice")
        self.info.update(
            backend=trt.__name__, backend_version=str(getattr(trt, "__version__", "?")),
            gpu=gpu, compute_capability=f"{cc[0]}.{cc[1]}",
        )  # fmt: skip

        plan = plan_path.read_bytes()
        self._logger = make_logger(trt)  # keeps warnings and errors: a failure says why
        self._runtime = trt.Runtime(self._logger)
        engine = None
        try:
            engine = self._runtime.deserialize_cuda_engine(plan)
        except Exception as exc:  # some versions raise instead of returning None
            self._logger.record.add("ERROR", str(exc))
        if engine is None:
            validity = rtx_validity(trt, self._runtime, plan) if is_rtx(trt) else None
            raise EngineRefused(
                deserialize_failure_message(
                    trt, plan_path, gpu, cc, self._logger.errors(), validity
                )
            )
        self._engine = engine
        self._inspect(spec, plan_path)
        # STATIC: device memory for activations is allocated once here, not inside the timed loop.
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RunFailed(
                f"{backend_label(trt)} could not create an execution context for {plan_path}: "
                + ("; ".join(self._logger.errors()[-2:]) or "out of GPU memory?")
            )
        # A non-blocking stream: TensorRT warns that the legacy default stream adds
        # synchronisation (execute_async_v3 docstring).
        self._stream = cuda_check(
            cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "stream"
        )

    def _inspect(self, spec: EngineSpec, plan_path: Path) -> None:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            self._dtypes[name] = engine.get_tensor_dtype(name)
            host_dtype(self._dtypes[name], name)  # fail at load on an I/O type numpy cannot hold
            if mode == trt.TensorIOMode.INPUT:
                if engine.is_shape_inference_io(name):
                    raise EngineError(
                        f"input '{name}' of {plan_path} is a shape tensor, which the TensorRT "
                        "engine does not support"
                    )
                lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
                self._profiles[name] = InputProfile(
                    name, tuple(engine.get_tensor_shape(name)), tuple(lo), tuple(opt), tuple(hi)
                )
                inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                outputs.append(name)
        match_io_names("inputs", spec.input_names, inputs, plan_path)
        match_io_names("outputs", spec.output_names, outputs, plan_path)
        self.info["io_dtypes"] = {n: dtype_label(d) for n, d in self._dtypes.items()}
        self.info["profiles"] = {
            n: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
            for n, p in self._profiles.items()
        }

    # -- prepare -----------------------------------------------------------------------------

    def _prepare(self, inputs: list[np.ndarray]) -> None:
        spec, context = self.spec, self._context
        converted = []
        for name, array in zip(spec.input_names, inputs):
            check_input_shape(array.shape, self._profiles[name])
            converted.append(to_engine_dtype(name, array, self._dtypes[name]))
        for name, array in zip(spec.input_names, converted):
            if not context.set_input_shape(name, tuple(array.shape)):
                raise EngineError(
                    f"TensorRT refused shape {list(array.shape)} for input '{name}': "
                    + "; ".join(self._logger.errors()[-2:])
                )
        missing = context.infer_shapes()
        if missing:
            raise EngineError(f"TensorRT cannot infer shapes; inputs not specified: {missing}")
        out_shapes = [
            resolve_output_shape(n, context.get_tensor_shape(n)) for n in spec.output_names
        ]
        if self._inputs or self._outputs:
            self._synchronize()  # the old buffers may still be in a queued copy
        self._free_buffers()
        # Appended one by one so that a failure half-way leaves every allocation freeable.
        for name, array in zip(spec.input_names, converted):
            self._inputs.append(self._bind(name, array.shape, source=array))
        for name, shape in zip(spec.output_names, out_shapes):
            self._outputs.append(self._bind(name, shape))
        self._bf16_outputs = any(dtype_label(b.trt_dtype) == "bfloat16" for b in self._outputs)

    def _bind(self, name: str, shape: Sequence[int], source: np.ndarray | None = None) -> Binding:
        cudart, trt_dtype = self._cudart, self._dtypes[name]
        dtype = host_dtype(trt_dtype, name)
        nbytes = buffer_nbytes(shape, dtype)
        device_ptr = int(cuda_check(cudart, cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        try:
            host = PinnedBuffer(cudart, nbytes)
        except Exception:
            cudart.cudaFree(device_ptr)
            raise
        binding = Binding(
            name, trt_dtype, tuple(shape), nbytes, device_ptr, host, host.view(dtype, shape)
        )
        if source is not None:
            np.copyto(binding.host_array, source)
        if not self._context.set_tensor_address(name, device_ptr):
            cudart.cudaFree(device_ptr)
            raise RunFailed(f"TensorRT refused the device address for tensor '{name}'")
        return binding

    # -- the timed phases --------------------------------------------------------------------

    def _copy_in(self) -> None:
        cudart, stream = self._cudart, self._stream
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for b in self._inputs:
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(b.device_ptr, b.host.ptr, b.nbytes, kind, stream),
                f"copy of input '{b.name}' to the device",
            )

    def _compute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise RunFailed(
                f"{backend_label(self._trt)} failed to enqueue the engine: "
                + ("; ".join(self._logger.errors()[-2:]) or "no error logged")
            )

    def _copy_out(self) -> list[np.ndarray]:
        """Queue the device-to-host copies; the arrays hold the results after `synchronize()`.

        The arrays are views of pinned buffers reused by the next `copy_out()`. bf16 outputs
        are widened to float32 here, which needs the copies finished: the stream is
        synchronised first in that case.
        """
        cudart, stream = self._cudart, self._stream
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for b in self._outputs:
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(b.host.ptr, b.device_ptr, b.nbytes, kind, stream),
                f"copy of output '{b.name}' to the host",
            )
        if self._bf16_outputs:
            self._synchronize()
            return [from_engine_dtype(b.host_array, b.trt_dtype) for b in self._outputs]
        return [b.host_array for b in self._outputs]

    def _synchronize(self) -> None:
        cuda_check(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "stream sync")

    # -- the profile phase -------------------------------------------------------------------

    def _profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """TensorRT's per-layer times over the engine's own calls on its stream
        (`engines.tensorrt.profile`); writes nothing under `workdir`."""
        trt, context = self._trt, self._context
        self._layer_times = make_layer_times(trt)
        inspected = inspect_layers(trt, self._engine, context)
        return take_profile(
            trt, context, self.hot_path(), self._layer_times, inspected, iterations, warmup
        )

    # -- release -----------------------------------------------------------------------------

    def _free_buffers(self) -> None:
        cudart = self._cudart
        for b in [*self._inputs, *self._outputs]:
            cudart.cudaFree(b.device_ptr)
        # Pinned memory goes with the last array that views it (PinnedBuffer).
        self._inputs, self._outputs = [], []

    def _release(self) -> None:
        cudart = self._cudart
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)  # no buffer is freed under a running copy
        if cudart is not None:
            self._free_buffers()
        # Context before engine before runtime: each depends on the next (TensorRT docs,
        # "the logger should be valid until all objects created are released").
        self._context = None
        self._layer_times = None  # after the context that points at it
        self._engine = None
        self._runtime = None
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._stream = None
