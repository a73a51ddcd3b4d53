"""One worker process, seen from the parent: the spec it runs (`worker_spec`), launching it
under the sampler (`run_worker`), and what it left behind, read back through the typed
contract (`WorkerOutcome`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from infercmp.core.contract import (
    AccuracySpec,
    Measurement,
    ProfileSpec,
    WorkerResult,
    WorkerSpec,
)
from infercmp.core.lazy import lazy_import
from infercmp.engines.descriptor import Converted
from infercmp.engines.registry import get_descriptor
from infercmp.platform.placement import measure_handoff_ns
from infercmp.run.accuracy import measured_batch
from infercmp.run.plan import Combination
from infercmp.run.prepare import Artifacts
from infercmp.sampler import SamplingSession
from infercmp.workload.batching import input_axes, output_axes
from infercmp.workload.plugins import ModelPlugin

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

RESULT_FILE, LATENCY_FILE = "result.json", "latency.npz"  # what a worker leaves (infercmp.worker)


@dataclass
class WorkerOutcome:
    """What one worker process left behind, read back through the typed contract."""

    status: str
    error: str | None
    result: WorkerResult | None
    latency: dict[str, np.ndarray]
    samples: list[dict[str, Any]]
    log_tail: str
    sampler_errors: list[str] = field(default_factory=list)
    node: dict[str, Any] | None = None  # where it ran (infercmp.store.run_store.NodeInfo's keys)
    # A CPU worker's cache-line round trip between its CPUs in ns, just before and just after
    # it ran (infercmp.platform.placement); None where not measured.
    handoff_ns: tuple[float | None, float | None] | None = None

    @property
    def ends_combination(self) -> bool:
        """A process that did not end ok: its combination is stored from the processes that
        ran, and no further one starts (under every executor)."""
        return self.status != "ok"


def worker_spec(
    plugin: ModelPlugin,
    combo: Combination,
    artifacts: Artifacts,
    measurement: Measurement,
    result_dir: Path,
    process: int = 0,
    profile: ProfileSpec | None = None,
) -> WorkerSpec:
    """The spec one worker runs: the engine's artifact, its options and the measurement.

    The artifact is the engine's own converted form when it made one, else the ONNX export
    for engines that start from it, else nothing (the engine builds from the plugin's module).
    The user's options win over the defaults a conversion set (e.g. the plan's backend).
    With `bench --accuracy`, the first process also runs the evaluation samples; with
    `bench --profile`, the first process also profiles, where the engine has a profiler.
    """
    converted = artifacts.converted.get((combo.engine, combo.precision), Converted())
    reference = artifacts.references[combo.reference_key]
    accuracy = None
    if artifacts.judge is not None and process == 0:  # one process runs the samples
        axes = input_axes(plugin.config)
        accuracy = AccuracySpec(
            samples=artifacts.judge.accuracy_set.evaluation,
            batch=measured_batch(reference, combo.load.batch, axes),
            input_axes=axes,
            output_axes=output_axes(plugin.config),
        )
    descriptor = get_descriptor(combo.engine.name)
    takes_onnx = descriptor.artifact == "onnx"
    profiles = process == 0 and descriptor.profiler is not None
    onnx = artifacts.onnx.path if takes_onnx and artifacts.onnx is not None else None
    return WorkerSpec(
        model=plugin.name,
        engine=combo.engine.name,
        device=combo.device,
        precision=combo.precision,
        artifact=converted.artifact or onnx,
        reference=reference,
        input_names=plugin.config.input_names,
        output_names=plugin.config.output_names,
        options={**dict(converted.options), **dict(combo.engine.options)},
        measurement=measurement,
        process=process,
        result_dir=result_dir,
        load=combo.load,
        accuracy=accuracy,
        profile=profile if profiles else None,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_worker(
    spec: WorkerSpec,
    timeout_s: float,
    sample_hz: float,
    samplers: list[Any],
    on_phase: Callable[[str], None] = lambda phase: None,
) -> WorkerOutcome:
    """Run one worker subprocess under the sampler; never raises for the worker's failures.

    The worker's directory (`spec.result_dir`) receives spec.json, worker.log, result.json
    and latency.npz; `python -m infercmp.worker DIR/spec.json` replays it in the foreground.
    """
    workdir = spec.result_dir
    workdir.mkdir(parents=True, exist_ok=True)
    # What an earlier attempt of this worker left (a resumed run) must not pass for this one's.
    for leftover in (RESULT_FILE, LATENCY_FILE):
        with contextlib.suppress(FileNotFoundError):
            (workdir / leftover).unlink()
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    log_path = workdir / "worker.log"
    # The host's placement of the CPUs, which multi-threaded CPU engines follow; measured
    # before the worker starts and after it ends, never while it measures.
    probing = spec.device == "cpu"
    handoff_before = measure_handoff_ns() if probing else None
    with open(log_path, "wb") as log:
        # A new session keeps the terminal's Ctrl-C away from the worker: the parent decides.
        # The lifeline ends the worker's process group if this process dies (lifeline.py).
        proc = subprocess.Popen(
            [sys.executable, "-m", "infercmp.platform.lifeline", "infercmp.worker", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    status, error = None, None
    try:
        with _sampling(proc.pid, samplers, sample_hz) as session:
            reader = threading.Thread(
                target=_read_phases, args=(proc, session, on_phase), daemon=True
            )
            reader.start()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                status, error = "timeout", f"worker exceeded the {timeout_s:g} s timeout"
            _kill_group(proc)  # the worker, and anything the model started, on every path
            reader.join(timeout=5)
        samples = session.rows
        sampler_errors = session.errors
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if proc.stdout:
            proc.stdout.close()
    result, invalid = _read_result(workdir / RESULT_FILE)
    latency = _read_latency(workdir / LATENCY_FILE)
    log_tail = _tail(log_path)
    if status is None:
        status, error = _how_it_ended(result, proc.returncode, log_tail, invalid)
    handoff = (handoff_before, measure_handoff_ns()) if probing else None
    return WorkerOutcome(
        status, error, result, latency, samples, log_tail, sampler_errors, handoff_ns=handoff
    )


def _how_it_ended(
    result: WorkerResult | None, code: int | None, log_tail: str, invalid: str | None
) -> tuple[str, str | None]:
    """The status and error of a worker that ended within its time: its own result's, else a
    crash described by its exit (a signal, or a code and its log's last line)."""
    if result is not None:
        return result.status, result.error
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return "crashed", f"worker killed by {name}" + (
            " (possibly the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        )
    last = log_tail.strip().splitlines()[-1:] or ["no output"]
    return "crashed", f"worker exited with code {code} without a result: {invalid or last[0]}"


class _NoSampling:
    """Stands in for a SamplingSession when sampling is off (--sample-hz 0)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def set_phase(self, phase: str) -> None: ...


@contextlib.contextmanager
def _sampling(pid: int, samplers: list[Any], hz: float) -> Iterator[Any]:
    if hz <= 0 or not samplers:
        yield _NoSampling()
        return
    with SamplingSession(pid, samplers, hz=hz) as session:
        yield session


def _read_phases(proc: subprocess.Popen, session: Any, on_phase: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue  # a library printing to stdout must not break the protocol
        if isinstance(event, dict) and event.get("event") == "phase":
            session.set_phase(str(event.get("phase")))
            on_phase(str(event.get("phase")))


def _read_result(path: Path) -> tuple[WorkerResult | None, str | None]:
    """The worker's result.json, or None and why (missing, or not following the contract)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    try:
        return WorkerResult.model_validate_json(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return (
            None,
            f"its result.json does not follow the worker contract ({where}: {first['msg']})",
        )


def _read_latency(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k], dtype=np.int64) for k in data.files}
    except (OSError, ValueError):
        return {}


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""
