"""Run-to-run comparison: each combination's change of median with a bootstrap CI, for CI gates.

Exit codes (`CompareReport.exit_code`): 0 no regression, 1 a regression above the threshold,
3 nothing comparable, a combination lost (ok in base; missing, failed or skipped in new), or
one inconclusive (its processes disagree by more than the threshold).
Bad input, a mismatched environment included, is an InfercmpError: exit 2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from infercmp.report.load import Combination, RunView
from infercmp.sampler.handoff import (
    SharedPlacement,
    process_state,
    shared_placement,
    typical,
)
from infercmp.sampler.summary import BUSY_CPUS
from infercmp.stats import hierarchical_change_ci

SINGLE_PROCESS = "single-process"
HIERARCHICAL = "hierarchical"
METHODS = {
    SINGLE_PROCESS: (
        "percentile bootstrap of the ratio of medians (new / base): {resamples} resamples of "
        "each run's raw per-iteration wall-clock latencies, drawn independently, seed {seed}, "
        "95% interval; it covers noise within one worker process, not between processes"
    ),
    HIERARCHICAL: (
        "hierarchical percentile bootstrap of the ratio of medians (new / base): {resamples} "
        "resamples of each run, drawing worker processes with replacement, then iterations "
        "within each, seed {seed}, 95% interval; it covers the spread between processes"
    ),
}
# A row whose processes disagree by more than the threshold cannot pass or fail the gate.
INCONCLUSIVE = "inconclusive"
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
DEFAULT_NOISE_FLOOR = 0.01  # changes under 1% are timer and scheduler noise on any machine
# Bound on resamples x samples held in memory at once by the vectorised bootstrap.
_CHUNK_ELEMENTS = 8_000_000

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NOT_COMPARABLE = 0, 1, 2, 3


def _key(combo: Combination, with_options: bool = True) -> tuple:
    key: tuple = (combo.result.model, combo.engine, combo.device, combo.precision)
    key += (combo.shape_label,)
    if with_options:
        key += (json.dumps(combo.options, sort_keys=True, default=str),)
    return key


@dataclass
class Comparison:
    """The verdict on one combination present in both runs."""

    engine: str
    device: str
    precision: str
    shape: str
    options: str
    base_p50_ms: float | None
    new_p50_ms: float | None
    change: float | None  # relative change of the median: +0.20 is 20% slower
    ci_low: float | None
    ci_high: float | None
    # improvement | regression | no significant change | inconclusive | not compared | lost
    verdict: str
    note: str = ""
    method: str | None = None  # single-process | hierarchical; None when not compared
    processes: tuple[int, int] = (0, 0)  # worker processes measured in base, new
    # The smallest change called significant for this row: the report's floor, or the spread
    # between processes of either run when that is larger (see `process_spread`).
    noise_floor: float | None = None

    @property
    def label(self) -> str:
        return f"{self.engine} {self.device} {self.precision} {self.shape}"


@dataclass
class CompareReport:
    base: str
    new: str
    threshold: float
    noise_floor: float
    resamples: int
    seed: int
    comparisons: list[Comparison]
    only_in_base: list[str]
    only_in_new: list[str]
    # Combinations ok in base and missing, failed or skipped in new: each fails the check.
    lost: list[str] = field(default_factory=list)
    # Differences between the runs' machines and libraries (allowed with --allow-env-change).
    environment_changes: list[str] = field(default_factory=list)
    base_status: str = "complete"
    new_status: str = "complete"

    @property
    def methods(self) -> dict[str, str]:
        """The statistical methods used, name -> description."""
        used = dict.fromkeys(c.method for c in self.comparisons if c.method)
        return {
            name: METHODS[name].format(resamples=self.resamples, seed=self.seed) for name in used
        }

    @property
    def method(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in self.methods.items()) or "none"

    @property
    def compared(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.change is not None]

    @property
    def failing(self) -> list[Comparison]:
        """Regressions whose median grew by more than the threshold: these fail a CI job."""
        return [
            c
            for c in self.comparisons
            if c.verdict == "regression" and c.change is not None and c.change > self.threshold
        ]

    @property
    def problems(self) -> list[str]:
        """Why the comparison cannot vouch for the new run: each one makes the exit code 3."""
        out = []
        if not self.compared:
            out.append(
                "nothing compared: no combination was measured in both runs (same model, engine, "
                "device, precision and shape)"
            )
        out.extend(f"lost: {item}" for item in self.lost)
        out.extend(
            f"inconclusive: {c.label}: the processes of one run disagree by "
            f"{c.noise_floor * 100:.0f}%, more than the {self.threshold * 100:g}% threshold; "
            "measure with more --repeat processes, pin the engine's threads, or quiet the machine"
            for c in self.comparisons
            if c.verdict == INCONCLUSIVE
        )
        return out

    @property
    def exit_code(self) -> int:
        if self.failing:
            return EXIT_REGRESSION
        if self.problems:
            return EXIT_NOT_COMPARABLE
        return EXIT_OK

    @property
    def verdict(self) -> str:
        return {
            EXIT_OK: "OK",
            EXIT_REGRESSION: "FAIL: regression",
            EXIT_NOT_COMPARABLE: "FAIL: not comparable",
        }[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = self.methods
        out["failing"] = [c.label for c in self.failing]
        out["problems"] = self.problems
        out["verdict"] = self.verdict
        out["exit_code"] = self.exit_code
        return out


def bootstrap_median_ratio(
    base: np.ndarray,
    new: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """median(new)/median(base) and its percentile-bootstrap CI, resampling each run independently.

    Vectorised: each chunk draws a (resamples x n) index matrix, bounded in memory.
    """
    base = np.asarray(base, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if base.size == 0 or new.size == 0:
        raise ValueError("both runs need latency samples")
    rng = np.random.default_rng(seed)
    ratio = float(np.median(new) / np.median(base))
    ratios = _bootstrap_medians(new, resamples, rng) / _bootstrap_medians(base, resamples, rng)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


def _bootstrap_medians(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(values[idx], axis=1)
    return out


def classify(low: float, high: float, change: float, noise_floor: float) -> str:
    """Significant only when the CI of the ratio excludes 1 and the change beats the noise floor."""
    if abs(change) <= noise_floor or low <= 1.0 <= high:
        return "no significant change"
    return "regression" if change > 0 else "improvement"


def process_spread(groups: list[np.ndarray]) -> float:
    """Range of the per-process medians relative to their median: 0 with fewer than 2 processes.

    A run's processes are measured one after another, so the drift of the machine between two
    runs (clock, cache, neighbours) is of the size of the drift between a run's processes. A
    change smaller than that spread cannot be told from drift, however narrow the bootstrap CI
    (whose width shrinks with the number of processes as if they were independent draws).
    """
    if len(groups) < 2:
        return 0.0
    medians = np.array([np.median(g) for g in groups], dtype=np.float64)
    centre = float(np.median(medians))
    return float((medians.max() - medians.min()) / centre) if centre > 0 else 0.0


def _match(base: RunView, new: RunView) -> tuple[list[tuple], list[Combination], list[Combination]]:
    """Pairs combos on model/engine/device/precision/shape/options.

    When options differ (say, a thread count changed between runs) but the rest identifies
    exactly one combination on each side, the pair is still compared and the option change noted.
    """
    base_by = {_key(c): c for c in base.combinations}
    new_by = {_key(c): c for c in new.combinations}
    pairs = [(base_by[k], new_by[k], "") for k in base_by if k in new_by]
    rest_base = [c for k, c in base_by.items() if k not in new_by]
    rest_new = [c for k, c in new_by.items() if k not in base_by]
    loose_base: dict[tuple, list[Combination]] = {}
    loose_new: dict[tuple, list[Combination]] = {}
    for c in rest_base:
        loose_base.setdefault(_key(c, False), []).append(c)
    for c in rest_new:
        loose_new.setdefault(_key(c, False), []).append(c)
    matched: set[int] = set()
    for key, olds in loose_base.items():
        news = loose_new.get(key, [])
        if len(olds) == 1 and len(news) == 1:
            b, n = olds[0], news[0]
            pairs.append((b, n, _option_change(b.options, n.options)))
            matched.update({id(b), id(n)})
    only_base = [c for c in rest_base if id(c) not in matched]
    only_new = [c for c in rest_new if id(c) not in matched]
    return pairs, only_base, only_new


def _option_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changes = [
        f"{k} {old.get(k, 'unset')} → {new.get(k, 'unset')}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return "options changed: " + ", ".join(changes)


def _describe(c: Combination) -> str:
    return (
        f"{c.result.model} {c.engine} {c.device} {c.precision} {c.shape_label} ({c.options_text})"
    )


def environment_changes(base: RunView, new: RunView) -> list[str]:
    """What differs between the machines and software of two runs, one entry per fact.

    Like pyperf, a comparison across a changed environment measures the change of environment
    as much as the change under test; `compare` refuses it unless told otherwise.
    """
    before, after = _environment_facts(base), _environment_facts(new)
    changes = [
        f"{name} {_fact(before.get(name))} → {_fact(after.get(name))}"
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name)
    ]
    base_states = [s for c in base.combinations for s in _placements(c)]
    new_states = [s for c in new.combinations for s in _placements(c)]
    if any(base_states) and any(new_states) and not shared_placement(base_states, new_states).found:
        changes.append(
            f"CPU-to-CPU round trip {typical(base_states):,.0f} ns → "
            f"{typical(new_states):,.0f} ns in every worker process, the host's placement of "
            "this machine's CPUs, which multi-threaded CPU figures follow"
        )
    return changes


def _placements(combo: Combination) -> list[float | None]:
    """Each worker process's CPU placement (`process_state`), in `process_groups` order."""
    by_number = {
        p.process: process_state(p.cpu_handoff_ns, p.worker_cpus) for p in combo.result.processes
    }
    numbers = np.unique(combo.wall_process) if combo.wall_process is not None else [0]
    return [by_number.get(int(number)) for number in numbers][: len(combo.process_groups)]


def _placement_note(placement: SharedPlacement, b: Combination, n: Combination) -> str:
    left = len(placement.base) < len(b.process_groups) or len(placement.new) < len(n.process_groups)
    if not left or placement.typical_ns is None:
        return ""
    return (
        f"compared the processes measured in the same CPU placement ({placement.typical_ns:,.0f}"
        f" ns round trip): base {len(placement.base)} of {len(b.process_groups)}, new "
        f"{len(placement.new)} of {len(n.process_groups)}; the others ran with the CPUs placed "
        "otherwise by the host or straddled a change"
    )


def _no_shared_placement(b: Combination, n: Combination) -> str:
    before, after = typical(_placements(b)), typical(_placements(n))
    return (
        "no worker process of the two runs was measured in the same CPU placement (round trip "
        f"{_fact(before and round(before))} → {_fact(after and round(after))} ns): "
        "measure again, or pin the engine to one thread"
    )


def _fact(value: Any) -> str:
    return "not recorded or not installed" if value in (None, "") else str(value)


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
    for name, version in sorted((env.get("libraries") or {}).items()):
        if name != "infercmp":  # the run's own infercmp_version says it
            facts[name] = version
    return facts


def compare_runs(
    base: RunView,
    new: RunView,
    threshold: float = 0.05,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> CompareReport:
    pairs, only_base, only_new = _match(base, new)
    comparisons = []
    lost = [
        f"{_describe(c)} is ok in base and missing in new" for c in only_base if c.status == "ok"
    ]
    for b, n, note in sorted(pairs, key=lambda p: _key(p[0], False)):
        row = dict(
            engine=b.engine,
            device=b.device,
            precision=b.precision,
            shape=b.shape_label,
            options=n.options_text,
            base_p50_ms=(b.latency or {}).get("p50_ms"),
            new_p50_ms=(n.latency or {}).get("p50_ms"),
        )
        if b.status == "ok" and n.status != "ok":
            error = f": {n.result.error}" if n.result.error else ""
            lost.append(f"{_describe(b)} is ok in base and {n.status} in new{error}")
            comparisons.append(_uncompared(row, "lost", f"new run: {n.status}{error}"))
            continue
        problem = _not_comparable(b, "base") or _not_comparable(n, "new")
        if problem:
            comparisons.append(_uncompared(row, "not compared", _joined(problem, note)))
            continue
        placement = shared_placement(_placements(b), _placements(n))
        if not placement.found:
            why = _joined(_no_shared_placement(b, n), note)
            comparisons.append(_uncompared(row, "not compared", why))
            continue
        base_groups = [b.process_groups[i] for i in placement.base]
        new_groups = [n.process_groups[i] for i in placement.new]
        note = _joined(note, _placement_note(placement, b, n))
        floor = noise_floor
        # Both runs measured in repeated processes: the process-level method, also when the
        # placement left one side a single process (the floor is then the other side's spread,
        # what one more process of the same code would vary by).
        if len(b.process_groups) >= 2 and len(n.process_groups) >= 2:
            method = HIERARCHICAL
            change, ci_low, ci_high = hierarchical_change_ci(
                base_groups, new_groups, resamples, seed
            )
            low, high = ci_low + 1, ci_high + 1
            spread = max(process_spread(base_groups), process_spread(new_groups))
            if spread > floor:
                floor = spread
                note = _joined(note, f"noise floor {spread * 100:.1f}%: spread between processes")
        else:
            method = SINGLE_PROCESS
            base_ns, new_ns = np.concatenate(base_groups), np.concatenate(new_groups)
            ratio, low, high = bootstrap_median_ratio(base_ns, new_ns, resamples, seed)
            change = ratio - 1
        note = _joined(note, _busy(b, "base"), _busy(n, "new"))
        row["base_p50_ms"] = float(np.median(np.concatenate(base_groups))) / 1e6
        row["new_p50_ms"] = float(np.median(np.concatenate(new_groups))) / 1e6
        comparisons.append(
            Comparison(
                **row,
                change=change,
                ci_low=low - 1,
                ci_high=high - 1,
                verdict=(INCONCLUSIVE if floor > threshold else classify(low, high, change, floor)),
                note=note,
                method=method,
                processes=(len(base_groups), len(new_groups)),
                noise_floor=floor,
            )
        )
    return CompareReport(
        base=str(base.path),
        new=str(new.path),
        threshold=threshold,
        noise_floor=noise_floor,
        resamples=resamples,
        seed=seed,
        comparisons=comparisons,
        only_in_base=[_describe(c) for c in only_base],
        only_in_new=[_describe(c) for c in only_new],
        lost=lost,
        environment_changes=environment_changes(base, new),
        base_status=base.status,
        new_status=new.status,
    )


def _uncompared(row: dict[str, Any], verdict: str, note: str) -> Comparison:
    """A row without a change: the combination was lost or could not be compared."""
    return Comparison(**row, change=None, ci_low=None, ci_high=None, verdict=verdict, note=note)


def _joined(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _busy(combo: Combination, side: str) -> str:
    cpus = getattr(combo.result, "background_cpus", None)
    if cpus is None or cpus <= BUSY_CPUS:
        return ""
    return f"{side} run measured beside other work ({cpus:.2f} CPUs busy): its change may be theirs"


def _not_comparable(combo: Combination, side: str) -> str:
    if combo.status != "ok":
        return f"{side} run: {combo.status}" + (
            f" ({combo.result.error})" if combo.result.error else ""
        )
    if combo.wall_ns.size < 2:
        return f"{side} run has no raw latency samples"
    return ""
