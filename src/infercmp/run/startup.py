"""What starting a combination costs: `bench --cold`'s start-up passes and the record stored
on each combination as `startup` (docs/results-format.md, "startup").

Without --cold the record holds the measured run's own figures (`as_run`, its first worker
process) and what the run's export and conversion cost, cache hit or miss (`prepared`). With
--cold each combination, after its measurement, is started twice more in a fresh temporary
directory that holds infercmp's artifact cache and the engine's own caches: **cold** (every
export, conversion and TensorRT plan a miss, the engine's caches empty) and then **warm**
(the same directories again: every artifact a hit, the engine's caches filled). Each pass is
one worker process with a short fixed measurement (`PASS_WARMUP` and `PASS_ITERS`): only its
start-up figures are kept. The directory is removed after. The OS page cache and CUDA's
driver JIT cache are never cleared (`NOT_CLEARED`).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.onnx_export import export_onnx
from infercmp.core.contract import Load, Measurement
from infercmp.core.errors import InfercmpError
from infercmp.engines.descriptor import ConvertContext, EngineDescriptor
from infercmp.run.executors.base import BenchListener
from infercmp.run.plan import BenchPlan, Combination
from infercmp.run.prepare import Artifacts, StepTime, bounded, timed
from infercmp.run.worker_process import WorkerOutcome, run_worker, worker_spec
from infercmp.workload.plugins import ModelPlugin

#: Each start-up pass measures this little: its start-up figures are all that is kept.
PASS_WARMUP, PASS_ITERS = 10, 20
#: What "cold" leaves as it is, in the report's words.
NOT_CLEARED = (
    "the OS page cache (clearing it needs root and disturbs the machine) and CUDA's driver "
    "JIT cache (~/.nv/ComputeCache)"
)
#: What every cold pass clears besides the engine's own caches (`engine_caches`).
ARTIFACT_CACHE = "infercmp's artifact cache (export, conversion, quantization, TensorRT plan)"


def ask_cold(cold: bool, distributed: bool, note: Callable[[str], None]) -> bool:
    """Whether this bench runs start-up passes (`--cold`), saying what they cost; refused
    under a distributed executor, whose nodes keep their own caches."""
    if not cold:
        return False
    if distributed:
        raise InfercmpError(
            "--cold starts its cold and warm workers on this machine; use it with --executor local"
        )
    note(
        "--cold: after its measurement each combination starts twice more in fresh worker "
        f"processes (cold, then warm; {PASS_WARMUP} warm-up and {PASS_ITERS} timed calls each), "
        "its export and conversion made again in a temporary cache"
    )
    return True


def startup_record(
    outcomes: list[WorkerOutcome],
    prepared: dict[str, Any] | None = None,
    passes: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The combination's `startup` record: `as_run` from its first process that has start-up
    figures, `prepared` (what the run's own export and conversion cost) and, with --cold,
    the passes (`StartupPasses`). None when there is nothing to say."""
    first = next(
        (o.result.startup for o in outcomes if o.result is not None and o.result.startup), None
    )
    record: dict[str, Any] = {}
    if first is not None:
        record["as_run"] = first.model_dump()
    if prepared:
        record["prepared"] = prepared
    if passes:
        record.update(passes)
    return record or None


def combination_startup(
    outcomes: list[WorkerOutcome],
    combo: Combination,
    artifacts: Artifacts,
    descriptor: EngineDescriptor,
    cold: StartupPasses | None = None,
) -> dict[str, Any] | None:
    """The `startup` record of a combination whose processes ended with `outcomes`; with
    `cold` (bench --cold) and a measurement that ended ok, its start-up passes run now."""
    measured = bool(outcomes) and all(o.status == "ok" for o in outcomes)
    passes = cold(combo) if cold is not None and measured else None
    return startup_record(outcomes, prepared_times(artifacts, combo, descriptor), passes)


def prepared_times(
    artifacts: Artifacts, combo: Combination, descriptor: EngineDescriptor
) -> dict[str, Any] | None:
    """What the run's own export and conversion for `combo` cost (`Artifacts.export_time`,
    `convert_times`): seconds and cache hit or miss; None where neither ran."""
    export = artifacts.export_time if descriptor.artifact == "onnx" else None
    convert = artifacts.convert_times.get((combo.engine, combo.precision))
    return _steps(export, convert) if export or convert else None


def _steps(export: StepTime | None, convert: StepTime | None) -> dict[str, Any]:
    return {
        "export_s": export.seconds if export else None,
        "export_hit": export.hit if export else None,
        "convert_s": convert.seconds if convert else None,
        "convert_hit": convert.hit if convert else None,
    }


class StartupPasses:
    """`bench --cold`: the cold and warm passes of each combination, once per engine choice,
    device, precision and reference (loads that differ only in concurrency or scenario share
    them: a pass always runs one request at a time at the combination's batch)."""

    def __init__(
        self,
        plugin: ModelPlugin,
        plan: BenchPlan,
        artifacts: Artifacts,
        measurement: Measurement,
        listener: BenchListener,
    ) -> None:
        self.plugin, self.plan, self.artifacts = plugin, plan, artifacts
        self.listener = listener
        self.timeout_s = measurement.timeout_s
        self.measurement = Measurement.model_validate(
            {
                **measurement.model_dump(),
                "warmup_iters": PASS_WARMUP,
                "warmup_seconds": None,
                "iters": PASS_ITERS,
                "duration_s": None,
            }
        )
        onnx = artifacts.onnx
        self.exporter = onnx.exporter if onnx is not None else "auto"  # what the run used
        self._done: dict[tuple[Any, ...], dict[str, Any]] = {}

    def __call__(self, combo: Combination) -> dict[str, Any]:
        """The cold and warm passes of `combo` and what they clear."""
        key = (combo.engine, combo.device, combo.precision, combo.reference_key)
        if key not in self._done:
            self._done[key] = self._run(combo)
        return self._done[key]

    def _run(self, combo: Combination) -> dict[str, Any]:
        descriptor = self.plan.descriptors[combo.engine.name]
        single = dataclasses.replace(combo, load=Load(batch=combo.load.batch))
        passes: dict[str, Any] = {}
        top = Path(tempfile.mkdtemp(prefix="infercmp-cold-"))
        try:
            cache = ArtifactCache(top / "artifacts")
            for name in ("cold", "warm"):  # the same directories: warm finds what cold made
                passes[name] = self._one_pass(name, single, descriptor, cache, top)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        caches = [ARTIFACT_CACHE, *getattr(descriptor, "engine_caches", ())]
        return {**passes, "caches_cleared": caches, "not_cleared": NOT_CLEARED}

    def _one_pass(
        self,
        name: str,
        combo: Combination,
        descriptor: EngineDescriptor,
        cache: ArtifactCache,
        top: Path,
    ) -> dict[str, Any]:
        """One pass: the export and conversion through `cache`, timed, then one worker with
        its engine caches under `top`; a failure is the pass's `error`, never the run's."""
        record: dict[str, Any] = {**_steps(None, None), "worker": None, "ready_s": None}
        say = functools.partial(self.listener.phase, combo)
        try:
            prepared, export, convert = self._prepare(name, combo, descriptor, cache, say)
            record.update(_steps(export, convert))
            spec = worker_spec(
                self.plugin, combo, prepared, self.measurement, top / "workers" / name
            ).model_copy(update={"engine_cache_dir": top / "engine"})
            outcome = run_worker(
                spec, self.timeout_s, 0.0, [], on_phase=lambda p: say(f"{name} start: {p}")
            )
        except Exception as exc:  # the pass's failure, said in one line; the run goes on
            text = " ".join(str(exc).split()) or "(no message)"
            record["error"] = (
                text if isinstance(exc, InfercmpError) else f"{type(exc).__name__}: {text}"
            )
            return record
        startup = outcome.result.startup if outcome.result is not None else None
        if outcome.status != "ok" or startup is None:
            record["error"] = outcome.error or "the worker answered no call"
            return record
        record["worker"] = startup.model_dump()
        record["ready_s"] = (
            (record["export_s"] or 0.0) + (record["convert_s"] or 0.0) + startup.ready_s
        )
        return record

    def _prepare(
        self,
        name: str,
        combo: Combination,
        descriptor: EngineDescriptor,
        cache: ArtifactCache,
        say: Callable[[str], None],
    ) -> tuple[Artifacts, StepTime | None, StepTime | None]:
        """The combination's artifacts made again through `cache` (the references and the
        calibration samples are the run's: inputs, not start-up), each step timed."""
        run = self.artifacts
        prepared = Artifacts(
            references=run.references, batches=run.batches, calibration=run.calibration
        )
        export = convert = None
        if descriptor.artifact == "onnx":
            say(f"{name} start: ONNX export")
            make = functools.partial(export_onnx, self.plugin, cache, exporter=self.exporter)
            prepared.onnx, export = bounded(self.timeout_s, functools.partial(timed, cache, make))
        say(f"{name} start: conversion")
        context = ConvertContext(
            self.plugin, cache, prepared.onnx, lambda _message: None, run.batches, run.calibration
        )
        options = descriptor.parse_options(dict(combo.engine.options))
        converted, took = timed(
            cache, functools.partial(descriptor.convert, context, combo.precision, options)
        )
        if converted is not None:
            prepared.converted[combo.engine, combo.precision] = converted
        if converted is not None and converted.artifact is not None:
            convert = took
        return prepared, export, convert
