"""The worker's profile phase (`bench --profile`, `infercmp profile`): the engine's own per-layer
profiler over the measured inputs, after the timed phases, parity and accuracy, untimed.

The engine (`Engine.profile`) returns a `RawProfile`, written as `profile.json` beside
result.json; nothing here enters latency.npz. Only for one request at a time: a load's engines
are driven by other threads, and their profile would not be one request's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infercmp.core.contract import ProfileOutputs, ProfileSpec
from infercmp.core.files import write_atomic

#: The RawProfile file the phase writes in the worker's result directory.
PROFILE_FILE = "profile.json"
#: Where the engine may keep its profiler's own files (a trace, a session's JSON).
PROFILE_DIR = "profile"


def profile_phase(
    engine: Any, spec: ProfileSpec, result_dir: Path, device_resident: bool = False
) -> ProfileOutputs:
    """`engine.profile` over `spec.iterations` calls after `spec.warmup`; profile.json written.
    `device_resident`: the timed phase timed compute alone, which the profile is marked with."""
    started = time.perf_counter()
    raw = engine.profile(spec.iterations, spec.warmup, result_dir / PROFILE_DIR)
    if device_resident:
        raw = raw.model_copy(update={"device_resident": True})
    write_atomic(result_dir / PROFILE_FILE, raw.model_dump_json(indent=1).encode())
    return ProfileOutputs(
        file=PROFILE_FILE, iterations=raw.iterations, seconds=time.perf_counter() - started
    )
