"""The page's summary table of one shape: a row per combination, columns shown only where
some row has a value, the fastest median marked, speedups coloured only where they are results."""

from __future__ import annotations

from typing import Any

from infercmp.report.figures import GREY, esc
from infercmp.report.runs import CombinationView, format_options
from infercmp.report.startup import READY_LEGEND, ready_fields
from infercmp.report.summary import (
    fmt_ms,
    fmt_num,
    fmt_sci,
    fmt_speedup,
    per_item_differs,
    summary_row,
)
from infercmp.workload.scenarios import OVERLOADED

_COLUMNS = [
    ("config", "configuration", ""),
    ("status", "status", ""),
    # Beside the status, not last: at 1400 px a wide table scrolled it out of sight.
    ("parity", "parity (max abs err)", ""),
    ("qps", 'offered <small title="--qps, or the rate --qps auto chose">req/s</small>', "num"),
    ("p50", "p50 <small>(95% CI)</small>", "num"),
    ("device_p50", 'GPU p50 <small title="CUDA events">(device)</small>', "num"),
    ("p90", "p90", "num"),
    ("p99", "p99", "num"),
    ("mean", "mean ± std", "num"),
    ("throughput", "throughput /s", "num"),
    ("speedup", "speedup", "num"),
    ("iterations", "iters (outliers)", "num"),
    ("rss", "peak RSS", "num"),
    ("vram", "peak VRAM", "num"),
    ("energy", "J / request", "num"),
    ("energy_item", "J / item", "num"),
    ("util", 'GPU util <small title="sampler readings it rests on">(readings)</small>', "num"),
    ("processes", "p50 per process", "num"),
    ("ready", f'ready in <small title="{esc(READY_LEGEND)}">(start)</small>', "num"),
]
# Columns shown only when some row of the table has a value: a CPU-only run has no GPU time,
# VRAM or energy, and empty columns would push parity off a laptop screen.
_OPTIONAL = {
    "device_p50": ("device_p50_ms",),
    "util": ("gpu_util_readings",),
    "processes": ("process_p50_ms",),
    "vram": ("peak_vram_mib",),
    "qps": ("qps",),
    "energy": ("energy_j_per_request", "energy_method"),
    "ready": ("ready_in",),
}


def summary_table(
    combos: list[CombinationView], baseline_engine: str, colors: dict[int, str]
) -> str:
    """The table of one shape's combinations; a row that measured nothing spans its status."""
    rows = [
        (combo, {**summary_row(combo, baseline_engine), **ready_fields(combo)}) for combo in combos
    ]
    best = min(
        (r["p50_ms"] for _, r in rows if r["status"] == "ok" and r["p50_ms"] is not None),
        default=None,
    )
    # The GPU p50 (CUDA events) sits beside the wall clock so host overhead is not read as
    # engine speed.
    # J/item only where some request holds several items; elsewhere it repeats J/request.
    with_items = per_item_differs([row for _, row in rows])
    columns = [
        (key, title, css)
        for key, title, css in _COLUMNS
        if (key != "energy_item" or with_items)
        and (
            key not in _OPTIONAL
            or any(row[k] is not None for _, row in rows for k in _OPTIONAL[key])
        )
    ]
    head = "".join(f'<th class="{css}">{title}</th>' for _, title, css in columns)
    body = []
    for combo, row in rows:
        # An overloaded load run's figures are kept and shown, under its status.
        ok = row["status"] in ("ok", OVERLOADED)
        status = f'<span class="badge {status_class(row["status"])}">{esc(row["status"])}</span>'
        if row["error"]:
            status += f'<div class="error">{esc(row["error"])}</div>'
        if not ok:
            body.append(
                f'<tr class=inactive><td class="config">{_config_cell(combo, row, colors)}</td>'
                f"<td colspan={len(columns) - 1}>{status}</td></tr>"
            )
            continue
        fastest = best is not None and row["p50_ms"] == best and len(rows) > 1
        cells = _cells(combo, row, colors, status, fastest, baseline_engine)
        body.append(f"<tr>{''.join(cells[key] for key, _, _ in columns)}</tr>")
    return (
        '<div class="table-wrap"><table class="summary">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _cells(
    combo: CombinationView,
    row: dict[str, Any],
    colors: dict[int, str],
    status: str,
    fastest: bool,
    baseline_engine: str,
) -> dict[str, str]:
    """Every column's cell of a measured row, by column key."""
    p50 = fmt_ms(row["p50_ms"])
    if fastest:
        p50 = f'<b class="best" title="fastest median of this shape">{p50}</b>'
    outliers = "–" if row["outliers"] is None else row["outliers"]
    return {
        "config": f'<td class="config">{_config_cell(combo, row, colors)}</td>',
        "status": f"<td>{status}</td>",
        "p50": f"<td class=num>{p50}<div class=ci>{fmt_ms(row['ci_low_ms'])}–"
        f"{fmt_ms(row['ci_high_ms'])}</div></td>",
        "device_p50": f"<td class=num>{fmt_ms(row['device_p50_ms'])}</td>",
        "p90": f"<td class=num>{fmt_ms(row['p90_ms'])}</td>",
        "p99": f"<td class=num>{fmt_ms(row['p99_ms'])}</td>",
        "mean": f"<td class=num>{fmt_ms(row['mean_ms'])} ± {fmt_ms(row['std_ms'])}</td>",
        "throughput": f"<td class=num>{fmt_num(row['throughput_per_s'])}</td>",
        "speedup": _speedup_cell(row, baseline_engine),
        "qps": f"<td class=num>{fmt_num(row['qps'], 1)}</td>",
        "iterations": f"<td class=num>{row['iterations']:,} ({outliers})</td>",
        "rss": f"<td class=num>{fmt_num(row['peak_rss_mib'], 0, ' MiB')}</td>",
        "vram": f"<td class=num>{fmt_num(row['peak_vram_mib'], 0, ' MiB')}</td>",
        "energy": _energy_cell(row),
        "energy_item": f"<td class=num>{_sig(row['energy_j_per_item'])}</td>",
        "util": f"<td class=num>{fmt_num(row['gpu_util_pct'], 0, '%')} "
        f"({row['gpu_util_readings'] or 0})</td>",
        "processes": f"<td class=num>{esc(row['process_p50_ms'] or '–')}</td>",
        "ready": f"<td class=num>{esc(row['ready_in'] or '–')}</td>",
        "parity": f"<td>{_parity_text(row)}</td>",
    }


def _speedup_cell(row: dict[str, Any], baseline_engine: str) -> str:
    """The speedup, green or red only where it is a result; its baseline on hover."""
    speedup = row["speedup"]
    speed_css = (
        ""
        if speedup is None or row["speedup_note"]  # no colour for what is not a result
        else ("faster" if speedup > 1.02 else "slower" if speedup < 0.98 else "")
    )
    speed_title = (
        f"against {row['baseline']}"
        if row["baseline"]
        else f"no {baseline_engine} run on this device"
    ) + (f": {row['speedup_note']}" if row["speedup_note"] else "")
    return f'<td class="num {speed_css}" title="{esc(speed_title)}">{esc(fmt_speedup(row))}</td>'


def _parity_text(row: dict[str, Any]) -> str:
    """ok or FAIL with the largest absolute error, and the tolerance judged at on hover."""
    parity = "–"
    if row["parity_ok"] is not None:
        parity = (
            f'<span class="badge {"ok" if row["parity_ok"] else "bad"}">'
            f"{'ok' if row['parity_ok'] else 'FAIL'}</span> {fmt_sci(row['parity_max_abs'])}"
        )
        if row.get("parity_tolerance"):
            parity = f'<span title="judged at {esc(row["parity_tolerance"])}">{parity}</span>'
    return parity


def _energy_cell(row: dict) -> str:
    """J/request, or n/a with the reason (a window too short, a power above the limit)."""
    if row["energy_j_per_request"] is not None:
        title = f' title="{esc(row["energy_method"])}"' if row.get("energy_method") else ""
        return f"<td class=num{title}>{_sig(row['energy_j_per_request'])}</td>"
    method = row.get("energy_method") or ""
    if method.startswith("n/a"):
        return f'<td class=num title="{esc(method)}">n/a</td>'
    return "<td class=num>–</td>"


def _config_cell(combo: CombinationView, row: dict, colors: dict[int, str]) -> str:
    """The configuration's name and, under it, every option that produced its numbers."""
    color = colors.get(id(combo), GREY)
    name = " · ".join([combo.engine, combo.device, combo.precision])
    run = combo.run
    extra = {k: v for k, v in combo.options.items() if k in run.distinguishing_options}
    if extra:
        name += f" [{format_options(extra)}]"
    under = f"options: {row['options']}"
    if run.show_run_in_labels:
        under = f"on {run.label} · {under}"
    return (
        f'<span class="dot" style="background:{color}"></span>{esc(name)}'
        f'<div class="opts">{esc(under)}</div>'
    )


def status_class(status: str) -> str:
    if status in ("ok", "complete"):
        return "ok"
    if status in ("skipped", "running"):
        return "skip"
    return "bad"


def _sig(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"
