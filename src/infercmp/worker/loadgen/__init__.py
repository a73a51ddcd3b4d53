"""Engine-agnostic load generator: closed-loop and Poisson open-loop runs over request slots.

The scenarios follow MLPerf LoadGen's definitions where they fit:

- SingleStream: `closed_loop` with one slot (the next request is issued when the previous ends);
  MultiStream is the same at a batch of several samples.
- Offline: `closed_loop` with N slots, each slot issuing its next request as soon as its
  previous one ends, so N requests are always in flight; the figure is throughput.
- Server: `open_loop`, Poisson arrivals scheduled in advance; a request's latency runs from
  its *scheduled* arrival, so time spent queued, and any lateness of the generator itself,
  counts against the system (LoadGen does the same). `search_qps` finds the highest rate whose
  latency percentile stays under a limit: what a LoadGen submitter searches for by hand, since
  LoadGen only checks one target QPS against its target latency.

A slot is one request of the engine layer (a CUDA stream, an execution context, an infer
request or a session of its own); the generator runs one thread per slot, so a slot is only
ever called from one thread. Threads, not processes: the engines release the GIL while they
compute. The generator's own ceiling and per-request overhead are measured by
`generator_capacity` (`benchmarks/loadgen_overhead.py`, docs/performance.md).

The package: `log` (what a run recorded), `loops` (the closed and open loops), `qps` (the rate
search) and `capacity` (the generator measured on itself). This module names the generator's
public interface once, for its callers outside the worker (benchmarks/loadgen_overhead.py);
infercmp's own modules import each name from its module.
"""

from infercmp.worker.loadgen.capacity import (
    GeneratorCapacity,
    generator_capacity,
    generator_limit,
    search_generator_limit,
)
from infercmp.worker.loadgen.log import RequestLog, SlotFailed
from infercmp.worker.loadgen.loops import Slot, WindowEdge, closed_loop, open_loop, poisson_schedule
from infercmp.worker.loadgen.qps import QpsPoint, QpsSearch, search_qps

__all__ = [
    "GeneratorCapacity",
    "QpsPoint",
    "QpsSearch",
    "RequestLog",
    "Slot",
    "SlotFailed",
    "WindowEdge",
    "closed_loop",
    "generator_capacity",
    "generator_limit",
    "open_loop",
    "poisson_schedule",
    "search_generator_limit",
    "search_qps",
]
