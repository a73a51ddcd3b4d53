"""The artifact cache: location, atomic commits, verification on read, concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from infercmp.cache import ArtifactCache, content_key, resolve_cache_dir
from infercmp.errors import InfercmpError


def _put(cache: ArtifactCache, key: str, payload: bytes, kind: str = "onnx", **meta):
    with cache.staging() as staged:
        (staged / "model.onnx").write_bytes(payload)
        return cache.store(kind, key, staged, meta)


def test_cache_dir_flag_beats_env_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv("INFERCMP_CACHE_DIR", raising=False)
    assert resolve_cache_dir(None) == Path(".infercmp/cache")
    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_content_key_ignores_dict_order():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_store_then_lookup_returns_the_files_and_meta(tmp_path):
    cache = ArtifactCache(tmp_path)
    stored = _put(cache, "k1", b"onnx bytes", model="tiny")
    found = cache.lookup("onnx", "k1")
    assert found is not None
    assert found.file("model.onnx").read_bytes() == b"onnx bytes"
    assert found.meta == {"model": "tiny"} == stored.meta
    assert found.files["model.onnx"]["size"] == len(b"onnx bytes")
    assert cache.lookup("onnx", "other") is None
    assert not list((tmp_path / "staging").iterdir())  # nothing left behind


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:-3]),  # truncated
        lambda p: p.write_bytes(b"X" + p.read_bytes()[1:]),  # altered, same size
        lambda p: p.unlink(),  # missing
    ],
    ids=["truncated", "altered", "missing"],
)
def test_a_damaged_entry_is_dropped_so_it_is_rebuilt(tmp_path, damage):
    cache = ArtifactCache(tmp_path)
    entry = _put(cache, "k1", b"0123456789" * 100)
    damage(entry.file("model.onnx"))
    assert cache.lookup("onnx", "k1") is None
    assert not entry.path.exists()
    assert _put(cache, "k1", b"fresh").file("model.onnx").read_bytes() == b"fresh"


def test_a_failed_write_leaves_no_entry(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RuntimeError), cache.staging() as staged:
        (staged / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    assert cache.lookup("onnx", "k1") is None
    assert not list((tmp_path / "staging").iterdir())


def test_the_first_commit_of_a_key_wins(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "k1", b"first")
    assert _put(cache, "k1", b"second").file("model.onnx").read_bytes() == b"first"


def test_aliases_point_at_content_keys(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "content", b"x")
    assert cache.lookup_alias("onnx", "fast") is None
    cache.set_alias("onnx", "fast", "content")
    assert cache.resolve_alias("onnx", "fast") == "content"
    assert cache.lookup_alias("onnx", "fast").key == "content"


def test_names_cannot_escape_the_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(InfercmpError, match="invalid cache name"):
        cache.lookup("onnx", "../../etc")


def test_entries_and_clear(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "a", b"1")
    _put(cache, "b", b"22", kind="plan")
    cache.set_alias("onnx", "fast", "a")
    assert sorted((e.kind, e.key) for e in cache.entries()) == [("onnx", "a"), ("plan", "b")]
    assert cache.clear("plan") == 1
    assert [e.key for e in cache.entries()] == ["a"]
    assert cache.clear() == 1
    assert cache.entries() == []
    assert cache.resolve_alias("onnx", "fast") is None


def _racer(root: str, index: int) -> None:
    cache = ArtifactCache(Path(root))
    payload = str(index).encode() * 200_000
    with cache.lock("onnx", "shared"):
        if cache.lookup("onnx", "shared") is None:
            _put(cache, "shared", payload)
    _put(cache, "unlocked", payload)  # even without the lock an entry is whole


def test_concurrent_writers_leave_one_intact_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_racer, args=(str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ArtifactCache(tmp_path)
    for key in ("shared", "unlocked"):
        entry = cache.lookup("onnx", key)
        assert entry is not None
        data = entry.file("model.onnx").read_bytes()
        assert len(data) == 200_000 and len(set(data)) == 1
    assert not list((tmp_path / "staging").iterdir())
