"""infercmp's one way to write a file whole: a reader sees the old content or the new, never half.

Every file infercmp writes (run results, reports, the worker's result, cache manifests) goes
through `write_atomic`, so the rules live here once:

- the data goes to a temporary file beside the target, is fsynced, then renamed over it, and
  the directory is fsynced so the rename itself survives a power cut;
- a new file gets the mode any CLI gives it, ``0o666 & ~umask`` (``tempfile.mkstemp`` would
  make it 0600); a regular file being replaced keeps its own mode;
- only a regular file is ever replaced. A symlink is followed, so the file it points to is
  replaced and the link stays a link; anything else that is not a regular file (``/dev/null``,
  ``/dev/stdout``, a FIFO) is written through, in place, like a shell redirection would.

Reading goes through `open_regular`/`read_regular`: a FIFO or a device where infercmp expects
a file it wrote (a cache manifest, a run's tune.json) would block `open()` forever.

Standard library only: the worker imports this and must stay light.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Random bytes in the name of write_atomic's temporary file (is_temporary_of recognises it).
_TOKEN_BYTES = 6

Content = bytes | str | Callable[[BinaryIO], None]


def write_atomic(path: str | os.PathLike[str], content: Content) -> None:
    """Write `content` (bytes, text as UTF-8, or a function writing to a binary file) to `path`.

    Raises OSError as the system reports it (disk full, read-only, a directory at `path`); no
    temporary file is left behind then, and the old file is untouched.
    """
    target = Path(os.path.realpath(path))  # through symlinks: replace the file, keep the link
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if info is not None and not stat.S_ISREG(info.st_mode):
        # A device, FIFO or socket: never replace it, write into it as `> path` would.
        with open(target, "wb") as fh:
            _write(fh, content)
        return
    # Named before it exists, so whatever interrupts us (a signal just after the open), the
    # cleanup knows what to remove; 48 random bits make a clash with another writer moot.
    tmp = target.parent / f".{target.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp"
    try:
        # 0o666 minus the umask, as open() would; a replaced file keeps its own mode.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            if info is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(info.st_mode))
            _write(fh, content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def is_temporary_of(name: str, target_name: str) -> bool:
    """Whether the file `name` is write_atomic's temporary file for `target_name`: a write of
    it under way (or cut short), which another process may see beside the target."""
    return (
        re.fullmatch(rf"\.{re.escape(target_name)}\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp", name)
        is not None
    )


def _write(fh: BinaryIO, content: Content) -> None:
    if isinstance(content, str):
        fh.write(content.encode("utf-8"))
    elif isinstance(content, bytes):
        fh.write(content)
    else:
        content(fh)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in `path` durable; not possible (nor needed) everywhere."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file (through symlinks).

    Opened without blocking, so a FIFO with no writer cannot hang the caller, then checked:
    anything but a regular file raises OSError (EINVAL) naming the path.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file `path`; OSError for anything else (see `open_regular`)."""
    with open_regular(path) as fh:
        return fh.read()
