"""OpenVINO's per-layer performance counters (`PERF_COUNT`) read into `ProfileEvent`s.

The profiled model is a second compile of the measured engine's model with the same
properties plus `PERF_COUNT: True`. `InferRequest.get_profiling_info()` gives each layer's
running mean over all the compiled model's inferences (measured on the CPU plugin; not the
last inference), read before and after the profiled calls. A counter's `node_name` is
the friendly name of an op of the compiled (runtime) model, whose `originalLayersNames` lists
the ops of the read model folded into it; those are named after the artifact's nodes
(`node_conv2d/WithoutBiases` from ONNX node `node_conv2d`, `logits` from the tensor of the Gemm
that produced it). Reorders the CPU plugin inserts list none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.onnx_scopes import tensor_producers
from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.core.lazy import lazy_import
from infercmp.engines.base import HotPath, timed_calls

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_import("onnx")

PROFILER = "openvino PERF_COUNT"
#: Counter statuses of layers that did no work in the inference.
IDLE = frozenset({"NOT_RUN", "OPTIMIZED_OUT"})
ORIGINAL_NAMES = "originalLayersNames"
NOT_LAYERS = frozenset({"Parameter", "Result", "Constant"})
RUNNING_MEANS = (
    "OpenVINO's CPU counters are running means per layer over every inference of the "
    "compiled model, in whole microseconds: each layer's total over the profiled calls is "
    "taken as the difference of mean x runs before and after them"
)
OVER_WALL = (
    "the layers' times sum to more than wall_ms (OpenVINO's own per-layer clock, microsecond "
    "means): compare shares, not absolute sums"
)


def profile_request(
    request: Any,
    hot_path: HotPath,
    iterations: int,
    warmup: int,
    origins: dict[str, list[str]],
    *,
    runs_before: int = 1,
    notes: Iterable[str] = (),
) -> RawProfile:
    """`warmup` then `iterations` timed calls through the profiled engine's `hot_path`, and
    each layer's time over the timed calls from `request`'s counters.

    The CPU plugin's counters are not the last inference's: each is the layer's running mean
    over every inference of the compiled model (measured: after a slow first call the values
    decay towards the steady time; a new request continues the same means). So the total
    over the timed calls is mean_after * runs_after - mean_before * runs_before, where
    `runs_before` counts the inferences before the warm-up (prepare's probe run: 1). That
    holds for one stream; the caller compiles the profiled model with one.
    """
    timed_calls(hot_path, warmup)
    before, n_before = _means(request), runs_before + warmup
    wall = timed_calls(hot_path, iterations)
    n_after = n_before + iterations
    events = [
        ProfileEvent(
            name=name,
            op_type=op_type,
            exec_type=exec_type,
            device="cpu",
            total_ms=max(
                mean * n_after - before.get((name, op_type, exec_type), 0.0) * n_before, 0.0
            ),
            calls=iterations,
            origin=list(origins.get(name, [])),
        )
        for (name, op_type, exec_type), mean in _means(request).items()
    ]
    notes = [*notes, RUNNING_MEANS]
    if sum(e.total_ms for e in events) > sum(wall):
        notes.append(OVER_WALL)
    return RawProfile(
        profiler=PROFILER, iterations=iterations, wall_ms=wall, events=events, notes=notes
    )


def _means(request: Any) -> dict[tuple[str, str, str], float]:
    """(layer, type, implementation) -> the counter's real_time in ms, for layers that ran."""
    return {
        (info.node_name, info.node_type, info.exec_type): info.real_time.total_seconds() * 1e3
        for info in request.get_profiling_info()
        if info.status.name not in IDLE
    }


def artifact_names(
    artifact: Path, read_model: Callable[[str], Any]
) -> tuple[list[str], dict[str, str]]:
    """The artifact's node names in graph order and its tensor -> producing node map: the
    ONNX file's nodes, or for an IR (.xml, the int8 conversion) its ops' friendly names
    (inputs, outputs and constants left out: they are no layer)."""
    if artifact.suffix == ".onnx":
        model = onnx.load(str(artifact), load_external_data=False)
        return [node.name for node in model.graph.node], tensor_producers(model)
    ops = [
        op
        for op in read_model(str(artifact)).get_ordered_ops()
        if op.get_type_name() not in NOT_LAYERS
    ]
    producers = {
        name: op.get_friendly_name() for op in ops for out in op.outputs() for name in out.names
    }
    return [op.get_friendly_name() for op in ops], producers


def runtime_origins(
    runtime_model: Any, names: list[str], producers: dict[str, str], *, shortest: bool = False
) -> dict[str, list[str]]:
    """Each op of the compiled model (its friendly name, the counters' `node_name`) -> the
    artifact nodes in its `originalLayersNames`, in graph order. `shortest`: name each by the
    shortest `/`-prefix the artifact has (an IR: `node_relu/fq_output_0` -> `node_relu`, the
    ONNX node the IR's op was read from), else by the longest (ONNX: the node itself)."""
    rank = {name: i for i, name in enumerate(names)}
    origins: dict[str, list[str]] = {}
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        folded = str(info[ORIGINAL_NAMES].astype(str)) if ORIGINAL_NAMES in info else ""
        found = {_artifact_node(n, rank, producers, shortest) for n in folded.split(",") if n}
        origins[op.get_friendly_name()] = sorted(
            (node for node in found if node is not None), key=rank.__getitem__
        )
    return origins


def _artifact_node(
    name: str, rank: dict[str, int], producers: dict[str, str], shortest: bool
) -> str | None:
    """An OpenVINO op name -> the artifact node it was made from: the name itself, or a node or
    tensor name it extends with `/suffix` (`node_conv2d/WithoutBiases`), else None."""
    parts = name.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    for candidate in prefixes if shortest else reversed(prefixes):
        if candidate in rank:
            return candidate
        if producers.get(candidate) in rank:
            return producers[candidate]
    return None
