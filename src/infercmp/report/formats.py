"""The summary table as text documents: Markdown, CSV and JSON (the HTML page is report/html/)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from infercmp.report import curves, precision, startup
from infercmp.report.accuracy import ACCURACY_COLUMNS
from infercmp.report.profile import PROFILE_COLUMNS, any_profile, profile_fields, profile_json
from infercmp.report.profile import profile_markdown as _profile_markdown
from infercmp.report.runs import RunView
from infercmp.report.summary import (
    COLUMNS,
    DEFAULT_BASELINE,
    _md_cell,
    combinations,
    experiments,
    fmt_energy,
    fmt_ms,
    fmt_num,
    fmt_parity,
    fmt_speedup,
    fmt_status,
    per_item_differs,
    summary_row,
    summary_rows,
)
from infercmp.store.debug_precision import read_results


def render_markdown(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
    profile_depth: int = 1,
) -> str:
    """The runs, how to read their numbers, one table per shape, and for runs with load flags
    the throughput-latency points with each engine's best configuration."""
    rows = summary_rows(runs, baseline_engine)
    models = sorted({run.model for run in runs})
    lines = [f"## infercmp: {_md_cell(', '.join(models))}", ""]
    lines.extend(_markdown_run_line(run) for run in runs)
    lines.append("")
    columns = _MarkdownColumns.of(rows, several_runs=len(runs) > 1)
    lines.append(_markdown_legend(rows, columns, baseline_engine))
    for shape in experiments(runs):
        lines += ["", f"### shape {_md_cell(shape)}", ""]
        header = columns.header()
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---:" if _numeric(h) else "---" for h in header) + "|")
        for row in rows:
            if row["shape"] == shape:
                lines.append("| " + " | ".join(_md_cell(c) for c in columns.cells(row)) + " |")
    combos = combinations(runs)
    budget = latency_budget_ms if latency_budget_ms is not None else curves.default_budget(combos)
    text = "\n".join(lines) + "\n" + curves.markdown(curves.load_points(combos), budget)
    # bench --profile: module and kind tables, in words
    text += _profile_markdown(combos, profile_depth)
    text += startup.render_markdown(combos)  # time to first answer
    # `infercmp debug-precision --run RUN` results: where a precision breaks, one section each
    breaks = [precision.render_markdown(r) for run in runs for r in read_results(run.path)]
    return text + "".join("\n" + b for b in breaks)


def _markdown_run_line(run: RunView) -> str:
    env = run.environment
    return (
        f"- run `{_md_cell(run.path.name)}` on {_md_cell(run.label)}: "
        f"{_md_cell(env.get('cpu_model') or env.get('cpu') or 'CPU')}, "
        f"status {_md_cell(run.status)}"
        + (f" ({_md_cell(run.status_detail)})" if run.abandoned else "")
    )


@dataclass(frozen=True)
class _MarkdownColumns:
    """The optional columns of the Markdown tables: each shown when some row has a value."""

    device: bool  # GPU p50 (CUDA events)
    processes: bool  # p50 per process (bench --repeat)
    items: bool  # J/item, where some request holds several items
    qps: bool  # offered req/s of a server run
    machine: bool  # merged runs: which machine measured the row
    accuracy: bool = False  # bench --accuracy: the headline accuracy
    ready: bool = False  # start-up figures: the time to the first answer

    @classmethod
    def of(cls, rows: list[dict[str, Any]], several_runs: bool) -> _MarkdownColumns:
        return cls(
            device=any(row["device_p50_ms"] is not None for row in rows),
            processes=any(row["process_p50_ms"] is not None for row in rows),
            items=per_item_differs(rows),
            qps=any(row["qps"] is not None for row in rows),
            machine=several_runs,
            accuracy=any("accuracy_shown" in row for row in rows),
            ready=any(row.get("ready_in") for row in rows),
        )

    def header(self) -> list[str]:
        return [
            *(["machine"] if self.machine else []),
            "engine",
            "device",
            "precision",
            "options",
            *(["offered req/s"] if self.qps else []),
            "p50",
            *(["GPU p50"] if self.device else []),
            "p90",
            "p99",
            "95% CI of p50",
            "throughput/s",
            "speedup",
            "peak RSS MiB",
            "peak VRAM MiB",
            "J/request",
            *(["J/item"] if self.items else []),
            *(["p50 per process"] if self.processes else []),
            "parity",
            *(["accuracy"] if self.accuracy else []),
            *(["ready in"] if self.ready else []),
            "status",
        ]

    def cells(self, row: dict[str, Any]) -> list[Any]:
        return [
            *([f"{row['host']} ({row['gpu'] or 'no GPU'})"] if self.machine else []),
            row["engine"],
            row["device"],
            row["precision"],
            row["options"],
            *([fmt_num(row["qps"], 1)] if self.qps else []),
            fmt_ms(row["p50_ms"]),
            *([fmt_ms(row["device_p50_ms"])] if self.device else []),
            fmt_ms(row["p90_ms"]),
            fmt_ms(row["p99_ms"]),
            f"{fmt_ms(row['ci_low_ms'])}–{fmt_ms(row['ci_high_ms'])}"
            if row["ci_low_ms"] is not None
            else "–",
            fmt_num(row["throughput_per_s"]),
            fmt_speedup(row),
            fmt_num(row["peak_rss_mib"], 0),
            fmt_num(row["peak_vram_mib"], 0),
            fmt_energy(row),
            *([fmt_num(row["energy_j_per_item"], 4)] if self.items else []),
            *([row["process_p50_ms"] or "–"] if self.processes else []),
            fmt_parity(row),
            *([row["accuracy_shown"] or "–"] if self.accuracy else []),
            *([row.get("ready_in") or "–"] if self.ready else []),
            fmt_status(row),
        ]


def _markdown_legend(
    rows: list[dict[str, Any]], columns: _MarkdownColumns, baseline_engine: str
) -> str:
    """How to read the tables: one paragraph, with a sentence for each column or mark shown."""
    shown = [fmt_speedup(row) for row in rows]

    def marked(mark: str) -> bool:
        return any(text.endswith(mark) for text in shown)

    return (
        f"Latency is host in → host out per iteration, in ms; CI is the 95% CI of the median; "
        f"speedup is against {_md_cell(baseline_engine)} on the same device (>1 is faster)."
        + (
            " GPU p50 is the median of the same iterations timed with CUDA events."
            if columns.device
            else ""
        )
        + (
            " Energy is per request (one iteration: the whole batch); J/item divides it by the "
            "items in a request."
            if columns.items
            else ""
        )
        + (
            " Offered req/s is the rate a server run was offered (--qps, or the rate its "
            "--qps auto search chose)."
            if columns.qps
            else ""
        )
        + (
            " Accuracy is the config's primary metric on the dataset's evaluation samples and "
            "its change against PyTorch fp32 on the same samples, in points (else the top-1 "
            "agreement with PyTorch fp32, else the mean cosine); (random calib.) marks int8 "
            "calibrated on random inputs."
            if columns.accuracy
            else ""
        )
        + (" " + startup.READY_LEGEND if columns.ready else "")
        + (
            " A speedup marked (contended) was measured while other processes kept the CPUs "
            "busy: it is not a result."
            if marked("(contended)")
            else ""
        )
        + (
            " A row marked (other load) did not run at its baseline's offered rate."
            if marked("(other load)")
            else ""
        )
        + (
            " A row marked (overloaded) or its baseline did not hold its load: no speedup."
            if marked("(overloaded)")
            else ""
        )
    )


def _numeric(header: str) -> bool:
    return header not in {
        "machine", "engine", "device", "precision", "options", "parity", "accuracy", "status",
    }  # fmt: skip


def render_csv(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
    profile_depth: int = 1,
) -> str:
    buffer = io.StringIO()
    # Runs with load flags gain two columns: on the engine's Pareto front, and its best
    # configuration within the latency budget (curves.best_within).
    combos = combinations(runs)
    points = {
        _row_key(summary_row(p.combo, baseline_engine)): p for p in curves.load_points(combos)
    }
    budget = latency_budget_ms if latency_budget_ms is not None else curves.default_budget(combos)
    best = curves.best_within(list(points.values()), budget)
    extra = ["pareto", "best_within_budget"] if points else []
    rows = summary_rows(runs, baseline_engine)
    accuracy = ACCURACY_COLUMNS if any("accuracy_shown" in row for row in rows) else []
    # bench --profile: the profiled call, what no op explains and the kinds of work
    profiles = (
        {_row_key(summary_row(c, baseline_engine)): profile_fields(c) for c in combos}
        if any_profile(combos)
        else {}
    )
    profile = PROFILE_COLUMNS if profiles else []
    ready = startup.STARTUP_COLUMNS if any("ready_in" in row for row in rows) else []
    fieldnames = COLUMNS + accuracy + ready + extra + profile
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row.update(profiles.get(_row_key(row), {}))
        point = points.get(_row_key(row))
        if extra:
            top = best.get(point.engine, {}) if point else {}
            row["pareto"] = point.pareto if point else None
            row["best_within_budget"] = (
                top.get("configuration") == point.configuration and top.get("load") == point.load
                if point
                else None
            )
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\n")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text a spreadsheet would run as a formula gets a leading `'`.

    Only text: a number (a negative one included) is data, and stays a number. A carriage
    return becomes a line feed: the writer quotes cells holding its line terminator ("\n")
    but not a lone "\r", which readers take for the end of the row.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _row_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in ("run", "shape", "engine", "device", "precision", "options"))


def render_json(
    runs: list[RunView],
    baseline_engine: str = DEFAULT_BASELINE,
    latency_budget_ms: float | None = None,
    profile_depth: int = 1,
) -> str:
    document = {
        "format": "infercmp-report-summary",
        "version": 2,  # 2: energy_j_per_inference became energy_j_per_request (+ per item)
        "baseline_engine": baseline_engine,
        "runs": [
            {
                "path": str(run.path),
                "label": run.label,
                "host": run.host,
                "gpus": run.gpu_names,
                "model": run.model,
                "status": run.status,
                "status_detail": run.status_detail,
                "infercmp_version": run.meta.get("infercmp_version"),
            }
            for run in runs
        ],
        "rows": summary_rows(runs, baseline_engine),
    }
    combos = combinations(runs)
    points = curves.load_points(combos)
    if points:  # runs with load flags: the throughput-latency points and each engine's best
        budget = (
            latency_budget_ms if latency_budget_ms is not None else curves.default_budget(combos)
        )
        document["curves"] = {
            "latency_budget_ms": budget,
            "points": [p.as_row() for p in points],
            "best": curves.best_within(points, budget),
        }
    if any_profile(combos):  # bench --profile: the module and kind tables as data
        document["profiles"] = profile_json(combos, profile_depth)
    return json.dumps(document, indent=2, default=str) + "\n"
