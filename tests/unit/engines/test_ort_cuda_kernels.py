"""ONNX Runtime's CUDA nodes get their kernels from a torch.profiler trace on another clock."""

from __future__ import annotations

from infercmp.engines.base import busy_time
from infercmp.engines.onnxruntime.cuda_kernels import RUN_MARK, Kernel, intervals_us, node_kernels

# ONNX Runtime's clock starts at its session's profiling start; the trace's somewhere else.
OFFSET = 1_000_000.0


def _ort_run(ts: float) -> list[dict]:
    """One model_run of two CUDA nodes on ONNX Runtime's clock (host launch intervals)."""
    return [
        {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100},
        {"cat": "Node", "name": "conv_fence_before", "ts": ts + 5, "dur": 1},
        {"cat": "Node", "name": "conv_kernel_time", "ts": ts + 10, "dur": 30},
        {"cat": "Node", "name": "relu_kernel_time", "ts": ts + 50, "dur": 20},
    ]


def _trace_run(ts: float, first_corr: int, python_lag: float) -> list[dict]:
    """The same run on the trace's clock: the mark opens `python_lag` us before ORT's run (25 us
    would put the conv's second launch into the relu without the refinement), the
    conv launches two kernels, the relu one, a copy out after every node."""
    mark = ts + OFFSET - python_lag
    launches = [(ts + 12, "conv_a"), (ts + 30, "conv_b"), (ts + 55, "relu"), (ts + 90, "copy")]
    events: list[dict] = [{"cat": "user_annotation", "name": RUN_MARK, "ts": mark, "dur": 130}]
    for i, (t, name) in enumerate(launches):
        corr = first_corr + i
        events.append(
            {
                "cat": "cuda_runtime",
                "name": "cudaLaunchKernel",
                "ts": t + OFFSET,
                "args": {"correlation": corr},
            }
        )
        cat = "gpu_memcpy" if name == "copy" else "kernel"
        events.append(
            {
                "cat": cat,
                "name": name,
                "ts": t + OFFSET + 40,
                "dur": 7,
                "args": {"correlation": corr},
            }
        )
    return events


def test_each_kernel_goes_to_the_node_that_launched_it_whatever_the_clocks() -> None:
    ort = _ort_run(0.0) + _ort_run(1000.0) + _ort_run(2000.0)  # the first is a warm-up
    trace = _trace_run(1000.0, 10, python_lag=25) + _trace_run(2000.0, 20, python_lag=3)
    kernels = node_kernels(trace, ort)
    assert [(k.name, k.node) for k in kernels] == [
        ("conv_a", "conv"),
        ("conv_b", "conv"),
        ("relu", "relu"),
        ("copy", None),
    ] * 2
    assert {k.category for k in kernels} == {"kernel", "memcpy"}


def test_no_marks_no_kernels() -> None:
    assert node_kernels(_trace_run(0.0, 1, 0)[1:], _ort_run(0.0)) == []


def test_busy_time_is_the_union_of_intervals() -> None:
    ks = [
        Kernel("a", "kernel", None, 0, 10),
        Kernel("b", "kernel", None, 5, 10),
        Kernel("c", "kernel", None, 30, 5),
        Kernel("d", "kernel", None, 31, 1),
    ]
    assert busy_time(intervals_us(ks)) == 20.0


def test_cupti_kernels_become_events_of_their_node_with_its_op_type_and_origin() -> None:
    from infercmp.engines.onnxruntime.profile import cupti_events

    ort = _ort_run(0.0)
    for e in ort:
        if e["cat"] == "Node":
            e["args"] = {"op_name": "Conv" if e["name"].startswith("conv") else "Relu"}
    kernels = node_kernels(_trace_run(0.0, 1, python_lag=25), ort)
    events = {(e.name, e.exec_type): e for e in cupti_events(kernels, ort, {"conv": ["n_conv"]})}
    conv_a = events[("conv", "conv_a")]
    assert (conv_a.op_type, conv_a.origin, conv_a.device, conv_a.calls) == (
        "Conv",
        ["n_conv"],
        "cuda",
        1,
    )
    assert conv_a.total_ms == 7 / 1e3
    assert events[("relu", "relu")].op_type == "Relu" and events[("relu", "relu")].origin == []
    copy = events[("(memcpy outside nodes)", "copy")]
    assert copy.op_type == "Memcpy" and copy.origin == []
