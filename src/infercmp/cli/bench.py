"""`infercmp bench`: measure a model on every available engine x device, one worker each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from infercmp.cli.common import console, err_console
from infercmp.errors import InfercmpError, RunFailed

if TYPE_CHECKING:
    from rich.table import Table


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


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _note(result) -> str:
    if result.status != "ok":
        return result.error or result.status
    notes = []
    if result.parity and not result.parity.get("ok", True):
        notes.append("outputs differ from PyTorch beyond tolerance")
    notes.extend(result.warnings)
    return "; ".join(notes)


def _parity(result) -> str:
    outputs = (result.parity or {}).get("outputs") or []
    if not outputs:
        return "-"
    worst = max(o.get("max_rel") or 0.0 for o in outputs)
    return f"{'ok' if result.parity.get('ok') else 'FAIL'} {worst:.0e}"


def summary_table(results) -> tuple[Table, list[str]]:
    """The end-of-run table, and the notes (errors, skip reasons, warnings) it refers to."""
    from rich.table import Table

    table = Table(title="infercmp bench", title_justify="left")
    for name in ("engine", "device", "prec", "shape", "status"):
        table.add_column(name, overflow="fold")
    for name in ("p50 ms", "p99 ms", "CI ±%", "items/s", "RSS MiB", "VRAM MiB", "parity"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("note", justify="right")
    notes: list[str] = []
    for r in results:
        lat = r.latency or {}
        note = _note(r)
        ref = ""
        if note:
            if note not in notes:
                notes.append(note)
            ref = f"[{notes.index(note) + 1}]"
        style = {"ok": "green", "skipped": "yellow"}.get(r.status, "red")
        half = (lat["ci_high_ms"] - lat["ci_low_ms"]) / 2 / lat["p50_ms"] * 100 if lat else None
        table.add_row(
            f"{r.engine}[{_options(r.options)}]" if r.options else r.engine,
            r.device,
            r.precision,
            r.shape_label,
            f"[{style}]{r.status}[/]",
            f"{lat['p50_ms']:.3f}" if lat else "-",
            f"{lat['p99_ms']:.3f}" if lat else "-",
            f"{half:.1f}" if half is not None else "-",
            f"{lat['throughput_per_s']:,.0f}" if lat else "-",
            _mib(r.peak_rss_bytes),
            _mib(r.peak_vram_bytes),
            _parity(r),
            ref,
        )
    return table, notes


def _options(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def bench(
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    shape: list[str] = typer.Option(
        [],
        "--shape",
        "-s",
        help="Example input shape(s), one experiment each: 224,224,3 or 'a=8,128;b=8,128'.",
    ),
    engine: list[str] = typer.Option(
        [],
        "--engine",
        "-e",
        help="pytorch, onnxruntime, tensorrt; options in brackets: 'pytorch[cuda_graph=true]'. "
        "Default: all.",
    ),
    device: list[str] = typer.Option([], "--device", "-d", help="cpu, cuda. Default: both."),
    precision: list[str] = typer.Option(
        [], "--precision", "-p", help="fp32, fp16, bf16. Default: fp32."
    ),
    iters: int | None = typer.Option(None, "--iters", help="Measure exactly N iterations."),
    duration: float | None = typer.Option(None, "--duration", help="Measure for S seconds."),
    warmup: str = typer.Option("1s", "--warmup", help="Warm-up: iterations (50) or time (2s)."),
    ci_target: float = typer.Option(
        0.01,
        "--ci-target",
        help="Adaptive mode: stop when the median's 95% CI half-width is within this fraction.",
    ),
    min_iters: int = typer.Option(
        100, "--min-iters", help="Adaptive mode: measure at least this many iterations."
    ),
    max_seconds: float = typer.Option(
        20.0, "--max-seconds", help="Adaptive mode: measure at most this long."
    ),
    timeout: float = typer.Option(
        600.0, "--timeout", help="Kill a worker after this many seconds."
    ),
    device_resident: bool = typer.Option(
        False, "--device-resident", help="Time compute only, inputs already on device."
    ),
    sample_hz: float = typer.Option(20.0, "--sample-hz", help="Sampler rate in Hz (0: off)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Directory for run stores."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Artifact cache (env INFERCMP_CACHE_DIR)."
    ),
    exporter: str = typer.Option(
        "auto", "--exporter", help="ONNX exporter: auto, dynamo, torchscript."
    ),
) -> None:
    """Benchmark MODEL: every engine x device x precision x shape in its own worker process."""
    from infercmp import bench as bench_mod
    from infercmp.plugins import get_plugin
    from infercmp.shapes import default_experiment, parse_shape

    warmup_iters, warmup_seconds = _warmup(warmup)
    measurement = bench_mod.Measurement(
        warmup_iters=warmup_iters,
        warmup_seconds=warmup_seconds,
        iters=iters,
        duration_s=duration,
        ci_target=ci_target,
        min_iters=min_iters,
        max_seconds=max_seconds,
        timeout_s=timeout,
        device_resident=device_resident,
    )
    measurement.validate()
    if not (0 <= sample_hz <= 1000):
        raise InfercmpError(f"--sample-hz must be between 0 (off) and 1000, got {sample_hz}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise InfercmpError(f"--exporter '{exporter}': choose auto, dynamo or torchscript")

    plugin = get_plugin(model)
    experiments = [parse_shape(s, plugin.config) for s in shape] or [
        default_experiment(plugin.config)
    ]
    experiments = list(dict.fromkeys(experiments))
    plan = bench_mod.plan_bench(plugin, experiments, engine, device, precision)

    from infercmp.cache import ArtifactCache, resolve_cache_dir
    from infercmp.environment import collect_environment
    from infercmp.results import RunStore
    from infercmp.sampler import default_samplers

    uses_gpu = any(c.device == "cuda" for c in plan.runnable)
    samplers, left_out = (
        default_samplers(gpu=uses_gpu) if sample_hz > 0 else ([], ["sampler off (--sample-hz 0)"])
    )
    for message in left_out:
        err_console.print(f"[yellow]note:[/] {message}")

    cache = ArtifactCache(resolve_cache_dir(cache_dir))
    with console.status("preparing artifacts") as status:
        artifacts = bench_mod.prepare_artifacts(
            plugin, plan, cache, lambda msg: status.update(f"preparing: {msg}"), exporter
        )
    for precision_name, error in artifacts.plan_errors.items():
        err_console.print(f"[yellow]TensorRT {precision_name} build failed:[/] {error}")

    meta = {
        "argv": sys.argv,
        "model_config": plugin.config.model_dump(),
        "settings": {
            "experiments": [e.label for e in experiments],
            "measurement": measurement.__dict__,
            "sample_hz": sample_hz,
            "exporter": getattr(artifacts.onnx, "exporter", None),
            "onnx": str(artifacts.onnx.path) if artifacts.onnx else None,
        },
        "environment": collect_environment(),
    }
    store = RunStore.create(out, plugin.name, meta)
    console.print(f"run directory: {store.path}")

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
        task = progress.add_task("bench", total=len(plan.combinations))

        class Listener(bench_mod.BenchListener):
            def combination_started(self, combo, index, total):
                progress.update(task, description=f"{combo.label}: starting")

            def phase(self, combo, phase):
                progress.update(task, description=f"{combo.label}: {phase}")

            def combination_finished(self, combo, result):
                progress.advance(task)

        status = bench_mod.run_bench(
            plugin,
            plan,
            artifacts,
            measurement,
            store,
            sample_hz=sample_hz,
            samplers=samplers,
            listener=Listener(),
        )
    results = RunStore.open(store.path).results
    table, notes = summary_table(results)
    console.print(table)
    for number, note in enumerate(notes, 1):
        console.print(f"[{number}] {note}", highlight=False, markup=False)
    console.print(f"results: {store.path}  (infercmp report {store.path})")
    if status == "interrupted":
        raise RunFailed(
            f"run interrupted; {sum(r.status == 'ok' for r in results)} finished "
            f"combination(s) are saved in {store.path}"
        )


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
