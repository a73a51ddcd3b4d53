"""ONNX Runtime's own profiler (`SessionOptions.enable_profiling`) read into `ProfileEvent`s.

The profiled session is a second session of the measured engine (same artifact, options and
providers, IO binding) with profiling on and its optimized graph saved next to the trace. ORT
profiles the whole session: every run writes one `model_run` Session event, and only the node
and kernel events of the last `iterations` runs are kept (warm-up and the prepare probe run are
dropped by position).

Node events name the nodes of the *optimized* graph (`relu_nchwc`, `ReorderOutput_token_4`);
`optimized_origins` joins each back to the artifact's nodes through tensor names, so a fused
node lists every artifact node it swallowed and a reorder ORT inserted lists none.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.onnx_scopes import tensor_producers
from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.core.lazy import lazy_import
from infercmp.engines.base import HotPath, busy_time, timed_calls
from infercmp.engines.onnxruntime import cuda_kernels

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_import("onnx")

PROFILER = "onnxruntime enable_profiling"
OPTIMIZED = "optimized.onnx"
TRACE_PREFIX = "ort-profile"
KERNEL_TIME = "_kernel_time"
FENCES = ("_fence_before", "_fence_after")
#: Data movement ORT inserts (NCHWc layout changes, host/device copies): no artifact origin.
INSERTED_OPS = frozenset({"ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost"})
#: Suffixes ORT appends when it renames a node it rewrote (`relu_nchwc`, `node_conv_token_1`).
RENAMED = re.compile(r"(_nchwc|_token_\d+)$")
CAST_PREFIX = "InsertedPrecisionFreeCast_"  # fp16 nodes ORT runs in fp32 on the CPU
#: Ops a fused node swallows only when it is one of these kinds itself, and one at most.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
HEAVY_KINDS = ("Conv", "Gemm", "MatMul")
#: What a fused node swallows above its compute op: its inputs' dequantization and casts.
INPUT_SIDE = frozenset({"DequantizeLinear", "Cast"})
CUDA_PROVIDER = "CUDAExecutionProvider"
NO_CUDA_KERNELS = (
    "this ONNX Runtime build records no CUDA kernel times (built without CUDA profiling): "
    "per-node times are the host's launch times"
)
CUDA_NODES_DROPPED = (
    "CUDA kernels are attributed to the node that launched them (device 'cuda'); the CUDA "
    "nodes' own host launch times are left out"
)
CUDA_GRAPH = (
    "enable_cuda_graph: a graph replay has no nodes, so the profiled session runs without "
    "the graph; wall_ms is timed on the measured (graph) session"
)
CUPTI_KERNELS = (
    "CUDA kernel times from CUPTI (torch.profiler, around the same runs), each given to the "
    "node whose host interval holds its launch (infercmp.engines.onnxruntime.cuda_kernels); "
    "the CUDA nodes' own host launch times are left out"
)
CUPTI_TRACE = "cupti-trace.json"
COMPILED_EP = (
    "the TensorRT EP compiles subgraphs ORT cannot save: no optimized graph, so events have "
    "no origin"
)


def enable(session_options: Any, workdir: Path, *, save_optimized: bool) -> None:
    """Turn profiling on in `session_options`, its trace and optimized graph under `workdir`.

    The optimized graph keeps only its structure: weights go to a side file that
    `profile_session` deletes (ResNet-50's would be 100 MB in the result directory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    session_options.enable_profiling = True
    session_options.profile_file_prefix = str(workdir / TRACE_PREFIX)
    if save_optimized:
        session_options.optimized_model_filepath = str(workdir / OPTIMIZED)
        session_options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", OPTIMIZED + ".data"
        )
        session_options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )


def profile_session(
    session: Any,
    hot_path: HotPath,
    iterations: int,
    warmup: int,
    workdir: Path,
    artifact: Path,
    *,
    cuda: bool,
    measured: HotPath | None = None,
    notes: Iterable[str] = (),
) -> RawProfile:
    """`warmup` then `iterations` calls on the profiled `session` (through its engine's
    `hot_path`), its trace read into events joined to `artifact`'s nodes. With `measured` (the
    CUDA-graph engine's hot path), wall_ms is timed there instead."""
    timed_calls(hot_path, warmup)
    cupti, wall = _cupti_calls(hot_path, iterations, workdir) if cuda else (None, [])
    wall = wall or timed_calls(hot_path, iterations)
    if measured is not None:
        wall = timed_calls(measured, iterations)
    trace_file = Path(session.end_profiling())
    trace = json.loads(trace_file.read_text())
    notes = list(notes)
    optimized = workdir / OPTIMIZED
    origins: dict[str, list[str]] | None = None
    if optimized.is_file():
        graph = onnx.load(str(optimized), load_external_data=False)
        (workdir / (OPTIMIZED + ".data")).unlink(missing_ok=True)
        origins = optimized_origins(graph, onnx.load(str(artifact), load_external_data=False))
    events, busy, trace_notes = trace_events(trace, iterations, origins, cuda=cuda)
    kernels = (
        cuda_kernels.node_kernels(cupti, trace) if cupti and NO_CUDA_KERNELS in trace_notes else []
    )
    if kernels:  # ORT saw no kernels of its own; CUPTI did
        events = [e for e in events if e.exec_type != CUDA_PROVIDER]
        events += cupti_events(kernels, trace, origins or {})
        busy = busy_time(cuda_kernels.intervals_us(kernels)) / 1e3 / iterations
        trace_notes = [n for n in trace_notes if n != NO_CUDA_KERNELS] + [CUPTI_KERNELS]
    return RawProfile(
        profiler=PROFILER,
        iterations=iterations,
        wall_ms=wall,
        device_busy_ms=busy,
        events=events,
        notes=[*notes, *trace_notes],
    )


def _cupti_calls(
    hot_path: HotPath, iterations: int, workdir: Path
) -> tuple[list[Any] | None, list[float]]:
    """The profiled calls under torch.profiler too, when this process can (torch with CUDA):
    its trace events and each call's wall ms; (None, []) where it cannot, and the caller
    times the calls itself."""
    wall: list[float] = []

    def once() -> None:
        wall.extend(timed_calls(hot_path, 1))

    try:
        trace = cuda_kernels.traced_runs(once, iterations, workdir / CUPTI_TRACE)
    except (ImportError, RuntimeError):
        return None, []
    return trace, wall


def cupti_events(
    kernels: Iterable[cuda_kernels.Kernel],
    trace: list[dict[str, Any]],
    origins: dict[str, list[str]],
) -> list[ProfileEvent]:
    """CUPTI's kernels as events: per (node, kernel), the node's op type and origin; a copy
    or kernel that no node launched (the copies in and out) under its own category."""
    op_types = {
        name: str(e.get("args", {}).get("op_name", ""))
        for e in trace
        if e.get("cat") == "Node" and (name := _node_name(e)) is not None
    }
    sums: dict[tuple[str | None, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for k in kernels:
        total = sums[(k.node, k.name, k.category)]
        total[0] += k.dur_us / 1e3
        total[1] += 1
    return [
        ProfileEvent(
            name=node if node is not None else f"({category} outside nodes)",
            op_type=op_types.get(node, "") if node is not None else category.capitalize(),
            exec_type=kernel,
            device="cuda",
            total_ms=total,
            calls=int(calls),
            origin=list(origins.get(node, [])) if node is not None else [],
        )
        for (node, kernel, category), (total, calls) in sums.items()
    ]


def trace_events(
    trace: list[dict[str, Any]],
    iterations: int,
    origins: dict[str, list[str]] | None,
    *,
    cuda: bool,
) -> tuple[list[ProfileEvent], float | None, list[str]]:
    """ORT's Chrome-trace list -> (events summed over the last `iterations` runs, the mean
    per-run union of CUDA kernel intervals or None, notes)."""
    runs = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e["name"] == "model_run")
    if len(runs) < iterations:
        raise ValueError(f"the ORT trace has {len(runs)} model_run events, expected {iterations}")
    first = runs[len(runs) - iterations]

    def kept(event: dict[str, Any]) -> bool:  # the run an event falls in: the last one started
        return runs[max(bisect.bisect_right(runs, event["ts"]) - 1, 0)] >= first

    nodes = [e for e in trace if e.get("cat") == "Node" and kept(e) and _node_name(e) is not None]
    kernels = [e for e in trace if e.get("cat") == "Kernel" and kept(e)]
    notes: list[str] = []
    if cuda and not kernels:
        notes.append(NO_CUDA_KERNELS)
    if kernels:
        notes.append(CUDA_NODES_DROPPED)
        nodes = [e for e in nodes if e.get("args", {}).get("provider") == "CPUExecutionProvider"]
    if origins is None:
        origins = {}
        notes.append("no optimized graph was saved: events have no origin")
    sums: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in nodes:
        args = e.get("args", {})
        key = (_node_name(e) or "", args.get("op_name", ""), args.get("provider", ""), "cpu")
        sums[key][0] += e["dur"] / 1e3
        sums[key][1] += 1
    for e in kernels:
        args = e.get("args", {})
        node = str(args.get("parent_name", "")).removesuffix(KERNEL_TIME)
        key = (node, args.get("op_name", ""), e["name"], "cuda")
        sums[key][0] += e["dur"] / 1e3
        sums[key][1] += 1
    events = [
        ProfileEvent(
            name=name,
            op_type=op_type,
            exec_type=exec_type,
            device="cuda" if device == "cuda" else "cpu",
            total_ms=total,
            calls=int(calls),
            origin=list(origins.get(name, [])),
        )
        for (name, op_type, exec_type, device), (total, calls) in sums.items()
    ]
    busy = (
        busy_time((e["ts"], e["ts"] + e["dur"]) for e in kernels) / 1e3 / iterations
        if kernels
        else None
    )
    return events, busy, notes


def _node_name(event: dict[str, Any]) -> str | None:
    """`<node>_kernel_time` -> node; None for fences and anything else."""
    name = str(event.get("name", ""))
    if not name.endswith(KERNEL_TIME) or name.endswith(FENCES):
        return None
    return name.removesuffix(KERNEL_TIME)


def optimized_origins(
    optimized: onnx.ModelProto, artifact: onnx.ModelProto
) -> dict[str, list[str]]:
    """Each node of ORT's optimized graph -> the artifact nodes it came from, in graph order.

    Anchors: the artifact nodes producing a node's output tensors, or its own name (when ORT
    renamed it, the node or tensor named without `_nchwc`/`_token_N`/`InsertedPrecisionFree
    Cast_`). Then the nodes fused away, which no optimized node anchors: one whose outputs only
    its consumer's node reads was swallowed by it (the Conv under a `relu_nchwc`, the DQs under
    a QLinearConv; a Conv or Gemm only by a node of that kind); the rest run after what they
    read (an epilogue: a residual Add and Relu folded into a Conv, a Q after it), so each
    belongs to the latest-running owner of its inputs. Inserted reorders, copies and
    transposes: none.
    """
    graph = _Graph(artifact)
    alive = {t for node in optimized.graph.node for t in [*node.input, *node.output]}
    order = {node.name: i for i, node in enumerate(optimized.graph.node)}
    owner: dict[str, str] = {}  # artifact node -> optimized node
    for node in optimized.graph.node:
        if not _inserted(node, graph):
            for anchor in _anchors(node, graph):
                owner.setdefault(anchor, node.name)
    kinds = {node.name: node.op_type for node in optimized.graph.node}
    for name, first in list(owner.items()):
        if owner[name] == first:
            _swallow(name, first, kinds[first], graph, alive, owner)
    for node in artifact.graph.node:  # epilogues, in topological order
        if node.name not in owner:
            inputs = [owner[p] for p in map(graph.producers.get, node.input) if p in owner]
            if inputs:
                owner[node.name] = max(inputs, key=order.__getitem__)
    origins: dict[str, list[str]] = {node.name: [] for node in optimized.graph.node}
    for name, opt in sorted(owner.items(), key=lambda item: graph.rank[item[0]]):
        origins[opt].append(name)
    return origins


class _Graph:
    """The artifact graph's lookups: nodes by name and rank, producers and readers of tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = {node.name: node for node in model.graph.node}
        self.rank = {name: i for i, name in enumerate(self.nodes)}
        self.producers = tensor_producers(model)
        self.readers: dict[str, set[str]] = defaultdict(set)
        for node in model.graph.node:
            for tensor in node.input:
                self.readers[tensor].add(node.name)


def _swallow(
    anchor: str, into: str, kind: str, graph: _Graph, alive: set[str], owner: dict[str, str]
) -> None:
    """Give `into` the producers above `anchor` that fused into it: reached through tensors
    gone from the optimized graph, read by nothing `into` does not own. Above the fused
    node's compute op (its Conv, Gemm or MatMul: the anchor itself, or the one a node named
    after its activation swallows) only the DequantizeLinear and Cast of its inputs."""
    may_compute = any(k in kind for k in HEAVY_KINDS)
    stack = [(anchor, graph.nodes[anchor].op_type in HEAVY_OPS)]
    while stack:
        name, above_compute = stack.pop()
        for tensor in graph.nodes[name].input:
            parent = graph.producers.get(tensor)
            if parent is None or parent in owner or tensor in alive:
                continue
            op_type = graph.nodes[parent].op_type
            if above_compute and op_type not in INPUT_SIDE:
                continue
            if op_type in HEAVY_OPS and not may_compute:
                continue
            if op_type == "QuantizeLinear" and graph.nodes[parent].input[0] in graph.producers:
                continue  # requantizes its producer's output: that node's epilogue
            readers = set().union(*(graph.readers[t] for t in graph.nodes[parent].output))
            if all(owner.get(r) == into for r in readers):
                owner[parent] = into
                stack.append((parent, above_compute or op_type in HEAVY_OPS))


def _base_names(name: str) -> list[str]:
    """A node name and what it was before ORT renamed it, most specific first."""
    names = [name]
    base = name.removeprefix(CAST_PREFIX)
    while True:
        if base != names[-1]:
            names.append(base)
        shorter = RENAMED.sub("", base)
        if shorter == base:
            return names
        base = shorter


def _inserted(node: Any, graph: _Graph) -> bool:
    """Data movement ORT added: reorders, copies, and transposes the artifact did not have."""
    if node.op_type in INSERTED_OPS:
        return True
    return node.op_type == "Transpose" and not any(n in graph.nodes for n in _base_names(node.name))


def _anchors(node: Any, graph: _Graph) -> set[str]:
    found = {graph.producers[t] for t in node.output if t in graph.producers}
    if node.name in graph.nodes:
        found.add(node.name)
    if found:
        return found
    for base in _base_names(node.name)[1:]:
        if base in graph.nodes:
            return {base}
        if base in graph.producers:
            return {graph.producers[base]}
    return set()
