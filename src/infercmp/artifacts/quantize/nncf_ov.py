"""NNCF post-training quantization of the OpenVINO model read from infercmp's ONNX export.

`nncf.quantize` on the `ov.Model` (FakeQuantize ops before weights and activations, preset
PERFORMANCE: symmetric), calibrated on the calibration samples (`subset_size` = all of them),
saved as IR (`model.xml` + `model.bin`, weights not compressed to fp16). The CPU plugin's low
precision transformations turn FakeQuantize-fed Convolution/MatMul into INT8 kernels when it
compiles the model. Exclusions: NNCF's `IgnoredScope(names=...)` with OpenVINO's op names,
which are the ONNX node names (a Conv with bias reads `X/WithoutBiases` + `X`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.cache import ArtifactCache, register_kind
from infercmp.artifacts.onnx_export import OnnxArtifact
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
from infercmp.core.lazy import lazy_import, load

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

IR_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
METHOD = "nncf-ptq"
PARAMS: dict[str, Any] = {"preset": "performance", "fast_bias_correction": True}
KIND = "int8-openvino"

register_kind(KIND, (IR_FILE, WEIGHTS_FILE), QuantMeta)


def _load(name: str) -> Any:
    return load(name, "openvino", "OpenVINO int8 (NNCF)")


def op_names_for(model: Any, onnx_nodes: Sequence[str]) -> list[str]:
    """OpenVINO op names made from `onnx_nodes`: the node's own name and `name/...` parts."""
    wanted = set(onnx_nodes)
    return [
        name
        for op in model.get_ordered_ops()
        if (name := op.get_friendly_name()) in wanted or name.split("/")[0] in wanted
    ]


def quantize_openvino(
    onnx_path: Path,
    calibration: CalibrationSet,
    out_xml: Path,
    exclude_nodes: Sequence[str] = (),
) -> QuantizeResult:
    """Write `onnx_path` quantized by NNCF as IR at `out_xml` (and its `.bin`).

    `exclude_nodes`: ONNX node names kept in float. `seconds` covers `nncf.quantize`
    (statistics collection over the samples and the rewrite).
    """
    ov, nncf = _load("openvino"), _load("nncf")
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(onnx_path))
    ranks = [p.get_partial_shape().rank for p in model.inputs]
    rows = list(
        calibration_rows(calibration, [r.get_length() if r.is_static else None for r in ranks])
    )
    ignored = op_names_for(model, exclude_nodes)
    if exclude_nodes and not ignored:
        raise InfercmpError(
            f"cannot keep {', '.join(exclude_nodes)} in float: OpenVINO's model of "
            f"{onnx_path.name} has no op of that name"
        )
    kwargs: dict[str, Any] = {}
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    dataset = nncf.Dataset(rows, lambda row: tuple(row) if len(row) > 1 else row[0])
    with Stopwatch() as watch, contextlib.redirect_stdout(io.StringIO()):
        try:
            quantized = nncf.quantize(
                model,
                dataset,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(rows),
                fast_bias_correction=PARAMS["fast_bias_correction"],
                **kwargs,
            )
        except Exception as exc:
            raise InfercmpError(
                f"NNCF cannot quantize {onnx_path.name}: {type(exc).__name__}: {exc}"
            ) from exc
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    fake_quantize = sum(
        1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
    )
    return QuantizeResult(
        seconds=watch.seconds,
        nodes_quantized=fake_quantize,
        excluded=tuple(ignored),
        samples=len(rows),
    )


def ensure_openvino_int8(
    cache: ArtifactCache,
    onnx_artifact: OnnxArtifact,
    calibration: CalibrationSet,
    exclude: Sequence[str] = (),
) -> Quantized:
    """infercmp's ONNX export quantized by NNCF, as IR through the cache; `exclude`: module
    paths of the plugin's module kept in float. `path` is the `.xml`."""
    tools = tool_versions("nncf", "openvino")
    key = quant_key(onnx_artifact.key, METHOD, PARAMS, calibration, exclude, tools)

    def produce(staged: Path) -> QuantizeResult:
        nodes = onnx_nodes_for(onnx_artifact.path, exclude)
        return quantize_openvino(onnx_artifact.path, calibration, staged / IR_FILE, nodes)

    return ensure_quantized(cache, KIND, key, IR_FILE, produce, METHOD, calibration, exclude, tools)
