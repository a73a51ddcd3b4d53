"""What `infercmp compare` costs as runs grow (issue 23 C.18): seconds per compare of two
synthetic runs with N iterations in P processes a side, at several --resamples.

    python benchmarks/compare_cost.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_runs import Combo, make_run  # noqa: E402

from infercmp.report import compare_runs, open_run  # noqa: E402

CASES = [  # (iterations a process, processes, resamples)
    (2_000, 1, 2_000),
    (100_000, 1, 2_000),
    (100_000, 1, 20_000),
    (100_000, 5, 2_000),
    (100_000, 5, 20_000),
    (100_000, 1, 1_000_000),
]


def main() -> None:
    print("| iterations a process | processes a side | resamples | compare s | verdict |")
    print("|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for iterations, processes, resamples in CASES:
            runs = [
                make_run(
                    Path(tmp) / f"{side}-{iterations}-{processes}",
                    [
                        Combo(
                            "onnxruntime",
                            iterations=iterations,
                            processes=processes,
                            process_spread=0.01 if processes > 1 else 0.0,
                        )
                    ],
                    seed=seed,
                )  # fmt: skip
                for seed, side in enumerate(("a", "b"))
            ]
            base, new = (open_run(run) for run in runs)
            start = time.perf_counter()
            report = compare_runs(base, new, resamples=resamples)
            took = time.perf_counter() - start
            (row,) = report.comparisons
            print(f"| {iterations:,} | {processes} | {resamples:,} | {took:.2f} | {row.verdict} |")


if __name__ == "__main__":
    main()
