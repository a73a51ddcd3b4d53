"""The TensorRT engine's profile (`--profile`): TensorRT's per-layer times (`IProfiler`) over the
engine's own calls, each layer traced back to the ONNX nodes it was built from.

An `IProfiler` subclass on the execution context collects `report_layer_time(layer, ms)`; where
the context has `enqueue_emits_profiler`, it is turned off so `execute_async_v3` stays
asynchronous, and `report_to_profiler()` hands over each call's times after its synchronize,
outside the call's wall time.

TensorRT names a layer after the ONNX nodes it holds: `a + b` (fused), `PWN(a, b)` (pointwise
fusion), `{ForeignNode[a...b]}` (a Myelin region, of which only the first and last node are
named), `Reformatting CopyNode for ...` (a layout or precision conversion TensorRT added).
`origin` lists those nodes; the engine inspector's JSON, when the plan was built with detailed
profiling verbosity, gives each layer's type (`LayerType`), tactic and ONNX nodes (`Metadata`)
instead of what the name suggests.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.engines.base import HotPath, timed_calls

PROFILER = "TensorRT IProfiler"
REFORMAT_PREFIX = "Reformatting CopyNode for "
FOREIGN_NODE = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")

TIMES_NOTE = (
    "TensorRT's per-layer GPU times (IProfiler: CUDA events around each layer); "
    "device_busy_ms is their sum per call, the layers running one after another on one stream"
)
MYELIN_NOTE = (
    "a Myelin region ({ForeignNode[a...b]}) is one layer to the profiler: its origin names only "
    "its first and last ONNX node, and the layers inside it are hidden"
)
MYELIN_REGION_NOTE = (
    "a Myelin region ({ForeignNode[...]}) is one layer to the profiler: its time covers every "
    "ONNX node of its origin (from the inspector), none of them timed alone"
)
NAME_TYPES_NOTE = (
    "layer types read from the layer names (the plan keeps no layer details: build it with "
    "profiling verbosity DETAILED for the inspector's LayerType and tactics)"
)


@dataclass(frozen=True)
class LayerOrigin:
    """What a layer's name says: its ONNX nodes, a type, and whether it is a Myelin region."""

    origin: list[str]
    op_type: str
    myelin: bool = False


def parse_layer_name(name: str) -> LayerOrigin:
    """The ONNX nodes and a type from a TensorRT layer name (see the module's docstring)."""
    if name.startswith(REFORMAT_PREFIX):
        return LayerOrigin([], "Reformat")
    origin: list[str] = []
    myelin = False
    for part in name.split(" + "):
        part = part.strip()
        foreign = FOREIGN_NODE.match(part)
        if foreign:
            myelin = True
            ends = foreign.group(1).split("...")
            origin += [ends[0], ends[-1]]
        else:
            origin += _pointwise(part)
    origin = [node for node in dict.fromkeys(origin) if node]
    if myelin:
        return LayerOrigin(origin, "Myelin", myelin=True)
    types = list(dict.fromkeys(_node_type(node) for node in origin))
    return LayerOrigin(origin, "+".join(types) or name)


def _pointwise(part: str) -> list[str]:
    """The nodes of `PWN(a, PWN(b, c))` (a pointwise fusion), or `[part]`."""
    if not (part.startswith("PWN(") and part.endswith(")")):
        return [part] if part else []
    inner, nodes, depth, start = part[4:-1], [], 0, 0
    for i, char in enumerate(inner):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            nodes += _pointwise(inner[start:i].strip())
            start = i + 1
    return nodes + _pointwise(inner[start:].strip())


def _node_type(node: str) -> str:
    """The op type an ONNX node's name suggests: `/layer1/layer1.0/conv1/Conv` -> Conv,
    `node_Conv_12` -> Conv, `conv2d_3` -> conv2d."""
    last = node.rstrip("/").rsplit("/", 1)[-1].removeprefix("node_")
    return re.sub(r"(_\d+)+$", "", last) or node


# -- collection ----------------------------------------------------------------------------------


def make_layer_times(trt: Any) -> Any:
    """An instance of an `IProfiler` subclass of `trt` that sums each layer's reported times."""

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)  # pybind11 needs the base initialised explicitly
            self.totals: dict[str, list[float]] = {}  # layer -> [ms, reports], first-seen order

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            row = self.totals.setdefault(str(layer_name), [0.0, 0])
            row[0] += float(ms)
            row[1] += 1

    return LayerTimes()


@dataclass
class InspectedLayers:
    """Per layer name, what the engine inspector says (empty where it says nothing)."""

    types: dict[str, str] = field(default_factory=dict)
    tactics: dict[str, str] = field(default_factory=dict)
    origins: dict[str, list[str]] = field(default_factory=dict)


def inspect_layers(trt: Any, engine: Any, context: Any) -> InspectedLayers:
    """The inspector's per-layer JSON: LayerType, TacticName and ONNX nodes (`Metadata`), which
    a plan built with detailed profiling verbosity keeps; nothing where it is not available."""
    found = InspectedLayers()
    try:
        inspector = engine.create_engine_inspector()
        inspector.execution_context = context
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        layers = json.loads(text).get("Layers", [])
    except Exception:  # an older runtime, or a plan built without layer information
        return found
    for layer in layers:
        if not isinstance(layer, dict) or "Name" not in layer:
            continue  # LAYER_NAMES_ONLY: a bare name says nothing more
        name = str(layer["Name"])
        if layer.get("LayerType"):
            found.types[name] = str(layer["LayerType"])
        if layer.get("TacticName"):
            found.tactics[name] = str(layer["TacticName"])
        nodes = ONNX_LAYER.findall(str(layer.get("Metadata", "")))
        if nodes:
            found.origins[name] = list(dict.fromkeys(nodes))
    return found


def take_profile(
    trt: Any,
    context: Any,
    calls: HotPath,
    layer_times: Any,
    inspected: InspectedLayers,
    iterations: int,
    warmup: int,
) -> RawProfile:
    """`warmup` calls unprofiled, then `iterations` calls with `layer_times` on the context."""
    timed_calls(calls, warmup)
    explicit = hasattr(context, "enqueue_emits_profiler") and hasattr(context, "report_to_profiler")
    context.profiler = layer_times
    if explicit:
        context.enqueue_emits_profiler = False
    wall = []
    try:
        for _ in range(iterations):
            wall += timed_calls(calls, 1)
            if explicit:
                context.report_to_profiler()
    finally:
        with contextlib.suppress(Exception):  # nothing runs on this context after the phase
            context.profiler = None
    return _raw_profile(layer_times.totals, inspected, iterations, wall)


def _raw_profile(
    totals: dict[str, list[float]], inspected: InspectedLayers, iterations: int, wall: list[float]
) -> RawProfile:
    events, notes = [], [TIMES_NOTE]
    for name, (ms, reports) in totals.items():
        parsed = parse_layer_name(name)
        if parsed.myelin:
            note = MYELIN_REGION_NOTE if name in inspected.origins else MYELIN_NOTE
            notes += [note] if note not in notes else []
        events.append(
            ProfileEvent(
                name=name,
                op_type=inspected.types.get(name, parsed.op_type),
                exec_type=inspected.tactics.get(name, ""),
                device="cuda",
                total_ms=ms,
                calls=int(reports),
                origin=inspected.origins.get(name, parsed.origin),
            )
        )
    if not inspected.types:
        notes.append(NAME_TYPES_NOTE)
    busy = sum(e.total_ms for e in events) / iterations if events else None
    return RawProfile(
        profiler=PROFILER,
        iterations=iterations,
        wall_ms=wall,
        device_busy_ms=busy,
        events=events,
        notes=notes,
    )
