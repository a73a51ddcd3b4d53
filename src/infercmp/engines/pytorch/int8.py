"""PyTorch int8: the PT2E program loaded and compiled by Inductor, and what ran in INT8.

The `.pt2` (`infercmp.artifacts.quantize.pt2e`) holds quantize/dequantize ops around float
conv/linear. Inductor with freezing on matches those patterns and lowers them to oneDNN's int8
kernels (`torch.ops.onednn.qconv_pointwise`, `qlinear_pointwise`); the patterns are registered
when torchao's x86 quantizer module is imported, so it is imported before compiling. What was
lowered is read from the code Inductor generates for the first call (captured with
`torch._inductor.utils.run_and_get_code`, which also works when the graph comes from Inductor's
cache): int8 op calls, float conv/linear calls, and fused C++ kernels that dequantize weights
and compute in float (small layers Inductor chose not to give to oneDNN).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infercmp.artifacts.quantize.pt2e import torchao_quantizer
from infercmp.core.lazy import lazy_import

torch = lazy_import("torch")

_INT8 = re.compile(r"torch\.ops\.onednn\.(q\w+)\.\w+\(")
_FLOAT = re.compile(
    r"(torch\.ops\.mkldnn\.(?:_convolution_pointwise|_linear_pointwise|_convolution_transpose"
    r"_pointwise)|extern_kernels\.(?:mm|addmm|bmm|convolution)|aten\.(?:convolution|mm|addmm))"
    r"(?:\.\w+)?\("
)
_DEQUANT_KERNEL = re.compile(r"^\s*(cpp_fused_\w*dequantize\w*)\(", re.MULTILINE)


def load_program(path: Path, compile_mode: str | None) -> Any:
    """The quantized program at `path`, wrapped by `torch.compile` with Inductor freezing on
    (compiled on its first call, which `probe` makes in prepare)."""
    torchao_quantizer()  # registers the int8 lowerings
    torch._inductor.config.freezing = True
    module = torch.export.load(str(path)).module()
    return torch.compile(module, mode=compile_mode)


def probe(module: Any, inputs: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """Call `module` once (compiling it) and summarise the code Inductor generated."""
    try:
        from torch._inductor.utils import run_and_get_code
    except ImportError:  # a private helper: if it moves, run without the summary
        return module(*inputs), {"int8_ops": "unknown (torch._inductor.utils moved)"}
    outputs, codes = run_and_get_code(module, *inputs)
    return outputs, summarise("\n".join(codes))


def summarise(code: str) -> dict[str, Any]:
    """Counts of int8 op calls, float conv/linear calls and dequantizing C++ kernels in code
    Inductor generated."""
    int8 = Counter(f"onednn.{m}" for m in _INT8.findall(code))
    floats = Counter(_FLOAT.findall(code))
    dequant = Counter(_DEQUANT_KERNEL.findall(code))
    return {
        "int8_ops": dict(sorted(int8.items())),
        "float_compute_ops": dict(sorted(floats.items())),
        "int8_nodes": sum(int8.values()),
        "float_compute_nodes": sum(floats.values()),
        "dequantizing_float_kernels": sum(dequant.values()),
    }
