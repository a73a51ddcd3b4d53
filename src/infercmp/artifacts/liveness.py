"""Which processes use the artifact cache and which of its writers are alive, judged by flock.

The kernel releases a `flock` when its holder dies, in any PID namespace and, on file systems
that support it, across hosts; a pid proves nothing. Each process writing to a cache holds
`locks/writer-<token>.lock` exclusively for its life and names its staging dirs with the token,
so a dir whose writer lock is free was left by a killed process. Every process using a cache
holds `in-use.lock` shared for its life; `clear` takes it exclusively (`exclusive_use`), so it
refuses while a bench runs. At exit a process removes what it staged and did not commit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from infercmp.core.errors import RunFailed

try:
    import fcntl
except ImportError:  # Windows: entries stay atomic; liveness falls back to "alive"
    fcntl = None  # type: ignore[assignment]

IN_USE_LOCK = "in-use.lock"


class CacheBusy(RunFailed):
    """`clear` while another process uses the cache: exit 1, try again when it has finished."""


@contextlib.contextmanager
def flocked(handle: Any) -> Iterator[None]:
    """Hold an exclusive flock on the open file `handle` (without fcntl: no lock, builds may
    just repeat; entries stay atomic)."""
    if fcntl is None:
        yield
        return
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


# The open files holding this process's locks, per (pid, directory): forked children get their
# own (the parent's stay held by the parent).
_WRITERS: dict[tuple[int, str], tuple[str, IO[bytes]]] = {}
_IN_USE: dict[tuple[int, str], IO[bytes] | None] = {}
_HELD_LOCK = threading.Lock()  # an export thread and the main thread may both start writing


def writer_token(root: Path) -> str:
    """This process's writer token in the cache `root`; its lock is held until the process ends."""
    key = (os.getpid(), str(root.resolve()))
    with _HELD_LOCK:
        return _WRITERS[key][0] if key in _WRITERS else _new_writer(root, key)


def _new_writer(root: Path, key: tuple[int, str]) -> str:
    (root / "locks").mkdir(parents=True, exist_ok=True)
    while True:
        token = uuid.uuid4().hex
        path = root / "locks" / f"writer-{token}.lock"
        held = open(path, "a+b")  # noqa: SIM115 -- held for the life of the process
        if fcntl is None:
            break
        fcntl.flock(held, fcntl.LOCK_EX)
        # Between open and flock another process may have found the new file unlocked and
        # unlinked it (`remove_if_unlocked`): a lock on an unlinked file guards nothing, and
        # this writer's staging dirs would read as dead. Hold a lock on the file at the path.
        if _same_file(held, path):
            break
        held.close()
    _WRITERS[key] = (token, held)
    return token


def _same_file(held: IO[bytes], path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(held.fileno())
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def cache_writer_alive(root: Path, token: str | None, pid: str | None) -> bool:
    """The writer that staged a dir is alive: its lock is held (or, for a dir named by pid
    before the writer locks, its process exists)."""
    if token is None:  # written by an infercmp from before the writer locks
        return _process_alive(int(pid or 0))
    return _lock_held(root / "locks" / f"writer-{token}.lock")


def _lock_held(path: Path) -> bool:
    """Some open file holds a flock on `path` (this process's own lock counts)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep the dir
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_if_unlocked(path: Path) -> None:
    """Unlink a writer's lock file that no process holds any more."""
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except OSError:
        pass  # held: its writer is alive
    finally:
        os.close(fd)


def hold_in_use(root: Path) -> None:
    """Hold `in-use.lock` shared for the life of this process (best effort: a read-only cache
    cannot be cleared anyway)."""
    key = (os.getpid(), str(root.resolve()))
    with _HELD_LOCK:
        if key in _IN_USE or fcntl is None or not root.is_dir():
            return
        _IN_USE[key] = _open_in_use(root)


def _open_in_use(root: Path) -> IO[bytes] | None:
    try:
        held: IO[bytes] | None = open(root / IN_USE_LOCK, "a+b")  # noqa: SIM115 -- for life
    except OSError:
        held = None
    if held is not None:
        fcntl.flock(held, fcntl.LOCK_SH)
    return held


@contextlib.contextmanager
def exclusive_use(root: Path) -> Iterator[None]:
    """This process alone uses the cache (for `clear`), else `CacheBusy`."""
    hold_in_use(root)
    held = _IN_USE.get((os.getpid(), str(root.resolve())))
    if held is None or fcntl is None:
        yield
        return
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(held, fcntl.LOCK_SH)  # a failed conversion may have dropped the shared lock
        raise CacheBusy(
            f"the artifact cache {root} is in use by another infercmp process (a bench, tune "
            "or export); clear it once that has finished"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(held, fcntl.LOCK_SH)


@atexit.register
def _remove_own_staging() -> None:
    """At exit, remove what this process staged and did not commit: a signal may end the run
    while an export thread is still writing."""
    for (pid, root), (token, held) in list(_WRITERS.items()):
        if pid != os.getpid():
            continue
        for path in Path(root, "staging").glob(f"*-w{token}-*"):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(root, "locks", f"writer-{token}.lock").unlink()
        held.close()
        del _WRITERS[pid, root]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
