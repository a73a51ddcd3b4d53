"""`infercmp export`, `infercmp build` and `infercmp cache ls|clear`: artifacts in the cache."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
from infercmp.artifacts.onnx_export import export_onnx
from infercmp.artifacts.reference import ensure_reference
from infercmp.cli.options import (
    cache_dir_option,
    command_group,
    console,
    exporter_option,
    print_table,
)
from infercmp.core.errors import InfercmpError
from infercmp.engines.tensorrt.build import build_engine
from infercmp.engines.tensorrt.flavour import load_trt_module
from infercmp.workload.plugins import get_plugin
from infercmp.workload.shapes import default_experiment, parse_shape


def _cache(cache_dir: str | None) -> ArtifactCache:
    return ArtifactCache(resolve_cache_dir(cache_dir))


def _progress(message: str) -> None:
    console.print(f"[dim]{message}[/]")


def _export(
    model: str,
    shape: list[str],
    opset: int | None,
    exporter: str,
    force: bool,
    rtol: float,
    atol: float | None,
    cache_dir: str | None,
) -> tuple[Any, ArtifactCache, Any]:
    plugin = get_plugin(model)
    cache = _cache(cache_dir)
    experiments = [parse_shape(s, plugin.config) for s in shape] or [
        default_experiment(plugin.config)
    ]
    artifact = export_onnx(
        plugin,
        cache,
        exporter=exporter,
        opset=opset,
        force=force,
        rtol=rtol,
        atol=atol,
        progress=_progress,
    )
    state = "cached" if artifact.cached else "exported"
    console.print(
        f"[green]{state}[/] {model}: {artifact.path} ({artifact.exporter} exporter, opset "
        f"{artifact.opset}, {artifact.seconds:.2f} s)",
        soft_wrap=True,
    )
    table = Table()
    for column in ("output", "shape", "checked at", "max abs", "max rel", "cosine", "parity"):
        table.add_column(column, no_wrap=True)
    for p in artifact.parity:
        table.add_row(
            escape(p.name),
            "x".join(map(str, p.shape)),
            p.at or "",
            f"{p.max_abs:.2e}" if p.max_abs is not None else "-",
            f"{p.max_rel:.2e}" if p.max_rel is not None else "-",
            f"{p.cosine:.6f}" if p.cosine is not None else "-",
            "[green]ok[/]" if p.ok else "[red]FAIL[/]",
        )
    print_table(table, heading=3)
    for experiment in experiments:
        path = ensure_reference(plugin, cache, experiment)
        console.print(f"reference {experiment.label}: {path}", soft_wrap=True)
    return plugin, cache, artifact


def export(
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    shape: list[str] = typer.Option(
        [], "--shape", "-s", help="Example shape(s) to store reference data for (repeatable)."
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    exporter: str = exporter_option(),
    force: bool = typer.Option(False, "--force", help="Export again even if cached."),
    rtol: float = typer.Option(1e-4, "--rtol", help="Relative parity tolerance vs PyTorch."),
    atol: float | None = typer.Option(
        None, "--atol", help="Absolute parity tolerance (default: rtol x max|output|)."
    ),
    cache_dir: str | None = cache_dir_option(),
) -> None:
    """Export a model to ONNX; check it, its dynamic axes and its parity with PyTorch."""
    _export(model, shape, opset, exporter, force, rtol, atol, cache_dir)


def build(
    model: str = typer.Argument(..., help="A model name from 'infercmp models'."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16."),
    backend: str | None = typer.Option(
        None, "--backend", help="tensorrt or tensorrt-rtx (default: the one installed)."
    ),
    workspace_gb: float | None = typer.Option(
        None, "--workspace-gb", help="Builder workspace limit in GiB."
    ),
    force: bool = typer.Option(False, "--force", help="Build again even if cached."),
    cache_dir: str | None = cache_dir_option(),
) -> None:
    """Build a TensorRT / TensorRT-RTX engine plan (exports through the cache first)."""
    plugin = get_plugin(model)
    load_trt_module(backend)  # a missing module is reported before a long export
    cache = _cache(cache_dir)
    onnx = export_onnx(plugin, cache, progress=_progress)
    if not onnx.cached:
        console.print(
            f"[green]exported[/] {model}: {onnx.path} ({onnx.seconds:.2f} s)", soft_wrap=True
        )
    plan = build_engine(
        plugin,
        cache,
        onnx,
        precision=precision,
        backend=backend,
        workspace_gb=workspace_gb,
        force=force,
        progress=_progress,
    )
    state = "cached" if plan.cached else "built"
    console.print(
        f"[green]{state}[/] {model} {plan.precision}: {plan.path} ({plan.backend} "
        f"{plan.backend_version}, for {plan.gpu}, {plan.seconds:.2f} s); log: {plan.log_path}",
        soft_wrap=True,
    )


cache_app = command_group(help="List or clear the artifact cache.")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@cache_app.command("ls")
def cache_ls(cache_dir: str | None = cache_dir_option()) -> None:
    """List the cached ONNX models, engine plans and reference data."""
    cache = _cache(cache_dir)
    entries = cache.entries()
    if not entries:
        console.print(f"the cache at {cache.root} is empty", markup=False, soft_wrap=True)
        return
    table = Table(title=escape(str(cache.root)))
    for column in ("kind", "model", "details", "size", "created", "key"):
        table.add_column(column, no_wrap=True)
    for e in entries:
        m = e.meta
        if e.kind == "onnx":
            details = f"{m.get('exporter')} opset {m.get('opset')}"
        elif e.kind == "plan":
            details = (
                f"{m.get('backend')} {m.get('backend_version')} {m.get('precision')} {m.get('gpu')}"
            )
        else:
            details = str(m.get("label", ""))
        created = datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M")
        cells = (e.kind, str(m.get("model", "?")), details, _size(e.size), created, e.key[:12])
        table.add_row(*map(escape, cells))
    print_table(table, heading=2)
    total = sum(e.size for e in entries)
    console.print(f"{len(entries)} entries, {_size(total)}")


@cache_app.command("clear")
def cache_clear(
    kind: str | None = typer.Option(None, "--kind", help="Only onnx, plan or reference entries."),
    cache_dir: str | None = cache_dir_option(),
) -> None:
    """Remove cached artifacts (all of them, or one kind)."""
    if kind not in (None, "onnx", "plan", "reference"):
        raise InfercmpError(f"unknown --kind '{kind}'; choose onnx, plan or reference")
    cache = _cache(cache_dir)
    started = time.perf_counter()
    removed = cache.clear(kind)
    console.print(
        f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {cache.root} "
        f"({time.perf_counter() - started:.2f} s)",
        markup=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("build")(build)
    app.add_typer(cache_app, name="cache")
