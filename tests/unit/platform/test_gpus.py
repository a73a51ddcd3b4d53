"""GPU facts on a host with two kinds of GPU: every reader follows CUDA_VISIBLE_DEVICES.

Issue 24: the TensorRT plan cache key (the GPU's name, read in engines/tensorrt/flavour.py) and the
power limit the energy check compares with read NVML's GPU 0 whatever CUDA_VISIBLE_DEVICES said,
so a worker given the H100 of an A100 + H100 host got the A100's plan and the A100's limit.
"""

from __future__ import annotations

import sys
import types

import pytest

from infercmp.engines.tensorrt import flavour
from infercmp.platform import gpus
from infercmp.platform.host import node_facts, power_limit_w
from infercmp.run.environment import collect_environment
from infercmp.sampler.nvml import NvmlSampler

A100_UUID = "GPU-a100aaaa-0000-0000-0000-000000000000"
H100_UUID = "GPU-h100bbbb-1111-1111-1111-111111111111"
CARDS = (
    {"name": "NVIDIA A100-PCIE-40GB", "uuid": A100_UUID, "cc": (8, 0), "limit_mw": 250_000},
    {"name": "NVIDIA H100 80GB HBM3", "uuid": H100_UUID, "cc": (9, 0), "limit_mw": 700_000},
)


def _fake_pynvml() -> types.ModuleType:
    """nvidia-ml-py on a host whose GPU 0 is an A100 (8.0, 250 W) and GPU 1 an H100 (9.0, 700 W)."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    nvml.NVMLError = NVMLError
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM = 1, 2
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    nvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: 13000
    nvml.nvmlDeviceGetCount = lambda: len(CARDS)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nvml.nvmlDeviceGetName = lambda h: CARDS[h[1]]["name"].encode()
    nvml.nvmlDeviceGetUUID = lambda h: CARDS[h[1]]["uuid"]
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: CARDS[h[1]]["cc"]
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: CARDS[h[1]]["limit_mw"]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=40 << 30, used=0)
    nvml.nvmlDeviceGetClockInfo = lambda h, kind: 1000
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, kind: 2000
    nvml.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=f"0000:0{h[1]}:00.0")
    return nvml


@pytest.fixture
def two_kinds_of_gpu(monkeypatch):
    nvml = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpus, "_nvml", lambda: nvml)
    return nvml


VISIBLE_H100 = ["1", H100_UUID, "GPU-h100", "1,0"]


@pytest.mark.parametrize("visible", VISIBLE_H100)
def test_the_plan_cache_key_names_the_visible_gpu(two_kinds_of_gpu, monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert flavour.gpu_model() == "NVIDIA H100 80GB HBM3"
    assert flavour.visible_gpus()[0].compute_capability == (9, 0)


@pytest.mark.parametrize("visible", VISIBLE_H100)
def test_the_power_limit_is_the_visible_gpus(two_kinds_of_gpu, monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert power_limit_w(collect_environment()) == 700.0


@pytest.mark.parametrize("visible", VISIBLE_H100)
def test_every_reader_names_the_same_gpu(two_kinds_of_gpu, monkeypatch, visible):
    """platform.gpus, the plan key, run.json's node and the NVML sampler agree on the H100."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus.gpu_name(0) == flavour.gpu_model() == node_facts(cuda=True)["gpu_name"]
    assert node_facts(cuda=True)["gpu_index"] == 1
    assert NvmlSampler()._handle_for(two_kinds_of_gpu) == (("gpu", 1), 1)


@pytest.mark.parametrize("visible", ["", "-1", "2", "GPU-ffff", "GPU-"])
def test_no_visible_gpu_has_no_plan_key_and_no_power_limit(two_kinds_of_gpu, monkeypatch, visible):
    """An entry naming no GPU (out of range, unknown or ambiguous UUID prefix) hides them all."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus.cuda_device_count() == 0
    assert flavour.gpu_model() == "cpu-only"
    assert power_limit_w(collect_environment()) is None
    assert "gpu_name" not in node_facts(cuda=True)


@pytest.mark.parametrize("visible", VISIBLE_H100)
def test_platform_gpus_reads_the_visible_gpu(two_kinds_of_gpu, monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus.gpu_name(0) == "NVIDIA H100 80GB HBM3"
    assert gpus.compute_capability(0) == (9, 0)


def test_without_cuda_visible_devices_gpu_0_is_nvmls_gpu_0(two_kinds_of_gpu, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert flavour.gpu_model() == gpus.gpu_name(0) == "NVIDIA A100-PCIE-40GB"
    assert power_limit_w(collect_environment()) == 250.0
