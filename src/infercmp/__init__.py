"""infercmp: compare a PyTorch model under PyTorch, ONNX Runtime, OpenVINO and TensorRT, on CPU
and CUDA."""

import importlib
from typing import Any

from infercmp.core import moved

__version__ = "0.1.0"
__all__ = ["ModelPlugin", "Sample", "__version__", "top1"]

# What a plugin imports from `infercmp`, and the module that defines each (loaded on first use).
_LAZY = {
    "ModelPlugin": "infercmp.workload.plugins",
    "Sample": "infercmp.workload.dataset",
    "top1": "infercmp.workload.dataset",
}

moved.install()


def __getattr__(name: str) -> Any:
    """`from infercmp import ModelPlugin` (and `Sample`, `top1`) without loading the config
    schema (pydantic, yaml) on `import infercmp`: every `infercmp` command, `--help` included,
    imports this package first."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'infercmp' has no attribute {name!r}")
