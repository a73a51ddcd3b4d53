"""`infercmp engines`: the engines installed, whether each can run here and why, and its options."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import typer

from infercmp.cli.options import console
from infercmp.engines.descriptor import Machine
from infercmp.engines.registry import engine_entries, get_descriptor


def _value(value: Any) -> str:
    """An option value as a user types it in `--engine NAME[key=value]`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _describe(name: str) -> dict[str, Any]:
    """One engine's row: from its descriptor, or unavailable with the reason."""
    entry = engine_entries()[name]
    descriptor = entry.load()
    row: dict[str, Any] = {"name": name, "package": entry.package}
    if descriptor is None:  # raised on import, or declares what infercmp cannot read
        return {**row, "available": False, "broken": True, "reason": entry.error}
    reason = descriptor.availability()
    machine = Machine.current()
    runs_here = [
        d for d in descriptor.devices if d == "cpu" or (d == "cuda" and machine.cuda_devices)
    ]
    if reason is None and not runs_here:
        reason = f"no {' or '.join(descriptor.devices)} device is visible"
    return {
        **row,
        "available": reason is None,
        "broken": False,
        "reason": reason,
        "summary": descriptor.summary,
        "devices": list(descriptor.devices),
        "precisions": list(descriptor.precisions),
        "artifact": descriptor.artifact,
        "options": [
            {
                "name": o.name,
                "type": o.type,
                "default": o.default,
                "devices": [d for d in o.devices if d in descriptor.devices],
                "description": o.description,
            }
            for o in descriptor.option_docs()
        ],
    }


def list_engines(
    name: str | None = typer.Argument(None, help="Show one engine only."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the engines found through the `infercmp.engines` entry points, with their options.

    Options go in brackets after the engine's name: --engine 'onnxruntime[enable_cuda_graph=true]'.
    """
    names = list(engine_entries())
    if name is not None:
        if name not in names:
            get_descriptor(name)  # unknown: one clear error with suggestions
        names = [name]  # a broken one too: listed with the reason
    rows = [_describe(n) for n in names]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = "available" if row["available"] else f"unavailable: {row['reason']}"
        if row["broken"]:
            status = f"broken: {row['reason']}"
        console.print(f"{row['name']} ({row['package']}): {status}", markup=False, highlight=False)
        if "summary" not in row:
            continue
        console.print(
            f"  {row['summary']}\n  devices: {', '.join(row['devices'])}; precisions: "
            f"{', '.join(row['precisions'])}; takes: {row['artifact']}",
            markup=False,
            highlight=False,
        )
        for option in row["options"]:
            only = (
                f", {' and '.join(option['devices'])} only"
                if option["devices"] != row["devices"]
                else ""
            )
            text = (
                f"{option['name']}={_value(option['default'])} ({option['type']}{only}): "
                f"{option['description']}"
            )
            # Hanging indent, so a wrapped description never looks like another option.
            for line in textwrap.wrap(
                text,
                max(40, console.width - 1),
                initial_indent="    ",
                subsequent_indent="        ",
                break_on_hyphens=False,
            ):
                console.print(line, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("engines")(list_engines)
