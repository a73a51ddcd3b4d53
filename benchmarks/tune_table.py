"""The last lines of benchmarks/gpu_tune.sh: each engine's tuned best against the targets.

    python benchmarks/tune_table.py RUN_DIR [engine=target_ms ...]

Reads the run's tune.json (infercmp.tune.search.read_leaderboard) and prints, per engine,
the winning
configuration, its median, the target and whether it is within 5% of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from infercmp.store.tune_file import read_leaderboard

WITHIN = 0.05


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    targets = {k: float(v) for k, _, v in (a.partition("=") for a in argv[1:])}
    board = read_leaderboard(run)
    if board is None:
        print(f"no tune.json in {run}")
        return 1
    print(
        f"tune {board.model} {board.shape} on {board.device}: {board.status} after "
        f"{board.elapsed_s:.0f} s of {board.budget_s:g} s"
    )
    print("| engine | best configuration | round | ms | defaults ms | target ms | ratio |")
    print("|---|---|---|---:|---:|---:|---:|")
    for w in board.winners:
        target = targets.get(w.engine)
        ms = w.best_p50_ms
        ratio = f"{ms / target:.3f}" if target and ms else "-"
        verdict = ""
        if target and ms:
            verdict = " (within 5%)" if ms <= target * (1 + WITHIN) else " (NOT within 5%)"
        print(
            f"| {w.engine} | {w.best or 'none: ' + (w.speedup_note or '')} | {w.round or '-'} "
            f"| {f'{ms:.4g}' if ms else '-'} | "
            f"{f'{w.default_p50_ms:.4g}' if w.default_p50_ms else '-'} | "
            f"{f'{target:g}' if target else '-'} | {ratio}{verdict} |"
        )
    skipped = [e for e in board.entries if e.status == "not measured" and e.reason]
    for e in skipped:
        print(f"not measured: {e.engine}[{e.variant}] {e.precision}: {e.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
