"""Deployment scenarios after MLPerf LoadGen: the `--batch`, `--concurrency`, `--scenario`,
`--qps` and `--slo-ms` flags turned into `contract.Load`s, and the worker's side of a load
other than one request at a time (slots driven by `infercmp.loadgen`).

single-stream (the default) is infercmp's original timed loop (`timing.measure`), unchanged.
offline keeps `concurrency` requests in flight back to back (a closed loop); server issues
requests at Poisson arrival times at `qps` (an open loop), so latency includes queueing; with
`qps` None the rate is searched for the highest one whose p99 stays under `slo_ms`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from infercmp.config import ModelConfig
from infercmp.contract import Load, Scenario
from infercmp.errors import InfercmpError

SCENARIOS: tuple[Scenario, ...] = ("single-stream", "offline", "server")
MAX_CONCURRENCY = 256


def _positive_ints(text: str, flag: str, limit: int | None = None) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise InfercmpError(f"{flag} '{text}': '{part}' is not a positive integer")
        if limit is not None and int(part) > limit:
            raise InfercmpError(f"{flag} '{text}': {part} is above the limit of {limit}")
        values.append(int(part))
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
    `--concurrency N` (N > 1) without `--scenario` means offline: single-stream is one request
    at a time by definition.
    """
    from infercmp.batching import parse_batches

    if scenario is not None and scenario not in SCENARIOS:
        raise InfercmpError(f"--scenario '{scenario}': choose {', '.join(SCENARIOS)}")
    auto_batch = False
    batches: list[int | None] = [None]
    if batch is not None:
        parsed = parse_batches(batch, config)
        auto_batch = parsed is None
        batches = [None] if parsed is None else list(parsed)
    counts = _positive_ints(concurrency, "--concurrency", MAX_CONCURRENCY) if concurrency else [1]
    chosen: Scenario = scenario or ("offline" if max(counts) > 1 else "single-stream")  # type: ignore[assignment]
    if chosen == "single-stream" and max(counts) > 1:
        raise InfercmpError(
            "--scenario single-stream keeps one request in flight; use --scenario offline or "
            "server with --concurrency"
        )
    if slo_ms is not None and not (0 < slo_ms < math.inf):
        raise InfercmpError(f"--slo-ms must be a positive number of milliseconds, got {slo_ms}")
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
    return value


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
