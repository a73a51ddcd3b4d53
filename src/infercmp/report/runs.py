"""Open run directories from the results store and index them for the report and compare."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.engines.registry import engine_entries
from infercmp.store.locate import latest_run
from infercmp.store.run_store import RunStore
from infercmp.store.schema import RUN_FILE
from infercmp.workload.scenarios import shape_and_load

if TYPE_CHECKING:
    import numpy as np
    import polars as pl
else:
    np = lazy_import("numpy")
    pl = lazy_import("polars")


def as_dict(value: Any) -> Any:
    """A pydantic model (or anything else) as plain data, so the report reads one shape."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


@dataclass
class CombinationView:
    """One measured (engine, device, precision, shape, options) of one run, with its raw data."""

    run: RunView
    result: Any  # infercmp.store.run_store.CombinationResult
    wall_ns: np.ndarray  # per-iteration host latency, raw, never filtered
    samples: Any  # polars DataFrame of this combination's sampler rows, or None
    # The worker process (0..N-1) of each entry of wall_ns; None: all from one process.
    wall_process: np.ndarray | None = None

    @property
    def process_groups(self) -> list[np.ndarray]:
        """wall_ns split by worker process, in process order (one group for a single process)."""
        if self.wall_process is None or self.wall_ns.size == 0:
            return [self.wall_ns] if self.wall_ns.size else []
        return [self.wall_ns[self.wall_process == p] for p in np.unique(self.wall_process)]

    @property
    def combo_id(self) -> str:
        return self.result.combo_id

    @property
    def engine(self) -> str:
        return self.result.engine

    @property
    def device(self) -> str:
        return self.result.device

    @property
    def precision(self) -> str:
        return self.result.precision

    @property
    def shape_label(self) -> str:
        """The shape, and the load (batch, concurrency, scenario) when one was given."""
        return shape_and_load(self.result.shape_label, getattr(self.result, "load", None))

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def options(self) -> dict[str, Any]:
        """The engine options that act on this row's device (see `applicable_options`)."""
        return applicable_options(self.engine, self.device, self.result.options or {})

    @property
    def options_text(self) -> str:
        if not self.options and self.result.variant:
            # A combination that never ran (skipped) has no effective options to report; what
            # the user asked for still tells it apart from the plain engine.
            return self.result.variant
        return format_options(self.options)

    @property
    def latency(self) -> dict[str, float] | None:
        return as_dict(self.result.latency)

    @property
    def device_latency(self) -> dict[str, float] | None:
        """Statistics of the CUDA-event clock, where the engine measured one."""
        return as_dict(getattr(self.result, "device_latency", None))

    @property
    def label(self) -> str:
        """engine/device/precision, plus the options and the run when they tell combos apart."""
        return self.run.combination_label(self)

    @property
    def node(self) -> dict[str, Any]:
        """Where the combination ran (bench records it per combination; older runs do not)."""
        return as_dict(getattr(self.result, "node", None)) or {}

    @property
    def host(self) -> str:
        return str(self.node.get("hostname") or self.run.host)

    @property
    def gpu(self) -> str | None:
        """The GPU this combination used (CUDA), else the run machine's GPUs."""
        if self.node.get("gpu_name"):
            return str(self.node["gpu_name"])
        if self.node and self.device != "cuda":
            return None
        return ", ".join(self.run.gpu_names) or None

    @property
    def node_label(self) -> str:
        return f"{self.host} ({self.gpu or 'no GPU'})"

    @property
    def input_elements(self) -> int:
        shapes = self.result.runtime_shapes or {}
        if not shapes:
            shapes = {str(i): s for i, s in enumerate(self.result.example_shapes or [])}
        return int(sum(int(np.prod(dims)) for dims in shapes.values()))


# Engine options that act only on CUDA, by engine. A stored result lists every effective
# option, so a CPU row would otherwise show, say, enable_cuda_graph=off. The one list of them
# in the report; it belongs in the engine descriptors once they say which options apply where.
def applicable_options(engine: str, device: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` less those that do nothing on `device`, as the engine's descriptor says (a
    CUDA-only option on a CPU row). An engine not installed here keeps all its options."""
    descriptor = installed_descriptor(engine)
    if descriptor is None:
        return dict(options)
    return {k: v for k, v in options.items() if descriptor.options.applies_to(k, device)}


@functools.cache
def installed_descriptor(engine: str) -> Any:
    entry = engine_entries().get(engine)
    return entry.load() if entry is not None else None


def format_options(options: dict[str, Any]) -> str:
    """Options as `key=value, ...`; unset (None) options are left out, they change nothing."""
    shown = {key: value for key, value in options.items() if value is not None}
    if not shown:
        return "defaults"
    return ", ".join(f"{key}={_option_value(value)}" for key, value in sorted(shown.items()))


def _option_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value)
    # Engine options may hold cache paths; the last two parts (hash directory and file name)
    # still tell them apart, and a table cell stays readable.
    if len(text) > 40 and text.count("/") > 2:
        text = "…/" + "/".join(text.rstrip("/").split("/")[-2:])
    return text


@dataclass
class RunView:
    """One run directory as the report sees it."""

    path: Path
    meta: dict[str, Any]
    combinations: list[CombinationView] = field(default_factory=list)
    # Set by load_runs when several runs merge, so names say which machine measured them
    # (`run_tag`: the machine, and the run directory where two runs share a machine) and,
    # when the runs measured different models, which model.
    show_run_in_labels: bool = False
    run_tag: str | None = None
    show_model_in_labels: bool = False
    # Options that differ between combinations of the same engine/device/precision/shape.
    distinguishing_options: frozenset[str] = frozenset()
    # run.json says "running" but the bench process that wrote it is gone (killed).
    abandoned: bool = False

    @property
    def status(self) -> str:
        """complete, interrupted, failed, running, or abandoned (a killed run)."""
        return "abandoned" if self.abandoned else str(self.meta.get("status") or "running")

    @property
    def status_detail(self) -> str | None:
        """Why the run ended as it did, in words for the report."""
        if self.abandoned:
            writer = self.meta.get("writer") or {}
            return (
                f"its bench process (pid {writer.get('pid')} on {writer.get('hostname')}) is "
                "gone without finishing the run: it was killed"
            )
        detail = self.meta.get("detail")
        return str(detail) if detail else None

    @property
    def environment(self) -> dict[str, Any]:
        return dict(self.meta.get("environment") or {})

    @property
    def model(self) -> str:
        return str(self.meta.get("model") or "")

    @property
    def host(self) -> str:
        writer = self.meta.get("writer") or {}
        return str(self.environment.get("hostname") or writer.get("hostname") or "unknown host")

    @property
    def gpu_names(self) -> list[str]:
        return [str(gpu.get("name", "GPU")) for gpu in self.environment.get("gpus") or []]

    @property
    def label(self) -> str:
        """Host and GPU: what tells two machines' runs of the same model apart."""
        gpus = self.gpu_names
        return f"{self.host} ({', '.join(sorted(set(gpus))) if gpus else 'no GPU'})"

    def combination_label(self, combo: CombinationView) -> str:
        parts = [combo.engine, combo.device, combo.precision]
        label = " · ".join(parts)
        if self.show_model_in_labels:
            label = f"{combo.result.model}: {label}"
        extra = {k: v for k, v in combo.options.items() if k in self.distinguishing_options}
        if extra:
            label += f" [{format_options(extra)}]"
        if self.show_run_in_labels:
            label += f" @ {self.run_tag or self.label}"
        elif len({c.host for c in self.combinations}) > 1:  # a distributed run: say where
            label += f" @ {combo.node_label}"
        return label


def resolve_run_dirs(run_dirs: list[Path], runs_dir: Path) -> list[Path]:
    """The run directories named, or the latest under `runs_dir` when none is."""
    if run_dirs:
        return list(run_dirs)
    if not runs_dir.is_dir():
        raise InfercmpError(
            f"no run directory given and '{runs_dir}' does not exist; run 'infercmp bench' first "
            "or pass a run directory"
        )
    return [Path(latest_run(runs_dir))]


def resolve_run(path: Path) -> tuple[Path, str | None]:
    """`path` when it is a run; the latest run in it when it holds runs (`bench --out DIR`).

    Returns the run and, when it was picked from a directory of runs, a line saying which.
    """
    path = Path(path)
    if not path.is_dir() or (path / RUN_FILE).is_file():
        return path, None
    try:
        run = Path(latest_run(path))
    except InfercmpError:
        return path, None  # neither a run nor a directory of runs: open_run says so
    return run, f"'{path}' holds runs; using the latest, {run}"


def open_run(path: Path) -> RunView:
    """Open one run directory; a missing or unreadable one is one clear error line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InfercmpError(
            f"'{path}' is a file, not a run directory; pass a directory written by 'infercmp "
            "bench' (an HTML report is written with -o)"
        )
    if not path.is_dir():
        raise InfercmpError(f"run directory '{path}' does not exist")
    if not (path / "run.json").is_file():
        raise InfercmpError(
            f"'{path}' is not an infercmp run directory (no run.json) and holds no runs; pass a "
            "directory written by 'infercmp bench' or its --out directory"
        )
    try:
        store = RunStore.open(path)
        results = list(store.results)
        latency = store.latency()
        samples = store.samples()
    except InfercmpError:
        raise
    except Exception as exc:  # a damaged store: say which file, never a traceback
        raise InfercmpError(f"cannot read run directory '{path}': {exc}") from exc
    run = RunView(path=path, meta=dict(store.meta), abandoned=store.abandoned)
    wall = _wall_latencies(latency)
    by_combo = _samples_by_combo(samples)
    for result in results:
        run.combinations.append(
            CombinationView(
                run=run,
                result=result,
                wall_ns=wall.get(result.combo_id, (np.empty(0, dtype=np.int64), None))[0],
                wall_process=wall.get(result.combo_id, (None, None))[1],
                samples=by_combo.get(result.combo_id),
            )
        )
    run.distinguishing_options = _distinguishing_options(run.combinations)
    return run


def keep_nodes(runs: list[RunView], text: str) -> None:
    """Keep the combinations that ran on a node whose host or GPU name contains `text`
    (`report --node`), case-insensitively; one clear error when none did."""
    wanted = text.lower()
    every = sorted({c.node_label for run in runs for c in run.combinations})
    for run in runs:
        run.combinations = [c for c in run.combinations if wanted in c.node_label.lower()]
    if not any(run.combinations for run in runs):
        raise InfercmpError(
            f"--node '{text}': no combination ran on a matching node; these runs ran on "
            f"{', '.join(every) or 'no node'}"
        )


def load_runs(paths: list[Path]) -> list[RunView]:
    """The runs, labelled so that no two merged combinations share a name: the machine (and
    the run directory where two runs share one), the model where the runs measured several,
    and every option that tells two of them apart across the runs (`[threads=1]`)."""
    runs = [open_run(path) for path in paths]
    if len(runs) > 1:
        shared = [run.label for run in runs]
        across = _distinguishing_options(
            [c for run in runs for c in run.combinations], by_shape=False
        )
        several_models = len({run.model for run in runs}) > 1
        for run in runs:
            run.show_run_in_labels = True
            run.show_model_in_labels = several_models
            run.distinguishing_options = run.distinguishing_options | across
            if shared.count(run.label) > 1:
                run.run_tag = f"{run.label} {run.path.name}"
    return runs


def _wall_latencies(latency: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """combo_id -> (wall-clock total latency per iteration in ns, its worker process).

    In process order, then iteration order.
    """
    if latency is None or latency.height == 0:
        return {}
    wall = latency.filter((pl.col("clock") == "wall") & (pl.col("phase") == "total")).sort(
        ["combo_id", "process", "iteration"]
    )
    return {
        key[0]: (
            frame["ns"].to_numpy().astype(np.int64),
            frame["process"].to_numpy().astype(np.int64),
        )
        for key, frame in wall.partition_by("combo_id", as_dict=True).items()
    }


def _samples_by_combo(samples: Any) -> dict[str, Any]:
    if samples is None or samples.height == 0:
        return {}
    return {
        key[0]: frame.sort("t_s")
        for key, frame in samples.partition_by("combo_id", as_dict=True).items()
    }


def _distinguishing_options(combos: list[CombinationView], by_shape: bool = True) -> frozenset[str]:
    """Option keys whose values differ among combos that share engine/device/precision (and
    shape, unless `by_shape` is False: merged runs of two models have no shape in common)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for combo in combos:
        key: tuple[str, ...] = (combo.engine, combo.device, combo.precision)
        key += (combo.shape_label,) if by_shape else ()
        groups.setdefault(key, []).append(combo.options)
    keys: set[str] = set()
    for options in groups.values():
        if len(options) < 2:
            continue
        for name in {k for o in options for k in o}:
            if len({repr(o.get(name)) for o in options}) > 1:
                keys.add(name)
    return frozenset(keys)
