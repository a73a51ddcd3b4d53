"""Images/s of each batch and concurrency point beside the expert loops' figures (issue 15,
H200, ResNet-50 224x224, inputs on the device), read from bench run directories.

    python benchmarks/scenario_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from infercmp.store.run_store import RunStore
from infercmp.workload.scenarios import items_per_s

# (engine, batch, concurrency) -> images/s of the expert's own loop on the H200, 2026-11-29.
EXPERT = {
    ("pytorch", 1, 1): 1095, ("pytorch", 8, 1): 6887, ("pytorch", 32, 1): 13449,
    ("pytorch", 128, 1): 16260, ("pytorch", 256, 1): 17069,
    ("onnxruntime", 1, 1): 1151, ("onnxruntime", 8, 1): 5406, ("onnxruntime", 32, 1): 8648,
    ("onnxruntime", 128, 1): 9356, ("onnxruntime", 256, 1): 9689,
    ("pytorch", 1, 2): 1866, ("pytorch", 1, 4): 3258,
}  # fmt: skip
# The concurrency sweep's concurrency-1 point is measured as offline (a closed loop); the
# expert's 1-stream figure is that, so it is compared too.


def main(paths: list[str]) -> int:
    rows = []
    for path in paths:
        for r in RunStore.open(Path(path)).results:
            load = r.load or {}
            batch, slots = load.get("batch") or 1, load.get("concurrency", 1)
            measured = items_per_s(r.latency, r.load_result) if r.status == "ok" else None
            expert = EXPERT.get((r.engine, batch, slots)) if r.device == "cuda" else None
            if (r.engine, batch, slots) == ("pytorch", 1, 1) and load.get("scenario") == "offline":
                name = "pytorch c1 (offline)"
            else:
                name = r.engine
            rows.append((name, r.device, r.precision, batch, slots, measured, expert, r))
    print(f"{'engine':<22} {'dev':<4} {'prec':<5} {'batch':>5} {'conc':>4} "
          f"{'images/s':>10} {'expert':>8} {'ratio':>6}  status")  # fmt: skip
    for name, device, precision, batch, slots, measured, expert, r in rows:
        ratio = f"{measured / expert:.2f}" if measured and expert else "-"
        shown = f"{measured:,.0f}" if measured is not None else "n/a"
        status = r.status if r.status == "ok" else f"{r.status}: {(r.error or '')[:60]}"
        print(
            f"{name:<22} {device:<4} {precision:<5} {batch:>5} {slots:>4} {shown:>10} "
            f"{expert if expert else '-':>8} {ratio:>6}  {status}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
