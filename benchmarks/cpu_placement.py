"""Does the host's placement of this machine's CPUs decide ONNX Runtime's speed? (issue 13)

Round after round, one after another on an otherwise idle machine: infercmp's placement probe
(`infercmp.platform.placement`, pure Python), a C cache-line ping-pong and a C fork-join
of ten small
steps between CPU 0 and 1 (compiled from benchmarks/cpu_placement/ when a C compiler is there),
then one fresh process each of ONNX Runtime on tiny-cnn at 32x32 with its default thread pool and
with one intra-op thread (median of 1.5 s of back-to-back calls). If the host's placement is what
moves ONNX Runtime, its default column moves with the ping-pong and the probe, and the one-thread
column does not.

    python benchmarks/cpu_placement.py [--rounds 20]
    python benchmarks/cpu_placement.py --probe-cost 20   # what the probe adds per reading
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infercmp.platform.placement import measure_handoff_ns

HERE = Path(__file__).resolve().parent / "cpu_placement"

ORT_CHILD = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
if int(sys.argv[2]):
    options.intra_op_num_threads = int(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.random.rand(1, 3, 32, 32).astype(np.float32)}
for _ in range(500):
    session.run(None, feed)
times, end = [], time.perf_counter() + 1.5
while time.perf_counter() < end:
    start = time.perf_counter_ns()
    session.run(None, feed)
    times.append(time.perf_counter_ns() - start)
times.sort()
print(times[len(times) // 2] / 1e3)
"""


def _tiny_cnn_onnx(cache: Path) -> Path:
    subprocess.run(["infercmp", "export", "tiny-cnn", "--cache-dir", str(cache)], check=True,
                   capture_output=True)  # fmt: skip
    return next(cache.rglob("model.onnx"))


def _compile(tmp: Path) -> dict[str, Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return {}
    built = {}
    for name in ("pingpong", "forkjoin"):
        exe = tmp / name
        subprocess.run([cc, "-O2", "-pthread", str(HERE / f"{name}.c"), "-o", str(exe)],
                       check=True)  # fmt: skip
        built[name] = exe
    return built


def _run(cmd: list[str]) -> float:
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument(
        "--probe-cost",
        type=int,
        metavar="N",
        help="only time N probe readings (bench takes two per CPU worker)",
    )
    args = parser.parse_args()
    if args.probe_cost:
        _probe_cost(args.probe_cost)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="infercmp-placement-") as name:
        tmp = Path(name)
        model = str(_tiny_cnn_onnx(tmp / "cache"))
        c = _compile(tmp)
        print("round  probe ns  C ping-pong ns  C fork-join us  ORT default us  ORT 1 thread us")
        for i in range(args.rounds):
            row = {
                "probe_ns": measure_handoff_ns((0, 1)),
                "pingpong_ns": _run([str(c["pingpong"]), "300000"]) if c else None,
                "forkjoin_us": _run([str(c["forkjoin"]), "200", "0"]) if c else None,
                "ort_default_us": _run([sys.executable, "-c", ORT_CHILD, model, "0"]),
                "ort_one_thread_us": _run([sys.executable, "-c", ORT_CHILD, model, "1"]),
            }
            rows.append(row)
            cells = [f"{v:.1f}" if v is not None else "n/a" for v in row.values()]
            print(f"{i + 1:5}  {cells[0]:>8}  {cells[1]:>14}  {cells[2]:>14}  {cells[3]:>14}  "
                  f"{cells[4]:>15}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def _probe_cost(readings: int) -> None:
    import statistics
    import time

    walls = []
    for _ in range(readings):
        start = time.perf_counter()
        measure_handoff_ns()
        walls.append((time.perf_counter() - start) * 1e3)
    print(
        f"placement probe: {readings} readings, wall ms median {statistics.median(walls):.0f}, "
        f"min {min(walls):.0f}, max {max(walls):.0f} (bench takes two per CPU worker process)"
    )


if __name__ == "__main__":
    main()
