"""Content-addressed artifact cache: ONNX files, engine plans and reference data, one dir each.

Layout under the root:

    entries/<kind>/<key>/          one committed entry: its files and `entry.json`
    aliases/<kind>/<alias>.json    a cheap key pointing at an entry's content key
    staging/                       entries being written (renamed into place when complete)
    locks/<kind>-<key>.lock        held while a process builds an entry, so two do not race
    timing/                        persisted TensorRT timing caches

An entry is committed by renaming a fully written staging dir into place, so a reader sees a
whole entry or none. `entry.json` lists every file with its size and sha256; `lookup` checks
them and drops an entry whose files were truncated or altered, so the caller rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infercmp.errors import InfercmpError

CACHE_ENV = "INFERCMP_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".infercmp") / "cache"
MANIFEST = "entry.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


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

    # -- paths ---------------------------------------------------------------------------
    def _entry_dir(self, kind: str, key: str) -> Path:
        _check_name(kind)
        _check_name(key)
        return self.root / "entries" / kind / key

    @property
    def timing_dir(self) -> Path:
        return self.root / "timing"

    # -- reading -------------------------------------------------------------------------
    def lookup(self, kind: str, key: str, *, verify: bool = True) -> CacheEntry | None:
        """The entry `kind/key` if present and intact; a damaged one is removed (None)."""
        path = self._entry_dir(kind, key)
        entry = _read_entry(kind, key, path)
        if entry is None:
            if path.exists():
                self._discard(path)
            return None
        if verify and not _files_intact(entry):
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
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=base, prefix="stage-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def store(
        self, kind: str, key: str, staged: Path, meta: dict[str, Any] | None = None
    ) -> CacheEntry:
        """Commit the files in `staged` as entry `kind/key`, atomically; returns the entry.

        If another process committed the same key first, its entry wins and is returned.
        """
        final = self._entry_dir(kind, key)
        files = {}
        for path in sorted(staged.iterdir()):
            if path.name == MANIFEST or not path.is_file():
                continue
            files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
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
        moving = staged.parent / f"commit-{uuid.uuid4().hex}"
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
        assert entry is not None
        return entry

    def set_alias(self, kind: str, alias: str, key: str) -> None:
        _check_name(alias)
        _atomic_write_text(
            self.root / "aliases" / kind / f"{alias}.json", json.dumps({"key": key}) + "\n"
        )

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on `kind/key` so concurrent builds of one entry serialise."""
        _check_name(kind)
        _check_name(key)
        path = self.root / "locks" / f"{kind}-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
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
        """Remove every entry (of `kind`, if given), and its aliases; returns the count."""
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
        trash = self.root / "staging" / f"trash-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, trash)
        except OSError:
            return  # someone else removed or replaced it
        shutil.rmtree(trash, ignore_errors=True)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InfercmpError(f"invalid cache name {name!r}")


def _read_entry(kind: str, key: str, path: Path) -> CacheEntry | None:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_VERSION or data.get("key") != key:
            return None
        return CacheEntry(
            kind=kind,
            key=key,
            path=path,
            created=float(data["created"]),
            files=dict(data["files"]),
            meta=dict(data.get("meta") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files_intact(entry: CacheEntry) -> bool:
    for name, info in entry.files.items():
        path = entry.path / name
        try:
            if path.stat().st_size != info["size"]:
                return False
            if file_sha256(path) != info["sha256"]:
                return False
        except OSError:
            return False
    return True
