"""`infercmp tune`: search every engine's declared options for its fastest passing configuration."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
from infercmp.cli.options import (
    cache_dir_option,
    check_run_flags,
    console,
    device_resident_option,
    err_console,
    exporter_option,
    out_option,
    sample_hz_option,
    state,
)
from infercmp.core.contract import Load
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.core.types import DEVICES, PRECISIONS
from infercmp.engines.descriptor import EngineDescriptor, Machine
from infercmp.engines.registry import engine_entries, get_descriptor
from infercmp.platform.host import power_limit_w
from infercmp.run.environment import collect_environment
from infercmp.run.finish import finish_complete, finish_interrupted
from infercmp.run.session import (
    choose_samplers,
    mark_failed,
    opened,
    preparation_guard,
    write_failure,
)
from infercmp.run.signals import Interrupted, stop_on_signals
from infercmp.store.run_store import RunStore
from infercmp.store.tune_file import TUNE_FILE, write_leaderboard
from infercmp.tune import search as tune_search
from infercmp.tune.measure import WorkerMeasurer
from infercmp.workload.batching import check_batches
from infercmp.workload.plugins import ModelPlugin, get_plugin
from infercmp.workload.shapes import Experiment, default_experiment, parse_shape

_BUDGET_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600}
MIN_BUDGET_S = 10.0
MAX_BUDGET_S = 7 * 86400.0  # a week


def parse_budget(text: str) -> float:
    """`90s`, `10m`, `1.5h` or plain seconds; one clear error otherwise."""
    match = _BUDGET_TEXT.match(text)
    if not match:
        raise InfercmpError(f"--budget '{text[:40]}': give a duration like 90s, 10m or 1h")
    seconds = float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
    if seconds < MIN_BUDGET_S:
        raise InfercmpError(
            f"--budget '{text}' is under {MIN_BUDGET_S:g} s: no worker could start and measure "
            "in it; give at least 10s"
        )
    if seconds > MAX_BUDGET_S:  # 400 nines is float('inf'), which run.json cannot hold
        raise InfercmpError(
            f"--budget '{text[:40]}' is over a week ({MAX_BUDGET_S:g} s); give at most 168h"
        )
    return seconds


def _engines(names: list[str], device: str) -> tuple[dict[str, EngineDescriptor], list[str]]:
    """The descriptors to tune: the named ones, or every installed engine for `device`."""
    notes: list[str] = []
    if names:
        for name in names:
            if "[" in name:
                raise InfercmpError(
                    f"--engine '{name}': tune searches the options itself; name the engine "
                    f"only ('{name.partition('[')[0]}'), or measure fixed options with "
                    "'infercmp bench'"
                )
        found = {n: get_descriptor(n) for n in dict.fromkeys(names)}
        for name, descriptor in found.items():
            if device not in descriptor.devices:
                raise InfercmpError(
                    f"--engine {name} runs on {' and '.join(descriptor.devices)} only, not "
                    f"--device {device}"
                )
        return found, notes
    found = {}
    for name, entry in engine_entries().items():
        loaded = entry.load()
        if loaded is None:
            notes.append(f"engine '{name}' ({entry.package}) is unavailable: {entry.error}")
        elif device in loaded.devices:
            if missing := loaded.availability():
                notes.append(missing)
            else:
                found[name] = loaded
    if not found:
        raise InfercmpError(f"no installed engine runs on {device}; see 'infercmp engines'")
    return found, notes


_MODEL = typer.Argument(..., help="A model name from 'infercmp models'.")
_SHAPE = typer.Option(
    None, "--shape", "-s", help="Example input shape: 224,224,3 (default: the config's)."
)
_ENGINE = typer.Option(
    [], "--engine", "-e", help="Engines to tune, by name. Default: every installed one."
)
_DEVICE = typer.Option(
    None, "--device", "-d", help="cpu or cuda. Default: cuda when a GPU is visible."
)
_PRECISION = typer.Option(
    [],
    "--precision",
    "-p",
    help="Precisions to try. Default: those each engine declares for the device.",
)
_BUDGET = typer.Option(
    "10m", "--budget", help="Wall time for the whole search, export included: 90s, 10m, 1h."
)
_OBJECTIVE = typer.Option(
    "latency", "--objective", help="latency (median ms) or throughput (items/s)."
)
_BATCH = typer.Option(
    None,
    "--batch",
    help="Items per inference, as bench's --batch N: the example stacked along the "
    "config's batch_size axis. Default: the example as it is.",
)
_REPEAT = typer.Option(
    3,
    "--repeat",
    help="Worker processes per finalist (fewer when the budget is short).",
)
_TIMEOUT = typer.Option(
    300.0,
    "--timeout",
    help="Seconds one worker may take; expensive candidates add their declared cost.",
)


def tune(
    model: str = _MODEL,
    shape: str | None = _SHAPE,
    engine: list[str] = _ENGINE,
    device: str | None = _DEVICE,
    precision: list[str] = _PRECISION,
    budget: str = _BUDGET,
    objective: str = _OBJECTIVE,
    batch: int | None = _BATCH,
    repeat: int = _REPEAT,
    timeout: float = _TIMEOUT,
    device_resident: bool = device_resident_option(),
    sample_hz: float = sample_hz_option(),
    out: Path = out_option(),
    cache_dir: str | None = cache_dir_option(),
    exporter: str = exporter_option(),
) -> None:
    """Find each engine's fastest configuration that passes parity, within a time budget."""
    started = time.monotonic()
    budget_s = parse_budget(budget)
    if objective not in ("latency", "throughput"):
        raise InfercmpError(f"--objective '{objective}': choose latency or throughput")
    if batch is not None and batch <= 0:
        raise InfercmpError(f"--batch must be a positive integer, got {batch}")
    check_run_flags(repeat, sample_hz, exporter, timeout)
    machine = Machine.current()
    device = _device(device, machine, precision)
    with preparation_guard():
        setup = _prepare(model, shape, batch, engine, device, sample_hz, cache_dir)
    request = tune_search.TuneRequest(
        model=setup.plugin.name, device=device, shape=setup.experiment.label, shape_arg=shape,
        descriptors=setup.descriptors, machine=machine, budget_s=budget_s,
        objective=objective,  # type: ignore[arg-type]
        precisions=list(dict.fromkeys(precision)) or None, repeat=repeat,
        device_resident=device_resident, candidate_timeout_s=timeout, batch=batch,
    )  # fmt: skip
    settings = {"budget_s": budget_s, "objective": objective, "device": device}
    meta = _run_meta(setup, repeat, sample_hz, settings)
    with stop_on_signals():
        store = opened(lambda: RunStore.create(out, setup.plugin.name, meta))
        console.print(f"run directory: {store.path}", soft_wrap=True, markup=False)
        measurer = WorkerMeasurer(
            plugin=setup.plugin, experiment=setup.experiment, cache=setup.cache, store=store,
            machine=machine, samplers=setup.samplers, sample_hz=sample_hz, exporter=exporter,
            device_resident=device_resident, power_limit_w=power_limit_w(setup.environment),
            prepare_timeout_s=budget_s, load=setup.load,
            progress=_once(lambda line: console.print(f"  preparing: {escape(line)}")),
        )  # fmt: skip
        search = tune_search.Search(
            request,
            measurer,
            save=lambda board: write_leaderboard(store.path, board),
            progress=lambda line: console.print(escape(line), soft_wrap=True, highlight=False),
            started=started,
        )
        board = _run_search(search, store)
    print_leaderboard(board, store.path)
    if board.status == "interrupted":
        raise RunFailed(f"tune interrupted; the leaderboard so far is in {store.path / TUNE_FILE}")
    if board.status == "failed":
        raise RunFailed(f"tune found nothing: {board.detail}; see {store.path}")
    if state.debug:
        err_console.print(f"tune took {time.monotonic() - started:.1f} s of {budget_s:g} s")


def _device(device: str | None, machine: Machine, precisions: list[str]) -> str:
    """The device to tune on (cuda when a GPU is visible), checked with the precisions."""
    if device is None:
        device = "cuda" if machine.cuda_devices else "cpu"
    if device not in DEVICES:
        raise InfercmpError(f"unknown device '{device}'; choose from {', '.join(DEVICES)}")
    if device == "cuda" and not machine.cuda_devices:
        raise InfercmpError("--device cuda: no CUDA device is visible (NVML found no NVIDIA GPU)")
    for p in precisions:
        if p not in PRECISIONS:
            raise InfercmpError(f"unknown precision '{p}'; choose from {', '.join(PRECISIONS)}")
    return device


@dataclass(frozen=True)
class _Setup:
    """What a tune measures with, prepared before its run directory exists."""

    plugin: ModelPlugin
    experiment: Experiment
    load: Load
    descriptors: dict[str, EngineDescriptor]
    samplers: list[Any]
    cache: Any
    environment: dict[str, Any]


def _prepare(
    model: str,
    shape: str | None,
    batch: int | None,
    engine: list[str],
    device: str,
    sample_hz: float,
    cache_dir: str | None,
) -> _Setup:
    plugin = get_plugin(model)
    experiment = parse_shape(shape, plugin.config) if shape else None
    experiment = experiment or default_experiment(plugin.config)
    if batch is not None:  # outside the config's declared range: the user's mistake
        check_batches([batch], plugin.config)
    descriptors, notes = _engines(engine, device)
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    samplers, left_out = choose_samplers(
        sample_hz,
        gpu=device == "cuda",
        off_note="sampler off (--sample-hz 0): no memory figures for the Pareto front",
    )
    for message in left_out:
        err_console.print(f"[yellow]note:[/] {escape(message)}")
    cache = ArtifactCache(resolve_cache_dir(cache_dir))
    # torch.compile's kernels and autotuning choices outlive the worker: a later process
    # (the final round, the next tune) loads them instead of compiling again.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((cache.root / "torchinductor").resolve()))
    return _Setup(
        plugin, experiment, Load(batch=batch), descriptors, samplers, cache, collect_environment()
    )


def _run_meta(setup: _Setup, repeat: int, sample_hz: float, tune: dict[str, Any]) -> dict[str, Any]:
    """run.json's content at the tune's start (its settings as bench's, with "tune")."""
    load = setup.load
    return {
        "argv": sys.argv,
        "model_config": setup.plugin.config.model_dump(),
        "settings": {
            "experiments": [setup.experiment.label],
            **({"loads": [load.model_dump()]} if not load.is_default else {}),  # as bench's
            "measurement": tune_search.FINAL.model_dump(mode="json"),
            "repeat": repeat,
            "sample_hz": sample_hz,
            "tune": tune,
        },
        "environment": setup.environment,
    }


def _run_search(search: Any, store: RunStore) -> Any:
    """The search's leaderboard; the run is marked as the search ended (a signal: interrupted,
    the leaderboard so far kept)."""
    try:
        with _activity(search):
            board = search.run()
    except Interrupted as exc:
        board = search.board
        finish_interrupted(store, exc.signame)
    except OSError as exc:  # a full disk, a read-only or vanished directory: one line
        detail, error = write_failure(store, exc)
        _fail(store, search.board, detail)
        raise error from exc
    except BaseException as exc:
        _fail(store, search.board, f"{type(exc).__name__}: {exc}")
        raise
    else:
        finish_complete(store, board.detail)  # all it measured is stored
    return board


@contextlib.contextmanager
def _activity(search: Any) -> Iterator[None]:
    """On a terminal, the candidate being measured on a transient status line; in a pipe or a
    log, only the search's one line per round."""
    if not console.is_terminal:
        yield
        return
    with console.status("measuring") as status:
        search.activity = lambda line: status.update(escape(line))
        yield


def _fail(store: RunStore, board: Any, detail: str) -> None:
    """Mark the search and the run failed, as far as the disk still takes writes."""
    board.status, board.detail = "failed", detail
    with contextlib.suppress(OSError):
        write_leaderboard(store.path, board)
    mark_failed(store, detail)


def _once(show: Callable[[str], None]) -> Callable[[str], None]:
    """`show` each line the first time only: every round prepares through the cache again."""
    seen: set[str] = set()

    def once(line: str) -> None:
        if line not in seen:
            seen.add(line)
            show(line)

    return once


def print_leaderboard(board: Any, run_dir: Path) -> None:
    """The winners, how to reproduce them, and where the whole leaderboard is: every
    configuration's figures, and why each dropped one was dropped, are in the report."""
    measured = [e for e in board.entries if e.round is not None]
    counts = [
        (len(measured), "measured"),
        (sum(e.status == "dropped" for e in measured), "dropped"),
        (len(board.entries) - len(measured), "not measured"),
        (len(board.excluded), "not searched"),
    ]
    console.print(
        "configurations: "
        + ", ".join(f"{n} {what}" for n, what in counts if n or what == "measured")
        + "; 'infercmp report' shows each with its figures or the reason",
        markup=False,
        soft_wrap=True,
    )
    for note in board.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    console.print("winners (reproduce each with the command below it):", markup=False)
    for w in board.winners:
        if not w.best:
            console.print(f"  {w.engine}: none ({w.speedup_note})", markup=False, soft_wrap=True)
            continue
        speed = f", {w.speedup:.2f}x the defaults" if w.speedup else ""
        extra = f" ({w.speedup_note})" if w.speedup_note else ""
        console.print(
            f"  {w.engine}: {w.best}: {w.best_p50_ms:.4g} ms in the {w.round} round{speed}{extra}",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"    {w.command}", markup=False, soft_wrap=True)
    if board.overall:
        console.print(f"overall: {board.overall}", markup=False)
    if board.pareto:
        what = "throughput" if board.objective == "throughput" else "latency"
        console.print(
            f"Pareto front ({what} against peak memory): {'; '.join(board.pareto)}",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"search: {board.status} after {board.elapsed_s:.0f} s of a {board.budget_s:g} s budget"
        + (f" ({board.detail})" if board.detail else ""),
        markup=False,
        soft_wrap=True,
    )
    console.print(f"results: {run_dir}", markup=False, soft_wrap=True)
    console.print(
        f"report:  infercmp report {shlex.quote(str(run_dir))}", markup=False, soft_wrap=True
    )


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
