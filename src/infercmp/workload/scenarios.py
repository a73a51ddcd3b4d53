"""Deployment scenarios after MLPerf LoadGen: the `--batch`, `--concurrency`, `--scenario`,
`--qps` and `--slo-ms` flags turned into `contract.Load`s, their labels, and how a measured load
reads (whether it held its load, the status it shows, its figures over --repeat processes).

single-stream (the default) is infercmp's original timed loop (`timing.measure`), unchanged.
offline keeps `concurrency` requests in flight back to back (a closed loop); server issues
requests at Poisson arrival times at `qps` (an open loop), so latency includes queueing; with
`qps` None the rate is searched for the highest one whose p99 stays under `slo_ms`. The worker
runs them (`infercmp.worker.load_run`, driving `infercmp.worker.loadgen`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from infercmp.core.contract import (
    KEEP_UP,
    MAX_ARRIVALS,
    MAX_QPS,
    Load,
    LoadResult,
    Measurement,
    Scenario,
    finite_or_none,
)
from infercmp.core.errors import InfercmpError
from infercmp.workload.batching import parse_batches

if TYPE_CHECKING:
    from infercmp.workload.config import ModelConfig

SCENARIOS: tuple[Scenario, ...] = ("single-stream", "offline", "server")
MAX_CONCURRENCY = 256
#: Lowest --slo-ms: the generator's own p99 issue lateness is tens of microseconds, and a
#: --qps auto search starts at one request per SLO (1000 / slo_ms requests/s).
MIN_SLO_MS = 0.1


def _positive_ints(text: str, flag: str, limit: int | None = None) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        # ASCII digits only: '²' is a digit to str.isdigit() but not to int().
        if not (part.isascii() and part.isdigit()) or not part.strip("0"):
            raise InfercmpError(f"{flag} '{text}': '{part}' is not a positive integer")
        digits = part.lstrip("0")  # int() refuses over 4300 digits: compare lengths first
        if limit is not None and (len(digits) > len(str(limit)) or int(digits) > limit):
            raise InfercmpError(f"{flag} '{text[:40]}': {part[:40]} is above the limit of {limit}")
        values.append(int(digits))
    return list(dict.fromkeys(values))


def loads_from_flags(
    config: ModelConfig,
    batch: str | None = None,
    concurrency: str | None = None,
    scenario: str | None = None,
    qps: str | None = None,
    slo_ms: float | None = None,
) -> tuple[list[Load], bool]:
    """The loads a bench run measures, and whether `--batch auto` asked for a batch search.

    No flag: `[Load()]`, the original measurement. One clear error for any wrong value.
    `--concurrency N` without `--scenario` means offline (for N = 1 too): single-stream is the
    original one-request-at-a-time loop, which --concurrency does not ask for.
    """
    if scenario is not None and scenario not in SCENARIOS:
        raise InfercmpError(f"--scenario '{scenario}': choose {', '.join(SCENARIOS)}")
    auto_batch = False
    batches: list[int | None] = [None]
    if batch is not None:
        parsed = parse_batches(batch, config)
        auto_batch = parsed is None
        batches = [None] if parsed is None else list(parsed)
    counts = _positive_ints(concurrency, "--concurrency", MAX_CONCURRENCY) if concurrency else [1]
    # --concurrency asks for the closed loop whatever its values: `-c 1` alone is offline with
    # one request in flight, labelled so, as `-c 1,2` labels both its points.
    chosen: Scenario = scenario or ("offline" if concurrency else "single-stream")
    if chosen == "single-stream" and max(counts) > 1:
        raise InfercmpError(
            "--scenario single-stream keeps one request in flight; use --scenario offline or "
            "server with --concurrency"
        )
    if slo_ms is not None and not (MIN_SLO_MS <= slo_ms < math.inf):
        raise InfercmpError(
            f"--slo-ms must be a number of milliseconds from {MIN_SLO_MS:g} (the load "
            f"generator's own timing error is tens of microseconds), got {slo_ms:g}"
        )
    rates: list[float | None] = [None]
    if chosen == "server":
        if qps is None:
            raise InfercmpError(
                "--scenario server needs --qps RATE (requests per second) or --qps auto with "
                "--slo-ms LIMIT"
            )
        if qps.strip().lower() == "auto":
            if slo_ms is None:
                raise InfercmpError("--qps auto searches the highest rate under --slo-ms: give it")
        else:
            rates = [_positive_rate(part) for part in qps.split(",")]
            if slo_ms is not None:
                raise InfercmpError("--slo-ms goes with --qps auto; with a fixed --qps drop it")
    elif qps is not None or slo_ms is not None:
        raise InfercmpError("--qps and --slo-ms belong to --scenario server")
    loads = [
        Load(
            batch=b,
            concurrency=c,
            scenario=chosen,
            qps=q,
            slo_ms=slo_ms if chosen == "server" and q is None else None,
        )
        for b, c, q in itertools.product(batches, counts, rates)
    ]
    return loads, auto_batch


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise InfercmpError(f"--qps '{text}': give a positive rate in requests per second, or auto")
    if value > MAX_QPS:
        raise InfercmpError(
            f"--qps '{text}': above {MAX_QPS:,.0f} requests/s, the most the load generator can "
            "issue; give a lower rate"
        )
    return value


def check_server_window(loads: Sequence[Load], settings: Measurement) -> None:
    """One clear error for a server rate whose window holds no request or too many to hold.

    The window is --duration, else --max-seconds (the open loop runs that long at a fixed
    rate; a --qps auto search's points last `load_run.SEARCH_POINT_SECONDS` or --duration).
    """
    for load in loads:
        if load.scenario != "server" or load.qps is None:
            continue
        seconds = settings.duration_s or settings.max_seconds
        arrivals = load.qps * seconds
        if arrivals < 1:
            raise InfercmpError(
                f"--qps {load.qps:g} over a {seconds:g} s window schedules no request; raise "
                f"--qps or --duration so that rate x seconds is at least 1"
            )
        if arrivals > MAX_ARRIVALS:
            raise InfercmpError(
                f"--qps {load.qps:g} over a {seconds:g} s window schedules {arrivals:,.0f} "
                f"requests, above the {MAX_ARRIVALS:,} one run can hold; lower --qps or give a "
                "shorter --duration"
            )


def load_labels(loads: Sequence[Load]) -> list[str]:
    return [load.label or "single-stream" for load in loads]


def shape_and_load(shape_label: str, load: dict | None) -> str:
    """A stored result's shape label with its load's (`224x224x3 b8-c2-offline`); the label
    alone for the original measurement, so reports of plain runs read as they always did."""
    if not load:
        return shape_label
    label = Load.model_validate(load).label
    return f"{shape_label} {label}" if label else shape_label


def items_per_s(latency: dict | None, load_result: dict | None) -> float | None:
    """Items (batch x requests) per second: measured over the window for a load with several
    requests in flight, else batch / median latency (one request at a time)."""
    if load_result and load_result.get("items_per_s") is not None:
        return float(load_result["items_per_s"])
    return float(latency["throughput_per_s"]) if latency else None


#: The status a finished load run is shown with when it did not hold its load
#: (`load_shortfall`): its figures are kept, but they are not the load's.
OVERLOADED = "overloaded"


def load_shortfall(load: dict | None, load_result: dict | None) -> str | None:
    """Why a measured load run did not hold the load asked for, or None when it did.

    A run that cut requests (due, never started) measured an overloaded system: its p99 is
    over the completed ones. A --qps auto run whose search found no rate under the SLO, or
    whose measured window at the chosen rate missed it, has no rate to report. Derived from
    the stored figures, so runs written before this check read the same way.
    """
    if not load or not load_result:
        return None
    cut, done = int(load_result.get("cut") or 0), int(load_result.get("requests") or 0)
    if cut:
        return (
            f"{cut:,} of {cut + done:,} requests due in the window never started (overload); "
            "its latency is not the offered rate's (lower --qps, or see --qps auto)"
        )
    spec = Load.model_validate(load)
    if spec.scenario != "server":
        return None
    offered, achieved = load_result.get("offered_qps"), load_result.get("requests_per_s")
    if offered and achieved is not None and achieved < KEEP_UP * offered:
        return (
            f"completed {_rate(achieved)} of the {_rate(offered)} requests/s offered (under "
            f"{KEEP_UP:.0%}): requests queued up, so its latency is the backlog's"
        )
    if spec.qps is not None or spec.slo_ms is None:
        return None
    if load_result.get("best_qps") is None:
        reason = load_result.get("search_reason") or "the search found none"
        return f"no rate met the p99 <= {spec.slo_ms:g} ms SLO ({reason})"
    p99 = load_result.get("p99_ms")
    if p99 is None or p99 > spec.slo_ms:
        measured = "unbounded" if p99 is None else f"{p99:.3g} ms"
        return (
            f"the window at the chosen {_rate(load_result['best_qps'])} requests/s missed the "
            f"p99 <= {spec.slo_ms:g} ms SLO (p99 {measured}); measure longer (--duration)"
        )
    return None


def _rate(value: float) -> str:
    """Requests per second as a person reads them: 74,630 or 2.5."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def shown_status(result: Any) -> str:
    """The status a stored result shows: a finished load run that did not hold its load is
    OVERLOADED, not `ok` (the one rule for bench's table, the report and compare)."""
    load_result: Any = getattr(result, "load_result", None)
    if hasattr(load_result, "model_dump"):
        load_result = load_result.model_dump(mode="json")
    load: Any = getattr(result, "load", None)
    if hasattr(load, "model_dump"):
        load = load.model_dump(mode="json")
    if result.status == "ok" and load_shortfall(load, load_result):
        return OVERLOADED
    return result.status


def served_qps(load: dict | None, load_result: dict | None) -> float | None:
    """The rate a server run's window was offered: --qps, or the rate a --qps auto search
    chose (None where it chose none, and for the other scenarios)."""
    if not load or load.get("scenario") != "server":
        return None
    if load.get("qps") is not None:
        return float(load["qps"])
    best = (load_result or {}).get("best_qps")
    return float(best) if best is not None else None


def merge_load_results(per_process: Sequence[LoadResult | None]) -> dict[str, Any] | None:
    """One combination's load figures over its --repeat processes: requests and windows
    summed (so throughput is total items over total measured time), the rest from the first
    process, with every process's throughput kept."""
    found = [r for r in per_process if r is not None]
    if not found:
        return None
    merged = found[0].model_dump()
    if len(found) > 1:
        requests = sum(r.requests for r in found)
        seconds = sum(r.window_s for r in found)
        merged.update(
            requests=requests,
            cut=sum(r.cut for r in found),
            window_s=seconds,
            requests_per_s=requests / seconds if seconds > 0 else 0.0,
            items_per_s=found[0].batch * requests / seconds if seconds > 0 else 0.0,
            per_process_items_per_s=[r.items_per_s for r in found],
        )
    return {k: finite_or_none(v) for k, v in merged.items()}
