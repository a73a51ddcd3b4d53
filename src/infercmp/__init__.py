"""infercmp: compare a PyTorch model under PyTorch, ONNX Runtime, OpenVINO and TensorRT, on CPU
and CUDA."""

import importlib
from typing import Any

from infercmp.core import moved

__version__ = "0.1.0"
__all__ = ["ModelPlugin", "__version__"]

moved.install()


def __getattr__(name: str) -> Any:
    """`from infercmp import ModelPlugin` without loading the config schema (pydantic, yaml) on
    `import infercmp`: every `infercmp` command, `--help` included, imports this package first."""
    if name == "ModelPlugin":
        return importlib.import_module("infercmp.workload.plugins").ModelPlugin
    raise AttributeError(f"module 'infercmp' has no attribute {name!r}")
