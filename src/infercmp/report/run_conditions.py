"""What two runs were measured under, for compare: the machine and library facts that differ
between them (compared only with --allow-env-change), and each worker process's CPU placement,
which decides which processes of two runs are compared at all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.platform.placement import (
    STRADDLED,
    SharedPlacement,
    process_state,
    shared_placement,
    typical,
)
from infercmp.report.runs import CombinationView, RunView

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


def environment_changes(base: RunView, new: RunView) -> list[str]:
    """What differs between the machines and software of two runs, one entry per fact.

    Like pyperf, a comparison across a changed environment measures the change of environment
    as much as the change under test; `compare` refuses it unless told otherwise.
    """
    before, after = _environment_facts(base), _environment_facts(new)
    # A library one run did not record at all (runs before issue 23 recorded no engine
    # runtimes or plugin packages) is unknown there, not a change; recorded as null, it was
    # not installed.
    unknown = set(_libraries(base)) ^ set(_libraries(new))
    changes = [
        f"{name} {_fact(before.get(name))} → {_fact(after.get(name))}"
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name) and name not in unknown
    ]
    base_states = [s for c in base.combinations for s in placements(c)]
    new_states = [s for c in new.combinations for s in placements(c)]
    before_ns, after_ns = typical(base_states), typical(new_states)
    if (
        before_ns is not None
        and after_ns is not None
        and not shared_placement(base_states, new_states).found
    ):
        changes.append(
            f"CPU-to-CPU round trip {before_ns:,.0f} ns → {after_ns:,.0f} ns in every worker "
            "process, the host's placement of this machine's CPUs, which multi-threaded CPU "
            "figures follow"
        )
    return changes


def placements(combo: CombinationView) -> list[float | None]:
    """Each worker process's CPU placement (`process_state`), in `process_groups` order."""
    by_number = {
        p.process: process_state(p.cpu_handoff_ns, p.worker_cpus) for p in combo.result.processes
    }
    numbers = np.unique(combo.wall_process) if combo.wall_process is not None else [0]
    return [by_number.get(int(number)) for number in numbers][: len(combo.process_groups)]


def placement_note(placement: SharedPlacement, b: CombinationView, n: CombinationView) -> str:
    left = len(placement.base) < len(b.process_groups) or len(placement.new) < len(n.process_groups)
    if not left or placement.typical_ns is None:
        return ""
    return (
        f"compared the processes measured in the same CPU placement ({placement.typical_ns:,.0f}"
        f" ns round trip): base {len(placement.base)} of {len(b.process_groups)}, new "
        f"{len(placement.new)} of {len(n.process_groups)}; the others ran with the CPUs placed "
        "otherwise by the host or straddled a change"
    )


def no_shared_placement_note(b: CombinationView, n: CombinationView) -> str:
    for combo, side in ((b, "base"), (n, "new")):
        if all(state == STRADDLED for state in placements(combo)):
            return (
                f"every worker process of the {side} run straddled a change of the CPUs' "
                "placement (its round trips before and after differ): measure again, or pin "
                "the engine to one thread"
            )
    before, after = typical(placements(b)), typical(placements(n))
    return (
        "no worker process of the two runs was measured in the same CPU placement (round trip "
        f"{_fact(before and round(before))} → {_fact(after and round(after))} ns): "
        "measure again, or pin the engine to one thread"
    )


def _fact(value: Any) -> str:
    return "not recorded or not installed" if value in (None, "") else str(value)


def _libraries(run: RunView) -> dict[str, Any]:
    return dict(run.environment.get("libraries") or {})


def _environment_facts(run: RunView) -> dict[str, Any]:
    env = run.environment
    gpus = env.get("gpus") or []
    nvml = env.get("nvml") or {}
    first = gpus[0] if gpus else {}
    facts: dict[str, Any] = {
        "infercmp": run.meta.get("infercmp_version"),
        "Python": env.get("python"),
        "CPU": env.get("cpu_model"),
        "CPU threads": env.get("cpu_logical_cores"),
        "GPUs": ", ".join(str(g.get("name") or "unnamed GPU") for g in gpus) or None,
        "GPU driver": nvml.get("driver_version") or first.get("driver_version"),
        "CUDA driver": nvml.get("cuda_driver_version") or first.get("cuda_driver_version"),
    }
    for name, version in sorted(_libraries(run).items()):
        if name != "infercmp":  # the run's own infercmp_version says it
            facts[name] = version
    return facts
