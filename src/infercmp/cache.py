"""Content-addressed artifact cache: ONNX files, engine plans and reference data, one dir each.

Layout under the root:

    entries/<kind>/<key>/          one committed entry: its files and `entry.json`
    aliases/<kind>/<alias>.json    a cheap key pointing at an entry's content key
    staging/                       entries being written (renamed into place when complete)
    locks/<kind>-<key>.lock        held while a process builds an entry, so two do not race
    timing/                        persisted TensorRT timing caches

An entry is committed by renaming a fully written staging dir into place, so a reader sees a
whole entry or none. `entry.json` lists every file with its size and sha256. `lookup` trusts
none of it: the manifest is validated (`Manifest`, and the metadata of its kind, `KINDS`),
the dir must hold exactly the listed files, every file its kind needs must be among them, and
every file is checksummed. An entry failing any check is dropped, so the caller rebuilds it.
A cache that cannot be written is one error line (`CacheUnwritable`), not a traceback.

Staging dirs carry the pid of the process writing them; one whose process is gone (a killed
export) is removed by the next writer and by `clear`.
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

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from infercmp.errors import InfercmpError, RunFailed

CACHE_ENV = "INFERCMP_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".infercmp") / "cache"
MANIFEST = "entry.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class FileRecord(BaseModel):
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


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class OnnxMeta(_Meta):
    exporter: str
    opset: StrictInt
    checked_shapes: dict[str, list[list[StrictInt]]]


class PrecisionOnnxMeta(_Meta):
    precision: str


class PlanMeta(_Meta):
    backend: str
    backend_version: str
    precision: str
    gpu: str
    strongly_typed: StrictBool


class ReferenceMeta(_Meta):
    model: str
    experiment: list[list[StrictInt]]
    label: str


@dataclass(frozen=True)
class EntryKind:
    """What an entry of one kind must hold for its reader (export.py, build.py) to use it."""

    files: tuple[str, ...]
    meta: type[_Meta]


# The file names are those export.py and build.py write (test_cache checks they agree).
KINDS: dict[str, EntryKind] = {
    "onnx": EntryKind(("model.onnx", "parity.npz", "export.log"), OnnxMeta),
    "onnx-precision": EntryKind(("model.onnx",), PrecisionOnnxMeta),
    "plan": EntryKind(("engine.plan", "build.log"), PlanMeta),
    "reference": EntryKind(("reference.npz",), ReferenceMeta),
}
_ANY_KIND = EntryKind((), _Meta)

# Errors that mean "this cache cannot be written here", as opposed to a bug: one line for them.
_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_UNWRITABLE |= {errno.ENOTDIR, errno.EISDIR}
# Staging entries: stage-<pid>-..., commit-<pid>-..., trash-<pid>-...
_STAGED = re.compile(r"^(?:stage|commit|trash)-(\d+)-")


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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(material: Any) -> str:
    """A stable hex key of JSON-able `material` (sorted keys, so dict order does not matter)."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        return self.path / name

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


class ArtifactCache:
    """The artifact cache rooted at `root` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise InfercmpError(
                f"the artifact cache {self.root} is a file, not a directory; give --cache-dir "
                "(or INFERCMP_CACHE_DIR) a directory"
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a full disk, a read-only cache or a file in the way into one clear line."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise CacheUnwritable(
                f"cannot write the artifact cache at {self.root}: {exc.strerror}{where}; free "
                "space, make it writable, or choose another with --cache-dir"
            ) from exc

    # -- paths ---------------------------------------------------------------------------
    def _entry_dir(self, kind: str, key: str) -> Path:
        _check_name(kind)
        _check_name(key)
        return self.root / "entries" / kind / key

    @property
    def timing_dir(self) -> Path:
        return self.root / "timing"

    # -- reading -------------------------------------------------------------------------
    def lookup(self, kind: str, key: str) -> CacheEntry | None:
        """The entry `kind/key` if present and intact; a damaged one is removed (None)."""
        path = self._entry_dir(kind, key)
        entry = _read_entry(kind, key, path)
        if entry is None or not _files_intact(entry):
            if path.exists():
                self._discard(path)
            return None
        return entry

    def resolve_alias(self, kind: str, alias: str) -> str | None:
        _check_name(alias)
        try:
            data = json.loads((self.root / "aliases" / kind / f"{alias}.json").read_text())
            key = data["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return key if isinstance(key, str) else None

    def lookup_alias(self, kind: str, alias: str) -> CacheEntry | None:
        key = self.resolve_alias(kind, alias)
        return self.lookup(kind, key) if key else None

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
            self._remove_stale_staging()
            path = Path(tempfile.mkdtemp(dir=base, prefix=f"stage-{os.getpid()}-"))
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)

    def _remove_stale_staging(self) -> None:
        """Remove what killed processes left in staging/; a live writer's dirs are kept."""
        base = self.root / "staging"
        for path in base.iterdir() if base.is_dir() else ():
            owner = _STAGED.match(path.name)
            if owner is None or not _process_alive(int(owner.group(1))):
                shutil.rmtree(path, ignore_errors=True)

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
        moving = staged.parent / f"commit-{os.getpid()}-{uuid.uuid4().hex}"
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

    def set_alias(self, kind: str, alias: str, key: str) -> None:
        _check_name(alias)
        with self._writing():
            _atomic_write_text(
                self.root / "aliases" / kind / f"{alias}.json", json.dumps({"key": key}) + "\n"
            )

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on `kind/key` so concurrent builds of one entry serialise."""
        _check_name(kind)
        _check_name(key)
        path = self.root / "locks" / f"{kind}-{key}.lock"
        with self._writing():
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(path, "a+")  # noqa: SIM115 -- closed by the with below
        with lock_file as f:
            try:
                import fcntl
            except ImportError:  # Windows: entries stay atomic, builds may just repeat
                yield
                return
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def remove(self, kind: str, key: str) -> None:
        path = self._entry_dir(kind, key)
        if path.exists():
            self._discard(path)

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (of `kind`, if given), its aliases and stale staging dirs.

        Returns the number of entries removed.
        """
        self._remove_stale_staging()
        removed = 0
        for entry in self.entries(kind):
            self._discard(entry.path)
            removed += 1
        shutil.rmtree(self.root / "aliases" / kind if kind else self.root / "aliases", True)
        if kind is None:
            shutil.rmtree(self.root / "entries", ignore_errors=True)
            shutil.rmtree(self.timing_dir, ignore_errors=True)
        return removed

    def _discard(self, path: Path) -> None:
        """Move a dir out of the way atomically, then delete it: readers never see half of it."""
        trash = self.root / "staging" / f"trash-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
        except OSError:
            return  # someone else removed or replaced it, or the cache is read-only
        shutil.rmtree(trash, ignore_errors=True)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InfercmpError(f"invalid cache name {name!r}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _read_entry(kind: str, key: str, path: Path) -> CacheEntry | None:
    """The entry whose manifest is valid and complete for its kind, else None (damaged)."""
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST).read_bytes())
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
