"""Content-addressed artifact cache: ONNX files, engine plans and reference data, one dir each.

Layout under the root:

    CACHEDIR.TAG                   written when infercmp creates the cache (see below)
    in-use.lock                    shared-locked by every process using the cache
    entries/<kind>/<key>/          one committed entry: its files and `entry.json`
    staging/                       entries being written (renamed into place when complete)
    locks/<kind>-<key>.lock        held while a process builds an entry, so two do not race
    timing/                        persisted TensorRT timing caches

An entry is committed by renaming a fully written staging dir into place, so a reader sees a
whole entry or none. `entry.json` lists every file with its size and sha256. `lookup` trusts
none of it: the manifest is validated (`Manifest`, and the metadata of its kind, `KINDS`),
the dir must hold exactly the listed files, every file its kind needs must be among them, and
every file is checksummed. An entry failing any check is dropped, so the caller rebuilds it.
Each producer registers the kinds it writes (`register_kind`: the ONNX export, the precision
conversion, the reference, TensorRT's plan); the cache itself knows none of them.
A cache that cannot be written is one error line (`CacheUnwritable`), not a traceback. Files
are read only if they are regular files (`infercmp.core.files.read_regular`): a FIFO would hang.

infercmp deletes only what it can prove it made. It writes `CACHEDIR.TAG` (the Cache Directory
Tagging Specification's file, which backup tools also honour) into the directory it creates; a
non-empty directory without one is refused, so `--cache-dir .` cannot touch a user's files.
A cache made before the tag existed is adopted only when every file in it has a name and place
infercmp gives (`_made_by_infercmp`): one stray user file and it is refused, with what to do.
Even in a tagged cache, `clear` removes only entries, staging dirs, timing caches and aliases
by the names infercmp gives them, never a whole directory.

Liveness is judged by `flock` (`infercmp.artifacts.liveness`), never by a pid. Each process
writing to the cache holds `locks/writer-<token>.lock` exclusively and names its staging dirs
`stage-w<token>-...`; a dir whose writer lock is free was left by a killed process and the next
writer or `clear` removes it. At exit a process removes its own leftovers (an export thread
still running when a signal ends the run). Every process using the cache holds `in-use.lock`
shared for as long as it lives; `clear` takes it exclusively, so it refuses while a bench runs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infercmp.artifacts.liveness import (
    IN_USE_LOCK,
    cache_writer_alive,
    exclusive_use,
    flocked,
    hold_in_use,
    remove_if_unlocked,
    writer_token,
)
from infercmp.core.errors import InfercmpError, RunFailed
from infercmp.core.files import is_temporary_of, open_regular, read_regular, write_atomic

CACHE_ENV = "INFERCMP_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".infercmp") / "cache"
MANIFEST = "entry.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by infercmp: its artifact cache.\n"
    "# infercmp deletes only what it made, and only in a directory holding this file.\n"
)


class FileRecord(BaseModel):
    """One file of an entry, as its manifest lists it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """`entry.json`, as `store` writes it; anything else makes the entry damaged."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal[1]
    kind: str
    key: str
    created: float
    files: dict[str, FileRecord]
    meta: dict[str, Any]


class EntryMeta(BaseModel):
    """An entry's metadata; a kind's subclass names the fields its producer reads back."""

    model_config = ConfigDict(extra="allow", strict=True)


@dataclass(frozen=True)
class EntryKind:
    """What an entry of one kind must hold for its producer to use it again."""

    files: tuple[str, ...]
    meta: type[EntryMeta]


# Filled by the producers (`register_kind`), each with the file names it writes.
KINDS: dict[str, EntryKind] = {}
_ANY_KIND = EntryKind((), EntryMeta)


def register_kind(kind: str, files: tuple[str, ...], meta: type[EntryMeta]) -> EntryKind:
    """Declare what an entry of `kind` holds: the files its producer writes and its metadata.

    Each producer calls this once, when it is imported; an entry of a kind no module of this
    process registered is checked for its manifest and checksums only. A second registration
    of one kind must say the same (a module imported again does).
    """
    _check_name(kind)
    entry_kind = EntryKind(tuple(files), meta)
    known = KINDS.get(kind)
    if known is not None and (known.files, known.meta.__qualname__) != (
        entry_kind.files,
        meta.__qualname__,
    ):
        raise ValueError(f"cache entry kind {kind!r} is already registered with other files")
    KINDS[kind] = entry_kind
    return entry_kind


# Errors that mean "this cache cannot be written here", as opposed to a bug: one line for them.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
UNWRITABLE |= {errno.ENOTDIR, errno.EISDIR}
# Staging entries: stage-w<token>-..., commit-w<token>-..., trash-w<token>-... (the writer's
# lock is locks/writer-<token>.lock); stage-<pid>-... from infercmp before the lock existed.
_STAGED = re.compile(r"^(?:stage|commit|trash)-(?:w([0-9a-f]{32})|(\d+))-")
_WRITER_LOCK = re.compile(r"^writer-([0-9a-f]{32})\.lock$")
# What an infercmp cache's top level holds ("aliases": infercmp before entries were keyed by
# the loaded module); anything else there is someone else's.
_TOP_LEVEL = {MARKER, IN_USE_LOCK, "entries", "aliases", "staging", "locks", "timing"}


class CacheUnwritable(RunFailed):
    """The cache's disk is full, read-only or not a directory: exit 1 with what to do."""


def resolve_cache_dir(cli_value: str | None) -> Path:
    """The cache root: the `--cache-dir` flag, else $INFERCMP_CACHE_DIR, else `.infercmp/cache`."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_CACHE_DIR


def file_sha256(path: Path) -> str:
    """The sha256 of the regular file `path`, read in chunks."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(material: Any) -> str:
    """A stable hex key of JSON-able `material` (sorted keys, so dict order does not matter)."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    """One committed, verified entry: `path / name` for each of `files`, and its metadata."""

    kind: str
    key: str
    path: Path
    created: float
    files: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        """The path of the entry's file `name`."""
        return self.path / name

    @property
    def size(self) -> int:
        """The bytes of the entry's files."""
        return sum(int(f["size"]) for f in self.files.values())


class ArtifactCache:
    """The artifact cache rooted at `root` (created on first write, with its `MARKER`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _check_utf8(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise InfercmpError(
                f"the artifact cache {self.root} is a file, not a directory; give --cache-dir "
                "(or INFERCMP_CACHE_DIR) a directory"
            )
        self._check_ours()
        self._claimed = False

    def _check_ours(self) -> None:
        """Refuse a non-empty directory that infercmp cannot prove it made (see the module doc)."""
        if _has_marker(self.root) or _made_by_infercmp(self.root):
            return
        raise InfercmpError(
            f"{self.root} is not an infercmp artifact cache: it is not empty and has no "
            f"{MARKER}, and infercmp never writes into or deletes from a directory it did not "
            "create; give --cache-dir (or INFERCMP_CACHE_DIR) a new or empty directory, or, if "
            f"an older infercmp made this cache, move the files it did not make out of it"
        )

    def _claim(self) -> None:
        """Before the first write: create the root with its marker (adopting an old cache)."""
        if self._claimed:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if not _has_marker(self.root):
            self._check_ours()  # files may have appeared since the cache was opened
            write_atomic(self.root / MARKER, MARKER_TEXT)
        self._claimed = True
        hold_in_use(self.root)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a full disk, a read-only cache or a file in the way into one clear line."""
        try:
            self._claim()
            yield
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                raise
            raise self.unwritable(exc) from exc

    def unwritable(self, exc: OSError) -> CacheUnwritable:
        """The one line for an OSError in `UNWRITABLE` met while writing into the cache."""
        where = f" ({exc.filename})" if exc.filename else ""
        return CacheUnwritable(
            f"cannot write the artifact cache at {self.root}: {exc.strerror}{where}; free "
            "space, make it writable, or choose another with --cache-dir"
        )

    # -- paths ---------------------------------------------------------------------------
    def _entry_dir(self, kind: str, key: str) -> Path:
        _check_name(kind)
        _check_name(key)
        return self.root / "entries" / kind / key

    @property
    def timing_dir(self) -> Path:
        """Where TensorRT's timing caches persist."""
        return self.root / "timing"

    # -- reading -------------------------------------------------------------------------
    def lookup(self, kind: str, key: str) -> CacheEntry | None:
        """The entry `kind/key` if present and intact; a damaged one is removed (None)."""
        path = self._entry_dir(kind, key)
        hold_in_use(self.root)
        entry = _read_entry(kind, key, path)
        if entry is None or not _files_intact(entry):
            if path.exists():
                self._discard(path)
            return None
        return entry

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        """Every committed entry (not verified: listing must stay cheap), oldest first."""
        found = []
        base = self.root / "entries"
        kinds = [kind] if kind else sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        for k in kinds:
            kind_dir = base / k
            if not kind_dir.is_dir():
                continue
            for path in kind_dir.iterdir():
                entry = _read_entry(k, path.name, path)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.created)

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private empty dir to write an entry's files into; removed afterwards unless stored."""
        base = self.root / "staging"
        with self._writing():
            base.mkdir(parents=True, exist_ok=True)
            token = writer_token(self.root)
            self._remove_stale_staging()
            path = Path(tempfile.mkdtemp(dir=base, prefix=f"stage-w{token}-"))
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)

    def _remove_stale_staging(self) -> None:
        """Remove what killed writers left in staging/ (their lock is free); nothing else."""
        base = self.root / "staging"
        for path in sorted(base.iterdir()) if base.is_dir() else ():
            owner = _STAGED.match(path.name)
            if owner is not None and not cache_writer_alive(self.root, *owner.groups()):
                shutil.rmtree(path, ignore_errors=True)
        for path in (self.root / "locks").glob("writer-*.lock"):
            if _WRITER_LOCK.match(path.name):
                remove_if_unlocked(path)

    def store(
        self, kind: str, key: str, staged: Path, meta: dict[str, Any] | None = None
    ) -> CacheEntry:
        """Commit the files in `staged` as entry `kind/key`, atomically; returns the entry.

        If another process committed the same key first, its entry wins and is returned.
        """
        with self._writing():
            return self._store(kind, key, staged, meta)

    def _store(self, kind: str, key: str, staged: Path, meta: dict[str, Any] | None) -> CacheEntry:
        final = self._entry_dir(kind, key)
        files = {}
        for path in sorted(staged.iterdir()):
            if path.name == MANIFEST or not path.is_file():
                continue
            files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        # What the writer forgot is a bug in infercmp: fail now, not at every later lookup.
        expected = KINDS.get(kind, _ANY_KIND)
        missing = [name for name in expected.files if name not in files]
        if missing:
            raise ValueError(f"cache entry {kind}/{key} lacks {', '.join(missing)}")
        expected.meta.model_validate(meta or {})
        manifest = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "key": key,
            "created": time.time(),
            "files": files,
            "meta": meta or {},
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        # Rename a copy of the staging dir so the caller's context manager can still clean up.
        token = writer_token(self.root)
        moving = staged.parent / f"commit-w{token}-{uuid.uuid4().hex}"
        os.rename(staged, moving)
        staged.mkdir()
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            existing = self.lookup(kind, key)
            if existing is not None:
                shutil.rmtree(moving, ignore_errors=True)
                return existing
        try:
            os.rename(moving, final)
        except OSError:
            # Lost a race to another writer between the check and the rename.
            shutil.rmtree(moving, ignore_errors=True)
            existing = self.lookup(kind, key)
            if existing is None:
                raise
            return existing
        entry = _read_entry(kind, key, final)
        assert entry is not None, "a manifest written above is valid"
        return entry

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on `kind/key` so concurrent builds of one entry serialise."""
        _check_name(kind)
        _check_name(key)
        path = self.root / "locks" / f"{kind}-{key}.lock"
        with self._writing():
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(path, "a+")  # noqa: SIM115 -- closed by the with below
        with lock_file as f, flocked(f):
            yield

    def remove(self, kind: str, key: str) -> None:
        """Remove the entry `kind/key`, if present."""
        path = self._entry_dir(kind, key)
        if path.exists():
            self._discard(path)

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (of `kind`, if given) and what killed writers left in staging/.

        Refused (`CacheBusy`) while another process uses the cache. Returns the number of
        entries removed. Only what infercmp names is removed; a user's file is left alone.
        """
        if not self.root.is_dir():
            return 0
        with self._writing(), exclusive_use(self.root):
            self._remove_stale_staging()
            removed = 0
            base = self.root / "entries"
            for kind_dir in [base / kind] if kind else _subdirs(base):
                for path in _subdirs(kind_dir):
                    if (path / MANIFEST).is_file():  # committed by infercmp, damaged or not
                        self._discard(path)
                        removed += 1
                _remove_empty(kind_dir)
            for alias_dir in _subdirs(self.root / "aliases"):
                if kind is None or alias_dir.name == kind:
                    for path in alias_dir.glob("*.json"):
                        path.unlink(missing_ok=True)
                    _remove_empty(alias_dir)
            if kind is None:
                for path in self.timing_dir.glob("*.cache"):
                    path.unlink(missing_ok=True)
                for path in (base, self.root / "aliases", self.timing_dir):
                    _remove_empty(path)
            return removed

    def _discard(self, path: Path) -> None:
        """Move a dir out of the way atomically, then delete it: readers never see half of it."""
        try:
            base = self.root / "staging"
            base.mkdir(parents=True, exist_ok=True)
            trash = base / f"trash-w{writer_token(self.root)}-{uuid.uuid4().hex}"
            os.rename(path, trash)
        except OSError:
            return  # someone else removed or replaced it, or the cache is read-only
        shutil.rmtree(trash, ignore_errors=True)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InfercmpError(f"invalid cache name {name!r}")


def _check_utf8(root: Path) -> None:
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(root).decode("utf-8", "backslashreplace")
        raise InfercmpError(
            f"the artifact cache directory name '{shown}' is not valid UTF-8; give --cache-dir "
            "(or INFERCMP_CACHE_DIR) a UTF-8 name"
        ) from None


# -- what infercmp made ----------------------------------------------------------------------
def _has_marker(root: Path) -> bool:
    try:
        return read_regular(root / MARKER).decode("utf-8", "replace") == MARKER_TEXT
    except OSError:
        return False


def _made_by_infercmp(root: Path) -> bool:
    """`root` is absent, empty, or holds only what an infercmp cache holds, by name and place.

    The test an untagged directory must pass to be adopted as a cache made by an infercmp from
    before `MARKER`: every top-level name is one infercmp uses, every entry dir has a manifest,
    every other file has the name infercmp gives it.
    """
    if not root.is_dir():
        return not root.exists()
    try:
        for top in root.iterdir():
            if is_temporary_of(top.name, MARKER) and top.is_file():
                continue  # a process creating this cache right now
            if top.name not in _TOP_LEVEL:
                return False
            if top.name in (MARKER, IN_USE_LOCK):
                continue
            if not top.is_dir() or not all(_made_in(top.name, child) for child in top.iterdir()):
                return False
    except OSError:
        return False
    return True


def _made_in(area: str, child: Path) -> bool:
    """`child` of `root/area` is one infercmp makes there."""
    name = child.name
    if area == "staging":
        return bool(_STAGED.match(name))
    if area == "locks":
        return name.endswith(".lock") and child.is_file()
    if area == "timing":
        return name.endswith((".cache", ".tmp")) and child.is_file()
    if not child.is_dir():
        return False
    if area == "entries":  # <kind>/<key>/ with a manifest
        return all(p.is_dir() and (p / MANIFEST).is_file() for p in child.iterdir())
    # aliases/<kind>/<alias>.json
    return all(p.is_file() and p.name.endswith((".json", ".tmp")) for p in child.iterdir())


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _remove_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (a user's file) or already gone
        path.rmdir()


def _read_entry(kind: str, key: str, path: Path) -> CacheEntry | None:
    """The entry whose manifest is valid and complete for its kind, else None (damaged)."""
    try:
        manifest = Manifest.model_validate_json(read_regular(path / MANIFEST))
        expected = KINDS.get(kind, _ANY_KIND)
        expected.meta.model_validate(manifest.meta)
    except (OSError, ValidationError):
        return None
    if manifest.kind != kind or manifest.key != key or not math.isfinite(manifest.created):
        return None
    if any(name not in manifest.files for name in expected.files):
        return None
    return CacheEntry(
        kind=kind,
        key=key,
        path=path,
        created=manifest.created,
        files={name: record.model_dump() for name, record in manifest.files.items()},
        meta=manifest.meta,
    )


def _files_intact(entry: CacheEntry) -> bool:
    """The dir holds exactly the listed files, each of its recorded size and sha256."""
    try:
        present = {p.name for p in entry.path.iterdir() if p.name != MANIFEST}
        if present != set(entry.files):
            return False  # an unlisted file (model.onnx under "files": {}) is never used
        for name, info in entry.files.items():
            path = entry.path / name
            if not path.is_file() or path.stat().st_size != info["size"]:
                return False
            if file_sha256(path) != info["sha256"]:
                return False
    except OSError:
        return False
    return True
