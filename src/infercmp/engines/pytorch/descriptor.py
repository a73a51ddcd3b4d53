"""The PyTorch engine's descriptor: its options, precisions and refusals; imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from infercmp.artifacts.quantize.common import parse_exclude, require_calibration
from infercmp.artifacts.quantize.pt2e import ensure_pt2e
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

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
# These modes replay CUDA graphs of their own (cudagraph trees); a graph cannot capture them.
COMPILE_MODES_WITH_GRAPHS = ("reduce-overhead", "max-autotune")


class PyTorchOptions(EngineOptions):
    channels_last: bool = Field(
        False, description="NHWC memory format for the module and its 4-D float inputs"
    )
    compile: CompileMode | None = Field(
        None, description="torch.compile mode; none runs the module eagerly"
    )
    cuda_graph: bool = Field(
        False,
        description="capture compute on static input buffers once, then replay it",
        json_schema_extra={"devices": ["cuda"]},
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU intra-op threads; none keeps torch's default",
        json_schema_extra={"devices": ["cpu"]},
    )
    int8_exclude: str | None = Field(
        None, description=INT8_EXCLUDE_HELP, json_schema_extra={"devices": ["cpu"]}
    )

    @model_validator(mode="after")
    def _graphs_do_not_nest(self) -> PyTorchOptions:
        if self.cuda_graph and self.compile in COMPILE_MODES_WITH_GRAPHS:
            raise ValueError(
                f"compile={self.compile!r} already replays CUDA graphs; drop cuda_graph=true, "
                "or use compile='max-autotune-no-cudagraphs' or 'default' with it"
            )
        return self


class PyTorchDescriptor(EngineDescriptor):
    name = "pytorch"
    summary = "the plugin's own nn.Module: eager, torch.compile, or a CUDA graph"
    precisions = ("fp32", "fp16", "bf16", "int8")
    refused_precisions = {
        ("int8", "cuda"): "PT2E's x86 Inductor quantizer lowers to oneDNN CPU kernels only; "
        "PyTorch int8 runs on the CPU",
    }
    artifact = "module"
    options = PyTorchOptions
    runtime = "infercmp.engines.pytorch.runtime:PyTorchEngine"
    requires = ("torch",)
    distributions = ("torch",)
    engine_caches = ("Inductor's cache (TORCHINDUCTOR_CACHE_DIR)", "Triton's (TRITON_CACHE_DIR)")
    # Compiling is the expensive part: a cold max-autotune-no-cudagraphs compile of ResNet-50
    # took about 240 s on the H200 (docs/results/h200/validation.md), mode "default" tens of
    # seconds. The first listed value is tried first when the budget has room for one only.
    search_space = SearchSpace(
        options=(
            SearchOption("channels_last", {"cpu": (True,), "cuda": (True,)}),
            SearchOption("cuda_graph", {"cuda": (True,)}),
            SearchOption(
                "compile",
                {"cpu": ("default",), "cuda": ("max-autotune-no-cudagraphs", "default")},
                cost_s={"default": 60.0, "max-autotune-no-cudagraphs": 240.0},
            ),
        ),
        # On CUDA fp32 is measured at the defaults only (tune always measures them): the H200
        # ran fp16 and bf16 faster in every configuration (README), and each PyTorch worker
        # there costs about 12 s, which a budget of one device call cannot spare.
        # int8 is never tuned: parity on random inputs cannot judge it (docs/int8.md).
        precisions={"cpu": ("fp32", "bf16"), "cuda": ("fp16", "bf16")},
    )
    cpu_threads_option = "threads"
    layer_outputs = "module"
    profiler = "torch.profiler"
    concurrency = {
        "cuda": "one engine per request in flight, each with its own CUDA stream (and CUDA "
        "graph with cuda_graph=true), driven from its own thread",
        "cpu": "one engine per request in flight, each driven from its own thread",
    }

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        if device == "cpu" and precision == "fp16":
            return "PyTorch fp16 on CPU is not a deployment target (use bf16 or fp32)"
        return super().refusal(device, precision, machine)

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        if precision != "int8":
            return None  # the worker builds the module from the plugin
        calibration = require_calibration(context.calibration, self.name)
        exclude = parse_exclude(getattr(options, "int8_exclude", None))
        context.progress(f"int8: PT2E quantization on {calibration.count} samples")
        model = ensure_pt2e(context.cache, context.plugin, calibration, exclude)
        detail = model.detail("int8 PT2E program (X86InductorQuantizer; compiled by Inductor)")
        return Converted(artifact=model.path, detail=detail, facts={"int8": model.facts()})


DESCRIPTOR = PyTorchDescriptor()
