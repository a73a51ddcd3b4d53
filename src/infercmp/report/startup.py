"""What starting each combination costs, as a report reads it: the "ready in" column of the
summary table (`ready_fields`) and the "time to first answer" section (`startup_rows`,
`render_markdown`), from the `startup` record bench stores (infercmp.run.startup)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infercmp.report.runs import CombinationView

#: The summary row's start-up fields (CSV columns after the others, when some row has them).
STARTUP_COLUMNS = ["ready_in", "ready_as_run_s", "ready_cold_s", "ready_warm_s"]
#: The starts a record may hold, in the order shown, and their names in the tables.
STARTS = (("as_run", "as run"), ("cold", "cold"), ("warm", "warm"))

READY_LEGEND = (
    "Ready in is the time from the worker process's start to its first answer; with bench "
    "--cold, cold then warm, each with the export and conversion made in a fresh (cold) or "
    "filled (warm) cache, else the measured run's own first process (its export and "
    "conversion not included)."
)


def startup_of(combo: CombinationView) -> dict[str, Any] | None:
    """The combination's stored `startup` record (None: none, or a run made before it)."""
    record = getattr(combo.result, "startup", None)
    return record if isinstance(record, dict) and record else None


def any_startup(combos: list[CombinationView]) -> bool:
    """Whether some combination has start-up figures (the "ready in" column is then shown)."""
    return any(startup_of(c) for c in combos)


def fmt_seconds(value: float | None) -> str:
    """`840 ms`, `3.21 s`, `–` for none."""
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3g} s"


def _ready(start: dict[str, Any] | None) -> float | None:
    return start.get("ready_s") if start else None


def ready_text(record: dict[str, Any] | None) -> str | None:
    """The "ready in" cell of a stored `startup` record: `3.5 s cold / 710 ms warm` with bench
    --cold, else the measured run's own (`1.84 s`); None without figures."""
    record = record or {}
    if record.get("cold") or record.get("warm"):
        return " / ".join(
            f"{fmt_seconds(value)} {name}" if value is not None else f"failed {name}"
            for name, value in ((n, _ready(record.get(n))) for n in ("cold", "warm"))
        )
    as_run = _ready(record.get("as_run"))
    return fmt_seconds(as_run) if as_run is not None else None


def ready_fields(combo: CombinationView) -> dict[str, Any]:
    """The STARTUP_COLUMNS of one row: the shown cell and each start's ready_s."""
    record = startup_of(combo) or {}
    as_run, cold, warm = (_ready(record.get(key)) for key in ("as_run", "cold", "warm"))
    return {
        "ready_in": ready_text(record),
        "ready_as_run_s": as_run,
        "ready_cold_s": cold,
        "ready_warm_s": warm,
    }


@dataclass(frozen=True)
class StartRow:
    """One start of one combination, as the "time to first answer" tables show it."""

    label: str  # the combination
    shape: str
    start: str  # "as run", "cold", "warm"
    export: str
    convert: str
    worker_start: str
    load: str
    prepare: str
    first_inference: str
    first_k: str  # "3.1x the median (10 calls)"
    ready: str
    error: str | None = None

    def cells(self) -> list[str]:
        return [
            self.label, self.shape, self.start, self.export, self.convert, self.worker_start,
            self.load, self.prepare, self.first_inference, self.first_k, self.ready,
        ]  # fmt: skip


HEADER = [
    "combination", "shape", "start", "export", "conversion", "worker start", "load", "prepare",
    "first inference", "first calls", "ready in",
]  # fmt: skip


def _step(seconds: float | None, hit: bool | None) -> str:
    if seconds is None:
        return "–"
    return fmt_seconds(seconds) + {True: " (hit)", False: " (miss)", None: ""}[hit]


def _first_k(worker: dict[str, Any], median_ms: float | None) -> str:
    """The first calls' mean against the steady median: `3.1x the median (10 calls)`."""
    calls = worker.get("first_k_ms") or []
    if not calls or not median_ms:
        return "–"
    return f"{sum(calls) / len(calls) / median_ms:.1f}x the median ({len(calls)} calls)"


def _start_row(combo: CombinationView, name: str, start: dict[str, Any], prepared: Any) -> StartRow:
    """One start: `as_run` is a StartupTimes with the run's own preparation (`prepared`); a
    pass of --cold holds its export, conversion and worker."""
    worker = start if name == "as run" else (start.get("worker") or {})
    steps = prepared if name == "as run" else start
    steps = steps or {}
    median = (combo.latency or {}).get("p50_ms")
    first = worker.get("first_inference_ms")
    return StartRow(
        label=combo.label,
        shape=combo.shape_label,
        start=name,
        export=_step(steps.get("export_s"), steps.get("export_hit")),
        convert=_step(steps.get("convert_s"), steps.get("convert_hit")),
        worker_start=fmt_seconds(worker.get("process_to_load_s")),
        load=fmt_seconds(worker.get("load_s")),
        prepare=fmt_seconds(worker.get("prepare_s")),
        first_inference="–" if first is None else f"{first:.4g} ms",
        first_k=_first_k(worker, median),
        ready=fmt_seconds(start.get("ready_s")),
        error=None if name == "as run" else start.get("error"),
    )


def startup_rows(combos: list[CombinationView]) -> list[StartRow]:
    """Every start of every combination that has start-up figures, as run, cold, warm."""
    rows = []
    for combo in combos:
        record = startup_of(combo)
        if record is None:
            continue
        for key, name in STARTS:
            start = record.get(key)
            if start:
                rows.append(_start_row(combo, name, start, record.get("prepared")))
    return rows


def cache_notes(combos: list[CombinationView]) -> list[str]:
    """What cold cleared for each engine measured cold, and what it never clears, once each."""
    notes: dict[str, None] = {}
    never = None
    for combo in combos:
        record = startup_of(combo) or {}
        if record.get("caches_cleared"):
            notes[f"{combo.engine}: {'; '.join(record['caches_cleared'])}"] = None
            never = never or record.get("not_cleared")
    lines = [f"cold cleared {text}" for text in notes]
    if never:
        lines.append(f"never cleared: {never}")
    return lines


SECTION_LEGEND = (
    "Worker start is from the worker process's creation to the engine's load call (the "
    "interpreter, infercmp and the reference read); load is the engine's load (its runtime "
    "imported, the session created or the model read), prepare binds the inputs (OpenVINO "
    "compiles here); first inference is the first call, with any compilation or algorithm "
    "search it does; first calls is the mean of the first warm-up calls against the measured "
    "median. Export and conversion are timed in bench's process, (hit) when the cache held "
    "them; as run, they are the measured run's own."
)


def render_markdown(combos: list[CombinationView]) -> str:
    """The "time to first answer" section; empty when no combination has start-up figures."""
    rows = startup_rows(combos)
    if not rows:
        return ""
    lines = ["", "### time to first answer", "", SECTION_LEGEND, ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|")
    for row in rows:
        cells = [_md(c) for c in row.cells()]
        if row.error:
            cells[-1] = _md(f"failed: {row.error}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = cache_notes(combos)
    if notes:
        lines += ["", *(f"- {_md(n)}" for n in notes)]
    return "\n".join(lines) + "\n"


def _md(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
