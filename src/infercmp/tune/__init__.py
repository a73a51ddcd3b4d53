"""The search over an engine's declared options and precisions, by successive halving."""

from typing import Any

from infercmp.core import moved


def __getattr__(name: str) -> Any:
    """The names of the module `infercmp.tune` of 0.1.0 (read_leaderboard, ...), warned."""
    return moved.tune_attribute(name)
