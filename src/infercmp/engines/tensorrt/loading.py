"""Which modules the TensorRT runtime imports: the TensorRT flavour (through `flavour`, the one
importer) and cuda-python, each missing one a skip that names the extra to install."""

from __future__ import annotations

from typing import Any

from infercmp.core.errors import MissingDependency
from infercmp.engines.base import EngineError, UnsupportedCombination
from infercmp.engines.tensorrt import flavour as trt

NO_GPU_MESSAGE = "no CUDA device: the TensorRT engine needs an NVIDIA GPU"


class TensorRTUnavailable(UnsupportedCombination, MissingDependency):
    """Neither TensorRT module (or cuda-python) is installed: skipped, with the extra to install."""


def import_backend(backend: str | None) -> Any:
    """The TensorRT module for `backend` ("tensorrt", "tensorrt-rtx", or None: the first found).

    The choice is `infercmp.engines.tensorrt.flavour`'s, so the runtime picks the module
    `infercmp build` used.
    """
    if backend is not None and backend not in trt.BACKENDS:
        raise EngineError(
            f"unknown TensorRT backend '{backend}'; use one of: {', '.join(trt.BACKENDS)}"
        )
    try:
        return trt.load_trt_module(backend).module
    except MissingDependency as exc:
        candidates = [backend] if backend else list(trt.PREFERENCE)
        wanted = " or ".join(f"'{trt.BACKENDS[b]}'" for b in candidates)
        extras = " or ".join(f"pip install 'infercmp[{trt.EXTRAS[b]}]'" for b in candidates)
        raise TensorRTUnavailable(
            f"the TensorRT engine needs the Python module {wanted}, which is not installed; "
            f"install it with: {extras}"
        ) from exc


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise TensorRTUnavailable(
            "the TensorRT engine needs cuda-python ('cuda.bindings.runtime') for its buffers "
            f"and stream, which is not installed ({exc}); install it with: "
            "pip install 'infercmp[tensorrt]'"
        ) from exc
    return runtime
