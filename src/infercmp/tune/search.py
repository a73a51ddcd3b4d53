"""`infercmp tune`: find each engine's fastest configuration that still matches PyTorch, within
a time budget, by successive halving over bench's own workers.

The candidates come from the engines' declarations (`EngineDescriptor.search_space`). Rounds:

1. screen: every cheap candidate (each engine's defaults included), a short measurement each;
2. expensive: values that cost minutes to load (a max-autotune compile) on top of each
   engine's best screened configuration, in declared order, only while the budget has room;
3. confirm: the best third of each engine (and its defaults), measured again, longer;
4. final: each engine's best and its defaults in `repeat` interleaved processes, with the
   hierarchical CI of `infercmp.core.stats`.

A candidate that fails, crashes, times out or fails parity is dropped with the reason. Every
measurement is committed to the run store as it lands and the leaderboard (`tune.json`, the
`TuneLeaderboard` model) is rewritten after each, so a signal or the budget's end keeps what
was measured.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infercmp.core.contract import Measurement
from infercmp.engines.descriptor import EngineDescriptor, Machine
from infercmp.run.signals import Interrupted
from infercmp.store.tune_file import (
    EngineWinner,
    LeaderboardEntry,
    Objective,
    RoundFigure,
    RoundName,
    RoundPlan,
    TuneLeaderboard,
)
from infercmp.tune.candidates import (
    Candidate,
    cheap_candidates,
    expensive_candidates,
    precisions_of,
    search_space,
)
from infercmp.tune.measure import BudgetSpent, Measured, Measurer

#: Short windows for screening, longer for the confirmation, adaptive (CI-driven) at the end.
SCREEN = Measurement(warmup_seconds=0.5, duration_s=1.0)
CONFIRM = Measurement(warmup_seconds=1.0, duration_s=3.0)
FINAL = Measurement(warmup_seconds=1.0, max_seconds=3.0)
CONFIRM_FRACTION = 1 / 3  # of each engine's candidates that passed screening
#: A worker needs at least this long to start, load and measure; less left: the budget is spent.
MIN_WORKER_S = 5.0
#: What a worker costs before its first measurement, assumed until one has been timed.
DEFAULT_OVERHEAD_S = 10.0


@dataclass
class TuneRequest:
    model: str
    device: str
    shape: str  # the experiment's label
    shape_arg: str | None  # what to pass to --shape in the printed commands (None: default)
    descriptors: dict[str, EngineDescriptor]
    machine: Machine
    budget_s: float
    objective: Objective = "latency"
    precisions: Sequence[str] | None = None
    repeat: int = 3
    device_resident: bool = False
    candidate_timeout_s: float = 300.0  # a cheap candidate's worker; expensive ones add cost_s
    batch: int | None = None  # bench's --batch N: the example stacked to N items; None: as is


@dataclass
class Search:
    """Successive halving under a budget; `run()` fills `board` and writes it through `save`."""

    request: TuneRequest
    measurer: Measurer
    save: Callable[[TuneLeaderboard], None]
    progress: Callable[[str], None] = lambda line: None  # one line per round
    activity: Callable[[str], None] = lambda line: None  # each candidate as it lands
    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    board: TuneLeaderboard = field(init=False)
    _figures: dict[Candidate, Measured] = field(default_factory=dict, init=False)
    _entries: dict[Candidate, LeaderboardEntry] = field(default_factory=dict, init=False)
    _screened: dict[Candidate, Measured] = field(default_factory=dict, init=False)
    _reserve_s: float = field(default=0.0, init=False)  # budget an expensive worker may not use

    def __post_init__(self) -> None:
        r = self.request
        self.board = TuneLeaderboard(
            model=r.model,
            device=r.device,
            shape=r.shape,
            objective=r.objective,
            budget_s=r.budget_s,
        )

    # -- the budget

    def left_s(self) -> float:
        return self.request.budget_s - (self.clock() - self.started)

    def _timeout(self, candidate: Candidate) -> float:
        left = self.left_s()
        if left < MIN_WORKER_S:
            raise BudgetSpent
        # An expensive candidate may not eat the final round's share: a compile that runs
        # longer than its estimate is stopped and dropped as a timeout.
        kept = max(left - self._reserve_s, MIN_WORKER_S)
        return min(left, kept, self.request.candidate_timeout_s + candidate.cost_s)

    def _overhead_s(self, engine: str) -> float:
        """What one worker of `engine` costs besides its windows, from those timed so far."""
        walls = [
            (m.wall_s - m.measure_s) / max(m.processes, 1)
            for c, m in self._figures.items()
            if c.engine == engine and m.wall_s > 0 and not c.cost_s
        ]
        return max(sum(walls) / len(walls), 1.0) if walls else DEFAULT_OVERHEAD_S

    def estimate_s(self, candidates: Sequence[Candidate], plan: RoundPlan) -> float:
        """Seconds these candidates would take in `plan`, from what was timed so far.

        The declared load cost counts until a candidate has run once: then its compile sits in
        the Inductor (or the engine's own) cache and a new process loads it. Where that is not
        so, the worker's timeout, bounded by the budget, still keeps the search in time.
        """
        m = plan.measurement
        window = (m.warmup_seconds or 0) + (m.duration_s or m.max_seconds)
        return sum(
            plan.repeat * (self._overhead_s(c.engine) + window)
            + (c.cost_s if c not in self._figures else 0.0)
            for c in candidates
        )

    # -- the rounds

    def run(self) -> TuneLeaderboard:
        """Run every round the budget allows; `BudgetSpent` ends the search early, quietly."""
        r = self.request
        cheap: dict[str, list[Candidate]] = {}
        # No more candidates than the budget has workers for: a declared space can hold
        # billions (nine options of ten values), and listing them would outlast any budget.
        limit = max(1, int(r.budget_s // MIN_WORKER_S))
        for name, descriptor in r.descriptors.items():
            found, excluded = cheap_candidates(descriptor, r.device, r.machine, r.precisions, limit)
            cheap[name] = found
            space = search_space(descriptor)
            size = space.cheap_size(r.device) * len(
                precisions_of(descriptor, r.device, r.precisions)
            )
            if len(found) >= limit and size > limit:
                self.board.notes.append(
                    f"{name} declares about {size:,} cheap configurations; the {r.budget_s:g} s "
                    f"budget has room for at most {limit} workers, so the screen takes the first "
                    f"{limit}: the defaults, then those that change fewest options"
                )
            self.board.excluded += [{"label": e.label, "reason": e.reason} for e in excluded]
            if descriptor.search_space is None:
                self.board.notes.append(
                    f"{name} declares no search space: tuned over its defaults and precisions only"
                )
        for candidate in (c for found in cheap.values() for c in found):
            self._note(candidate, "not measured", "the budget ran out before its turn")
        self._save()
        try:
            self._round(RoundPlan(name="screen", measurement=SCREEN), _flatten(cheap))
            self._expensive()
            self._confirm()
            self._final()
            self.board.status = "complete"
        except Interrupted as exc:
            self.board.status = "interrupted"
            self.board.detail = f"stopped by {exc.signame}; the leaderboard holds what was measured"
            self._conclude()
            raise
        except BudgetSpent:
            self.board.status = "budget"
            self.board.detail = (
                f"the {r.budget_s:g} s budget ran out; the leaderboard holds what was measured"
            )
        self._conclude()
        if self._figures and not any(w.best for w in self.board.winners):
            # As bench fails a run whose combinations all failed: nothing here is a result.
            self.board.status = "failed"
            self.board.detail = (
                f"no configuration passed: all {len(self._figures)} measured were dropped "
                "(the leaderboard says why)"
            )
            self._save()
        return self.board

    def _round(self, plan: RoundPlan, candidates: list[Candidate]) -> None:
        """Measure `candidates` in `plan`; one `progress` line when the round ends (however it
        ends), and each candidate's own line to `activity` as it lands."""
        if not candidates:
            return
        self.board.rounds.append(plan)
        started = self.clock()
        measured: list[Measured] = []
        try:
            for m in self.measurer.measure(candidates, plan, self._timeout):
                self._record(plan.name, m)
                measured.append(m)
                self.activity(f"{plan.name} {len(measured)}/{len(candidates)}: {_progress_line(m)}")
        finally:
            self.progress(self._round_line(plan, len(candidates), measured, started))

    def _round_line(
        self, plan: RoundPlan, total: int, measured: list[Measured], started: float
    ) -> str:
        """`screen: 18 of 18 measured in 73 s, 3 dropped; fastest: ...; 17 s of the budget left`:
        the round's figures as they were, not an estimate."""
        ok = [m for m in measured if self._ok(m.candidate)]
        line = f"{plan.name}: {len(measured)} of {total} measured in {self.clock() - started:.0f} s"
        if len(ok) < len(measured):
            line += f", {len(measured) - len(ok)} dropped"
        if ok:
            best = min(ok, key=lambda m: _score(m, self.request.objective))
            figure = (
                f"{best.items_per_s:,.0f} items/s"
                if self.request.objective == "throughput" and best.items_per_s
                else f"{best.p50_ms:.4g} ms"
            )
            line += f"; fastest: {best.candidate.label} {figure}"
        return line + f"; {max(self.left_s(), 0):.0f} s of the budget left"

    def _expensive(self) -> None:
        """Each engine's expensive values on its best screened configuration, while they fit."""
        for engine, descriptor in self.request.descriptors.items():
            ranked = self._ranked(engine, "screen")
            if not ranked:
                continue
            found, excluded = expensive_candidates(descriptor, ranked[0])
            self.board.excluded += [{"label": e.label, "reason": e.reason} for e in excluded]
            plan = RoundPlan(name="expensive", measurement=SCREEN)
            for candidate in found:
                self._note(candidate, "not measured", None)
                need = self.estimate_s([candidate], plan)
                reserve = self._final_reserve()
                if need > self.left_s() - reserve:
                    self._note(
                        candidate,
                        "not measured",
                        f"needs about {need:.0f} s (declared load cost {candidate.cost_s:.0f} s); "
                        f"{max(self.left_s() - reserve, 0):.0f} s of the budget were left after "
                        "keeping room for the final round",
                    )
                    continue
                self._reserve_s = reserve
                try:
                    self._round(plan, [candidate])
                finally:
                    self._reserve_s = 0.0

    def _final_reserve(self) -> float:
        """What a one-process final of each engine's best and defaults would cost."""
        plan = RoundPlan(name="final", measurement=FINAL)
        finalists = [c for e in self.request.descriptors for c in self._finalists(e, "screen")]
        return self.estimate_s(finalists, plan)

    def _confirm(self) -> None:
        chosen: list[Candidate] = []
        for engine in self.request.descriptors:
            ranked = self._ranked(engine, None)
            if len(ranked) <= 2:  # the final round measures them all anyway
                continue
            keep = max(2, math.ceil(len(ranked) * CONFIRM_FRACTION))
            chosen += self._with_default(engine, ranked[:keep])
        plan = RoundPlan(name="confirm", measurement=CONFIRM)
        wanted = bool(chosen)
        while chosen and self.estimate_s(chosen, plan) > self.left_s() - self._final_reserve():
            chosen = self._shrink(chosen)
        if wanted and not chosen:
            self.board.notes.append("confirmation round left out: the budget had no room")
        self._round(plan, chosen)

    def _final(self) -> None:
        finalists = [c for e in self.request.descriptors for c in self._finalists(e, None)]
        repeat = self.request.repeat
        while (
            repeat > 1
            and self.estimate_s(
                finalists, RoundPlan(name="final", measurement=FINAL, repeat=repeat)
            )
            > self.left_s()
        ):
            repeat -= 1
        if repeat < self.request.repeat:
            self.board.notes.append(
                f"final round in {repeat} process(es) instead of {self.request.repeat}: the "
                "budget had no room for more"
            )
        self._round(RoundPlan(name="final", measurement=FINAL, repeat=repeat), finalists)

    def _finalists(self, engine: str, round_name: RoundName | None) -> list[Candidate]:
        ranked = self._ranked(engine, round_name)
        return self._with_default(engine, ranked[:1])

    def _with_default(self, engine: str, chosen: list[Candidate]) -> list[Candidate]:
        """`chosen` plus the engine's defaults when they were measured ok (the speed-up's base)."""
        default = next(
            (c for c in self._figures if c.engine == engine and c.is_default and self._ok(c)),
            None,
        )
        return chosen + ([default] if default is not None and default not in chosen else [])

    def _shrink(self, chosen: list[Candidate]) -> list[Candidate]:
        """Drop the slowest non-default candidate of the engine with the most; an engine left
        with its defaults alone leaves the round (its defaults would outrank its best)."""
        counts: dict[str, int] = {}
        for c in chosen:
            counts[c.engine] = counts.get(c.engine, 0) + (not c.is_default)
        engine = max(counts, key=lambda name: counts[name])
        slowest = [c for c in chosen if c.engine == engine and not c.is_default][-1:]
        kept = [c for c in chosen if c not in slowest]
        alive = {c.engine for c in kept if not c.is_default}
        return [c for c in kept if c.engine in alive]

    # -- ranking and recording

    def _ok(self, candidate: Candidate) -> bool:
        m = self._figures.get(candidate)
        return m is not None and m.status == "ok" and m.parity_ok and m.p50_ms is not None

    def _ranked(self, engine: str, round_name: RoundName | None) -> list[Candidate]:
        """The engine's candidates still in the race, best first, by their latest figure
        (`round_name`: only those whose latest figure is from that round)."""
        alive = [
            c
            for c in self._figures
            if c.engine == engine
            and self._ok(c)
            and (round_name is None or self._entries[c].round == round_name)
        ]
        # Candidates measured in a later round rank above those dropped earlier.
        depth = {"screen": 0, "expensive": 0, "confirm": 1, "final": 2}
        return sorted(
            alive,
            key=lambda c: (-depth[self._entries[c].round or "screen"], self._score(c)),
        )

    def _score(self, candidate: Candidate) -> float:
        return _score(self._figures[candidate], self.request.objective)

    def _record(self, round_name: RoundName, measured: Measured) -> None:
        c = measured.candidate
        self._figures[c] = measured
        if round_name in ("screen", "expensive"):  # the one window every candidate shares
            self._screened[c] = measured
        entry = self._entry(c)
        entry.rounds.append(
            RoundFigure(
                round=round_name,
                p50_ms=measured.p50_ms,
                ci_low_ms=measured.ci_low_ms,
                ci_high_ms=measured.ci_high_ms,
                processes=measured.processes,
                wall_s=round(measured.wall_s, 3),
            )
        )
        entry.round = round_name
        entry.p50_ms, entry.ci_low_ms, entry.ci_high_ms = (
            measured.p50_ms,
            measured.ci_low_ms,
            measured.ci_high_ms,
        )
        entry.items_per_s = measured.items_per_s
        entry.memory_bytes = measured.memory_bytes
        entry.status, entry.reason = "ok", None
        if measured.status != "ok":
            entry.status = "dropped"
            entry.reason = f"{measured.status}: {measured.error or 'no message'}"
            if measured.status == "timeout" and self.left_s() < MIN_WORKER_S:
                entry.reason += " (stopped at the end of the budget)"
        elif not measured.parity_ok:
            entry.status = "dropped"
            entry.reason = f"parity: {measured.parity_text or 'outputs differ from PyTorch'}"
        self._save()

    def _note(self, candidate: Candidate, status: str, reason: str | None) -> None:
        entry = self._entry(candidate)
        if entry.round is None:  # never measured: the note is all there is
            entry.status, entry.reason = status, reason  # type: ignore[assignment]

    def _entry(self, candidate: Candidate) -> LeaderboardEntry:
        if candidate not in self._entries:
            r = self.request
            entry = LeaderboardEntry(
                label=candidate.label,
                engine=candidate.engine,
                device=candidate.device,
                precision=candidate.precision,
                options=dict(candidate.options),
                variant=candidate.variant,
                default=candidate.is_default,
                status="not measured",
                cost_s=candidate.cost_s,
                command=bench_command(r, candidate),
            )
            self._entries[candidate] = entry
            self.board.entries.append(entry)
        return self._entries[candidate]

    def _save(self) -> None:
        self.board.elapsed_s = round(self.clock() - self.started, 3)
        self.save(self.board)

    def _conclude(self) -> None:
        """Winners per engine and overall, the Pareto front, the entries in rank order."""
        board = self.board
        board.winners = [self._winner(engine) for engine in self.request.descriptors]
        best = [
            (self._score(c), c.label)
            for c in self._figures
            if any(w.best == c.label for w in board.winners)
        ]
        board.overall = min(best)[1] if best else None
        # From the screening window, the one measurement every candidate had under the same
        # settings (later rounds measured only some, at other moments).
        board.pareto = pareto_front(
            [
                (c.label, _score(self._screened[c], self.request.objective), m.memory_bytes)
                for c in self._ok_ones()
                if (m := self._screened.get(c)) is not None
            ]
        )
        rank = {c: i for e in self.request.descriptors for i, c in enumerate(self._ranked(e, None))}
        ordered = sorted(
            self._entries.items(),
            key=lambda item: (
                item[1].engine,
                item[1].status != "ok",
                rank.get(item[0], math.inf),
                item[1].status,
            ),
        )
        board.entries = [entry for _, entry in ordered]
        self._save()

    def _ok_ones(self) -> list[Candidate]:
        return [c for c in self._figures if self._ok(c)]

    def _winner(self, engine: str) -> EngineWinner:
        ranked = self._ranked(engine, None)
        if not ranked:
            return EngineWinner(engine=engine, speedup_note="no configuration passed")
        best = ranked[0]
        entry = self._entries[best]
        default = next((c for c in ranked if c.is_default), None)
        winner = EngineWinner(
            engine=engine,
            best=best.label,
            best_p50_ms=entry.p50_ms,
            round=entry.round,
            command=entry.command,
        )
        if default is None:
            winner.speedup_note = "the defaults did not pass, so there is no speed-up to state"
        elif self._entries[default].round != entry.round:
            winner.speedup_note = (
                f"the defaults were last measured in the {self._entries[default].round} round, "
                f"the winner in the {entry.round} round: no like-for-like speed-up"
            )
        else:
            winner.default_p50_ms = self._entries[default].p50_ms
            if winner.default_p50_ms and winner.best_p50_ms:
                winner.speedup = round(winner.default_p50_ms / winner.best_p50_ms, 4)
            d, b = self._entries[default], entry
            if best is not default and None not in (d.ci_low_ms, b.ci_high_ms):
                if b.ci_high_ms >= d.ci_low_ms:  # type: ignore[operator]
                    winner.speedup_note = "the 95% CIs of the winner and the defaults overlap"
        return winner


def _score(m: Measured, objective: Objective) -> float:
    """Lower is better: the median, or minus the items/s."""
    if objective == "throughput" and m.items_per_s:
        return -m.items_per_s
    return m.p50_ms if m.p50_ms is not None else math.inf


def _flatten(groups: dict[str, list[Candidate]]) -> list[Candidate]:
    return [c for found in groups.values() for c in found]


def _progress_line(m: Measured) -> str:
    label = m.candidate.label
    if m.status != "ok":
        return f"{label}: dropped ({m.status}: {m.error})"
    if not m.parity_ok:
        return f"{label}: dropped (parity: {m.parity_text})"
    return f"{label}: {m.p50_ms:.4g} ms"


def pareto_front(points: Sequence[tuple[str, float, int | None]]) -> list[str]:
    """Labels of the points no other point beats on both score (lower is better) and memory.

    A point without a memory reading is judged on its score alone: on the front only when
    nothing is faster.
    """
    front = []
    for label, score, memory in points:
        dominated = False
        for other, o_score, o_memory in points:
            if other == label:
                continue
            mem_le = memory is None or (o_memory is not None and o_memory <= memory)
            mem_lt = memory is None or (o_memory is not None and o_memory < memory)
            if o_score <= score and mem_le and (o_score < score or mem_lt):
                dominated = True
                break
        if not dominated:
            front.append(label)
    return sorted(front, key=lambda lbl: next(s for n, s, _ in points if n == lbl))


def bench_command(request: TuneRequest, candidate: Candidate) -> str:
    """The `infercmp bench` command that measures `candidate` as tune's final round did."""
    parts = ["infercmp", "bench", request.model, "-e", candidate.engine_text]
    parts += ["-d", candidate.device, "-p", candidate.precision]
    if request.shape_arg:
        parts += ["--shape", request.shape_arg]
    if request.batch is not None:
        parts += ["--batch", str(request.batch)]
    if request.device_resident:
        parts.append("--device-resident")
    parts += ["--repeat", str(request.repeat)]
    return shlex.join(parts)
