"""ONNX Runtime with enable_cuda_graph: a re-prepare at the same shapes keeps the device
buffers the captured graph reads, and copies the new host arrays into them.

The graph itself needs a GPU (the GPU machine's accuracy run checks the outputs); here the
bookkeeping runs against fake device values, which record what copy_in writes into them.
"""

from __future__ import annotations

import numpy as np
import pytest

from infercmp.engines.base import EngineError
from infercmp.engines.onnxruntime.runtime import OnnxRuntimeEngine


class FakeDeviceValue:
    def __init__(self) -> None:
        self.written: list[np.ndarray] = []

    def update_inplace(self, host: np.ndarray) -> None:
        self.written.append(host.copy())


def _graph_engine(first: list[np.ndarray], cast: bool = False):
    engine = OnnxRuntimeEngine()
    engine.effective_options = {"enable_cuda_graph": True}
    engine._release_buffers()
    engine._copyto = np.copyto
    values = [FakeDeviceValue() for _ in first]
    for value, array in zip(values, first):
        host = array
        if cast:
            host = np.empty_like(array, dtype=np.float16)
            engine._casts.append((host, array))
        engine._host_inputs.append(host)
        engine._device_inputs.append((value, host))
    return engine, values


@pytest.mark.parametrize("cast", [False, True])
def test_the_next_samples_reach_the_buffers_the_graph_reads(cast):
    first = [np.zeros((2, 3), dtype=np.float32)]
    engine, (value,) = _graph_engine(first, cast=cast)
    second = [np.full((2, 3), 7.0, dtype=np.float32)]
    assert engine._graph_rebind(second)
    engine._copy_in()
    assert value.written and np.all(value.written[-1] == 7.0)
    assert engine._device_inputs[0][0] is value  # the same device buffer, not a new one


def test_another_shape_under_a_captured_graph_is_an_error():
    engine, _ = _graph_engine([np.zeros((2, 3), dtype=np.float32)])
    with pytest.raises(EngineError, match="captured at the first prepare"):
        engine._graph_rebind([np.zeros((4, 3), dtype=np.float32)])


def test_without_a_graph_a_prepare_binds_afresh():
    engine, _ = _graph_engine([np.zeros((2, 3), dtype=np.float32)])
    engine.effective_options = {"enable_cuda_graph": False}
    assert not engine._graph_rebind([np.ones((2, 3), dtype=np.float32)])
