"""What every command shares: the consoles and the global --debug state."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console


@dataclass
class State:
    debug: bool = False


state = State()
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def default_cache_dir() -> str:
    return os.environ.get("INFERCMP_CACHE_DIR", ".infercmp/cache")
