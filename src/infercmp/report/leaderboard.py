"""The report's leaderboard section for runs made by `infercmp tune` (their tune.json)."""

from __future__ import annotations

from infercmp.report.figures import esc
from infercmp.report.runs import RunView
from infercmp.store.tune_file import TuneLeaderboard, read_leaderboard


def tune_section(runs: list[RunView]) -> str:
    """One leaderboard per tuned run, or nothing for bench runs."""
    blocks = []
    for run in runs:
        board = read_leaderboard(run.path)
        if board is not None:
            blocks.append(_board(board))
    if not blocks:
        return ""
    return f'<section id="tune"><h2>Tuning leaderboard</h2>{"".join(blocks)}</section>'


def _board(board: TuneLeaderboard) -> str:
    head = (
        f"<p>{esc(board.model)} at {esc(board.shape)} on {esc(board.device)}, objective "
        f"{esc(board.objective)}: search {esc(board.status)} after {board.elapsed_s:.0f} s of a "
        f"{board.budget_s:g} s budget{'; ' + esc(board.detail) if board.detail else ''}.</p>"
    )
    winners = "".join(
        f"<li><b>{esc(w.engine)}</b>: "
        + (
            f"{esc(w.best)}, {w.best_p50_ms:.4g} ms ({esc(w.round)} round)"
            + (f", {w.speedup:.2f}x the defaults" if w.speedup else "")
            + (f" ({esc(w.speedup_note)})" if w.speedup_note else "")
            + f"<br><code>{esc(w.command)}</code>"
            if w.best
            else f"none ({esc(w.speedup_note)})"
        )
        + "</li>"
        for w in board.winners
    )
    rows = []
    for e in board.entries:
        rows.append(
            "<tr>"
            f"<td>{esc(e.engine)}</td><td>{esc(e.variant or '(defaults)')}</td>"
            f"<td>{esc(e.precision)}</td><td>{esc(e.round or '-')}</td>"
            f"<td class='num'>{_ms(e.p50_ms)}</td>"
            f"<td class='num'>{_ms(e.ci_low_ms)}-{_ms(e.ci_high_ms)}</td>"
            f"<td class='num'>{_mib(e.memory_bytes)}</td>"
            f"<td>{'yes' if e.label in board.pareto else ''}</td>"
            f"<td>{esc(e.status)}{': ' + esc(e.reason) if e.reason else ''}</td>"
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>engine</th><th>options</th><th>precision</th><th>round</th>"
        "<th>p50 ms</th><th>95% CI</th><th>memory MiB</th><th>Pareto</th><th>status</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    excluded = "".join(f"<li>{esc(x['label'])}: {esc(x['reason'])}</li>" for x in board.excluded)
    notes = "".join(f"<li>{esc(n)}</li>" for n in board.notes)
    return (
        head
        + f"<h3>Winners</h3><ul>{winners}</ul>"
        + (f"<p>Overall: {esc(board.overall)}</p>" if board.overall else "")
        + table
        + (f"<h3>Not searched</h3><ul>{excluded}</ul>" if excluded else "")
        + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"
