"""A/A test of `infercmp compare` (issue 13): does it call noise a change, and a real change noise?

Runs, interleaved, `pairs` times: bench A and bench B of the same configuration, and bench S of a
configuration known to be slower; then `infercmp compare A B` (should find no significant change)
and `infercmp compare A S` (should flag a regression). Each bench measures with `--repeat`
processes, so compare uses its process-level (hierarchical) method; beside it, the same pairs are
judged with the single-process method of before (process 0 of each run, bootstrap of the
median ratio), which is what a one-process run gives.

    python benchmarks/aa_test.py --pairs 10 --repeat 5   # about 10 minutes on 2 cores
    python benchmarks/aa_test.py --keep DIR ...          # keep the runs; later:
    python benchmarks/aa_test.py --rejudge DIR           # judge them again, measuring nothing
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from infercmp.report.compare import bootstrap_median_ratio, classify
from infercmp.results import RunStore

MODEL = ["tiny-cnn", "-d", "cpu"]
SAME = "onnxruntime"
SLOWER = "onnxruntime[graph_optimization_level=disable]"
THRESHOLD, NOISE_FLOOR = 5.0, 1.0  # compare's defaults, in percent


def bench(engine: str, out: Path, repeat: int) -> Path:
    before = set(out.iterdir()) if out.exists() else set()
    cmd = ["infercmp", "bench", *MODEL, "-e", engine, "--repeat", str(repeat), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (run,) = set(out.iterdir()) - before
    return run


def compare(base: Path, new: Path) -> dict:
    """compare's verdict and exit code. When it refuses the pair as measured in different
    environments (exit 2: the host placed the CPUs differently, infercmp.sampler.handoff), the
    verdict is "environment changed" and the figures are those of `--allow-env-change`."""
    cmd = ["infercmp", "compare", str(base), str(new), "-f", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    refused = proc.returncode == 2 and "different environments" in proc.stderr
    if refused:
        allowed = subprocess.run([*cmd, "--allow-env-change"], capture_output=True, text=True)
        report = json.loads(allowed.stdout)
    else:
        report = json.loads(proc.stdout)
    (row,) = report["comparisons"]
    return {"exit": proc.returncode,
            "change": row["change"],
            "verdict": "environment changed" if refused else row["verdict"],
            "verdict_if_allowed": row["verdict"],
            "environment_changes": report.get("environment_changes"),
            "method": row.get("method"), "noise_floor": row.get("noise_floor"),
            "note": row.get("note")}  # fmt: skip


def handoff(run: Path) -> float | None:
    """The run's typical cache-line round trip between its CPUs (the host's placement)."""
    from infercmp.sampler.handoff import typical

    return typical(v for r in RunStore.open(run).results for p in r.processes
                   for v in (p.cpu_handoff_ns or ()))  # fmt: skip


def background(run: Path) -> float | None:
    """CPUs other processes used while the run measured (the busiest combination)."""
    cpus = [r.background_cpus for r in RunStore.open(run).results]
    cpus = [c for c in cpus if c is not None]
    return max(cpus) if cpus else None


def single_process(base: Path, new: Path) -> dict:
    """Before: one process per run, the bootstrap of the ratio of medians over its iterations."""

    def wall(run: Path) -> np.ndarray:
        lat = RunStore.open(run).latency()
        lat = lat.filter((lat["phase"] == "total") & (lat["clock"] == "wall"))
        return lat.filter(lat["process"] == 0)["ns"].to_numpy()

    ratio, low, high = bootstrap_median_ratio(wall(base), wall(new))
    change = (ratio - 1) * 100
    verdict = classify(low, high, change / 100, NOISE_FLOOR / 100)
    flagged = verdict == "regression" and change > THRESHOLD
    return {"change": ratio - 1, "verdict": verdict, "exit": 1 if flagged else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--same", default=SAME, help=f"the A/A configuration (default {SAME})")
    parser.add_argument("--slower", default=SLOWER, help=f"the slower one (default {SLOWER})")
    parser.add_argument("--json", type=Path, help="write every pair's figures here")
    parser.add_argument("--keep", type=Path, help="keep the runs in this directory")
    parser.add_argument(
        "--rejudge",
        type=Path,
        metavar="KEEP",
        help="judge the runs a --keep left again (with today's compare)",
    )
    args = parser.parse_args()
    rows = []
    if args.rejudge:
        runs = sorted(path for path in args.rejudge.iterdir() if path.is_dir())
        for pair, start in enumerate(range(0, len(runs) - 2, 3)):
            rows.append(_judge(pair, *runs[start : start + 3]))
            print(_line(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory(prefix="infercmp-aa-") as tmp:
        out = args.keep or Path(tmp)
        for pair in range(0 if args.rejudge else args.pairs):
            engines = (args.same, args.same, args.slower)
            a, b, s = (bench(engine, out, args.repeat) for engine in engines)
            rows.append(_judge(pair, a, b, s))
            print(_line(rows[-1]), flush=True)
    n = len(rows)
    quiet = "no significant change"
    print(f"\nA/A pairs judged '{quiet}': hierarchical "
          f"{sum(r['aa']['verdict'] == quiet for r in rows)}/{n}, single-process "
          f"{sum(r['aa_single']['verdict'] == quiet for r in rows)}/{n}")  # fmt: skip
    print(f"A/A pairs with exit 0 (no regression above {THRESHOLD:g}%): hierarchical "
          f"{sum(r['aa']['exit'] == 0 for r in rows)}/{n}, single-process "
          f"{sum(r['aa_single']['exit'] == 0 for r in rows)}/{n}")  # fmt: skip
    print(f"slower configuration ({args.slower}) judged a regression with exit 1: hierarchical "
          f"{sum(r['slow']['exit'] == 1 and r['slow']['verdict'] == 'regression' for r in rows)}"
          f"/{n}, single-process "
          f"{sum(r['slow_single']['exit'] == 1 for r in rows)}/{n}")  # fmt: skip
    for side, title in (("aa", "A/A pairs"), ("slow", "slower pairs")):
        moved = sum(r[side]["verdict"] == "environment changed" for r in rows)
        print(f"{title} refused because the host placed the CPUs differently in every process "
              f"(exit 2): {moved}/{n}")  # fmt: skip
    print(f"method: {rows[0]['aa']['method']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def _judge(pair: int, a: Path, b: Path, s: Path) -> dict:
    """A pair's figures: A against B (identical) and A against S (slower), both methods."""
    return {
        "pair": pair + 1,
        "runs": [str(run) for run in (a, b, s)],
        "aa": compare(a, b),
        "aa_single": single_process(a, b),
        "slow": compare(a, s),
        "slow_single": single_process(a, s),
        "background_cpus": [background(run) for run in (a, b, s)],
        "handoff_ns": [handoff(run) for run in (a, b, s)],
    }


def _line(r: dict) -> str:
    floor = r["aa"]["noise_floor"]
    busy = max((c for c in r["background_cpus"] if c is not None), default=None)
    trips = "/".join("n/a" if h is None else f"{h:.0f}" for h in r["handoff_ns"])
    return (
        f"pair {r['pair']:2}: A/A {_pct(r['aa']['change'])} {r['aa']['verdict']:<21} "
        f"exit {r['aa']['exit']} floor {floor:.1%} "
        f"(single-process {_pct(r['aa_single']['change'])} {r['aa_single']['verdict']:<21}) | "
        f"slower {_pct(r['slow']['change'])} {r['slow']['verdict']} exit {r['slow']['exit']} "
        f"(single-process {_pct(r['slow_single']['change'])} exit {r['slow_single']['exit']}) "
        f"| other CPUs busy {'n/a' if busy is None else f'{busy:.2f}'} "
        f"| CPU round trip ns {trips}"
    )


def _pct(value: float | None, width: int = 7) -> str:
    """A change as +12.3%, or n/a when compare had none (a row it did not compare)."""
    return f"{'n/a':>{width}}" if value is None else f"{value:+{width}.1%}"


if __name__ == "__main__":
    main()
