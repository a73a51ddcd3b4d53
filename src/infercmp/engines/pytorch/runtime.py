"""The PyTorch engine's runtime: the plugin's module in eager mode, compiled, or replayed as a
CUDA graph."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import RawProfile
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.pytorch import int8
from infercmp.engines.pytorch.descriptor import DESCRIPTOR
from infercmp.engines.pytorch.profile import COMPILE_NOTE, INT8_NOTE, ProfileTarget, take_profile
from infercmp.workload.outputs import flatten_outputs
from infercmp.workload.plugins import get_plugin

if TYPE_CHECKING:
    import numpy as np

GRAPH_WARMUP_RUNS = 3  # runs on a side stream before capture, as torch.cuda.graphs advises


class PyTorchEngine(EngineBase):
    """Runs `plugin.load_pytorch_module()` under `torch.inference_mode` on CPU or CUDA.

    On CUDA the inputs live in pinned host buffers filled by prepare(): copy_in is an
    asynchronous H2D copy into static device buffers on the engine's stream, copy_out an
    asynchronous D2H copy into pinned host buffers whose numpy views it returns (valid after
    synchronize(), until the next copy_out). On CPU fp32 the input tensors share memory with
    the prepared arrays, so copy_in does nothing unless a cast or a layout change is needed.
    """

    descriptor = DESCRIPTOR

    def __init__(self) -> None:
        super().__init__()
        self._torch: Any = None
        self._module: Any = None
        self._cuda = False
        self._stream: Any = None
        self._previous_stream: Any = None
        self._previous_threads: int | None = None
        self._graph: Any = None
        self._inference: Any = None
        self._release_buffers()

    def _release_buffers(self) -> None:
        self._host_inputs: list[Any] = []  # prepared host tensors (pinned on CUDA)
        self._inputs: list[Any] = []  # what the module is called with
        self._raw: Any = None  # what the module returned last
        self._outputs: list[Any] = []  # flattened module outputs (static ones under a graph)
        self._flat: Any = list  # module output -> flat list in config order, set in prepare()
        self._widen: list[bool] = []  # outputs to widen from bf16 on the host
        self._host_outputs: list[Any] = []  # pinned D2H targets on CUDA
        self._host_views: list[np.ndarray] = []
        self._copy_plan: list[tuple[Any, Any]] = []  # (destination, source) pairs for copy_in

    @property
    def stream(self) -> int | None:
        return int(self._stream.cuda_stream) if self._stream is not None else None

    def _load(self, spec: EngineSpec) -> None:
        if spec.cache_dir is not None:  # read when Inductor and Triton compile, not at import
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(spec.cache_dir / "inductor")
            os.environ["TRITON_CACHE_DIR"] = str(spec.cache_dir / "triton")
        import torch

        self._torch = torch
        options = self.effective_options
        self._cuda = spec.device == "cuda"
        if self._cuda:
            if not torch.cuda.is_available():
                raise UnsupportedCombination(
                    "engine 'pytorch' on device 'cuda': torch sees no CUDA GPU "
                    f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
                )
            if spec.device_id >= torch.cuda.device_count():
                raise UnsupportedCombination(
                    f"engine 'pytorch': CUDA device {spec.device_id} does not exist "
                    f"({torch.cuda.device_count()} visible)"
                )
            device = torch.device("cuda", spec.device_id)
            torch.cuda.set_device(device)
        else:
            if options["cuda_graph"]:
                raise UnsupportedCombination(
                    "engine 'pytorch': option cuda_graph needs device 'cuda'"
                )
            device = torch.device("cpu")
            if options["threads"] is not None:
                self._previous_threads = torch.get_num_threads()
                torch.set_num_threads(options["threads"])
        self._device = device
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            spec.precision, torch.float32
        )
        self._inference = torch.inference_mode()
        if spec.precision == "int8":
            self._module = self._load_int8(spec)
        else:
            self._module = self._load_module(spec)
        if self._cuda:
            self._stream = torch.cuda.Stream(device)
        self.info = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if self._cuda else "cpu",
        }

    def _load_module(self, spec: EngineSpec) -> Any:
        """The plugin's module at the engine's device and dtype, compiled if asked."""
        torch, options = self._torch, self.effective_options
        # an nn.Module, then whatever torch.compile wraps it in
        module: Any = get_plugin(spec.model).load_pytorch_module()
        module = module.eval().to(device=self._device, dtype=self._dtype)
        if options["channels_last"]:
            module = module.to(memory_format=torch.channels_last)
        if options["compile"] is not None:
            module = torch.compile(module, mode=options["compile"])
        return module

    def _load_int8(self, spec: EngineSpec) -> Any:
        """The PT2E program (`spec.artifact`, .pt2) compiled by Inductor with freezing, run
        under no_grad (as the PT2E x86 tutorial does); compiled in prepare's probe run."""
        if self._cuda:
            reason = self.descriptor.refused_precisions[("int8", "cuda")]
            raise UnsupportedCombination(f"engine 'pytorch' int8 on cuda: {reason}")
        if spec.artifact is None or not Path(spec.artifact).is_file():
            raise EngineError(
                "engine 'pytorch' int8 runs the quantized program (.pt2) its conversion makes; "
                f"none at {spec.artifact}"
            )
        self._inference = self._torch.no_grad()
        mode = self.effective_options["compile"]
        return int8.load_program(Path(spec.artifact), None if mode == "default" else mode)

    def _input_tensor(self, array: np.ndarray) -> tuple[Any, Any]:
        """(host tensor, static tensor the module takes) for one prepared array."""
        torch = self._torch
        host = torch.from_numpy(array)
        if self._cuda:
            pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            pinned.copy_(host)
            host = pinned
        dtype = self._dtype if host.is_floating_point() else host.dtype
        memory_format = torch.contiguous_format
        if self.effective_options["channels_last"] and host.dim() == 4 and host.is_floating_point():
            memory_format = torch.channels_last
        if not self._cuda and dtype == host.dtype and memory_format == torch.contiguous_format:
            return host, host  # shares memory: nothing to copy on CPU
        static = torch.empty(host.shape, dtype=dtype, device=self._device)
        return host, static.contiguous(memory_format=memory_format)

    def _prepare(self, inputs: list[np.ndarray]) -> None:
        torch = self._torch
        self._release_buffers()
        self._graph = None
        for array in inputs:
            host, static = self._input_tensor(array)
            self._host_inputs.append(host)
            self._inputs.append(static)
            if static is not host:
                self._copy_plan.append((static, host))
        if self._cuda:
            if self._previous_stream is None:
                self._previous_stream = torch.cuda.current_stream(self._device)
            torch.cuda.set_stream(self._stream)  # once, instead of a context per call
        # One probe run: fills static inputs, triggers compilation, learns the output structure.
        self._copy_in()
        with self._inference:
            if self.spec.precision == "int8" and "int8" not in self.info:
                # Once: run_and_get_code compiles afresh to see the code (0.3 s a call for
                # digits), and a re-prepare (the accuracy phase's calls) needs no second look.
                self._raw, self.info["int8"] = int8.probe(self._module, self._inputs)
            else:
                self._raw = self._module(*self._inputs)
            if self.effective_options["cuda_graph"]:
                self._capture_graph()
        names, model = self.spec.output_names, self.spec.model
        self._outputs = flatten_outputs(self._raw, names, model)
        # Learn the output structure once, so copy_out does no type dispatch per iteration.
        raw = self._raw
        if isinstance(raw, torch.Tensor):
            self._flat = _single
        elif isinstance(raw, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in raw):
            self._flat = list
        else:
            self._flat = functools.partial(flatten_outputs, output_names=names, model=model)
        self._widen = [out.dtype == torch.bfloat16 for out in self._outputs]  # numpy lacks bf16
        if self._cuda:
            for out in self._outputs:
                dtype = torch.float32 if out.dtype == torch.bfloat16 else out.dtype
                host = torch.empty(out.shape, dtype=dtype, pin_memory=True)
                self._host_outputs.append(host)
                self._host_views.append(host.numpy())
        self._synchronize()

    def bind_thread(self) -> None:
        # PyTorch's current stream is per thread: a slot thread must run (and replay its
        # graph) on this engine's stream, not on the default one.
        if self._stream is not None:
            self._torch.cuda.set_stream(self._stream)

    def _capture_graph(self) -> None:
        torch = self._torch
        for _ in range(GRAPH_WARMUP_RUNS):
            self._module(*self._inputs)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream):
            self._raw = self._module(*self._inputs)
        self._graph = graph

    def _copy_in(self) -> None:
        for static, host in self._copy_plan:
            static.copy_(host, non_blocking=True)

    def _compute(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        with self._inference:
            self._raw = self._module(*self._inputs)

    def _copy_out(self) -> list[np.ndarray]:
        if self._graph is not None:
            outputs = self._outputs
        else:
            outputs = self._outputs = self._flat(self._raw)
        if self._cuda:
            for host, out in zip(self._host_outputs, outputs):
                host.copy_(out, non_blocking=True)
            return self._host_views
        return [
            out.float().numpy() if widen else out.numpy()
            for out, widen in zip(outputs, self._widen)
        ]

    def _synchronize(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()

    def _profile(self, iterations: int, warmup: int, workdir: Path) -> RawProfile:
        """torch.profiler over the engine's own calls, attributed to the plugin's modules
        (`engines.pytorch.profile`); writes nothing under `workdir`."""
        opaque = None
        if self.spec.precision == "int8":
            opaque = INT8_NOTE
        elif self.effective_options["compile"] is not None:
            opaque = COMPILE_NOTE
        target = ProfileTarget(
            torch=self._torch,
            hot_path=self.hot_path(),
            cuda=self._cuda,
            module=None if opaque else self._module,
            eager_step=self._eager_step if self._graph is not None else None,
            opaque_note=opaque,
        )
        return take_profile(target, iterations, warmup)

    def _eager_step(self) -> None:
        """One eager call of the module on the graph's static inputs (its kernels, launched
        one by one, stand for the graph's in a profile)."""
        self._copy_in()
        with self._inference:
            self._module(*self._inputs)
        self._synchronize()

    def _release(self) -> None:
        torch = self._torch
        if self._cuda:
            self._stream.synchronize()
            # What the caching allocator held at its peak, to set beside NVML's per-process
            # figure (which adds the CUDA context, cuDNN/cuBLAS workspaces and libraries).
            self.info["torch_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(
                self._device
            )
            self.info["torch_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(
                self._device
            )
            if self._previous_stream is not None:
                torch.cuda.set_stream(self._previous_stream)
        self._release_buffers()
        self._graph = None
        self._module = None
        self._stream = None
        if self._cuda:
            torch.cuda.empty_cache()
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)


def _single(tensor: Any) -> list[Any]:
    return [tensor]
