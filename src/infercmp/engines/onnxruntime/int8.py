"""What an ONNX Runtime session really runs in INT8: the op types of its optimized graph.

A Q/DQ model says what *may* run in INT8; the CPU EP decides at session creation which
DequantizeLinear -> op -> QuantizeLinear groups it fuses into INT8 kernels (QLinearConv,
QGemm, ...); everything else stays a float op between Q/DQ. The session writes the graph it
runs (`SessionOptions.optimized_model_filepath`), and this counts its op types.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from infercmp.core.lazy import lazy_import

onnx = lazy_import("onnx")

# Ops that compute on 8-bit integers (onnxruntime's contrib ops and ONNX's integer ops).
INT8_OPS = frozenset(
    {
        "QGemm",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QAttention",
        "QEmbedLayerNormalization",
        "QOrderedMatMul",
        "QOrderedLinear",
    }
)
# Ops whose float form does the heavy arithmetic: a quantized model should have few left.
FLOAT_COMPUTE_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "FusedConv",
        "Gemm",
        "FusedGemm",
        "MatMul",
        "FusedMatMul",
        "Attention",
        "MultiHeadAttention",
    }
)


def is_int8(op_type: str) -> bool:
    return op_type in INT8_OPS or op_type.startswith("QLinear")


def int8_summary(optimized: Path) -> dict[str, Any]:
    """Counts of the INT8 ops and of the float compute ops in an optimized graph file."""
    model = onnx.load(str(optimized), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    int8 = {op: n for op, n in sorted(ops.items()) if is_int8(op)}
    float_compute = {op: n for op, n in sorted(ops.items()) if op in FLOAT_COMPUTE_OPS}
    return {
        "int8_ops": int8,
        "float_compute_ops": float_compute,
        "int8_nodes": sum(int8.values()),
        "float_compute_nodes": sum(float_compute.values()),
        "float_compute_node_names": [
            n.name for n in model.graph.node if n.op_type in FLOAT_COMPUTE_OPS
        ][:20],
    }
