"""What every command shares: the consoles, the global --debug state and how groups are made."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from infercmp.core.errors import InfercmpError

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class State:
    debug: bool = False


class _Console(Console):
    """A console that a closed pipe (`infercmp tune | head`) silences instead of ending.

    Rich's default exits with status 1 from inside whatever was printing: a measuring run
    then ended as failed ("SystemExit: 1") although nothing about the run went wrong.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:  # later writes, and Python's flush at exit, go nowhere instead of failing
            os.dup2(devnull, self.file.fileno())
        except (OSError, ValueError):  # no file descriptor (a test's in-memory stream)
            pass
        finally:
            os.close(devnull)


state = State()
console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


# Options several commands take, declared once so their flags, defaults and help agree.
CACHE_DIR_HELP = "Artifact cache directory (default: $INFERCMP_CACHE_DIR or .infercmp/cache)."


def cache_dir_option() -> Any:
    return typer.Option(None, "--cache-dir", help=CACHE_DIR_HELP)


def exporter_option() -> Any:
    return typer.Option(
        "auto", "--exporter", help="auto (dynamo, then torchscript), dynamo or torchscript."
    )


def sample_hz_option() -> Any:
    return typer.Option(20.0, "--sample-hz", help="Sampler rate in Hz (0: off).")


def out_option() -> Any:
    return typer.Option(
        Path("runs"), "--out", "-o", help="Directory for run stores.", callback=_utf8_path
    )


def _utf8_path(value: Path | None) -> Path | None:
    """A path the run records (run.json is UTF-8) must be text: refused before any run starts."""
    if value is not None:
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            shown = (
                str(value).encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            )
            raise typer.BadParameter(
                f"'{shown}' is not valid UTF-8; run.json records it as text: choose a UTF-8 name"
            ) from None
    return value


def device_resident_option() -> Any:
    return typer.Option(
        False, "--device-resident", help="Time compute only, inputs already on device."
    )


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


class HelpGroup(TyperGroup):
    """A group whose --help lists each command with its first sentence whole.

    Click cuts that sentence at about 45 characters and adds '...'.
    """

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)  # as listed: a lazy group's stays unloaded
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


#: How help names a value of each type: what a user types, never the Python annotation.
_VALUE_NAMES = {str: "<text>", int: "<int>", float: "<number>", Path: "<path>"}


class PlainCommand(TyperCommand):
    """A command whose help names values as a user types them: `MODEL`, `[RUN_DIRS]...`,
    `--shape <text>`, `--timeout <number>`.

    Typer shows the Python annotations instead (`{model}`, `model <str>`, `--shape
    <list[str]>`, `run_dirs... <list[Path]>`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            described = getattr(param, "type_descriptor", None)  # typer's, not click's own
            if param.param_type_name == "option" and param.metavar is None and described:
                annotation = described.annotation
                element = typing.get_args(annotation)[0] if described.is_list else None
                param.metavar = _VALUE_NAMES.get(element or annotation, "<text>")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_bare_values(args))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [
            _argument_usage(p) for p in self.get_params(ctx) if p.param_type_name == "argument"
        ]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_usage(param, bare=True), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


#: Options whose value may be left out, and the value they then take: `--accuracy` alone is
#: `--accuracy all`, `--accuracy 500` is 500 (Typer's click has no optional values).
BARE_VALUES = {"--accuracy": "all"}


def with_bare_values(args: list[str]) -> list[str]:
    """`args` with each BARE_VALUES option that has no value of its own (it is last, or the
    next argument is not a count: another option, or the model) given its bare value."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":  # what follows is positional
            return out + args[i:]
        # str(): a caller (typer's CliRunner in tests, a script) may pass Paths and numbers
        following = str(args[i + 1]) if i + 1 < len(args) else None
        takes = following is not None and (following.isdigit() or following == "all")
        out.append(f"{arg}={BARE_VALUES[arg]}" if arg in BARE_VALUES and not takes else arg)
    return out


def _argument_usage(param: Any, bare: bool = False) -> str:
    """`MODEL`, `[RUN_DIRS]...` (optional) or `FILES...` (several)."""
    name = (param.metavar or param.name).upper()
    if not param.required and not bare:
        name = f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


class _App(typer.Typer):
    """A Typer app whose commands are `PlainCommand`s."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", PlainCommand)
        return super().command(*args, **kwargs)


def command_group(**settings: Any) -> typer.Typer:
    """A Typer app (the root or a subgroup) whose --help shows every text exactly as written.

    Typer's rich help reads help strings as rich markup, which swallows the bracketed examples
    infercmp's help is made of (`'pytorch[cuda_graph=true]'` printed as `'pytorch'`) and shows
    flags as `--flag <bool>`. Click's plain formatter prints the text verbatim and flags as
    flags, so every group is made here, with it.
    """
    settings.setdefault("cls", HelpGroup)
    return _App(rich_markup_mode=None, no_args_is_help=True, **settings)


def print_table(table: Table, heading: int = 1, *, to: Console | None = None) -> None:
    """Print `table` whole, or, when it is wider than the console, as one block per row.

    Narrow terminals, CI logs and pipes get 80 columns, where rich would silently drop or
    fold cells (`float32[1,3,?` / `,?]`). A row's block is its first `heading` cells on one
    line, then `header: value` for each other non-empty cell, packed into indented lines of
    whole cells: a cell is never cut, a multi-line cell keeps its own lines.
    """
    out = to or console
    # Measured without a width limit: at the console's width rich would shrink it to fit.
    if Measurement.get(out, out.options.update_width(10_000), table).maximum <= out.width:
        out.print(table)
        return

    def text(cell: Any) -> Text:
        return Text.from_markup(cell) if isinstance(cell, str) else Text(str(cell))

    columns = [(text(c.header).plain, [text(cell) for cell in c.cells]) for c in table.columns]
    if table.title:
        out.print(text(table.title), soft_wrap=True)
    for row in range(table.row_count):
        cells = [(header, cells[row]) for header, cells in columns]
        first = Text(" ").join(cell for _, cell in cells[:heading] if cell.plain)
        out.print(first, soft_wrap=True)
        line = Text("  ")
        for header, cell in cells[heading:]:
            if cell.plain in ("", "-"):
                continue
            if "\n" in cell.plain:  # its own lines, aligned under its header
                if len(line) > 2:
                    out.print(line, soft_wrap=True)
                indent = "\n" + " " * (len(header) + 4)
                out.print(Text(f"  {header}: ") + Text(indent).join(cell.split()), soft_wrap=True)
                line = Text("  ")
                continue
            item = Text(f"{header}: ") + cell
            if len(line) > 2 and line.cell_len + 2 + item.cell_len > out.width:
                out.print(line, soft_wrap=True)
                line = Text("  ")
            line += (Text("  ") if len(line) > 2 else Text("")) + item
        if len(line) > 2:
            out.print(line, soft_wrap=True)
