"""The OpenVINO engine: infercmp's ONNX export compiled by OpenVINO for the CPU.

`DESCRIPTOR` (descriptor.py) is what the `infercmp.engines` entry point names; the runtime
class is in runtime.py, imported only by the worker."""

from infercmp.engines.openvino.descriptor import DESCRIPTOR

__all__ = ["DESCRIPTOR"]
