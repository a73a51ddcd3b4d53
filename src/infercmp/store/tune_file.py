"""tune.json: the leaderboard `infercmp tune` leaves in its run directory, its models, reader and
writer (the report reads it through this module, so report and tune stay independent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infercmp.core.contract import Measurement
from infercmp.core.errors import InfercmpError
from infercmp.core.files import read_regular, write_atomic

TUNE_FILE = "tune.json"
TUNE_SCHEMA_VERSION = 1

Objective = Literal["latency", "throughput"]
RoundName = Literal["screen", "expensive", "confirm", "final"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RoundFigure(_Model):
    """One candidate measured in one round."""

    round: RoundName
    p50_ms: float | None = None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    processes: int = 0
    wall_s: float = 0.0  # the worker processes' whole time: start, load, warm-up, measure


class RoundPlan(_Model):
    """One round of the search: its windows, and how many processes measure each candidate."""

    name: RoundName
    measurement: Measurement
    repeat: int = 1


class LeaderboardEntry(_Model):
    label: str  # engine[options] precision, as winners and the Pareto front name it
    engine: str
    device: str
    precision: str
    options: dict[str, Any] = Field(default_factory=dict)
    variant: str | None = None
    default: bool = False  # the engine's defaults (fp32, no options)
    status: Literal["ok", "dropped", "not measured"]
    reason: str | None = None  # why dropped or not measured
    round: RoundName | None = None  # the last round that measured it
    p50_ms: float | None = None  # from that round
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    items_per_s: float | None = None
    memory_bytes: int | None = None  # peak VRAM on CUDA, peak RSS on the CPU (sampler)
    rounds: list[RoundFigure] = Field(default_factory=list)
    cost_s: float = 0.0
    command: str  # the `infercmp bench` command that measures this configuration


class EngineWinner(_Model):
    engine: str
    best: str | None = None  # the winner's label (engine[options] precision)
    best_p50_ms: float | None = None
    default_p50_ms: float | None = None
    speedup: float | None = None  # default / best, both from the same round
    speedup_note: str | None = None  # why there is none, or how to read it
    round: RoundName | None = None
    command: str | None = None


class TuneLeaderboard(_Model):
    """tune.json: the whole search, rewritten after every measurement."""

    schema_version: int = TUNE_SCHEMA_VERSION
    model: str
    device: str
    shape: str
    objective: Objective
    budget_s: float
    elapsed_s: float = 0.0
    status: Literal["running", "complete", "budget", "interrupted", "failed"] = "running"
    detail: str | None = None
    rounds: list[RoundPlan] = Field(default_factory=list)
    entries: list[LeaderboardEntry] = Field(default_factory=list)
    excluded: list[dict[str, str]] = Field(default_factory=list)  # {label, reason}
    winners: list[EngineWinner] = Field(default_factory=list)
    overall: str | None = None
    pareto: list[str] = Field(default_factory=list)  # labels on the latency-memory front
    notes: list[str] = Field(default_factory=list)

    def entry(self, label: str) -> LeaderboardEntry | None:
        return next((e for e in self.entries if e.label == label), None)


def read_leaderboard(run_dir: Path) -> TuneLeaderboard | None:
    """The run's tune.json, or None for a bench run; one clear error when it is damaged."""
    path = Path(run_dir) / TUNE_FILE
    if not path.exists():
        return None
    try:
        return TuneLeaderboard.model_validate_json(read_regular(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InfercmpError(
            f"{path} is not a valid tune leaderboard ({where}: {first['msg']}); it was written "
            "by another version of infercmp, or damaged"
        ) from None
    except OSError as exc:
        raise InfercmpError(f"cannot read {path}: {exc.strerror or exc}") from None


def write_leaderboard(run_dir: Path, board: TuneLeaderboard) -> None:
    """tune.json, whole or not at all (infercmp.core.files)."""
    write_atomic(Path(run_dir) / TUNE_FILE, board.model_dump_json(indent=2))
