"""`bench --executor ray`: each (combination, process) unit is one Ray task on a node that
holds its resources; outcomes stream back to the driver, which commits them to one run store.

Resources (docs/distributed.md):

- A CUDA unit asks for one whole GPU (`num_gpus=1`): Ray gives the task its own GPU through
  CUDA_VISIBLE_DEVICES, which the worker and the NVML sampler follow, so two never share one.
- A CPU unit takes the node's whole `infercmp_cpu_slot` (each node advertises 1; a local
  instance is started with it). A CUDA unit holds a sliver of the same slot, so no CPU
  measurement overlaps anything else infercmp runs on that node, while GPU units run side by
  side.
- `--ray-accelerator-type` and `--ray-resource` send every unit to a kind of node.

Artifacts travel through Ray's object store: the driver puts each cache entry (the ONNX export,
the reference outputs) once, with the sha256 of each file, and each node writes one copy under
a directory of the user's own in its temp directory (mode 0700, checked), keyed by content, and
checks every file against those digests before a worker uses it. Nothing assumes a shared
filesystem, which `ray up` and KubeRay clusters do not have.
GPU-specific artifacts (`builds_on_device`: TensorRT plans) are built in the task, on the node
of the GPU kind that runs them, through that node's own artifact cache.

Ray reserves resources; it does not limit what a process uses. See docs/distributed.md.

The node side (the task, the artifact copies, builds on the node) is
`infercmp.run.executors.ray_node`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from infercmp.core.contract import WorkerSpec
from infercmp.core.errors import InfercmpError
from infercmp.engines.descriptor import Machine
from infercmp.engines.registry import get_descriptor
from infercmp.run.executors.base import BenchListener, WorkUnit
from infercmp.run.executors.ray_node import (
    _DeviceBuild,
    _Driver,
    _node_dir,
    _run_unit,
    _Shipped,
)
from infercmp.run.plan import BenchPlan
from infercmp.run.prepare import Artifacts
from infercmp.run.signals import STOP_SIGNALS
from infercmp.run.worker_process import WorkerOutcome

CPU_SLOT = "infercmp_cpu_slot"


#: What a CUDA unit holds of its node's CPU slot: any positive amount keeps a CPU unit off the
#: node while it runs; 0.01 lets up to 100 GPU units of one node run side by side.
CUDA_SLOT_SHARE = 0.01


#: How long cancelled tasks get to stop their workers (run_worker kills the process group on
#: KeyboardInterrupt) before Ray kills them outright (the lifeline then kills the group).
CANCEL_GRACE_S = 10.0


def parse_resource(text: str) -> tuple[str, float]:
    """`--ray-resource NAME[=AMOUNT]`: a custom resource each unit asks for (default 1)."""
    name, sep, amount = text.partition("=")
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise InfercmpError(f"--ray-resource '{text}': give NAME or NAME=AMOUNT, e.g. 'a100_node'")
    if not sep:
        return name, 1.0
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InfercmpError(f"--ray-resource '{text}': AMOUNT must be a positive number")
    return name, value


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InfercmpError(
            "--executor ray needs the 'ray' package, which is not installed; "
            "pip install 'infercmp[ray]'"
        ) from None
    return ray


class RayExecutor:
    """Runs units as Ray tasks on a local instance started for the run, or on `address`."""

    def __init__(
        self,
        address: str | None = None,
        accelerator_type: str | None = None,
        resources: dict[str, float] | None = None,
        sample_hz: float = 20.0,
        timeout_s: float = 600.0,
    ) -> None:
        self.address = address
        self.accelerator_type = accelerator_type
        self.resources = dict(resources or {})
        self.sample_hz = sample_hz
        self.timeout_s = timeout_s
        self._prepared: Artifacts | None = None  # of the plan now running
        self._ray: Any = None
        self._shipped: dict[Path, _Shipped] = {}
        self._running: dict[Any, WorkUnit] = {}
        self._driver: _Driver | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start a local Ray instance (this machine's CPUs and GPUs) or connect to `address`.

        A stop signal while Ray starts is held until `ray.init` returns, then the instance is
        shut down and the signal delivered: interrupted inside `ray.init`, Ray left processes
        that `ray.shutdown` did not know of (its dashboard and runtime-env agents ran on for
        about 60 s) and the driver sometimes died of SIGSEGV at exit. A second signal is not
        held.
        """
        if not self.address:
            _node_dir()  # the local instance's tasks copy artifacts there: refuse a bad one now
            _run_token()  # before Ray is imported: see there
        ray = _import_ray()
        # Nothing leaves the machine: no usage statistics; the dashboard is not started.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if self.address:
            _check_reachable(self.address)
        failure = None
        with _signals_held() as held:
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:
                    ray.init(resources={CPU_SLOT: 1}, include_dashboard=False, **quiet)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    ray.shutdown()  # whatever part of a local instance had started
                if not isinstance(exc, Exception):
                    raise
                failure = exc
        if held:
            with contextlib.suppress(Exception):
                ray.shutdown()
            signal.raise_signal(held[0])  # to the handler that was there: bench's, or the default
            name = signal.Signals(held[0]).name
            raise InfercmpError(f"stopped by {name} while Ray started")  # a handler that returned
        if failure is not None:
            raise InfercmpError(_connect_error(self.address, failure)) from None
        self._ray = ray
        self._task = ray.remote(_run_unit)
        self._driver = _Driver.current()

    def close(self) -> None:
        """Cancel what still runs (its workers are killed on the nodes); stop a local Ray.

        Called as the command ends, so a stop signal meanwhile is held and dropped: the
        process is ending anyway, and a KeyboardInterrupt inside `ray.shutdown` would leave
        the instance half stopped. A second signal goes through.
        """
        if self._ray is None:
            return
        with _signals_held():
            with contextlib.suppress(Exception):
                self._cancel(list(self._running))
            with contextlib.suppress(Exception):
                # Stops the local instance started for the run; from a cluster it disconnects.
                self._ray.shutdown()
            self._ray = None

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- planning

    def machine(self) -> Machine:
        """This machine's facts for planning, with the cluster's GPUs as its CUDA devices."""
        gpus = int(self._ray.cluster_resources().get("GPU", 0))
        return dataclasses.replace(Machine.current(), cuda_devices=gpus)

    def prepared(self, plan: BenchPlan, artifacts: Artifacts) -> None:
        """Check the cluster can run the plan, and keep what its artifacts were prepared from
        (the export and the batch sizes), which the nodes build plans from. Called for every
        plan the run runs: each step of `--batch auto` is one."""
        self.check(c.device for c in plan.runnable)
        self._prepared = artifacts

    def request(self, device: str) -> dict[str, Any]:
        """The Ray task options of a unit on `device`."""
        resources = {CPU_SLOT: CUDA_SLOT_SHARE if device == "cuda" else 1.0, **self.resources}
        options: dict[str, Any] = {
            "num_cpus": 0,  # the slot and the GPU are the reservation; see the module doc
            "num_gpus": 1 if device == "cuda" else 0,
            "resources": resources,
            "max_retries": 0,  # a crash is a result to record, not to hide by a silent re-run
        }
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        return options

    def check(self, devices: Iterable[str]) -> None:
        """One clear error when no live node could ever run a unit on one of `devices`."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        for device in dict.fromkeys(devices):
            need = _needs(self.request(device))
            if not any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
                offered = "; ".join(_offer(n) for n in nodes) or "no live node"
                raise InfercmpError(
                    f"no node of the Ray cluster has what a {device} combination needs "
                    f"({_offer(need)}); nodes offer: {offered}. Start nodes with "
                    f"ray start --resources '{{\"{CPU_SLOT}\": 1}}' (docs/distributed.md)"
                )

    # ----------------------------------------------------------------- running

    def outcomes(
        self, units: Iterable[WorkUnit], listener: BenchListener, total: int
    ) -> Iterator[tuple[WorkUnit, WorkerOutcome]]:
        """Run the combinations side by side and each one's processes in turn; yield each
        outcome as its task ends.

        Every combination's first process is submitted at once (Ray queues those that wait for
        resources). Its next process is submitted when the last one ended ok, so it queues
        behind the other combinations' waiting processes: the round-robin order of the local
        executor, with one process per GPU at a time. After a process that
        `ends_combination` none of its combination is submitted, so bench stores it from the
        same processes as the local executor does (and no worker runs for nothing).

        `listener.combination_started` is not called: a submitted task may wait in Ray's queue,
        and the driver does not learn when it starts; progress comes from what finished.
        """
        ray = self._ray
        later: dict[Any, collections.deque[WorkUnit]] = {}
        for unit in units:
            if unit.combo in later:
                later[unit.combo].append(unit)
            else:
                later[unit.combo] = collections.deque()
                self._submit(unit)
        try:
            while self._running:
                # A short wait keeps this thread returning to Python, where signals are handled.
                ready, _ = _unmasked(ray.wait, list(self._running), num_returns=1, timeout=0.5)
                for ref in ready:
                    unit = self._running.pop(ref)
                    outcome = self._collect(ref, unit)
                    yield unit, outcome
                    waiting = later[unit.combo]
                    if waiting and not outcome.ends_combination:
                        self._submit(waiting.popleft())
        finally:
            self._cancel(list(self._running))

    def _submit(self, unit: WorkUnit) -> None:
        build = self._device_build(unit)
        paths = _shipped_paths(unit.spec)
        if build is not None and build.calibration is not None:
            paths.append(build.calibration.path)  # the node calibrates its own int8 build
        ref = self._task.options(**self.request(unit.combo.device)).remote(
            unit.spec,
            {str(p): self._ship(p) for p in paths},
            build,
            self.sample_hz,
            self.timeout_s,
            self._driver,
        )
        self._running[ref] = unit

    def _device_build(self, unit: WorkUnit) -> _DeviceBuild | None:
        prepared = self._prepared
        if prepared is None or prepared.onnx is None:
            return None
        if not get_descriptor(unit.spec.engine).builds_on_device:
            return None
        calibration = prepared.calibration if unit.combo.precision == "int8" else None
        return _DeviceBuild(prepared.onnx, unit.combo.engine.options, prepared.batches, calibration)

    def _ship(self, path: Path) -> _Shipped:
        """The cache entry holding `path`, put in the object store once per run."""
        entry = path.parent
        if entry not in self._shipped:
            files = {
                str(f.relative_to(entry)): f.read_bytes()
                for f in sorted(entry.rglob("*"))
                if f.is_file()
            }
            self._shipped[entry] = _Shipped.of(files, self._ray.put(files))
        return self._shipped[entry]

    def _collect(self, ref: Any, unit: WorkUnit) -> WorkerOutcome:
        """The unit's outcome; its worker's files land in the run store as a local run's do."""
        try:
            outcome, files = _unmasked(self._ray.get, ref)
        except Exception as exc:  # the task itself died (node lost, Ray worker killed)
            text = " ".join(str(exc).split())[:500]
            return WorkerOutcome(
                "crashed", f"Ray task failed: {type(exc).__name__}: {text}", None, {}, [], ""
            )
        workdir = unit.spec.result_dir
        workdir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (workdir / name).write_bytes(data)
        return outcome

    def _cancel(self, refs: list[Any]) -> None:
        """Stop running tasks: first as an interruption (the task kills its worker's group),
        then, after a grace period, by killing the Ray worker (the lifeline kills the group)."""
        if not refs:
            return
        ray = self._ray
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        with contextlib.suppress(Exception):
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        for ref in list(self._running):
            self._running.pop(ref, None)


def _run_token() -> None:
    """Give the local instance a token that lives in this process's environment only.

    Ray 2.60 turns token authentication on for a new local instance and, when it finds no
    token, writes a new one to ~/.ray/auth_token through a plain open(): mode 0644 under the
    usual umask, readable by every user of the machine, and kept after the run. Ray reads
    RAY_AUTH_TOKEN before any file (its documented precedence) and then writes none; the
    instance's processes inherit the variable, and a process's environment is readable by
    its own user only.

    Only before `ray` is imported: Ray takes its token when imported (with ray 2.60.0 and an
    existing ~/.ray/auth_token, a token set after `import ray` left the driver with the
    file's and the GCS with the variable's, and it refused the driver). Left as they are:
    RAY_AUTH_MODE other than token (disabled: the user's choice), and a token the user gives
    in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH.
    """
    if "ray" in sys.modules or os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold the stop signals (`infercmp.run.signals.STOP_SIGNALS`) for the block: yields the list of
    those that arrived. The first is held; a second goes at once to the handler that was there
    (an impatient user still stops the driver). Signals ignored before stay ignored."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held  # signal handlers can only be set, and only run, in the main thread
        return
    previous: dict[int, Any] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous.clear()

    def hold(signum: int, _frame: Any) -> None:
        held.append(signum)
        if len(held) > 1:
            restore()
            signal.raise_signal(signum)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, hold)
    try:
        yield held
    finally:
        restore()


def _unmasked(call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(...)`, but a stop signal that arrives inside it is raised as itself.

    Ray checks for signals in its C++ wait loop; the exception our handler raises there
    (`infercmp.run.signals.Interrupted`) comes out wrapped in a SystemError.
    """
    try:
        return call(*args, **kwargs)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not isinstance(cause, Exception):
            raise cause from None
        raise


def _needs(options: dict[str, Any]) -> dict[str, float]:
    need = {k: float(v) for k, v in options["resources"].items()}
    if options["num_gpus"]:
        need["GPU"] = float(options["num_gpus"])
    if options.get("accelerator_type"):
        need[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    return need


def _offer(resources: dict[str, float]) -> str:
    shown = {
        k: v
        for k, v in resources.items()
        if not k.startswith("node:") and k not in ("memory", "object_store_memory")
    }
    return ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items()))


#: How long the driver waits for a TCP connection to `--ray-address` before saying it cannot
#: reach it (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """One clear error, fast, when HOST:PORT of `--ray-address` accepts no connection."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or an address without a port: Ray resolves it
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InfercmpError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the "
            "address and that its head node runs (ray start --head)"
        ) from None


def _connect_error(address: str | None, exc: Exception) -> str:
    text = " ".join(str(exc).split())[:300]
    if type(exc).__name__ == "AuthenticationError" or "authentication" in text.lower():
        return (
            f"the Ray cluster at {address} refused this driver: it requires token "
            "authentication. Put the cluster's token (ray get-auth-token, on the head node) in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token and set RAY_AUTH_MODE=token "
            f"(docs/distributed.md): {text}"
        )
    if address:
        return f"cannot connect to the Ray cluster at {address}: {text}"
    return f"cannot start a local Ray instance: {text}"


def _shipped_paths(spec: WorkerSpec) -> list[Path]:
    """Every file the spec names: its artifact, its reference outputs, the samples of its
    accuracy phase, and option values that are files on the driver (ONNX Runtime's fp16
    model travels as the option `fp16_model`)."""
    samples = spec.accuracy.samples if spec.accuracy is not None else None
    named = [p for p in (spec.artifact, spec.reference, samples) if p is not None]
    named += [Path(v) for v in spec.options.values() if isinstance(v, str) and Path(v).is_file()]
    return named
