"""Run-to-run comparison: each combination's change of median with a bootstrap CI, for CI gates.

One decision rule, from the 95% interval of the change of the median (`decide`; the rule and its
reasons are written once more in docs/usage.md, section 7, and in `infercmp compare --help`):

- no change (exit 0): the whole interval lies within +-threshold; a significant change that
  small is named ("slower, below threshold") and passes;
- regression / improvement: the interval excludes no change and the change is larger than the
  threshold; a regression exits 1;
- inconclusive (exit 3): the interval reaches past the threshold without showing a change larger
  than it; the row says how many worker processes would decide it.

The interval is the hierarchical bootstrap's (processes, then iterations within each) whenever a
run has repeated processes. A side measured in one process cannot show how much a second process
of the same code would differ, so its share is added from the other side's spread between
processes, or, with one process on both sides, from `--run-noise`, the between-run noise allowed
for this machine. Nothing in the rule grows with the number of processes.

Exit codes (`CompareReport.exit_code`): 0 no regression, 1 a regression above the threshold, a
combination whose outputs passed parity in base and fail in new, a load run that held its
load in base and not in new (overloaded), or an accuracy drop beyond --accuracy-threshold
(`report.accuracy`), 3 nothing comparable, a
combination lost (ok in base; missing, failed or skipped in new), or one inconclusive.
Bad input, a mismatched environment included, is an InfercmpError: exit 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from infercmp.core.lazy import lazy_import
from infercmp.core.stats import pooled_median
from infercmp.platform.placement import shared_placement
from infercmp.report.accuracy import (
    ACCURACY_REGRESSION,
    DEFAULT_ACCURACY_THRESHOLD,
    accuracy_change,
)
from infercmp.report.interval import (
    DEFAULT_RESAMPLES,
    DEFAULT_RUN_NOISE,
    DEFAULT_SEED,
    HIERARCHICAL,
    SINGLE_PROCESS,
    ChangeInterval,
    change_interval,
)
from infercmp.report.run_conditions import (
    environment_changes,
    no_shared_placement_note,
    placement_note,
    placements,
)
from infercmp.report.runs import CombinationView, RunView, as_dict
from infercmp.report.summary import shortfall
from infercmp.sampler.usage import BUSY_CPUS
from infercmp.workload.scenarios import OVERLOADED, served_qps

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

IDENTICAL = "identical"
METHODS = {
    IDENTICAL: (
        "the same measurements on both sides (a run compared with itself): no change, exactly"
    ),
    SINGLE_PROCESS: (
        "percentile bootstrap of the ratio of medians (new / base) over each run's raw "
        "per-iteration wall-clock latencies ({resamples} resamples, seed {seed}, 95% interval), "
        "widened by +-{run_noise:g}% (--run-noise): one worker process a side shows the noise "
        "within a process, not how much two runs of the same code differ"
    ),
    HIERARCHICAL: (
        "hierarchical percentile bootstrap of the ratio of medians (new / base): {resamples} "
        "resamples of each run, drawing worker processes with replacement, then iterations "
        "within each, seed {seed}, 95% interval; it covers the spread between processes (a side "
        "measured in one process is widened by the other side's spread between processes)"
    ),
}
# Verdicts of a compared row (`decide`), and of rows that were not compared.
NO_CHANGE = "no significant change"
SLOWER_WITHIN = "slower, below threshold"
FASTER_WITHIN = "faster, below threshold"
REGRESSION = "regression"
IMPROVEMENT = "improvement"
INCONCLUSIVE = "inconclusive"
PARITY_REGRESSION = "parity regression"  # outputs ok in base, wrong in new: whatever the speed
# OVERLOADED (scenarios): a load run that held its load in base and not in new.
LOST = "lost"
NOT_COMPARED = "not compared"

DEFAULT_NOISE_FLOOR = 0.01  # significant changes under 1% are labelled "no significant change"

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NOT_COMPARABLE = 0, 1, 2, 3


def _key(combo: CombinationView, with_options: bool = True) -> tuple:
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
    # no significant change | slower/faster, below threshold | regression | improvement |
    # inconclusive | parity regression | not compared | lost
    verdict: str
    note: str = ""
    method: str | None = None  # single-process | hierarchical; None when not compared
    processes: tuple[int, int] = (0, 0)  # worker processes measured in base, new
    # Parity of each side's outputs against PyTorch's: "ok", "FAIL", or None (not checked).
    base_parity: str | None = None
    new_parity: str | None = None
    # For an inconclusive row: what more measurement would decide it, estimated from the
    # variation observed (`_advice`).
    advice: str = ""
    # bench --accuracy on both sides: the headline metric of each and the drop
    # (report.accuracy.accuracy_change); left out of the JSON when None.
    accuracy: dict[str, Any] | None = None

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
    run_noise: float = DEFAULT_RUN_NOISE
    # --accuracy-threshold, in the headline metric's units; None (and left out of the JSON)
    # when no pair measured accuracy on both sides.
    accuracy_threshold: float | None = None

    @property
    def methods(self) -> dict[str, str]:
        """The statistical methods used, name -> description."""
        used = dict.fromkeys(c.method for c in self.comparisons if c.method)
        return {
            name: METHODS[name].format(
                resamples=self.resamples, seed=self.seed, run_noise=self.run_noise * 100
            )
            for name in used
        }

    @property
    def method(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in self.methods.items()) or "none"

    @property
    def compared(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.change is not None]

    @property
    def failing(self) -> list[Comparison]:
        """What fails a CI job: regressions above the threshold, and outputs that went wrong."""
        failing = (REGRESSION, PARITY_REGRESSION, OVERLOADED, ACCURACY_REGRESSION)
        return [c for c in self.comparisons if c.verdict in failing]

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
            f"inconclusive: {c.label}: {c.advice}"
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
        for row in out["comparisons"]:  # runs without accuracy read as they always have
            if row["accuracy"] is None:
                del row["accuracy"]
        if self.accuracy_threshold is None:
            del out["accuracy_threshold"]
        out["methods"] = self.methods
        out["failing"] = [c.label for c in self.failing]
        out["problems"] = self.problems
        out["verdict"] = self.verdict
        out["exit_code"] = self.exit_code
        return out


def decide(interval: ChangeInterval, threshold: float, noise_floor: float) -> str:
    """The verdict of the one rule (module docstring): from the interval, nothing else."""
    change, low, high = interval.change, interval.low, interval.high
    if interval.significant and abs(change) > threshold:
        return REGRESSION if change > 0 else IMPROVEMENT
    if -threshold <= low and high <= threshold:
        if interval.significant and abs(change) > noise_floor:
            return SLOWER_WITHIN if change > 0 else FASTER_WITHIN
        return NO_CHANGE
    return INCONCLUSIVE


def _advice(interval: ChangeInterval, threshold: float, run_noise: float) -> str:
    """What would decide an inconclusive row, estimated from the variation it showed."""
    change = abs(interval.change)
    half = max(interval.change - interval.low, interval.high - interval.change)
    shown = (
        f"{interval.change * 100:+.1f}% ({interval.low * 100:+.1f}% … {interval.high * 100:+.1f}%)"
    )
    reach = f"the interval {shown} reaches past the {threshold * 100:g}% threshold"
    if max(interval.processes) < 2:
        return (
            f"{reach}: one worker process a side cannot show how much two runs differ, so "
            f"compare allows +-{run_noise * 100:g}% for it (--run-noise); measure both runs "
            "with --repeat 5 or more"
        )
    # Needed: an interval inside +-threshold (a change below it) or one excluding 0 (above it).
    target = (threshold - change if change < threshold else change) * 0.9
    if target < 0.001:
        return (
            f"{reach} and the change sits at the threshold: more measurement will not move it "
            "off; choose another --threshold"
        )
    # The interval narrows as 1/sqrt(processes) when processes vary as these did.
    needed = math.ceil(max(interval.processes) * (half / target) ** 2)
    return (
        f"{reach}; about {needed} worker processes a side (--repeat {needed}) would decide it, "
        "if its processes vary as these did"
    )


def _match(
    base: RunView, new: RunView
) -> tuple[list[tuple], list[CombinationView], list[CombinationView]]:
    """Pairs combos on model/engine/device/precision/shape/options.

    When options differ (say, a thread count changed between runs) but the rest identifies
    exactly one combination on each side, the pair is still compared and the option change noted.
    """
    base_by = {_key(c): c for c in base.combinations}
    new_by = {_key(c): c for c in new.combinations}
    pairs = [(base_by[k], new_by[k], "") for k in base_by if k in new_by]
    rest_base = [c for k, c in base_by.items() if k not in new_by]
    rest_new = [c for k, c in new_by.items() if k not in base_by]
    loose_base: dict[tuple, list[CombinationView]] = {}
    loose_new: dict[tuple, list[CombinationView]] = {}
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


def _describe(c: CombinationView) -> str:
    return (
        f"{c.result.model} {c.engine} {c.device} {c.precision} {c.shape_label} ({c.options_text})"
    )


def compare_runs(
    base: RunView,
    new: RunView,
    threshold: float = 0.05,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    run_noise: float = DEFAULT_RUN_NOISE,
    accuracy_threshold: float = DEFAULT_ACCURACY_THRESHOLD,
) -> CompareReport:
    """Each combination of `base` matched in `new` with its verdict, and what was lost; with
    accuracy on both sides, a drop beyond `accuracy_threshold` fails whatever the speed."""
    pairs, only_base, only_new = _match(base, new)
    comparisons = []
    lost = [
        f"{_describe(c)} is ok in base and missing in new" for c in only_base if c.status == "ok"
    ]
    rule = _Rule(threshold, noise_floor, resamples, seed, run_noise)
    for b, n, note in sorted(pairs, key=lambda p: _key(p[0], False)):
        row = dict(
            engine=b.engine,
            device=b.device,
            precision=b.precision,
            shape=b.shape_label,
            options=n.options_text,
            base_p50_ms=(b.latency or {}).get("p50_ms"),
            new_p50_ms=(n.latency or {}).get("p50_ms"),
            base_parity=_parity(b),
            new_parity=_parity(n),
        )
        if b.status == "ok" and n.status != "ok":
            error = f": {n.result.error}" if n.result.error else ""
            lost.append(f"{_describe(b)} is ok in base and {n.status} in new{error}")
            comparisons.append(_uncompared(row, LOST, f"new run: {n.status}{error}"))
        else:
            comparisons.append(_compare_pair(row, b, n, note, rule))
        _accuracy_gated(comparisons[-1], b, n, accuracy_threshold)
    judged = any(c.accuracy is not None for c in comparisons)
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
        run_noise=run_noise,
        accuracy_threshold=accuracy_threshold if judged else None,
    )


def _accuracy_gated(
    comparison: Comparison, b: CombinationView, n: CombinationView, threshold: float
) -> None:
    """An accuracy drop beyond `threshold` fails the gate, whatever the speed."""
    comparison.accuracy, why = accuracy_change(b, n, threshold)
    if why and comparison.verdict != LOST:
        comparison.verdict = ACCURACY_REGRESSION
        comparison.note = _joined(why, comparison.note)


@dataclass(frozen=True)
class _Rule:
    """compare's settings: the threshold and noise floor of `decide`, and the interval's."""

    threshold: float
    noise_floor: float
    resamples: int
    seed: int
    run_noise: float


def _compare_pair(
    row: dict[str, Any], b: CombinationView, n: CombinationView, note: str, rule: _Rule
) -> Comparison:
    """The verdict on a pair measured on both sides (or why it could not be compared)."""
    if _same_measurement(b, n):
        return _identical(row, note)
    problem = _not_comparable(b, "base") or _not_comparable(n, "new")
    if problem:
        return _gated(_uncompared(row, NOT_COMPARED, _joined(problem, note)), n)
    placement = shared_placement(placements(b), placements(n))
    if not placement.found:
        why = _joined(no_shared_placement_note(b, n), note)
        return _gated(_uncompared(row, NOT_COMPARED, why), n)
    base_groups = [b.process_groups[i] for i in placement.base]
    new_groups = [n.process_groups[i] for i in placement.new]
    interval = change_interval(base_groups, new_groups, rule.resamples, rule.seed, rule.run_noise)
    verdict = decide(interval, rule.threshold, rule.noise_floor)
    note = _joined(
        note,
        placement_note(placement, b, n),
        interval.note,
        _widening_note(interval),
        _below_threshold_note(verdict, interval, rule.threshold),
        _busy(b, "base"),
        _busy(n, "new"),
    )
    row["base_p50_ms"] = pooled_median(base_groups) / 1e6
    row["new_p50_ms"] = pooled_median(new_groups) / 1e6
    advice = _advice(interval, rule.threshold, rule.run_noise) if verdict == INCONCLUSIVE else ""
    comparison = Comparison(
        **row,
        change=interval.change,
        ci_low=interval.low,
        ci_high=interval.high,
        verdict=verdict,
        note=note,
        method=interval.method,
        processes=interval.processes,
        advice=advice,
    )
    return _gated(_load_gated(comparison, b, n), n)


def _same_measurement(b: CombinationView, n: CombinationView) -> bool:
    """One measurement on both sides: a run compared with itself, raw samples stored or not."""
    return (
        b.status == "ok"
        and n.status == "ok"
        and b.result == n.result
        and np.array_equal(b.wall_ns, n.wall_ns)
    )


def _identical(row: dict[str, Any], note: str) -> Comparison:
    return Comparison(
        **row,
        change=0.0,
        ci_low=0.0,
        ci_high=0.0,
        verdict=NO_CHANGE,
        note=_joined(note, "the same measurements on both sides"),
        method=IDENTICAL,
    )


def _parity(combo: CombinationView) -> str | None:
    """ "ok" or "FAIL" for outputs checked against PyTorch's, None where none were checked."""
    parity = as_dict(getattr(combo.result, "parity", None))
    if not parity or parity.get("ok") is None:
        return None
    return "ok" if parity["ok"] else "FAIL"


def _load_gated(comparison: Comparison, b: CombinationView, n: CombinationView) -> Comparison:
    """A load run that stopped holding its load fails the gate: its latencies are those of
    the requests it managed, not of the load offered (`summary.shortfall`)."""
    before, after = shortfall(b), shortfall(n)
    rate_before = served_qps(_load(b), _load_result(b))
    rate_after = served_qps(_load(n), _load_result(n))
    notes = []
    if (
        rate_before is not None
        and rate_after is not None
        and abs(rate_after - rate_before) > 0.01 * rate_before
    ):
        notes.append(f"offered rates differ: base {rate_before:,.0f}/s, new {rate_after:,.0f}/s")
    if after and not before:
        comparison.verdict = OVERLOADED
        notes.insert(0, f"the new run did not hold its load: {after}")
    elif after:
        notes.append(f"neither run held its load (new: {after})")
    elif before:
        notes.append(f"the base run did not hold its load: {before}")
    comparison.note = _joined(*notes, comparison.note)
    return comparison


def _load(combo: CombinationView) -> dict | None:
    return as_dict(getattr(combo.result, "load", None))


def _load_result(combo: CombinationView) -> dict | None:
    return as_dict(getattr(combo.result, "load_result", None))


def _gated(comparison: Comparison, new: CombinationView) -> Comparison:
    """Outputs that passed parity in base and fail in new fail the gate, whatever the speed."""
    if comparison.base_parity != "ok" or comparison.new_parity != "FAIL":
        return comparison
    why = (
        "outputs passed parity in base and fail in new"
        + (f" ({_parity_detail(new)})" if _parity_detail(new) else "")
        + ": a regression whatever the speed"
    )
    comparison.note = _joined(why, comparison.note)
    comparison.verdict = PARITY_REGRESSION
    return comparison


def _parity_detail(combo: CombinationView) -> str:
    parity = as_dict(combo.result.parity) or {}
    errors = [o.get("max_abs") for o in (as_dict(x) for x in parity.get("outputs") or [])]
    errors = [e for e in errors if e is not None]
    return f"max abs err {max(errors):.1e}" if errors else ""


def _widening_note(interval: ChangeInterval) -> str:
    if not interval.widened_by:
        return ""
    if max(interval.processes) < 2:
        why = "one worker process a side: allowed for the noise between runs (--run-noise)"
    else:
        why = "one side measured in one worker process: the other side's spread between processes"
    return f"interval widened by +-{interval.widened_by * 100:.1f}%, {why}"


def _below_threshold_note(verdict: str, interval: ChangeInterval, threshold: float) -> str:
    if verdict not in (SLOWER_WITHIN, FASTER_WITHIN):
        return ""
    return f"{interval.change * 100:+.1f}%, below the {threshold * 100:g}% threshold"


def _uncompared(row: dict[str, Any], verdict: str, note: str) -> Comparison:
    """A row without a change: the combination was lost or could not be compared."""
    return Comparison(**row, change=None, ci_low=None, ci_high=None, verdict=verdict, note=note)


def _joined(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _busy(combo: CombinationView, side: str) -> str:
    cpus = getattr(combo.result, "background_cpus", None)
    if cpus is None or cpus <= BUSY_CPUS:
        return ""
    return f"{side} run measured beside other work ({cpus:.2f} CPUs busy): its change may be theirs"


def _not_comparable(combo: CombinationView, side: str) -> str:
    if combo.status != "ok":
        return f"{side} run: {combo.status}" + (
            f" ({combo.result.error})" if combo.result.error else ""
        )
    if combo.wall_ns.size == 0:
        return f"{side} run has no raw latency samples"
    if combo.wall_ns.size == 1:
        return (
            f"{side} run has one latency sample, too few for an interval; measure more "
            "iterations (--iters 20 or more, or leave --iters out)"
        )
    return ""
