"""Where a reduced precision breaks: per-layer error against fp32, and the layers to blame.

`infercmp debug-precision` runs a few samples through the fp32 reference and the
reduced-precision model with every intermediate tensor exposed (ONNX: tensors as graph
outputs, matched by name; PyTorch: forward hooks, matched by module path;
`infercmp.run.precision_debug_capture`), and measures each tensor's error as SQNR in dB
(`20 log10(|ref| / |ref - cand|)`, ONNX Runtime's quantization debugger's measure) and as
max/mean relative error. A layer is blamed for the SQNR it loses (`growth`: its inputs' SQNR
minus its output's), not for the error it inherits: after one bad layer every later tensor is
bad, but only that layer's growth is large. The top layers, named by their PyTorch module
path (`infercmp.artifacts.onnx_scopes`), are what `infercmp.run.precision_debug_measure`
proposes to keep in higher precision, and measures.

Per-layer errors are diagnostics: exposing tensors changes what an engine fuses, so the
end-to-end figures always come from the unmodified artifact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.onnx_scopes import NodeScope, node_scopes
from infercmp.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    np = lazy_import("numpy")

#: SQNR of identical tensors (and the cap of any SQNR): keeps every figure finite for JSON.
MAX_SQNR_DB = 200.0
#: A layer losing less than this many dB (its noise power not doubled) is not blamed.
MIN_GROWTH_DB = 3.0
RESULT_SCHEMA = 1


@dataclass(frozen=True)
class TensorError:
    """One tensor's error over all samples: SQNR in dB and relative errors.

    `max_rel` is max|ref - cand| / max|ref| and `mean_rel` mean|ref - cand| / mean|ref|:
    relative to the tensor's scale, so elements near zero do not blow up. `floor_db` is the
    SQNR of the reference merely stored at the reduced precision (`rounding_sqnr`): the best
    any layer computing at that precision can give.
    """

    sqnr_db: float
    max_rel: float
    mean_rel: float
    floor_db: float = MAX_SQNR_DB


@dataclass(frozen=True)
class LayerError:
    """One layer (an ONNX node, or a PyTorch leaf module) and the error it adds.

    `name` is the node's output tensor (ONNX) or the module path (PyTorch); `path` the
    module path in the user's terms ("" for the model's own top level); `sqnr_in` the lowest
    SQNR among its inputs (MAX_SQNR_DB for the model's inputs); `floor_db` the SQNR of its
    output merely rounded to the reduced precision; `fused_by` the optimisation that merged
    the node with another module's (its path is then the merged one's).
    """

    name: str
    path: str
    op: str
    sqnr_in: float
    sqnr_out: float
    max_rel: float
    mean_rel: float
    fused_by: str | None = None
    floor_db: float = MAX_SQNR_DB

    @property
    def growth(self) -> float:
        """dB of SQNR this layer loses beyond what it inherits and what storing its output at
        the reduced precision costs: min(input SQNR, rounding floor) minus its output SQNR.

        Without the floor the first layer of every model would look guilty: its input is
        exact and its output cannot be.
        """
        return min(self.sqnr_in, self.floor_db) - self.sqnr_out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "growth": round(self.growth, 3)}


def rounding_sqnr(reference: np.ndarray, precision: str) -> float:
    """SQNR in dB of `reference` (float64) stored at `precision` and read back: fp16, bf16
    (round to nearest even), int8 (symmetric, one scale: max|x| / 127); fp32: MAX_SQNR_DB."""
    if precision == "fp16":
        rounded = reference.astype(np.float16).astype(np.float64)
    elif precision == "bf16":
        wide = reference.astype(np.float32).view(np.uint32).astype(np.uint64)
        top = (wide + 0x7FFF + ((wide >> 16) & 1)) >> 16
        rounded = (top << 16).astype(np.uint32).view(np.float32).astype(np.float64)
    elif precision == "int8":
        scale = float(np.abs(reference).max(initial=0.0)) / 127.0 or 1.0
        rounded = np.clip(np.round(reference / scale), -127, 127) * scale
    else:
        return MAX_SQNR_DB
    signal = float(np.linalg.norm(reference))
    return _sqnr(signal, float(np.linalg.norm(reference - rounded)))


def tensor_error(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], precision: str = "fp32"
) -> TensorError:
    """The error of `candidate` against `reference`, over all samples (arrays concatenated);
    the floor is `reference`'s at `precision`."""
    ref = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in reference])
    cand = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in candidate])
    if ref.shape != cand.shape:
        raise ValueError(f"shapes differ: {ref.shape} and {cand.shape}")
    # Equal values agree, infinities included (an attention mask's -inf on both sides).
    same = ref == cand
    if not np.all(same | np.isfinite(cand)) or not np.all(same | np.isfinite(ref)):
        return TensorError(-MAX_SQNR_DB, math.inf, math.inf)
    finite = np.isfinite(ref)
    ref = np.where(finite, ref, 0.0)
    diff = np.where(same, 0.0, np.abs(ref - np.where(finite, cand, 0.0)))
    floor = rounding_sqnr(ref, precision)
    return TensorError(
        sqnr_db=_sqnr(float(np.linalg.norm(ref)), float(np.linalg.norm(diff))),
        max_rel=_ratio(float(diff.max(initial=0.0)), float(np.abs(ref).max(initial=0.0))),
        mean_rel=_ratio(float(diff.mean()) if diff.size else 0.0, float(np.abs(ref).mean())),
        floor_db=floor,
    )


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return MAX_SQNR_DB
    if signal == 0.0:
        return -MAX_SQNR_DB
    return max(-MAX_SQNR_DB, min(MAX_SQNR_DB, 20.0 * math.log10(signal / noise)))


def _ratio(num: float, den: float) -> float:
    if num == 0.0:
        return 0.0
    return num / den if den > 0.0 else math.inf


def match_tensors(
    reference: Mapping[str, Sequence[np.ndarray]],
    candidate: Mapping[str, Sequence[np.ndarray]],
    precision: str = "fp32",
) -> dict[str, TensorError]:
    """Each tensor both sides expose (same name, same shape) -> its error; others are skipped."""
    errors = {}
    for name, ref in reference.items():
        cand = candidate.get(name)
        if cand is None or len(cand) != len(ref):
            continue
        if any(np.shape(r) != np.shape(c) for r, c in zip(ref, cand)):
            continue
        errors[name] = tensor_error(ref, cand, precision)
    return errors


# -- attribution ----------------------------------------------------------------------------
def onnx_layer_errors(
    model: onnx.ModelProto, errors: Mapping[str, TensorError]
) -> list[LayerError]:
    """One `LayerError` per node of the fp32 `model` whose output has an error, in graph order.

    A node's input SQNR is the lowest among its activation inputs; an input with no error
    of its own (not exposed, or not matched) takes its producer's inputs' SQNR, and so on up
    to the graph inputs (exact: MAX_SQNR_DB). Weights and constants are not inputs here.
    """
    scopes = node_scopes(model)
    producer = {out: node for node in model.graph.node for out in node.output if out}
    weights = {init.name for init in model.graph.initializer}
    memo: dict[str, float] = {}

    def sqnr_of(tensor: str, seen: frozenset[str]) -> float:
        if tensor in errors:
            return errors[tensor].sqnr_db
        if tensor in memo:
            return memo[tensor]
        node = producer.get(tensor)
        if node is None or tensor in seen or node.op_type == "Constant":
            return MAX_SQNR_DB  # a graph input, a weight or a constant: exact
        value = min(
            (sqnr_of(t, seen | {tensor}) for t in node.input if t and t not in weights),
            default=MAX_SQNR_DB,
        )
        memo[tensor] = value
        return value

    layers = []
    for node in model.graph.node:
        outputs = [o for o in node.output if o in errors]
        if not outputs:
            continue
        worst = min(outputs, key=lambda o: errors[o].sqnr_db)
        sqnr_in = min(
            (sqnr_of(t, frozenset()) for t in node.input if t and t not in weights),
            default=MAX_SQNR_DB,
        )
        scope = scopes.get(node.name, NodeScope(""))
        err = errors[worst]
        layers.append(
            LayerError(
                worst, scope.path, node.op_type, sqnr_in, err.sqnr_db, err.max_rel, err.mean_rel,
                scope.fused_by, err.floor_db,
            )
        )  # fmt: skip
    return layers


def at_depth(layers: Iterable[LayerError], depth: int | None) -> list[LayerError]:
    """Layers grouped by their module path cut to `depth` parts (None: as they are).

    A group enters at its members' highest input SQNR and leaves at their lowest output
    SQNR; its growth is the sum of its members', bounded by that drop; its op lists its
    members' op types.
    """
    layers = list(layers)
    if depth is None:
        return layers
    groups: dict[str, list[LayerError]] = {}
    for layer in layers:
        key = ".".join(layer.path.split(".")[:depth]) if layer.path else ""
        groups.setdefault(key, []).append(layer)
    merged = []
    for path, members in groups.items():
        sqnr_in = max(m.sqnr_in for m in members)
        sqnr_out = min(m.sqnr_out for m in members)
        # growth = min(sqnr_in, floor) - sqnr_out: the floor carries the members' sum.
        floor = sqnr_out + sum(m.growth for m in members)
        fused = next((m.fused_by for m in members if m.fused_by), None)
        merged.append(
            LayerError(
                path or "(top level)", path, "+".join(dict.fromkeys(m.op for m in members)),
                sqnr_in, sqnr_out, max(m.max_rel for m in members),
                max(m.mean_rel for m in members), fused, floor,
            )
        )  # fmt: skip
    return merged


def rank_layers(
    layers: Iterable[LayerError], top: int, min_growth: float = MIN_GROWTH_DB
) -> list[LayerError]:
    """The `top` layers that lose the most SQNR (at least `min_growth` dB), worst first.

    Ties keep graph order, so of two equal losses the earlier layer, the cause, comes first.
    """
    worth = [(i, layer) for i, layer in enumerate(layers) if layer.growth >= min_growth]
    worth.sort(key=lambda item: (-item[1].growth, item[0]))
    return [layer for _i, layer in worth[:top]]


def exclusion_paths(ranked: Iterable[LayerError]) -> list[str]:
    """The module paths to keep in higher precision, in rank order, without duplicates or
    the model's own top level (which no exclusion by path can name)."""
    return [p for p in dict.fromkeys(layer.path for layer in ranked) if p]


# -- the stored result ----------------------------------------------------------------------
@dataclass
class DebugResult:
    """What `infercmp debug-precision` found, as stored (`as_dict`) and rendered by
    `infercmp.report.precision` (which reads the plain dict, not this class)."""

    model: str
    engine: str
    precision: str
    device: str
    samples: int
    samples_source: str
    mechanism: str
    depth: int | None
    layers: list[LayerError]
    top: list[LayerError]
    proposal: dict[str, Any]
    measured: dict[str, Any] | None
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "kind": "debug-precision",
            "model": self.model,
            "engine": self.engine,
            "precision": self.precision,
            "device": self.device,
            "samples": {"count": self.samples, "source": self.samples_source},
            "mechanism": self.mechanism,
            "depth": self.depth,
            "layers": [layer.as_dict() for layer in self.layers],
            "top": [layer.as_dict() for layer in self.top],
            "proposal": self.proposal,
            "measured": self.measured,
            "notes": self.notes,
        }
