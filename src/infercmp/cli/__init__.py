"""The `infercmp` command line: one module per group of commands, assembled here.

Nothing imported at module level here may import torch, onnxruntime or tensorrt: `--help`
and `infercmp models` must stay fast.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape

from infercmp import __version__
from infercmp.cli import bench, engines, export, models, report, tune
from infercmp.cli.options import HelpGroup, command_group, err_console, state
from infercmp.core.errors import InfercmpError


def report_error(exc: InfercmpError) -> None:
    """Print a user error as `error: ...` lines on stderr, without a traceback."""
    # Only "\n" separates lines (several config problems); any other control character,
    # \r included, came from a name or path the user typed and is shown escaped.
    for line in str(exc).strip("\n").split("\n") if str(exc) else [type(exc).__name__]:
        _print_error(line)


def _print_error(line: str) -> None:
    err_console.print(
        f"[bold red]error:[/] {escape(_printable(line))}",
        highlight=False,
        markup=True,
        soft_wrap=True,
    )


def _printable(text: str) -> str:
    """Control characters quoted from names or paths are shown escaped, never sent raw."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# Click's exception base, whether typer uses click itself or (typer >= 0.29) its own copy of it.
ClickException: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


def report_usage_error(exc: Any) -> None:
    """Click's own parse errors (`--iters abc`, an unknown option) as one `error:` line."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _print_error(message + hint)


class _InfercmpGroup(HelpGroup):
    """Turns an InfercmpError into one clear line and its exit code, unless --debug.

    Handling it here rather than only in `main()` gives `typer.testing.CliRunner` the same
    behaviour as the console script.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Click's usage errors become one line and exit 2, like infercmp's own errors."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # a group called bare: its help, as click prints it
            else:
                report_usage_error(exc)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("Aborted!", highlight=False)
            sys.exit(1)
        # Without standalone mode click returns typer.Exit's code, or the command's None.
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except InfercmpError as exc:
            if state.debug:
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None


app = command_group(
    name="infercmp",
    cls=_InfercmpGroup,
    help=(
        "Compare a PyTorch model under PyTorch, ONNX Runtime, OpenVINO and TensorRT, on CPU and "
        "CUDA."
    ),
    pretty_exceptions_enable=False,
    add_completion=False,
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


for module in (models, engines, export, bench, tune, report):
    module.register(app)


def main() -> None:
    try:
        app()
    except InfercmpError as exc:  # raised outside a command, e.g. while parsing an option
        if state.debug:
            raise
        report_error(exc)
        sys.exit(exc.exit_code)
