"""ONNX Runtime on the CPU, N requests in flight: concurrent `run` calls on one session
against one session per request (what infercmp's onnxruntime engine does for --concurrency).

    python benchmarks/ort_concurrency.py [MODEL.onnx] [--seconds 5] [--threads 1,2]

Prints images/s for each way at each concurrency; the default model is tiny-cnn's export.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def throughput(sessions: list[ort.InferenceSession], feeds: dict, seconds: float) -> float:
    """Requests per second with one thread per entry of `sessions` (entries may repeat)."""
    counts = [0] * len(sessions)
    stop = threading.Event()

    def loop(k: int) -> None:
        s = sessions[k]
        while not stop.is_set():
            s.run(None, feeds)
            counts[k] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(sessions))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--threads", default="0", help="intra-op threads per session (0: ORT's)")
    args = parser.parse_args()
    path = args.model
    if path is None:
        from infercmp.artifacts.cache import ArtifactCache, resolve_cache_dir
        from infercmp.artifacts.onnx_export import export_onnx
        from infercmp.workload.plugins import get_plugin

        path = str(export_onnx(get_plugin("tiny-cnn"), ArtifactCache(resolve_cache_dir(None))).path)
    probe = session(path, None)
    shape = [d if isinstance(d, int) else 1 for d in probe.get_inputs()[0].shape]
    shape = [1, 3, 224, 224] if len(shape) == 4 and shape[2] == 1 else shape
    feeds = {probe.get_inputs()[0].name: np.random.default_rng(0).random(shape, np.float32)}
    print(f"model {path}, input {shape}, {args.seconds:g} s per point")
    print(f"{'threads':>7} {'conc':>4} {'one session':>12} {'session each':>13}")
    for threads in (int(t) for t in args.threads.split(",")):
        for n in (int(c) for c in args.concurrency.split(",")):
            shared = session(path, threads or None)
            one = throughput([shared] * n, feeds, args.seconds)
            each = throughput(
                [session(path, threads or None) for _ in range(n)], feeds, args.seconds
            )
            print(f"{threads or 'ort':>7} {n:>4} {one:>12.1f} {each:>13.1f}")


if __name__ == "__main__":
    main()
