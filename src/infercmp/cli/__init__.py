"""The `infercmp` command line: one module per group of commands, assembled here.

Each command's module is imported when that command runs or shows its help (`COMMANDS`): the
modules import what their commands call at their heads (the run, the reports: pydantic, numpy),
and `infercmp --help` must stay fast and load none of it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import typer
import typer.main
from rich.markup import escape
from typer.core import TyperCommand

from infercmp import __version__
from infercmp.cli.options import HelpGroup, command_group, err_console, state
from infercmp.core.errors import InfercmpError

#: Every command in the order `infercmp --help` lists it: the module of infercmp.cli that
#: defines it (its `register(app)` adds it) and the first sentence of its help, which the
#: list shows without importing the module (tests/unit/cli pins it to the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "models": (
        "models",
        "List the model plugins found through the `infercmp.models` entry points.",
    ),
    "engines": (
        "engines",
        "List the engines found through the `infercmp.engines` entry points, with their options.",
    ),
    "export": (
        "export",
        "Export a model to ONNX; check it, its dynamic axes and its parity with PyTorch.",
    ),
    "build": (
        "export",
        "Build a TensorRT / TensorRT-RTX engine plan (exports through the cache first).",
    ),
    "bench": (
        "bench",
        "Benchmark MODEL: every engine x device x precision x shape in its own worker process.",
    ),
    "profile": (
        "profile",
        "Profile MODEL on each engine: time per module and per kind of work, side by side.",
    ),
    "tune": (
        "tune",
        "Find each engine's fastest configuration that passes parity, within a time budget.",
    ),
    "debug-precision": (
        "debug_precision",
        "Find the layers where a reduced precision breaks, and measure keeping them in fp32.",
    ),
    "report": (
        "report",
        "Write a report of one or more bench runs: an offline HTML page, or md/csv/json tables.",
    ),
    "compare": (
        "report",
        "Compare two runs: the change of each combination's median with a 95% interval.",
    ),
    "config": ("models", "Show or validate model configs."),
    "cache": ("export", "List or clear the artifact cache."),
}


class _Unloaded(TyperCommand):
    """A command whose module is not imported yet: its name and summary, for the list."""


def load_command(name: str) -> Any:
    """Command `name` as its module defines it (importing the module)."""
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    group = command_group()
    module.register(group)
    return typer.main.get_group(group).commands[name]


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


def _show_click_error(exc: Any) -> int:
    """One of click's own errors shown as infercmp shows errors; its exit code."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # a group called bare: its help, as click prints it
    else:
        report_usage_error(exc)
    return int(exc.exit_code)


class _InfercmpGroup(HelpGroup):
    """Turns an InfercmpError into one clear line and its exit code, unless --debug.

    Handling it here rather than only in `main()` gives `typer.testing.CliRunner` the same
    behaviour as the console script. Its commands are loaded when first resolved (`COMMANDS`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (_module, summary) in COMMANDS.items():
            self.commands.setdefault(name, _Unloaded(name=name, short_help=summary))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, _Unloaded):
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's usage errors become one line and exit 2, like infercmp's own errors."""
        given = {
            "args": args,
            "prog_name": prog_name,
            "complete_var": complete_var,
            "windows_expand_args": windows_expand_args,
            **extra,
        }
        if not standalone_mode:
            return super().main(standalone_mode=False, **given)
        try:
            code = super().main(standalone_mode=False, **given)
        except ClickException as exc:
            sys.exit(_show_click_error(exc))
        except typer.Abort:
            err_console.print("Aborted!", highlight=False)
            sys.exit(1)
        # Without standalone mode click returns typer.Exit's code, or the command's None.
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)

    def invoke(self, ctx: Any) -> Any:
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


def main() -> None:
    try:
        app()
    except InfercmpError as exc:  # raised outside a command, e.g. while parsing an option
        if state.debug:
            raise
        report_error(exc)
        sys.exit(exc.exit_code)
