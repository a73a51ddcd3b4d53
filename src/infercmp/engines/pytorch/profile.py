"""The PyTorch engine's profile (`--profile`): torch.profiler over the engine's own calls, each
op or kernel attributed to the module of the plugin that ran it.

Forward pre/post hooks on every submodule open and close a `record_function` range named
`infercmp.module:<path>` (the user's path, `layer1.0.conv1`; "" is the top-level module), and
each profiled call sits in an `infercmp.iteration` range. In the profiler's event tree:

- on the CPU, an event is the outermost op of a call (`aten::conv2d`, its inner
  `aten::convolution` ... `aten::mkldnn_convolution` inside it), with its inclusive time:
  outermost ops never nest, so no time counts twice; `exec_type` is the op inside it that took
  the most time of its own over all calls (the implementation, `aten::mkldnn_convolution`);
- on CUDA, an event is a kernel or copy (device time), under the outermost op that launched it
  (`name`), the op that launched it directly (`op_type`) and its kernel name (`exec_type`);
  `device_busy_ms` is the union of their intervals per iteration;
- either way `module` is the innermost module range around the op; an op outside every module
  (copies in and out) has none.

torch.compile and the int8 PT2E program run compiled graphs that forward hooks do not see
into: their events carry no module. Under a CUDA graph the kernels come from an eager run of
the same module on the same inputs, and the wall times from the graph's replays.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from infercmp.core.contract import ProfileEvent, RawProfile
from infercmp.engines.base import HotPath, busy_time, timed_calls

PROFILER = "torch.profiler"
MODULE_RANGE = "infercmp.module:"
ITERATION_RANGE = "infercmp.iteration"
#: Inductor's range around one compiled graph's generated code: "## Call CompiledFxGraph <hash> ##".
COMPILED_GRAPH = re.compile(r"^## Call CompiledFxGraph \S* ?##$")
COMPILED_GRAPH_NAME = "CompiledFxGraph"

CPU_NOTE = (
    "CPU op times: the outermost aten op of each call with its inner ops (torch.profiler's "
    "inclusive CPU time), under the innermost module whose forward ran it; time between ops "
    "(Python, module hooks) is in no event"
)
CUDA_NOTE = (
    "CUDA kernel and copy times (device time), each under the aten op that launched it and the "
    "innermost module whose forward ran that op"
)
GRAPH_NOTE = (
    "kernel times from an eager run of the same module: a CUDA graph replays as one launch "
    "(wall_ms are the graph's replays, unprofiled)"
)
COMPILE_NOTE = (
    "torch.compile: forward hooks do not see inside a compiled module, so events carry no "
    "module (Inductor's kernels fuse ops of several modules)"
)
COMPILED_CPU_NOTE = (
    "Inductor's generated C++ code of each compiled graph is one event, "
    f"'{COMPILED_GRAPH_NAME}' (the graph call's own time, outside the aten ops it calls)"
)
SCRIPTED_NOTE = "the module refuses forward hooks (a TorchScript module): events carry no module"
UNHOOKED_NOTE = (
    "no module's forward hook ran inside a profiled call (a traced or scripted forward?): "
    "events carry no module"
)
INT8_NOTE = (
    "int8: the PT2E program runs as compiled graphs that forward hooks do not see inside, so "
    "events carry no module"
)


@dataclass(frozen=True)
class ProfileTarget:
    """What the engine hands its profiler.

    `hot_path` is the engine's (copy_in, compute, copy_out, synchronize); `module` the plugin's
    own nn.Module to hook (None where hooks cannot see inside: `opaque_note` says why);
    `eager_step` (under a CUDA graph) one eager call of the same module on the same static
    inputs, synchronized, whose kernels stand for the graph's.
    """

    torch: Any
    hot_path: HotPath
    cuda: bool
    module: Any = None
    eager_step: Callable[[], None] | None = None
    opaque_note: str | None = None


def take_profile(target: ProfileTarget, iterations: int, warmup: int) -> RawProfile:
    """`warmup` calls unprofiled, then `iterations` calls under torch.profiler."""
    torch = target.torch
    step = _timed(target.hot_path)
    notes = [CUDA_NOTE if target.cuda else CPU_NOTE]
    with module_ranges(torch, target.module) as hooked:
        for _ in range(warmup):
            step()
        if target.eager_step is None:
            wall, events = _profiled(torch, step, iterations, target.cuda)
        else:
            wall = [step() for _ in range(iterations)]
            eager = _eager_timed(target.eager_step)
            for _ in range(warmup):
                eager()
            _, events = _profiled(torch, eager, iterations, target.cuda)
            notes.append(GRAPH_NOTE)
    is_device = _device_test(torch)
    found, busy_us = collect_events(events, target.cuda, is_device)
    if target.opaque_note:
        notes.append(target.opaque_note)
    elif target.module is not None and all(e.module is None for e in found):
        notes.append(UNHOOKED_NOTE if hooked else SCRIPTED_NOTE)
    if not target.cuda and any(e.name == COMPILED_GRAPH_NAME for e in found):
        notes.append(COMPILED_CPU_NOTE)
    return RawProfile(
        profiler=PROFILER,
        iterations=iterations,
        wall_ms=wall,
        device_busy_ms=busy_us / 1e3 / iterations if busy_us is not None else None,
        events=found,
        notes=notes,
    )


@contextlib.contextmanager
def module_ranges(torch: Any, module: Any) -> Iterator[bool]:
    """Forward hooks on `module` and every submodule that keep a profiler range open around
    each forward, named by its path; removed on leaving, whatever happens. Yields whether they
    are on (a TorchScript module refuses hooks: then none are, and nothing is attributed)."""
    if module is None:
        yield False
        return
    open_ranges: list[Any] = []
    # The C++ range dynamo uses: about 0.5 us a range here against record_function's 4.7
    # (measured on this VM's CPU); ResNet-50 opens 151 a call, which the profiled wall
    # carries into the closure against the timed median.
    make_range = getattr(torch._C._profiler, "_RecordFunctionFast", None)
    if make_range is None:
        make_range = torch.profiler.record_function

    def enter(path: str) -> Callable[..., None]:
        name = MODULE_RANGE + path

        def hook(_module: Any, _args: Any) -> None:
            handle = make_range(name)
            handle.__enter__()
            open_ranges.append(handle)

        return hook

    def leave(_module: Any, _args: Any, _output: Any) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = []
    try:
        try:
            for path, submodule in module.named_modules():
                handles.append(submodule.register_forward_pre_hook(enter(path)))
                handles.append(submodule.register_forward_hook(leave))
        except RuntimeError:  # "register_forward_pre_hook is not supported on ScriptModules"
            for handle in handles:
                handle.remove()
            handles = []
        yield bool(handles)
    finally:
        for handle in handles:
            handle.remove()
        while open_ranges:  # a forward that raised left its ranges open
            open_ranges.pop().__exit__(None, None, None)


def _timed(calls: HotPath) -> Callable[[], float]:
    """One call of the hot path, its wall ms (engines.base.timed_calls)."""
    return lambda: timed_calls(calls, 1)[0]


def _eager_timed(eager_step: Callable[[], None]) -> Callable[[], float]:
    def step() -> float:
        started = time.perf_counter()
        eager_step()
        return (time.perf_counter() - started) * 1e3

    return step


def _profiled(
    torch: Any, step: Callable[[], float], iterations: int, cuda: bool
) -> tuple[list[float], Any]:
    """Each call's wall ms, and the profiler's events of all of them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    wall = []
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iterations):
            with torch.profiler.record_function(ITERATION_RANGE):
                wall.append(step())
    return wall, prof.events()


def _device_test(torch: Any) -> Callable[[Any], bool]:
    cuda = torch.autograd.DeviceType.CUDA
    return lambda event: bool(event.device_type == cuda)


# -- the event tree -> ProfileEvents -------------------------------------------------------------


@dataclass
class _Totals:
    """Time (us) and calls per (module, name, op_type, exec_type); where exec_type is left
    empty, the op inside with the most time of its own over all calls (`own`)."""

    rows: dict[tuple[str | None, str, str, str], list[float]] = field(default_factory=dict)
    own: dict[tuple[str | None, str, str, str], dict[str, float]] = field(default_factory=dict)

    def add(
        self, module: str | None, name: str, op_type: str, exec_type: str, micros: float
    ) -> tuple[str | None, str, str, str]:
        key = (module, name, op_type, exec_type)
        row = self.rows.setdefault(key, [0.0, 0])
        row[0] += max(micros, 0.0)
        row[1] += 1
        return key

    def add_own(self, key: tuple[str | None, str, str, str], event: Any) -> None:
        """Each op's own time under `event` (it included), towards the row's exec_type."""
        own = self.own.setdefault(key, {})
        pending = [event]
        while pending:
            each = pending.pop()
            if _is_op(each):
                own[each.name] = own.get(each.name, 0.0) + each.self_cpu_time_total
            pending.extend(each.cpu_children)

    def events(self, device: str) -> list[ProfileEvent]:
        found = []
        for key, (micros, calls) in self.rows.items():
            module, name, op_type, exec_type = key
            own = self.own.get(key)
            if not exec_type and own:
                exec_type = max(sorted(own), key=lambda op: own[op])
            found.append(
                ProfileEvent(
                    name=name,
                    op_type=op_type,
                    exec_type=exec_type,
                    device=device,  # "cpu" or "cuda"
                    total_ms=micros / 1e3,
                    calls=int(calls),
                    module=module,
                )
            )
        return found


def collect_events(
    events: Iterable[Any], cuda: bool, is_device: Callable[[Any], bool]
) -> tuple[list[ProfileEvent], float | None]:
    """ProfileEvents from torch.profiler's FunctionEvents (with `cpu_parent`/`cpu_children`,
    `time_range`, `cpu_time_total`, `self_cpu_time_total`, `linked_correlation_id`), and on
    CUDA the union of the device events' intervals in us (None on the CPU).

    Only what ran inside an `infercmp.iteration` range counts (kernels: launched from there).
    """
    events = list(events)
    owners: dict[int, tuple[str | None, str, str]] = {}  # cpu event id -> module, outer, own
    cpu = _Totals()
    for event in events:
        if event.name == ITERATION_RANGE and not is_device(event):
            for child in event.cpu_children:
                _walk(child, None, cpu, owners)
    if not cuda:
        return cpu.events("cpu"), None
    # A range of ours has a device-side twin (gpu_user_annotation) spanning its kernels:
    # not a kernel, and counting it would count them twice.
    device_events = [e for e in events if is_device(e) and not _is_range(e)]
    if device_events and not hasattr(device_events[0], "linked_correlation_id"):
        return _kernels_by_op(events, device_events, owners, is_device)
    kernels = _Totals()
    intervals = []
    for event in device_events:
        owner = owners.get(event.linked_correlation_id)
        if owner is None:
            continue
        module, outer, launcher = owner
        start, end = event.time_range.start, event.time_range.end
        kernels.add(module, outer, launcher, event.name, end - start)
        intervals.append((start, end))
    return kernels.events("cuda"), busy_time(intervals)


def _kernels_by_op(
    events: list[Any],
    device_events: list[Any],
    owners: dict[int, tuple[str | None, str, str]],
    is_device: Callable[[Any], bool],
) -> tuple[list[ProfileEvent], float | None]:
    """The CUDA events where a device event does not name its launching op (torch before
    2.14 has no `linked_correlation_id`): each op's own `kernels` (name and duration) go to
    its module, and the busy time is the union of the device events inside the profiled
    calls' ranges."""
    kernels = _Totals()
    for event in events:
        owner = owners.get(event.id)
        if owner is None:
            continue
        module, outer, launcher = owner
        for kernel in getattr(event, "kernels", ()):
            kernels.add(module, outer, launcher, kernel.name, kernel.duration)
    calls = [e.time_range for e in events if e.name == ITERATION_RANGE and not is_device(e)]
    if not calls:
        return kernels.events("cuda"), None
    first, last = min(c.start for c in calls), max(c.end for c in calls)
    intervals = [
        (e.time_range.start, e.time_range.end)
        for e in device_events
        if first <= e.time_range.start <= last
    ]
    return kernels.events("cuda"), busy_time(intervals)


def _walk(
    event: Any,
    module: str | None,
    cpu: _Totals,
    owners: dict[int, tuple[str | None, str, str]],
) -> None:
    name = event.name
    if name.startswith(MODULE_RANGE):
        module = name[len(MODULE_RANGE) :]
    elif _is_op(event):
        cpu.add_own(cpu.add(module, name, name, "", event.cpu_time_total), event)
        _own(event, module, name, owners)
        return
    elif COMPILED_GRAPH.match(name):
        cpu.add(module, COMPILED_GRAPH_NAME, "inductor", "", event.self_cpu_time_total)
        name = COMPILED_GRAPH_NAME
    owners[event.id] = (module, name, name)  # a kernel launched outside any op (Triton)
    for child in event.cpu_children:
        _walk(child, module, cpu, owners)


def _is_op(event: Any) -> bool:
    """An operator (aten::, mkldnn::, quantized::...), not a range of ours or the profiler's."""
    return not _is_range(event) and "::" in event.name


def _is_range(event: Any) -> bool:
    """A range: a user annotation, or one of our module ranges (the fast kind is recorded
    as a function, not as an annotation)."""
    return bool(event.is_user_annotation) or event.name.startswith(MODULE_RANGE)


def _own(
    event: Any, module: str | None, outer: str, owners: dict[int, tuple[str | None, str, str]]
) -> None:
    """`event` and everything under it belong to the outermost op `outer` in `module`."""
    pending = [event]
    while pending:
        each = pending.pop()
        owners[each.id] = (module, outer, each.name)
        pending.extend(each.cpu_children)
