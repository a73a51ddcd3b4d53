"""infercmp: compare a PyTorch model under PyTorch, ONNX Runtime, OpenVINO and TensorRT, on CPU
and CUDA."""

from infercmp.core import moved
from infercmp.workload.plugins import ModelPlugin

__version__ = "0.1.0"
__all__ = ["ModelPlugin", "__version__"]

moved.install()
