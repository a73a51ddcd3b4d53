"""Run every harness benchmark (fidelity, overhead, sampler, start-up, time to result, scale)
and print one table of figures against the targets of docs/performance.md.

    python benchmarks/run_all.py [--quick] [--skip-cold] [--json results.json]

The sections run one after another; each interleaves its own variants, because the machine
is shared and noisy. `--quick` cuts iterations and rounds (a smoke run, not the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity
import harness_overhead
import sampler_perturbation
import scale
import startup
import time_to_result
from _perf import machine, print_table, today


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-cold", action="store_true", help="no cold-cache README run")
    parser.add_argument("--only", action="append", help="section(s) to run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    quick = args.quick
    sections = {
        "start-up": lambda: startup.run(5 if quick else 11),
        "overhead": lambda: harness_overhead.run(5000 if quick else 20000, 3 if quick else 9),
        "sampler": lambda: sampler_perturbation.run(2 if quick else 6, 1.0 if quick else 3.0),
        "fidelity": lambda: fidelity.run(2 if quick else 3, quick),
        "scale": scale.run,
        "time to result": lambda: time_to_result.run(args.skip_cold or quick, 0 if quick else 1000),
    }
    header = f"infercmp harness benchmarks, {today()}\nmachine: {machine()}"
    print(header, flush=True)
    rows = []
    for name, section in sections.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        rows += section()
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print_table(rows, header + f"\nmachine at the end: {machine()}")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))


if __name__ == "__main__":
    main()
