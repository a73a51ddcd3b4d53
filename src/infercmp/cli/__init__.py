"""The `infercmp` command line: one module per group of commands, assembled here.

Nothing imported at module level here may import torch, onnxruntime or tensorrt: `--help`
and `infercmp models` must stay fast.
"""

from __future__ import annotations

import sys

import typer

from infercmp import __version__
from infercmp.cli import bench, export, models, report
from infercmp.cli.common import err_console, state
from infercmp.errors import InfercmpError

app = typer.Typer(
    name="infercmp",
    help="Compare a PyTorch model under PyTorch, ONNX Runtime and TensorRT, on CPU and CUDA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"infercmp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug


for module in (models, export, bench, report):
    module.register(app)


def main() -> None:
    try:
        app()
    except InfercmpError as exc:
        if state.debug:
            raise
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err_console.print(
                f"[bold red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True
            )
        sys.exit(exc.exit_code)
