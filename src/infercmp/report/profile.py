"""Profiles side by side (`bench --profile`, `infercmp profile`): the module x engine table at
a depth, the kind-of-work x engine table, and the largest differences in words.

Each combination's stored profile (docs/results-format.md, "profile") holds rows at the leaf
level; a depth is computed here (`infercmp.run.profile.row_label`). Tables are grouped by
model and shape; their columns are the combinations that profiled, their cells "ms (share)"
where the share is of the combination's profiled call (its ops plus what they leave
unexplained), and a total row holds the profiled wall against the timed median (the closure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infercmp.report.runs import CombinationView
from infercmp.report.summary import _md_cell
from infercmp.run.profile import (
    FUSED,
    KINDS,
    LAUNCH_GAPS,
    NO_MODULE,
    TOP_LEVEL,
    UNEXPLAINED,
    row_label,
)

#: How many modules "differences in words" names.
DIFFERENCES = 3
#: The CSV summary's columns for a combination with a profile (`profile_fields`).
PROFILE_COLUMNS = [
    "profiled_wall_ms",
    "profiled_mean_ms",
    "profile_unprofiled_median_ms",
    "profiler_overhead",
    "profile_op_ms",
    "profile_unexplained_ms",
    "profile_launch_gaps_ms",
    "profile_closure",
    *[f"profile_{k.replace('/', '_').replace(' ', '_')}_ms" for k in KINDS],
    "profile_error",
]


@dataclass
class ProfileTable:
    """One model and shape: its profiled combinations as columns, rows at `depth`."""

    model: str
    shape: str
    depth: int
    labels: list[str] = field(default_factory=list)  # the columns: combination labels
    records: list[dict[str, Any]] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)  # module rows, then the special ones
    cells: dict[tuple[str, int], float] = field(default_factory=dict)  # (row, column) -> ms
    kinds: dict[tuple[str, int], float] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (label, error)

    def total(self, column: int) -> float:
        """The profiled call of a column: its ops and what they leave unexplained."""
        record = self.records[column]
        return (record.get("op_total_ms") or 0.0) + (record.get("unexplained_ms") or 0.0)

    def cell(self, row: str, column: int) -> str:
        ms = self.cells.get((row, column))
        return "–" if ms is None else f"{ms:.3g} ({_share(ms, self.total(column))})"

    def kind_cell(self, kind: str, column: int) -> str:
        ms = self.kinds.get((kind, column))
        return "–" if ms is None else f"{ms:.3g} ({_share(ms, self.total(column))})"

    def total_cells(self) -> list[str]:
        """Per column: the profiled wall and the timed median with the closure, and what the
        profiler added against the same calls unprofiled beside it."""
        cells = []
        for record in self.records:
            wall = record.get("profiled_mean_ms") or record.get("profiled_wall_ms")
            median = record.get("measured_median_ms")
            closure = record.get("closure")
            overhead = record.get("profiler_overhead")
            text = "–" if wall is None else f"{wall:.3g}"
            if median is not None:
                text += f" / {median:.3g}"
            said = [f"{closure:+.0%}"] if closure is not None else []
            if overhead is not None:
                said.append(f"profiler {overhead:+.0%}")
            if said:
                text += f" ({'; '.join(said)})"
            cells.append(text)
        return cells


def _share(ms: float, total: float) -> str:
    return f"{ms / total:.0%}" if total > 0 else "–"


def module_rows(record: dict[str, Any], depth: int) -> dict[str, float]:
    """A record's ms per call by row label at `depth`, in model order, then the top level,
    no module, unexplained (host overhead) and, on CUDA, the launch gaps."""
    modules: dict[str, float] = {}
    special: dict[str, float] = {}
    for row in record.get("rows") or []:
        label = row_label(row["modules"], depth)
        target = special if label in (TOP_LEVEL, NO_MODULE) else modules
        target[label] = target.get(label, 0.0) + row["ms"]
    ordered = {**modules, **{k: special[k] for k in (TOP_LEVEL, NO_MODULE) if k in special}}
    unexplained, gaps = record.get("unexplained_ms"), record.get("launch_gaps_ms")
    if unexplained is not None:
        ordered[UNEXPLAINED] = unexplained - (gaps or 0.0)
    if gaps is not None:
        ordered[LAUNCH_GAPS] = gaps
    return ordered


def kind_rows(record: dict[str, Any]) -> dict[str, float]:
    """A record's ms per call by kind of work (KINDS order), then launch gaps and the rest."""
    kinds = dict.fromkeys(KINDS, 0.0)
    for row in record.get("rows") or []:
        kinds[row["kind"]] = kinds.get(row["kind"], 0.0) + row["ms"]
    found = {k: v for k, v in kinds.items() if v > 0}
    unexplained, gaps = record.get("unexplained_ms"), record.get("launch_gaps_ms")
    if gaps is not None:
        found[LAUNCH_GAPS] = gaps
    if unexplained is not None:
        found[UNEXPLAINED] = unexplained - (gaps or 0.0)
    return found


def _merge(order: list[str], labels: Sequence[str]) -> None:
    """Add `labels` (one column's order) to `order`: each new one after its predecessor in
    the column, or the first one before the next label both share, else at the end."""
    previous: str | None = None
    for number, label in enumerate(labels):
        if label not in order:
            if previous is not None:
                at = order.index(previous) + 1
            else:
                at = next((order.index(n) for n in labels[number + 1 :] if n in order), len(order))
            order.insert(at, label)
        previous = label


def profile_tables(combos: Sequence[CombinationView], depth: int = 1) -> list[ProfileTable]:
    """One table per model and shape with a profiled combination; rows that one engine fused
    are merged the same way in every column (`aligned`)."""
    tables: dict[tuple[str, str], ProfileTable] = {}
    columns: dict[tuple[str, str], list[dict[str, float]]] = {}
    for combo in combos:
        record = getattr(combo.result, "profile", None)
        if not record:
            continue
        key = (combo.result.model, combo.shape_label)
        table = tables.setdefault(key, ProfileTable(key[0], key[1], depth))
        if record.get("error") or record.get("profiled_wall_ms") is None:
            table.errors.append((combo.label, record.get("error") or "no profiled call"))
            continue
        table.labels.append(combo.label)
        table.records.append(record)
        columns.setdefault(key, []).append(module_rows(record, depth))
        for kind, ms in kind_rows(record).items():
            table.kinds[(kind, len(table.labels) - 1)] = ms
    for key, table in tables.items():
        for column, rows in enumerate(aligned(columns.get(key, []))):
            for label, ms in rows.items():
                table.cells[(label, column)] = ms
            _merge(table.rows, [r for r in rows if r not in _SPECIAL])
        present = {row for row, _ in table.cells}
        table.rows += [r for r in _SPECIAL if r in present]
    return list(tables.values())


def aligned(columns: list[dict[str, float]]) -> list[dict[str, float]]:
    """The columns' rows, each row that some column fused into a larger one merged into it
    in every column: `layer1.0.conv1` and `layer1.0.bn1` go to `layer1.0 (fused)` where an
    engine fused them there, `bn1` and `relu` to `bn1+relu (fused)`, so the engines' cells
    stand for the same modules."""
    parents: set[str] = set()
    groups: dict[str, str] = {}  # a part of an `a+b` fusion -> the group's label
    for rows in columns:
        for label in rows:
            if not label.endswith(FUSED):
                continue
            base = label.removesuffix(FUSED)
            if "+" not in base:
                parents.add(base)
                continue
            parts = set(base.split("+"))
            for part in base.split("+"):  # groups that share a part join
                parts |= set(groups.get(part, part).removesuffix(FUSED).split("+"))
            joined = "+".join(sorted(parts, key=_first_seen(columns))) + FUSED
            for part in parts:
                groups[part] = joined
    return [_regrouped(rows, parents, groups) for rows in columns]


def _first_seen(columns: list[dict[str, float]]) -> Any:
    order: dict[str, int] = {}
    for rows in columns:
        for label in rows:
            for part in label.removesuffix(FUSED).split("+"):
                order.setdefault(part, len(order))
    return lambda part: order.get(part, len(order))


def _regrouped(rows: dict[str, float], parents: set[str], groups: dict[str, str]) -> dict:
    out: dict[str, float] = {}
    for label, ms in rows.items():
        target = label
        if label not in _SPECIAL or label == TOP_LEVEL:
            base = label.removesuffix(FUSED)
            above = [p for p in parents if base == p or base.startswith(p + ".")]
            if above:
                target = min(above, key=len) + FUSED
            elif "+" in base:
                target = groups.get(base.split("+")[0], label)
            elif base in groups:
                target = groups[base]
        out[target] = out.get(target, 0.0) + ms
    return out


_SPECIAL = (TOP_LEVEL, NO_MODULE, UNEXPLAINED, LAUNCH_GAPS)
#: The record's notes that the words repeat: how far the profiled call is from the timed one.
_SAID = ("closure", "the profiled calls vary")


def differences(table: ProfileTable, count: int = DIFFERENCES) -> list[str]:
    """The `count` modules with the largest spread between columns, in words:
    "layer3: pytorch 4.1 ms, onnxruntime 2.2 ms, openvino 1.9 ms"."""
    spreads = []
    for row in table.rows:
        if row in _SPECIAL:
            continue
        columns = range(len(table.labels))
        present = [(c, table.cells[(row, c)]) for c in columns if (row, c) in table.cells]
        if len(present) >= 2:
            ms = [v for _, v in present]
            spreads.append((max(ms) - min(ms), row, present))
    spreads.sort(key=lambda s: -s[0])
    return [
        f"{row}: " + ", ".join(f"{table.labels[c]} {ms:.3g} ms" for c, ms in present)
        for spread, row, present in spreads[:count]
        if spread > 0
    ]


def words(table: ProfileTable) -> list[str]:
    """The differences, each column's hints, its closure warnings, and the combinations
    without a profile."""
    lines = differences(table)
    for label, record in zip(table.labels, table.records, strict=True):
        lines += [f"{label}: {hint}" for hint in record.get("hints") or []]
        lines += [f"{label}: {n}" for n in record.get("notes") or [] if n.startswith(_SAID)]
    lines += [f"{label}: {error}" for label, error in table.errors]
    return lines


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|---|" + "---:|" * (len(header) - 1))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def module_table_rows(table: ProfileTable) -> list[list[str]]:
    """The module table's rows as text, the total row last."""
    rows = [[r, *(table.cell(r, c) for c in range(len(table.labels)))] for r in table.rows]
    rows.append(["profiled call (mean) / timed median (closure)", *table.total_cells()])
    return rows


def kind_table_rows(table: ProfileTable) -> list[list[str]]:
    kinds = [k for k in (*KINDS, LAUNCH_GAPS, UNEXPLAINED) if any(
        (k, c) in table.kinds for c in range(len(table.labels))
    )]  # fmt: skip
    return [[k, *(table.kind_cell(k, c) for c in range(len(table.labels)))] for k in kinds]


def profile_markdown(combos: Sequence[CombinationView], depth: int = 1) -> str:
    """The profile section of the Markdown report; empty when nothing was profiled."""
    lines: list[str] = []
    for table in profile_tables(combos, depth):
        lines += ["", f"### profile: {_md_cell(table.model)}, shape {_md_cell(table.shape)}", ""]
        if table.labels:
            lines.append(
                f"ms per call (share of the profiled call), modules at depth {depth}; "
                "unexplained: what no op explains (host overhead, copies in and out)."
            )
            lines.append("")
            lines += _md_table(["module", *table.labels], module_table_rows(table))
            lines.append("")
            lines += _md_table(["kind of work", *table.labels], kind_table_rows(table))
        found = words(table)
        if found:
            lines.append("")
            lines += [f"- {line}" for line in found]
    return "\n".join(lines) + ("\n" if lines else "")


def profile_json(combos: Sequence[CombinationView], depth: int = 1) -> list[dict[str, Any]]:
    """The tables as data: per model and shape, ms per call by module and by kind."""
    return [
        {
            "model": t.model,
            "shape": t.shape,
            "depth": depth,
            "combinations": [
                {
                    "label": label,
                    "profiled_wall_ms": record.get("profiled_wall_ms"),
                    "profiled_mean_ms": record.get("profiled_mean_ms"),
                    "unprofiled_median_ms": record.get("unprofiled_median_ms"),
                    "profiler_overhead": record.get("profiler_overhead"),
                    "measured_median_ms": record.get("measured_median_ms"),
                    "closure": record.get("closure"),
                    "modules": {r: t.cells[(r, c)] for r in t.rows if (r, c) in t.cells},
                    "kinds": {k: ms for (k, col), ms in t.kinds.items() if col == c},
                    "hints": record.get("hints") or [],
                }
                for c, (label, record) in enumerate(zip(t.labels, t.records, strict=True))
            ],
            "differences": differences(t),
            "errors": [{"label": label, "error": error} for label, error in t.errors],
        }
        for t in profile_tables(combos, depth)
    ]


def profile_fields(combo: CombinationView) -> dict[str, Any]:
    """PROFILE_COLUMNS of one combination (all None where it has no profile)."""
    fields: dict[str, Any] = dict.fromkeys(PROFILE_COLUMNS)
    record = getattr(combo.result, "profile", None)
    if not record:
        return fields
    if record.get("error"):
        fields["profile_error"] = record["error"]
        return fields
    fields.update(
        profiled_wall_ms=record.get("profiled_wall_ms"),
        profiled_mean_ms=record.get("profiled_mean_ms"),
        profile_unprofiled_median_ms=record.get("unprofiled_median_ms"),
        profiler_overhead=record.get("profiler_overhead"),
        profile_op_ms=record.get("op_total_ms"),
        profile_unexplained_ms=record.get("unexplained_ms"),
        profile_launch_gaps_ms=record.get("launch_gaps_ms"),
        profile_closure=record.get("closure"),
    )
    kinds = kind_rows(record)
    for kind in KINDS:
        fields[f"profile_{kind.replace('/', '_').replace(' ', '_')}_ms"] = kinds.get(kind, 0.0)
    return fields


def any_profile(combos: Sequence[CombinationView]) -> bool:
    return any(getattr(c.result, "profile", None) for c in combos)
