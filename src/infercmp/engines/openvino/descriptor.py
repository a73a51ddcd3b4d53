"""The OpenVINO engine's descriptor: its options, precisions and the CPU flags bf16/fp16 need;
imports no openvino."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infercmp.artifacts.quantize.common import parse_exclude, require_calibration
from infercmp.artifacts.quantize.nncf_ov import ensure_openvino_int8
from infercmp.engines.descriptor import (
    INT8_EXCLUDE_HELP,
    ConvertContext,
    Converted,
    EngineDescriptor,
    EngineOptions,
    Machine,
    SearchOption,
    SearchSpace,
)

# The CPU plugin runs bf16/fp16 natively only with these instruction sets (OpenVINO's CPU
# device docs: "Floating-point data types specifics"); elsewhere it would silently use fp32.
CPU_FLAGS_FOR = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("avx512_fp16", "amx_fp16"),
}


class OpenVINOOptions(EngineOptions):
    performance_hint: Literal["latency", "throughput"] = Field(
        "latency", description="OpenVINO's PERFORMANCE_HINT for the CPU plugin"
    )
    streams: int | None = Field(
        None, ge=1, description="NUM_STREAMS; none lets the performance hint decide"
    )
    threads: int | None = Field(
        None, ge=1, description="INFERENCE_NUM_THREADS; none: OpenVINO's default"
    )
    int8_exclude: str | None = Field(None, description=INT8_EXCLUDE_HELP)


class OpenVINODescriptor(EngineDescriptor):
    name = "openvino"
    summary = "OpenVINO on infercmp's ONNX export, CPU plugin"
    devices = ("cpu",)
    precisions = ("fp32", "bf16", "fp16", "int8")
    artifact = "onnx"
    options = OpenVINOOptions
    runtime = "infercmp.engines.openvino.runtime:OpenVINOEngine"
    requires = ("openvino",)
    extra = "openvino"
    distributions = ("openvino",)
    engine_caches = ("OpenVINO's model cache (CACHE_DIR)",)
    search_space = SearchSpace(
        options=(
            SearchOption("performance_hint", {"cpu": ("throughput",)}),
            SearchOption("streams", {"cpu": (1,)}),
        ),
        # bf16 and fp16 run natively only on CPUs with the instructions (refusal says so).
        # int8 is never tuned: parity on random inputs cannot judge it (docs/int8.md).
        precisions={"cpu": ("fp32", "bf16", "fp16")},
    )
    cpu_threads_option = "threads"
    layer_outputs = "ov-model"
    concurrency = {
        "cpu": "one compiled model and synchronous infer request per request in flight, each "
        "run from its own thread",
    }

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        reason = super().refusal(device, precision, machine)
        if reason is None and precision in CPU_FLAGS_FOR and machine.cpu_flags:
            wanted = CPU_FLAGS_FOR[precision]
            if not machine.cpu_flags.intersection(wanted):
                return (
                    f"OpenVINO runs {precision} on CPUs with {' or '.join(wanted)}, which this "
                    "CPU lacks (it would run fp32 under the name)"
                )
        return reason

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        if precision != "int8":
            return None  # OpenVINO reads infercmp's ONNX export itself
        calibration = require_calibration(context.calibration, self.name)
        exclude = parse_exclude(getattr(options, "int8_exclude", None))
        context.progress(f"int8: NNCF post-training quantization on {calibration.count} samples")
        model = ensure_openvino_int8(context.cache, context.onnx, calibration, exclude)
        detail = model.detail("int8 OpenVINO IR (NNCF, non-quantized ops in f32)")
        return Converted(artifact=model.path, detail=detail, facts={"int8": model.facts()})


DESCRIPTOR = OpenVINODescriptor()
