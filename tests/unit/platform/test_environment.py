"""Machine metadata: every field present, no heavy imports, never raises."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from infercmp.engines import registry as engines
from infercmp.platform import host as environment
from infercmp.run.environment import LIBRARIES, collect_environment
from infercmp.workload import plugins


def test_fields_are_present_and_json_serialisable():
    env = collect_environment()
    for key in (
        "python",
        "platform",
        "hostname",
        "cpu_model",
        "cpu_logical_cores",
        "cpu_physical_cores",
        "ram_total_bytes",
        "libraries",
        "nvml",
        "gpus",
    ):
        assert key in env, key
    assert env["python"] == ".".join(str(v) for v in sys.version_info[:3])
    assert env["cpu_logical_cores"] >= 1
    assert env["ram_total_bytes"] > 0
    libraries = env["libraries"]
    for name in ("infercmp", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy"):
        assert name in libraries
    assert libraries["numpy"] is not None  # infercmp itself is None when run from a source tree
    assert set(env["nvml"]) == {"available", "reason", "driver_version", "cuda_driver_version"}
    if not env["nvml"]["available"]:
        assert env["gpus"] == [] and env["nvml"]["reason"]
    for gpu in env["gpus"]:
        assert gpu["name"] and gpu["memory_total_bytes"] > 0
    json.dumps(env)


def test_cpu_model_is_read_from_proc_cpuinfo_when_present():
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        names = []
    if names:
        assert collect_environment()["cpu_model"] == names[0]


def test_library_versions_do_not_import_the_libraries():
    code = (
        "import sys; from infercmp.run.environment import collect_environment; "
        "collect_environment(); "
        "print(','.join(m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', "
        "'onnx', 'polars', 'plotly') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_never_raises_when_everything_breaks(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(environment.metadata, "version", broken)
    monkeypatch.setattr(environment, "_cpu_model", broken)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    env = collect_environment()
    assert env["libraries"]["torch"] is None
    assert env["nvml"] == {
        "available": False,
        "reason": "nvidia-ml-py is not installed",
        "driver_version": None,
        "cuda_driver_version": None,
    }
    assert "cpu" in env["errors"][0]


def test_gpus_are_described_through_nvml(monkeypatch):
    import types

    nvml = types.ModuleType("pynvml")
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM = 1, 2

    class NVMLError_NotSupported(Exception):  # noqa: N801 - pynvml's naming
        pass

    def unsupported(*args):
        raise NVMLError_NotSupported()

    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    nvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: 13000
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H200"
    nvml.nvmlDeviceGetUUID = lambda h: "GPU-1234"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=150754820096)
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    nvml.nvmlDeviceGetClockInfo = lambda h, kind: {1: 345, 2: 3201}[kind]
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, kind: {1: 1980, 2: 3201}[kind]
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000
    nvml.nvmlDeviceGetPciInfo = unsupported
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    env = collect_environment()
    assert env["nvml"] == {
        "available": True,
        "reason": None,
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
    }
    assert env["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "driver_version": "580.159.04",
            "cuda_driver_version": "13.0",
            "uuid": "GPU-1234",
            "memory_total_bytes": 150754820096,
            "compute_capability": "9.0",
            "sm_clock_mhz": 345,
            "sm_clock_max_mhz": 1980,
            "memory_clock_mhz": 3201,
            "memory_clock_max_mhz": 3201,
            "power_limit_w": 700.0,
            "pci_bus_id": None,
        }
    ]


class _FakeDist:
    def __init__(self, name: str) -> None:
        self.name = name


def _entry_point(group: str, name: str, value: str, package: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name, value, group)._for(_FakeDist(package))


def test_every_engine_runtime_and_plugin_package_is_recorded(monkeypatch):
    """A third-party engine's package, the runtime its descriptor names and a model plugin's
    package all reach `libraries`, which compare's environment check and the report read."""
    registered = {
        engines.ENTRY_POINT_GROUP: [
            _entry_point(
                engines.ENTRY_POINT_GROUP, "openvino", "infercmp.engines.openvino:DESCRIPTOR",
                "acme-engines",
            ),
            _entry_point(engines.ENTRY_POINT_GROUP, "ghost", "no_such_module:D", "ghost-engine"),
        ],
        plugins.ENTRY_POINT_GROUP: [
            _entry_point(plugins.ENTRY_POINT_GROUP, "acme-net", "acme:Net", "acme-models")
        ],
    }  # fmt: skip
    versions = {"acme-engines": "3.0", "ghost-engine": "0.1", "acme-models": "1.2", "openvino": "9"}
    real_version = metadata.version

    def version(dist: str) -> str:
        return versions[dist] if dist in versions else real_version(dist)

    monkeypatch.setattr(metadata, "entry_points", lambda group: registered.get(group, []))
    monkeypatch.setattr(metadata, "version", version)
    libraries = collect_environment()["libraries"]
    # the broken engine's package is recorded although its descriptor cannot be loaded
    assert {k: libraries.get(k) for k in versions} == versions


def test_every_library_is_recorded_null_when_absent(monkeypatch):
    """Review of #23 A.5: a library recorded only when present (cuda-python, psutil, ...) read
    as unknown to compare when another run had it, so installing or removing it went unseen."""
    real_version = metadata.version

    def version(dist: str) -> str:
        if dist == "cuda-python":
            raise metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(metadata, "version", version)
    libraries = collect_environment()["libraries"]
    assert "cuda-python" in libraries and libraries["cuda-python"] is None
    assert set(LIBRARIES) <= set(libraries)
