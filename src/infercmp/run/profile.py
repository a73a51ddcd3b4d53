"""A worker's profile, attributed: each op, node, layer or kernel to the PyTorch module it came
from and to a kind of work, the time no op explains, and hints from the numbers.

The worker's profile phase writes the engine's own profile in the engine's own names
(`core.contract.RawProfile`, `profile.json`); `profile_record` turns it into the record stored
on the combination (`CombinationResult.profile`, docs/results-format.md "profile"):

- module: `module_of` reads `event.module` (PyTorch knows it directly) or the module paths of
  the event's origin ONNX nodes (`artifacts.onnx_scopes`, from the ONNX the engine ran and the
  fp32 export). A fused event keeps every leaf path it covers; `module_at_depth` cuts them to
  a depth at report time (one path, or their common parent marked fused). No origin: no module
  (an engine's own reorder or copy); `""`: the model's top level (forward's own ops).
- kind: `kind_of`, one table for every engine's vocabulary (ONNX ops, OpenVINO layer types,
  TensorRT layers, aten ops, CUDA kernels).
- closure: the profiled call against the timed median; what no op explains (host overhead,
  copies in and out) and, on CUDA, the launch gaps (the call minus the time any kernel ran).
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from infercmp.artifacts.onnx_scopes import NodeScope, node_scopes, tensor_producers
from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.engines.descriptor import EngineDescriptor

if TYPE_CHECKING:
    import onnx

    from infercmp.run.worker_process import WorkerOutcome
    from infercmp.store.schema import CombinationResult
else:
    onnx = lazy_import("onnx")

#: The kinds of work, in the order tables show them.
KINDS = (
    "conv/matmul",
    "elementwise",
    "normalisation",
    "pooling/reduction",
    "data movement",
    "other",
)
#: Row labels of what is not a module of the model.
TOP_LEVEL, NO_MODULE, UNEXPLAINED, LAUNCH_GAPS = (
    "(top level)",
    "no module",
    "unexplained",
    "launch gaps",
)
FUSED = " (fused)"
#: |closure| above this is a warning in the record.
CLOSURE_LIMIT = 0.10
RESIDENT_NOTE = (
    "closure n/a: the timed median (--device-resident) is compute alone, while these calls, "
    "profiled and not, carry the copies in and out"
)
#: Launch gaps above this share of a CUDA row's profiled wall: the CUDA-graph hint.
LAUNCH_GAP_SHARE = 0.50
#: Data movement above this share of the op time: the layout hint.
DATA_MOVEMENT_SHARE = 0.20
#: How the worker's warning starts when it took no profile (infercmp.worker.run).
NO_PROFILE = "no profile: "

# Op types by kind, lower case, without a namespace (`aten::`, `com.microsoft.`).
_EXACT: dict[str, str] = {}
for _kind, _names in {
    "conv/matmul": "conv fusedconv qlinearconv convinteger nhwcconv gemm fusedgemm matmul "
    "fusedmatmul matmulinteger qlinearmatmul matmulnbits fullyconnected convolution "
    "groupconvolution convtranspose deconvolution convolutionbackpropdata matrixmultiply "
    "einsum attention multiheadattention conv1d conv2d conv3d _convolution "
    "convolution_overrideable mkldnn_convolution cudnn_convolution addmm mm bmm baddbmm "
    "linear matmul_ "
    "scaled_dot_product_attention",
    "elementwise": "add sub mul div relu sigmoid tanh clip gelu fastgelu biasgelu erf sqrt pow "
    "exp log neg abs where leakyrelu elu selu hardsigmoid hardswish swish silu mish prelu "
    "eltwise activation pointwise multiply subtract divide power clamp minimum maximum "
    "add_ mul_ relu_ sub_ div_ clamp_min clamp_min_ fill_ zero_ hardtanh hardtanh_ silu_ "
    "gelu_ rsqrt erf_ subgraph "
    "quantizelinear dequantizelinear fakequantize",
    "normalisation": "batchnormalization layernormalization simplifiedlayernormalization "
    "skiplayernormalization skipsimplifiedlayernormalization instancenormalization "
    "groupnormalization mvn normalizel2 normalization scale batchnorminference batch_norm "
    "native_batch_norm _native_batch_norm_legit_no_training _batch_norm_impl_index layer_norm "
    "native_layer_norm group_norm native_group_norm instance_norm rms_norm",
    "pooling/reduction": "maxpool averagepool globalaveragepool globalmaxpool lppool reducemean "
    "reducesum reducemax reducemin reduceprod reducel2 softmax logsoftmax argmax argmin topk "
    "pooling avgpool reduce max_pool2d max_pool2d_with_indices max_pool1d max_pool3d "
    "adaptive_avg_pool2d adaptive_avg_pool1d _adaptive_avg_pool2d avg_pool2d mean sum amax "
    "_softmax log_softmax _log_softmax topk",
    "data movement": "transpose reorder reorderinput reorderoutput reshape flatten squeeze "
    "unsqueeze concat split slice gather gatherelements gathernd scatter scatternd cast expand "
    "tile pad identity memcpy memcpytohost memcpyfromhost reformat shuffle copy convert "
    "stridedslice broadcast parameter result input output shape constant permute "
    "copy_ contiguous to _to_copy view reshape_ clone t cat stack select index "
    "index_select narrow as_strided unsqueeze_ squeeze_ detach _unsafe_view transpose_ "
    "depthtospace spacetodepth",
}.items():
    _EXACT.update(dict.fromkeys(_names.split(), _kind))

# Patterns over op types, kernel names and layer names; data movement first: cuDNN's
# `nchwToNhwcKernel` is a layout conversion, not a convolution.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        (
            "data movement",
            r"nchwtonhwc|nhwctonchw|memcpy|copy|transpose|reformat|reorder|shuffle|"
            r"concat|cat_|gather|permute|layout|convert_|cast",
        ),
        ("normalisation", r"batch_?norm|layer_?norm|group_?norm|instance_?norm|bn_fw|rms_?norm"),
        ("pooling/reduction", r"pool|reduce|softmax|triton_red|triton_per|argmax|topk"),
        (
            "conv/matmul",
            r"conv|gemm|xmma|cutlass|matmul|cudnn|cublas|implicit_|sm\d\d_|ampere_|hopper_|"
            r"volta_|turing_|myelin|foreignnode|fc_|fullyconnected|brgemm",
        ),
        (
            "elementwise",
            r"elementwise|pointwise|triton_poi|pwn\(|relu|sigmoid|gelu|silu|eltwise|"
            r"add|mul|tanh|activation",
        ),
    )
)


def _bare(text: str) -> str:
    """`aten::conv2d` -> `conv2d`; `com.microsoft.nchwc.Conv` -> `conv`."""
    return text.rsplit("::", 1)[-1].rsplit(".", 1)[-1].strip().lower()


def kind_of(event: ProfileEvent) -> str:
    """The kind of work of one event (`KINDS`), from its op type, then its implementation
    (a kernel's name), then its own name; "other" when none says."""
    exact = _EXACT.get(_bare(event.op_type))
    if exact is not None:
        return exact
    for text in (event.op_type, event.exec_type, event.name):
        lowered = text.lower()
        for kind, pattern in _PATTERNS:
            if lowered and pattern.search(lowered):
                return kind
    return "other"


@dataclass(frozen=True)
class ModuleIndex:
    """What names the module of an ONNX node: each node's scope (the ONNX the engine ran,
    then the fp32 export), each tensor's producer, and each module's first node in graph
    order (the model order of the tables)."""

    scopes: Mapping[str, NodeScope] = field(default_factory=dict)
    producers: Mapping[str, str] = field(default_factory=dict)
    order: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_models(cls, models: Iterable[onnx.ModelProto]) -> ModuleIndex:
        scopes: dict[str, NodeScope] = {}
        producers: dict[str, str] = {}
        for model in models:  # the first model's names win
            for name, scope in node_scopes(model).items():
                scopes.setdefault(name, scope)
            for tensor, node in tensor_producers(model).items():
                producers.setdefault(tensor, node)
        order: dict[str, int] = {}
        for index, scope in enumerate(scopes.values()):
            for path in (*scope.merged, scope.path):
                parts = path.split(".") if path else []
                for depth in range(len(parts) + 1):
                    order.setdefault(".".join(parts[:depth]), index)
        return cls(scopes, producers, order)


def module_index(paths: Sequence[Path | None]) -> ModuleIndex:
    """The index of the ONNX files in `paths` (the engine's first, the fp32 export's as the
    fallback); those that are None, not .onnx or unreadable are left out."""
    files = tuple(p for p in paths if p is not None and p.suffix == ".onnx" and p.is_file())
    return _index(tuple(dict.fromkeys(files)))


@functools.lru_cache(maxsize=8)
def _index(files: tuple[Path, ...]) -> ModuleIndex:
    models = []
    for path in files:
        try:  # the graph only: weights in external files are not needed
            models.append(onnx.load(str(path), load_external_data=False))
        except Exception:  # noqa: BLE001 - a damaged artifact names no module; rows say so
            continue
    return ModuleIndex.from_models(models)


_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_output_\d+|_kernel_time)+$")


def _scope(origin: str, index: ModuleIndex) -> NodeScope | None:
    """The scope of one origin: a node name, a node ORT renamed (`_token_3`, `_nchwc`), or a
    tensor name whose producer is a node, an OpenVINO layer's first node."""
    # OpenVINO names a layer after its first node plus a suffix (`node_Conv_27/WithoutBiases`).
    for name in dict.fromkeys((origin, _SUFFIX.sub("", origin), origin.split("/")[0])):
        scope = index.scopes.get(name)
        if scope is None and name in index.producers:
            scope = index.scopes.get(index.producers[name])
        if scope is not None:
            return scope
    return None


def module_of(event: ProfileEvent, index: ModuleIndex) -> list[str] | None:
    """The leaf module paths `event` covers, in graph order: one for a plain op, several for
    one fused across modules, `[""]` for the model's top level; None: no module (no origin,
    or none of its origins is a node of the artifact)."""
    if event.module is not None:
        return [event.module]
    scopes = [s for s in (_scope(o, index) for o in event.origin) if s is not None]
    # A node an optimisation merged (BatchNorm folded into its Conv) covers the modules of
    # the parameters it reads too (onnx_scopes.NodeScope.merged), its conv first.
    paths = [path for s in scopes for path in (*s.merged, s.path)]
    return list(dict.fromkeys(paths)) or None


def module_at_depth(modules: Sequence[str], depth: int) -> tuple[str, bool]:
    """(path, fused) of a set of leaf paths at `depth` (1: the model's children): the one
    path they cut to, else their common parent, fused; siblings of the top level fused
    together are named by the model's children they lie in, joined (`bn1+relu`): the top
    level itself is forward's own ops."""
    cut = list(dict.fromkeys(".".join(m.split(".")[:depth]) if m else "" for m in modules))
    if len(cut) == 1:
        return cut[0], False
    split = [c.split(".") if c else [] for c in cut]
    common: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if common:
        return ".".join(common), True
    return "+".join(dict.fromkeys(c.split(".")[0] if c else TOP_LEVEL for c in cut)), True


def row_label(modules: Sequence[str], depth: int) -> str:
    """A stored row's label at `depth`: the module, "(top level)", "no module", "+ (fused)"."""
    if not modules:
        return NO_MODULE
    path, fused = module_at_depth(modules, depth)
    return (path or TOP_LEVEL) + (FUSED if fused else "")


def check_depth(depth: int) -> int:
    if depth < 1:
        raise InfercmpError(f"--depth {depth}: give 1 (the model's children) or more")
    return depth


def read_profile(path: Path) -> RawProfile:
    """The worker's profile.json; one line when it is missing or not a profile."""
    try:
        return RawProfile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise InfercmpError(f"cannot read the profile {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InfercmpError(f"{path} is not a profile: {where}: {first['msg']}") from exc


def not_available(engine: str) -> dict[str, Any]:
    """The profile of an engine whose descriptor declares no profiler."""
    return {"error": f"n/a: {engine} has no per-layer profiler"}


def _rows(events: Sequence[ProfileEvent], index: ModuleIndex, iterations: int) -> list[dict]:
    """One row per (modules, kind, op type), ms per iteration, in model order: each row at
    its modules' first node in the graph, rows of no module after the rest."""
    rows: dict[tuple[tuple[str, ...], str, str], dict[str, Any]] = {}
    keys: dict[tuple[tuple[str, ...], str, str], tuple[int, int]] = {}
    for number, event in enumerate(events):
        modules = tuple(module_of(event, index) or ())
        key = (modules, kind_of(event), event.op_type)
        row = rows.setdefault(
            key,
            {"modules": list(modules), "kind": key[1], "op_type": key[2], "ms": 0.0, "calls": 0},
        )
        row["ms"] += event.total_ms / iterations
        row["calls"] += event.calls
        place = min((index.order.get(m, 1 << 30) for m in modules), default=1 << 31)
        keys[key] = min(keys.get(key, (place, number)), (place, number))
    return [rows[k] for k in sorted(rows, key=lambda k: keys[k])]


def profile_record(
    raw: RawProfile,
    index: ModuleIndex,
    measured_median_ms: float | None,
    label: str,
    descriptor: EngineDescriptor | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored profile of one combination (docs/results-format.md, "profile") from the
    worker's `raw` profile: rows at the leaf level, the closure against the timed median,
    notes and hints. `label` names the combination in hints; `descriptor` and `options`
    say which of its options a hint may name."""
    notes = list(raw.notes)
    events = list(raw.events)
    if any(e.device == "cuda" for e in events):
        host_side = [e for e in events if e.device != "cuda"]
        events = [e for e in events if e.device == "cuda"]
        if host_side:
            notes.append(
                f"{len(host_side)} host-side op record(s) left out: on CUDA the kernels they "
                "launched are the op time"
            )
    rows = _rows(events, index, raw.iterations)
    op_total = sum(r["ms"] for r in rows)
    wall = statistics.median(raw.wall_ms) if raw.wall_ms else None
    # The ops are summed over every profiled call: what they leave unexplained is measured
    # against the mean call, the same statistic (the median is the one to set beside the
    # timed median by eye).
    mean = statistics.fmean(raw.wall_ms) if raw.wall_ms else None
    # Medians: a few calls slowed by the host moving the vCPUs would sway a mean of 20.
    unprofiled = statistics.median(raw.unprofiled_wall_ms) if raw.unprofiled_wall_ms else None
    record: dict[str, Any] = {
        "profiler": raw.profiler,
        "iterations": raw.iterations,
        "measured_median_ms": measured_median_ms,
        "profiled_wall_ms": wall,
        "profiled_mean_ms": mean,
        "unprofiled_median_ms": unprofiled,
        "profiler_overhead": wall / unprofiled - 1 if wall and unprofiled else None,
        "op_total_ms": op_total,
        "device_busy_ms": raw.device_busy_ms,
        "unexplained_ms": None,
        "launch_gaps_ms": None,
        "closure": None,
        "rows": rows,
        "notes": notes,
        "hints": [],
        "error": None,
    }
    if raw.device_resident:
        notes.append(RESIDENT_NOTE)
    if mean is not None and wall is not None:
        if mean > (1 + CLOSURE_LIMIT) * wall:
            notes.append(
                f"the profiled calls vary: median {wall:.4g} ms, mean {mean:.4g} ms (slow "
                "calls: other load on the machine, or the profiler's own); the ops are totals "
                "over every call, so they are set beside the mean"
            )
        _account(record, mean, op_total, raw.device_resident)
    record["hints"] = hints(record, label, descriptor, options or {})
    return record


def _account(record: dict[str, Any], wall: float, op_total: float, resident: bool) -> None:
    """unexplained, launch gaps and closure of a record whose mean profiled call (`wall`)
    is known; no closure where the timed median left out the copies (`resident`)."""
    notes: list[str] = record["notes"]
    median = record["measured_median_ms"]
    busy = record["device_busy_ms"]
    if busy is not None and median:
        _account_device(record, wall, op_total, busy, median, resident)
        return
    if op_total > wall:
        notes.append(
            f"the ops add up to {op_total:.4g} ms a call, more than the profiled call "
            f"{wall:.4g} ms: they overlap (parallel ops or streams); unexplained is reported as 0"
        )
    unexplained = max(0.0, wall - op_total)
    record["unexplained_ms"] = unexplained
    if busy is not None:  # on CUDA: the part of it where no kernel ran, at most all of it
        record["launch_gaps_ms"] = min(unexplained, max(0.0, wall - busy))
    if median and not resident:
        closure = (op_total + unexplained) / median - 1
        record["closure"] = closure
        if abs(closure) > CLOSURE_LIMIT:
            notes.append(
                f"closure {closure:+.0%}: the profiled run took {op_total + unexplained:.4g} ms "
                f"a call against the timed median {median:.4g} ms ({_why(record, median)}); "
                "shares are of the profiled run"
            )


def _why(record: dict[str, Any], median: float) -> str:
    """What moved the profiled call off the timed median: the profiler (against the same
    calls unprofiled beside it) and the machine (those calls against the timed median)."""
    unprofiled = record.get("unprofiled_median_ms")
    overhead = record.get("profiler_overhead")
    if not unprofiled or overhead is None:
        return "the profiler's own overhead, or a different state of the machine"
    return (
        f"the profiler {overhead:+.0%}, median against median of the same calls unprofiled "
        f"beside it, {unprofiled:.4g} ms; those calls {unprofiled / median - 1:+.0%} against "
        "the timed median: the machine's state since the timed phase"
    )


def _account_device(
    record: dict[str, Any],
    wall: float,
    op_total: float,
    busy: float,
    median: float,
    resident: bool,
) -> None:
    """On CUDA the kernels' times are the profile's and the call is the timed median: a
    profiler slows the host (the framework, the launches) far more than the kernels, so the
    profiled call overstates the gaps between kernels (measured on an H100: ONNX Runtime's
    eager ResNet-50 fp16 call took 4.0 ms profiled against 1.6 ms timed). What no kernel
    explains is the timed median less the kernels; the launch gaps, the time in it when no
    kernel ran. No closure: the rows add up to the median by this account (nor the check
    that the kernels fit in it where the median left the copies out, `resident`)."""
    notes: list[str] = record["notes"]
    record["unexplained_ms"] = max(0.0, median - op_total)
    record["launch_gaps_ms"] = min(record["unexplained_ms"], max(0.0, median - busy))
    notes.append(
        f"on CUDA the rows are kernel times from the profiled run and the call is the timed "
        f"median ({median:.4g} ms); the profiled call took {wall:.4g} ms "
        f"({wall / median - 1:+.0%}: the profiler slows the host, not the kernels)"
    )
    if op_total > (1 + CLOSURE_LIMIT) * median and not resident:
        record["closure"] = op_total / median - 1
        notes.append(
            f"the kernels add up to {op_total:.4g} ms a call, more than the timed median "
            f"{median:.4g} ms: the profiled run was not the timed one's state (clocks, other "
            "work on the GPU); shares are of the kernels"
        )


def _graph_option(descriptor: EngineDescriptor | None, options: Mapping[str, Any]) -> str | None:
    """The engine's boolean option that replays calls as a CUDA graph, when it has one and
    the combination did not turn it on."""
    if descriptor is None:
        return None
    fields = descriptor.options.model_fields
    for name, info in fields.items():
        if "cuda_graph" in name and info.annotation in (bool, "bool"):
            return None if options.get(name) else name
    return None


def hints(
    record: Mapping[str, Any],
    label: str,
    descriptor: EngineDescriptor | None,
    options: Mapping[str, Any],
) -> list[str]:
    """What the numbers suggest, in words: launch overhead on the GPU (naming the engine's
    own CUDA-graph option, when it has one), layout conversions and copies."""
    found: list[str] = []
    gaps = record.get("launch_gaps_ms")
    # The call the gaps are part of: the timed median on CUDA (_account_device).
    wall = record.get("measured_median_ms") if gaps is not None else None
    wall = wall or record.get("profiled_mean_ms") or record.get("profiled_wall_ms")
    if wall and gaps is not None and gaps > LAUNCH_GAP_SHARE * wall:
        text = f"{label} spends {gaps / wall:.0%} of each call between kernels (launch overhead)"
        option = _graph_option(descriptor, options)
        if option is not None and descriptor is not None:
            text += f": try {descriptor.name}[{option}=true]"
        found.append(text)
    rows = record.get("rows") or []
    op_total = sum(r["ms"] for r in rows)
    moving = [r for r in rows if r["kind"] == "data movement"]
    share = sum(r["ms"] for r in moving) / op_total if op_total > 0 else 0.0
    if share > DATA_MOVEMENT_SHARE:
        by_type: dict[str, float] = {}
        for r in moving:
            by_type[r["op_type"]] = by_type.get(r["op_type"], 0.0) + r["ms"]
        top = sorted(by_type, key=lambda t: -by_type[t])[:3]
        found.append(
            f"{share:.0%} of {label}'s op time is layout conversions and copies ({', '.join(top)})"
        )
    return found


def attach_profile(
    result: CombinationResult,
    outcomes: Sequence[WorkerOutcome],
    workdir: Callable[[int], Path],
    onnx_paths: Sequence[Path | None],
    descriptor: EngineDescriptor,
    label: str,
) -> None:
    """`result.profile` from the process that ran the profile phase (the first one), read
    from its directory (`workdir(process)`) before the commit removes it: the record, n/a
    for an engine without a profiler, or the one-line error of a phase that failed. Nothing
    when the combination measured nothing."""
    first = next((o for o in outcomes if o.result is not None and o.result.process == 0), None)
    if first is None or first.result is None:
        return
    failed_here = first.status != "ok" and first.result.phase == "profile"
    if result.status != "ok" and not failed_here:
        return
    if descriptor.profiler is None:
        result.profile = not_available(descriptor.name)
        return
    if failed_here:
        result.profile = {"error": first.error or "the profile phase failed"}
        return
    done = first.result.profile
    if done is None:  # the worker says why in a warning ("no profile: ..."), if it ran one
        why = [
            w.removeprefix(NO_PROFILE) for w in first.result.warnings if w.startswith(NO_PROFILE)
        ]
        result.profile = {"error": why[0] if why else "the worker wrote no profile (see its log)"}
        return
    try:
        raw = read_profile(workdir(first.result.process) / done.file)
    except InfercmpError as exc:
        result.profile = {"error": str(exc)}
        return
    median = (result.latency or {}).get("p50_ms")
    result.profile = profile_record(
        raw, module_index(onnx_paths), median, label, descriptor, result.options
    )
