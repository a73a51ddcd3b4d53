"""Commands of the report stage: `infercmp report` and `infercmp compare`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from infercmp.cli.options import console, err_console
from infercmp.core.errors import InfercmpError
from infercmp.core.files import write_atomic
from infercmp.engines.registry import reference_engine
from infercmp.report import (
    CompareReport,
    Comparison,
    compare_runs,
    load_runs,
    open_run,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    resolve_run,
    resolve_run_dirs,
)
from infercmp.report.accuracy import ACCURACY_REGRESSION, DEFAULT_ACCURACY_THRESHOLD
from infercmp.report.runs import keep_nodes
from infercmp.report.summary import _md_cell, fmt_ms
from infercmp.run.profile import check_depth
from infercmp.store.locate import run_owning

FORMATS = ("html", "md", "csv", "json")
_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".csv": "csv", ".json": "json"}


def _format_for(fmt: str | None, output: Path | None) -> str:
    suffix = output.suffix.lower() if output else ""
    if fmt is None and suffix and suffix not in _SUFFIXES:  # out.pdf got HTML, silently
        raise InfercmpError(
            f"-o {output}: infercmp writes no '{suffix}' file; name it .html, .md, .csv or "
            ".json, or give --format"
        )
    if fmt is None:
        fmt = _SUFFIXES.get(suffix, "html")
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InfercmpError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}")
    return fmt


def report(
    run_dirs: list[Path] = typer.Argument(
        None, help="Run directories to report; several merge into one report. Default: the latest."
    ),
    output: Path = typer.Option(
        None,
        "-o",
        "--output",
        help="File to write. Default: report.html for html, standard output for md/csv/json.",
    ),
    fmt: str = typer.Option(
        None, "--format", "-f", help="html, md, csv or json (default: from -o's suffix, else html)."
    ),
    runs_dir: Path = typer.Option(
        Path("runs"), "--runs-dir", help="Where to look for the latest run when none is named."
    ),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Engine that speedups are measured against (same device). Default: the engine "
        "that runs the model's own PyTorch module.",
    ),
    node: str | None = typer.Option(
        None,
        "--node",
        help="Only combinations that ran on a node whose host or GPU name contains this (H200).",
    ),
    latency_budget_ms: float | None = typer.Option(
        None,
        "--latency-budget-ms",
        help="Runs with --batch/--concurrency/--scenario: name each engine's best "
        "configuration with p99 within this (default: the server scenario's --slo-ms).",
    ),
    depth: int = typer.Option(
        1,
        "--depth",
        help="Runs with --profile: the module depth of the profile tables (1: the model's "
        "children, conv1, layer1 .. layer4, fc; 2: their children, ...).",
    ),
) -> None:
    """Write a report of one or more bench runs: an offline HTML page, or md/csv/json tables."""
    if output is not None:
        _refuse_a_file_of_a_run(output)
    kind = _format_for(fmt, output)
    paths = resolve_run_dirs(list(run_dirs or []), runs_dir)
    runs = load_runs([_resolve(path) for path in paths])
    if node is not None:
        keep_nodes(runs, node)
    renderers = {
        "html": render_html,
        "md": render_markdown,
        "csv": render_csv,
        "json": render_json,
    }
    if baseline is None:
        baseline = reference_engine() or ""
    if latency_budget_ms is not None and not (0 < latency_budget_ms < math.inf):
        raise InfercmpError(
            f"--latency-budget-ms must be a positive number of milliseconds, got "
            f"{latency_budget_ms}"
        )
    check_depth(depth)
    text = renderers[kind](runs, baseline, latency_budget_ms=latency_budget_ms, profile_depth=depth)
    if output is None and kind != "html":
        write_stdout(text)
        return
    target = output or Path("report.html")
    _write(target, text)
    size = target.stat().st_size
    names = ", ".join(str(run.path) for run in runs)
    console.print(f"wrote {target} ({size / 1e6:.1f} MB) from {names}", soft_wrap=True)


def _resolve(path: Path) -> Path:
    """A run directory as given, or the latest run in a directory of runs (said on stderr)."""
    run, note = resolve_run(path)
    if note:
        err_console.print(note, soft_wrap=True, markup=False, highlight=False)
    return run


def _refuse_a_file_of_a_run(path: Path) -> None:
    """A report never replaces a file of a run (its commit log, run.json, its parquet files);
    checked before anything else about -o, so that is what the user is told."""
    run = run_owning(path)
    if run is not None:
        raise InfercmpError(
            f"-o {path} is a file of the run directory {run}; write the report elsewhere"
        )


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise InfercmpError(f"cannot write {path}: {exc}") from exc


def write_stdout(text: str) -> None:
    """Write to standard output; a full disk or closed pipe there is one error line, exit 2."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        # What is still buffered would fail again when Python exits, with a traceback-like
        # "Exception ignored" message: point the descriptor at /dev/null first.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise InfercmpError(f"cannot write to standard output: {exc}") from None


MAX_RESAMPLES = 1_000_000  # 20 combinations x 2,000 iterations stay within seconds up to here


def _check_compare_options(
    threshold: float, noise_floor: float, run_noise: float, resamples: int, seed: int
):
    """Options that would switch the check off (NaN passes every comparison) are refused."""
    for name, value, example in (
        ("--threshold", threshold, 5),
        ("--noise-floor", noise_floor, 1),
        ("--run-noise", run_noise, 10),
    ):
        if not math.isfinite(value) or value < 0:
            raise InfercmpError(
                f"{name} {value:g} is not a percentage; give a number >= 0, e.g. {example}"
            )
    if not 0 <= seed < 2**63:
        raise InfercmpError(f"--seed {seed} is not a seed; give an integer from 0 to 2**63 - 1")
    if not 100 <= resamples <= MAX_RESAMPLES:
        raise InfercmpError(f"--resamples {resamples} is out of range; use 100 to {MAX_RESAMPLES}")


_BASE_RUN = typer.Argument(..., help="The reference run (or a directory of runs).")
_NEW_RUN = typer.Argument(..., help="The run to judge against it (or a directory).")
_THRESHOLD = typer.Option(
    5.0,
    "--threshold",
    metavar="PCT",
    help="The change of a median, in percent, that fails the gate (default 5).",
)
_NOISE_FLOOR = typer.Option(
    1.0,
    "--noise-floor",
    metavar="PCT",
    help="Significant changes below PCT percent are reported as no change (label only).",
)
_RUN_NOISE = typer.Option(
    10.0,
    "--run-noise",
    metavar="PCT",
    help="How far two single-process runs of the same code may differ on this machine, in "
    "percent: added to the interval when both runs have one process (default 10).",
)
_ACCURACY_THRESHOLD = typer.Option(
    DEFAULT_ACCURACY_THRESHOLD,
    "--accuracy-threshold",
    metavar="POINTS",
    help="Runs measured with bench --accuracy: a drop of the headline accuracy by more than "
    "this fails the gate whatever the speed; in points of percent for a metric in [0, 1] "
    "(top-1: 1 is one point), else in the metric's own units (default 1).",
)
_RESAMPLES = typer.Option(2000, "--resamples", help="Bootstrap resamples (100 to 10^6).")
_SEED = typer.Option(0, "--seed", help="Seed of the bootstrap.")
_ALLOW_ENV_CHANGE = typer.Option(
    False,
    "--allow-env-change",
    help="Compare runs measured on different machines or library versions (named anyway).",
)
_FMT = typer.Option("text", "--format", "-f", help="text, md or json.")


def compare(
    base_run: Path = _BASE_RUN,
    new_run: Path = _NEW_RUN,
    threshold: float = _THRESHOLD,
    noise_floor: float = _NOISE_FLOOR,
    run_noise: float = _RUN_NOISE,
    resamples: int = _RESAMPLES,
    seed: int = _SEED,
    allow_env_change: bool = _ALLOW_ENV_CHANGE,
    fmt: str = _FMT,
    accuracy_threshold: float = _ACCURACY_THRESHOLD,
) -> None:
    """Compare two runs: the change of each combination's median with a 95% interval.

    One rule decides each row from its interval: no change when the whole interval lies within
    +-threshold (a significant change that small is named and passes); a regression or
    improvement when the interval excludes no change and the change is larger than the
    threshold; inconclusive when the interval reaches past the threshold without showing such a
    change (the row says how many --repeat processes would decide it). The interval is the
    hierarchical bootstrap's (processes, then iterations) when a run has repeated processes; a
    side with one process is widened by the other side's spread between processes, or by
    --run-noise when both have one. A run compared with itself is no change. With one process
    a side and --run-noise at or above --threshold no change cannot be shown (identical runs
    read inconclusive, never a regression): measure both runs with --repeat 5 or more.

    Exit codes: 0 no regression; 1 a regression above --threshold, outputs that passed parity
    in the base run and fail in the new one, or a load run that held its load in the base run
    and not in the new one (overloaded), or an accuracy drop beyond --accuracy-threshold (runs
    measured with bench --accuracy); 2 bad input, or runs from different
    environments without --allow-env-change; 3 nothing comparable, a combination ok in the base
    run and missing, failed or skipped in the new one, or one inconclusive.
    """
    _check_compare_options(threshold, noise_floor, run_noise, resamples, seed)
    if not math.isfinite(accuracy_threshold) or accuracy_threshold < 0:
        raise InfercmpError(
            f"--accuracy-threshold {accuracy_threshold:g} is not a drop; give a number >= 0, e.g. 1"
        )
    if fmt not in ("text", "md", "json"):
        raise InfercmpError(f"--format '{fmt}' is not one of text, md, json")
    base = open_run(_resolve(base_run))
    new = open_run(_resolve(new_run))
    result = compare_runs(
        base,
        new,
        threshold / 100,
        noise_floor / 100,
        resamples=resamples,
        seed=seed,
        run_noise=run_noise / 100,
        accuracy_threshold=accuracy_threshold,
    )
    if result.environment_changes and not allow_env_change:
        raise InfercmpError(
            "the runs were measured in different environments ("
            + "; ".join(result.environment_changes)
            + "): the change would be theirs as much as yours; compare them anyway with "
            "--allow-env-change"
        )
    _show_compare(result, fmt)
    raise typer.Exit(result.exit_code)


def _show_compare(result: CompareReport, fmt: str) -> None:
    if fmt == "json":
        write_stdout(json.dumps(result.to_dict(), indent=2) + "\n")
    elif fmt == "md":
        write_stdout(_compare_markdown(result))
    else:
        _print_compare(result)
        write_stdout("")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}%"


def _compare_cells(c: Comparison) -> list[str]:
    ci = "" if c.ci_low is None else f" ({_pct(c.ci_low)} … {_pct(c.ci_high)})"
    return [
        f"{c.engine} {c.device} {c.precision} {c.shape}",
        fmt_ms(c.base_p50_ms),
        fmt_ms(c.new_p50_ms),
        f"{_pct(c.change)}{ci}",
        _parity_cell(c),
        c.verdict,
        c.method or "",
        c.note,
    ]


def _parity_cell(c: Comparison) -> str:
    """Parity of both sides, base → new ("ok", "FAIL", or n/a where none was checked)."""
    base, new = c.base_parity or "n/a", c.new_parity or "n/a"
    return base if base == new else f"{base} → {new}"


_HEADERS = [
    "configuration",
    "base p50 ms",
    "new p50 ms",
    "change (95% CI)",
    "parity",
    "verdict",
    "method",
    "note",
]


def _findings(result: CompareReport) -> list[str]:
    """What the table does not show, as plain lines: the same in text and Markdown."""
    lines = [f"environment changed (allowed): {change}" for change in result.environment_changes]
    for side, status in (("base", result.base_status), ("new", result.new_status)):
        if status != "complete":
            lines.append(f"the {side} run is {status}: only its finished combinations count")
    lines += [f"only in base: {item}" for item in result.only_in_base]
    lines += [f"only in new: {item}" for item in result.only_in_new]
    for name, text in result.methods.items():
        count = sum(c.method == name for c in result.comparisons)
        lines.append(f"method ({name}, {count} combination(s)): {text}")
    lines.append(
        f"rule: no change when the whole interval lies within +-{result.threshold * 100:g}%; "
        "a regression or improvement when it excludes no change and the change is larger than "
        "that; inconclusive when it reaches past it without showing such a change; outputs "
        "that passed parity in base and fail in new, and a load no longer held, fail whatever "
        "the speed"
    )
    if result.accuracy_threshold is not None:
        lines.append(
            "accuracy: a drop of the headline accuracy by more than "
            f"{result.accuracy_threshold:g} (points of percent for a metric in [0, 1]) fails "
            "whatever the speed (--accuracy-threshold)"
        )
    return lines


def _failure(c: Comparison, threshold: float) -> str:
    """Why one row fails the gate, in its own terms (speed, outputs or load)."""
    if c.verdict == "parity regression":
        return f"outputs went wrong: {c.label} (parity {_parity_cell(c)})"
    if c.verdict == "overloaded":
        return f"did not hold its load: {c.label}"
    if c.verdict == ACCURACY_REGRESSION and c.accuracy:
        a = c.accuracy
        return (
            f"accuracy dropped: {c.label} ({a['metric']} {a['base']:.4g} -> {a['new']:.4g}, "
            f"-{a['drop']:.2f} {a['unit']})"
        )
    return f"regression above {threshold * 100:g}%: {c.label} ({_pct(c.change)})"


def _verdict(result: CompareReport) -> str:
    if result.failing:
        return "FAIL (exit 1): " + "; ".join(_failure(c, result.threshold) for c in result.failing)
    if result.problems:
        return "FAIL (exit 3): " + "; ".join(result.problems)
    return (
        f"OK: no regression above {result.threshold * 100:g}% in "
        f"{len(result.compared)} compared combination(s)"
    )


def _print_compare(result: CompareReport) -> None:
    table = Table(title=f"{result.base} → {result.new}", title_justify="left")
    table.add_column("configuration")
    table.add_column("base p50 ms", justify="right", no_wrap=True)
    table.add_column("new p50 ms", justify="right", no_wrap=True)
    table.add_column("change (95% CI)", justify="right")
    table.add_column("parity")
    table.add_column("verdict")
    styles = {
        "regression": "bold red",
        "parity regression": "bold red",
        "overloaded": "bold red",
        ACCURACY_REGRESSION: "bold red",
        "lost": "bold red",
        "improvement": "green",
        "not compared": "yellow",
        "inconclusive": "yellow",
    }
    notes = []
    for c in result.comparisons:
        cells = [escape(x) for x in _compare_cells(c)]
        style = styles.get(c.verdict)
        if style:
            cells[5] = f"[{style}]{cells[5]}[/]"
        table.add_row(*cells[:6])
        if c.note:
            notes.append(f"{escape(cells[0])}: {escape(c.note)}")
    console.print(table)
    for line in notes + [escape(line) for line in _findings(result)]:
        console.print(line, soft_wrap=True)
    style = "bold red" if result.exit_code else "bold green"
    console.print(f"[{style}]{escape(_verdict(result))}[/]", soft_wrap=True)


def _compare_markdown(result: CompareReport) -> str:
    lines = [
        f"### infercmp compare: `{_md_cell(result.base)}` → `{_md_cell(result.new)}`",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join("---" for _ in _HEADERS) + "|",
    ]
    for c in result.comparisons:
        lines.append("| " + " | ".join(_md_cell(x) for x in _compare_cells(c)) + " |")
    lines.append("")
    lines += [f"- {_md_cell(line)}" for line in _findings(result)]
    lines.append("")
    lines.append(f"Verdict: **{_md_cell(_verdict(result))}**")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
