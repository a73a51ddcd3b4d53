"""The run directory store: round trip, atomic writes, exact errors, safe ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infercmp.core.errors import InfercmpError
from infercmp.core.stats import LatencyStats
from infercmp.store import run_store as results
from infercmp.store.frames import SAMPLE_COLUMNS
from infercmp.store.ids import combo_id, safe_name
from infercmp.store.locate import latest_run
from infercmp.store.run_store import RunStore
from infercmp.store.schema import RESULTS_LOG, CombinationResult

META = {
    "argv": ["infercmp", "bench", "tiny-cnn", "--shape", "32,32,3"],
    "config": {"name": "tiny-cnn"},
    "settings": {"iters": 5},
    "environment": {"python": "3.11"},
}


def _result(engine: str = "pytorch", status: str = "ok", **extra) -> CombinationResult:
    cid = combo_id(engine, "cpu", "fp32", "32x32x3")
    fields = dict(
        combo_id=cid,
        model="tiny-cnn",
        engine=engine,
        device="cpu",
        precision="fp32",
        shape_label="32x32x3",
        example_shapes=[[32, 32, 3]],
        runtime_shapes={"image": [1, 3, 32, 32]},
        options={"threads": 2},
        status=status,
        iterations=5,
        latency=LatencyStats.from_ns(np.array([1_500_000, 2_000_000])).to_dict(),
        parity={
            "ok": True,
            "rtol": 1e-3,
            "atol": 1e-4,
            "outputs": [
                {
                    "name": "logits",
                    "shape": [1, 10],
                    "dtype": "float32",
                    "ref_shape": [1, 10],
                    "ref_dtype": "float32",
                    "max_abs": 1e-6,
                    "max_rel": 1e-5,
                    "cosine": 1.0,
                    "ok": True,
                }
            ],
        },
        warnings=["first iterations slower"],
        started="2024-01-01T00:00:00.000+00:00",
        finished="2024-01-01T00:00:01.000+00:00",
    )
    fields.update(extra)
    return CombinationResult(**fields)


def _latency(n: int = 5) -> dict[str, np.ndarray]:
    return {
        "wall.total": np.arange(1000, 1000 + n, dtype=np.int64),
        "wall.h2d": np.full(n, 10, dtype=np.int64),
    }


def _samples(n: int = 3) -> list[dict]:
    return [
        {
            "t_s": i * 0.05,
            "time": 1.7e9 + i * 0.05,
            "phase": "load" if i == 0 else "measure",
            "proc_rss_bytes": 1000 + i,
            "proc_cpu_pct": 50.0,
            "sys_cpu_pct": 25,
            "sys_ram_used_bytes": 10**9,
        }
        for i in range(n)
    ]


def test_round_trip(tmp_path):
    store = RunStore.create(tmp_path, "tiny-cnn", META)
    assert store.path.parent == tmp_path
    assert store.path.name.endswith("-tiny-cnn")
    info = json.loads((store.path / "run.json").read_text())
    assert info["schema_version"] == 2
    assert info["status"] == "running"
    assert info["argv"] == META["argv"]

    first = _result("pytorch")
    store.add_result(first, _latency(5), _samples(3))
    second = _result("onnxruntime", parity=None)
    store.add_result(second, {"wall.total": np.array([7, 8], dtype=np.int64)}, None)
    store.finish("complete")

    opened = RunStore.open(store.path)
    assert opened.status == "complete"
    assert opened.meta["finished"] is not None
    assert opened.meta["environment"] == {"python": "3.11"}
    assert [r.combo_id for r in opened.results] == [first.combo_id, second.combo_id]
    assert opened.results[0] == first

    lat = opened.latency()
    assert lat.schema == pl.Schema(results.latency_schema())
    assert lat.height == 5 * 2 + 2
    wall = lat.filter((pl.col("combo_id") == first.combo_id) & (pl.col("phase") == "total")).sort(
        "iteration"
    )
    assert wall["ns"].to_list() == [1000, 1001, 1002, 1003, 1004]
    assert wall["clock"].unique().to_list() == ["wall"]

    samples = opened.samples()
    assert list(samples.columns) == ["combo_id", *SAMPLE_COLUMNS]
    assert samples.height == 3
    assert samples["phase"].to_list() == ["load", "measure", "measure"]
    assert samples["sys_cpu_pct"].dtype == pl.Float64
    assert samples["gpu_power_w"].null_count() == 3

    assert opened.results[0].parity["ok"] is True and opened.results[1].parity is None
    assert {p.name for p in (store.path / "latency").iterdir()} == {
        f"{first.combo_id}.1.parquet",
        f"{second.combo_id}.2.parquet",
    }
    log = [json.loads(line) for line in (store.path / RESULTS_LOG).read_text().splitlines()]
    assert [(r["commit"], r["combo_id"]) for r in log] == [
        (1, first.combo_id),
        (2, second.combo_id),
    ]


def test_replacing_a_combination_replaces_its_rows(tmp_path):
    store = RunStore.create(tmp_path, "m", {})
    store.add_result(_result(), _latency(5), _samples(3))
    store.add_result(_result(iterations=2), _latency(2), _samples(1))
    opened = RunStore.open(store.path)
    assert len(opened.results) == 1 and opened.results[0].iterations == 2
    assert opened.latency().height == 4
    assert opened.samples().height == 1


def test_extra_sampler_columns_are_kept(tmp_path):
    store = RunStore.create(tmp_path, "m", {})
    store.add_result(_result("pytorch"), None, _samples(2))
    rows = [{**row, "fan_rpm": 1200} for row in _samples(2)]
    store.add_result(_result("onnxruntime"), None, rows)
    samples = RunStore.open(store.path).samples()
    assert samples.columns[: len(SAMPLE_COLUMNS) + 1] == ["combo_id", *SAMPLE_COLUMNS]
    assert samples["fan_rpm"].to_list() == [None, None, 1200.0, 1200.0]


def test_empty_run_has_typed_empty_frames(tmp_path):
    store = RunStore.create(tmp_path, "m", {})
    opened = RunStore.open(store.path)
    assert opened.results == []
    assert opened.latency().is_empty()
    assert opened.latency().schema == pl.Schema(results.latency_schema())
    assert opened.samples().schema == pl.Schema(results.samples_schema())


def test_two_runs_in_the_same_second_get_distinct_directories(tmp_path, monkeypatch):
    import datetime as dt

    fixed = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(results, "_now", lambda: fixed)
    paths = [RunStore.create(tmp_path, "m", {"argv": [str(i)]}).path for i in range(3)]
    assert [p.name for p in paths] == [
        "20240506-070809-m",
        "20240506-070809-m-2",
        "20240506-070809-m-3",
    ]
    assert [RunStore.open(p).meta["argv"] for p in paths] == [["0"], ["1"], ["2"]]


def test_reserved_meta_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"meta keys \['status'\] are reserved"):
        RunStore.create(tmp_path, "m", {"status": "x"})


def test_a_failed_write_leaves_the_previous_state(tmp_path, monkeypatch):
    store = RunStore.create(tmp_path, "m", {})
    store.add_result(_result("pytorch"), _latency(5), _samples(3))
    before = sorted(p.relative_to(store.path) for p in store.path.rglob("*") if p.is_file())
    log_before = (store.path / RESULTS_LOG).read_bytes()

    # The samples parquet write dies half-way: a partial temp file exists, then an error.
    real = pl.DataFrame.write_parquet

    def dying_write(frame, file, *args, **kwargs):
        if "samples" in frame.columns[1:3] or "t_s" in frame.columns:
            file.write(b"PAR1 half a file")
            raise OSError("disk full")
        return real(frame, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", dying_write)
    with pytest.raises(OSError, match="disk full"):
        store.add_result(_result("onnxruntime"), _latency(3), _samples(2))
    monkeypatch.undo()

    # The latency file already written for the combination is taken back; no temp file left.
    after = sorted(p.relative_to(store.path) for p in store.path.rglob("*") if p.is_file())
    assert after == before
    assert (store.path / RESULTS_LOG).read_bytes() == log_before
    assert [r.engine for r in store.results] == ["pytorch"]
    opened = RunStore.open(store.path)
    assert [r.engine for r in opened.results] == ["pytorch"]
    assert opened.latency().height == 10
    # The store goes on: the next commit lands as if nothing happened.
    store.add_result(_result("onnxruntime"), _latency(3), _samples(2))
    assert [r.engine for r in RunStore.open(store.path).results] == ["pytorch", "onnxruntime"]


# The system calls a commit makes; a signal's KeyboardInterrupt can surface before or after any.
_COMMIT_CALLS = ("open", "write", "fstat", "fsync", "ftruncate", "replace", "unlink", "fchmod")


class _Interrupt:
    """Raises KeyboardInterrupt at the n-th of the commit's system calls, before or after it."""

    def __init__(self, monkeypatch, at: int, after: bool):
        self.calls = 0
        self.at, self.after, self.fired = at, after, False
        for name in _COMMIT_CALLS:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real):
        def call(*args, **kwargs):
            self.calls += 1
            hit = self.calls == self.at and not self.fired
            if hit and not self.after:
                self.fired = True
                raise KeyboardInterrupt
            value = real(*args, **kwargs)
            if hit:
                self.fired = True
                raise KeyboardInterrupt
            return value

        return call


def _state(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    opened = RunStore.open(path)
    lat = opened.latency()
    rows = {
        cid: sorted(lat.filter(pl.col("combo_id") == cid)["ns"].to_list())
        for cid in lat["combo_id"].unique().to_list()
    }
    return [f"{r.combo_id}:{r.iterations}" for r in opened.results], rows


@pytest.mark.parametrize("replace", [False, True], ids=["new", "replacing"])
def test_a_signal_at_any_step_of_a_commit_leaves_the_old_run_or_the_new(
    tmp_path, monkeypatch, replace
):
    """KeyboardInterrupt before and after each system call of add_result, one trial each."""
    first = _result("pytorch")
    second = _result("pytorch", iterations=7) if replace else _result("onnxruntime")

    def fresh(where: Path) -> RunStore:
        store = RunStore.create(where, "m", {})
        store.add_result(first, _latency(5), _samples(3))
        return store

    # The two states a reader may see, recorded from runs that were not interrupted.
    old_state = _state(fresh(tmp_path / "old").path)
    whole = fresh(tmp_path / "new")
    whole.add_result(second, _latency(7), _samples(2))
    new_state = _state(whole.path)
    assert old_state != new_state

    seen = {"old": 0, "new": 0}
    trial = 0
    while True:
        trial += 1
        for after in (False, True):
            store = fresh(tmp_path / f"t{trial}{after}")
            with monkeypatch.context() as patch:
                interrupt = _Interrupt(patch, trial, after)
                try:
                    store.add_result(second, _latency(7), _samples(2))
                except KeyboardInterrupt:
                    pass
            state = _state(store.path)
            assert state in (old_state, new_state), (trial, after)
            # The writer's own view agrees with the disk (bench reports saved counts from it).
            assert [f"{r.combo_id}:{r.iterations}" for r in store.results] == state[0]
            seen["new" if state == new_state else "old"] += 1
            assert not list(store.path.rglob("*.tmp")), (trial, after)
            # The next commit still works, whatever was cut short.
            store.add_result(_result("tensorrt"), _latency(2), None)
            assert _state(store.path)[0][-1] == f"{_result('tensorrt').combo_id}:5"
        if not interrupt.fired:  # past the last system call of the commit
            break
    assert trial > 10 and seen["old"] > 5 and seen["new"] > 0, (trial, seen)


def test_a_line_cut_short_at_the_end_of_the_log_is_not_a_commit(tmp_path):
    store = RunStore.create(tmp_path, "m", {})
    store.add_result(_result("pytorch"), _latency(5), None)
    whole = (store.path / RESULTS_LOG).read_bytes()
    with open(store.path / RESULTS_LOG, "ab") as fh:
        fh.write(whole[: len(whole) // 2].replace(b'"pytorch"', b'"tensorrt"'))
    assert [r.engine for r in RunStore.open(store.path).results] == ["pytorch"]
    with open(store.path / RESULTS_LOG, "ab") as fh:
        fh.write(b"\n")  # now a whole line that is not JSON: damage, said in one line
    with pytest.raises(InfercmpError, match=r"results\.jsonl line 2 is not a JSON object"):
        RunStore.open(store.path)


def test_a_schema_1_run_is_read_with_its_uncommitted_rows_ignored(tmp_path):
    """The layout before the commit log: summary.json and whole-run parquet files."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "model": "m"}))
    first = _result("pytorch")
    (run / "summary.json").write_text(json.dumps([first.model_dump(mode="json")]))
    rows = pl.concat(
        [
            results.latency_frame(first.combo_id, _latency(3)),
            results.latency_frame("uncommitted", _latency(2)),
        ]
    ).drop("process")
    rows.write_parquet(run / "latency.parquet")
    opened = RunStore.open(run)
    assert opened.results == [first]
    lat = opened.latency()
    assert lat.schema == pl.Schema(results.latency_schema())
    assert lat["combo_id"].unique().to_list() == [first.combo_id]
    assert lat["process"].unique().to_list() == [0]
    assert opened.samples().is_empty()
    with pytest.raises(InfercmpError, match="schema version 1 run; it is read only"):
        opened.add_result(_result("onnxruntime"), None, None)


def test_the_published_schema_1_runs_still_open():
    root = Path(__file__).parents[3] / "docs" / "results"
    for run in (root / "h200", root / "cpu-2core"):
        opened = RunStore.open(run)
        assert opened.meta["schema_version"] == 1
        assert opened.results and opened.latency().is_empty()


def test_killed_writer_leaves_a_running_run_that_opens(tmp_path):
    script = (
        "import sys, os, numpy as np\n"
        "from pathlib import Path\n"
        "from infercmp.store.run_store import RunStore\n"
        "from infercmp.store.schema import CombinationResult\n"
        "s = RunStore.create(Path(sys.argv[1]), 'm', {})\n"
        "s.add_result(CombinationResult(combo_id='a', model='m', engine='e', device='cpu',"
        " precision='fp32', shape_label='1', status='ok'),"
        " {'wall.total': np.arange(3)}, None)\n"
        "os._exit(0)\n"  # dies without finish()
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    opened = RunStore.open(latest_run(tmp_path))
    assert opened.status == "running"
    assert opened.abandoned
    assert opened.meta["finished"] is None
    assert len(opened.results) == 1 and opened.latency().height == 3


def test_open_rejects_what_is_not_a_run(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InfercmpError) as err:
        RunStore.open(missing)
    assert str(err.value) == f"{missing} does not exist; pass a run directory made by 'bench'"

    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(InfercmpError) as err:
        RunStore.open(file)
    assert str(err.value) == f"{file} is not a directory; pass a run directory made by 'bench'"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InfercmpError) as err:
        RunStore.open(empty)
    assert str(err.value) == (
        f"{empty} is not an infercmp run directory (no run.json); pass a directory made by 'bench'"
    )

    (empty / "run.json").write_text("{not json")
    with pytest.raises(InfercmpError, match=r"run\.json is not valid JSON .*re-run the bench"):
        RunStore.open(empty)

    (empty / "run.json").write_text('{"a": 1}')
    with pytest.raises(InfercmpError) as err:
        RunStore.open(empty)
    assert str(err.value) == (
        f"{empty / 'run.json'} has no schema_version; it was not written by infercmp"
    )

    (empty / "run.json").write_text('{"schema_version": 99, "infercmp_version": "9.0"}')
    with pytest.raises(InfercmpError) as err:
        RunStore.open(empty)
    assert str(err.value) == (
        f"{empty} uses results schema version 99; this infercmp reads versions 1, 2: "
        "open it with the infercmp version that wrote it (9.0)"
    )

    (empty / "run.json").write_text('{"schema_version": 1}')
    with pytest.raises(InfercmpError) as err:
        RunStore.open(empty)
    assert str(err.value) == f"{empty} has no summary.json; the run directory is incomplete"

    (empty / "summary.json").write_text('[{"combo_id": "x"}]')
    with pytest.raises(InfercmpError, match=r"holds an invalid combination result \(model: "):
        RunStore.open(empty)

    (empty / "summary.json").write_text("[]")
    (empty / "latency.parquet").write_bytes(b"garbage")
    with pytest.raises(InfercmpError, match=r"cannot be read as parquet"):
        RunStore.open(empty).latency()

    (empty / "run.json").write_text('{"schema_version": 2}')
    with pytest.raises(InfercmpError) as err:
        RunStore.open(empty)
    assert str(err.value) == f"{empty} has no results.jsonl; the run directory is incomplete"


def test_latest_run(tmp_path):
    with pytest.raises(InfercmpError) as err:
        latest_run(tmp_path / "absent")
    assert str(err.value) == (
        f"no infercmp runs under {tmp_path / 'absent'}; "
        "run 'infercmp bench MODEL' first or pass a run directory"
    )
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(InfercmpError):
        latest_run(tmp_path)

    older = RunStore.create(tmp_path, "zzz", {}).path
    time.sleep(0.01)
    newer = RunStore.create(tmp_path, "aaa", {}).path
    assert latest_run(tmp_path) == newer
    assert older != newer


def test_combo_id_examples():
    assert combo_id("pytorch", "cpu", "fp32", "224x224x3") == "pytorch-cpu-fp32-224x224x3"
    assert (
        combo_id("onnxruntime", "cuda", "fp16", "8x128_8x128", "io_binding")
        == "onnxruntime-cuda-fp16-8x128_8x128-io_binding"
    )
    evil = combo_id("../../etc", "cpu", "fp32", "x/y")
    assert "/" not in evil and not evil.startswith(".")
    assert combo_id("a/b", "c", "d", "e") != combo_id("a_b", "c", "d", "e")


_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.text(), st.text(), st.one_of(st.none(), st.text()))
def test_combo_id_is_always_a_safe_file_name(engine, device, precision, shape, variant):
    cid = combo_id(engine, device, precision, shape, variant)
    assert cid and cid not in (".", "..")
    assert set(cid) <= _SAFE
    assert not cid.startswith(".")
    assert len(cid) <= 120
    assert safe_name(cid) == cid  # stable: an id passes through unchanged


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_safe_name_is_always_a_safe_file_name(text):
    name = safe_name(text)
    assert name and name not in (".", "..") and not name.startswith(".")
    assert set(name) <= _SAFE


def test_unsafe_combo_id_is_refused(tmp_path):
    store = RunStore.create(tmp_path, "m", {})
    with pytest.raises(ValueError, match="not filesystem-safe"):
        store.add_result(_result(combo_id="../x"), None, None)
    assert store.results == [] and RunStore.open(store.path).results == []
