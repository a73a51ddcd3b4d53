"""The "where a precision breaks" section: a stored `debug-precision.json` as markdown and as
an HTML fragment.

Reads the plain dict `infercmp debug-precision` stores (docs/debug-precision.md describes
it), never the run layer's classes, so the report can render a result written by any
version that keeps the shape (`schema` 1).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

COLUMNS = ("module", "op", "SQNR in dB", "SQNR out dB", "floor dB", "lost dB", "max rel err")


def _db(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _num(value: Any, spec: str = ".3g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def layer_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """The top layers as table cells, in `COLUMNS` order (worst first)."""
    return [
        [
            layer.get("path") or "(top level)",
            str(layer.get("op", "")),
            _db(layer.get("sqnr_in")),
            _db(layer.get("sqnr_out")),
            _db(layer.get("floor_db")),
            _db(layer.get("growth")),
            _num(layer.get("max_rel")),
        ]
        for layer in result.get("top", [])
    ]


def title(result: Mapping[str, Any]) -> str:
    return (
        f"Where {result.get('precision')} breaks: {result.get('model')} on "
        f"{result.get('engine')} ({result.get('device')})"
    )


def _accuracy_text(found: Mapping[str, Any] | None) -> str:
    if not found:
        return "-"
    parts = [f"max abs err {_num(found.get('max_abs'))}"]
    if found.get("cosine") is not None:
        parts.append(f"cosine {found['cosine']:.6f}")
    if found.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {found['top1_agreement']:.1%}")
    parts += [f"{k} {_num(v, '.4g')}" for k, v in (found.get("metrics") or {}).items()]
    latency = found.get("latency") or {}
    if latency.get("latency_ms") is not None:
        parts.append(f"latency {latency['latency_ms']:.4g} ms")
    elif latency.get("error"):
        parts.append(f"latency not measured ({latency['error']})")
    return ", ".join(parts)


def effect_lines(result: Mapping[str, Any]) -> list[str]:
    """The proposal and its measured effect, one line each (plain text)."""
    proposal = result.get("proposal") or {}
    measured = result.get("measured") or {}
    paths = proposal.get("paths") or []
    lines = []
    if paths:
        lines.append("keep in higher precision: " + ", ".join(paths))
    if proposal.get("engine"):
        lines.append(f'engine option: -e "{proposal["engine"]}"')
    lines.append(str(proposal.get("note", "")))
    lines.append(f"{result.get('precision')} as is: {_accuracy_text(measured.get('original'))}")
    if measured.get("mixed"):
        lines.append(f"mixed: {_accuracy_text(measured['mixed'])}")
    for key in ("note", "latency_note"):
        if measured.get(key):
            lines.append(str(measured[key]))
    return [line for line in lines if line]


def _samples_text(result: Mapping[str, Any]) -> str:
    samples = result.get("samples") or {}
    return f"{samples.get('count')} samples ({samples.get('source')}); {result.get('mechanism')}"


def render_markdown(result: Mapping[str, Any]) -> str:
    """The section as markdown: heading, the samples, the top layers, proposal and effect."""
    lines = [f"## {title(result)}", "", _samples_text(result), ""]
    rows = layer_rows(result)
    if rows:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    else:
        lines.append("No layer loses enough precision to blame.")
    lines.append("")
    lines += [f"- {line}" for line in effect_lines(result)]
    lines += [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def render_html(result: Mapping[str, Any]) -> str:
    """The section as an HTML fragment (one `<section>`, everything escaped)."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
        for row in layer_rows(result)
    )
    table = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if body
        else "<p>No layer loses enough precision to blame.</p>"
    )
    items = "".join(
        f"<li>{esc(line)}</li>" for line in [*effect_lines(result), *result.get("notes", [])]
    )
    return (
        f'<section class="precision-debug"><h2>{esc(title(result))}</h2>'
        f"<p>{esc(_samples_text(result))}</p>{table}<ul>{items}</ul></section>"
    )


def render(result: Mapping[str, Any]) -> tuple[str, str]:
    """(markdown, HTML fragment) of one stored debug-precision result."""
    return render_markdown(result), render_html(result)
