"""What a bench will run: parse `--engine`, and list every combination of experiment, engine,
device, precision and load, with the reason for each one skipped (`plan_bench`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import Load, ProfileSpec
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.engines.descriptor import DEVICES, PRECISIONS, EngineDescriptor, Machine
from infercmp.engines.registry import engine_entries, get_descriptor
from infercmp.store.ids import combo_id
from infercmp.workload.batching import batched_runtime_shapes, check_batches
from infercmp.workload.config import DYNAMIC, ModelConfig
from infercmp.workload.inputs import runtime_shapes
from infercmp.workload.plugins import ModelPlugin
from infercmp.workload.shapes import Experiment

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


@dataclass(frozen=True)
class EngineChoice:
    """An `--engine` value: an engine name with options, e.g. `pytorch[cuda_graph=true]`.

    `variant` is the bracket text as the user typed it (whitespace aside), so labels echo
    `channels_last=true` rather than Python's `True`; `options` holds the typed values.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name


def _option_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        if isinstance(value, float) and not np.isfinite(value):
            raise InfercmpError(f"engine option value '{text}' is not a finite number")
        return value
    return text.strip().strip("'\"")


def parse_engine(text: str) -> EngineChoice:
    """Parse `NAME` or `NAME[key=value,...]`; the name is checked here, the options by the
    engine's descriptor when the run is planned."""
    text = text.strip()
    name, bracket, rest = text.partition("[")
    name = name.strip()
    get_descriptor(name)  # unknown or unavailable: one clear error now
    if not bracket:
        return EngineChoice(name)
    if not rest.endswith("]"):
        raise InfercmpError(
            f"--engine '{text}': options go in brackets, e.g. "
            "'pytorch[channels_last=true,cuda_graph=true]'"
        )
    options: list[tuple[str, Any]] = []
    items = [p.strip() for p in rest[:-1].split(",")]
    for item in filter(None, items):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InfercmpError(f"--engine '{text}': '{item}' is not key=value")
        options.append((key.strip(), _option_value(value)))
    variant = ",".join(
        f"{k.strip()}={v.strip()}" for k, _, v in (i.partition("=") for i in items if i)
    )
    return EngineChoice(name, tuple(options), variant or None)


@dataclass(frozen=True)
class Combination:
    """One job: an experiment on one engine (with options), device and precision, under a load
    (batch, concurrency, scenario; `Load()` is one request at a time at the model's batch)."""

    experiment: Experiment
    engine: EngineChoice
    device: str
    precision: str
    skip_reason: str | None = None
    load: Load = Load()

    @property
    def label(self) -> str:
        load = f" {self.load.label}" if self.load.label else ""
        return f"{self.engine.label}/{self.device}/{self.precision} @ {self.experiment.label}{load}"

    @property
    def reference_key(self) -> tuple[str, int | None]:
        """Which reference data the worker runs on: the experiment at the load's batch."""
        return self.experiment.label, self.load.batch


@dataclass
class BenchPlan:
    model: str
    config: ModelConfig
    experiments: list[Experiment]
    combinations: list[Combination]
    descriptors: dict[str, EngineDescriptor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cold: bool = False  # bench --cold: start-up passes after each measurement (run.startup)
    # `bench --profile`: the profile phase each combination's first worker runs after the rest
    profile: ProfileSpec | None = None

    @property
    def runnable(self) -> list[Combination]:
        return [c for c in self.combinations if c.skip_reason is None]


def _choices(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """Check names against `allowed`, dropping repeats but keeping the user's order."""
    for value in values:
        if value not in allowed:
            raise InfercmpError(f"unknown {what} '{value}'; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def check_profile(config: ModelConfig, runtime: Sequence[tuple[int, ...]]) -> list[str]:
    """Every runtime dimension outside the config's optimisation profile, in words."""
    outside = []
    for spec, shape in zip(config.inputs, runtime):
        profile = spec.shapes.optimization
        for axis, size in enumerate(shape):
            if spec.shapes.runtime[axis] != DYNAMIC:
                continue
            lo, hi = profile.min[axis], profile.max[axis]
            if not lo <= size <= hi:
                outside.append(
                    f"input '{spec.name}' has {spec.shapes.dims_names[axis]}={size}, outside "
                    f"[{lo}, {hi}]"
                )
    return outside


def _profile_text(outside: list[str]) -> str:
    return "; ".join(outside) + " (the optimisation profile of the model config)"


def plan_bench(
    plugin: ModelPlugin,
    experiments: list[Experiment],
    engines: Sequence[str] | None,
    devices: Sequence[str] | None,
    precisions: Sequence[str] | None,
    machine: Machine | None = None,
    loads: Sequence[Load] = (Load(),),
) -> BenchPlan:
    """Validate the request and list every combination, with a reason for each one skipped.

    Everything that is the user's mistake raises here, before any work starts. What each
    engine can run is its descriptor's answer; this function knows no engine by name.
    """
    notes: list[str] = []
    explicit_engines = bool(engines)
    if engines:
        choices = list(dict.fromkeys(parse_engine(e) for e in engines))
    else:
        choices = []
        for name, entry in engine_entries().items():
            if entry.load() is None:
                notes.append(f"engine '{name}' ({entry.package}) is unavailable: {entry.error}")
            else:
                choices.append(EngineChoice(name))
    descriptors = {c.name: get_descriptor(c.name) for c in choices}
    for choice in choices:  # a misspelt option is the user's mistake: say so before running
        descriptors[choice.name].parse_options(dict(choice.options))
    explicit_devices = bool(devices)
    devices = _choices(devices or list(DEVICES), DEVICES, "device")
    precisions = _choices(precisions or ["fp32"], PRECISIONS, "precision")
    config = plugin.config
    machine = machine or Machine.current()
    batches = [load.batch for load in loads if load.batch is not None]
    if batches:  # outside the config's declared range: the user's mistake, said now
        check_batches(batches, config)
    combos: list[Combination] = []
    for experiment, load in itertools.product(experiments, loads):
        shapes = batched_runtime_shapes(config, runtime_shapes(plugin, experiment), load.batch)
        outside = check_profile(config, shapes)
        if outside:
            keeping = [c.name for c in choices if descriptors[c.name].keeps_profile]
            if keeping and explicit_engines:
                raise InfercmpError(
                    f"--shape {experiment.label}: {_profile_text(outside)}; {', '.join(keeping)} "
                    "runs only inside it: pick a shape inside it or widen optimization.min/max "
                    "in the config"
                )
            notes.append(
                f"--shape {experiment.label}: {_profile_text(outside)}; engines that build for "
                "the profile skip it, the others run it"
            )
        for choice, device, precision in itertools.product(choices, devices, precisions):
            descriptor = descriptors[choice.name]
            if device not in descriptor.devices and not (explicit_engines and explicit_devices):
                continue  # e.g. TensorRT on the CPU: listing it would only be noise
            reason = _skip_reason(descriptor, choice, device, precision, machine, outside)
            reason = reason or _load_refusal(descriptor, device, load)
            combos.append(Combination(experiment, choice, device, precision, reason, load))
    return BenchPlan(plugin.name, config, experiments, combos, descriptors, notes)


def _skip_reason(
    descriptor: EngineDescriptor,
    choice: EngineChoice,
    device: str,
    precision: str,
    machine: Machine,
    outside: list[str],
) -> str | None:
    """Why this combination will not run here, or None; the first reason that applies."""
    if device in descriptor.devices and device == "cuda" and not machine.cuda_devices:
        return "no CUDA device is visible (NVML found no NVIDIA GPU)"
    if device in descriptor.devices and (missing := descriptor.availability()):
        return missing
    if refused := descriptor.refusal(device, precision, machine):
        return refused
    if descriptor.keeps_profile and outside:
        return _profile_text(outside)
    return _inapplicable_options(descriptor, choice, device)


def _load_refusal(descriptor: EngineDescriptor, device: str, load: Load) -> str | None:
    """Why the engine cannot keep `load.concurrency` requests in flight on `device`, or None."""
    if load.concurrency == 1 and load.scenario == "single-stream":
        return None
    how = descriptor.concurrency_on(device)
    if how is None:
        return f"{descriptor.name} declares no way to keep several requests in flight on {device}"
    return None


def _inapplicable_options(
    descriptor: EngineDescriptor, choice: EngineChoice, device: str
) -> str | None:
    wrong = [k for k, _ in choice.options if not descriptor.options.applies_to(k, device)]
    if not wrong:
        return None
    where = ", ".join(
        f"{k} applies to {' and '.join(descriptor.options.option_devices(k))} only" for k in wrong
    )
    return f"option {where}"


def combination_id(combo: Combination) -> str:
    """The combination's id in the run store (`infercmp.store.run_store.combo_id`)."""
    return combo_id(
        combo.engine.name,
        combo.device,
        combo.precision,
        combo.experiment.label,
        combo.engine.variant,
        combo.load.label,
    )
