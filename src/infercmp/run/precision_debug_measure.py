"""The proposal of `infercmp debug-precision` and its measured effect.

The proposal keeps the blamed modules in higher precision in the engine's own terms:

- int8, any engine: the engine option `int8_exclude` (module path prefixes separated by
  ';'); the mixed model is re-made through the engine's `convert` with that option.
- fp16 on ONNX Runtime: infercmp's fp16 conversion (`artifacts.onnx_precision`) takes no
  block list, so the mixed model is made here with the same converter's `node_block_list`
  and proposed through the engine's existing `fp16_model` option (a path).
- otherwise (OpenVINO's precision is one hint for the whole model; PyTorch casts the whole
  module): no engine mechanism yet, said in one line.

Accuracy is agreement with fp32 on the debug samples (max abs error, cosine, top-1 agreement
for class outputs; the plugin's task metrics when the samples are labelled); latency is a
quick check (the median of 50 timed iterations in one worker process), not a bench.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.onnx_scopes import node_scopes, under
from infercmp.core.contract import Measurement, WorkerSpec
from infercmp.core.lazy import lazy_import
from infercmp.engines.descriptor import EngineDescriptor
from infercmp.run.worker_process import run_worker
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    np = lazy_import("numpy")
    onnx = lazy_import("onnx")

INT8_EXCLUDE = "int8_exclude"
FP16_MODEL = "fp16_model"
QUICK_ITERS = 50
QUICK_NOTE = (
    f"quick check: median of {QUICK_ITERS} iterations in one worker process after 5 warm-up "
    "iterations, not a bench"
)


@dataclass(frozen=True)
class Proposal:
    """Which modules to keep in higher precision and how to ask the engine for it.

    `options` are the engine options that make the mixed model (None: the engine has no way
    yet; `note` says why); `engine_text` is the `-e` value a user types.
    """

    paths: tuple[str, ...]
    options: dict[str, Any] | None
    engine_text: str | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "options": self.options,
            "engine": self.engine_text,
            "note": self.note,
        }


def engine_text(engine: str, options: dict[str, Any]) -> str:
    """`onnxruntime[int8_exclude='0;fc']`: values quoted, so `0` stays a string."""
    items = ",".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}" for k, v in options.items())
    return f"{engine}[{items}]"


def propose(
    descriptor: EngineDescriptor, precision: str, paths: Sequence[str], mixed_fp16: Path | None
) -> Proposal:
    """The proposal for `paths` on the engine of `descriptor` at `precision` (`mixed_fp16`: the
    ONNX made by `write_mixed_fp16`, for an engine with a `mixed_fp16_option`)."""
    paths = tuple(paths)
    engine = descriptor.name
    if not paths:
        return Proposal((), None, None, "no layer loses enough precision to be worth excluding")
    if precision == "int8" and INT8_EXCLUDE in descriptor.options.model_fields:
        options: dict[str, Any] = {INT8_EXCLUDE: ";".join(paths)}
        return Proposal(
            paths, options, engine_text(engine, options), "re-quantized with these excluded"
        )
    mixed_option = descriptor.mixed_fp16_option
    if precision == "fp16" and mixed_fp16 is not None and mixed_option:
        options = {mixed_option: str(mixed_fp16)}
        return Proposal(
            paths,
            options,
            engine_text(engine, options),
            "fp16 ONNX with these modules' nodes kept in fp32 (the converter's node block "
            "list; infercmp's own fp16 conversion takes no block list yet)",
        )
    return Proposal(
        paths, None, None, f"engine '{engine}' has no per-layer precision option for "
        f"{precision} (int8 has {INT8_EXCLUDE}; fp16 an fp16 ONNX option): nothing to re-make",
    )  # fmt: skip


def write_mixed_fp16(
    model: onnx.ModelProto, paths: Sequence[str], nodes: Sequence[str], dst: Path
) -> int:
    """Write `model` converted to fp16 with the nodes under `paths` (and `nodes`, by name)
    kept in fp32; the number of nodes kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    scopes = node_scopes(model)
    keep = [n for n, s in scopes.items() if under(s.path, paths)]
    keep += [n for n in nodes if n not in keep]
    mixed = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _drop_repeated_nodes(mixed.graph)
    _unique_node_names(mixed.graph)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(mixed, str(dst))
    return len(keep)


def _drop_repeated_nodes(graph: Any) -> None:
    """Remove a node that defines a tensor again exactly as an earlier node did: the
    converter casts a tensor feeding two blocked nodes twice, under one name."""
    defined: dict[str, bytes] = {}
    keep = []
    for node in graph.node:
        same = node.SerializeToString().replace(node.name.encode(), b"")
        if node.output and all(defined.get(o) == same for o in node.output):
            continue
        defined.update(dict.fromkeys(node.output, same))
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _unique_node_names(graph: Any) -> None:
    """Rename repeated node names (`name_1`, ...): the converter can give the Casts it adds
    around blocked nodes one name twice, which ONNX Runtime refuses to load."""
    seen: set[str] = set()
    for node in graph.node:
        if node.name in seen:
            k = 1
            while f"{node.name}_{k}" in seen:
                k += 1
            node.name = f"{node.name}_{k}"
        seen.add(node.name)


# -- accuracy -------------------------------------------------------------------------------
def agreement(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    labels: np.ndarray | None = None,
    evaluate: Callable[[list[np.ndarray], np.ndarray], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Agreement of `candidate` with `reference` outputs (per sample, in config order):
    the largest absolute error, the lowest cosine over outputs, top-1 agreement over the
    class outputs (2-D, more than one column; None when there are none), and the task
    metrics of `evaluate` when `labels` are given."""
    max_abs, cosines, top1_same, top1_rows = 0.0, [], 0, 0
    for j in range(len(reference[0]) if reference else 0):
        ref = [np.asarray(s[j], dtype=np.float64) for s in reference]
        cand = [np.asarray(s[j], dtype=np.float64) for s in candidate]
        flat_r = np.concatenate([a.ravel() for a in ref])
        flat_c = np.concatenate([a.ravel() for a in cand])
        max_abs = max(max_abs, float(np.abs(flat_r - flat_c).max(initial=0.0)))
        norm = float(np.linalg.norm(flat_r) * np.linalg.norm(flat_c))
        cosines.append(float(flat_r @ flat_c) / norm if norm else float(flat_r.size == 0))
        if all(a.ndim == 2 and a.shape[-1] > 1 for a in ref):
            for r, c in zip(ref, cand):
                top1_same += int((r.argmax(-1) == c.argmax(-1)).sum())
                top1_rows += r.shape[0]
    found: dict[str, Any] = {
        "max_abs": max_abs,
        "cosine": min(cosines) if cosines else None,
        "top1_agreement": top1_same / top1_rows if top1_rows else None,
    }
    if labels is not None and evaluate is not None and candidate:
        stacked = [np.concatenate([s[j] for s in candidate]) for j in range(len(candidate[0]))]
        found["metrics"] = {k: float(v) for k, v in evaluate(stacked, labels).items()}
    return found


# -- latency --------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuickLatency:
    """What the quick latency check runs: the engine, precision, artifact and options."""

    engine: str
    precision: str
    artifact: Path | None
    options: dict[str, Any]


def quick_latency(
    plugin: ModelPlugin, what: QuickLatency, reference: Path, workdir: Path
) -> dict[str, Any]:
    """The median latency in ms of `what` over QUICK_ITERS iterations in one worker process
    (`latency_ms`), or why it could not be measured (`error`)."""
    spec = WorkerSpec(
        model=plugin.name,
        engine=what.engine,
        device="cpu",
        precision=what.precision,
        artifact=what.artifact,
        reference=reference,
        input_names=plugin.config.input_names,
        output_names=plugin.config.output_names,
        options=what.options,
        measurement=Measurement(
            iters=QUICK_ITERS, warmup_iters=5, warmup_seconds=None, min_seconds=0.0
        ),
        result_dir=workdir,
    )
    outcome = run_worker(spec, timeout_s=300.0, sample_hz=0.0, samplers=[])
    wall = outcome.latency.get("wall.total")
    if outcome.status != "ok" or wall is None or not len(wall):
        return {"latency_ms": None, "error": outcome.error or f"worker {outcome.status}"}
    return {"latency_ms": float(np.median(wall)) / 1e6, "iterations": int(len(wall))}
