"""Stop signals during a run: SIGINT, SIGTERM, SIGHUP and SIGQUIT become one `Interrupted`, so
what finished is kept and the run is marked interrupted instead of dying mid-write."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(BaseException):
    """The parent was asked to stop (SIGINT or SIGTERM).

    A BaseException, like KeyboardInterrupt, so the many `except Exception` in exporters and
    runtimes (and our own) cannot swallow it or report it as their own failure.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


#: The signals that stop a run cleanly: finished results are saved and the run is marked.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)


def stop_on_signals() -> contextlib.AbstractContextManager[None]:
    """Turn SIGINT, SIGTERM, SIGHUP and SIGQUIT into one `Interrupted`, so finished results are
    kept and saved. Only the first signal raises: a second one (an impatient Ctrl-C) arriving
    while the first is being handled must not cut the saving short."""
    return _stop_on_signals()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    raised: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        if not raised:
            raised.append(signal.Signals(signum).name)
            raise Interrupted(raised[0])

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
