"""The TensorRT engine: builds (build.py) and runs (runtime.py) TensorRT and TensorRT-RTX plans.

`flavour` is the one switch between the `tensorrt` and `tensorrt_rtx_bindings` modules, `logger`
the one TensorRT logger of the builder and the runtime. `DESCRIPTOR` (descriptor.py) is what the
`infercmp.engines` entry point names; the runtime class is imported only by the worker.
"""

from infercmp.engines.tensorrt.descriptor import DESCRIPTOR

__all__ = ["DESCRIPTOR"]
