"""The environment section of the page: each run's machine, GPUs, libraries and bench
settings, written for a person (NVML's reasons in words, sizes in GiB, settings as sentences)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infercmp.report.figures import esc
from infercmp.report.runs import RunView


def environment_section(runs: list[RunView]) -> str:
    """Machine, software and bench settings of each run, in words rather than raw keys."""
    blocks = []
    for run in runs:
        env = run.environment
        machine = _rows(_machine_facts(env))
        libraries = _rows(
            (name, version)
            for name, version in sorted((env.get("libraries") or {}).items())
            if version
        )
        gpus = _rows(_gpu_facts(env))
        settings = _rows(_settings_facts(run.meta.get("settings") or {}))
        blocks.append(
            f"<div class=envblock><h3>{esc(run.label)} <code>{esc(run.path.name)}</code></h3>"
            '<div class="grid3">'
            f'<table class="kvtable"><caption>machine</caption>{machine}</table>'
            f'<table class="kvtable"><caption>GPUs</caption>{gpus}</table>'
            f'<table class="kvtable"><caption>libraries</caption>{libraries}</table>'
            + (
                f'<table class="kvtable"><caption>bench settings</caption>{settings}</table>'
                if (run.meta.get("settings") or {})
                else ""
            )
            + "</div></div>"
        )
    return f'<section id="environment"><h2>Environment</h2>{"".join(blocks)}</section>'


def _rows(facts: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return rows or "<tr><td>–</td></tr>"


def _machine_facts(env: dict) -> list[tuple[str, str]]:
    facts = [("host", env.get("hostname")), ("system", env.get("platform"))]
    facts.append(("CPU", cpu_text(env)))
    if env.get("python"):
        implementation = env.get("python_implementation")
        facts.append(("Python", env["python"] + (f" ({implementation})" if implementation else "")))
    if env.get("cuda_visible_devices") is not None:
        facts.append(("CUDA_VISIBLE_DEVICES", env["cuda_visible_devices"]))
    return [(k, str(v)) for k, v in facts if v]


# NVML's reasons for not answering, as a person would say them.
_NVML_REASONS = {
    "LibraryNotFound": "no NVIDIA driver is installed",
    "DriverNotLoaded": "the NVIDIA driver is not loaded",
    "NoPermission": "no permission to query the GPUs",
    "Uninitialized": "the NVIDIA driver did not start",
}


def _gpu_facts(env: dict) -> list[tuple[str, str]]:
    gpus = env.get("gpus") or []
    nvml = env.get("nvml") or {}
    if not gpus:
        reason = str(nvml.get("reason") or "")
        said = next((text for key, text in _NVML_REASONS.items() if key in reason), None)
        return [("none found", said or (f"the GPU query failed: {reason}" if reason else "–"))]
    facts = []
    for gpu in gpus:
        parts = []
        memory = gpu.get("memory_total_bytes")
        if isinstance(memory, int) and memory > 2**30:
            parts.append(f"{memory / 2**30:.0f} GiB")
        if gpu.get("compute_capability"):
            parts.append(f"compute capability {gpu['compute_capability']}")
        if gpu.get("sm_clock_max_mhz"):
            parts.append(
                f"SM clock {gpu.get('sm_clock_mhz') or '?'} of {gpu['sm_clock_max_mhz']} MHz"
            )
        if gpu.get("power_limit_w"):
            parts.append(f"power limit {gpu['power_limit_w']:g} W")
        facts.append((str(gpu.get("name") or "GPU"), ", ".join(parts) or "–"))
    driver = nvml.get("driver_version") or gpus[0].get("driver_version")
    cuda = nvml.get("cuda_driver_version") or gpus[0].get("cuda_driver_version")
    if driver or cuda:
        facts.append(
            ("driver", " ".join(x for x in (driver, f"(CUDA {cuda})" if cuda else "") if x))
        )
    return facts


def _settings_facts(settings: dict) -> list[tuple[str, str]]:
    """bench's settings (docs/results-format.md, run.json) as sentences; unknown keys as given."""
    settings = dict(settings)
    measurement = dict(settings.pop("measurement", None) or {})
    facts = []
    shapes = settings.pop("experiments", None)
    if shapes:
        facts.append(("shapes", ", ".join(map(str, shapes))))
    if measurement:
        facts.append(("warm-up", _warmup_text(measurement)))
        facts.append(("measured", _measure_text(measurement)))
        if measurement.get("timeout_s"):
            facts.append(("worker timeout", f"{measurement['timeout_s']:g} s"))
        if "device_resident" in measurement:
            facts.append(
                (
                    "inputs",
                    "already on the device (compute alone is timed)"
                    if measurement["device_resident"]
                    else "copied from the host on every call",
                )
            )
    if settings.get("sample_hz"):
        facts.append(("sampling", f"{settings.pop('sample_hz'):g} readings per second"))
    names = {"exporter": "ONNX exporter", "onnx": "ONNX file"}
    for key, value in settings.items():
        if value is not None:
            facts.append((names.get(key, key.replace("_", " ")), _human(key, value)))
    return facts


def _warmup_text(m: dict) -> str:
    parts = []
    if m.get("warmup_iters"):
        parts.append(f"{m['warmup_iters']} iterations")
    if m.get("warmup_seconds"):
        parts.append(f"{m['warmup_seconds']:g} s")
    return " or ".join(parts) or "none"


def _measure_text(m: dict) -> str:
    if m.get("iters"):
        return f"{m['iters']} iterations"
    if m.get("duration_s"):
        return f"for {m['duration_s']:g} s"
    if m.get("ci_target"):
        text = f"until the median's 95% CI is within ±{m['ci_target'] * 100:g}%"
        limits = []
        if m.get("min_iters"):
            limits.append(f"at least {m['min_iters']} iterations")
        if m.get("max_seconds"):
            limits.append(f"at most {m['max_seconds']:g} s")
        return text + (f" ({', '.join(limits)})" if limits else "")
    return "–"


def cpu_text(env: dict) -> str:
    """CPU, cores and RAM from `infercmp.platform.host.collect_environment()`'s keys."""
    text = str(env.get("cpu_model") or "unknown CPU")
    physical = env.get("cpu_physical_cores")
    logical = env.get("cpu_logical_cores")
    usable = env.get("cpu_affinity_cores")
    if physical and logical and logical != physical:
        text += f", {physical} cores / {logical} threads"
    elif physical or logical:
        text += f", {physical or logical} cores"
    if usable and logical and usable < logical:
        text += f" ({usable} usable by this process)"
    ram = env.get("ram_total_bytes")
    if isinstance(ram, int | float) and ram > 2**20:
        text += f", {ram / 2**30:.0f} GiB RAM"
    return text


def gpu_text(env: dict) -> str:
    gpus = env.get("gpus") or []
    if not gpus:
        return "none"
    first = gpus[0]
    name = str(first.get("name") or "GPU")
    text = f"{len(gpus)}× {name}" if len(gpus) > 1 else name
    memory = first.get("memory_total_bytes")
    if isinstance(memory, int | float) and memory > 2**30:
        text += f" ({memory / 2**30:.0f} GiB)"
    driver = first.get("driver_version") or (env.get("nvml") or {}).get("driver_version")
    return text + (f", driver {driver}" if driver else "")


def _human(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and "bytes" in key
        and value > 2**20
    ):
        return f"{value / 2**30:.1f} GiB"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
