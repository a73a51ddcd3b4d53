"""`infercmp profile MODEL`: a bench with `--profile` on, then the aligned tables.

It takes bench's selection flags (`-e -d -p -s --batch`, the same options as `bench`, and
`--iters`) and
runs `infercmp.cli.bench.bench` with every other flag at its default; the run is stored as a
bench's is, and `infercmp report RUN` shows the same section. At the end it prints, per model
and shape, the module x engine table at `--depth`, the kind-of-work x engine table and the
largest differences in words (infercmp.report.profile).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from infercmp.cli import bench as bench_command
from infercmp.cli.options import (
    cache_dir_option,
    console,
    exporter_option,
    out_option,
    print_table,
)
from infercmp.core.contract import ProfileSpec
from infercmp.report.profile import (
    ProfileTable,
    kind_table_rows,
    module_table_rows,
    profile_tables,
    words,
)
from infercmp.report.runs import load_runs
from infercmp.report.summary import combinations
from infercmp.run.profile import check_depth

_DEPTH = typer.Option(
    1,
    "--depth",
    help="Module depth of the table: 1 the model's children (conv1, layer1 .. layer4, fc), "
    "2 their children, ...",
)
_ITERATIONS = typer.Option(
    ProfileSpec().iterations, "--profile-iterations", help="Profile N calls of each combination."
)


def _bench_defaults() -> dict[str, Any]:
    """Every flag of `bench` at its default (typer keeps the default in the option)."""
    defaults = {}
    for name, param in inspect.signature(bench_command.bench).parameters.items():
        if name != "ctx":
            defaults[name] = getattr(param.default, "default", param.default)
    return defaults


def profile(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    shape: list[str] = bench_command._SHAPE,
    engine: list[str] = bench_command._ENGINE,
    device: list[str] = bench_command._DEVICE,
    precision: list[str] = bench_command._PRECISION,
    batch: str | None = bench_command._BATCH,
    iters: int | None = bench_command._ITERS,
    depth: int = _DEPTH,
    profile_iterations: int = _ITERATIONS,
    out: Path = out_option(),
    cache_dir: str | None = cache_dir_option(),
    exporter: str = exporter_option(),
) -> None:
    """Profile MODEL on each engine: time per module and per kind of work, side by side."""
    check_depth(depth)
    given = {
        "model": model, "shape": shape, "engine": engine, "device": device,
        "precision": precision, "batch": batch, "iters": iters, "out": out, "cache_dir": cache_dir,
        "exporter": exporter, "profile": True, "profile_iterations": profile_iterations,
    }  # fmt: skip
    params = {**_bench_defaults(), **given}
    ctx.params.update(params)  # bench stores its flags (run.json) from the context
    try:
        bench_command.bench(ctx, **params)
    finally:
        run_dir = ctx.meta.get(bench_command.RUN_DIR)
        if run_dir is not None:
            print_profiles(Path(run_dir), depth)


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for number, name in enumerate(header):
        table.add_column(name, justify="left" if number == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def print_profiles(run_dir: Path, depth: int) -> None:
    """The run's profile tables and words, per model and shape."""
    tables = profile_tables(combinations(load_runs([run_dir])), depth)
    if not tables:
        console.print("profile: no combination was profiled", markup=False)
    for table in tables:
        _print_one(table, depth)


def _print_one(table: ProfileTable, depth: int) -> None:
    where = f"{table.model} @ {table.shape}"
    if table.labels:
        title = f"profile: {where}, ms per call (share), modules at depth {depth}"
        print_table(_table(title, ["module", *table.labels], module_table_rows(table)))
        kinds = _table(f"by kind of work: {where}", ["kind", *table.labels], kind_table_rows(table))
        print_table(kinds)
    for line in words(table):
        console.print(f"- {line}", markup=False, soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
