"""The run directory: a versioned store of a bench run, committed one combination at a time.

Layout (the contract is ``docs/results-format.md``)::

    <root>/<YYYYmmdd-HHMMSS>-<model>/
        run.json                     schema version, infercmp version, status, times, argv, env
        results.jsonl                the commit log: one line per finished combination
        writer.lock                  flock-ed by the one process writing the run
        latency/<combo>.<n>.parquet  one row per iteration, clock and phase (raw nanoseconds)
        samples/<combo>.<n>.parquet  one row per sampler reading, tagged with the worker's phase

A combination is committed by appending its line to results.jsonl after its parquet files are
on disk (``n`` is the line's commit number), so a commit costs the same however large the run
is, and a signal or crash at any instant leaves the previous consistent run or the new one.
Runs of schema version 1 (summary.json, whole-run parquet files) are still read.

One process writes a run: it holds an exclusive `flock` on writer.lock from creating (or
reopening) the run to its end, so a second writer is refused, and a run that says "running"
while nobody holds the lock was abandoned (its writer was killed). A lock, not a pid, because
a pid means nothing in another PID namespace or on another host sharing the directory.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import ValidationError

import infercmp
from infercmp.core.errors import InfercmpError, MissingDependency, RunFailed
from infercmp.core.files import write_atomic
from infercmp.core.lazy import lazy_import
from infercmp.store import legacy
from infercmp.store.frames import (
    LatencyArrays,
    aligned_concat,
    latency_frame,
    latency_schema,
    read_parquet,
    samples_frame,
    samples_schema,
    validated_frame,
)
from infercmp.store.ids import safe_name
from infercmp.store.schema import (
    LATENCY_DIR,
    READABLE_SCHEMA_VERSIONS,
    RESULTS_LOG,
    RUN_FILE,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    CombinationResult,
    RunInfo,
    read_json,
    validated_result,
    validation_error,
)
from infercmp.store.writer_lock import hold_writer_lock, run_writer_alive

if TYPE_CHECKING:
    import polars as pl
else:
    pl = lazy_import("polars")
psutil = lazy_import("psutil")

# Keys of run.json owned by the store; the caller's meta may not reuse them.
_RESERVED_KEYS = frozenset(
    {
        "schema_version",
        "infercmp_version",
        "model",
        "status",
        "detail",
        "started",
        "finished",
        "writer",
    }
)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).astimezone()


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _write_parquet(path: Path, frame: pl.DataFrame) -> None:
    write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd"))


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _append(log: Path, line: bytes) -> None:
    """Append one whole line to `log` and fsync it; a part of a line is never left behind.

    A short write (a full disk) is taken back, so the next commit starts on a line of its own;
    a signal cannot split a write to a regular file, it lands before or after it.
    """
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            if start < os.fstat(fd).st_size < start + len(line):
                os.ftruncate(fd, start)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_partial_line(log: Path) -> None:
    """Cut results.jsonl back to its last complete line: what follows is a commit a crash cut
    short, which readers ignore and an appended line must not be glued to."""
    with open(log, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(keep, 1 << 16)
            fh.seek(keep - step)
            chunk = fh.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = keep - step + newline + 1
                break
            keep -= step
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


class RunStore:
    """One run directory, written by `bench` and read by `report` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        results: list[CombinationResult],
        commits: dict[str, int] | None = None,
    ):
        self._path = path
        self._info = info
        self._results = results
        self._lock: BinaryIO | None = None  # held while this store writes (`hold_writer_lock`)
        # combo_id -> commit number of its line in results.jsonl; None: a schema 1 run.
        self._commits = commits
        self._next_commit = max(commits.values(), default=0) + 1 if commits is not None else 1

    # ----------------------------------------------------------------- writing

    @classmethod
    def create(cls, root: Path, model: str, meta: dict[str, Any]) -> RunStore:
        """Make a new run directory under `root` and write its run.json (status "running").

        `meta` holds the caller's metadata (``argv``, ``config``, ``settings``, ``environment``);
        its keys sit at the top level of run.json beside the store's own keys.
        """
        clash = sorted(_RESERVED_KEYS & set(meta))
        if clash:
            raise ValueError(f"meta keys {clash} are reserved by the run store")
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfercmpError(f"cannot create the results directory {root}: {exc}") from exc
        started = _now()
        stem = f"{started:%Y%m%d-%H%M%S}-{safe_name(model, 80)}"
        path = root / stem
        # mkdir without exist_ok is the atomic claim: two runs starting in the same second (or
        # in two processes) get distinct directories and never share or overwrite one.
        for attempt in range(1, 10_000):
            path = root / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise InfercmpError(f"cannot create the run directory {path}: {exc}") from exc
        else:  # pragma: no cover - ten thousand runs in one second
            raise InfercmpError(f"cannot find a free run directory name under {root}")
        info = {
            "schema_version": SCHEMA_VERSION,
            "infercmp_version": infercmp.__version__,
            "model": model,
            "status": "running",
            "detail": None,
            "started": _iso(started),
            "finished": None,
            "writer": {"pid": os.getpid(), "hostname": socket.gethostname()},
            **meta,
        }
        lock = None
        try:
            lock = hold_writer_lock(path)  # first: nobody else may write it, ever
            (path / LATENCY_DIR).mkdir()
            (path / SAMPLES_DIR).mkdir()
            write_atomic(path / RESULTS_LOG, b"")
            _write_json(path / RUN_FILE, info)  # last: a directory with run.json is a run
        except (OSError, InfercmpError) as exc:
            # A run directory without its run.json is no run: leave nothing half-made behind.
            shutil.rmtree(path, ignore_errors=True)
            if lock is not None:
                lock.close()
            if isinstance(exc, InfercmpError):
                raise
            raise RunFailed(
                f"cannot write the run directory {path}: {exc.strerror or exc}"
            ) from exc
        store = cls(path, info, [], {})
        store._hold(lock)
        return store

    @classmethod
    def continue_run(cls, path: Path) -> RunStore:
        """Open an existing run to write more into it (`bench --resume`), holding its writer lock.

        A run another process writes is refused with one line; a commit a crash cut short is
        cut off results.jsonl first. The run keeps its status until `reopen`.
        """
        store = cls.open(path)  # one clear error for anything that is not a readable run
        if store._commits is None:
            raise InfercmpError(f"{path} is a schema version 1 run; it cannot be extended")
        if (
            run_writer_alive(store.path) is None
            and store.status == "running"
            and not store.abandoned
        ):
            # Written before the lock existed: its writer's pid, if on this host, is the test.
            writer = store.meta.get("writer") or {}
            if writer.get("hostname") == socket.gethostname():
                raise InfercmpError(
                    f"{path} is still being written by process {writer.get('pid')} on "
                    f"{writer.get('hostname')}; wait for it to end or stop it, then resume it"
                )
        lock = hold_writer_lock(store.path)
        try:
            _cut_partial_line(store.path / RESULTS_LOG)
            store = cls.open(path)  # read again: it may have changed until the lock was ours
        except OSError as exc:
            lock.close()
            raise RunFailed(f"cannot write the run directory {path}: {_strerror(exc)}") from exc
        except BaseException:
            lock.close()
            raise
        store._hold(lock)
        return store

    def _hold(self, lock: BinaryIO) -> None:
        self._lock = lock
        # Released when the store goes, too: a forgotten close must not lock the run for good.
        weakref.finalize(self, lock.close)

    def close(self) -> None:
        """Release the writer lock (the process's end releases it as well)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _data_file(self, kind: str, cid: str, commit: int) -> Path:
        return self._path / kind / f"{cid}.{commit}.parquet"

    def add_result(
        self,
        result: CombinationResult,
        latency: LatencyArrays | Sequence[LatencyArrays] | None,
        samples: list[dict[str, Any]] | None,
    ) -> None:
        """Commit one finished combination now; a result with the same combo_id is replaced.

        `latency` is one mapping ``<clock>.<phase> -> int64 ns`` per worker process (a single
        mapping: one process). The combination's parquet files are written first, each
        atomically; appending its line to results.jsonl is the commit. Nothing already on disk
        is rewritten, so the cost does not grow with the run, and a signal at any instant
        leaves either the previous run or the new one.
        """
        if self._commits is None:
            raise RunFailed(f"{self._path} is a schema version 1 run; it is read only")
        result = CombinationResult.model_validate(result.model_dump())  # re-check after edits
        cid, commit = result.combo_id, self._next_commit
        log = self._path / RESULTS_LOG
        start = log.stat().st_size
        written: list[Path] = []
        line = b""
        try:
            for kind, frame in (
                (LATENCY_DIR, latency_frame(cid, latency) if latency else None),
                (SAMPLES_DIR, samples_frame(cid, samples) if samples else None),
            ):
                if frame is not None:
                    path = self._data_file(kind, cid, commit)
                    written.append(path)
                    _write_parquet(path, frame)
            record = {"commit": commit, **result.model_dump(mode="json")}
            line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
            _append(log, line)
        except BaseException:
            # A signal or error may have come at any point, even just after the line was
            # written: the log's size says whether the combination is committed. If it is not,
            # its files go (a reader would ignore them anyway).
            if line and log.stat().st_size == start + len(line):
                self._remember(result, commit)
            else:
                for path in written:
                    with contextlib.suppress(OSError):
                        path.unlink()
            raise
        self._remember(result, commit)

    def _remember(self, result: CombinationResult, commit: int) -> None:
        assert self._commits is not None  # add_result refuses a schema 1 run before this
        cid = result.combo_id
        previous = self._commits.get(cid)
        self._results = [r for r in self._results if r.combo_id != cid] + [result]
        self._commits[cid] = commit
        self._next_commit = commit + 1
        if previous is not None:  # superseded files: no reader looks at them any more
            for kind in (LATENCY_DIR, SAMPLES_DIR):
                with contextlib.suppress(OSError):
                    self._data_file(kind, cid, previous).unlink()

    def finish(
        self, status: Literal["complete", "interrupted", "failed"], detail: str | None = None
    ) -> None:
        """Record how the run ended (and when) in run.json."""
        if status not in ("complete", "interrupted", "failed"):
            raise ValueError(f"run status {status!r} is not complete, interrupted or failed")
        info = dict(self._info)
        info.update(
            status=status,
            detail=detail,
            finished=_iso(_now()),
            combinations=len(self._results),
        )
        _write_json(self._path / RUN_FILE, info)
        self._info = info

    def reopen(self) -> None:
        """Mark a run opened with `continue_run` "running" again, written by this process."""
        if self._commits is None:
            raise RunFailed(f"{self._path} is a schema version 1 run; it is read only")
        if self._lock is None:
            raise RuntimeError("reopen() needs the writer lock: open the run with continue_run()")
        info = dict(self._info)
        resumed = [*info.get("resumed", []), _iso(_now())]
        info.update(
            status="running",
            detail=None,
            finished=None,
            resumed=resumed,
            writer={"pid": os.getpid(), "hostname": socket.gethostname()},
        )
        try:
            _write_json(self._path / RUN_FILE, info)
        except OSError as exc:
            raise RunFailed(
                f"cannot write the run directory {self._path}: {_strerror(exc)}"
            ) from exc
        self._info = info

    # ----------------------------------------------------------------- reading

    @classmethod
    def open(cls, path: Path) -> RunStore:
        """Open an existing run directory, checking every file against its model."""
        path = Path(path)
        if not path.exists():
            raise InfercmpError(f"{path} does not exist; pass a run directory made by 'bench'")
        if not path.is_dir():
            raise InfercmpError(f"{path} is not a directory; pass a run directory made by 'bench'")
        run_file = path / RUN_FILE
        if not run_file.is_file():
            raise InfercmpError(
                f"{path} is not an infercmp run directory (no {RUN_FILE}); "
                "pass a directory made by 'bench'"
            )
        info = read_json(run_file, "run metadata")
        if not isinstance(info, dict) or "schema_version" not in info:
            raise InfercmpError(f"{run_file} has no schema_version; it was not written by infercmp")
        version = info["schema_version"]
        if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
            raise InfercmpError(
                f"{path} uses results schema version {version!r}; this infercmp reads versions "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: open it with the infercmp "
                f"version that wrote it ({info.get('infercmp_version', 'unknown')})"
            )
        try:
            RunInfo.model_validate(info)
        except ValidationError as exc:
            raise validation_error(run_file, "run metadata", exc) from exc
        if version == 1:
            return cls(path, info, legacy.read_summary(path), None)
        results, commits = _read_log(path)
        return cls(path, info, results, commits)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def meta(self) -> dict[str, Any]:
        """The whole of run.json: the store's keys and the caller's (argv, environment, ...)."""
        return self._info

    @property
    def model(self) -> str:
        return self._info.get("model", "")

    @property
    def status(self) -> str:
        """running, complete, interrupted or failed (see also `abandoned`)."""
        return self._info.get("status", "running")

    @property
    def abandoned(self) -> bool:
        """True when run.json says "running" but no process writes it any more: nobody holds
        its writer lock (runs from before the lock: its writer's pid on this host is gone)."""
        if self.status != "running":
            return False
        alive = run_writer_alive(self._path)
        if alive is not None:
            return not alive
        writer = self._info.get("writer") or {}
        pid = writer.get("pid")
        if writer.get("hostname") != socket.gethostname() or not isinstance(pid, int):
            return False  # cannot tell from here
        if pid <= 0:
            return True  # no process ever had that id
        try:
            return not psutil.pid_exists(pid)
        except (MissingDependency, OverflowError, ValueError):  # pragma: no cover
            return False

    @property
    def results(self) -> list[CombinationResult]:
        return list(self._results)

    def _frames(
        self, kind: str, old_file: str, schema: dict[str, Any], required: tuple[str, ...]
    ) -> pl.DataFrame:
        if self._commits is None:  # schema version 1: one file; rows beyond the summary ignored
            combo_ids = [r.combo_id for r in self._results]
            return legacy.read_frame(self._path / old_file, schema, required, combo_ids)
        frames = []
        for result in self._results:
            file = self._data_file(kind, result.combo_id, self._commits[result.combo_id])
            frame = read_parquet(file)
            if frame is not None:
                frame = validated_frame(frame, file, schema, required)
                frames.append(frame.filter(pl.col("combo_id") == result.combo_id))
        return aligned_concat(frames, schema)

    def latency(self) -> pl.DataFrame:
        """combo_id, iteration, clock, phase, ns (int64), process: one row per measurement."""
        return self._frames(
            LATENCY_DIR,
            legacy.LATENCY_FILE,
            latency_schema(),
            ("combo_id", "iteration", "clock", "phase", "ns"),
        )

    def samples(self) -> pl.DataFrame:
        """combo_id, t_s, time, phase and every sampler column (see SAMPLE_COLUMNS)."""
        return self._frames(SAMPLES_DIR, legacy.SAMPLES_FILE, samples_schema(), ("combo_id", "t_s"))

    def __repr__(self) -> str:
        return f"RunStore({str(self._path)!r}, status={self.status!r})"


def _read_log(path: Path) -> tuple[list[CombinationResult], dict[str, int]]:
    """The committed combinations of results.jsonl: the last line of each combo_id wins."""
    log = path / RESULTS_LOG
    if not log.is_file():
        raise InfercmpError(f"{path} has no {RESULTS_LOG}; the run directory is incomplete")
    try:
        raw = log.read_bytes()
    except OSError as exc:
        raise InfercmpError(f"cannot read {log}: {exc}") from exc
    # Only whole lines are commits: text after the last newline is an append cut short.
    lines = raw.split(b"\n")[:-1]
    latest: dict[str, tuple[int, CombinationResult]] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise InfercmpError(
                f"{log} line {number} is not a JSON object; the run directory is damaged: "
                "re-run the bench"
            ) from exc
        commit = record.get("commit") if isinstance(record, dict) else None
        if isinstance(commit, bool) or not isinstance(commit, int) or not 0 < commit < 2**63:
            raise InfercmpError(
                f"{log} line {number} has no commit number; the run directory is damaged: "
                "re-run the bench"
            )
        result = validated_result(record, log)
        latest.pop(result.combo_id, None)  # a replaced combination moves to the end
        latest[result.combo_id] = (commit, result)
    return [r for _, r in latest.values()], {cid: c for cid, (c, _) in latest.items()}
