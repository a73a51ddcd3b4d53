"""Start-up: wall time of `infercmp --help` and `infercmp models`, median of cold processes.

Each command runs `--repeats` times in fresh processes, interleaved with a bare `python -c
pass` so the interpreter's own start is visible. The console script is run through the
interpreter directly (what a virtual environment's `bin/infercmp` does); a pyenv shim in front
of it adds its own ~0.1 s, reported separately when present.

    python benchmarks/startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _perf import CLI, Row, median, print_table

HELP_TARGET_S = 0.25


def _script() -> list[str]:
    """The console script next to this interpreter, run by it; else the same code via -c."""
    script = Path(sys.executable).with_name("infercmp")
    if script.is_file() and script.read_text(errors="replace").startswith("#!"):
        return [sys.executable, str(script)]
    return [sys.executable, "-c", CLI]


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def measure(repeats: int = 9) -> dict[str, float]:
    script = _script()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "infercmp --help": [*script, "--help"],
        "infercmp models": [*script, "models"],
    }
    shim = shutil.which("infercmp")
    if shim and "shims" in shim:
        commands["infercmp --help (pyenv shim)"] = [shim, "--help"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():
        _wall(argv)  # fills the page cache once, as any first run after install does
    for _ in range(repeats):
        for name, argv in commands.items():
            times[name].append(_wall(argv))
    return {name: median(values) for name, values in times.items()}


def run(repeats: int = 9) -> list[Row]:
    got = measure(repeats)
    rows = []
    for name, seconds in got.items():
        target = name == "infercmp --help"
        rows.append(
            Row(
                "start-up",
                f"{name}, median of {repeats}",
                f"{seconds:.3f} s",
                f"< {HELP_TARGET_S} s" if target else "",
                seconds < HELP_TARGET_S if target else None,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print_table(run(args.repeats))


if __name__ == "__main__":
    main()
