"""What every command shares: the consoles, the global --debug state and how groups are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console


@dataclass
class State:
    debug: bool = False


state = State()
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def command_group(**settings: Any) -> typer.Typer:
    """A Typer app (the root or a subgroup) whose --help shows every text exactly as written.

    Typer's rich help reads help strings as rich markup, which swallows the bracketed examples
    infercmp's help is made of (`'pytorch[cuda_graph=true]'` printed as `'pytorch'`) and shows
    flags as `--flag <bool>`. Click's plain formatter prints the text verbatim and flags as
    flags, so every group is made here, with it.
    """
    return typer.Typer(rich_markup_mode=None, no_args_is_help=True, **settings)
