"""`infercmp debug-precision`: the layers where a reduced precision loses accuracy, named by
PyTorch module path, the exclusion that keeps them in higher precision, and its effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from infercmp.artifacts.accuracy_set import calibration_for, ensure_accuracy_set
from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
from infercmp.artifacts.samples import read_samples
from infercmp.cli.options import cache_dir_option, console, print_table
from infercmp.core.errors import InfercmpError
from infercmp.report.precision import COLUMNS, effect_lines, layer_rows, title
from infercmp.run.plan import parse_engine
from infercmp.run.precision_debug import MIN_GROWTH_DB
from infercmp.run.precision_debug_session import (
    DebugRequest,
    check_request,
    dataset_samples,
    debug_precision,
    example_samples,
)
from infercmp.store.debug_precision import DEBUG_DIR, RESULT_FILE, result_dir
from infercmp.workload.plugins import ModelPlugin, get_plugin
from infercmp.workload.shapes import default_experiment


def _progress(message: str) -> None:
    console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def plugin_samples(
    plugin: ModelPlugin, cache: ArtifactCache, count: int
) -> tuple[list[Any], Any, str]:
    """The samples to debug on: (runtime inputs per sample, labels or None, where from).

    The plugin's dataset when it has one (its evaluation split: never the samples int8
    calibrated on), else the model's example inputs under `count` seeds.
    """
    calibration = plugin.config.accuracy_settings.calibration_samples
    found = ensure_accuracy_set(plugin, cache, evaluation=count, calibration=calibration)
    if found is None:
        return example_samples(plugin, count), None, f"example inputs, seeds 0-{count - 1}"
    inputs, labels = dataset_samples(read_samples(found.evaluation), count)
    return inputs, labels, f"{len(inputs)} dataset samples (evaluation split)"


def debug_precision_command(
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    engine: str = typer.Option(
        ..., "--engine", "-e", help="The engine, with options: onnxruntime, openvino, pytorch."
    ),
    precision: str = typer.Option(..., "--precision", "-p", help="fp16, bf16 or int8."),
    samples: int = typer.Option(8, "--samples", min=1, help="Samples to compare on."),
    top: int = typer.Option(5, "--top", min=1, help="How many layers to blame at most."),
    depth: int | None = typer.Option(
        None, "--depth", min=1, help="Group layers by module path cut to this many parts."
    ),
    min_growth: float = typer.Option(
        MIN_GROWTH_DB, "--min-growth", help="dB of SQNR a layer must lose to be blamed."
    ),
    latency: bool = typer.Option(
        True, "--latency/--no-latency", help="Quick latency check of the original and mixed."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="A run directory: the result goes to RUN/debug-precision/."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for the result (default: ./debug-precision/NAME)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the stored JSON instead."),
    cache_dir: str | None = cache_dir_option(),
) -> None:
    """Find the layers where a reduced precision breaks, and measure keeping them in fp32."""
    choice = parse_engine(engine)
    check_request(choice.name, precision)
    plugin = get_plugin(model)
    name = f"{model}-{choice.name}-{precision}"
    if run is not None and not run.is_dir():
        raise InfercmpError(f"--run {run}: no such run directory")
    where = out or (result_dir(run, model, choice.name, precision) if run is not None else None)
    cache = ArtifactCache(resolve_cache_dir(cache_dir))
    inputs, labels, source = plugin_samples(plugin, cache, samples)
    int8 = precision == "int8"
    calibration = (
        calibration_for(plugin, cache, default_experiment(plugin.config)) if int8 else None
    )
    request = DebugRequest(
        plugin=plugin,
        engine=choice.name,
        options=dict(choice.options),
        precision=precision,
        inputs=inputs,
        labels=labels,
        samples_source=source,
        cache=cache,
        calibration=calibration,
        out_dir=(where or Path(DEBUG_DIR) / name).resolve(),
        top=top,
        depth=depth,
        min_growth=min_growth,
        latency=latency,
        progress=(lambda _m: None) if as_json else _progress,
    )
    result = debug_precision(request).as_dict()
    stored = request.out_dir / RESULT_FILE
    if as_json:
        typer.echo(stored.read_text())
        return
    _print(result, stored)


def _print(result: dict[str, Any], stored: Path) -> None:
    console.print(f"[bold]{escape(title(result))}[/]", soft_wrap=True)
    rows = layer_rows(result)
    if rows:
        table = Table()
        for column in COLUMNS:
            table.add_column(column, no_wrap=column == "module")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        print_table(table)
    else:
        console.print("no layer loses enough precision to blame")
    for line in effect_lines(result):
        console.print(escape(line), soft_wrap=True)
    console.print(f"stored: {stored}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("debug-precision")(debug_precision_command)
