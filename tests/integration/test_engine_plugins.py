"""Engines are plugins: descriptors found through entry points, a third-party engine installed
for real, OpenVINO as a built-in, and an orchestrator that knows no engine by name."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from infercmp.core.errors import InfercmpError
from infercmp.engines import registry as engines
from infercmp.engines.descriptor import EngineDescriptor, Machine
from infercmp.store.run_store import RunStore

FIXTURES = Path(__file__).parents[1] / "fixtures" / "engines"
SRC = Path(__file__).parents[2] / "src" / "infercmp"
BUILT_IN = ("pytorch", "onnxruntime", "tensorrt", "openvino")


# --- discovery, with fake entry points --------------------------------------------------------


class _FakeDist:
    def __init__(self, name: str) -> None:
        self.name = name


def _entry_point(name: str, value: str, package: str) -> metadata.EntryPoint:
    ep = metadata.EntryPoint(name, value, engines.ENTRY_POINT_GROUP)
    return ep._for(_FakeDist(package)) if hasattr(ep, "_for") else ep


@pytest.fixture
def fake_entry_points(monkeypatch):
    def install(*eps):
        monkeypatch.setattr(metadata, "entry_points", lambda **params: list(eps))

    return install


def test_fake_registry_lists_a_broken_engine_as_unavailable(fake_entry_points):
    fake_entry_points(
        _entry_point("pytorch", "infercmp.engines.pytorch:DESCRIPTOR", "infercmp"),
        _entry_point("ghost", "no_such_module_anywhere:DESCRIPTOR", "ghost-engine"),
    )
    entries = engines.engine_entries()
    assert entries["pytorch"].load().name == "pytorch"
    assert entries["ghost"].load() is None
    assert "ModuleNotFoundError" in entries["ghost"].error
    with pytest.raises(InfercmpError, match="engine 'ghost' from package 'ghost-engine' is un"):
        engines.get_descriptor("ghost")


def test_fake_registry_names_both_packages_of_a_duplicate(fake_entry_points):
    fake_entry_points(
        _entry_point("pytorch", "infercmp.engines.pytorch:DESCRIPTOR", "infercmp"),
        _entry_point("pytorch", "other.module:DESCRIPTOR", "other-package"),
    )
    with pytest.raises(InfercmpError, match="registered by two packages: 'infercmp'"):
        engines.get_descriptor("pytorch")


def test_fake_registry_rejects_a_descriptor_of_another_name(fake_entry_points):
    fake_entry_points(_entry_point("torch", "infercmp.engines.pytorch:DESCRIPTOR", "x"))
    with pytest.raises(InfercmpError, match="has name 'pytorch' but is registered as 'torch'"):
        engines.get_descriptor("torch")


def test_unknown_engine_suggests_by_substring():
    with pytest.raises(InfercmpError, match=r"unknown engine 'onnx'; did you mean 'onnxruntime'"):
        engines.get_descriptor("onnx")


# --- descriptors ------------------------------------------------------------------------------


def test_every_built_in_engine_is_registered_by_entry_point():
    entries = engines.engine_entries()
    for name in BUILT_IN:
        assert entries[name].package == "infercmp"
        assert isinstance(entries[name].load(), EngineDescriptor)


def test_descriptors_import_no_runtime():
    code = (
        "import sys\n"
        "from infercmp.engines.registry import engine_entries\n"
        "for entry in engine_entries().values(): entry.load()\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx_bindings',"
        " 'openvino') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_options_are_typed_and_strict():
    pytorch = engines.get_descriptor("pytorch")
    with pytest.raises(InfercmpError, match=r"option threads=1.5: Input should be a valid integ"):
        pytorch.parse_options({"threads": 1.5})
    with pytest.raises(InfercmpError, match=r"no option 'thread' \(known options: channels_la"):
        pytorch.parse_options({"thread": 1})
    with pytest.raises(InfercmpError, match="already replays CUDA graphs"):
        pytorch.parse_options({"compile": "max-autotune", "cuda_graph": True})
    assert pytorch.parse_options({"threads": 2}).threads == 2


def test_option_devices_come_from_the_options_model():
    ort = engines.get_descriptor("onnxruntime")
    assert not ort.options.applies_to("enable_cuda_graph", "cpu")
    assert ort.options.applies_to("enable_cuda_graph", "cuda")
    assert ort.options.applies_to("intra_op_threads", "cpu")


def test_refusals_come_from_descriptors():
    machine = Machine(cuda_devices=0, cpu_flags=frozenset({"avx2"}))
    assert "lack bf16 kernels" in engines.get_descriptor("onnxruntime").refusal(
        "cpu", "bf16", machine
    )
    assert engines.get_descriptor("tensorrt").refusal("cpu", "fp32", machine) == (
        "TensorRT runs on NVIDIA GPUs only"
    )
    assert "fp16 on CPU is not a deployment" in engines.get_descriptor("pytorch").refusal(
        "cpu", "fp16", machine
    )
    openvino = engines.get_descriptor("openvino")
    assert "avx512_bf16 or amx_bf16, which this CPU lacks" in openvino.refusal(
        "cpu", "bf16", machine
    )
    assert openvino.refusal("cpu", "bf16", Machine(0, frozenset({"amx_bf16"}))) is None


def test_no_engine_name_in_orchestrator_worker_or_cli():
    """Adding an engine touches its own package and one entry point, nothing else."""
    modules = [
        path
        for package in ("run", "worker", "core", "cli")
        for path in sorted((SRC / package).rglob("*.py"))
    ]
    found = []
    for path in modules:
        tree = ast.parse(path.read_text())
        # `lazy_import("onnxruntime")` names a library (debug-precision runs ONNX files in
        # ONNX Runtime whatever the engine), not the engine of that name
        libraries = {
            id(call.args[0])
            for call in ast.walk(tree)
            if isinstance(call, ast.Call)
            and getattr(call.func, "id", None) == "lazy_import"
            and call.args
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in BUILT_IN:
                if id(node) not in libraries:
                    found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert found == []


# --- OpenVINO, the fourth built-in engine ------------------------------------------------------

requires_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="openvino is not installed (pip install 'infercmp[openvino]')",
)


@requires_openvino
def test_openvino_options_reach_the_compiled_model(tmp_path):
    from infercmp.artifacts.cache import ArtifactCache
    from infercmp.artifacts.onnx_export import export_onnx
    from infercmp.artifacts.reference import ensure_reference
    from infercmp.core.parity import compare_outputs
    from infercmp.engines import EngineSpec
    from infercmp.engines.registry import engine_class
    from infercmp.worker.run import load_reference
    from infercmp.workload.plugins import get_plugin
    from infercmp.workload.shapes import default_experiment

    plugin = get_plugin("tiny-cnn")
    cache = ArtifactCache(tmp_path / "cache")
    onnx = export_onnx(plugin, cache)
    inputs, reference = load_reference(
        ensure_reference(plugin, cache, default_experiment(plugin.config))
    )
    engine = engine_class("openvino")()
    engine.load(
        EngineSpec(
            model="tiny-cnn",
            device="cpu",
            precision="fp32",
            artifact=onnx.path,
            input_names=tuple(plugin.config.input_names),
            output_names=tuple(plugin.config.output_names),
            options={"threads": 1, "streams": 1, "performance_hint": "throughput"},
        )
    )
    engine.prepare(inputs)
    engine.copy_in()
    engine.compute()
    outputs = [o.copy() for o in engine.copy_out()]
    assert (engine.info["threads"], engine.info["streams"]) == (1, 1)
    engine.release()
    parity = compare_outputs(outputs, reference, plugin.config.output_names, 1e-4)
    assert parity.ok, parity.failures()


# --- a third-party engine, pip-installed for real ----------------------------------------------


@pytest.fixture(scope="session")
def installed_engines(tmp_path_factory):
    """The fixture engine packages pip-installed into a private --target directory."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("building the fixture engines needs hatchling (in infercmp's dev extra)")
    root = tmp_path_factory.mktemp("engines")
    sources = [shutil.copytree(FIXTURES / n, root / "src" / n) for n in ("reference", "broken")]
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), *map(str, sources)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


def _env(target: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", INFERCMP_CACHE_DIR=str(tmp_path / "c"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def _cli(target: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_env(target, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_installed_engine_is_listed_and_a_broken_one_does_not_take_the_cli_down(
    installed_engines, tmp_path
):
    result = _cli(installed_engines, tmp_path, "engines", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(BUILT_IN) <= set(rows)
    assert rows["onnx-reference"]["available"] is True
    assert rows["onnx-reference"]["package"] == "infercmp-fixture-engine"
    assert rows["onnx-reference"]["options"][0]["name"] == "verbose"
    assert rows["broken-engine"]["available"] is False
    assert "this engine's runtime library is missing" in rows["broken-engine"]["reason"]
    help_text = _cli(installed_engines, tmp_path, "bench", "--help").stdout
    assert "onnx-reference" in help_text


def test_installed_engine_runs_through_bench(installed_engines, tmp_path):
    engines_asked = ["-e", "onnx-reference[verbose=0]", "-e", "onnxruntime"]
    result = _cli(
        installed_engines, tmp_path, "bench", "tiny-two-io", *engines_asked, "-d", "cpu",
        "--iters", "20", "--warmup", "2", "-o", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = {r.engine: r for r in RunStore.open(run).results}
    ours = summary["onnx-reference"]
    assert (ours.status, ours.iterations, ours.parity["ok"]) == ("ok", 20, True)
    assert ours.options == {"verbose": 0}
    assert ours.variant == "verbose=0"
    assert summary["onnxruntime"].status == "ok"


@pytest.mark.slow  # over 10 s on the 2-vCPU VM
def test_installed_engine_passes_the_conformance_suite(installed_engines, tmp_path):
    """The same parametrized suite every built-in engine passes, picked up from the registry."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(Path(__file__).parents[1] / "unit" / "engines" / "test_engines.py"),
         "-k", "onnx-reference"],
        env=_env(installed_engines, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    # lifecycle x 3 models, stream, device-resident, invalid use, unknown option
    assert "7 passed" in result.stdout, result.stdout[-500:]


def test_engine_labels_echo_what_was_typed():
    from infercmp.run.plan import parse_engine

    choice = parse_engine("pytorch[ channels_last=true , cuda_graph=TRUE ]")
    assert choice.label == "pytorch[channels_last=true,cuda_graph=TRUE]"  # not `True`
    assert choice.options == (("channels_last", True), ("cuda_graph", True))
    with pytest.raises(InfercmpError, match=r"--engine 'onnxruntime\[': options go in brackets"):
        parse_engine("onnxruntime[")


# --- a broken engine plugin takes down nothing but itself (issue 23, C.20) ---------------------


class _Fine(EngineDescriptor):
    summary = "a fake engine on infercmp's ONNX export"
    devices = ("cpu",)
    runtime = "infercmp.engines.onnxruntime.runtime:OnnxRuntimeEngine"


class _AvailabilityRaises(_Fine):
    name = "bad-availability"

    def availability(self):
        raise RuntimeError("probe crashed")


class _RefusalRaises(_Fine):
    name = "bad-refusal"

    def refusal(self, device, precision, machine):
        raise KeyError(device)


class _ConvertRaises(_Fine):
    name = "bad-convert"

    def convert(self, context, precision, options):
        raise ZeroDivisionError("division by zero")


class _OptionsNotAModel(_Fine):
    name = "bad-options"
    options = dict  # type: ignore[assignment]


class _ConcurrencyNone(_Fine):
    name = "bad-concurrency"
    concurrency = None  # type: ignore[assignment]


BROKEN = {
    cls.name: cls
    for cls in (
        _AvailabilityRaises,
        _RefusalRaises,
        _ConvertRaises,
        _OptionsNotAModel,
        _ConcurrencyNone,
    )
}


@pytest.fixture
def broken_engines(monkeypatch):
    """pytorch and onnxruntime for real, next to one broken engine of each kind (the models
    are the installed ones)."""
    import types

    module = types.ModuleType("fake_broken_engines")
    for cls in BROKEN.values():
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    fakes = [
        _entry_point("pytorch", "infercmp.engines.pytorch:DESCRIPTOR", "infercmp"),
        _entry_point("onnxruntime", "infercmp.engines.onnxruntime:DESCRIPTOR", "infercmp"),
        *(
            _entry_point(name, f"{module.__name__}:{cls.__name__}", f"{name}-package")
            for name, cls in BROKEN.items()
        ),
    ]
    real = metadata.entry_points

    def entry_points(**params):
        return fakes if params.get("group") == engines.ENTRY_POINT_GROUP else real(**params)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_engines_lists_each_broken_engine_with_its_reason(broken_engines):
    from typer.testing import CliRunner

    from infercmp.cli import app

    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
    result = runner.invoke(app, ["engines", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["pytorch"]["available"] is True
    assert rows["bad-availability"]["available"] is False
    assert rows["bad-availability"]["reason"] == (
        "engine 'bad-availability' is broken: availability() raised RuntimeError: probe crashed"
    )
    assert rows["bad-options"]["broken"] is True
    assert "options <class 'dict'> is not a subclass of" in rows["bad-options"]["reason"]
    assert "concurrency None is not a dict of device -> text" in (rows["bad-concurrency"]["reason"])
    text = runner.invoke(app, ["engines"])
    assert text.exit_code == 0, text.output
    assert "bad-options (bad-options-package): broken: TypeError: engine 'bad-options' is " in (
        text.output
    )
    assert "Traceback" not in text.output
    one = runner.invoke(app, ["engines", "bad-concurrency"])
    assert one.exit_code == 0, one.output
    assert one.output.startswith("bad-concurrency (bad-concurrency-package): broken: TypeError")


def test_a_broken_engine_is_noted_by_default_tune_and_never_by_a_command_naming_others(
    broken_engines,
):
    from infercmp.cli.tune import _engines

    found, notes = _engines([], "cpu")
    # Only a refusal() or convert() that raises is left for the search to record per candidate.
    assert set(found) == {"pytorch", "onnxruntime", "bad-refusal", "bad-convert"}
    assert any("bad-availability' is broken: availability() raised" in n for n in notes)
    assert any("engine 'bad-options' (bad-options-package) is unavailable" in n for n in notes)
    found, notes = _engines(["onnxruntime"], "cpu")
    assert (list(found), notes) == (["onnxruntime"], [])
    from infercmp.tune.candidates import cheap_candidates

    candidates, excluded = cheap_candidates(found["onnxruntime"], "cpu", Machine(0), None)
    assert candidates
    candidates, excluded = cheap_candidates(
        engines.get_descriptor("bad-refusal"), "cpu", Machine(0), None
    )
    assert candidates == []
    assert excluded[0].reason == "engine 'bad-refusal' is broken: refusal() raised KeyError: 'cpu'"


def test_bench_records_each_broken_engine_and_runs_the_others(
    broken_engines, shared_cache, monkeypatch, tmp_path
):
    from typer.testing import CliRunner

    from infercmp.cli import app
    from infercmp.platform import gpus as devices
    from infercmp.run import worker_process
    from infercmp.run.worker_process import WorkerOutcome

    ran = []

    def stub_worker(spec, timeout_s, sample_hz, samplers, on_phase=lambda phase: None):
        ran.append(spec.engine)
        return WorkerOutcome("skipped", "worker not started in this test", None, {}, [], "")

    monkeypatch.setenv("INFERCMP_CACHE_DIR", str(shared_cache.root))
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(worker_process, "run_worker", stub_worker)
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
    out = tmp_path / "runs"
    for args in (
        [],  # every installed engine
        ["-e", "onnxruntime", "-e", "bad-convert", "-e", "bad-refusal", "-e", "bad-availability"],
    ):
        result = runner.invoke(
            app, ["bench", "tiny-cnn", "-d", "cpu", "--iters", "5", "-o", str(out), *args]
        )
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert out.is_dir(), result.output
        run = max(out.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        store = RunStore.open(run)
        assert store.status == "complete", result.output
        results = {r.engine: r for r in store.results}
        assert results["bad-convert"].status == "failed"
        assert "engine 'bad-convert' is broken: convert() raised ZeroDivisionError" in (
            results["bad-convert"].error
        )
        assert "refusal() raised KeyError" in results["bad-refusal"].error
        assert "availability() raised RuntimeError" in results["bad-availability"].error
        assert "onnxruntime" in ran and "bad-convert" not in ran
        ran.clear()


def test_each_built_in_cpu_engine_names_its_one_thread_variant():
    """Issue 23, A.6: the remedy for thread contention is the engine's own option, from its
    descriptor; a declared option the engine does not have names no remedy."""
    from infercmp.engines.registry import get_descriptor

    variants = {
        name: get_descriptor(name).one_thread_variant()
        for name in ("pytorch", "onnxruntime", "openvino")
    }
    assert variants == {
        "pytorch": "pytorch[threads=1]",
        "onnxruntime": "onnxruntime[intra_op_threads=1]",
        "openvino": "openvino[threads=1]",
    }
    wrong = type("Wrong", (type(get_descriptor("pytorch")),), {"cpu_threads_option": "nthreads"})
    assert wrong().one_thread_variant() is None


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("distributions", "openvino", "distributions 'openvino' is not a tuple of distribution"),
        ("cpu_threads_option", "nthreads", "cpu_threads_option 'nthreads' is not the name of one"),
    ],
)
def test_a_declaration_of_the_newer_attributes_is_checked_too(attribute, value, reason):
    """Review of #23: a string for `distributions` recorded the libraries 'o', 'p', 'e', ...
    in run.json, and a misnamed thread option silently dropped the contention remedy."""
    from infercmp.engines.descriptor import _declaration_problems

    bad = type("Bad", (_Fine,), {"name": "bad", attribute: value})()
    assert any(p.startswith(reason) for p in _declaration_problems(bad)), _declaration_problems(bad)
    assert not _declaration_problems(type("Good", (_Fine,), {"name": "good"})())
