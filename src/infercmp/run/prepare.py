"""The artifacts a plan needs, made through the cache before any worker starts: the reference
outputs, the ONNX export and each engine's own converted form (`prepare_artifacts`)."""

from __future__ import annotations

import functools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from infercmp.artifacts.accuracy_set import AccuracySet, calibration_for, ensure_accuracy_set
from infercmp.artifacts.cache import ArtifactCache
from infercmp.artifacts.onnx_export import OnnxArtifact, export_onnx
from infercmp.artifacts.reference import ensure_batched_reference
from infercmp.artifacts.samples import CalibrationSet
from infercmp.core.contract import Measurement
from infercmp.core.errors import InfercmpError
from infercmp.engines.descriptor import ConvertContext, Converted, EngineDescriptor
from infercmp.run.accuracy import AccuracyJudge, AccuracyRequest
from infercmp.run.plan import BenchPlan, Combination, EngineChoice
from infercmp.workload.batching import plan_batches
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import Experiment

T = TypeVar("T")


@dataclass(frozen=True)
class StepTime:
    """How long one preparation step (an export, a conversion) took, and whether the cache
    held what it makes already (`hit`; None: the step makes nothing the cache keeps)."""

    seconds: float
    hit: bool | None


def timed(cache: ArtifactCache | None, call: Callable[[], T]) -> tuple[T, StepTime]:
    """`call()` and how long it took; a hit when it added no entry to the cache (None: no
    cache to tell by)."""
    before = _entry_keys(cache)
    started = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - started
    made = _entry_keys(cache) - before
    return value, StepTime(seconds, None if cache is None else not made)


def _entry_keys(cache: ArtifactCache | None) -> set[tuple[str, str]]:
    return {(e.kind, e.key) for e in cache.entries()} if cache is not None else set()


@dataclass
class Artifacts:
    """What the workers need, prepared through the cache before any worker starts.

    Whatever could not be made is recorded with the reason, and only the combinations that
    need it fail: a model that raises at one shape leaves the other shapes to run.
    """

    onnx: OnnxArtifact | None = None
    onnx_error: str | None = None
    # (engine choice, precision) -> the engine's own form, or why it could not be made
    converted: dict[tuple[EngineChoice, str], Converted] = field(default_factory=dict)
    convert_errors: dict[tuple[EngineChoice, str], str] = field(default_factory=dict)
    # Combination.reference_key (experiment label, batch) -> npz, or why it could not be made
    references: dict[tuple[str, int | None], Path] = field(default_factory=dict)
    reference_errors: dict[tuple[str, int | None], str] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)  # of the errors above, for --debug
    # The batch sizes conversions were made for (ConvertContext.batches): a node that builds a
    # `builds_on_device` artifact itself builds it for the same ones.
    batches: tuple[int, ...] = ()
    # bench --accuracy: judges each combination's outputs (its accuracy set names the samples
    # the workers run); None when not asked.
    judge: AccuracyJudge | None = None
    # int8: the samples conversions calibrate on (ConvertContext.calibration).
    calibration: CalibrationSet | None = None
    # What the export and each conversion cost this time, cache hit or miss (start-up costs).
    export_time: StepTime | None = None
    convert_times: dict[tuple[EngineChoice, str], StepTime] = field(default_factory=dict)

    def missing(self, combo: Combination, descriptor: EngineDescriptor) -> str | None:
        """Why this combination cannot start its worker, or None when all it needs is here."""
        if combo.reference_key in self.reference_errors:
            return self.reference_errors[combo.reference_key]
        if descriptor.artifact == "onnx" and self.onnx_error is not None:
            return self.onnx_error
        failed = self.convert_errors.get((combo.engine, combo.precision))
        if failed is not None:
            return f"{combo.engine.name} could not make its artifact: {failed}"
        return None

    def errors(self) -> list[str]:
        """Every failure, once each, in the order a user should read them."""
        found = [*self.reference_errors.values(), self.onnx_error]
        found += [f"{c.name} {p}: {e}" for (c, p), e in self.convert_errors.items()]
        return list(dict.fromkeys(e for e in found if e))

    def anything_to_run(self, plan: BenchPlan) -> bool:
        return any(self.missing(c, plan.descriptors[c.engine.name]) is None for c in plan.runnable)


def _model_error(plugin: ModelPlugin, experiment: Experiment, step: str, exc: Exception) -> str:
    """One line naming the model, the shape, the step and the exception's own message."""
    text = " ".join(str(exc).split()) or "(no message)"
    if not isinstance(exc, InfercmpError):
        text = f"{type(exc).__name__}: {text}"
    return f"model '{plugin.name}' at shape {experiment.label}: {step} failed: {text}"


def bounded(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()` in a helper thread, given up after `seconds` with one clear error.

    For the parent's own calls into the user's plugin (loading the module, running it for
    the reference outputs, exporting it): a plugin that hangs there must not hang bench. The
    abandoned thread is a daemon; it ends with the process. Signals still reach the main
    thread, which only waits.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller as it is
            box["error"] = exc

    thread = threading.Thread(target=target, name="infercmp-plugin-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise InfercmpError(
            f"did not finish within {seconds:g} s (--timeout); the plugin's code may hang"
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


def accuracy_artifacts(
    plugin: ModelPlugin,
    cache: ArtifactCache,
    accuracy: AccuracyRequest | None,
    int8: Experiment | None,
    timeout_s: float,
) -> tuple[AccuracyJudge | None, CalibrationSet | None]:
    """The judge of `bench --accuracy` (None when not asked) and the samples int8 calibrates
    on: the model's dataset split, else (no dataset, an int8 combination planned) the
    example's random inputs at the first int8 experiment, labelled "random" wherever shown.

    A dataset the plugin cannot give, or --accuracy for a model without one, is one line
    (InfercmpError, exit 2) before any worker runs.
    """
    settings = plugin.config.accuracy_settings
    make = functools.partial(
        ensure_accuracy_set,
        plugin,
        cache,
        evaluation=accuracy.samples if accuracy else 0,  # 0: calibration alone (int8)
        calibration=settings.calibration_samples,
    )
    try:
        found: AccuracySet | None = bounded(timeout_s, make)
    except InfercmpError as exc:  # the dataset's own errors name the plugin already
        if plugin.name in str(exc):
            raise
        raise InfercmpError(f"model '{plugin.name}': reading its dataset: {exc}") from None
    except Exception as exc:  # the plugin's load_dataset may raise anything
        text = " ".join(str(exc).split()) or "(no message)"
        raise InfercmpError(
            f"model '{plugin.name}': its load_dataset() failed: {type(exc).__name__}: {text}"
        ) from None
    if found is None and accuracy is not None:
        raise InfercmpError(
            f"model '{plugin.name}' has no dataset (its plugin's load_dataset() gives None): "
            "--accuracy needs one; docs/plugins.md shows how to add it"
        )
    if found is not None:
        calibration = found.calibration
    else:
        assert int8 is not None  # no dataset and no --accuracy: only int8 brought us here
        calibration = bounded(
            timeout_s, functools.partial(calibration_for, plugin, cache, int8, found)
        )
    judge = None
    if accuracy is not None and found is not None:
        judge = AccuracyJudge(plugin, found, calibration.source if calibration else None)
    return judge, calibration


def prepare_artifacts(
    plugin: ModelPlugin,
    plan: BenchPlan,
    cache: ArtifactCache,
    progress: Callable[[str], None],
    exporter: str = "auto",
    timeout_s: float = Measurement.model_fields["timeout_s"].default,
    on_nodes: bool = False,
    accuracy: AccuracyRequest | None = None,
) -> Artifacts:
    """Export, convert and compute references for the runnable combinations, through the cache.

    An error raised by the user's model (its loader, preprocess or forward) or by an engine's
    conversion is recorded for the combinations that need that artifact; the others still run.
    With `on_nodes` (a distributed executor) GPU-specific artifacts (`builds_on_device`) are
    left to the node that runs them.

    With `accuracy` (bench --accuracy) or an int8 combination, the model's accuracy set is
    made first (`accuracy_artifacts`): a dataset that cannot be read stops bench there.
    """
    artifacts = Artifacts()
    runnable = plan.runnable
    int8 = next((c.experiment for c in runnable if c.precision == "int8"), None)
    if accuracy is not None or int8 is not None:  # before anything long: a bad dataset is one line
        progress("accuracy and calibration samples")
        artifacts.judge, artifacts.calibration = accuracy_artifacts(
            plugin, cache, accuracy, int8, timeout_s
        )
    for key, combo in {c.reference_key: c for c in runnable}.items():
        experiment, batch = combo.experiment, combo.load.batch
        at_batch = f" at batch {batch}" if batch is not None else ""
        progress(f"reference outputs for {experiment.label}{at_batch}")
        step = "computing the PyTorch reference outputs" + at_batch
        try:
            artifacts.references[key] = bounded(
                timeout_s,
                functools.partial(ensure_batched_reference, plugin, cache, experiment, batch),
            )
        except Exception as exc:  # the user's code may raise anything
            artifacts.tracebacks.append("".join(traceback.format_exception(exc)))
            artifacts.reference_errors[key] = _model_error(plugin, experiment, step, exc)
    runnable = [c for c in runnable if c.reference_key in artifacts.references]
    if any(plan.descriptors[c.engine.name].artifact == "onnx" for c in runnable):
        progress("ONNX export")
        try:
            artifacts.onnx, artifacts.export_time = bounded(
                timeout_s,
                lambda: timed(
                    cache, lambda: export_onnx(plugin, cache, exporter=exporter, progress=progress)
                ),
            )
        except InfercmpError as exc:
            artifacts.onnx_error = f"ONNX export of model '{plugin.name}' failed: {exc}"
    artifacts.batches = plan_batches(plugin, runnable)
    context = ConvertContext(
        plugin, cache, artifacts.onnx, progress, artifacts.batches, artifacts.calibration
    )
    for choice, precision in dict.fromkeys((c.engine, c.precision) for c in runnable):
        descriptor = plan.descriptors[choice.name]
        if descriptor.artifact == "onnx" and artifacts.onnx is None:
            continue
        if on_nodes and descriptor.builds_on_device:
            continue
        options = descriptor.parse_options(dict(choice.options))
        try:
            converted, took = timed(
                cache, functools.partial(descriptor.convert, context, precision, options)
            )
        except InfercmpError as exc:
            artifacts.convert_errors[choice, precision] = str(exc)
            continue
        if converted is not None and converted.artifact is not None:  # else nothing was made
            artifacts.convert_times[choice, precision] = took
        if converted is not None:
            artifacts.converted[choice, precision] = converted
    return artifacts
