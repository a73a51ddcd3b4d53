"""The PyTorch engine: the plugin's module in eager mode, compiled, or replayed as a CUDA graph.

`DESCRIPTOR` (descriptor.py) is what the `infercmp.engines` entry point names; the runtime
class is in runtime.py, imported only by the worker."""

from infercmp.engines.pytorch.descriptor import DESCRIPTOR

__all__ = ["DESCRIPTOR"]
