"""Where `infercmp debug-precision --run RUN` keeps its results inside a run, and reading them
back: `RUN/debug-precision/<model>-<engine>-<precision>/debug-precision.json` (the shape is
docs/debug-precision.md's). The report shows each as a "where the precision breaks" section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEBUG_DIR = "debug-precision"
RESULT_FILE = "debug-precision.json"


def result_dir(run: Path, model: str, engine: str, precision: str) -> Path:
    """The directory one debug-precision result of `run` goes in."""
    return run / DEBUG_DIR / f"{model}-{engine}-{precision}"


def read_results(run: Path) -> list[dict[str, Any]]:
    """Every debug-precision result stored in `run`, by directory name; one that cannot be
    read is left out (the report must open whatever else the run holds)."""
    found = []
    for path in sorted((run / DEBUG_DIR).glob(f"*/{RESULT_FILE}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(data)
    return found
