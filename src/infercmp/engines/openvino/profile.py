"""OpenVINO's per-layer performance counters (`PERF_COUNT`) read into `ProfileEvent`s.

The profiled model is a second compile of the measured engine's model with the same
properties plus `PERF_COUNT: True`. `InferRequest.get_profiling_info()` describes the last
inference only, so it is read after every profiled call and summed. A counter's `node_name` is
the friendly name of an op of the compiled (runtime) model, whose `originalLayersNames` lists
the ops of the read model folded into it; those are named after the artifact's nodes
(`node_conv2d/WithoutBiases` from ONNX node `node_conv2d`, `logits` from the tensor of the Gemm
that produced it). Reorders the CPU plugin inserts list none.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.onnx_scopes import tensor_producers
from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_import("onnx")

PROFILER = "openvino PERF_COUNT"
#: Counter statuses of layers that did no work in the inference.
IDLE = frozenset({"NOT_RUN", "OPTIMIZED_OUT"})
ORIGINAL_NAMES = "originalLayersNames"
OVER_WALL = (
    "the layers' real_time (OpenVINO's own clock per layer) sums to more than wall_ms: the "
    "per-layer timers overlap (measured: 1-3% over on ResNet-50 on the CPU)"
)

HotPath = tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any], Callable[[], Any]]


def profile_request(
    request: Any,
    hot_path: HotPath,
    iterations: int,
    warmup: int,
    origins: dict[str, list[str]],
    notes: Iterable[str] = (),
) -> RawProfile:
    """`warmup` then `iterations` timed calls through the profiled engine's `hot_path`, its
    `request`'s counters read after each profiled call and summed per layer."""
    copy_in, compute, copy_out, synchronize = hot_path
    for _ in range(warmup):
        copy_in()
        compute()
        copy_out()
        synchronize()
    wall: list[float] = []
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for _ in range(iterations):
        start = time.perf_counter()
        copy_in()
        compute()
        copy_out()
        synchronize()
        wall.append((time.perf_counter() - start) * 1e3)
        for info in request.get_profiling_info():
            if info.status.name in IDLE:
                continue
            total = sums[(info.node_name, info.node_type, info.exec_type)]
            total[0] += info.real_time.total_seconds() * 1e3
            total[1] += 1
    events = [
        ProfileEvent(
            name=name,
            op_type=op_type,
            exec_type=exec_type,
            device="cpu",
            total_ms=total,
            calls=int(calls),
            origin=list(origins.get(name, [])),
        )
        for (name, op_type, exec_type), (total, calls) in sums.items()
    ]
    notes = list(notes)
    if sum(e.total_ms for e in events) > sum(wall):
        notes.append(OVER_WALL)
    return RawProfile(
        profiler=PROFILER, iterations=iterations, wall_ms=wall, events=events, notes=notes
    )


def artifact_names(
    artifact: Path, read_model: Callable[[str], Any]
) -> tuple[list[str], dict[str, str]]:
    """The artifact's node names in graph order and its tensor -> producing node map: the
    ONNX file's nodes, or for an IR (.xml, the int8 conversion) its ops' friendly names."""
    if artifact.suffix == ".onnx":
        model = onnx.load(str(artifact), load_external_data=False)
        return [node.name for node in model.graph.node], tensor_producers(model)
    ops = read_model(str(artifact)).get_ordered_ops()
    producers = {
        name: op.get_friendly_name() for op in ops for out in op.outputs() for name in out.names
    }
    return [op.get_friendly_name() for op in ops], producers


def runtime_origins(
    runtime_model: Any, names: list[str], producers: dict[str, str]
) -> dict[str, list[str]]:
    """Each op of the compiled model (its friendly name, the counters' `node_name`) -> the
    artifact nodes in its `originalLayersNames`, in graph order."""
    rank = {name: i for i, name in enumerate(names)}
    origins: dict[str, list[str]] = {}
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        folded = str(info[ORIGINAL_NAMES].astype(str)) if ORIGINAL_NAMES in info else ""
        found = {_artifact_node(n, rank, producers) for n in folded.split(",") if n}
        origins[op.get_friendly_name()] = sorted(
            (node for node in found if node is not None), key=rank.__getitem__
        )
    return origins


def _artifact_node(name: str, rank: dict[str, int], producers: dict[str, str]) -> str | None:
    """An OpenVINO op name -> the artifact node it was made from: the name itself, a node or
    tensor name it extends with `/suffix` (`node_conv2d/WithoutBiases`), else None."""
    candidate = name
    while candidate:
        if candidate in rank:
            return candidate
        if producers.get(candidate) in rank:
            return producers[candidate]
        candidate = candidate.rpartition("/")[0]
    return None
