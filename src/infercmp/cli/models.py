"""`infercmp models` and `infercmp config ...`: what is installed and whether configs validate."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from infercmp.cli.common import console
from infercmp.config import ConfigError, ModelConfig, load_config
from infercmp.errors import InfercmpError
from infercmp.plugins import discover, get_plugin


def _tensor_summary(config: ModelConfig) -> tuple[str, str]:
    def shape(dims: list[int]) -> str:
        return "[" + ",".join("?" if d == -1 else str(d) for d in dims) + "]"

    inputs = ", ".join(f"{i.name}:{i.dtype_str}{shape(i.shapes.runtime)}" for i in config.inputs)
    outputs = ", ".join(f"{o.name}{shape(o.shape.runtime)}" for o in config.outputs)
    return inputs, outputs


def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the model plugins found through the `infercmp.models` entry points."""
    rows = []
    for entry in discover().values():
        plugin = entry.load()
        row = {"name": entry.name, "package": entry.package, "available": plugin is not None}
        if plugin is not None:
            row["inputs"], row["outputs"] = _tensor_summary(plugin.config)
        else:
            row["error"] = entry.error
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("model", "package", "inputs", "outputs")
    for row in rows:
        if row["available"]:
            table.add_row(row["name"], row["package"], row["inputs"], row["outputs"])
        else:
            table.add_row(
                row["name"],
                row["package"],
                f"[red]unavailable: {row['error']}[/]",
                "",
            )
    console.print(table)


config_app = typer.Typer(help="Show or validate model configs.", no_args_is_help=True)


@config_app.command("show")
def show(model: str = typer.Argument(..., help="A model name from 'infercmp models'.")) -> None:
    """Print a model's validated config as YAML."""
    import yaml

    config = get_plugin(model).config
    typer.echo(yaml.safe_dump(config.model_dump(), sort_keys=False), nl=False)


@config_app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="YAML model config files.")) -> None:
    """Validate model config files; every problem is printed with its file and field."""
    problems = []
    for path in files:
        try:
            load_config(path)
            console.print(f"[green]ok[/] {path}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise InfercmpError("\n".join(problems))


def register(app: typer.Typer) -> None:
    app.command("models")(list_models)
    app.add_typer(config_app, name="config")
