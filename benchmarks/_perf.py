"""Shared helpers of the benchmarks/ scripts: the machine, the cache, running `infercmp bench`.

Every script measures through subprocesses started from here, so each figure includes the
same process start-up a user pays, and returns `Row`s that `run_all.py` prints as one table.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "INFERCMP_CACHE_DIR"
# The console script's body: `python -c` of it is what `infercmp` runs, without a pyenv shim.
CLI = "import sys; from infercmp.cli import main; sys.argv[0] = 'infercmp'; main()"


@dataclass
class Row:
    """One line of the results table."""

    section: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> str:
    """CPU model, cores, memory and the load average right now, in one line."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"load average {load}"
    )


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cache_dir() -> Path:
    """The warm cache the benchmarks share: $INFERCMP_CACHE_DIR or a fixed temp directory."""
    root = os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "infercmp-perf-cache"
    return Path(root)


def env_with_cache(cache: Path) -> dict[str, str]:
    return {**os.environ, CACHE_ENV: str(cache)}


def infercmp(args: list[str], cache: Path, check: bool = True) -> tuple[float, str]:
    """Run `infercmp ARGS` in a fresh process; (wall seconds, stdout+stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=env_with_cache(cache),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise SystemExit(f"infercmp {' '.join(args)} failed ({proc.returncode}):\n{out[-2000:]}")
    return wall, out


def bench_run(
    model: str, engines: list[str], extra: list[str], cache: Path, out: Path
) -> tuple[float, Any]:
    """`infercmp bench MODEL -d cpu -e ... EXTRA`; (wall seconds, the RunStore it wrote)."""
    from infercmp.store.locate import latest_run
    from infercmp.store.run_store import RunStore

    args = ["bench", model, "-d", "cpu", "--out", str(out)]
    for engine in engines:
        args += ["-e", engine]
    wall, _ = infercmp(args + extra, cache)
    return wall, RunStore.open(latest_run(out))


def p50_ms(store: Any, engine: str) -> float:
    """The stored wall-clock median of ENGINE's one ok result in a run."""
    for result in store.results:
        if result.engine == engine and result.status == "ok":
            return float(result.latency["p50_ms"])
    raise SystemExit(f"no ok {engine} result in {store.path}")


def child_json(code: str, *args: str, cache: Path | None = None) -> dict[str, Any]:
    """Run a Python snippet in a fresh process; it prints one JSON object as its last line."""
    env = env_with_cache(cache) if cache is not None else None
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """`median (min-max)` of ratios, as percentages off 1."""
    pct = sorted((v - 1) * 100 for v in values)
    return f"{statistics.median(pct):+.1f}% ({pct[0]:+.1f}..{pct[-1]:+.1f})"


def print_table(rows: list[Row], title: str = "") -> None:
    if title:
        print(title)
    widths = [
        max(len(getattr(r, f)) for r in rows + [Row("section", "metric", "value", "target")])
        for f in ("section", "metric", "value", "target")
    ]
    header = ("section", "metric", "value", "target", "met")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths + [3]))
    print(line)
    print("-" * len(line))
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        cells = (r.section, r.metric, r.value, r.target)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + met)
