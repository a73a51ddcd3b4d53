"""The artifact cache: location, atomic commits, verification on read, concurrent writers."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from infercmp.artifacts import onnx_export  # noqa: F401 -- registers the onnx entry kind
from infercmp.artifacts.cache import (
    KINDS,
    MANIFEST,
    ArtifactCache,
    CacheUnwritable,
    content_key,
    resolve_cache_dir,
)
from infercmp.artifacts.liveness import CacheBusy
from infercmp.core.errors import InfercmpError


def _put(cache: ArtifactCache, key: str, payload: bytes, kind: str = "blob", **meta):
    """An entry of a kind infercmp does not define, so it needs no particular files or meta."""
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
    found = cache.lookup("blob", "k1")
    assert found is not None
    assert found.file("model.onnx").read_bytes() == b"onnx bytes"
    assert found.meta == {"model": "tiny"} == stored.meta
    assert found.files["model.onnx"]["size"] == len(b"onnx bytes")
    assert cache.lookup("blob", "other") is None
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
    assert cache.lookup("blob", "k1") is None
    assert not entry.path.exists()
    assert _put(cache, "k1", b"fresh").file("model.onnx").read_bytes() == b"fresh"


def test_a_failed_write_leaves_no_entry(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RuntimeError), cache.staging() as staged:
        (staged / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    assert cache.lookup("blob", "k1") is None
    assert not list((tmp_path / "staging").iterdir())


def test_the_first_commit_of_a_key_wins(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "k1", b"first")
    assert _put(cache, "k1", b"second").file("model.onnx").read_bytes() == b"first"


def test_names_cannot_escape_the_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(InfercmpError, match="invalid cache name"):
        cache.lookup("blob", "../../etc")


def test_entries_and_clear(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "a", b"1")
    _put(cache, "b", b"22", kind="other")
    assert sorted((e.kind, e.key) for e in cache.entries()) == [("blob", "a"), ("other", "b")]
    assert cache.clear("other") == 1
    assert [e.key for e in cache.entries()] == ["a"]
    assert cache.clear() == 1
    assert cache.entries() == []


def _racer(root: str, index: int) -> None:
    cache = ArtifactCache(Path(root))
    payload = str(index).encode() * 200_000
    with cache.lock("blob", "shared"):
        if cache.lookup("blob", "shared") is None:
            _put(cache, "shared", payload)
    _put(cache, "unlocked", payload)  # even without the lock an entry is whole


def test_a_cache_opened_while_another_process_writes_its_marker_is_ours(tmp_path):
    """The moment between write_atomic's temporary marker and its rename: before, a second
    process opening the new cache then refused it as a directory infercmp did not make (which
    made the racing-writers test below fail about one time in two on a loaded machine)."""
    being_made = tmp_path / "being-made"
    being_made.mkdir()
    (being_made / ".CACHEDIR.TAG.0123456789ab.tmp").write_text("Signature: 8a477f597d28d172")
    cache = ArtifactCache(being_made)
    _put(cache, "k", b"x")
    assert cache.lookup("blob", "k") is not None
    someone_elses = tmp_path / "someone-elses"
    someone_elses.mkdir()
    (someone_elses / ".CACHEDIR.TAG.tmp").write_text("not a name write_atomic gives")
    with pytest.raises(InfercmpError, match="is not an infercmp artifact cache"):
        ArtifactCache(someone_elses)


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
        entry = cache.lookup("blob", key)
        assert entry is not None
        data = entry.file("model.onnx").read_bytes()
        assert len(data) == 200_000 and len(set(data)) == 1
    assert not list((tmp_path / "staging").iterdir())


# --- a manifest is not trusted (issue 18, item 7) -------------------------------------------

ONNX_META = {"exporter": "dynamo", "opset": 20, "checked_shapes": {"example": [[1, 3, 8, 8]]}}


def _put_onnx(cache: ArtifactCache, key: str = "k1"):
    """An entry of kind onnx with the files and metadata export.py writes."""
    with cache.staging() as staged:
        for name in KINDS["onnx"].files:
            (staged / name).write_bytes(name.encode() * 10)
        return cache.store("onnx", key, staged, dict(ONNX_META, model="m"))


def _edit_manifest(entry, change) -> None:
    path = entry.path / MANIFEST
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: [],
        lambda m: "entry",
        lambda m: {**m, "files": {**m["files"], "model.onnx": "abc"}},  # a file entry a string
        lambda m: {**m, "files": {**m["files"], "model.onnx": {"size": "10"}}},
        lambda m: {**m, "meta": {}},
        lambda m: {**m, "meta": {**m["meta"], "opset": "20"}},
        lambda m: {**m, "meta": []},
        lambda m: {**m, "files": {}},  # would make an unverified model.onnx be used
        lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "parity.npz"}},
        lambda m: {**m, "format": 2},
        lambda m: {**m, "key": "k2"},
        lambda m: {**m, "created": "yesterday"},
        lambda m: {k: v for k, v in m.items() if k != "created"},
    ],
    ids=[
        "list",
        "string",
        "file entry a string",
        "file size a string",
        "meta empty",
        "meta opset a string",
        "meta a list",
        "files empty",
        "a needed file unlisted",
        "format",
        "key",
        "created a string",
        "created missing",
    ],
)
def test_a_hand_edited_manifest_drops_the_entry_for_a_rebuild(tmp_path, change):
    cache = ArtifactCache(tmp_path)
    entry = _put_onnx(cache)
    _edit_manifest(entry, change)
    assert cache.entries() == []  # listing skips it without a traceback
    assert cache.lookup("onnx", "k1") is None
    assert not entry.path.exists()
    assert _put_onnx(cache).file("model.onnx").is_file()  # and it is rebuilt


def test_a_file_in_the_entry_that_the_manifest_does_not_list_drops_it(tmp_path):
    cache = ArtifactCache(tmp_path)
    entry = _put_onnx(cache)
    (entry.path / "model.onnx.data").write_bytes(b"weights nobody checksummed")
    assert cache.lookup("onnx", "k1") is None


def test_the_files_each_kind_needs_are_the_ones_export_and_build_write():
    from infercmp.artifacts import onnx_export as export
    from infercmp.artifacts import reference
    from infercmp.engines.tensorrt import build

    assert KINDS["onnx"].files == (export.ONNX_FILE, export.PARITY_FILE, export.LOG_FILE)
    assert KINDS["onnx-precision"].files == (export.ONNX_FILE,)
    assert KINDS["plan"].files == (build.PLAN_FILE, build.LOG_FILE)
    assert KINDS["reference"].files == (reference.REFERENCE_FILE,)


def test_storing_an_entry_without_a_file_its_kind_needs_is_a_bug_caught_at_once(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ValueError, match="cache entry onnx/k1 lacks parity.npz, export.log"):
        with cache.staging() as staged:
            (staged / "model.onnx").write_bytes(b"x")
            cache.store("onnx", "k1", staged, ONNX_META)


# --- a cache that cannot be written -----------------------------------------------------------


def test_a_cache_dir_that_is_a_file_is_one_line_exit_2(tmp_path):
    from typer.testing import CliRunner

    from infercmp.cli import app

    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")
    message = (
        f"error: the artifact cache {not_a_dir} is a file, not a directory; give --cache-dir "
        "(or INFERCMP_CACHE_DIR) a directory"
    )
    runner = CliRunner(env={"NO_COLOR": "1"})
    for args in (["cache", "ls"], ["export", "tiny-cnn"], ["bench", "tiny-cnn", "-d", "cpu"]):
        result = runner.invoke(app, [*args, "--cache-dir", str(not_a_dir)])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [message]


def test_a_full_disk_while_caching_is_one_line(tmp_path):
    """A real EFBIG from the kernel: the writer runs under RLIMIT_FSIZE of 4 KiB."""
    code = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from infercmp.artifacts.cache import ArtifactCache
        from infercmp.cli import report_error
        from infercmp.core.errors import InfercmpError

        cache = ArtifactCache(Path({str(tmp_path / "cache")!r}))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            with cache.staging() as staged:
                (staged / "model.onnx").write_bytes(b"x" * 10_000)
        except InfercmpError as exc:
            report_error(exc)
            raise SystemExit(exc.exit_code)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    (line,) = result.stderr.splitlines()
    assert result.returncode == 1
    assert line.startswith(f"error: cannot write the artifact cache at {tmp_path / 'cache'}: ")
    assert "File too large" in line and line.endswith(
        "; free space, make it writable, or choose another with --cache-dir"
    )
    assert not list((tmp_path / "cache" / "staging").iterdir())


def test_a_read_only_cache_that_needs_a_rebuild_is_one_line_with_a_fake_read_only_open(
    tmp_path, monkeypatch
):
    import infercmp.artifacts.cache
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.workload.plugins import get_plugin

    cache = ArtifactCache(tmp_path)
    (tmp_path / "locks").mkdir()

    def read_only_open(path, mode="r", *args, **kwargs):
        if mode == "rb":  # reading (checksums) works on a read-only file system
            return open(path, mode, *args, **kwargs)
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(infercmp.artifacts.cache, "open", read_only_open, raising=False)
    with pytest.raises(CacheUnwritable) as info:
        export_onnx(get_plugin("tiny-cnn"), cache)
    assert str(info.value).startswith(
        f"cannot write the artifact cache at {tmp_path}: Read-only file system ({tmp_path}/locks/"
    )
    assert info.value.exit_code == 1


# --- staging left by a killed writer ---------------------------------------------------------

DEAD_PID = 2**30  # above Linux's pid_max (2^22): no process has it


def test_staging_of_an_older_infercmp_is_judged_by_its_pid_and_a_users_dir_is_kept(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "first", b"x")  # the cache exists, with its marker
    staging = tmp_path / "staging"
    dead = [staging / f"stage-{DEAD_PID}-abc", staging / f"commit-{DEAD_PID}-x"]
    live = staging / f"stage-{os.getpid()}-other-export"
    users = staging / "release-2026"
    for path in (*dead, live, users):
        path.mkdir()
        (path / "model.onnx").write_bytes(b"half")
    _put(cache, "k", b"x")
    assert sorted(staging.iterdir()) == sorted([live, users])
    dead[0].mkdir()
    assert cache.clear() == 2
    assert sorted(staging.iterdir()) == sorted([live, users])  # never infercmp's to delete


# A writer as it runs in another PID namespace: the pid it sees means nothing here.
_FOREIGN_WRITER = f"""
import os, sys
from pathlib import Path
os.getpid = lambda: {DEAD_PID}
from infercmp.artifacts.cache import ArtifactCache
cache = ArtifactCache(Path(sys.argv[1]))
with cache.staging() as staged:
    (staged / "model.onnx").write_bytes(b"half")
    print(staged, flush=True)
    sys.stdin.readline()
"""


def _another_process(script: str, root: Path) -> subprocess.Popen:
    """`script` in its own interpreter on the cache `root`; it talks over stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_live_writer_keeps_its_staging_dir_whatever_its_pid_and_clear_waits_for_it(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "k", b"x")
    writer = _another_process(_FOREIGN_WRITER, tmp_path)
    try:
        staged = Path(writer.stdout.readline().strip())
        assert staged.is_dir()
        _put(cache, "k2", b"y")  # the next writer
        assert (staged / "model.onnx").read_bytes() == b"half"
        with pytest.raises(CacheBusy, match="is in use by another infercmp process"):
            cache.clear()
        assert staged.is_dir() and cache.lookup("blob", "k") is not None
    finally:
        writer.kill()  # as kill -9 would: the kernel releases its locks
        writer.wait(30)
    _put(cache, "k3", b"z")
    assert not staged.exists()  # the dead writer's dir goes with the next write
    assert cache.clear() == 3
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == []


_READER = """
import sys
from pathlib import Path
from infercmp.artifacts.cache import ArtifactCache
assert ArtifactCache(Path(sys.argv[1])).lookup("blob", "k") is not None
print("reading", flush=True)
sys.stdin.readline()
"""


def test_cache_clear_during_a_bench_is_refused_with_one_line_and_deletes_nothing(tmp_path):
    from typer.testing import CliRunner

    from infercmp.cli import app

    root = tmp_path / "cache"
    entry = _put(ArtifactCache(root), "k", b"x")
    reader = _another_process(_READER, root)
    try:
        assert reader.stdout.readline() == "reading\n"
        result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(root)])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == [
            f"error: the artifact cache {root} is in use by another infercmp process (a bench, "
            "tune or export); clear it once that has finished"
        ]
        assert entry.file("model.onnx").read_bytes() == b"x"
    finally:
        reader.communicate("\n", timeout=30)
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(root)])
    assert result.exit_code == 0 and "removed 1 entry" in result.output


def test_cache_clear_on_the_cli_removes_a_killed_exports_staging(tmp_path):
    from typer.testing import CliRunner

    from infercmp.cli import app

    stale = tmp_path / "staging" / f"stage-{DEAD_PID}-killed"
    stale.mkdir(parents=True)
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not stale.exists()


# --- only what infercmp made ------------------------------------------------------------------


def _users_dir(root: Path, files: list[str]) -> dict[Path, bytes]:
    made = {}
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
        made[path] = rel.encode()
    return made


def _not_a_cache_line(root: Path) -> str:
    return (
        f"error: {root} is not an infercmp artifact cache: it is not empty and has no "
        "CACHEDIR.TAG, and infercmp never writes into or deletes from a directory it did not "
        "create; give --cache-dir (or INFERCMP_CACHE_DIR) a new or empty directory, or, if an "
        "older infercmp made this cache, move the files it did not make out of it"
    )


@pytest.mark.parametrize(
    "files",
    [
        ["README.md", "staging/release-2026/notes.txt"],  # --cache-dir .
        ["entries/journal.md", "timing/results.csv", "staging/another_dir/x"],
    ],
    ids=["a project dir", "infercmp's names, a user's files"],
)
def test_a_directory_infercmp_did_not_make_is_refused_and_left_untouched(tmp_path, files):
    from typer.testing import CliRunner

    from infercmp.cli import app

    root = tmp_path / "mine"
    made = _users_dir(root, files)
    runner = CliRunner(env={"NO_COLOR": "1"})
    commands = [["cache", "clear"], ["cache", "ls"], ["export", "tiny-cnn"]]
    for args in [*commands, ["bench", "tiny-cnn", "-d", "cpu", "--out", str(tmp_path / "o")]]:
        result = runner.invoke(app, [*args, "--cache-dir", str(root)])
        assert result.exit_code == 2, result.output
        assert result.output.splitlines() == [_not_a_cache_line(root)]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == made


def test_a_cache_of_an_older_infercmp_is_adopted_and_cleared(tmp_path):
    """Every file has a name and place infercmp gives: the old layout, no marker."""
    cache = ArtifactCache(tmp_path)
    _put(cache, "k", b"x")
    (tmp_path / "CACHEDIR.TAG").unlink()
    _users_dir(tmp_path, ["aliases/onnx/0123.json", "locks/blob-k.lock", "timing/t-10.cache"])
    (tmp_path / "staging" / f"stage-{DEAD_PID}-old").mkdir()
    assert ArtifactCache(tmp_path).clear() == 1
    left = {p.name for p in tmp_path.rglob("*") if p.is_file() and "writer-" not in p.name}
    assert left == {"CACHEDIR.TAG", "in-use.lock", "blob-k.lock"}


def test_clear_in_a_tagged_cache_removes_only_what_infercmp_names(tmp_path):
    cache = ArtifactCache(tmp_path)
    _put(cache, "k", b"x")
    made = _users_dir(tmp_path, ["entries/journal.md", "timing/results.csv", "staging/mine/x"])
    assert cache.clear() == 1
    assert cache.entries() == []
    assert all(p.read_bytes() == data for p, data in made.items())


# --- files that are not files -----------------------------------------------------------------


def test_a_fifo_as_manifest_hangs_neither_cache_ls_nor_lookup(tmp_path):
    cache = ArtifactCache(tmp_path)
    entry = _put(cache, "k", b"x")
    (entry.path / MANIFEST).unlink()
    os.mkfifo(entry.path / MANIFEST)
    code = "from infercmp.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "cache", "ls", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"the cache at {tmp_path} is empty\n"
    found: list = []
    thread = threading.Thread(target=lambda: found.append(cache.lookup("blob", "k")), daemon=True)
    thread.start()
    thread.join(30)
    assert found == [None]  # a damaged entry: dropped, so it is rebuilt
    assert not entry.path.exists()


def test_a_non_utf8_cache_directory_name_is_one_line(tmp_path):
    root = os.fsdecode(os.fsencode(tmp_path) + b"/cache\xff")
    code = "from infercmp.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "cache", "ls", "--cache-dir", root],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: the artifact cache directory name '{tmp_path}/cache\\xff' is not valid UTF-8; "
        "give --cache-dir (or INFERCMP_CACHE_DIR) a UTF-8 name"
    ]


def test_a_writer_whose_new_lock_file_was_unlinked_before_it_locked_holds_a_live_one(
    tmp_path, monkeypatch
):
    """Review of #23 B.11: between a writer's open and flock another process may find the new
    file unlocked and unlink it; the writer then locked a file no path names, and its staging
    dirs read as dead to every other writer and to `cache clear`."""
    import fcntl

    from infercmp.artifacts import liveness as cache_mod

    real_flock, calls = fcntl.flock, []

    def flock_after_a_rival_unlinked(handle, operation):
        if not calls:  # the first new lock file is removed just before it is locked
            Path(handle.name).unlink()
        calls.append(handle.name)
        return real_flock(handle, operation)

    monkeypatch.setattr(cache_mod.fcntl, "flock", flock_after_a_rival_unlinked)
    token = cache_mod._new_writer(tmp_path, (os.getpid(), "test-" + str(tmp_path)))
    monkeypatch.setattr(cache_mod.fcntl, "flock", real_flock)
    assert len(calls) == 2  # it noticed and took a new lock file
    assert cache_mod._lock_held(tmp_path / "locks" / f"writer-{token}.lock")
    _, held = cache_mod._WRITERS.pop((os.getpid(), "test-" + str(tmp_path)))
    held.close()
