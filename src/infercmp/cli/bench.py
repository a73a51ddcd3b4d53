"""`infercmp bench`: measure a model on every available engine x device, one worker each.

Its flags become an `infercmp.run.session.BenchRequest`; the session plans, prepares, measures
and stores, and this module shows it: the notes, the progress, each row as it lands, the table.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from infercmp.cli.options import (
    DEFAULT_REPEAT,
    cache_dir_option,
    check_run_flags,
    console,
    device_resident_option,
    err_console,
    exporter_option,
    out_option,
    print_table,
    sample_hz_option,
    state,
)
from infercmp.core.contract import Measurement, ProfileSpec
from infercmp.core.errors import InfercmpError
from infercmp.core.parity import Parity
from infercmp.engines.registry import engine_names
from infercmp.report.accuracy import fmt_accuracy
from infercmp.report.startup import ready_text
from infercmp.report.summary import contention
from infercmp.run import session
from infercmp.run.accuracy import AccuracyRequest
from infercmp.run.session import failed_parity
from infercmp.workload.scenarios import (
    items_per_s,
    load_shortfall,
    served_qps,
    shape_and_load,
    shown_status,
)

_RESUMING = "infercmp.resume-flags-merged"
RUN_DIR = "infercmp.run-dir"  # ctx.meta: the run a bench wrote, for commands that build on it


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


def parse_accuracy(value: str | None) -> AccuracyRequest | None:
    """`--accuracy [N]`: None when not given; N samples, or all of them (capped by the
    config's accuracy.max_samples) when N is left out; one line when N is not a count."""
    if value is None:
        return None
    if value == "all":
        return AccuracyRequest(None)
    if not value.isdigit() or int(value) <= 0:
        raise InfercmpError(f"--accuracy '{value}': give a positive number of samples, or none")
    return AccuracyRequest(int(value))


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _notes(result: Any) -> list[str]:
    """The sentences a row refers to: its error, else its gates and warnings, each on its own
    so a sentence shared by several rows is printed once."""
    if result.status != "ok":
        return [result.error or result.status]
    notes: list[str | None] = []
    if failed_parity(result):
        notes.append("outputs differ from PyTorch beyond tolerance")
    notes.append(load_shortfall(result.load, result.load_result))
    notes.append(contention(result))
    notes.extend(result.warnings)
    return [note for note in notes if note]


def _parity(result: Any) -> str:
    """The parity headline (infercmp.core.parity): verdict and largest absolute error."""
    if not result.parity:
        return "-"
    parity = Parity.model_validate(result.parity)
    return (
        f"{'ok' if parity.ok else 'FAIL'} {parity.max_abs:.1e}"
        if parity.max_abs is not None
        else "FAIL shape"
    )


def row_cells(result: Any) -> dict[str, str]:
    """One result's cells, plain text (no markup), in the table's column order."""
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
        "accuracy": fmt_accuracy(r.accuracy, dash="-"),
        # bench --cold only: its cold and warm starts (a plain run's stay in the report)
        "ready in": (ready_text(r.startup) if _cold(r.startup) else None) or "-",
    }


def _cold(startup: dict[str, Any] | None) -> bool:
    return bool(startup and (startup.get("cold") or startup.get("warm")))


def row_line(result: Any) -> str:
    """A combination's row as one line, printed as it lands: `onnxruntime cpu fp32 32x32x3:
    ok, p50 ms 0.05213, ±CI% 0.8, ...` (empty cells left out)."""
    cells = row_cells(result)
    head = " ".join(cells.pop(key) for key in ("engine", "dev", "prec", "shape"))
    status = cells.pop("status")
    rest = ", ".join(f"{key} {value}" for key, value in cells.items() if value != "-")
    return f"{head}: {status}" + (f", {rest}" if rest else "")


def bench_table(results: list[Any]) -> tuple[Table, list[str]]:
    """The end-of-run table, and the notes (errors, skip reasons, warnings) it refers to.

    Every column is kept: `print_summary` stacks the rows when the table does not fit. A
    note sentence is numbered once; every row it concerns refers to its number.
    """
    notes: list[str] = []
    rows = []
    for r in results:
        numbers = []
        for note in _notes(r):
            if note not in notes:
                notes.append(note)
            numbers.append(notes.index(note) + 1)
        cells = row_cells(r)
        gated = failed_parity(r) or cells["status"] != r.status
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
    if not any(r.accuracy for r in results) and columns:
        columns.remove("accuracy")  # bench --accuracy only
    if all(row["ready in"] == "-" for row in rows) and columns:
        columns.remove("ready in")  # bench --cold only
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


def print_summary(results: list[Any], run_dir: Path) -> None:
    """The table (stacked when too wide), its notes, and the report command, never wrapped.

    Notes and commands are printed with soft_wrap: a terminal folds them for the eye, but a
    log or a pipe keeps each on one line, so `infercmp report ...` can be pasted.
    """
    # What ran first, then what was skipped (skipped combinations are committed first).
    results = sorted(results, key=lambda r: r.status == "skipped")
    table, notes = bench_table(results)
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
    if any(r.accuracy for r in results):
        console.print(ACCURACY_LEGEND, markup=False, soft_wrap=True)
    console.print(f"results: {run_dir}", markup=False, soft_wrap=True)
    console.print(
        f"report:  infercmp report {shlex.quote(str(run_dir))}", markup=False, soft_wrap=True
    )


ACCURACY_LEGEND = (
    "accuracy: the config's primary metric on the dataset's evaluation samples and its change "
    "against PyTorch fp32 on the same samples, in points (else top-1 agreement with PyTorch "
    "fp32, else the mean cosine); untimed, in no latency"
)


def _tolerance(parity: dict[str, Any]) -> str:
    atol = parity.get("atol")
    return f"rtol {parity['rtol']:g}, atol " + (
        f"{atol:g}" if atol is not None else "rtol x max|ref|"
    )


def _ms(value: float | None) -> str:
    """Milliseconds with four significant digits: 0.05213, 1.175, 767.8."""
    return "-" if value is None else f"{value:.4g}"


def _engine_help() -> str:
    """The --engine help from the registered engines' names (no engine is imported)."""
    return (
        f"{', '.join(engine_names())}; options in brackets: 'pytorch[cuda_graph=true]' "
        "(list them with 'infercmp engines'). Default: every installed engine."
    )


_MODEL = typer.Argument(
    None, help="A model name from 'infercmp models' (with --resume: the run's)."
)
_SHAPE = typer.Option(
    [],
    "--shape",
    "-s",
    help="Example input shape(s), one experiment each: 224,224,3 (or 224x224x3) or "
    "'a=8,128;b=8,128'.",
)
_ENGINE = typer.Option([], "--engine", "-e", help=_engine_help())
_DEVICE = typer.Option([], "--device", "-d", help="cpu, cuda. Default: both.")
_PRECISION = typer.Option([], "--precision", "-p", help="fp32, fp16, bf16. Default: fp32.")
_REPEAT = typer.Option(
    DEFAULT_REPEAT,
    "--repeat",
    help="Measure each combination in N fresh worker processes, interleaved, so the "
    "median's CI covers the variation between processes.",
)
_ITERS = typer.Option(None, "--iters", help="Measure exactly N iterations.")
_DURATION = typer.Option(None, "--duration", help="Measure for S seconds.")
_WARMUP = typer.Option(None, "--warmup", help="Warm-up: iterations (50) or time (2s). Default: 1s.")
_CI_TARGET = typer.Option(
    None,
    "--ci-target",
    help="Adaptive mode: stop when the median's 95% CI half-width is within this fraction "
    "(default 0.01).",
)
_MIN_ITERS = typer.Option(
    None, "--min-iters", help="Adaptive mode: measure at least this many iterations (100)."
)
_MIN_SECONDS = typer.Option(
    None,
    "--min-seconds",
    help="Adaptive mode: measure at least this long, for the sampler and energy (1 s).",
)
_MAX_SECONDS = typer.Option(
    None, "--max-seconds", help="Adaptive mode: measure at most this long (20 s)."
)
_TIMEOUT = typer.Option(None, "--timeout", help="Kill a worker after this many seconds (600).")
_EXECUTOR = typer.Option(
    "local",
    "--executor",
    help="local: one worker at a time on this machine; ray: one Ray task per worker, "
    "one GPU each (docs/distributed.md).",
)
_RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="An existing Ray cluster (implies --executor ray). Default: a local instance.",
)
_RAY_ACCELERATOR_TYPE = typer.Option(
    None, "--ray-accelerator-type", help="Run on Ray nodes of this GPU type only, e.g. H200."
)
_RAY_RESOURCE = typer.Option(
    [], "--ray-resource", help="A Ray resource NAME[=AMOUNT] each worker asks for (node kind)."
)
_RESUME = typer.Option(
    None,
    "--resume",
    help="Continue the run directory RUN with the flags that started it: run only the "
    "combinations it lacks.",
)
_BATCH = typer.Option(
    None,
    "--batch",
    "-b",
    help="Batch sizes, e.g. 1,8,32, stacked along the config's batch_size axis; 'auto' "
    "doubles until the gain is under 5%, memory runs out or --latency-limit-ms is passed.",
)
_LATENCY_LIMIT_MS = typer.Option(
    None, "--latency-limit-ms", help="--batch auto: stop before the median passes this."
)
_CONCURRENCY = typer.Option(
    None,
    "--concurrency",
    "-c",
    help="Requests in flight inside one worker, e.g. 1,2,4 (implies --scenario offline).",
)
_SCENARIO = typer.Option(
    None,
    "--scenario",
    help="single-stream (default: one request at a time), offline (closed loop at the "
    "batch and concurrency) or server (Poisson arrivals at --qps).",
)
_QPS = typer.Option(
    None, "--qps", help="server: arrival rate(s) in requests/s, or 'auto' with --slo-ms."
)
_ACCURACY = typer.Option(
    None,
    "--accuracy",
    metavar="[N]",
    help="After the timed phases, run N dataset samples (all, at most the config's "
    "accuracy.max_samples, when N is left out) through each engine, untimed: task metrics "
    "and agreement with PyTorch fp32 (docs/usage.md).",
)
_PROFILE = typer.Option(
    False,
    "--profile",
    help="After the timed phases, profile each combination with its engine's own profiler, "
    "untimed: time per module of the model and per kind of work (docs/profiling.md).",
)
_PROFILE_ITERATIONS = typer.Option(
    None, "--profile-iterations", help="--profile: profile N calls (default 20; implies --profile)."
)
_COLD = typer.Option(
    False,
    "--cold",
    help="Also measure what starting costs: after its measurement, each combination starts "
    "twice more, cold (a fresh temporary artifact cache and engine caches: export, "
    "conversion, compilation all made again) and then warm (docs/usage.md).",
)
_SLO_MS = typer.Option(
    None, "--slo-ms", help="--qps auto: the highest rate whose p99 latency stays under this."
)


def bench(
    ctx: typer.Context,
    model: str | None = _MODEL,
    shape: list[str] = _SHAPE,
    engine: list[str] = _ENGINE,
    device: list[str] = _DEVICE,
    precision: list[str] = _PRECISION,
    repeat: int = _REPEAT,
    iters: int | None = _ITERS,
    duration: float | None = _DURATION,
    warmup: str | None = _WARMUP,
    ci_target: float | None = _CI_TARGET,
    min_iters: int | None = _MIN_ITERS,
    min_seconds: float | None = _MIN_SECONDS,
    max_seconds: float | None = _MAX_SECONDS,
    timeout: float | None = _TIMEOUT,
    device_resident: bool = device_resident_option(),
    sample_hz: float = sample_hz_option(),
    out: Path = out_option(),
    cache_dir: str | None = cache_dir_option(),
    exporter: str = exporter_option(),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
    ray_accelerator_type: str | None = _RAY_ACCELERATOR_TYPE,
    ray_resource: list[str] = _RAY_RESOURCE,
    resume: Path | None = _RESUME,
    batch: str | None = _BATCH,
    latency_limit_ms: float | None = _LATENCY_LIMIT_MS,
    concurrency: str | None = _CONCURRENCY,
    scenario: str | None = _SCENARIO,
    qps: str | None = _QPS,
    slo_ms: float | None = _SLO_MS,
    accuracy: str | None = _ACCURACY,
    profile: bool = _PROFILE,
    profile_iterations: int | None = _PROFILE_ITERATIONS,
    cold: bool = _COLD,
) -> None:
    """Benchmark MODEL: every engine x device x precision x shape in its own worker process."""
    if resume is not None and not ctx.meta.get(_RESUMING):
        ctx.meta[_RESUMING] = True
        flags = session.resumed_flags(resume, ctx.params, _given(ctx))
        if flags is not None:
            return bench(ctx, **flags)
    if model is None:
        raise InfercmpError(
            "Missing argument 'model': name one from 'infercmp models', or continue a run with "
            "--resume RUN (see 'infercmp bench --help')"
        )
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
    request = session.BenchRequest(
        model=model, shapes=shape, engines=engine, devices=device, precisions=precision,
        measurement=measurement, repeat=repeat, sample_hz=sample_hz, out=out,
        cache_dir=cache_dir, exporter=exporter, executor=executor, ray_address=ray_address,
        ray_accelerator_type=ray_accelerator_type, ray_resources=ray_resource, resume=resume,
        batch=batch, latency_limit_ms=latency_limit_ms, concurrency=concurrency,
        scenario=scenario, qps=qps, slo_ms=slo_ms, accuracy=parse_accuracy(accuracy), cold=cold,
        profile=parse_profile(profile, profile_iterations),
        flags={n: session.plain(ctx.params[n]) for n in (*session.RUN_FLAGS, *session.PLACE_FLAGS)},
    )  # fmt: skip
    with contextlib.ExitStack() as resources:  # the executor and the run's writer lock
        outcome = session.run_session(request, _View(), resources)
        ctx.meta[RUN_DIR] = outcome.run_dir  # `infercmp profile` prints its tables from it
        print_summary(outcome.results, outcome.run_dir)
        if outcome.status == "interrupted":
            print_resume_command(outcome.run_dir)
        failure = outcome.failure()
        if failure is not None:
            raise failure
    return None


def parse_profile(profile: bool, iterations: int | None) -> ProfileSpec | None:
    """`--profile [--profile-iterations N]`: None when neither is given."""
    if iterations is None:
        return ProfileSpec() if profile else None
    if iterations < 1:
        raise InfercmpError(
            f"--profile-iterations {iterations}: give a positive number of profiled calls"
        )
    return ProfileSpec(iterations=iterations)


def _given(ctx: typer.Context) -> set[str]:
    """The flags given on the command line (not left at their defaults)."""
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }


def print_resume_command(run_dir: Path) -> None:
    """The exact command that continues a stopped run (its flags are stored in run.json)."""
    console.print(
        f"resume:  infercmp bench --resume {shlex.quote(str(run_dir))}",
        markup=False,
        soft_wrap=True,
    )


class _View:
    """A bench session on the terminal (`infercmp.run.session.BenchView`): notes and warnings
    on stderr, a status line while preparing, a progress bar while measuring."""

    def note(self, text: str) -> None:
        err_console.print(f"[yellow]note:[/] {escape(text)}")

    def warning(self, text: str) -> None:
        err_console.print(f"[yellow]warning:[/] {escape(text)}")

    def traceback(self, text: str) -> None:
        if state.debug:
            err_console.print(text, markup=False, highlight=False)

    @contextlib.contextmanager
    def preparing(self) -> Iterator[Callable[[str], None]]:
        with console.status("preparing artifacts") as status:
            yield lambda message: status.update(f"preparing: {escape(message)}")

    def run_directory(self, path: Path) -> None:
        console.print(f"run directory: {path}", soft_wrap=True, markup=False)

    def run_step(self, *args: Any, **kwargs: Any) -> str:
        return _run_with_progress(*args, **kwargs)

    def batch_curve(self, line: str) -> None:
        console.print(f"batch auto: {line}", soft_wrap=True, markup=False)


class ProgressLine:
    """The progress bar's line, from bench's callbacks (`run.executors.base.BenchListener`).

    It names what the run knows: the worker that is starting or in a phase (the local
    executor reports both), else the last worker that finished. The Ray executor reports
    finished workers only: a task it submitted may still wait in Ray's queue.
    """

    def __init__(self, progress: Any, task: Any, repeat: int) -> None:
        self.progress, self.task, self.repeat = progress, task, repeat

    def combination_started(self, combo: Any, index: int, total: int) -> None:
        self.progress.update(self.task, description=f"{escape(combo.label)}: starting")

    def phase(self, combo: Any, phase: str) -> None:
        self.progress.update(self.task, description=f"{escape(combo.label)}: {phase}")

    def worker_finished(self, combo: Any, outcome: Any) -> None:
        self.progress.update(
            self.task, advance=1, description=f"{escape(combo.label)}: finished, {outcome.status}"
        )

    def combination_finished(self, combo: Any, result: Any) -> None:
        if combo.skip_reason is not None:  # no worker will run for it
            self.progress.update(self.task, advance=self.repeat)
        # Each row as it lands, above the bar: a long run shows what it has measured so far.
        self.progress.console.print(row_line(result), markup=False, soft_wrap=True)


def _run_with_progress(
    run_bench: Callable[..., str],
    plugin: Any,
    plan: Any,
    artifacts: Any,
    measurement: Measurement,
    store: Any,
    sample_hz: float,
    samplers: list[Any],
    repeat: int,
    power_limit: float | None,
    executor: Any | None = None,
    done: frozenset[str] = frozenset(),
    last_step: bool = True,
) -> str:
    """`run_bench` under a progress bar that names the combination and its worker's phase."""
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
        return run_bench(
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


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
