"""`infercmp tune`: search every engine's declared options for its fastest passing configuration."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.markup import escape

from infercmp.cli import options as shared
from infercmp.cli.bench import _power_limit, _preparation_guard, check_run_flags
from infercmp.cli.options import console, err_console, state
from infercmp.core.errors import InfercmpError, RunFailed

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600}
MIN_BUDGET_S = 10.0
MAX_BUDGET_S = 7 * 86400.0  # a week


def parse_budget(text: str) -> float:
    """`90s`, `10m`, `1.5h` or plain seconds; one clear error otherwise."""
    match = _BUDGET.match(text)
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


def _engines(names: list[str], device: str) -> tuple[dict, list[str]]:
    """The descriptors to tune: the named ones, or every installed engine for `device`."""
    from infercmp.engines import engine_entries, get_descriptor

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
        descriptor = entry.load()
        if descriptor is None:
            notes.append(f"engine '{name}' ({entry.package}) is unavailable: {entry.error}")
        elif device in descriptor.devices:
            if missing := descriptor.availability():
                notes.append(missing)
            else:
                found[name] = descriptor
    if not found:
        raise InfercmpError(f"no installed engine runs on {device}; see 'infercmp engines'")
    return found, notes


def tune(
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    shape: str | None = typer.Option(
        None, "--shape", "-s", help="Example input shape: 224,224,3 (default: the config's)."
    ),
    engine: list[str] = typer.Option(
        [], "--engine", "-e", help="Engines to tune, by name. Default: every installed one."
    ),
    device: str | None = typer.Option(
        None, "--device", "-d", help="cpu or cuda. Default: cuda when a GPU is visible."
    ),
    precision: list[str] = typer.Option(
        [],
        "--precision",
        "-p",
        help="Precisions to try. Default: those each engine declares for the device.",
    ),
    budget: str = typer.Option(
        "10m", "--budget", help="Wall time for the whole search, export included: 90s, 10m, 1h."
    ),
    objective: str = typer.Option(
        "latency", "--objective", help="latency (median ms) or throughput (items/s)."
    ),
    batch: int | None = typer.Option(
        None,
        "--batch",
        help="Items per inference, as bench's --batch N: the example stacked along the "
        "config's batch_size axis. Default: the example as it is.",
    ),
    repeat: int = typer.Option(
        3,
        "--repeat",
        help="Worker processes per finalist (fewer when the budget is short).",
    ),
    timeout: float = typer.Option(
        300.0,
        "--timeout",
        help="Seconds one worker may take; expensive candidates add their declared cost.",
    ),
    device_resident: bool = shared.device_resident_option(),
    sample_hz: float = shared.sample_hz_option(),
    out: Path = shared.out_option(),
    cache_dir: str | None = shared.cache_dir_option(),
    exporter: str = shared.exporter_option(),
) -> None:
    """Find each engine's fastest configuration that passes parity, within a time budget."""
    import time

    started = time.monotonic()
    from infercmp.core.contract import Load
    from infercmp.engines.descriptor import Machine
    from infercmp.run.finish import finish_interrupted, os_error_text, write_failed
    from infercmp.run.signals import Interrupted, stop_on_signals
    from infercmp.tune.search import search as tune_mod
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment, parse_shape

    budget_s = parse_budget(budget)
    if objective not in ("latency", "throughput"):
        raise InfercmpError(f"--objective '{objective}': choose latency or throughput")
    if batch is not None and batch <= 0:
        raise InfercmpError(f"--batch must be a positive integer, got {batch}")
    check_run_flags(repeat, sample_hz, exporter, timeout)
    machine = Machine.current()
    if device is None:
        device = "cuda" if machine.cuda_devices else "cpu"
    if device not in ("cpu", "cuda"):
        raise InfercmpError(f"unknown device '{device}'; choose from cpu, cuda")
    if device == "cuda" and not machine.cuda_devices:
        raise InfercmpError("--device cuda: no CUDA device is visible (NVML found no NVIDIA GPU)")
    for p in precision:
        if p not in ("fp32", "fp16", "bf16"):
            raise InfercmpError(f"unknown precision '{p}'; choose from fp32, fp16, bf16")

    with _preparation_guard():
        plugin = get_plugin(model)
        experiment = parse_shape(shape, plugin.config) if shape else None
        experiment = experiment or default_experiment(plugin.config)
        if batch is not None:  # outside the config's declared range: the user's mistake
            from infercmp.workload.batching import check_batches

            check_batches([batch], plugin.config)
        load = Load(batch=batch)
        descriptors, notes = _engines(engine, device)
        for note in notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}")

        from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
        from infercmp.platform.environment import collect_environment
        from infercmp.sampler import default_samplers
        from infercmp.store.run_store import RunStore

        samplers, left_out = (
            default_samplers(gpu=device == "cuda")
            if sample_hz > 0
            else ([], ["sampler off (--sample-hz 0): no memory figures for the Pareto front"])
        )
        for message in left_out:
            err_console.print(f"[yellow]note:[/] {escape(message)}")
        cache = ArtifactCache(resolve_cache_dir(cache_dir))
        # torch.compile's kernels and autotuning choices outlive the worker: a later process
        # (the final round, the next tune) loads them instead of compiling again.
        os.environ.setdefault(
            "TORCHINDUCTOR_CACHE_DIR", str((cache.root / "torchinductor").resolve())
        )
        environment = collect_environment()

    request = tune_mod.TuneRequest(
        model=plugin.name,
        device=device,
        shape=experiment.label,
        shape_arg=shape,
        descriptors=descriptors,
        machine=machine,
        budget_s=budget_s,
        objective=objective,  # type: ignore[arg-type]
        precisions=list(dict.fromkeys(precision)) or None,
        repeat=repeat,
        device_resident=device_resident,
        candidate_timeout_s=timeout,
        batch=batch,
    )
    meta = {
        "argv": sys.argv,
        "model_config": plugin.config.model_dump(),
        "settings": {
            "experiments": [experiment.label],
            **({"loads": [load.model_dump()]} if not load.is_default else {}),  # as bench's
            "measurement": tune_mod.FINAL.model_dump(mode="json"),
            "repeat": repeat,
            "sample_hz": sample_hz,
            "tune": {"budget_s": budget_s, "objective": objective, "device": device},
        },
        "environment": environment,
    }
    with stop_on_signals():
        try:
            store = RunStore.create(out, plugin.name, meta)
        except Interrupted as exc:
            raise RunFailed(f"stopped by {exc.signame} while creating the run directory") from None
        console.print(f"run directory: {store.path}", soft_wrap=True, markup=False)
        measurer = tune_mod.WorkerMeasurer(
            plugin=plugin,
            experiment=experiment,
            cache=cache,
            store=store,
            machine=machine,
            samplers=samplers,
            sample_hz=sample_hz,
            exporter=exporter,
            device_resident=device_resident,
            power_limit_w=_power_limit(environment),
            prepare_timeout_s=budget_s,
            progress=_once(lambda line: console.print(f"  preparing: {escape(line)}")),
            load=load,
        )
        search = tune_mod.Search(
            request,
            measurer,
            save=lambda board: tune_mod.write_leaderboard(store.path, board),
            progress=lambda line: console.print(escape(line), soft_wrap=True, highlight=False),
            started=started,
        )
        try:
            with _activity(search):
                board = search.run()
        except Interrupted as exc:
            board = search.board
            finish_interrupted(store, exc.signame)
        except OSError as exc:  # a full disk, a read-only or vanished directory: one line
            _fail(store, search.board, f"cannot write: {os_error_text(exc)}")
            raise write_failed(store, exc) from exc
        except BaseException as exc:
            _fail(store, search.board, f"{type(exc).__name__}: {exc}")
            raise
        else:
            try:
                store.finish("complete", board.detail)  # all it measured is stored
            except OSError as exc:
                raise write_failed(store, exc) from exc
    print_leaderboard(board, store.path)
    if board.status == "interrupted":
        raise RunFailed(
            f"tune interrupted; the leaderboard so far is in {store.path / tune_mod.TUNE_FILE}"
        )
    if board.status == "failed":
        raise RunFailed(f"tune found nothing: {board.detail}; see {store.path}")
    if state.debug:
        err_console.print(f"tune took {time.monotonic() - started:.1f} s of {budget_s:g} s")


@contextlib.contextmanager
def _activity(search) -> Iterator[None]:
    """On a terminal, the candidate being measured on a transient status line; in a pipe or a
    log, only the search's one line per round."""
    if not console.is_terminal:
        yield
        return
    with console.status("measuring") as status:
        search.activity = lambda line: status.update(escape(line))
        yield


def _fail(store, board, detail: str) -> None:
    """Mark the search and the run failed, as far as the disk still takes writes."""
    from infercmp.run.finish import finish
    from infercmp.tune.search import search as tune_mod

    board.status, board.detail = "failed", detail
    with contextlib.suppress(OSError):
        tune_mod.write_leaderboard(store.path, board)
    finish(store, "failed", detail)


def _once(show):
    """`show` each line the first time only: every round prepares through the cache again."""
    seen: set[str] = set()

    def once(line: str) -> None:
        if line not in seen:
            seen.add(line)
            show(line)

    return once


def print_leaderboard(board, run_dir: Path) -> None:
    """The winners, how to reproduce them, and where the whole leaderboard is: every
    configuration's figures, and why each dropped one was dropped, are in the report."""
    import shlex

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
