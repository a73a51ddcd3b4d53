"""What every command shares: the consoles and the global --debug state."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console


@dataclass
class State:
    debug: bool = False


state = State()
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
