"""ONNX -> TensorRT / TensorRT-RTX engine plan: one profile, a precision, cached by content.

TensorRT 10 takes FP16/BF16 as builder flags. TensorRT 11 and TensorRT-RTX build strongly
typed networks whose types come from the ONNX file, so for them the ONNX model is converted to
the requested precision first (weights and compute in fp16/bf16; inputs and outputs stay in
their config types so the runtime's buffers do not change with precision).

INT8 is explicit quantization only: the network is parsed from a symmetric S8/S8 Q/DQ ONNX
model (`infercmp.artifacts.quantize.ort_qdq`, flavour "tensorrt", calibrated on the run's
samples) and built STRONGLY_TYPED with every backend. TensorRT 10 deprecated its calibrators
(10.1) and TensorRT 11 removes them with the INT8 builder flag; TensorRT-RTX never had them.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.cache import ArtifactCache, CacheEntry, content_key, file_sha256
from infercmp.artifacts.onnx_precision import convert_precision
from infercmp.artifacts.quantize.common import Quantized
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.core.files import read_regular
from infercmp.core.types import PRECISIONS
from infercmp.engines.tensorrt.flavour import TrtModule, gpu_model, load_trt_module
from infercmp.engines.tensorrt.logger import TrtLog, make_logger
from infercmp.engines.tensorrt.plan_meta import LOG_FILE, PLAN_FILE
from infercmp.workload.batching import profile_for_batches

if TYPE_CHECKING:
    from infercmp.artifacts.onnx_export import OnnxArtifact
    from infercmp.workload.config import ModelConfig
    from infercmp.workload.plugins import ModelPlugin

DEFAULT_WORKSPACE_GB = None  # let TensorRT use what the device has

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PlanArtifact:
    """A serialized engine in the cache, with the log of the build that made it."""

    path: Path
    key: str
    cached: bool
    backend: str  # "tensorrt" | "tensorrt-rtx"
    backend_version: str
    seconds: float
    log_path: Path
    precision: str
    gpu: str  # the GPU it was built for, or "cpu-only"
    strongly_typed: bool


# -- network checks --------------------------------------------------------------------------
def _parse(trt: TrtModule, network, onnx_path: Path, log: TrtLog) -> None:
    parser = trt.module.OnnxParser(network, make_logger(trt.module, log))
    ok = parser.parse_from_file(str(onnx_path))
    if ok:
        return
    problems = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = err.node_name() or f"node {err.node()}"
        problems.append(f"{where} ({err.node_operator()}): {err.desc()}")
    detail = "; ".join(problems) or "; ".join(log.errors()[-3:]) or "no details"
    raise InfercmpError(f"the {trt.backend} ONNX parser rejects {onnx_path.name}: {detail}")


def _set_profile(trt: TrtModule, builder, network, build_config, config: ModelConfig):
    """One optimisation profile for every input, checked against the network's input shapes."""
    profile = builder.create_optimization_profile()
    specs = {spec.name: spec for spec in config.inputs}
    seen = set()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        spec = specs.get(tensor.name)
        if spec is None:
            raise InfercmpError(
                f"the ONNX model has input '{tensor.name}' that the config of model "
                f"'{config.name}' does not declare (inputs: {', '.join(specs)})"
            )
        seen.add(tensor.name)
        network_shape = list(tensor.shape)
        opt = spec.shapes.optimization
        for which in ("min", "opt", "max"):
            dims = getattr(opt, which)
            bad = len(dims) != len(network_shape) or any(
                n != -1 and d != n for d, n in zip(dims, network_shape)
            )
            if bad:
                raise InfercmpError(
                    f"model '{config.name}', input '{tensor.name}': optimization.{which} "
                    f"{dims} does not fit the ONNX input shape "
                    f"{['?' if n == -1 else n for n in network_shape]}; fix the config's "
                    "optimization shapes or re-export"
                )
        profile.set_shape(tensor.name, opt.min, opt.opt, opt.max)
    missing = [n for n in specs if n not in seen]
    if missing:
        raise InfercmpError(
            f"the ONNX model lacks input(s) {', '.join(missing)} declared by the config of "
            f"model '{config.name}'; re-export with --force"
        )
    build_config.add_optimization_profile(profile)
    return profile


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unknown"


def _timing_cache_path(cache: ArtifactCache, trt: TrtModule, gpu: str) -> Path:
    return cache.timing_dir / f"{trt.backend}-{trt.version}-{_slug(gpu)}.cache"


def _load_timing_cache(trt: TrtModule, build_config, path: Path, log: TrtLog) -> bool:
    if not trt.has_timing_cache:
        return False
    try:
        blob = read_regular(path) if path.exists() else b""
        timing = build_config.create_timing_cache(blob)
        build_config.set_timing_cache(timing, ignore_mismatch=True)
        return True
    except Exception as exc:  # a stale or foreign timing cache only costs time
        log.add("INFO", f"infercmp: timing cache {path} not used: {exc}")
        return False


def _save_timing_cache(build_config, path: Path, log: TrtLog) -> None:
    try:
        timing = build_config.get_timing_cache()
        if timing is None:
            return
        data = bytes(timing.serialize())
    except Exception as exc:
        log.add("INFO", f"infercmp: timing cache not saved: {exc}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _plan_key(
    config: ModelConfig,
    onnx: OnnxArtifact,
    trt: TrtModule,
    precision: str,
    gpu: str,
    workspace,
    qdq: Quantized | None = None,
) -> str:
    return content_key(
        {
            "kind": "plan",
            "onnx": onnx.key,
            # int8: the Q/DQ model's key covers calibration, exclusions and the quantizer
            **({"qdq": qdq.key} if qdq is not None else {}),
            "precision": precision,
            "backend": trt.backend,
            "backend_version": trt.version,
            "gpu": gpu,
            "workspace_gb": workspace,
            "profile": {i.name: i.shapes.optimization.model_dump() for i in config.inputs},
            "builder_source": file_sha256(Path(__file__)),
        }
    )


def _artifact(entry: CacheEntry, cached: bool, seconds: float) -> PlanArtifact:
    meta = entry.meta
    return PlanArtifact(
        path=entry.file(PLAN_FILE),
        key=entry.key,
        cached=cached,
        backend=meta["backend"],
        backend_version=meta["backend_version"],
        seconds=seconds,
        log_path=entry.file(LOG_FILE),
        precision=meta["precision"],
        gpu=meta["gpu"],
        strongly_typed=bool(meta["strongly_typed"]),
    )


def build_engine(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    onnx: OnnxArtifact,
    *,
    precision: str = "fp32",
    backend: str | None = None,
    workspace_gb: float | None = None,
    force: bool = False,
    progress: Progress | None = None,
    batches: Sequence[int] = (),
    qdq: Quantized | None = None,
) -> PlanArtifact:
    """Build (or fetch from the cache) a serialized engine of `onnx` for this machine's GPU.

    `batches`: the batch sizes to run; the profile's batch axis spans them
    (`batching.profile_for_batches`), the config's profile otherwise. `qdq`: for int8, the
    symmetric Q/DQ model of `onnx` the plan is built from (required).
    """
    if precision not in PRECISIONS:
        raise InfercmpError(f"unknown precision '{precision}'; choose {', '.join(PRECISIONS)}")
    if precision == "int8" and qdq is None:
        raise InfercmpError(
            "TensorRT int8 is built from a Q/DQ ONNX model quantized with calibration samples "
            "(explicit quantization; TensorRT's calibrators are deprecated and gone in "
            "TensorRT 11 and TensorRT-RTX): run it through the tensorrt engine, which makes one"
        )
    if workspace_gb is not None and workspace_gb <= 0:
        raise InfercmpError(f"--workspace-gb must be positive, got {workspace_gb}")
    progress = progress or (lambda _msg: None)
    start = time.perf_counter()
    trt = load_trt_module(backend)
    gpu = gpu_model()
    config = profile_for_batches(plugin.config, batches)
    key = _plan_key(config, onnx, trt, precision, gpu, workspace_gb, qdq)
    if not force:
        entry = cache.lookup("plan", key)
        if entry is not None:
            return _artifact(entry, True, time.perf_counter() - start)
    with cache.lock("plan", key):
        if force:
            cache.remove("plan", key)
        entry = cache.lookup("plan", key)
        if entry is not None:
            return _artifact(entry, True, time.perf_counter() - start)
        with cache.staging() as staged:
            log = TrtLog()  # every message: build.log keeps them all
            try:
                meta = _build(
                    config,
                    cache,
                    onnx,
                    trt,
                    precision,
                    gpu,
                    workspace_gb,
                    staged,
                    log,
                    progress,
                    qdq,
                )
            finally:
                (staged / LOG_FILE).write_text(log.text())
            entry = cache.store("plan", key, staged, meta)
    return _artifact(entry, False, time.perf_counter() - start)


def _build(
    config: ModelConfig,
    cache: ArtifactCache,
    onnx: OnnxArtifact,
    trt: TrtModule,
    precision: str,
    gpu: str,
    workspace_gb: float | None,
    staged: Path,
    log: TrtLog,
    progress: Progress,
    qdq: Quantized | None = None,
) -> dict[str, Any]:
    module = trt.module
    source = onnx.path
    # int8: the Q/DQ model's types decide; no flag, a strongly typed network on any TensorRT.
    strongly_typed = trt.strongly_typed or precision == "int8"
    flag = None if precision == "int8" else trt.precision_flag(precision)
    if precision == "int8" and qdq is not None:
        source = qdq.path
    elif precision != "fp32" and (trt.strongly_typed or flag is None):
        progress(f"converting the ONNX model to {precision} for a strongly typed network")
        source = staged / f"model.{precision}.onnx"
        convert_precision(onnx.path, source, precision)
    progress(f"building a {precision} engine with {trt.backend} {trt.version} for {gpu}")
    logger = make_logger(trt.module, log)
    builder = module.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(trt, network, source, log)
    build_config = builder.create_builder_config()
    # Layer types, tactics and each layer's ONNX nodes stay in the plan for `--profile`
    # (engines/tensorrt/profile.py reads them through the engine inspector).
    verbosity = getattr(module, "ProfilingVerbosity", None)
    if verbosity is not None and hasattr(verbosity, "DETAILED"):
        build_config.profiling_verbosity = verbosity.DETAILED
    _set_profile(trt, builder, network, build_config, config)
    if flag is not None and not strongly_typed:
        build_config.set_flag(flag)
    if workspace_gb is not None:
        build_config.set_memory_pool_limit(
            module.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30))
        )
    timing_path = _timing_cache_path(cache, trt, gpu)
    timing = _load_timing_cache(trt, build_config, timing_path, log)
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, build_config)
    build_seconds = time.perf_counter() - started
    if plan is None:
        last = "; ".join(log.errors()[-3:]) or "no error was logged"
        raise RunFailed(
            f"{trt.backend} {trt.version} returned no engine for model '{config.name}' "
            f"({precision}): {last}"
        )
    if timing:
        _save_timing_cache(build_config, timing_path, log)
    data = memoryview(plan)
    (staged / PLAN_FILE).write_bytes(data)
    if source.parent == staged:  # a converted copy made for this build
        source.unlink()
    return {
        "model": config.name,
        "onnx_key": onnx.key,
        "backend": trt.backend,
        "backend_version": trt.version,
        "precision": precision,
        "strongly_typed": strongly_typed,
        "gpu": gpu,
        "workspace_gb": workspace_gb,
        "build_seconds": build_seconds,
        "profile": {i.name: i.shapes.optimization.model_dump() for i in config.inputs},
    }
