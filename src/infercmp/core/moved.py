"""Import paths that moved in the package layout of issue 24 keep working until REMOVE_IN.

`import infercmp.config` (and every other module path of 0.1.0) still resolves: the old name is a
thin module that forwards each attribute to the new home and warns once, with a
DeprecationWarning naming the new path and the version that removes the old one.
tests/unit/core/test_moved.py pins both, and fails once `infercmp.__version__` reaches REMOVE_IN.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

REMOVE_IN = "0.3.0"

# old import path -> new import path(s), for every module that moved. Where a module was split,
# the old path names each new module; an attribute is looked up in them in order.
MOVED: dict[str, str | tuple[str, ...]] = {
    "infercmp.errors": "infercmp.core.errors",
    "infercmp.files": "infercmp.core.files",
    "infercmp.entrypoints": "infercmp.core.entrypoints",
    "infercmp.parity": "infercmp.core.parity",
    "infercmp.stats": "infercmp.core.stats",
    "infercmp.contract": "infercmp.core.contract",
    "infercmp.devices": "infercmp.platform.gpus",
    "infercmp.lifeline": "infercmp.platform.lifeline",
    "infercmp.environment": ("infercmp.platform.host", "infercmp.run.environment"),
    "infercmp.sampler.handoff": "infercmp.platform.placement",
    "infercmp.config": "infercmp.workload.config",
    "infercmp.plugins": "infercmp.workload.plugins",
    "infercmp.shapes": "infercmp.workload.shapes",
    "infercmp.batching": ("infercmp.workload.batching", "infercmp.artifacts.reference"),
    "infercmp.module_outputs": "infercmp.workload.outputs",
    "infercmp.scenarios": (
        "infercmp.workload.scenarios",
        "infercmp.worker.load_run",
        "infercmp.core.contract",
    ),
    "infercmp.cache": (
        "infercmp.artifacts.cache",
        "infercmp.artifacts.liveness",
        "infercmp.engines.tensorrt.plan_meta",
        "infercmp.artifacts.onnx_export",
        "infercmp.artifacts.onnx_precision",
        "infercmp.artifacts.reference",
    ),
    "infercmp.export": (
        "infercmp.artifacts.onnx_export",
        "infercmp.artifacts.onnx_graph",
        "infercmp.artifacts.key_material",
        "infercmp.artifacts.reference",
        "infercmp.workload.inputs",
        "infercmp.workload.module",
    ),
    "infercmp.build": (
        "infercmp.engines.tensorrt.build",
        "infercmp.engines.tensorrt.logger",
        "infercmp.artifacts.onnx_precision",
    ),
    "infercmp.trt": "infercmp.engines.tensorrt.flavour",
    "infercmp.timing": "infercmp.worker.timing",
    "infercmp.loadgen": (
        "infercmp.worker.loadgen.log",
        "infercmp.worker.loadgen.loops",
        "infercmp.worker.loadgen.qps",
        "infercmp.worker.loadgen.capacity",
    ),
    "infercmp.sampler.summary": "infercmp.sampler.usage",
    "infercmp.results": (
        "infercmp.store.run_store",
        "infercmp.store.schema",
        "infercmp.store.ids",
        "infercmp.store.frames",
        "infercmp.store.legacy",
        "infercmp.store.writer_lock",
        "infercmp.store.locate",
    ),
    "infercmp.bench": (
        "infercmp.run.plan",
        "infercmp.run.prepare",
        "infercmp.run.worker_process",
        "infercmp.run.aggregate",
        "infercmp.run.loop",
        "infercmp.run.signals",
        "infercmp.run.finish",
        "infercmp.run.executors.base",
    ),
    "infercmp.executors": (
        "infercmp.run.executors.local",
        "infercmp.run.executors.base",
        "infercmp.run.resume",
        "infercmp.run.loop",
    ),
    "infercmp.ray_executor": ("infercmp.run.executors.ray", "infercmp.run.executors.ray_node"),
    "infercmp.batch_search": "infercmp.run.batch_search",
    "infercmp.report.load": "infercmp.report.runs",
    "infercmp.cli.common": "infercmp.cli.options",
}


# `infercmp.tune` was a module and is a package now: the public names of the old module, read
# from the package, go to the modules that hold them now.
TUNE_NAMES = frozenset(
    "TUNE_FILE TUNE_SCHEMA_VERSION Objective RoundName SCREEN CONFIRM FINAL CONFIRM_FRACTION "
    "MIN_WORKER_S DEFAULT_OVERHEAD_S REJECTED_PER_CANDIDATE option_text Candidate "
    "DEFAULT_PRECISION Excluded search_space cheap_candidates expensive_candidates RoundFigure "
    "Measured RoundPlan Measurer BudgetSpent LeaderboardEntry EngineWinner TuneLeaderboard "
    "read_leaderboard TuneRequest Search pareto_front bench_command WorkerMeasurer "
    "write_leaderboard".split()
)
TUNE_HOMES = (
    "infercmp.store.tune_file",
    "infercmp.tune.search",
    "infercmp.tune.candidates",
    "infercmp.tune.measure",
)


def tune_attribute(name: str) -> Any:
    """`infercmp.tune.<name>` for a name of the old tune module: found in its new home, warned."""
    if name not in TUNE_NAMES:
        raise AttributeError(f"module 'infercmp.tune' has no attribute {name!r}")
    for path in TUNE_HOMES:
        module = importlib.import_module(path)
        if hasattr(module, name):
            warnings.warn(
                f"infercmp.tune.{name} moved to {path}.{name}; import it from there "
                f"(the old path is removed in infercmp {REMOVE_IN})",
                DeprecationWarning,
                stacklevel=3,
            )
            return getattr(module, name)
    raise AttributeError(f"module 'infercmp.tune' has no attribute {name!r}")


def new_paths(old: str) -> tuple[str, ...]:
    target = MOVED[old]
    return (target,) if isinstance(target, str) else target


class _Forwarder(types.ModuleType):
    """The old module path: every attribute read goes to the first new module that has it."""

    def __init__(self, old: str, new: list[types.ModuleType]) -> None:
        super().__init__(old, new[0].__doc__)
        self.__dict__["_new"] = new

    def __getattr__(self, attribute: str) -> Any:
        for module in self.__dict__["_new"]:
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for module in self.__dict__["_new"] for name in dir(module)})


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        paths = new_paths(spec.name)
        warnings.warn(
            f"{spec.name} moved to {' and '.join(paths)}; import it from there "
            f"(the old path is removed in infercmp {REMOVE_IN})",
            DeprecationWarning,
            stacklevel=2,
        )
        return _Forwarder(spec.name, [importlib.import_module(path) for path in paths])

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the forwarder reads the new module."""


def install() -> None:
    """Put the finder first on sys.meta_path (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
