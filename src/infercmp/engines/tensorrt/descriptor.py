"""The TensorRT engine's descriptor: its option, precisions, availability and plan build;
imports neither TensorRT nor cuda-python (`flavour` finds the modules without importing them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infercmp.artifacts.quantize.common import parse_exclude, require_calibration
from infercmp.artifacts.quantize.ort_qdq import ensure_qdq_onnx
from infercmp.engines.descriptor import (
    INT8_EXCLUDE_HELP,
    ConvertContext,
    Converted,
    EngineDescriptor,
    EngineOptions,
    Machine,
    SearchSpace,
    module_present,
)
from infercmp.engines.tensorrt import build
from infercmp.engines.tensorrt import flavour as trt


class TensorRTOptions(EngineOptions):
    backend: Literal["tensorrt", "tensorrt-rtx"] | None = Field(
        None,
        description="which TensorRT builds and runs the plan; none: the first installed, "
        "tensorrt before tensorrt-rtx",
    )
    int8_exclude: str | None = Field(None, description=INT8_EXCLUDE_HELP)


# TensorRT int8 is explicit quantization (build.py); it needs a GPU like every plan.
INT8_NEEDS_GPU = (
    "TensorRT int8 is a strongly typed plan built from a symmetric Q/DQ ONNX model and run on "
    "an NVIDIA GPU; this machine has none visible"
)


class TensorRTDescriptor(EngineDescriptor):
    name = "tensorrt"
    summary = "a TensorRT or TensorRT-RTX plan built from infercmp's ONNX export"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "bf16", "int8")
    artifact = "onnx"
    options = TensorRTOptions
    runtime = "infercmp.engines.tensorrt.runtime:TensorRTEngine"
    # TensorRT and TensorRT-RTX, each a Python wheel over per-CUDA library wheels (cuda-python,
    # which the runtime also uses, is among infercmp.platform.host's own libraries).
    distributions = (
        "tensorrt",
        "tensorrt-cu12",
        "tensorrt-cu13",
        "tensorrt-rtx",
        "tensorrt-rtx-cu12-bindings",
        "tensorrt-rtx-cu13-bindings",
        "tensorrt-rtx-cu13-libs",
    )
    # The plan and the timing cache both live in infercmp's artifact cache (build.py).
    engine_caches = ("TensorRT's timing cache",)
    keeps_profile = True
    profiler = "TensorRT IProfiler"
    builds_on_device = True
    # Precision is TensorRT's search: the plan is built per precision in `convert` (cached).
    # int8 is never tuned: parity on random inputs cannot judge it (docs/int8.md).
    search_space = SearchSpace(precisions={"cuda": ("fp32", "fp16", "bf16")})
    concurrency = {
        "cuda": "one deserialized engine per request in flight, each with its own execution "
        "context, buffers and CUDA stream, driven from its own thread"
    }

    def availability(self) -> str | None:
        if not any(module_present(m) for m in trt.BACKENDS.values()):
            extras = " or ".join(f"pip install 'infercmp[{e}]'" for e in trt.EXTRAS.values())
            return (
                "neither TensorRT module ('tensorrt', 'tensorrt_rtx_bindings') is installed; "
                f"install one with: {extras}"
            )
        if not module_present("cuda.bindings"):
            return (
                "the TensorRT engine needs cuda-python ('cuda.bindings') for its buffers and "
                "stream; install it with: pip install 'infercmp[tensorrt]'"
            )
        return None

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only"
        if precision == "int8" and not machine.cuda_devices:
            return INT8_NEEDS_GPU
        return super().refusal(device, precision, machine)

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        qdq = None
        if precision == "int8":
            calibration = require_calibration(context.calibration, self.name)
            exclude = parse_exclude(getattr(options, "int8_exclude", None))
            context.progress(f"int8: symmetric Q/DQ quantization on {calibration.count} samples")
            qdq = ensure_qdq_onnx(context.cache, context.onnx, calibration, exclude, "tensorrt")
        context.progress(f"TensorRT build ({precision})")
        plan = build.build_engine(
            context.plugin,
            context.cache,
            context.onnx,
            precision=precision,
            backend=getattr(options, "backend", None),
            progress=context.progress,
            batches=context.batches,
            qdq=qdq,
        )
        # Run the plan with the module that built it, not whichever one the worker finds first.
        options_out = (("backend", plan.backend),)
        if qdq is None:
            return Converted(artifact=plan.path, options=options_out)
        detail = qdq.detail("int8 strongly typed plan from a symmetric S8 Q/DQ ONNX")
        facts = {"int8": qdq.facts()}
        return Converted(artifact=plan.path, options=options_out, detail=detail, facts=facts)


DESCRIPTOR = TensorRTDescriptor()
