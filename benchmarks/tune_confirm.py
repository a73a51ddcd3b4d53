"""Check a tune run's winners with separate `infercmp bench` runs beside each engine's defaults.

    python benchmarks/tune_confirm.py RUN_DIR [--runs 3] [--out DIR]

For every engine, the winner's printed command and the same command for the defaults are run
alternately (winner, defaults, winner, ...), `--runs` times each, each as its own
`infercmp bench` (fresh processes, its own run directory). Prints each run's median and, per
engine, the median of the runs' medians and their ratio: the winner should be no slower.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from infercmp.store.run_store import RunStore
from infercmp.store.tune_file import read_leaderboard


def bench(command: str, out: Path) -> float | None:
    args = shlex.split(command)[1:]  # drop "infercmp": run this checkout's CLI
    before = set(out.glob("*")) if out.exists() else set()
    code = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"
    subprocess.run([sys.executable, "-c", code, *args, "--out", str(out)], capture_output=True)
    new = sorted(set(out.glob("*")) - before)
    if not new:
        return None
    results = [r for r in RunStore.open(new[-1]).results if r.status == "ok" and r.latency]
    return results[0].latency["p50_ms"] if results else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs-confirm"))
    args = parser.parse_args()
    board = read_leaderboard(args.run)
    if board is None:
        print(f"no tune.json in {args.run}")
        return 1
    rows = []
    for winner in board.winners:
        default = next((e for e in board.entries if e.engine == winner.engine and e.default), None)
        if not winner.best or default is None:
            print(f"{winner.engine}: nothing to compare ({winner.speedup_note})")
            continue
        if winner.command == default.command:
            print(f"{winner.engine}: the defaults won; nothing to compare")
            continue
        pairs = {"winner": winner.command, "defaults": default.command}
        print(f"{winner.engine}: winner   {winner.command}")
        print(f"{winner.engine}: defaults {default.command}")
        figures: dict[str, list[float]] = {"winner": [], "defaults": []}
        for i in range(args.runs):
            for kind, command in pairs.items():
                ms = bench(command, args.out)
                print(f"  run {i + 1} {kind:8s} {ms if ms is None else f'{ms:.3f}'} ms", flush=True)
                if ms is not None:
                    figures[kind].append(ms)
        if figures["winner"] and figures["defaults"]:
            w, d = statistics.median(figures["winner"]), statistics.median(figures["defaults"])
            rows.append((winner.engine, winner.best, w, d, d / w))
    print("| engine | winner | winner ms (median of runs) | defaults ms | defaults / winner |")
    print("|---|---|---:|---:|---:|")
    for engine, best, w, d, ratio in rows:
        print(f"| {engine} | {best} | {w:.3f} | {d:.3f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
