"""Buffers, copies and the device through cuda-python: the `(err, *values)` check, the device's
name and compute capability, pinned host memory, and one I/O tensor bound to both."""

from __future__ import annotations

import ctypes
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import RunFailed
from infercmp.core.lazy import lazy_import
from infercmp.engines.base import EngineError, UnsupportedCombination
from infercmp.engines.tensorrt.loading import NO_GPU_MESSAGE

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python `(err, *values)` tuple; raise one line naming the call on error."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else text
        raise RunFailed(f"CUDA {what} failed: {getattr(err, 'name', err)}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_device(cudart: Any, index: int) -> tuple[str, tuple[int, int]]:
    """Name and compute capability of CUDA device `index`; one clear error when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        detail = f" ({getattr(err, 'name', err)})" if int(err) != 0 else ""
        raise UnsupportedCombination(NO_GPU_MESSAGE + detail)
    if not 0 <= index < count:
        raise EngineError(f"CUDA device {index} does not exist; this machine has {count}")
    attr = cudart.cudaDeviceAttr
    major = cuda_check(
        cudart,
        cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, index),
        "cudaDeviceGetAttribute",
    )
    minor = cuda_check(
        cudart,
        cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, index),
        "cudaDeviceGetAttribute",
    )
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    raw = props.name
    name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return name.split("\x00", 1)[0].strip(), (int(major), int(minor))


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) that numpy arrays can view.

    The memory is freed when the buffer is released and no array returned by `view` is alive
    any more, so outputs handed to the caller stay valid after `release()`.
    """

    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.nbytes = nbytes
        # cudaMallocHost(0) gives a null pointer; one byte keeps every buffer a real address.
        self.ptr = int(cuda_check(cudart, cudart.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
        self._finalizer = weakref.finalize(self, _free_host, cudart, self.ptr)

    def view(self, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        # The array's base chain keeps this buffer, hence the memory, alive; ctypes arrays take
        # attributes, and are buffers, which numpy's stubs do not list.
        raw._owner = self  # type: ignore[attr-defined]
        array = np.frombuffer(raw, dtype=dtype, count=math.prod(shape))  # type: ignore[call-overload]
        return array.reshape(shape)


def _free_host(cudart: Any, ptr: int) -> None:
    try:
        cudart.cudaFreeHost(ptr)
    except Exception:  # at interpreter exit the CUDA library may already be gone
        pass


@dataclass
class Binding:
    """One I/O tensor bound to device memory and a pinned host buffer."""

    name: str
    trt_dtype: Any
    shape: tuple[int, ...]
    nbytes: int
    device_ptr: int
    host: PinnedBuffer
    host_array: np.ndarray
