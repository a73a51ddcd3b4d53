"""What an engine says about itself before any runtime is imported: the engine descriptor.

Every engine, built in or third party, registers one `EngineDescriptor` instance under the
`infercmp.engines` entry-point group. Planning, artifact preparation, the worker spec, the
`--engine` help and `infercmp engines` read descriptors only; the runtime class (the `Engine`
protocol of `infercmp.engines`) is imported in the worker process that runs it.

A descriptor imports no runtime (torch, onnxruntime, tensorrt, openvino): `refusal` and
`availability` answer from the machine facts the orchestrator gathers (`Machine`) and from
`importlib.util.find_spec`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import itertools
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from infercmp.artifacts.samples import CalibrationSet
from infercmp.core.errors import InfercmpError
from infercmp.core.types import DEVICES, PRECISIONS
from infercmp.platform import gpus, host

if TYPE_CHECKING:
    from infercmp.engines import Engine

#: The description of each int8 engine's `int8_exclude` option (see docs/int8.md).
INT8_EXCLUDE_HELP = (
    "int8: module paths of the model kept in float, ';'-separated (e.g. 'layer4.2;fc'); "
    "each path's submodules too"
)

#: Where an engine's artifact starts: the plugin's PyTorch module, or infercmp's ONNX export.
#: An engine that runs its own form (a TensorRT plan, an fp16 ONNX) makes it in `convert`.
ArtifactSource = Literal["module", "onnx"]


class EngineOptions(BaseModel):
    """Base of an engine's options model: every field has a default and a one-line description.

    Strict: `threads=1.5` is an error, not 1. A field that applies to some devices only says
    so with `json_schema_extra={"devices": ["cuda"]}`; reports and `infercmp engines` use it.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def option_devices(cls, name: str) -> tuple[str, ...]:
        extra = cls.model_fields[name].json_schema_extra
        devices = extra.get("devices") if isinstance(extra, dict) else None
        # a list (or a tuple, in Python) of device names; pydantic types it as any JSON value
        return tuple(typing.cast("list[str]", devices)) if devices else DEVICES

    @classmethod
    def applies_to(cls, name: str, device: str) -> bool:
        return name not in cls.model_fields or device in cls.option_devices(name)


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that decide what an engine can run, gathered once."""

    cuda_devices: int
    cpu_flags: frozenset[str] = frozenset()

    @classmethod
    def current(cls) -> Machine:
        return cls(cuda_devices=gpus.cuda_device_count(), cpu_flags=host.cpu_flags())


@dataclass(frozen=True)
class ConvertContext:
    """What `EngineDescriptor.convert` may use: the plugin, the cache and the ONNX export."""

    plugin: Any  # infercmp.workload.plugins.ModelPlugin
    cache: Any  # infercmp.artifacts.cache.ArtifactCache
    onnx: Any  # infercmp.artifacts.onnx_export.OnnxArtifact
    progress: Callable[[str], None]
    # The batch sizes the run uses (--batch, else each example's own; empty when the config
    # has no dynamic batch axis); a plan built for an optimisation profile must cover them
    # (infercmp.workload.batching.plan_batches, profile_for_batches).
    batches: tuple[int, ...] = ()
    # int8: the samples a quantizer calibrates on (None when the run has no int8 combination).
    calibration: CalibrationSet | None = None


@dataclass(frozen=True)
class Converted:
    """An engine's own form of the model for one precision, made through the content cache.

    `artifact` replaces the ONNX file as what the worker loads (None: keep it); `options` are
    defaults the worker spec gets unless the user set the same option.
    """

    artifact: Path | None = None
    options: tuple[tuple[str, Any], ...] = ()
    detail: str = ""  # shown in progress and stored in the results' engine info
    # What the conversion measured or decided, for the results' engine info (JSON-able):
    # int8 puts {"int8": {"method", "calibration_s", "calibration_samples",
    # "calibration_source", "calibration_fingerprint", "excluded_modules", "excluded_nodes",
    # "quantized_ops", "cached", "tools"}} here.
    facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class SearchOption:
    """One option `infercmp tune` searches: its candidate values on each device.

    The option's own default needs no listing (the defaults are always a candidate). `cost_s`
    says which values are expensive to load, in rough seconds on top of a plain load (a cold
    `torch.compile(mode="max-autotune-no-cudagraphs")` of ResNet-50 took about 240 s on the
    H200): tune tries expensive values last, on top of the best cheap configuration, and only
    while the budget has room for them.
    """

    name: str
    values: Mapping[str, tuple[Any, ...]]  # device -> candidate values
    cost_s: Mapping[Any, float] = dataclasses.field(default_factory=dict)

    def on(self, device: str) -> tuple[Any, ...]:
        return tuple(self.values.get(device, ()))


#: A rule for combinations the options model accepts but tune should not try:
#: (options, device, precision) -> why not, or None.
SearchRule = Callable[[Mapping[str, Any], str, str], "str | None"]


@dataclass(frozen=True)
class SearchSpace:
    """What `infercmp tune` searches for one engine: options, precisions and invalid mixes.

    `precisions` lists per device the precisions worth trying (a device not named: the
    engine's own `precisions`); parity decides whether a faster precision is acceptable.
    Combinations the options model rejects (`parse_options` raises) are dropped too, so a
    rule is needed only for what the model cannot know.
    """

    options: tuple[SearchOption, ...] = ()
    precisions: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    rules: tuple[SearchRule, ...] = ()

    def cheap_grid(self, device: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The mixes of the options' cheap values on `device`, fewest changed options first:
        the defaults, each value alone, then pairs, ...; the first `limit` of them.

        Never listed whole: nine options of ten values are 11**9 mixes (`cheap_size`).
        """
        return list(itertools.islice(self.iter_cheap(device), limit))

    def iter_cheap(self, device: str) -> Iterator[dict[str, Any]]:
        """`cheap_grid`'s mixes, made one at a time."""
        axes = [(o.name, [v for v in o.on(device) if not o.cost_s.get(v)]) for o in self.options]
        axes = [(name, values) for name, values in axes if values]
        for changed in range(len(axes) + 1):
            for chosen in itertools.combinations(axes, changed):
                names = [name for name, _ in chosen]
                for values in itertools.product(*(values for _, values in chosen)):
                    yield dict(zip(names, values))

    def cheap_size(self, device: str) -> int:
        """How many mixes `iter_cheap` makes (the defaults included)."""
        return math.prod(
            1 + sum(1 for v in o.on(device) if not o.cost_s.get(v)) for o in self.options
        )

    def expensive(self, device: str) -> list[tuple[str, Any, float]]:
        """(option, value, cost in s) of every expensive value on `device`, in declared order:
        the order tune tries them in when the budget cannot hold them all."""
        return [
            (o.name, v, float(o.cost_s[v])) for o in self.options for v in o.on(device)
            if o.cost_s.get(v)
        ]  # fmt: skip

    def rejects(self, options: Mapping[str, Any], device: str, precision: str) -> str | None:
        for rule in self.rules:
            if reason := rule(options, device, precision):
                return reason
        return None


class EngineDescriptor:
    """Base of every engine descriptor; subclasses set the class attributes, override as needed.

    - `runtime`: "module:Class" of the `Engine` implementation, imported only by `load_runtime`.
    - `requires`: Python modules the runtime needs; one missing makes the engine unavailable.
    - `extra`: the pip extra that installs them (named in the unavailability message).
    - `distributions`: the pip distributions of the runtime (`onnxruntime-gpu`, not the module
      `onnxruntime`); run.json's environment records their versions (`runtime_versions`), so
      `compare` sees a runtime upgrade.
    - `keeps_profile`: runs only inside the config's optimisation profile (TensorRT).
    - `builds_on_device`: `convert` makes a GPU-specific artifact (a TensorRT plan).
    - `search_space`: what `infercmp tune` tries; None: the engine is tuned over its defaults
      (and precisions) only.
    - `concurrency`: device -> how the runtime keeps several requests in flight there, in
      words (shown in reports); a device it lacks is one the engine cannot do it on, and
      bench skips those combinations with the reason. The worker makes one engine instance
      per slot (`EngineBase.slot_engine`), which a runtime may override to share state.
    - `refused_precisions`: (precision, device) -> why the engine does not run that precision
      on that device although it runs it elsewhere (int8 on ONNX Runtime's CUDA EP runs Q/DQ
      as fp32 kernels: refused rather than mislabelled); `refusal` gives the reason and
      `precisions_on` leaves the precision out there.
    - `cpu_threads_option`: the option that sets how many threads the engine computes with
      on the CPU (None: it has none); a report measured beside other load names the one-thread
      variant (`one_thread_variant`) as the remedy.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = DEVICES
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    artifact: ClassVar[ArtifactSource] = "onnx"
    options: ClassVar[type[EngineOptions]] = EngineOptions
    runtime: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    distributions: ClassVar[tuple[str, ...]] = ()
    keeps_profile: ClassVar[bool] = False
    # Its artifact is made for the GPU that builds it (a TensorRT plan): a distributed run
    # converts on the node that runs it, not on the driver (infercmp.run.executors.ray).
    builds_on_device: ClassVar[bool] = False
    #: The engine's own compiled-artifact caches, in words ("Inductor's and Triton's caches"),
    #: which it keeps under `EngineSpec.cache_dir` when given: what `bench --cold` empties
    #: besides infercmp's artifact cache. Empty: the engine keeps none between processes.
    engine_caches: ClassVar[tuple[str, ...]] = ()
    search_space: ClassVar[SearchSpace | None] = None
    concurrency: ClassVar[dict[str, str]] = {}
    cpu_threads_option: ClassVar[str | None] = None
    #: How `infercmp debug-precision` reads this engine's intermediate tensors: "onnx" (its
    #: artifact is an ONNX file, run in ONNX Runtime with every tensor as an output),
    #: "ov-model" (an OpenVINO model, through add_outputs), "module" (the plugin's PyTorch
    #: module, through forward hooks), or None (it cannot look inside this engine).
    layer_outputs: ClassVar[Literal["onnx", "ov-model", "module"] | None] = None
    #: The option that takes an fp16 ONNX file with some nodes kept in fp32 (ONNX Runtime's
    #: `fp16_model`), which debug-precision's fp16 proposal fills; None: no such option.
    mixed_fp16_option: ClassVar[str | None] = None
    refused_precisions: ClassVar[Mapping[tuple[str, str], str]] = {}
    #: What `--profile` takes this engine's per-layer times with, in words
    #: ("torch.profiler", "onnxruntime enable_profiling"): its runtime implements
    #: `Engine.profile`. None: it has no per-layer profiler, and its profile reads n/a.
    profiler: ClassVar[str | None] = None

    def precisions_on(self, device: str) -> tuple[str, ...]:
        """The precisions this engine runs on `device` (none where it does not run)."""
        if device not in self.devices:
            return ()
        return tuple(p for p in self.precisions if (p, device) not in self.refused_precisions)

    def one_thread_variant(self) -> str | None:
        """`pytorch[threads=1]`: this engine on one CPU thread, as --engine takes it (None:
        it declares no thread option)."""
        option = self.cpu_threads_option
        if not isinstance(option, str) or option not in self.options.model_fields:
            return None  # no such option to name: no remedy rather than a wrong one
        return f"{self.name}[{option}=1]"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A third-party engine's answer that raises is that engine's failure, said in one line:
        `availability` and `refusal` give it as their reason, `convert` as an `InfercmpError`
        (the combinations that need it fail and the run goes on)."""
        super().__init_subclass__(**kwargs)
        for name, guard in (
            ("availability", _reason_when_broken),
            ("refusal", _reason_when_broken),
            ("convert", _error_when_broken),
        ):
            if name in vars(cls):
                setattr(cls, name, guard(vars(cls)[name]))

    def check_declaration(self) -> None:
        """Raise TypeError naming every class attribute that is not what infercmp reads.

        Run once when the descriptor is loaded, so a wrong declaration lists the engine as
        broken with the reason instead of failing later, in the middle of a command.
        """
        problems = _declaration_problems(self)
        if problems:
            raise TypeError(f"engine '{self.name}' is broken: {'; '.join(problems)}")

    def concurrency_on(self, device: str) -> str | None:
        """How this engine keeps several requests in flight on `device`, or None if it cannot."""
        return self.concurrency.get(device)

    def runtime_versions(self) -> dict[str, str | None]:
        """Each of `distributions` with its installed version (None: not installed), read from
        package metadata without importing the runtime."""
        versions: dict[str, str | None] = {}
        for dist in self.distributions:
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        return versions

    def availability(self) -> str | None:
        """Why this engine cannot run on this machine at all, or None when it can."""
        missing = [m for m in self.requires if not module_present(m)]
        if not missing:
            return None
        install = f"pip install 'infercmp[{self.extra}]'" if self.extra else "install it"
        return (
            f"engine '{self.name}' needs the Python module {' and '.join(map(repr, missing))}, "
            f"which is not installed; {install}"
        )

    def refusal(self, device: str, precision: str, machine: Machine) -> str | None:
        """Why this engine will not run `device` x `precision` here, or None when it will."""
        if device not in self.devices:
            return f"{self.name} runs on {' and '.join(self.devices)} only"
        if precision not in self.precisions:
            supported = ", ".join(self.precisions)
            return f"{self.name} does not support {precision} (it supports {supported})"
        if (reason := self.refused_precisions.get((precision, device))) is not None:
            return f"{self.name} does not run {precision} on {device}: {reason}"
        return None

    def convert(
        self, context: ConvertContext, precision: str, options: EngineOptions
    ) -> Converted | None:
        """Make this engine's own artifact for `precision` through the cache (None: none needed).

        Raise `InfercmpError` when it cannot be made: the combinations that need it fail with
        that message and the run goes on.
        """
        return None

    def parse_options(self, options: dict[str, Any]) -> EngineOptions:
        """The options model for these `--engine` options; one clear error when they are wrong."""
        try:
            return self.options.model_validate(options)
        except ValidationError as exc:
            raise InfercmpError(f"engine '{self.name}': {_validation_text(exc, self)}") from None

    def option_docs(self) -> list[OptionDoc]:
        """Each option's name, type, default, devices and one-line description."""
        docs = []
        for name, field in self.options.model_fields.items():
            docs.append(
                OptionDoc(
                    name=name,
                    type=_type_text(field.annotation),
                    default=field.default,
                    devices=self.options.option_devices(name),
                    description=field.description or "",
                )
            )
        return docs

    def load_runtime(self) -> type[Engine]:
        """Import the runtime class (in the worker; never at planning time)."""
        module_name, _, attribute = self.runtime.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


def _broken_text(descriptor: EngineDescriptor, call: str, exc: BaseException) -> str:
    return f"engine '{descriptor.name}' is broken: {call} raised {type(exc).__name__}: {exc}"


def _reason_when_broken(method: Callable[..., str | None]) -> Callable[..., str | None]:
    @functools.wraps(method)
    def answer(self: EngineDescriptor, *args: Any, **kwargs: Any) -> str | None:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # a third-party engine may raise anything
            return _broken_text(self, f"{method.__name__}()", exc)

    return answer


def _error_when_broken(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def convert(self: EngineDescriptor, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except InfercmpError:
            raise
        except Exception as exc:  # a third-party engine may raise anything
            raise InfercmpError(_broken_text(self, f"{method.__name__}()", exc)) from exc

    return convert


def _declaration_problems(descriptor: EngineDescriptor) -> list[str]:
    """What is wrong with the class attributes infercmp reads without calling the engine."""
    problems = []

    def some_of(value: Any, allowed: tuple[str, ...]) -> bool:
        return isinstance(value, (tuple, list)) and bool(value) and set(value) <= set(allowed)

    if not isinstance(getattr(descriptor, "summary", None), str):
        problems.append("summary is not a string")
    if not some_of(descriptor.devices, DEVICES):
        problems.append(f"devices {descriptor.devices!r} is not a tuple of {', '.join(DEVICES)}")
    if not some_of(descriptor.precisions, PRECISIONS):
        problems.append(
            f"precisions {descriptor.precisions!r} is not a tuple of {', '.join(PRECISIONS)}"
        )
    if descriptor.artifact not in ("module", "onnx"):
        problems.append(f"artifact {descriptor.artifact!r} is neither 'module' nor 'onnx'")
    options = descriptor.options
    if not (isinstance(options, type) and issubclass(options, EngineOptions)):
        problems.append(
            f"options {options!r} is not a subclass of infercmp.engines.descriptor.EngineOptions"
        )
    else:
        try:
            options.model_validate({})
        except Exception as exc:  # any failure: the engine has no usable defaults
            problems.append(f"options has no valid defaults ({type(exc).__name__}: {exc})")
    concurrency = descriptor.concurrency
    if not isinstance(concurrency, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in concurrency.items()
    ):
        problems.append(f"concurrency {concurrency!r} is not a dict of device -> text")
    distributions = getattr(descriptor, "distributions", ())
    if not (
        isinstance(distributions, (tuple, list)) and all(isinstance(d, str) for d in distributions)
    ):
        problems.append(f"distributions {distributions!r} is not a tuple of distribution names")
    refused = getattr(descriptor, "refused_precisions", {})
    if not isinstance(refused, Mapping) or not all(
        isinstance(k, tuple)
        and len(k) == 2
        and k[0] in PRECISIONS
        and k[1] in DEVICES
        and isinstance(v, str)
        for k, v in refused.items()
    ):
        problems.append(
            f"refused_precisions {refused!r} is not a dict of (precision, device) -> reason"
        )
    threads = getattr(descriptor, "cpu_threads_option", None)
    if threads is not None and not (
        isinstance(threads, str)
        and isinstance(options, type)
        and issubclass(options, EngineOptions)
        and threads in options.model_fields
    ):
        problems.append(f"cpu_threads_option {threads!r} is not the name of one of its options")
    layer_outputs = getattr(descriptor, "layer_outputs", None)
    if layer_outputs not in (None, "onnx", "ov-model", "module"):
        problems.append(
            f"layer_outputs {layer_outputs!r} is not 'onnx', 'ov-model', 'module' or None"
        )
    profiler = getattr(descriptor, "profiler", None)
    if profiler is not None and not (isinstance(profiler, str) and profiler.strip()):
        problems.append(f"profiler {profiler!r} is not None or a non-empty description")
    runtime = getattr(descriptor, "runtime", None)
    if not (isinstance(runtime, str) and ":" in runtime):
        problems.append(f"runtime {runtime!r} is not 'module:Class'")
    space = descriptor.search_space
    if space is not None and not (
        isinstance(space, SearchSpace)
        and all(
            isinstance(o, SearchOption)
            and isinstance(o.values, Mapping)
            and all(isinstance(v, (tuple, list)) for v in o.values.values())
            for o in space.options
        )
    ):
        problems.append("search_space is not a SearchSpace of SearchOptions")
    return problems


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    devices: tuple[str, ...]
    description: str


def module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def _type_text(annotation: Any) -> str:
    """`bool`, `int | none`, `latency | throughput | none`: what a user may type."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in args)
    if args:
        return " | ".join(_type_text(a) for a in args)
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _validation_text(exc: ValidationError, descriptor: EngineDescriptor) -> str:
    known = ", ".join(descriptor.options.model_fields)
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"no option '{where}' (known options: {known})")
        elif where:
            problems.append(f"option {where}={error.get('input')!r}: {error['msg']}")
        else:
            problems.append(error["msg"].removeprefix("Value error, "))
    return "; ".join(problems) + f"; see 'infercmp engines {descriptor.name}'"
