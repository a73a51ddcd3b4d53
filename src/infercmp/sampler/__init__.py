"""Samplers of the worker's memory, CPU and GPU use, run in the parent process while it works.

samplers, messages = default_samplers()
for message in messages:
    console.print(message)              # once per run: which samplers were left out, why
with SamplingSession(worker.pid, samplers, hz=20.0) as session:
    session.set_phase("load")           # as the worker reports its phases
    ...
rows = session.rows                     # -> RunStore.add_result(..., samples=rows)
peak(rows, "proc_rss_bytes", "measure"), energy_joules(rows)
"""

from __future__ import annotations

from infercmp.sampler.base import ProcessGone, Reading, Sampler
from infercmp.sampler.nvml import NvmlSampler
from infercmp.sampler.polling import SamplingSession
from infercmp.sampler.process import ProcessSampler
from infercmp.sampler.system import SystemSampler
from infercmp.sampler.usage import (
    BackgroundLoad,
    EnergyWindow,
    background_load,
    energy_joules,
    energy_window,
    mean_over_measure,
    peak,
)

_TITLES = {"process": "process", "system": "system", "nvml": "NVML"}


def available(candidates: list[Sampler]) -> tuple[list[Sampler], list[str]]:
    """Split `candidates` into those that can work here and one message per one left out."""
    usable: list[Sampler] = []
    messages: list[str] = []
    for sampler in candidates:
        try:
            reason = sampler.unavailable_reason()
        except Exception as exc:  # a third-party sampler's check must not stop the run
            reason = f"its check failed ({type(exc).__name__}: {exc})"
        if reason is None:
            usable.append(sampler)
        else:
            messages.append(f"{_TITLES.get(sampler.name, sampler.name)} sampler left out: {reason}")
    return usable, messages


def default_samplers(gpu: bool = True, gpu_index: int = 0) -> tuple[list[Sampler], list[str]]:
    """The process and system samplers, and NVML on CUDA device `gpu_index` when `gpu` is true.

    Returns the usable samplers and one message per sampler left out, e.g.
    "NVML sampler left out: no NVIDIA driver (NVMLError_LibraryNotFound)"; print each once.
    """
    candidates: list[Sampler] = [ProcessSampler(), SystemSampler()]
    if gpu:
        candidates.append(NvmlSampler(gpu_index))
    return available(candidates)


__all__ = [
    "EnergyWindow",
    "energy_window",
    "mean_over_measure",
    "BackgroundLoad",
    "background_load",
    "NvmlSampler",
    "ProcessGone",
    "ProcessSampler",
    "Reading",
    "Sampler",
    "SamplingSession",
    "SystemSampler",
    "available",
    "default_samplers",
    "energy_joules",
    "peak",
]
