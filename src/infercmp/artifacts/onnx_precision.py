"""The exported ONNX model converted to fp16 or bf16 compute (inputs and outputs keep their
config types), cached next to the export: what ONNX Runtime runs at reduced precision, and what
a strongly typed TensorRT network is built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infercmp.artifacts.cache import ArtifactCache, EntryMeta, content_key, register_kind
from infercmp.artifacts.onnx_export import ONNX_FILE, OnnxArtifact
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import

np = lazy_import("numpy")


class PrecisionOnnxMeta(EntryMeta):
    """An `onnx-precision` entry's metadata."""

    precision: str


register_kind("onnx-precision", (ONNX_FILE,), PrecisionOnnxMeta)


def convert_precision(src: Path, dst: Path, precision: str) -> None:
    """Write `src` converted to fp16 or bf16 compute at `dst`, keeping IO types as they are.

    Uses onnxruntime's float16 converter (onnxconverter-common's, shipped with onnxruntime),
    which keeps ops that need fp32 (Resize scales, Range, ...) in fp32 behind Casts; bf16 is
    the fp16 result with every float16 type and weight re-typed to bfloat16.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise InfercmpError(
            f"cannot convert {src.name} to {precision}: {type(exc).__name__}: {exc}"
        ) from exc
    if precision == "bf16":
        _float16_to_bfloat16(converted.graph)
    onnx.save(converted, str(dst))


def ensure_converted_onnx(cache: ArtifactCache, onnx: OnnxArtifact, precision: str) -> Path:
    """The exported ONNX converted to fp16/bf16 compute (fp32 IO), cached next to the export.

    ONNX Runtime runs reduced precision only from such a model, unlike PyTorch and TensorRT.
    """
    key = content_key({"onnx": onnx.key, "precision": precision, "converter": "ort-float16"})
    entry = cache.lookup("onnx-precision", key)
    if entry is None:
        with cache.lock("onnx-precision", key):
            entry = cache.lookup("onnx-precision", key)
            if entry is None:
                with cache.staging() as staged:
                    convert_precision(onnx.path, staged / ONNX_FILE, precision)
                    entry = cache.store("onnx-precision", key, staged, {"precision": precision})
    return entry.file(ONNX_FILE)


def _float16_to_bfloat16(graph: Any) -> None:
    """Re-type every float16 value, weight and Cast in `graph` (and its subgraphs) to bfloat16."""
    from onnx import TensorProto, numpy_helper

    f16, bf16 = TensorProto.FLOAT16, TensorProto.BFLOAT16

    def retype_tensor(tensor: Any) -> None:
        if tensor.data_type != f16:
            return
        values = numpy_helper.to_array(tensor).astype(np.float32)
        # bfloat16 is the top half of a float32; round to nearest even.
        bits = values.view(np.uint32).astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        name, dims = tensor.name, list(tensor.dims)
        tensor.Clear()
        tensor.name = name
        tensor.dims.extend(dims)
        tensor.data_type = bf16
        tensor.raw_data = bits.tobytes()

    for init in graph.initializer:
        retype_tensor(init)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == f16:
            value.type.tensor_type.elem_type = bf16
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == f16:
                attr.i = bf16
            if attr.HasField("t"):
                retype_tensor(attr.t)
            for sub in [attr.g] if attr.HasField("g") else []:
                _float16_to_bfloat16(sub)
            for sub in attr.graphs:
                _float16_to_bfloat16(sub)
