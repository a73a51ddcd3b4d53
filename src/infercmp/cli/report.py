"""Commands of the report stage: `infercmp report` and `infercmp compare`."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path

import typer

from infercmp.cli.common import console
from infercmp.errors import InfercmpError

FORMATS = ("html", "md", "csv", "json")
_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".csv": "csv", ".json": "json"}


def _format_for(fmt: str | None, output: Path | None) -> str:
    if fmt is None:
        fmt = _SUFFIXES.get(output.suffix.lower(), "html") if output else "html"
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
    baseline: str = typer.Option(
        "pytorch", "--baseline", help="Engine that speedups are measured against (same device)."
    ),
) -> None:
    """Write a report of one or more bench runs: an offline HTML page, or md/csv/json tables."""
    from infercmp import report as rep

    kind = _format_for(fmt, output)
    runs = rep.load_runs(rep.resolve_run_dirs(list(run_dirs or []), runs_dir))
    renderers = {
        "html": rep.render_html,
        "md": rep.render_markdown,
        "csv": rep.render_csv,
        "json": rep.render_json,
    }
    text = renderers[kind](runs, baseline)
    if output is None and kind != "html":
        write_stdout(text)
        return
    target = output or Path("report.html")
    _write(target, text)
    size = target.stat().st_size
    names = ", ".join(str(run.path) for run in runs)
    console.print(f"wrote {target} ({size / 1e6:.1f} MB) from {names}", soft_wrap=True)


def _write(path: Path, text: str) -> None:
    from infercmp.files import write_atomic

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


def _check_compare_options(threshold: float, noise_floor: float, resamples: int, seed: int):
    """Options that would switch the check off (NaN passes every comparison) are refused."""
    for name, value, example in (("--threshold", threshold, 5), ("--noise-floor", noise_floor, 1)):
        if not math.isfinite(value) or value < 0:
            raise InfercmpError(
                f"{name} {value:g} is not a percentage; give a number >= 0, e.g. {example}"
            )
    if not 0 <= seed < 2**63:
        raise InfercmpError(f"--seed {seed} is not a seed; give an integer from 0 to 2**63 - 1")
    if not 100 <= resamples <= MAX_RESAMPLES:
        raise InfercmpError(f"--resamples {resamples} is out of range; use 100 to {MAX_RESAMPLES}")


def compare(
    base_run: Path = typer.Argument(..., help="The reference run directory."),
    new_run: Path = typer.Argument(..., help="The run to judge against it."),
    threshold: float = typer.Option(
        5.0, "--threshold", help="Exit 1 when a significant regression of the median exceeds PCT %."
    ),
    noise_floor: float = typer.Option(
        1.0, "--noise-floor", help="Changes smaller than PCT % are never called significant."
    ),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, md or json."),
) -> None:
    """Compare two runs: change of each combination's median with a bootstrap 95% CI.

    Exit code 1 when a significant regression exceeds --threshold (for CI pipelines), else 0.
    """
    import json

    from infercmp import report as rep

    _check_compare_options(threshold, noise_floor, resamples, seed)
    if fmt not in ("text", "md", "json"):
        raise InfercmpError(f"--format '{fmt}' is not one of text, md, json")
    base = rep.open_run(base_run)
    new = rep.open_run(new_run)
    result = rep.compare_runs(
        base, new, threshold / 100, noise_floor / 100, resamples=resamples, seed=seed
    )
    if fmt == "json":
        write_stdout(json.dumps(result.to_dict(), indent=2) + "\n")
    elif fmt == "md":
        write_stdout(_compare_markdown(result))
    else:
        _print_compare(result)
        write_stdout("")
    raise typer.Exit(result.exit_code)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}%"


def _compare_cells(c) -> list[str]:
    from infercmp.report.summary import fmt_ms

    ci = "" if c.ci_low is None else f" ({_pct(c.ci_low)} … {_pct(c.ci_high)})"
    return [
        f"{c.engine} {c.device} {c.precision} {c.shape}",
        fmt_ms(c.base_p50_ms),
        fmt_ms(c.new_p50_ms),
        f"{_pct(c.change)}{ci}",
        c.verdict,
        c.note,
    ]


_HEADERS = ["configuration", "base p50 ms", "new p50 ms", "change (95% CI)", "verdict", "note"]


def _print_compare(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{result.base} → {result.new}", title_justify="left")
    table.add_column("configuration")
    table.add_column("base p50 ms", justify="right", no_wrap=True)
    table.add_column("new p50 ms", justify="right", no_wrap=True)
    table.add_column("change (95% CI)", justify="right")
    table.add_column("verdict")
    styles = {"regression": "bold red", "improvement": "green", "not compared": "yellow"}
    notes = []
    for c in result.comparisons:
        cells = [escape(x) for x in _compare_cells(c)]
        style = styles.get(c.verdict)
        if style:
            cells[4] = f"[{style}]{cells[4]}[/]"
        table.add_row(*cells[:5])
        if c.note:
            notes.append(f"{escape(cells[0])}: {escape(c.note)}")
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)
    for label, items in (
        ("only in base", result.only_in_base),
        ("only in new", result.only_in_new),
    ):
        for item in items:
            console.print(f"{label}: {escape(item)}", soft_wrap=True)
    console.print(
        f"method: {escape(result.method)}; significant when the CI excludes 0 and "
        f"|change| > {result.noise_floor * 100:g}%",
        soft_wrap=True,
    )
    if result.failing:
        names = ", ".join(escape(f"{c.label} ({_pct(c.change)})") for c in result.failing)
        console.print(
            f"[bold red]FAIL[/]: regression above {result.threshold * 100:g}%: {names}",
            soft_wrap=True,
        )
    else:
        console.print(f"OK: no regression above {result.threshold * 100:g}%")


def _compare_markdown(result) -> str:
    from infercmp.report.summary import _md_cell

    lines = [
        f"### infercmp compare: `{_md_cell(result.base)}` → `{_md_cell(result.new)}`",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join("---" for _ in _HEADERS) + "|",
    ]
    for c in result.comparisons:
        lines.append("| " + " | ".join(_md_cell(x) for x in _compare_cells(c)) + " |")
    lines.append("")
    lines.append(f"Method: {_md_cell(result.method)}.")
    verdict = "FAIL" if result.failing else "OK"
    lines.append(f"Verdict: **{verdict}** (threshold {result.threshold * 100:g}%).")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
