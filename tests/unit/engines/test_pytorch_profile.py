"""The PyTorch engine's profile: ops and kernels attributed to the plugin's own module paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prepared_engines import prepared_on_cpu

from infercmp.core.contract import RawProfile
from infercmp.engines import EngineSpec
from infercmp.engines.base import EngineBase, EngineError, UnsupportedCombination
from infercmp.engines.descriptor import _declaration_problems
from infercmp.engines.pytorch import profile as pt_profile
from infercmp.engines.pytorch.runtime import PyTorchEngine
from infercmp.engines.registry import get_descriptor
from infercmp.workload.plugins import get_plugin


def _engine(model: str, **options) -> tuple[PyTorchEngine, list[np.ndarray]]:
    engine = PyTorchEngine()
    return engine, prepared_on_cpu(engine, model, **options)


def _paths(model: str) -> set[str]:
    return {path for path, _ in get_plugin(model).load_pytorch_module().named_modules()}


def _hooks(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("model", ["tiny-two-io", "tiny-encoder"])
def test_several_inputs_and_outputs_profile_under_the_plugins_module_paths(model, tmp_path):
    engine, _ = _engine(model)
    try:
        raw = engine.profile(2, 1, tmp_path / "profile")
        assert raw.profiler == "torch.profiler" and len(raw.wall_ms) == 2
        modules = {e.module for e in raw.events} - {None}
        assert modules and modules <= _paths(model)
        assert any(m for m in modules)  # not everything at the top level
        assert all(e.device == "cpu" and e.calls > 0 for e in raw.events)
        assert sum(e.total_ms for e in raw.events) < sum(raw.wall_ms)
        assert _hooks(engine._module) == 0
        again = engine.profile(2, 0, tmp_path / "profile")
        assert len(again.events) == len(raw.events)
        assert {(e.module, e.name) for e in again.events} == {
            (e.module, e.name) for e in raw.events
        }
        assert _hooks(engine._module) == 0
        assert not (tmp_path / "profile").exists()  # torch.profiler writes no files here
    finally:
        engine.release()


def test_the_same_calls_unprofiled_surround_the_profiled_run(tmp_path, monkeypatch):
    """EngineBase.profile times `iterations` calls of the hot path without the profiler, half
    before the engine's profiled run and half after, on the same engine: the profiler's own
    cost, apart from what changed since the timed phase."""
    engine, _ = _engine("tiny-two-io")
    calls: list[str] = []
    compute = engine._compute

    def counted() -> None:
        calls.append("call")
        compute()

    def profiled(iterations, warmup, workdir):
        calls.append("profiled")
        return RawProfile(profiler="p", iterations=iterations, wall_ms=[1.0] * 5,
                                     events=[])  # fmt: skip

    monkeypatch.setattr(engine, "_compute", counted)
    monkeypatch.setattr(engine, "_profile", profiled)
    try:
        raw = engine.profile(5, 2, tmp_path)
    finally:
        engine.release()
    assert calls == ["call"] * (2 + 3) + ["profiled"] + ["call"] * 2  # warm-up, 3, run, 2
    assert len(raw.unprofiled_wall_ms) == 5 and all(ms > 0 for ms in raw.unprofiled_wall_ms)
    assert raw.wall_ms == [1.0] * 5  # the engine's own profiled calls, untouched


def test_a_new_shape_profiles_at_that_shape(tmp_path):
    engine, inputs = _engine("tiny-encoder")
    try:
        longer = [np.concatenate([a, a], axis=1) for a in inputs]  # twice the sequence
        engine.prepare(longer)
        raw = engine.profile(1, 0, tmp_path)
        assert raw.events and all(e.calls >= 1 for e in raw.events)
        assert [o.shape[1] for o in engine.copy_out()[:1]] == [longer[0].shape[1]]
    finally:
        engine.release()


def test_profile_needs_a_prepared_engine_and_an_engine_without_one_says_so(tmp_path):
    engine = PyTorchEngine()
    with pytest.raises(EngineError, match="before profile"):
        engine.profile(1, 0, tmp_path)

    class NoProfiler(EngineBase):
        descriptor = get_descriptor("pytorch")

        def _load(self, spec): ...
        def _prepare(self, inputs): ...
        def _copy_in(self): ...
        def _compute(self): ...
        def _copy_out(self):
            return []

        def _synchronize(self): ...
        def _release(self): ...

    other = NoProfiler()
    other.load(EngineSpec("tiny-cnn", "cpu", "fp32", None, ("image",), ("logits",)))
    other.prepare([np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(UnsupportedCombination, match="has no per-layer profiler"):
        other.profile(1, 0, tmp_path)
    with pytest.raises(EngineError, match="iterations >= 1"):
        other.profile(0, 0, tmp_path)


def test_the_descriptor_declares_a_profiler_in_words():
    assert get_descriptor("pytorch").profiler == "torch.profiler"
    descriptor = get_descriptor("pytorch")
    assert not _declaration_problems(descriptor)
    for bad in ("", "  ", 3):
        broken = type("Broken", (type(descriptor),), {"profiler": bad})()
        assert any(p.startswith("profiler ") for p in _declaration_problems(broken))


def test_without_hooks_events_carry_no_module_and_the_note_says_why():
    """torch.compile and int8 programs: hooks cannot see inside, nothing is invented."""
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    x = torch.ones(2, 4)

    def compute():
        with torch.inference_mode():
            module(x)

    target = pt_profile.ProfileTarget(
        torch=torch,
        hot_path=(lambda: None, compute, lambda: None, lambda: None),
        cuda=False,
        module=None,
        opaque_note=pt_profile.COMPILE_NOTE,
    )
    raw = pt_profile.take_profile(target, 2, 0)
    assert {e.op_type for e in raw.events} >= {"aten::linear", "aten::relu"}
    assert all(e.module is None for e in raw.events)
    assert pt_profile.COMPILE_NOTE in raw.notes


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_module_that_refuses_hooks_profiles_without_modules():
    import torch

    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4)).eval())
    x = torch.ones(2, 4)

    def compute():
        with torch.inference_mode():
            module(x)

    target = pt_profile.ProfileTarget(
        torch=torch,
        hot_path=(lambda: None, compute, lambda: None, lambda: None),
        cuda=False,
        module=module,
    )
    raw = pt_profile.take_profile(target, 1, 0)
    assert raw.events and all(e.module is None for e in raw.events)
    assert pt_profile.SCRIPTED_NOTE in raw.notes


def test_under_a_cuda_graph_wall_is_the_replays_and_events_the_eager_calls():
    """The graph path's bookkeeping, on the CPU: the hot path (replays) is timed, unprofiled,
    and the eager step is what the profiler sees, hooked."""
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    x = torch.ones(2, 4)
    counts = {"replays": 0, "eager": 0}

    def replay():
        counts["replays"] += 1

    def eager():
        counts["eager"] += 1
        with torch.inference_mode():
            module(x)

    target = pt_profile.ProfileTarget(
        torch=torch,
        hot_path=(lambda: None, replay, lambda: None, lambda: None),
        cuda=False,
        module=module,
        eager_step=eager,
    )
    raw = pt_profile.take_profile(target, 3, 1)
    assert counts == {"replays": 4, "eager": 4} and len(raw.wall_ms) == 3
    assert pt_profile.GRAPH_NOTE in raw.notes
    linear = [e for e in raw.events if e.op_type == "aten::linear"]
    assert [(e.module, e.calls) for e in linear] == [("0", 3)]
    assert _hooks(module) == 0


# -- the event tree, as torch.profiler builds it, without a GPU ----------------------------------


@dataclass
class FakeEvent:
    name: str
    id: int = 0
    start: float = 0.0
    end: float = 0.0
    self_us: float = 0.0
    device: str = "cpu"
    linked_correlation_id: int = 0
    is_user_annotation: bool = False
    cpu_children: list[FakeEvent] = field(default_factory=list)
    cpu_parent: FakeEvent | None = None

    @property
    def time_range(self):
        return SimpleNamespace(start=self.start, end=self.end)

    @property
    def cpu_time_total(self) -> float:
        return self.end - self.start

    @property
    def self_cpu_time_total(self) -> float:
        return self.self_us


def _tree(name: str, *children: FakeEvent, **fields) -> FakeEvent:
    event = FakeEvent(name, is_user_annotation=name.startswith("infercmp."), **fields)
    for child in children:
        child.cpu_parent = event
        event.cpu_children.append(child)
    return event


def _is_device(event: FakeEvent) -> bool:
    return event.device == "cuda"


def test_kernels_go_to_the_op_that_launched_them_and_busy_time_is_their_union():
    conv = _tree(
        "aten::conv2d",
        _tree("aten::cudnn_convolution", id=11, start=2, end=9, self_us=6),
        id=10,
        start=1,
        end=10,
    )
    iteration = _tree(
        pt_profile.ITERATION_RANGE,
        _tree("aten::copy_", id=12, start=0, end=1),
        _tree(
            pt_profile.MODULE_RANGE + "layer1", _tree(pt_profile.MODULE_RANGE + "layer1.0", conv)
        ),
    )
    kernels = [
        FakeEvent("implicit_gemm", 101, 20, 25, device="cuda", linked_correlation_id=11),
        FakeEvent("implicit_gemm", 102, 23, 28, device="cuda", linked_correlation_id=11),
        FakeEvent("Memcpy HtoD", 103, 10, 12, device="cuda", linked_correlation_id=12),
        FakeEvent("elsewhere", 104, 40, 50, device="cuda", linked_correlation_id=999),
    ]
    # The device-side twin of a range (gpu_user_annotation) spans kernels: not one itself.
    twin = FakeEvent(pt_profile.MODULE_RANGE + "layer1.0", 105, 19, 29, device="cuda")
    twin.is_user_annotation, twin.linked_correlation_id = True, 11
    kernels.append(twin)
    events, busy = pt_profile.collect_events(
        [iteration, *kernels, *_flatten(iteration)], True, _is_device
    )
    rows = {(e.module, e.name, e.op_type, e.exec_type): (e.total_ms, e.calls) for e in events}
    assert rows == {
        ("layer1.0", "aten::conv2d", "aten::cudnn_convolution", "implicit_gemm"): (0.01, 2),
        (None, "aten::copy_", "aten::copy_", "Memcpy HtoD"): (0.002, 1),
    }
    assert all(e.device == "cuda" for e in events)
    assert busy == pytest.approx(10.0)  # [10, 12] and [20, 28]: the kernel outside is not ours


@dataclass
class OldDeviceEvent:
    """A device event of torch before 2.14: no `linked_correlation_id` (seen on the GPU
    machine's torch 2.11: AttributeError in the first profile run there)."""

    name: str
    id: int
    start: float
    end: float
    is_user_annotation: bool = False

    @property
    def time_range(self):
        return SimpleNamespace(start=self.start, end=self.end)


def test_without_correlation_ids_each_op_keeps_the_kernels_torch_gave_it():
    cudnn = _tree("aten::cudnn_convolution", id=11, start=2, end=9, self_us=6)
    cudnn.kernels = [SimpleNamespace(name="implicit_gemm", duration=5.0)] * 2  # type: ignore[attr-defined]
    conv = _tree("aten::conv2d", cudnn, id=10, start=1, end=10)
    iteration = _tree(
        pt_profile.ITERATION_RANGE,
        _tree(pt_profile.MODULE_RANGE + "layer1", conv),
        id=1,
        start=0,
        end=30,
    )
    device = [
        OldDeviceEvent("implicit_gemm", 101, 20, 25),
        OldDeviceEvent("implicit_gemm", 102, 23, 28),
        OldDeviceEvent("after the calls", 103, 40, 50),
        OldDeviceEvent(pt_profile.MODULE_RANGE + "layer1", 104, 19, 29, True),
    ]
    events, busy = pt_profile.collect_events(
        [iteration, *device, *_flatten(iteration)], True, lambda e: isinstance(e, OldDeviceEvent)
    )
    rows = {(e.module, e.name, e.op_type, e.exec_type): (e.total_ms, e.calls) for e in events}
    assert rows == {
        ("layer1", "aten::conv2d", "aten::cudnn_convolution", "implicit_gemm"): (0.01, 2)
    }
    assert busy == pytest.approx(8.0)  # [20, 28]: the range's twin and later work left out


def test_cpu_ops_are_the_outermost_with_the_implementation_that_took_longest():
    def conv(start: float) -> FakeEvent:
        return _tree(
            "aten::conv2d",
            _tree("aten::mkldnn_convolution", start=start + 1, end=start + 8, self_us=6),
            _tree("aten::empty", start=start + 8, end=start + 9, self_us=1),
            start=start,
            end=start + 10,
            self_us=2,
        )

    compiled = _tree(
        "## Call CompiledFxGraph f7owt7 ##",
        _tree("aten::addmm", start=31, end=34, self_us=3),
        start=30,
        end=40,
        self_us=7,
    )
    first = _tree(pt_profile.ITERATION_RANGE, _tree(pt_profile.MODULE_RANGE + "", conv(0)))
    second = _tree(pt_profile.ITERATION_RANGE, _tree(pt_profile.MODULE_RANGE + "", conv(50)))
    third = _tree(pt_profile.ITERATION_RANGE, compiled)
    stray = conv(100)  # not inside an iteration: not ours
    events, busy = pt_profile.collect_events([first, second, third, stray], False, _is_device)
    rows = {(e.module, e.name, e.exec_type): (e.total_ms, e.calls) for e in events}
    assert rows == {
        ("", "aten::conv2d", "aten::mkldnn_convolution"): (0.02, 2),
        (None, "CompiledFxGraph", ""): (0.007, 1),
        (None, "aten::addmm", "aten::addmm"): (0.003, 1),
    }
    assert busy is None


def _flatten(event: FakeEvent) -> list[FakeEvent]:
    return [event, *(e for child in event.cpu_children for e in _flatten(child))]


@pytest.mark.slow
def test_a_compiled_module_profiles_without_modules(tmp_path: Path):
    engine, _ = _engine("tiny-cnn", compile="default")
    try:
        raw = engine.profile(2, 1, tmp_path)
        assert raw.events and all(e.module is None for e in raw.events)
        assert pt_profile.COMPILE_NOTE in raw.notes
        assert _hooks(engine._module) == 0
    finally:
        engine.release()
