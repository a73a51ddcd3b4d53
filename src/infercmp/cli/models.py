"""`infercmp models` and `infercmp config ...`: what is installed and whether configs validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from infercmp.cli.options import command_group, console, err_console, print_table
from infercmp.core.errors import InfercmpError
from infercmp.workload.config import ConfigError, ModelConfig, load_config
from infercmp.workload.plugins import discover_plugins, get_plugin


def _tensor_summary(config: ModelConfig) -> tuple[list[str], list[str]]:
    """`name:dtype[1,3,?,?]` per input and `name[1,1000]` per output; `?` is a dynamic axis."""

    def shape(dims: list[int]) -> str:
        return "[" + ",".join("?" if d == -1 else str(d) for d in dims) + "]"

    inputs = [f"{i.name}:{i.dtype_str}{shape(i.shapes.runtime)}" for i in config.inputs]
    outputs = [f"{o.name}{shape(o.shape.runtime)}" for o in config.outputs]
    return inputs, outputs


def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the model plugins found through the `infercmp.models` entry points."""
    rows = []
    tensors = {}
    for entry in discover_plugins().values():
        plugin = entry.load()
        row: dict[str, Any] = {
            "name": entry.name,
            "package": entry.package,
            "available": plugin is not None,
        }
        if plugin is not None:
            tensors[entry.name] = _tensor_summary(plugin.config)
            row["inputs"], row["outputs"] = (", ".join(t) for t in tensors[entry.name])
        else:
            row["error"] = entry.error
        rows.append(row)
        if entry.slow_import_warning:
            err_console.print(f"warning: {entry.slow_import_warning}", markup=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("model", "package", "inputs", "outputs"):
        # A shape split mid-token helps nobody: print_table stacks the rows instead.
        table.add_column(column, no_wrap=True)
    for row in rows:
        # Plugin-supplied text may hold '[...]', which rich would read as markup.
        cells = [escape(row["name"]), escape(row["package"])]
        if row["available"]:
            cells += ["\n".join(escape(t) for t in tensors[row["name"]][i]) for i in (0, 1)]
        else:
            cells += [f"[red]unavailable: {escape(str(row['error']))}[/]", ""]
        table.add_row(*cells)
    print_table(table)


config_app = command_group(help="Show or validate model configs.")


@config_app.command("show")
def show(model: str = typer.Argument(..., help="A model name from 'infercmp models'.")) -> None:
    """Print a model's validated config as YAML (valid input to 'infercmp config validate')."""
    config = get_plugin(model).config
    # Flow style for the innermost lists keeps each shape on one line: [1, 3, -1, -1].
    text = yaml.safe_dump(config.model_dump(), sort_keys=False, default_flow_style=None)
    typer.echo(text, nl=False)


@config_app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="YAML model config files.")) -> None:
    """Validate model config files; every problem is printed with its file and field."""
    problems = []
    for path in files:
        try:
            load_config(path)
            console.print(f"[green]ok[/] {escape(str(path))}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise InfercmpError("\n".join(problems))


def register(app: typer.Typer) -> None:
    app.command("models")(list_models)
    app.add_typer(config_app, name="config")
