"""ONNX Runtime static quantization: infercmp's ONNX export -> a Q/DQ ONNX model.

`quant_pre_process` first (symbolic shape inference, ORT's basic optimisations such as folding
BatchNorm into Conv, ONNX shape inference; the docs say to optimise there, not while
quantizing), then `quantize_static` in QDQ format with MinMax calibration over the calibration
samples. Two flavours (docs/design/research-25-26.md, A1 and A4):

- "cpu": U8 activations (asymmetric), S8 per-channel symmetric weights. Measured on this x86
  CPU with ORT 1.31: S8 activations left every Conv in fp32 between Q/DQ (the QDQ fusions run
  S8S8 only on ARM); U8 activations fused them into QLinearConv.
- "tensorrt": S8 activations and weights, both symmetric, per-channel weights, float biases:
  TensorRT's explicit quantization (strongly typed networks) takes only symmetric INT8.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from infercmp.artifacts.cache import ArtifactCache, register_kind
from infercmp.artifacts.onnx_export import ONNX_FILE, OnnxArtifact
from infercmp.artifacts.quantize.common import (
    Quantized,
    QuantizeResult,
    QuantMeta,
    Stopwatch,
    calibration_rows,
    ensure_quantized,
    onnx_nodes_for,
    quant_key,
    tool_versions,
)
from infercmp.artifacts.samples import CalibrationSet
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    np = lazy_import("numpy")
    onnx = lazy_import("onnx")

Flavour = Literal["cpu", "tensorrt"]
METHOD = "ort-qdq-minmax"
# Flavour -> (activation type, extra_options beyond the weights' symmetric default).
FLAVOURS: dict[str, dict[str, Any]] = {
    "cpu": {"activations": "QUInt8", "extra": {"ActivationSymmetric": False}},
    # TensorRT's parser takes Q/DQ of 8-bit (and FP8/FP4/INT4) types only: ORT's int32 bias
    # quantization is refused ("input has type Int32 but must have type ... Int8", seen with
    # TensorRT-RTX 1.7), so biases stay float and TensorRT fuses them itself.
    "tensorrt": {
        "activations": "QInt8",
        "extra": {"ActivationSymmetric": True, "QuantizeBias": False},
    },
}
# MinMax keeps every intermediate output of every sample until it computes the ranges; this
# bounds it (ranges are merged every N samples), so ResNet-50 x 128 samples fits in memory.
MAX_INTERMEDIATE_OUTPUTS = 16


def _merge_every(count: int) -> int | None:
    """How many samples ORT collects before merging ranges: None (all at once) for a small
    set. ORT 1.31 raises "No data is collected" when the count is a multiple of it (its last
    merge finds nothing), so a bound that divides the count is avoided."""
    if count <= MAX_INTERMEDIATE_OUTPUTS:
        return None
    return next(
        (n for n in range(MAX_INTERMEDIATE_OUTPUTS, 1, -1) if count % n), MAX_INTERMEDIATE_OUTPUTS
    )


KIND = "int8-onnx"

register_kind(KIND, (ONNX_FILE,), QuantMeta)


def _params(flavour: str) -> dict[str, Any]:
    if flavour not in FLAVOURS:
        raise InfercmpError(f"unknown Q/DQ flavour '{flavour}'; choose {', '.join(FLAVOURS)}")
    return {
        "flavour": flavour,
        "format": "QDQ",
        "activations": FLAVOURS[flavour]["activations"],
        "weights": "QInt8",
        "per_channel": True,
        "calibrate": "MinMax",
        **FLAVOURS[flavour]["extra"],
        "WeightSymmetric": True,
    }


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a samples file: `{input: array}` per sample."""

    def __init__(self, names: Sequence[str], rows: Iterator[list[np.ndarray]]) -> None:
        self.names, self.rows, self.count = list(names), rows, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self.rows, None)
        if row is None:
            return None
        self.count += 1
        return dict(zip(self.names, row))


def _graph_inputs(model: onnx.ModelProto) -> tuple[list[str], list[int | None]]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    ranks = [
        len(i.type.tensor_type.shape.dim) if i.type.tensor_type.HasField("shape") else None
        for i in inputs
    ]
    return [i.name for i in inputs], ranks


def pre_process(onnx_path: Path, out_path: Path) -> None:
    """ONNX Runtime's quantization pre-processing; symbolic shape inference is skipped for a
    model it cannot handle (ONNX shape inference still runs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(onnx_path), str(out_path))
    except Exception:
        try:
            quant_pre_process(str(onnx_path), str(out_path), skip_symbolic_shape=True)
        except Exception as exc:
            raise InfercmpError(
                f"ONNX Runtime's quantization pre-processing fails on {onnx_path.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def quantize_onnx_qdq(
    onnx_path: Path,
    calibration: CalibrationSet,
    out_path: Path,
    exclude_nodes: Sequence[str] = (),
    flavour: Flavour = "cpu",
) -> QuantizeResult:
    """Write `onnx_path` statically quantized (Q/DQ) at `out_path`, calibrated on `calibration`.

    `exclude_nodes`: names of nodes of `onnx_path` kept in float (pre-processing keeps the
    names of the nodes it keeps; `common.onnx_nodes_for` maps module paths to them).
    `seconds` covers calibration and the rewrite (`quantize_static`), not pre-processing.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    params = _params(flavour)
    with tempfile.TemporaryDirectory(prefix="infercmp-qdq-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(onnx_path, pre)
        model = onnx.load(str(pre), load_external_data=False)
        names, ranks = _graph_inputs(model)
        present = {n.name for n in model.graph.node}
        missing = [n for n in exclude_nodes if n not in present]
        if missing:
            raise InfercmpError(
                f"cannot keep node(s) {', '.join(missing)} in float: {onnx_path.name} has no "
                "such node after pre-processing"
            )
        reader = _Reader(names, calibration_rows(calibration, ranks))
        extra: dict[str, Any] = {**FLAVOURS[flavour]["extra"], "WeightSymmetric": True}
        if (every := _merge_every(calibration.count)) is not None:
            extra["CalibMaxIntermediateOutputs"] = every
        with Stopwatch() as watch:
            try:
                quantize_static(
                    str(pre),
                    str(out_path),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=getattr(QuantType, params["activations"]),
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=list(exclude_nodes),
                    extra_options=extra,
                )
            except InfercmpError:
                raise
            except Exception as exc:
                raise InfercmpError(
                    f"ONNX Runtime cannot quantize {onnx_path.name}: {type(exc).__name__}: {exc}"
                ) from exc
    return QuantizeResult(
        seconds=watch.seconds,
        nodes_quantized=len(qdq_nodes(onnx.load(str(out_path), load_external_data=False))),
        excluded=tuple(exclude_nodes),
        samples=reader.count,
    )


def qdq_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes of a Q/DQ model that take a dequantized input: the ones quantized."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in dequantized for i in n.input)
    ]


def ensure_qdq_onnx(
    cache: ArtifactCache,
    onnx_artifact: OnnxArtifact,
    calibration: CalibrationSet,
    exclude: Sequence[str] = (),
    flavour: Flavour = "cpu",
) -> Quantized:
    """infercmp's ONNX export quantized to Q/DQ through the cache; `exclude`: module paths
    of the plugin's module kept in float."""
    tools = tool_versions("onnxruntime", "onnxruntime-gpu", "onnx")
    key = quant_key(onnx_artifact.key, METHOD, _params(flavour), calibration, exclude, tools)

    def produce(staged: Path) -> QuantizeResult:
        nodes = onnx_nodes_for(onnx_artifact.path, exclude)
        return quantize_onnx_qdq(
            onnx_artifact.path, calibration, staged / ONNX_FILE, nodes, flavour
        )

    method = f"{METHOD}-{flavour}"
    return ensure_quantized(
        cache, KIND, key, ONNX_FILE, produce, method, calibration, exclude, tools
    )
