"""The ONNX Runtime engine's descriptor: its options, precisions, refusals and fp16 conversion;
imports no onnxruntime."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from infercmp.artifacts.onnx_precision import ensure_converted_onnx
from infercmp.artifacts.quantize.common import parse_exclude, require_calibration
from infercmp.artifacts.quantize.ort_qdq import ensure_qdq_onnx
from infercmp.engines.descriptor import (
    INT8_EXCLUDE_HELP,
    ConvertContext,
    Converted,
    EngineDescriptor,
    EngineOptions,
    Machine,
    SearchOption,
    SearchSpace,
    module_present,
)

_CUDA: dict[str, Any] = {"devices": ["cuda"]}


class OnnxRuntimeOptions(EngineOptions):
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="graph optimisations applied when the session is created"
    )
    intra_op_threads: int | None = Field(
        None, ge=0, description="threads inside one operator; none: one per physical core"
    )
    inter_op_threads: int | None = Field(
        None, ge=0, description="threads across operators (execution_mode=parallel only)"
    )
    execution_mode: Literal["sequential", "parallel"] = Field(
        "sequential", description="run independent operators one at a time or in parallel"
    )
    execution_provider: Literal["cuda", "tensorrt"] | None = Field(
        None,
        description="none: the device's own EP; tensorrt: the TensorRT EP before CUDA",
        json_schema_extra=_CUDA,
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE", description="how cuDNN picks convolution kernels", json_schema_extra=_CUDA
    )
    enable_cuda_graph: bool = Field(
        False,
        description="capture the session's kernels once, then replay them",
        json_schema_extra=_CUDA,
    )
    fp16_model: str | None = Field(
        None, description="path of an fp16 ONNX file for precision fp16; none: infercmp's own"
    )
    trt_engine_cache_path: str | None = Field(
        None,
        description="TensorRT EP: directory where it caches its engines",
        json_schema_extra=_CUDA,
    )
    int8_exclude: str | None = Field(
        None, description=INT8_EXCLUDE_HELP, json_schema_extra={"devices": ["cpu"]}
    )


# Why ONNX Runtime int8 is refused on CUDA (docs/design/research-25-26.md, A1): among the Q/DQ
# fusions only the int4 MatMulNBits one lists the CUDA EP.
INT8_ON_CUDA = (
    "its CUDA execution provider runs a Q/DQ model as fp32 kernels between QuantizeLinear and "
    "DequantizeLinear (no INT8 kernels), so infercmp refuses rather than label fp32 speed "
    "int8; measure GPU int8 with the tensorrt engine"
)


class OnnxRuntimeDescriptor(EngineDescriptor):
    name = "onnxruntime"
    summary = "ONNX Runtime on infercmp's ONNX export, CPU or CUDA execution provider"
    precisions = ("fp32", "fp16", "int8")
    refused_precisions = {("int8", "cuda"): INT8_ON_CUDA}
    artifact = "onnx"
    options = OnnxRuntimeOptions
    runtime = "infercmp.engines.onnxruntime.runtime:OnnxRuntimeEngine"
    requires = ("onnxruntime",)
    # One module, several wheels: the CPU build and the CUDA build.
    distributions = ("onnxruntime", "onnxruntime-gpu")
    # The CPU and CUDA EPs keep nothing between sessions (cuDNN searches in the first Run).
    engine_caches = ("the TensorRT EP's engine and timing caches (the CPU and CUDA EPs keep none)",)
    search_space = SearchSpace(
        options=(
            SearchOption("graph_optimization_level", {"cpu": ("extended",)}),
            SearchOption("cudnn_conv_algo_search", {"cuda": ("HEURISTIC",)}),
            SearchOption("enable_cuda_graph", {"cuda": (True,)}),
            # The TensorRT EP builds an engine when the session starts: minutes, like a build.
            SearchOption("execution_provider", {"cuda": ("tensorrt",)}, cost_s={"tensorrt": 120.0}),
        ),
        # fp16 on the CPU provider runs most ops through casts back to fp32: never faster.
        # int8 is never tuned: parity on random inputs cannot judge it (docs/int8.md).
        precisions={"cpu": ("fp32",), "cuda": ("fp32", "fp16")},
        rules=(
            lambda options, device, precision: (
                "the TensorRT execution provider needs the 'tensorrt' module, not installed"
                if options.get("execution_provider") == "tensorrt"
                and not module_present("tensorrt")
                else None
            ),
        ),
    )
    cpu_threads_option = "intra_op_threads"
    layer_outputs = "onnx"
    mixed_fp16_option = "fp16_model"
    concurrency = {
        "cpu": "one InferenceSession per request in flight, each run from its own thread",
        "cuda": "one InferenceSession (its own IO binding and CUDA graph) per request in "
        "flight, each run from its own thread",
    }

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        if precision == "bf16":
            return (
                "ONNX Runtime's CPU and CUDA providers lack bf16 kernels for most ops; "
                "bf16 is measured through PyTorch and TensorRT"
            )
        return super().refusal(device, precision, machine)

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        if precision == "int8":
            return self._quantize(context, options)
        if precision == "fp32" or getattr(options, "fp16_model", None) is not None:
            return None
        context.progress(f"ONNX conversion to {precision}")
        path = ensure_converted_onnx(context.cache, context.onnx, precision)
        return Converted(options=(("fp16_model", str(path)),), detail=f"{precision} ONNX")

    def _quantize(self, context: ConvertContext, options: EngineOptions) -> Converted:
        calibration = require_calibration(context.calibration, self.name)
        exclude = parse_exclude(getattr(options, "int8_exclude", None))
        context.progress(f"int8: ONNX Runtime static quantization on {calibration.count} samples")
        model = ensure_qdq_onnx(context.cache, context.onnx, calibration, exclude, "cpu")
        detail = model.detail("int8 Q/DQ ONNX (U8 activations, S8 per-channel weights)")
        return Converted(artifact=model.path, detail=detail, facts={"int8": model.facts()})


DESCRIPTOR = OnnxRuntimeDescriptor()
