"""The node side of `bench --executor ray`: the Ray task that runs one unit (`_run_unit`), the
node's checked copy of the driver's artifacts, GPU-specific artifacts built on the node, and
the watch that ends a task whose driver died.

`ray` is imported inside the functions that run in a task: the driver must not import it
before `infercmp.run.executors.ray._run_token` has run (Ray takes its token when imported).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infercmp.artifacts.cache import ArtifactCache, file_sha256, resolve_cache_dir
from infercmp.artifacts.onnx_export import OnnxArtifact
from infercmp.artifacts.samples import CalibrationSet
from infercmp.core.contract import WorkerSpec
from infercmp.core.errors import InfercmpError
from infercmp.core.lazy import lazy_import
from infercmp.engines.descriptor import ConvertContext
from infercmp.engines.registry import get_descriptor
from infercmp.platform.host import node_facts
from infercmp.run import worker_process
from infercmp.run.worker_process import WorkerOutcome
from infercmp.sampler import default_samplers
from infercmp.workload.plugins import get_plugin

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")

#: How often a task on the driver's own node checks that the driver still lives.
DRIVER_POLL_S = 0.2
NODE_DIR = "infercmp-ray"  # under each node's temp directory: infercmp-ray-<uid>, mode 0700


@dataclasses.dataclass(frozen=True)
class _Shipped:
    """A cache entry (a directory of files) in the object store, and its content digests."""

    digest: str
    ref: Any  # ray.ObjectRef of {relative path: bytes}
    # Each file's relative path and sha256, as the driver read it: the node checks its copy
    # against these before a worker uses it.
    files: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, files: dict[str, bytes], ref: Any) -> _Shipped:
        sums = tuple((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
        digest = hashlib.sha256()
        for name, sum_ in sums:
            digest.update(name.encode() + b"\0" + bytes.fromhex(sum_))
        return cls(digest.hexdigest()[:32], ref, sums)


@dataclasses.dataclass(frozen=True)
class _Driver:
    """The driver process, as a task on its node can recognise it (its pid and start time)."""

    pid: int
    started: float  # psutil's create_time: tells the driver from a later process of its pid

    @classmethod
    def current(cls) -> _Driver:
        return cls(os.getpid(), psutil.Process().create_time())


@dataclasses.dataclass(frozen=True)
class _DeviceBuild:
    """What the node needs to make a GPU-specific artifact itself (`builds_on_device`)."""

    onnx: OnnxArtifact  # its path the driver's
    options: tuple[tuple[str, Any], ...]
    batches: tuple[int, ...] = ()  # what the driver would have built it for (ConvertContext)
    calibration: CalibrationSet | None = None  # int8: its samples file the driver's, shipped


def _node_dir() -> Path:
    """This user's directory in the node's temp directory, made mode 0700.

    Another local user must not be able to put a model or reference of their own where a
    worker reads it (a shared `$TMPDIR/infercmp-ray` of theirs let a constant-output model
    pass as the measured one, with parity ok): a directory that is not this user's own, or
    that others may enter, is refused with one line.
    """
    path = Path(tempfile.gettempdir()) / f"{NODE_DIR}-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a link or a file)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, which lets other users in"
    if problem:
        raise InfercmpError(
            f"{path} {problem}; infercmp keeps Ray's artifact copies there and needs it to be a "
            "directory of this user's with mode 0700: remove it, or set TMPDIR elsewhere"
        )
    return path


def _materialise(shipped: _Shipped) -> Path:
    """This node's copy of a shipped cache entry, written once (atomically) per digest and
    checked against the driver's digests every time it is used."""
    import ray

    final = _node_dir() / "artifacts" / shipped.digest
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=".staging-"))
        try:
            for name, data in ray.get(shipped.ref).items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            try:
                staging.rename(final)
            except OSError:  # another task on this node made it first
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _check_copy(final, shipped)
    return final


def _check_copy(copy: Path, shipped: _Shipped) -> None:
    """One clear error when `copy` holds other files, or other bytes, than the driver shipped."""
    found = sorted(str(f.relative_to(copy)) for f in copy.rglob("*") if f.is_file())
    expected = dict(shipped.files)
    if found != sorted(expected):
        odd = sorted(set(found) ^ set(expected))
        raise InfercmpError(
            f"the node's copy of the artifacts in {copy} has other files than the driver "
            f"shipped ({', '.join(odd)}); remove {copy} and run again"
        )
    for name, expected_sum in expected.items():
        found_sum = file_sha256(copy / name)
        if found_sum != expected_sum:
            raise InfercmpError(
                f"the node's copy {copy / name} does not match what the driver shipped (sha256 "
                f"{found_sum[:16]}..., expected {expected_sum[:16]}...): it changed "
                f"after it was written; remove {copy} and run again"
            )


def _build_on_node(spec: WorkerSpec, build: _DeviceBuild, local: dict[str, Path]) -> WorkerSpec:
    """Make the engine's GPU-specific artifact here, through this node's artifact cache, from
    this node's copies (`local`: driver path -> copy) of the ONNX and the calibration samples."""
    descriptor = get_descriptor(spec.engine)
    onnx_path = local.get(str(build.onnx.path))
    onnx = dataclasses.replace(build.onnx, path=onnx_path) if onnx_path else build.onnx
    calibration = build.calibration
    if calibration is not None and str(calibration.path) in local:
        calibration = dataclasses.replace(calibration, path=local[str(calibration.path)])
    context = ConvertContext(
        get_plugin(spec.model),
        ArtifactCache(resolve_cache_dir(None)),
        onnx,
        lambda _: None,
        build.batches,
        calibration,
    )
    options = descriptor.parse_options(dict(build.options))
    converted = descriptor.convert(context, spec.precision, options)
    if converted is None:
        return spec
    return spec.model_copy(
        update={
            "artifact": converted.artifact or spec.artifact,
            "options": {**dict(converted.options), **spec.options},
        }
    )


@contextlib.contextmanager
def _ends_with_driver(driver: _Driver | None) -> Iterator[None]:
    """While the block runs, kill this process if `driver` dies; its worker's lifeline then
    ends the worker's process group (infercmp.platform.lifeline), as a local worker's does.

    Only where the driver is seen at the start (this task runs on the driver's machine and
    sees its processes); elsewhere Ray ends a dead driver's tasks by itself, but not at once:
    after a kill -9 of the driver of a local instance a probe saw the task and its worker
    measure on for 2 to 10 s, beside whatever the user started next.
    """
    try:
        process = psutil.Process(driver.pid) if driver is not None else None
        seen = (
            process is not None
            and driver is not None
            and abs(process.create_time() - driver.started) < 0.01
        )
    except psutil.Error:  # not on this machine, or not visible from here
        seen = False
    if not seen:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(DRIVER_POLL_S):
            if not _alive(process):
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="infercmp-driver-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _alive(process: psutil.Process) -> bool:
    """Whether `process` runs (a killed one that its parent has not reaped yet does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _run_unit(
    spec: WorkerSpec,
    shipped: dict[str, _Shipped],
    build: _DeviceBuild | None,
    sample_hz: float,
    timeout_s: float,
    driver: _Driver | None = None,
) -> tuple[WorkerOutcome, dict[str, bytes]]:
    """The Ray task: today's parent-side logic (sampler and worker process) on this node,
    which ends when the driver dies (`_ends_with_driver`).

    Returns the outcome and the worker directory's files (spec.json, worker.log, result.json,
    latency.npz), which the driver puts in the run store.
    """
    with _ends_with_driver(driver):
        return _run_unit_here(spec, shipped, build, sample_hz, timeout_s)


def _run_unit_here(
    spec: WorkerSpec,
    shipped: dict[str, _Shipped],
    build: _DeviceBuild | None,
    sample_hz: float,
    timeout_s: float,
) -> tuple[WorkerOutcome, dict[str, bytes]]:
    import ray

    cuda = spec.device == "cuda"
    node = {**node_facts(cuda), "ray_node_id": ray.get_runtime_context().get_node_id()}
    try:
        local = {
            key: _materialise(item) / Path(key).name for key, item in shipped.items()
        }  # driver path -> this node's copy
        workdir = Path(tempfile.mkdtemp(dir=_node_dir(), prefix="worker-"))
    except InfercmpError as exc:
        error = f"{spec.engine} cannot use its artifacts on {socket.gethostname()}: {exc}"
        return WorkerOutcome("failed", error, None, {}, [], "", node=node), {}
    try:
        spec = spec.model_copy(
            update={
                "artifact": local.get(str(spec.artifact), spec.artifact),
                "reference": local.get(str(spec.reference), spec.reference),
                "options": {
                    k: str(local.get(str(Path(v)), v)) if isinstance(v, str) else v
                    for k, v in spec.options.items()
                },
                "result_dir": workdir,
                "accuracy": spec.accuracy
                and spec.accuracy.model_copy(
                    update={"samples": local.get(str(spec.accuracy.samples), spec.accuracy.samples)}
                ),
            }
        )
        if build is not None:
            try:
                spec = _build_on_node(spec, build, local)
            except InfercmpError as exc:
                host = socket.gethostname()
                error = f"{spec.engine} could not make its artifact on {host}: {exc}"
                outcome = WorkerOutcome("failed", error, None, {}, [], "", node=node)
                return outcome, {}
        samplers, left_out = default_samplers(gpu=cuda) if sample_hz > 0 else ([], [])
        # Through the module: a test replaces run_worker there, for every executor.
        outcome = worker_process.run_worker(spec, timeout_s, sample_hz, samplers)
        outcome.node = node
        if cuda:
            outcome.sampler_errors.extend(m for m in left_out if "NVML" in m)
        files = {f.name: f.read_bytes() for f in workdir.iterdir() if f.is_file()}
        return outcome, files
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
