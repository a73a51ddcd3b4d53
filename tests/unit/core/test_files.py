"""The one atomic writer: what it replaces, what it writes through, and the modes it gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import cpu_run, run_main
from typer.testing import CliRunner

from infercmp.cli import app
from infercmp.core.files import is_temporary_of, read_regular, write_atomic
from infercmp.store.run_store import RunStore

runner = CliRunner()


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_a_symlink_stays_a_link_and_its_target_gets_the_content(tmp_path):
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real.name)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == "real.html"
    assert real.read_text() == "new"
    dangling = tmp_path / "dangling.html"
    dangling.symlink_to("made-by-the-write.html")
    write_atomic(dangling, b"x")
    assert dangling.is_symlink() and (tmp_path / "made-by-the-write.html").read_bytes() == b"x"


def test_a_fifo_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, lambda fh: fh.write(b"through the pipe"))
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_report_to_dev_full_is_one_line_and_leaves_the_device(tmp_path, capsys):
    run = cpu_run(tmp_path)
    before = os.stat("/dev/full")
    code, err = run_main(capsys, "report", str(run), "-o", "/dev/full")
    assert code == 2
    assert err.splitlines() == ["error: cannot write /dev/full: [Errno 28] No space left on device"]
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, "x")


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    umask(0o022)
    write_atomic(tmp_path / "a", "x")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    umask(0o077)
    write_atomic(tmp_path / "b", "x")
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600
    (tmp_path / "a").chmod(0o640)
    write_atomic(tmp_path / "a", "y")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640


def test_run_files_and_the_report_are_readable_by_others_under_umask_022(tmp_path, umask):
    from infercmp.store.ids import combo_id
    from infercmp.store.schema import CombinationResult

    umask(0o022)
    store = RunStore.create(tmp_path / "runs", "m", {})
    cid = combo_id("pytorch", "cpu", "fp32", "1")
    store.add_result(
        CombinationResult(
            combo_id=cid,
            model="m",
            engine="pytorch",
            device="cpu",
            precision="fp32",
            shape_label="1",
            status="ok",
        ),
        {"wall.total": np.arange(3)},
        [{"t_s": 0.0, "phase": "measure"}],
    )
    store.finish("complete")
    modes = {
        str(p.relative_to(store.path)): stat.S_IMODE(p.stat().st_mode)
        for p in store.path.rglob("*")
        if p.is_file()
    }
    assert modes == {
        "run.json": 0o644,
        "results.jsonl": 0o644,
        "writer.lock": 0o644,
        f"latency/{cid}.1.parquet": 0o644,
        f"samples/{cid}.1.parquet": 0o644,
    }
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(store.path), "-o", str(out)]).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_report_through_a_symlink_keeps_the_link(tmp_path):
    run = cpu_run(tmp_path / "runs")
    real = tmp_path / "published" / "index.html"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "report.html"
    link.symlink_to(real)
    result = runner.invoke(app, ["report", str(run), "-o", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert real.read_text().startswith("<!DOCTYPE html>")


# --- reading: only regular files -------------------------------------------------------------


def test_read_regular_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "entry.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(fifo)
    (tmp_path / "real").write_bytes(b"x")
    assert read_regular(tmp_path / "real") == b"x"


def test_report_of_a_run_whose_tune_json_is_a_fifo_is_one_line(tmp_path):
    run = cpu_run(tmp_path)
    os.mkfifo(run / "tune.json")
    code = "from infercmp.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "report", str(run), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cannot read {run / 'tune.json'}: not a regular file"
    ]


def test_the_temporary_file_of_a_write_is_recognised_as_that_write(tmp_path, monkeypatch):
    """What another process may see beside a file being written (the artifact cache adopts a
    directory holding its marker's temporary file) is told by the same rule write_atomic names
    it with."""
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "CACHEDIR.TAG", "x")
    (name,) = seen
    assert is_temporary_of(name, "CACHEDIR.TAG")
    assert not is_temporary_of(name, "CACHEDIR")
    assert not is_temporary_of(".CACHEDIR.TAG.tmp", "CACHEDIR.TAG")
    assert not is_temporary_of("CACHEDIR.TAG", "CACHEDIR.TAG")
