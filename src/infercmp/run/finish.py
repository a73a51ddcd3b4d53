"""How a run's end is marked in its store (complete, interrupted, failed), and a disk that
refuses the writes said in one line: the results already committed stay saved."""

from __future__ import annotations

import contextlib
from typing import Literal

from infercmp.core.errors import RunFailed
from infercmp.store.run_store import RunStore


def finish_complete(store: RunStore, detail: str | None = None) -> None:
    """Mark a run complete; a disk that refuses it is one line (the results are saved)."""
    try:
        store.finish("complete", detail)
    except OSError as exc:
        raise write_failed(store, exc) from exc


def finish_interrupted(store: RunStore, signame: str) -> None:
    """Mark a run stopped by a signal; what finished before it stays."""
    finish(store, "interrupted", f"stopped by {signame}; finished combinations are kept")


def finish_failed(store: RunStore, exc: BaseException) -> None:
    """Mark a run that stopped on an error outside any combination (say, preparing a later
    --batch auto step): it must not read as running, then as killed."""
    finish(store, "failed", f"{type(exc).__name__}: {exc}")


def finish(
    store: RunStore, status: Literal["complete", "interrupted", "failed"], detail: str
) -> None:
    """Mark the run's end; on a disk that refuses writes run.json keeps status "running"."""
    with contextlib.suppress(OSError):
        store.finish(status, detail)


def os_error_text(exc: OSError) -> str:
    """An OSError in a few words: the file it concerns and what went wrong there."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {text}" if exc.filename else text


def write_failed(store: RunStore, exc: OSError) -> RunFailed:
    """The one-line error of a run whose files cannot be written, counting what is saved."""
    saved = len(store.results)
    return RunFailed(
        f"cannot write the run's files ({os_error_text(exc)}); {saved} finished combination(s) "
        f"are saved in {store.path}"
    )
