"""Finding run directories: the latest one under a results root, the run a path belongs to."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from infercmp.core.errors import InfercmpError
from infercmp.store.schema import RESULTS_LOG, RUN_FILE, WRITER_LOCK
from infercmp.store.tune_file import TUNE_FILE

# The files at the top of a run directory.
_RUN_TOP_FILES = (RUN_FILE, RESULTS_LOG, WRITER_LOCK, TUNE_FILE)


def run_owning(path: Path) -> Path | None:
    """The run directory whose own file `path` is (run.json, results.jsonl, a parquet file,
    a worker's file ...), or None: an output such as a report must never replace one."""
    target = Path(os.path.realpath(path))
    for depth, folder in enumerate(list(target.parents)[:3]):
        if (folder / RUN_FILE).is_file() and (folder / RESULTS_LOG).exists():
            return folder if depth > 0 or target.name in _RUN_TOP_FILES else None
    return None


def _started_key(run: Path) -> tuple[_dt.datetime, str]:
    try:
        info = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
        started = _dt.datetime.fromisoformat(info["started"])
        if started.tzinfo is None:
            started = started.astimezone()
    except (OSError, ValueError, KeyError, TypeError):
        started = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return started, run.name


def latest_run(root: Path) -> Path:
    """The most recently started run directory under `root`."""
    root = Path(root)
    try:
        runs = (
            [p for p in root.iterdir() if p.is_dir() and (p / RUN_FILE).is_file()]
            if root.is_dir()
            else []
        )
    except OSError as exc:
        raise InfercmpError(f"cannot list the runs under {root}: {exc}") from exc
    if not runs:
        raise InfercmpError(
            f"no infercmp runs under {root}; "
            "run 'infercmp bench MODEL' first or pass a run directory"
        )
    return max(runs, key=_started_key)
