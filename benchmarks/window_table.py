"""Print, for every run under a directory, what each combination's resource figures rest on.

For issue 13's H200 check: the measure window of each process, the energy per inference with
the method it came from and the average power it implies, and the GPU utilisation with the
number of sampler readings behind it. Used by `benchmarks/gpu_suite.sh windows`.

    python benchmarks/window_table.py RUNS_DIR            # the figures as stored
    python benchmarks/window_table.py RUNS_DIR --rejudge  # energy judged again from the samples
                                                          # by today's infercmp.sampler rules
"""

from __future__ import annotations

import sys
from pathlib import Path

from infercmp.store.run_store import RunStore


def rejudged(store: RunStore, r) -> tuple[float | None, str]:
    """Energy per inference and method, from the stored samples by today's rules."""
    import polars as pl

    from infercmp.sampler import energy_window

    samples = store.samples().filter(pl.col("combo_id") == r.combo_id)
    if r.load and r.load.get("scenario", "single-stream") != "single-stream":
        if "write" not in samples["phase"].unique().to_list():
            # Before the worker marked the load generator's window as its own phase, the
            # measure phase held the generator's warm-up (and any QPS search) as well.
            return None, "n/a: measured before the load window had a phase of its own"
    windows = [
        (samples.filter(samples["process"] == p.process).sort("t_s").to_dicts(), p.measure_seconds)
        for p in r.processes
    ]
    window = energy_window(windows, r.iterations, None)
    return window.joules_per_inference, window.method


def main(root: Path, rejudge: bool = False) -> None:
    print(
        f"{'combination':58} {'windows s':>13} {'J/inf':>9} {'avg W':>6} "
        f"{'util %':>6} {'n':>4}  energy method"
    )
    for run in sorted(p for p in root.iterdir() if (p / "run.json").exists()):
        store = RunStore.open(run)
        for r in store.results:
            if r.status != "ok":
                print(f"{r.combo_id:58} {r.status}: {r.error}")
                continue
            windows = "/".join(f"{p.measure_seconds:.2f}" for p in r.processes)
            energy, method = r.energy_j_per_inference, r.energy_method
            if rejudge:
                energy, method = rejudged(store, r)
            average = (
                energy * r.iterations / sum(p.measure_seconds for p in r.processes)
                if energy is not None
                else None
            )
            util = f"{r.gpu_util_pct:.0f}" if r.gpu_util_pct is not None else "n/a"
            print(
                f"{r.combo_id:58} {windows:>13} "
                f"{(f'{energy:.4f}' if energy is not None else 'n/a'):>9} "
                f"{(f'{average:.0f}' if average is not None else 'n/a'):>6} "
                f"{util:>6} {r.gpu_util_readings:>4}  {method}"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--rejudge" in sys.argv[2:])
