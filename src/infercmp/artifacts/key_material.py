"""What the cache key of a model's artifact covers: the loaded module's fingerprint, the config,
the plugin's `cache_token()` and source files, the inputs it was made from, library versions.

Keys come from the module `load_pytorch_module()` actually returned
(`infercmp.workload.module.ModuleIdentity`), so a module that depends on anything outside the
plugin's files can never meet an artifact of another module. Changing what goes in here
changes every key: existing caches would be rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.workload.module import ModuleIdentity
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

_SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".toml")
_KEY_FORMAT = 2  # 2: keyed by the loaded module's fingerprint, no alias


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def versions() -> dict[str, str]:
    """The versions of the libraries an export depends on, and infercmp's."""
    return {d: _version(d) for d in ("torch", "onnx", "onnxscript", "infercmp")}


@functools.lru_cache(maxsize=64)
def _tree_hash(directory: str, mtimes: tuple[tuple[str, int], ...]) -> str:
    digest = hashlib.sha256()
    for rel, _ in mtimes:
        digest.update(rel.encode())
        digest.update(Path(directory, rel).read_bytes())
    return digest.hexdigest()


def _source_tree_hash(directory: Path) -> str:
    """Hash the source files under `directory` (memoised on their mtimes within a process)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(_SOURCE_SUFFIXES):
                continue
            path = Path(root, name)
            info = path.stat()
            if stat.S_ISREG(info.st_mode):  # a FIFO would hang the read
                found.append((str(path.relative_to(directory)), info.st_mtime_ns))
    return _tree_hash(str(directory), tuple(found))


def _plugin_dirs(plugin: ModelPlugin) -> list[Path]:
    dirs = []
    for cls in type(plugin).__mro__:
        if cls in (ModelPlugin, object):
            continue
        try:
            path = Path(inspect.getfile(cls)).resolve().parent
        except (TypeError, OSError):
            continue
        if path not in dirs:
            dirs.append(path)
    return dirs


def plugin_code(plugin: ModelPlugin) -> list[str]:
    """A hash of the source files of every directory defining the plugin's classes (its
    preprocess lives there)."""
    return [_source_tree_hash(d) for d in _plugin_dirs(plugin)]


def arrays_hash(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over the dtype, shape and bytes of each array."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}:{a.shape};".encode())
        digest.update(a.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def module_material(
    plugin: ModelPlugin, identity: ModuleIdentity, inputs: Sequence[np.ndarray], **options: Any
) -> dict[str, Any]:
    """What an artifact's key covers (see the module doc); `inputs`: the example it was made
    from; `options`: what the kind of artifact adds (its kind, exporter, experiment...)."""
    cls = type(plugin)
    token = getattr(plugin, "cache_token", None)
    return {
        "format": _KEY_FORMAT,
        "plugin": f"{cls.__module__}.{cls.__qualname__}",
        "config": plugin.config.model_dump(mode="json"),
        "token": token() if callable(token) else None,
        "tensors": identity.tensors,
        "structure": identity.structure,
        "code": identity.code,
        "inputs": arrays_hash(inputs),
        "versions": versions(),
        **options,
    }
