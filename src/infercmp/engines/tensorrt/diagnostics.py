"""Why a TensorRT runtime refused a plan, in one line: the product and version, the GPU's
compute capabilities it supports, and what its log and validity check said."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infercmp.engines.tensorrt.flavour import RTX_COMPUTE_CAPABILITIES

BACKEND_LABELS: dict[str, str] = {"tensorrt": "TensorRT", "tensorrt_rtx_bindings": "TensorRT-RTX"}


def backend_label(module: Any) -> str:
    """'TensorRT 10.13' or 'TensorRT-RTX 1.7': the product and its major.minor version."""
    product = BACKEND_LABELS.get(module.__name__.split(".")[0], module.__name__)
    version = ".".join(str(getattr(module, "__version__", "?")).split(".")[:2])
    return f"{product} {version}"


def is_rtx(module: Any) -> bool:
    return module.__name__.split(".")[0] == "tensorrt_rtx_bindings"


def rtx_supported_ccs(module: Any) -> tuple[tuple[int, int], ...]:
    """Compute capabilities this TensorRT-RTX module can target, read from its own enum.

    `ComputeCapability` lists `SM75`, `SM80`, ..., `SM121` in TensorRT-RTX 1.7, matching
    docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/cpu-engines.html
    ("8.0, 8.6, 8.9, 12.0, and later"; 7.5 when asked for): the installed version knows best.
    """
    enum = getattr(module, "ComputeCapability", None)
    members = getattr(enum, "__members__", {}) if enum is not None else {}
    found = []
    for name in members:
        match = re.fullmatch(r"SM(\d+)(\d)", name)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    if found:
        return tuple(sorted(found))
    return tuple(sorted(RTX_COMPUTE_CAPABILITIES))


# TensorRT-RTX 1.7 on an H200 logs (seen there): "The engine cannot run on this GPU, which has
# compute capability 9.0. Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0. ..."
_LOGGED_CCS = re.compile(r"Supported compute capabilities:\s*((?:>?\d+\.\d+\s*)+)")


def logged_supported_ccs(messages: Sequence[str]) -> str | None:
    """The runtime's own list of supported compute capabilities from its log ("8.0/.../>12.0")."""
    for message in messages:
        match = _LOGGED_CCS.search(message)
        if match:
            return "/".join(match.group(1).split())
    return None


def format_ccs(ccs: Sequence[tuple[int, int]]) -> str:
    return "/".join(f"{major}.{minor}" for major, minor in ccs)


def deserialize_failure_message(
    module: Any,
    artifact: Path | str,
    gpu: str | None,
    cc: tuple[int, int] | None,
    log_errors: Sequence[str],
    validity: str | None = None,
) -> str:
    """One line saying why the runtime refused the plan, the GPU's part first."""
    label = backend_label(module)
    if is_rtx(module) and cc is not None and cc not in rtx_supported_ccs(module):
        # The runtime's logged list is exact for the plan; the module's enum is the fallback.
        supported = logged_supported_ccs(log_errors) or format_ccs(rtx_supported_ccs(module))
        return (
            f"{label} cannot run engines on {gpu or 'this GPU'} (compute capability "
            f"{cc[0]}.{cc[1]}); it supports {supported}; use the 'tensorrt' "
            "backend (pip install 'infercmp[tensorrt]')"
        )
    reasons = [validity] if validity else []
    reasons += [" ".join(e.split()) for e in log_errors[-2:]]
    why = "; ".join(reasons) if reasons else "the runtime logged no error"
    on = f" on {gpu} (compute capability {cc[0]}.{cc[1]})" if gpu and cc else ""
    return (
        f"{label} could not load the engine {artifact}{on}: {why}; a plan runs only with the "
        "TensorRT version and GPU family that built it: rebuild it with `infercmp build --force`"
    )


def rtx_validity(module: Any, runtime: Any, plan: bytes) -> str | None:
    """TensorRT-RTX's own verdict on a plan (`IRuntime.getEngineValidity`), or None."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return None
    try:
        validity, diagnostics = check(plan)
    except Exception:  # the check is advisory: the caller already has the failure
        return None
    names = [
        name
        for name, flag in module.EngineInvalidityDiagnostics.__members__.items()
        if int(diagnostics) & int(flag)
    ]
    verdict = getattr(validity, "name", str(validity))
    return f"engine validity {verdict}" + (f" ({', '.join(names)})" if names else "")
