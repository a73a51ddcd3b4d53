"""The ONNX Runtime engine: CPU, CUDA and TensorRT execution providers over IO binding.

`DESCRIPTOR` (descriptor.py) is what the `infercmp.engines` entry point names; the runtime
class is in runtime.py, imported only by the worker."""

from infercmp.engines.onnxruntime.descriptor import DESCRIPTOR

__all__ = ["DESCRIPTOR"]
