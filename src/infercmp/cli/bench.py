"""`infercmp bench`: measure a model on every available engine x device, one worker each."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from infercmp.cli.options import (
    cache_dir_option,
    console,
    device_resident_option,
    err_console,
    exporter_option,
    out_option,
    print_table,
    sample_hz_option,
    state,
)
from infercmp.core.errors import InfercmpError, NothingRan, RunFailed

if TYPE_CHECKING:
    from rich.table import Table

MIN_SAMPLE_HZ, MAX_SAMPLE_HZ = 0.1, 1000.0
DEFAULT_REPEAT, MAX_REPEAT = 1, 100
#: A day: longer than any export, build or measurement; beyond it timers overflow (1e10 s).
MAX_TIMEOUT_S = 86400.0


def check_run_flags(
    repeat: int, sample_hz: float, exporter: str, timeout_s: float | None = None
) -> None:
    """The flags bench and tune share, checked once: one line naming the flag when wrong."""
    if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise InfercmpError(
            f"--timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds (a day), "
            f"got {timeout_s:g}"
        )
    if not 1 <= repeat <= MAX_REPEAT:
        raise InfercmpError(f"--repeat must be between 1 and {MAX_REPEAT}, got {repeat}")
    # Below 0.1 Hz a sampler would read once or never; a tiny rate also overflows its timer.
    if not (sample_hz == 0 or MIN_SAMPLE_HZ <= sample_hz <= MAX_SAMPLE_HZ):
        raise InfercmpError(
            f"--sample-hz must be 0 (off) or between {MIN_SAMPLE_HZ:g} and {MAX_SAMPLE_HZ:g}, "
            f"got {sample_hz}"
        )
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise InfercmpError(f"--exporter '{exporter}': choose auto, dynamo or torchscript")


def _warmup(text: str) -> tuple[int | None, float | None]:
    """`--warmup 50` is a count of iterations, `--warmup 2s` a number of seconds."""
    raw = text.strip().lower()
    try:
        if raw.endswith("s"):
            seconds = float(raw[:-1])
            if seconds > 0:
                return None, seconds
        else:
            count = int(raw)
            if count > 0:
                return count, None
    except ValueError:
        pass
    raise InfercmpError(f"--warmup '{text}': give a positive iteration count (50) or seconds (2s)")


@contextlib.contextmanager
def _preparation_guard() -> Iterator[None]:
    """Planning and artifact preparation: a signal or MemoryError becomes one clear line."""
    from infercmp.run.signals import Interrupted, stop_on_signals

    try:
        with stop_on_signals():
            yield
    except Interrupted as exc:
        raise RunFailed(
            f"stopped by {exc.signame} while preparing; no combination ran and no run "
            "directory was made"
        ) from None
    except MemoryError:
        raise InfercmpError(
            "not enough memory for the example inputs of this --shape; use a smaller shape"
        ) from None


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _notes(result) -> list[str]:
    """The sentences a row refers to: its error, else its gates and warnings, each on its own
    so a sentence shared by several rows is printed once."""
    from infercmp.report.summary import contention
    from infercmp.workload.scenarios import load_shortfall

    if result.status != "ok":
        return [result.error or result.status]
    notes = []
    if _failed_parity(result):
        notes.append("outputs differ from PyTorch beyond tolerance")
    notes.append(load_shortfall(result.load, result.load_result))
    notes.append(contention(result))
    notes.extend(result.warnings)
    return [note for note in notes if note]


def _failed_parity(result) -> bool:
    return bool(result.parity) and not result.parity.get("ok", True)


def _parity(result) -> str:
    """The parity headline (infercmp.core.parity): verdict and largest absolute error."""
    from infercmp.core.parity import Parity

    if not result.parity:
        return "-"
    parity = Parity.model_validate(result.parity)
    return (
        f"{'ok' if parity.ok else 'FAIL'} {parity.max_abs:.1e}"
        if parity.max_abs is not None
        else "FAIL shape"
    )


def row_cells(result) -> dict[str, str]:
    """One result's cells, plain text (no markup), in the table's column order."""
    from infercmp.workload.scenarios import items_per_s, served_qps, shape_and_load, shown_status

    r, lat = result, result.latency or {}
    half = (lat["ci_high_ms"] - lat["ci_low_ms"]) / 2 / lat["p50_ms"] * 100 if lat else None
    qps = served_qps(r.load, r.load_result)
    return {
        "engine": f"{r.engine}[{r.variant}]" if r.variant else r.engine,
        "dev": r.device,
        "prec": r.precision,
        "shape": shape_and_load(r.shape_label, r.load),
        "status": shown_status(r),
        "offered/s": _count(qps) if qps is not None else "-",
        "p50 ms": _ms(lat.get("p50_ms")),
        "±CI%": f"{half:.1f}" if half is not None else "-",
        "p99 ms": _ms(lat.get("p99_ms")),
        "items/s": _count(items_per_s(lat, r.load_result)),
        "RSS MiB": _mib(r.peak_rss_bytes),
        "VRAM MiB": _mib(r.peak_vram_bytes),
        "parity": _parity(r),
    }


def row_line(result) -> str:
    """A combination's row as one line, printed as it lands: `onnxruntime cpu fp32 32x32x3:
    ok, p50 ms 0.05213, ±CI% 0.8, ...` (empty cells left out)."""
    cells = row_cells(result)
    head = " ".join(cells.pop(key) for key in ("engine", "dev", "prec", "shape"))
    status = cells.pop("status")
    rest = ", ".join(f"{key} {value}" for key, value in cells.items() if value != "-")
    return f"{head}: {status}" + (f", {rest}" if rest else "")


def summary_table(results) -> tuple[Table, list[str]]:
    """The end-of-run table, and the notes (errors, skip reasons, warnings) it refers to.

    Every column is kept: `print_summary` stacks the rows when the table does not fit. A
    note sentence is numbered once; every row it concerns refers to its number.
    """
    from rich import box
    from rich.table import Table

    notes: list[str] = []
    rows = []
    for r in results:
        numbers = []
        for note in _notes(r):
            if note not in notes:
                notes.append(note)
            numbers.append(notes.index(note) + 1)
        cells = row_cells(r)
        gated = _failed_parity(r) or cells["status"] != r.status
        style = "red" if gated else {"ok": "green", "skipped": "yellow"}.get(r.status, "red")
        cells = {key: escape(value) for key, value in cells.items()}
        cells["status"] = f"[{style}]{cells['status']}[/]"
        cells["note"] = escape(f"[{','.join(map(str, numbers))}]") if numbers else ""
        rows.append(cells)
    columns = list(rows[0]) if rows else []
    if not any(r.peak_vram_bytes for r in results) and columns:
        columns.remove("VRAM MiB")
    if all(row["offered/s"] == "-" for row in rows) and columns:
        columns.remove("offered/s")  # a server run's rate; other scenarios have none
    table = Table(
        title="infercmp bench",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0),
    )
    for name in columns:
        text = name in ("engine", "dev", "prec", "shape", "status")
        table.add_column(name, justify="left" if text else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table, notes


def verdict(results, run_dir: Path, fine: tuple[str, ...]) -> str | None:
    """The last line of a run that must exit 1, counting what went wrong; None when nothing
    did. A combination whose outputs failed parity, or that did not hold its load, counts as
    surely as one that did not finish: its speed is not a result."""
    from infercmp.workload.scenarios import OVERLOADED, shown_status

    total = len(results)
    not_ok = [r for r in results if r.status not in fine]
    parts = []
    if not_ok:
        kinds = ", ".join(
            f"{sum(r.status == k for r in not_ok)} {k}"
            for k in dict.fromkeys(r.status for r in not_ok)
        )
        parts.append(f"{len(not_ok)} of {total} combination(s) did not finish ({kinds})")
    wrong = [r for r in results if r.status == "ok" and _failed_parity(r)]
    if wrong:
        parts.append(
            f"{len(wrong)} of {total} combination(s) failed parity (outputs differ from "
            "PyTorch beyond tolerance)"
        )
    overloaded = [r for r in results if r.status == "ok" and shown_status(r) == OVERLOADED]
    if overloaded:
        parts.append(
            f"{len(overloaded)} of {total} combination(s) did not hold their load ({OVERLOADED})"
        )
    if not parts:
        return None
    return "; ".join(parts) + f"; see the notes above and {run_dir}"


def print_summary(results, run_dir: Path) -> None:
    """The table (stacked when too wide), its notes, and the report command, never wrapped.

    Notes and commands are printed with soft_wrap: a terminal folds them for the eye, but a
    log or a pipe keeps each on one line, so `infercmp report ...` can be pasted.
    """
    import shlex

    # What ran first, then what was skipped (skipped combinations are committed first).
    results = sorted(results, key=lambda r: r.status == "skipped")
    table, notes = summary_table(results)
    print_table(table, heading=5)
    for number, note in enumerate(notes, 1):
        console.print(f"[{number}] {note}", highlight=False, markup=False, soft_wrap=True)
    tolerances = sorted(
        {_tolerance(r.parity) for r in results if r.parity and r.parity.get("rtol") is not None}
    )
    if tolerances:
        console.print(
            "parity: the largest absolute error of any output against PyTorch fp32 on the CPU, "
            f"judged at {'; '.join(tolerances)} (infercmp.core.parity)",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"results: {run_dir}", markup=False, soft_wrap=True)
    console.print(
        f"report:  infercmp report {shlex.quote(str(run_dir))}", markup=False, soft_wrap=True
    )


def _tolerance(parity: dict) -> str:
    atol = parity.get("atol")
    return f"rtol {parity['rtol']:g}, atol " + (
        f"{atol:g}" if atol is not None else "rtol x max|ref|"
    )


def _ms(value: float | None) -> str:
    """Milliseconds with four significant digits: 0.05213, 1.175, 767.8."""
    return "-" if value is None else f"{value:.4g}"


def _options(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def _engine_help() -> str:
    """The --engine help from the registered engines' names (no engine is imported)."""
    from infercmp.engines import engine_names

    return (
        f"{', '.join(engine_names())}; options in brackets: 'pytorch[cuda_graph=true]' "
        "(list them with 'infercmp engines'). Default: every installed engine."
    )


def bench(
    ctx: typer.Context,
    model: str | None = typer.Argument(
        None, help="A model name from 'infercmp models' (with --resume: the run's)."
    ),
    shape: list[str] = typer.Option(
        [],
        "--shape",
        "-s",
        help="Example input shape(s), one experiment each: 224,224,3 (or 224x224x3) or "
        "'a=8,128;b=8,128'.",
    ),
    engine: list[str] = typer.Option([], "--engine", "-e", help=_engine_help()),
    device: list[str] = typer.Option([], "--device", "-d", help="cpu, cuda. Default: both."),
    precision: list[str] = typer.Option(
        [], "--precision", "-p", help="fp32, fp16, bf16. Default: fp32."
    ),
    repeat: int = typer.Option(
        DEFAULT_REPEAT,
        "--repeat",
        help="Measure each combination in N fresh worker processes, interleaved, so the "
        "median's CI covers the variation between processes.",
    ),
    iters: int | None = typer.Option(None, "--iters", help="Measure exactly N iterations."),
    duration: float | None = typer.Option(None, "--duration", help="Measure for S seconds."),
    warmup: str | None = typer.Option(
        None, "--warmup", help="Warm-up: iterations (50) or time (2s). Default: 1s."
    ),
    ci_target: float | None = typer.Option(
        None,
        "--ci-target",
        help="Adaptive mode: stop when the median's 95% CI half-width is within this fraction "
        "(default 0.01).",
    ),
    min_iters: int | None = typer.Option(
        None, "--min-iters", help="Adaptive mode: measure at least this many iterations (100)."
    ),
    min_seconds: float | None = typer.Option(
        None,
        "--min-seconds",
        help="Adaptive mode: measure at least this long, for the sampler and energy (1 s).",
    ),
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", help="Adaptive mode: measure at most this long (20 s)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Kill a worker after this many seconds (600)."
    ),
    device_resident: bool = device_resident_option(),
    sample_hz: float = sample_hz_option(),
    out: Path = out_option(),
    cache_dir: str | None = cache_dir_option(),
    exporter: str = exporter_option(),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="local: one worker at a time on this machine; ray: one Ray task per worker, "
        "one GPU each (docs/distributed.md).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="An existing Ray cluster (implies --executor ray). Default: a local instance.",
    ),
    ray_accelerator_type: str | None = typer.Option(
        None, "--ray-accelerator-type", help="Run on Ray nodes of this GPU type only, e.g. H200."
    ),
    ray_resource: list[str] = typer.Option(
        [], "--ray-resource", help="A Ray resource NAME[=AMOUNT] each worker asks for (node kind)."
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the run directory RUN with the flags that started it: run only the "
        "combinations it lacks.",
    ),
    batch: str | None = typer.Option(
        None,
        "--batch",
        "-b",
        help="Batch sizes, e.g. 1,8,32, stacked along the config's batch_size axis; 'auto' "
        "doubles until the gain is under 5%, memory runs out or --latency-limit-ms is passed.",
    ),
    latency_limit_ms: float | None = typer.Option(
        None, "--latency-limit-ms", help="--batch auto: stop before the median passes this."
    ),
    concurrency: str | None = typer.Option(
        None,
        "--concurrency",
        "-c",
        help="Requests in flight inside one worker, e.g. 1,2,4 (implies --scenario offline).",
    ),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help="single-stream (default: one request at a time), offline (closed loop at the "
        "batch and concurrency) or server (Poisson arrivals at --qps).",
    ),
    qps: str | None = typer.Option(
        None, "--qps", help="server: arrival rate(s) in requests/s, or 'auto' with --slo-ms."
    ),
    slo_ms: float | None = typer.Option(
        None, "--slo-ms", help="--qps auto: the highest rate whose p99 latency stays under this."
    ),
) -> None:
    """Benchmark MODEL: every engine x device x precision x shape in its own worker process."""
    if resume is not None and not ctx.meta.get(_RESUMING):
        ctx.meta[_RESUMING] = True
        flags = resumed_flags(ctx, resume)
        if flags is not None:
            return bench(ctx, **flags)
    if model is None:
        raise InfercmpError(
            "Missing argument 'model': name one from 'infercmp models', or continue a run with "
            "--resume RUN (see 'infercmp bench --help')"
        )
    from infercmp.core.contract import Measurement
    from infercmp.run import loop
    from infercmp.run.finish import finish_complete, finish_failed, finish_interrupted
    from infercmp.run.plan import plan_bench
    from infercmp.run.prepare import prepare_artifacts
    from infercmp.run.signals import Interrupted, stop_on_signals
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment, parse_shape

    measurement = Measurement.from_flags(
        warmup=_warmup(warmup) if warmup is not None else None,
        iters=iters,
        duration_s=duration,
        ci_target=ci_target,
        min_iters=min_iters,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        timeout_s=timeout,
        device_resident=device_resident or None,
    )
    check_run_flags(repeat, sample_hz, exporter, timeout)
    from infercmp.run.loop import make_executor

    runner = make_executor(
        executor, ray_address, ray_accelerator_type, ray_resource, sample_hz, measurement.timeout_s
    )

    # Until the run starts, Ctrl-C or SIGTERM unwinds cleanly (the cache's staging dirs go)
    # and MemoryError from a huge --shape is one line, not a traceback.
    with _preparation_guard():
        plugin = get_plugin(model)
        experiments = [parse_shape(s, plugin.config) for s in shape] or [
            default_experiment(plugin.config)
        ]
        experiments = list(dict.fromkeys(experiments))
        from infercmp.workload.scenarios import check_server_window, loads_from_flags

        loads, auto_batch = loads_from_flags(
            plugin.config, batch, concurrency, scenario, qps, slo_ms
        )
        check_server_window(loads, measurement)
        if latency_limit_ms is not None and not (auto_batch and latency_limit_ms > 0):
            raise InfercmpError(
                "--latency-limit-ms goes with --batch auto and must be a positive number"
            )
        if auto_batch:
            loads = [load.model_copy(update={"batch": 1}) for load in loads]
        machine = runner and ctx.with_resource(runner).machine()  # a cluster plans for its GPUs
        plan = plan_bench(plugin, experiments, engine, device, precision, machine, loads=loads)
        for note in [*dict.fromkeys(plan.notes), *_batch_notes(plugin, experiments, loads)]:
            err_console.print(f"[yellow]note:[/] {escape(note)}")  # each once: loads share them

        from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
        from infercmp.platform.environment import collect_environment
        from infercmp.sampler import default_samplers
        from infercmp.store.run_store import RunStore

        uses_gpu = any(c.device == "cuda" for c in plan.runnable)
        samplers, left_out = (
            default_samplers(gpu=uses_gpu)
            if sample_hz > 0 and not runner  # a distributed run samples on its nodes
            else ([], [] if sample_hz > 0 else ["sampler off (--sample-hz 0)"])
        )
        for message in left_out:
            err_console.print(f"[yellow]note:[/] {escape(message)}")

        cache = ArtifactCache(resolve_cache_dir(cache_dir))

        def prepare(step_plan, progress):
            """A plan's artifacts, the way the executor wants them: GPU-specific ones (TensorRT
            plans) are left to the nodes that run them. Every step of --batch auto goes here."""
            prepared = prepare_artifacts(
                plugin, step_plan, cache, progress, exporter, measurement.timeout_s,
                on_nodes=runner is not None,
            )  # fmt: skip
            if runner:
                runner.prepared(step_plan, prepared)  # one clear error if no node can run it
            return prepared

        with console.status("preparing artifacts") as status:
            artifacts = prepare(plan, lambda msg: status.update(f"preparing: {escape(msg)}"))
    if state.debug:
        for text in artifacts.tracebacks:
            err_console.print(text, markup=False, highlight=False)
    if plan.runnable and not artifacts.anything_to_run(plan):
        # The model itself failed (its loader, preprocess or forward): nothing can be measured.
        raise InfercmpError(artifacts.errors()[0])
    for error in artifacts.errors():
        err_console.print(f"[yellow]warning:[/] {escape(error)}")

    environment = collect_environment()
    meta = {
        "argv": sys.argv,
        "model_config": plugin.config.model_dump(),
        "settings": {
            "experiments": [e.label for e in experiments],
            # Only when a load flag was given: a plain run's run.json is as it always was.
            **(
                {"loads": [x.model_dump() for x in loads]}
                if len(loads) > 1 or not loads[0].is_default
                else {}
            ),
            "measurement": measurement.model_dump(mode="json"),
            "repeat": repeat,
            "sample_hz": sample_hz,
            "exporter": getattr(artifacts.onnx, "exporter", None),
            "onnx": str(artifacts.onnx.path) if artifacts.onnx else None,
        },
        "environment": environment,
        "flags": {name: _plain(ctx.params[name]) for name in (*RUN_FLAGS, *PLACE_FLAGS)},
    }
    # From the moment the run directory exists to its last commit, a signal marks the run
    # interrupted (keeping what finished) instead of leaving it "running" for ever.
    with stop_on_signals():
        try:
            store, done = _open_store(out, plugin.name, meta, resume)
        except Interrupted as exc:
            raise RunFailed(f"stopped by {exc.signame} while creating the run directory") from None
        ctx.call_on_close(store.close)  # the writer lock, held through every --batch auto step
        try:
            console.print(f"run directory: {store.path}", soft_wrap=True, markup=False)

            def run(step, step_artifacts, last_step=True):
                return _run_with_progress(
                    loop, plugin, step, step_artifacts, measurement, store, sample_hz,
                    samplers, repeat, _power_limit(environment), runner, done, last_step,
                )  # fmt: skip

            if auto_batch:
                status = _search_batches(
                    plugin, plan, artifacts, prepare, store, run, latency_limit_ms
                )
                if status == "complete":  # once, after the last step
                    finish_complete(store)
            else:
                status = run(plan, artifacts)
        except Interrupted as exc:
            finish_interrupted(store, exc.signame)
            status = "interrupted"
        except BaseException as exc:
            if auto_batch:  # each step leaves the run running for the next: end it here
                finish_failed(store, exc)
            raise
    results = RunStore.open(store.path).results
    print_summary(results, store.path)
    if status == "interrupted":
        print_resume_command(store.path)
        raise RunFailed(
            f"run interrupted; {sum(r.status == 'ok' for r in results)} finished "
            f"combination(s) are saved in {store.path}"
        )
    check_something_ran(results)
    # --batch auto: running out of memory is one of its stopping rules, not a failure.
    fine = ("ok", "skipped", "oom") if auto_batch else ("ok", "skipped")
    failure = verdict(results, store.path, fine)
    if failure:
        raise RunFailed(failure)


def _batch_notes(plugin, experiments, loads) -> list[str]:
    """Where --batch replaces the batch of a --shape, what a row labelled `2x64 b1` measures."""
    from infercmp.artifacts.onnx_export import runtime_shapes
    from infercmp.workload.batching import batched_runtime_shapes

    notes = []
    batches = dict.fromkeys(load.batch for load in loads if load.batch is not None)
    for experiment in experiments:
        shapes = runtime_shapes(plugin, experiment)
        measured = {
            batch: "_".join("x".join(map(str, s)) for s in batched)
            for batch in batches
            if (batched := batched_runtime_shapes(plugin.config, shapes, batch)) != list(shapes)
        }
        if measured:
            rows = ", ".join(f"'{experiment.label} b{b}' measures {m}" for b, m in measured.items())
            notes.append(f"--batch sets the batch axis of --shape {experiment.label}: {rows}")
    return notes


#: Bench's flags that decide what a run measures: stored in run.json, reused by `--resume RUN`
#: and refused there when they say otherwise.
RUN_FLAGS = (
    "model", "shape", "engine", "device", "precision", "repeat", "iters", "duration", "warmup",
    "ci_target", "min_iters", "min_seconds", "max_seconds", "timeout", "device_resident",
    "sample_hz", "exporter", "batch", "latency_limit_ms", "concurrency", "scenario", "qps",
    "slo_ms",
)  # fmt: skip
#: Where the workers run and find their artifacts: reused by `--resume RUN`, may be changed.
PLACE_FLAGS = ("cache_dir", "executor", "ray_address", "ray_accelerator_type", "ray_resource")
_RESUMING = "infercmp.resume-flags-merged"


def resumed_flags(ctx: typer.Context, resume: Path) -> dict | None:
    """`--resume RUN`: bench's arguments with the run's stored flags filled in for those not
    given; a given flag that contradicts the stored one is one line. None: the run predates
    stored flags, so the command line must repeat them (as before)."""
    from infercmp.store.run_store import RunStore, check_not_written

    meta = RunStore.open(resume).meta
    if "tune" in (meta.get("settings") or {}):
        raise InfercmpError(
            f"--resume {resume}: that run was made by 'infercmp tune', whose budget is wall "
            "time; it cannot be continued: start a new tune"
        )
    check_not_written(resume)  # before preparing anything for it
    stored = meta.get("flags")
    given = {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
    if not isinstance(stored, dict):
        if "model" not in given:
            raise InfercmpError(
                f"--resume {resume}: this run does not store its flags (an older infercmp "
                "wrote it); repeat the command that started it, with --resume"
            )
        return None
    for name in RUN_FLAGS:
        if name in given and name in stored and _plain(ctx.params[name]) != stored[name]:
            raise InfercmpError(
                f"--resume {resume}: the run was started with {_flag(name, stored[name])}, "
                f"this command gives {_flag(name, ctx.params[name])}; run 'infercmp bench "
                f"--resume {resume}' alone to continue it as it started"
            )
    reused = {n: stored[n] for n in (*RUN_FLAGS, *PLACE_FLAGS) if n in stored and n not in given}
    return {**ctx.params, **reused}


def _plain(value):
    """A flag's value as run.json stores it (JSON has lists, not tuples)."""
    return list(value) if isinstance(value, tuple) else value


def _flag(name: str, value) -> str:
    """A flag's value as typed on a command line: `--engine pytorch --engine onnxruntime`."""
    import shlex

    if name == "model":
        return f"model {value}"
    option = "--" + name.replace("_", "-")
    if value is None or value == []:
        return f"no {option}"
    if isinstance(value, bool):
        return option if value else f"no {option}"
    values = value if isinstance(value, list) else [value]
    return " ".join(f"{option} {shlex.quote(str(v))}" for v in values)


def _open_store(out: Path, model: str, meta: dict, resume: Path | None):
    """A new run store, or with `--resume` the given one and the combinations it holds whole;
    either way this process holds the run's writer lock until `store.close()`."""
    from infercmp.run.resume import open_for_resume
    from infercmp.store.run_store import RunStore

    if resume is None:
        return RunStore.create(out, model, meta), frozenset()
    store, done = open_for_resume(resume, model, meta["settings"])
    try:
        short = [r for r in store.results if r.combo_id not in done]
        if short:
            err_console.print(
                f"[yellow]note:[/] {len(short)} combination(s) hold fewer worker processes than "
                f"--repeat {meta['settings']['repeat']} (the run was stopped); they are measured "
                "again in all of them"
            )
        store.reopen()
    except BaseException:
        store.close()
        raise
    return store, done


def print_resume_command(run_dir: Path) -> None:
    """The exact command that continues a stopped run (its flags are stored in run.json)."""
    import shlex

    console.print(
        f"resume:  infercmp bench --resume {shlex.quote(str(run_dir))}",
        markup=False,
        soft_wrap=True,
    )


def check_something_ran(results) -> None:
    """A run in which no combination could run here (every one skipped) measured nothing."""
    if any(r.status != "skipped" for r in results):
        return
    reasons = list(dict.fromkeys(r.error for r in results if r.error))
    why = f" ({reasons[0]}{'; ...' if len(reasons) > 1 else ''})" if reasons else ""
    raise NothingRan(
        f"nothing ran: every one of the {len(results)} combination(s) was skipped{why}; "
        "see the notes above"
    )


def _search_batches(plugin, plan, artifacts, prepare, store, run, limit_ms) -> str:
    """--batch auto: run the plan at batch 1, 2, 4, ... (infercmp.run.batch_search) and print
    each configuration's best batch. `artifacts` are batch 1's; `prepare(plan, progress)`
    makes a later batch's as bench made the first's (under Ray: plans built on the nodes)."""
    from infercmp.run.batch_search import search_batches
    from infercmp.store.run_store import RunStore
    from infercmp.workload.batching import batch_range

    def step(step_plan):
        if not step_plan.runnable or step_plan.runnable[0].load.batch == 1:
            step_artifacts = artifacts
        else:
            step_artifacts = prepare(step_plan, lambda _msg: None)
        status = run(step_plan, step_artifacts, last_step=False)  # the caller finishes it
        return status, RunStore.open(store.path).results

    curves, status = search_batches(plan, batch_range(plugin.config)[1], step, limit_ms)
    for curve in curves:
        console.print(f"batch auto: {curve.line()}", soft_wrap=True, markup=False)
    return status


class ProgressLine:
    """The progress bar's line, from bench's callbacks (`run.executors.base.BenchListener`).

    It names what the run knows: the worker that is starting or in a phase (the local
    executor reports both), else the last worker that finished. The Ray executor reports
    finished workers only: a task it submitted may still wait in Ray's queue.
    """

    def __init__(self, progress, task, repeat: int) -> None:
        self.progress, self.task, self.repeat = progress, task, repeat

    def combination_started(self, combo, index, total) -> None:
        self.progress.update(self.task, description=f"{escape(combo.label)}: starting")

    def phase(self, combo, phase) -> None:
        self.progress.update(self.task, description=f"{escape(combo.label)}: {phase}")

    def worker_finished(self, combo, outcome) -> None:
        self.progress.update(
            self.task, advance=1, description=f"{escape(combo.label)}: finished, {outcome.status}"
        )

    def combination_finished(self, combo, result) -> None:
        if combo.skip_reason is not None:  # no worker will run for it
            self.progress.update(self.task, advance=self.repeat)
        # Each row as it lands, above the bar: a long run shows what it has measured so far.
        self.progress.console.print(row_line(result), markup=False, soft_wrap=True)


def _run_with_progress(
    bench_mod,
    plugin,
    plan,
    artifacts,
    measurement,
    store,
    sample_hz,
    samplers,
    repeat,
    power_limit,
    executor=None,
    done=frozenset(),
    last_step=True,
) -> str:
    """`run_bench` under a progress bar that names the combination and its worker's phase."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("bench", total=len(plan.combinations) * repeat)
        return bench_mod.run_bench(
            plugin,
            plan,
            artifacts,
            measurement,
            store,
            sample_hz=sample_hz,
            samplers=samplers,
            listener=ProgressLine(progress, task, repeat),
            repeat=repeat,
            power_limit_w=power_limit,
            executor=executor,
            done=done,
            last_step=last_step,
        )


def _power_limit(environment: dict) -> float | None:
    """The enforced power limit of the GPU the workers use (NVML), for plausibility checks."""
    gpus = environment.get("gpus") or []
    return gpus[0].get("power_limit_w") if gpus and isinstance(gpus[0], dict) else None


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
