"""The run's writer lock: the one process writing a run holds an exclusive `flock` on writer.lock.

A lock, not a pid, because a pid means nothing in another PID namespace or on another host sharing
the directory. A run that says "running" while nobody holds the lock was abandoned.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.store.schema import WRITER_LOCK

# How long a writer retries a lock held for an instant by a reader testing it (`run_writer_alive`).
_LOCK_PATIENCE_S = 0.5


def hold_writer_lock(path: Path) -> BinaryIO:
    """Take the run's writer lock, held until the returned file is closed (or the process ends).

    Another process holding it is one line (exit 2): two writers would interleave their
    commits and worker directories.
    """
    # O_NONBLOCK: a FIFO planted at that name must not hang the open (it fails with ENXIO).
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        lock = os.fdopen(os.open(path / WRITER_LOCK, flags, 0o666), "ab")
    except OSError as exc:
        raise RunFailed(f"cannot write the run directory {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(lock.fileno()).st_mode):
        lock.close()
        raise InfercmpError(f"{path / WRITER_LOCK} is not a regular file; the run is damaged")
    deadline = time.monotonic() + _LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            lock.close()
            raise _written_elsewhere(path) from None
        except OSError as exc:
            lock.close()
            raise RunFailed(
                f"cannot lock {path / WRITER_LOCK}: {exc.strerror or exc}; the file system may "
                "not support locks"
            ) from exc


def _written_elsewhere(path: Path) -> InfercmpError:
    return InfercmpError(
        f"{path} is being written by another infercmp process (it holds {WRITER_LOCK}); "
        "wait for it to end or stop it, then resume the run"
    )


def check_not_written(path: Path) -> None:
    """One line if another process writes the run now (before preparing work for it; the
    lock itself is what keeps a second writer out)."""
    if run_writer_alive(path):
        raise _written_elsewhere(Path(path))


def run_writer_alive(path: Path) -> bool | None:
    """Whether a process holds the run's writer lock; None where that cannot be tested (a run
    written before the lock existed, or a lock file this user cannot open)."""
    try:
        fd = os.open(Path(path) / WRITER_LOCK, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False
