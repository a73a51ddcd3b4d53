"""What a compiled OpenVINO model really runs in INT8: its runtime model's layers.

The CPU plugin turns FakeQuantize-fed Convolution/MatMul into INT8 kernels when it compiles
(low precision transformations); each layer of `compiled.get_runtime_model()` says what ran:
`rt_info` `layerType`, `runtimePrecision` (u8/i8 for INT8) and `primitiveType` (the kernel,
e.g. `brgconv_avx512_I8`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

INT8_PRECISIONS = frozenset({"u8", "i8"})
# Layers that move or hold data: not counted as compute in either precision.
NOT_COMPUTE = frozenset({"Const", "Input", "Output", "Parameter", "Result", "Reorder", "Reshape"})
COMPUTE = frozenset(
    {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm"}
)


def _rt(op: Any, key: str) -> str:
    info = op.get_rt_info()
    if key not in info:
        return ""
    value = info[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def int8_summary(runtime_model: Any) -> dict[str, Any]:
    """Per layer type, how many layers ran INT8; the float compute layers left; kernels."""
    int8: Counter[str] = Counter()
    float_compute: Counter[str] = Counter()
    kernels: Counter[str] = Counter()
    for op in runtime_model.get_ordered_ops():
        layer = _rt(op, "layerType")
        if layer in NOT_COMPUTE:
            continue
        precision = _rt(op, "runtimePrecision").lower()
        if precision in INT8_PRECISIONS:
            int8[layer] += 1
            kernels[_rt(op, "primitiveType")] += 1
        elif layer in COMPUTE:
            float_compute[layer] += 1
            kernels[_rt(op, "primitiveType")] += 1
    return {
        "int8_layers": dict(sorted(int8.items())),
        "float_compute_layers": dict(sorted(float_compute.items())),
        "int8_compute_layers": sum(n for k, n in int8.items() if k in COMPUTE),
        "float_compute_nodes": sum(float_compute.values()),
        "kernels": dict(sorted(kernels.items())),
    }
