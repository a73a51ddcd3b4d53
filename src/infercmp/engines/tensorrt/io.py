"""The TensorRT runtime's pure shape and dtype logic: host dtypes of TensorRT types, bf16 bits,
input shapes against the optimisation profile, output shapes; testable without a GPU."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.engines.base import EngineError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

# TensorRT DataType member name -> host numpy dtype. BF16 has no numpy dtype: its host buffer
# holds the raw 16-bit patterns (uint16) and `to_engine_dtype` / `from_engine_dtype` convert.
_HOST_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "uint16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def host_dtype(trt_dtype: Any, tensor: str = "") -> np.dtype:
    """The numpy dtype of a host buffer for a TensorRT `DataType` (BF16 -> uint16 bits)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    try:
        return np.dtype(_HOST_DTYPES[name])
    except KeyError:
        where = f"tensor '{tensor}' has " if tensor else ""
        raise EngineError(
            f"{where}TensorRT type {name}, which infercmp cannot feed or read from numpy "
            f"(supported I/O types: {', '.join(_HOST_DTYPES)})"
        ) from None


def dtype_label(trt_dtype: Any) -> str:
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    return {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16"}.get(name, name.lower())


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest even) and return the bits as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    # A NaN must stay a NaN: rounding could carry its payload into the exponent (-> inf).
    nan = np.isnan(values)
    if nan.any():
        rounded = np.where(nan, (bits >> 16) | 0x0040, rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_engine_dtype(name: str, array: np.ndarray, trt_dtype: Any) -> np.ndarray:
    """Convert a host input to the dtype the engine binds, on the host, before any timing.

    Floats convert among themselves (float32 -> fp16/bf16 for reduced-precision plans);
    integers and booleans convert only where every value fits; anything else is an error.
    """
    target = host_dtype(trt_dtype, name)
    is_bf16 = dtype_label(trt_dtype) == "bfloat16"
    source = array.dtype
    if source == target and not is_bf16:
        return np.ascontiguousarray(array)
    if is_bf16 or target.kind == "f":
        if source.kind != "f":
            raise EngineError(
                f"input '{name}' is {source} but the engine expects {dtype_label(trt_dtype)}; "
                "pass floating-point data"
            )
        if is_bf16:
            return float32_to_bf16_bits(array.astype(np.float32, copy=False))
        return np.ascontiguousarray(array, dtype=target)
    if target.kind in "iu" and source.kind in "biu":
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise EngineError(
                f"input '{name}' has values in [{array.min()}, {array.max()}] that do not fit "
                f"the engine's {target} (range [{info.min}, {info.max}])"
            )
        return np.ascontiguousarray(array, dtype=target)
    if target.kind == "b" and source.kind == "b":
        return np.ascontiguousarray(array)
    raise EngineError(
        f"input '{name}' is {source} but the engine expects {dtype_label(trt_dtype)}; "
        "convert it before benchmarking"
    )


def from_engine_dtype(array: np.ndarray, trt_dtype: Any) -> np.ndarray:
    """A host output as numpy can hold it: bf16 bits widen to float32, the rest as bound."""
    if dtype_label(trt_dtype) == "bfloat16":
        return bf16_bits_to_float32(array)
    return array


@dataclass(frozen=True)
class InputProfile:
    """The engine's view of one input: its dims (-1 dynamic) and optimisation profile 0."""

    name: str
    dims: tuple[int, ...]
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def check_input_shape(shape: Sequence[int], profile: InputProfile) -> None:
    """Raise one clear line when `shape` is not a shape the engine accepts for this input."""
    shape = tuple(int(d) for d in shape)
    rank = len(profile.dims)
    allowed = f"allowed min {list(profile.min)}, max {list(profile.max)}"
    if len(shape) != rank:
        raise EngineError(
            f"input '{profile.name}' has shape {list(shape)} (rank {len(shape)}) but the "
            f"TensorRT engine expects rank {rank} ({allowed})"
        )
    for axis, (size, static) in enumerate(zip(shape, profile.dims)):
        if static != -1 and size != static:
            raise EngineError(
                f"input '{profile.name}' has shape {list(shape)} but dimension {axis} is fixed "
                f"at {static} in the TensorRT engine ({allowed})"
            )
    outside = [
        axis
        for axis, (size, lo, hi) in enumerate(zip(shape, profile.min, profile.max))
        if not lo <= size <= hi
    ]
    if outside:
        raise EngineError(
            f"input '{profile.name}' has shape {list(shape)}, outside the TensorRT engine's "
            f"optimisation profile in dimension {', '.join(map(str, outside))} ({allowed}); "
            "rebuild the engine with a wider profile (`optimization` in the model config)"
        )


def resolve_output_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape once input shapes are set; a -1 left means a data-dependent shape."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise EngineError(
            f"output '{name}' has shape {list(shape)} after the input shapes were set: its size "
            "depends on the data, which the TensorRT engine does not support yet"
        )
    return shape


def buffer_nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def match_io_names(
    role: str, expected: Sequence[str], engine_names: Sequence[str], artifact: Path | str
) -> None:
    """The engine's I/O tensors must be the model config's, or the plan is for another model."""
    if sorted(expected) != sorted(engine_names):
        raise EngineError(
            f"the TensorRT engine {artifact} has {role} {sorted(engine_names)} but the model "
            f"config names {sorted(expected)}; rebuild it with `infercmp build`"
        )
