"""The one TensorRT logger of the builder and the runtime: a `trt.ILogger` that records messages.

TensorRT says why a parse, a build or a deserialisation failed only through its logger (the call
returns None), so both keep what it said: the builder every message (written to build.log), the
runtime its warnings and errors, so a failure can say why in one line.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

ERROR_LEVELS = ("INTERNAL_ERROR", "ERROR")
#: What the runtime keeps: the levels that can explain a failure.
PROBLEM_LEVELS = (*ERROR_LEVELS, "WARNING")


class TrtLog:
    """The messages one TensorRT logger received (those of `keep`'s levels; None: all)."""

    def __init__(self, keep: Collection[str] | None = None) -> None:
        self.keep = keep
        self.lines: list[str] = []
        self._errors: list[str] = []

    def add(self, severity: str, message: str) -> None:
        if self.keep is not None and severity not in self.keep:
            return
        self.lines.append(f"[{severity}] {message}")
        if severity in ERROR_LEVELS:
            self._errors.append(message)

    def errors(self) -> list[str]:
        return list(self._errors)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def make_logger(trt: Any, log: TrtLog | None = None) -> Any:
    """A `trt.ILogger` of module `trt` that hands every message to `log`.

    Without a `log`, a new one that keeps warnings and errors (what the runtime needs). The
    logger's `errors()` are the log's; `record` is the log itself.
    """
    record = TrtLog(keep=PROBLEM_LEVELS) if log is None else log

    class RecordingLogger(trt.ILogger):  # made per module: tensorrt or tensorrt_rtx_bindings
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 needs the base initialised explicitly
            self.record = record

        def log(self, severity: Any, msg: str) -> None:  # TensorRT's callback
            record.add(getattr(severity, "name", str(severity)), str(msg))

        def errors(self) -> list[str]:
            return record.errors()

    return RecordingLogger()
