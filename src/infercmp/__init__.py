"""infercmp: compare a PyTorch model under PyTorch, ONNX Runtime, OpenVINO and TensorRT, on CPU
and CUDA."""

from infercmp.plugins import ModelPlugin

__version__ = "0.1.0"
__all__ = ["ModelPlugin", "__version__"]
