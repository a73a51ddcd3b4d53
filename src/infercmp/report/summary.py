"""The summary table of a report: one row per combination (its statistics, speedup against the
baseline, parity and warnings) and the formatting of its cells; report/formats.py writes the rows
as Markdown, CSV or JSON and report/html/ as the page's table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infercmp.core.contract import items_per_request
from infercmp.core.lazy import lazy_import
from infercmp.core.stats import outlier_mask
from infercmp.report.accuracy import accuracy_fields, any_accuracy
from infercmp.report.runs import CombinationView, RunView, as_dict, installed_descriptor
from infercmp.report.startup import any_startup, ready_fields
from infercmp.sampler.usage import BUSY_CPUS
from infercmp.workload.scenarios import items_per_s, load_shortfall, served_qps
from infercmp.workload.scenarios import shown_status as scenarios_shown_status

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")

DEFAULT_BASELINE = "pytorch"
MIB = 1024 * 1024

# Column order of the CSV and of every JSON row.
COLUMNS = [
    "run",
    "host",
    "gpu",
    "model",
    "shape",
    "qps",
    "engine",
    "device",
    "precision",
    "options",
    "status",
    "error",
    "iterations",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "ci_low_ms",
    "ci_high_ms",
    "device_p50_ms",
    "cv",
    "throughput_per_s",
    "speedup",
    "baseline",
    "speedup_note",
    "outliers",
    "peak_rss_mib",
    "peak_vram_mib",
    "energy_j_per_request",
    "energy_j_per_item",
    "energy_method",
    "gpu_util_pct",
    "gpu_util_readings",
    "process_p50_ms",
    "load_seconds",
    "parity_ok",
    "parity_max_abs",
    "parity_max_rel",
    "parity_min_cosine",
    "parity_tolerance",
    "warnings",
]


def experiments(runs: list[RunView]) -> list[str]:
    """Shape labels in the order of first appearance, smallest input first."""
    first: dict[str, int] = {}
    for run in runs:
        for combo in run.combinations:
            size = combo.input_elements
            first[combo.shape_label] = min(first.get(combo.shape_label, size), size)
    return sorted(first, key=lambda label: (first[label], label))


def combinations(runs: list[RunView], shape: str | None = None) -> list[CombinationView]:
    combos = [c for run in runs for c in run.combinations]
    if shape is not None:
        combos = [c for c in combos if c.shape_label == shape]
    return combos


def find_baseline(combo: CombinationView, baseline_engine: str) -> CombinationView | None:
    """The baseline engine's combination on the same run, device and shape.

    The same precision is preferred, then the fewest options switched on, so a tuned
    configuration of the baseline engine (CUDA graphs, channels_last) is measured against the
    plain one rather than against itself.
    """
    candidates = [
        c
        for c in combo.run.combinations
        if c.engine == baseline_engine
        and c.device == combo.device
        and c.shape_label == combo.shape_label
        and c.status == "ok"
        and c.latency
    ]
    if not candidates:
        return None
    order = {id(c): i for i, c in enumerate(candidates)}
    candidates.sort(key=lambda c: (c.precision != combo.precision, tuned_options(c), order[id(c)]))
    return candidates[0]


def tuned_options(combo: CombinationView) -> int:
    """How many options are switched on (not None, False, 0 or empty)."""
    return sum(1 for value in combo.options.values() if value not in (None, False, 0, ""))


def baseline_label(base: CombinationView) -> str:
    label = f"{base.engine} {base.device} {base.precision}"
    return f"{label} [{base.options_text}]" if tuned_options(base) else label


def parity_summary(combo: CombinationView) -> dict[str, Any]:
    parity = as_dict(combo.result.parity)
    if not parity:
        return {
            "parity_ok": None,
            "parity_max_abs": None,
            "parity_max_rel": None,
            "parity_min_cosine": None,
            "parity_tolerance": None,
        }
    outputs = [as_dict(o) for o in parity.get("outputs") or []]

    def worst(key: str, pick=max) -> float | None:
        values = [o[key] for o in outputs if o.get(key) is not None]
        return float(pick(values)) if values else None

    return {
        "parity_ok": bool(parity.get("ok")),
        "parity_max_abs": worst("max_abs"),
        "parity_max_rel": worst("max_rel"),
        "parity_min_cosine": worst("cosine", min),
        "parity_tolerance": _tolerance_text(parity),
    }


def _tolerance_text(parity: dict[str, Any]) -> str | None:
    """What the outputs were judged against, in infercmp.core.parity's words."""
    rtol, atol = parity.get("rtol"), parity.get("atol")
    if rtol is None:
        return None
    return f"rtol {rtol:g}, atol " + (f"{atol:g}" if atol is not None else "rtol x max|ref|")


def shortfall(combo: CombinationView) -> str | None:
    """Why a measured load row did not hold its load (scenarios.load_shortfall), or None."""
    result = combo.result
    return load_shortfall(
        getattr(result, "load", None), as_dict(getattr(result, "load_result", None))
    )


def row_status(combo: CombinationView) -> str:
    """The row's status: a finished run that did not hold its load is not `ok`."""
    return scenarios_shown_status(combo.result)


def contention(result: Any) -> str | None:
    """Why a CPU row's latency may be the machine's as much as the engine's, and the remedy.

    A multi-threaded CPU engine measured while other processes kept CPUs busy waits for its
    own descheduled threads (PyTorch's default threads: 215.6 ms beside 1-1.5 busy CPUs of 2,
    where `pytorch[threads=1]` measured 2.13 ms). The remedy is the engine's own one-thread
    variant, from its descriptor.
    """
    busy = getattr(result, "background_cpus", None)
    if result.device != "cpu" or busy is None or busy <= BUSY_CPUS:
        return None
    descriptor = installed_descriptor(result.engine)
    variant = descriptor.one_thread_variant() if descriptor is not None else None
    if variant is None:
        return None
    if (result.options or {}).get(descriptor.cpu_threads_option) == 1:
        return None  # one thread already: nothing of its own to wait for
    return (
        f"{result.engine} ran several threads while other processes kept {busy:.2f} CPUs "
        f"busy: its threads wait for each other, so this latency is contention as much as "
        f"the engine's; measure {variant} too, or on an idle machine"
    )


def _speedup(
    combo: CombinationView, base: CombinationView | None
) -> tuple[float | None, str | None]:
    """p50 against the baseline's, and why it is left out or is not a result (None: it is)."""
    lat = combo.latency or {}
    if base is None or not lat.get("p50_ms"):
        return None, None
    if shortfall(combo) or shortfall(base):
        return None, "overloaded: a row did not hold its load"
    load, base_load = (as_dict(getattr(c.result, "load", None)) for c in (combo, base))
    rate = served_qps(load, as_dict(getattr(combo.result, "load_result", None)))
    base_rate = served_qps(base_load, as_dict(getattr(base.result, "load_result", None)))
    if rate != base_rate:
        return None, (
            f"not at the same load: offered {fmt_num(rate, 4)} vs {fmt_num(base_rate, 4)} "
            "requests/s (a --qps auto search chooses each engine's own rate)"
        )
    speedup = (base.latency or {})["p50_ms"] / lat["p50_ms"]
    contended = [c.label for c in (combo, base) if contention(c.result)]
    if contended:
        return speedup, f"not a result: {' and '.join(contended)} measured under CPU contention"
    return speedup, None


def summary_row(combo: CombinationView, baseline_engine: str = DEFAULT_BASELINE) -> dict[str, Any]:
    result = combo.result
    lat = combo.latency or {}
    base = find_baseline(combo, baseline_engine) if lat else None
    speedup, speedup_note = _speedup(combo, base)
    # Stored per timed iteration, which is one request: a whole batch of items.
    energy = result.energy_j_per_inference
    items = items_per_request(getattr(result, "runtime_shapes", None))
    row: dict[str, Any] = {
        "run": combo.run.path.name,
        "host": combo.host,
        "gpu": combo.gpu,
        "model": result.model,
        "shape": combo.shape_label,
        "engine": combo.engine,
        "device": combo.device,
        "precision": combo.precision,
        "options": combo.options_text,
        "qps": served_qps(
            as_dict(getattr(result, "load", None)),
            as_dict(getattr(result, "load_result", None)),
        ),
        "status": row_status(combo),
        "error": result.error or shortfall(combo),
        "iterations": result.iterations,
        "speedup": speedup,
        "baseline": baseline_label(base) if base else None,
        "speedup_note": speedup_note,
        "outliers": int(outlier_mask(combo.wall_ns).sum()) if combo.wall_ns.size else None,
        "peak_rss_mib": _mib(result.peak_rss_bytes),
        "peak_vram_mib": _mib(result.peak_vram_bytes),
        "energy_j_per_request": energy,
        "energy_j_per_item": energy / items if energy is not None else None,
        # Nothing to say about energy or utilisation where no GPU was read (a CPU row).
        "energy_method": _gpu_figure(getattr(result, "energy_method", None)),
        "gpu_util_pct": getattr(result, "gpu_util_pct", None),
        "gpu_util_readings": getattr(result, "gpu_util_readings", None) or None,
        "process_p50_ms": _process_medians(result),
        "load_seconds": result.load_seconds,
        "warnings": "; ".join(filter(None, [contention(result), *(result.warnings or [])])),
    }
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "ci_low_ms", "ci_high_ms"):
        row[key] = lat.get(key)
    row["device_p50_ms"] = (combo.device_latency or {}).get("p50_ms")
    row["cv"] = lat.get("cv")
    # Items per second: over the measured window when several requests were in flight.
    row["throughput_per_s"] = (
        items_per_s(lat, getattr(result, "load_result", None)) if lat else None
    )
    row.update(parity_summary(combo))
    return {key: row.get(key) for key in COLUMNS}


def summary_rows(runs: list[RunView], baseline_engine: str = DEFAULT_BASELINE) -> list[dict]:
    """Every combination's row, shape by shape; with ACCURACY_COLUMNS after COLUMNS when some
    combination measured accuracy (`bench --accuracy`), and only then; then STARTUP_COLUMNS
    when some combination has start-up figures."""
    combos = [combo for shape in experiments(runs) for combo in combinations(runs, shape)]
    if not any_accuracy(combos):
        rows = [summary_row(combo, baseline_engine) for combo in combos]
    else:
        rows = [{**summary_row(c, baseline_engine), **accuracy_fields(c)} for c in combos]
    if any_startup(combos):
        rows = [{**row, **ready_fields(c)} for row, c in zip(rows, combos)]
    return rows


def _gpu_figure(method: str | None) -> str | None:
    return None if method is None or "no GPU power readings" in method else method


def _process_medians(result: Any) -> str | None:
    """Each worker process's median, in process order, and their spread (max - min, relative
    to their median): '0.0145 / 0.0147 / 0.0151 (spread 4.1%)', when the combination ran in
    more than one process (`bench --repeat`)."""
    processes = getattr(result, "processes", None) or []
    if len(processes) < 2:
        return None
    medians = [p.p50_ms for p in processes]
    spread = (max(medians) - min(medians)) / float(np.median(medians)) * 100
    return " / ".join(fmt_ms(m) for m in medians) + f" (spread {spread:.1f}%)"


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


# --- text formats --------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def fmt_sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def fmt_energy(row: dict[str, Any]) -> str:
    """J/request, or `n/a` with the reason the window could not carry a figure."""
    if row["energy_j_per_request"] is not None:
        return fmt_num(row["energy_j_per_request"], 4)
    method = row.get("energy_method") or ""
    return method if method.startswith("n/a") else "–"


def per_item_differs(rows: list[dict[str, Any]]) -> bool:
    """Whether some row's request holds several items, so J/item is worth its own column."""
    return any(
        row["energy_j_per_item"] is not None
        and row["energy_j_per_item"] != row["energy_j_per_request"]
        for row in rows
    )


def fmt_speedup(row: dict[str, Any]) -> str:
    """The speedup, marked where it is no result (contention) or left out (another load)."""
    text = fmt_num(row["speedup"], 2, "×")
    note = row.get("speedup_note")
    if not note:
        return text
    for start, mark in (("not a result", "contended"), ("overloaded", "overloaded")):
        if note.startswith(start):
            return f"{text} ({mark})"
    return f"{text} (other load)"


def fmt_parity(row: dict[str, Any]) -> str:
    if row["parity_ok"] is None:
        return "–"
    verdict = "ok" if row["parity_ok"] else "FAIL"
    tolerance = f"; {row['parity_tolerance']}" if row.get("parity_tolerance") else ""
    return f"{verdict} (max abs err {fmt_sci(row['parity_max_abs'])}{tolerance})"


def fmt_status(row: dict[str, Any], limit: int = 120) -> str:
    if row["status"] == "ok" or not row["error"]:
        return str(row["status"])
    error = " ".join(str(row["error"]).split())
    if len(error) > limit:
        error = error[: limit - 1] + "…"
    return f"{row['status']}: {error}"


def _md_cell(value: Any) -> str:
    """One Markdown table cell: no pipes or newlines, and no raw HTML for renderers to run."""
    text = " ".join(str(value).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
