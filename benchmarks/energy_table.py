"""The energy figures of one or more runs, with the average power each implies, so a reader can
check them against the card's idle draw and limit: J/request x requests/s = W.

    python benchmarks/energy_table.py RUN [RUN...]

Requests/s: a load scenario's measured window (load_result.requests_per_s), else one request at
a time, 1 / p50. The limit and idle figures are the run's own (NVML power limit; the lowest
power reading of the run).
"""

from __future__ import annotations

import sys

from infercmp.store.run_store import RunStore


def main(paths: list[str]) -> None:
    print(f"{'combination':64} {'req/s':>9} {'J/request':>10} {'implied W':>9}  method")
    for path in paths:
        store = RunStore.open(path)
        gpus = (store.meta.get("environment") or {}).get("gpus") or []
        limit = next((g.get("power_limit_w") for g in gpus if g.get("power_limit_w")), None)
        print(f"# {path} (power limit {limit or 'not recorded'} W)")
        for r in store.results:
            if r.status != "ok":
                continue
            load = r.load_result or {}
            rate = load.get("requests_per_s") or (
                1e3 / r.latency["p50_ms"] if r.latency and r.latency.get("p50_ms") else None
            )
            joules = r.energy_j_per_inference
            watts = f"{joules * rate:9.0f}" if joules and rate else f"{'n/a':>9}"
            j_text = f"{joules:10.4f}" if joules else f"{'n/a':>10}"
            print(f"{r.combo_id:64} {rate or 0:9.0f} {j_text} {watts}  {r.energy_method}")


if __name__ == "__main__":
    main(sys.argv[1:])
