"""The page's "time to first answer" section: each combination's starts (as run, and with
`bench --cold` cold and warm) step by step, and what cold cleared (report/startup.py)."""

from __future__ import annotations

from infercmp.report.figures import esc
from infercmp.report.runs import CombinationView
from infercmp.report.startup import HEADER, SECTION_LEGEND, cache_notes, startup_rows


def startup_section(combos: list[CombinationView]) -> str:
    """The section; empty when no combination has start-up figures."""
    rows = startup_rows(combos)
    if not rows:
        return ""
    head = "".join(
        f'<th class="{"num" if i >= 3 else ""}">{esc(title)}</th>' for i, title in enumerate(HEADER)
    )
    body = []
    for row in rows:
        cells = [esc(c) for c in row.cells()]
        if row.error:
            cells[-1] = f'<span class="badge bad">failed</span> {esc(row.error)}'
        body.append(
            "<tr>"
            + "".join(f"<td{' class=num' if i >= 3 else ''}>{c}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    notes = "".join(f"<li>{esc(n)}</li>" for n in cache_notes(combos))
    return (
        '<section id="startup"><h2>Time to first answer</h2>'
        '<div class="table-wrap"><table class="summary">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        f'<p class="note">{esc(SECTION_LEGEND)}</p>'
        + (f'<ul class="note">{notes}</ul>' if notes else "")
        + "</section>"
    )
