"""The page's accuracy section (`bench --accuracy`): per model, accuracy against latency with
the Pareto front, and the agreement of every combination with PyTorch fp32."""

from __future__ import annotations

from typing import Any

from infercmp.report.accuracy import (
    accuracy_fields,
    accuracy_figure,
    accuracy_points,
    any_accuracy,
    fmt_accuracy,
)
from infercmp.report.figures import esc
from infercmp.report.runs import CombinationView
from infercmp.report.summary import fmt_sci


def accuracy_section(charts: Any, combos: list[CombinationView], colors: dict[int, str]) -> str:
    """The section; empty when no combination measured accuracy."""
    if not any_accuracy(combos):
        return ""
    points = accuracy_points(combos)
    parts = ['<section id="accuracy"><h2>Accuracy against latency</h2>']
    for model in dict.fromkeys(p.model for p in points):
        parts.append(charts.chart(accuracy_figure(points, model, colors), "chart wide"))
    rows = []
    for combo in combos:
        fields = accuracy_fields(combo)
        if fields["accuracy_samples"] is None:
            continue
        cosine = fields["cosine_mean"]
        rows.append(
            f"<tr><td>{esc(combo.label)}</td><td>{esc(combo.shape_label)}</td>"
            f"<td class=num>{esc(fmt_accuracy(combo.result.accuracy))}</td>"
            f"<td class=num>{fields['accuracy_samples']}</td>"
            f"<td class=num>{_pct(fields['top1_agreement'])}</td>"
            f"<td class=num>{'–' if cosine is None else f'{cosine:.6f}'}</td>"
            f"<td class=num>{fmt_sci(fields['p99_abs_error'])}</td>"
            f"<td class=num>{fmt_sci(fields['max_abs_error'])}</td></tr>"
        )
    parts.append(
        '<div class="table-wrap"><table class="summary"><thead><tr><th>combination</th>'
        "<th>shape</th><th>accuracy</th>"
        "<th>samples</th><th>top-1 agreement</th><th>mean cosine</th><th>p99 |err|</th>"
        f"<th>max |err|</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    parts.append(
        '<p class="note">Accuracy is the config\'s primary metric on the evaluation samples, '
        "with its change against PyTorch fp32 on the same samples (points of percent), else "
        "the top-1 agreement with PyTorch fp32, else the mean cosine. Ringed points form the "
        "model's Pareto front: no other point is faster and at least as accurate. Errors are "
        "against PyTorch fp32 on the CPU, over every element of every sample; int8 marked "
        "(random calib.) was calibrated on random inputs (the model has no dataset).</p>"
        "</section>"
    )
    return "\n".join(parts)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"
