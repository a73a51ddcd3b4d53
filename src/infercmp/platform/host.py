"""Facts about this host for run.json: Python, platform, CPU, RAM, GPUs, read cheaply.

The versions of the libraries, which ask the engines and plugins, are added by
`infercmp.run.environment.collect_environment`, the record's one assembler.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.platform import gpus

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")


def distribution_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, read from its metadata (never imported);
    None when it is not installed or its METADATA is broken. Never raises."""
    try:
        return metadata.version(dist)
    except Exception:  # not installed, or a broken METADATA file: never stop a run
        return None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels only "Hardware" or "Model".
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    if value.strip():
                        return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_and_memory() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": None,
        "cpu_affinity_cores": None,
        "ram_total_bytes": None,
    }
    try:
        info["cpu_logical_cores"] = psutil.cpu_count(logical=True)
        info["cpu_physical_cores"] = psutil.cpu_count(logical=False)
        info["ram_total_bytes"] = psutil.virtual_memory().total
    except Exception:
        pass
    try:
        # The cores this process may run on (containers and taskset restrict them).
        info["cpu_affinity_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return info


def _python() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def _platform() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
    }


def host_environment(libraries: Callable[[], dict[str, str | None]]) -> dict[str, Any]:
    """run.json's `environment`, with `libraries()` as its `libraries`; fast (no heavy imports)
    and never raises: a step that fails is named under `errors`."""
    env: dict[str, Any] = {}
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "python": _python,
        "platform": _platform,
        "cpu": _cpu_and_memory,
        "libraries": lambda: {"libraries": libraries()},
        "cuda_visible_devices": lambda: {"cuda_visible_devices": gpus.cuda_visible_devices()},
    }
    errors = []
    for name, step in steps.items():
        try:
            env.update(step())
        except Exception as exc:  # pragma: no cover - each step already guards itself
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        env["nvml"], env["gpus"] = gpus.describe_gpus()
    except Exception as exc:  # pragma: no cover
        env["nvml"], env["gpus"] = {"available": False, "reason": str(exc)}, []
    if errors:
        env["errors"] = errors
    return env


def power_limit_w(environment: dict[str, Any]) -> float | None:
    """The enforced power limit (NVML) of the GPU the workers use, for plausibility checks:
    CUDA device 0 of this process's CUDA_VISIBLE_DEVICES, found in `environment["gpus"]` by
    NVML index or UUID (not NVML's GPU 0, another card on a host with two kinds of GPU)."""
    entry = gpus.visible_entry(environment.get("gpus") or [])
    return entry.get("power_limit_w") if entry is not None else None


def node_facts(cuda: bool) -> dict[str, Any]:
    """Where a worker runs: this host, its CPU and, when `cuda`, the GPU the worker will use.

    The worker uses CUDA device 0 of its CUDA_VISIBLE_DEVICES (an executor such as Ray sets
    that variable per task); that device is matched to NVML by index or UUID. The keys are
    `infercmp.store.run_store.NodeInfo`'s. Never raises.
    """
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cuda_visible_devices": gpus.cuda_visible_devices(),
    }
    if not cuda:
        return facts
    try:
        _, described = gpus.describe_gpus()
        gpu = gpus.visible_entry(described)
    except Exception:  # never let metadata collection stop a run
        return facts
    if gpu is not None:
        facts.update(
            gpu_name=gpu.get("name"),
            gpu_uuid=gpu.get("uuid"),
            gpu_index=gpu["index"],
            driver_version=gpu.get("driver_version"),
        )
    return facts
