"""Run a module as `__main__` in a process that ends, with its whole process group, when the
process that started it dies: `python -m infercmp.platform.lifeline infercmp.worker SPEC.json`.

bench starts each worker in a session of its own (so the terminal's Ctrl-C reaches only bench)
and kills the worker's process group on every exit path it controls. SIGKILL of bench is the
one it does not: then the kernel sends this process SIGTERM (PR_SET_PDEATHSIG), which one
thread waits for while every other thread blocks it, and that thread SIGKILLs the group, so
neither the worker nor a process the user's model started measures on alone. The signal must
be blocked before any library starts a thread (numpy's BLAS does at import), hence this small
module that imports nothing heavy and runs first.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def arm(parent: int) -> None:
    """End this process group when `parent` dies (Linux; elsewhere bench's own kill applies)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def end_group() -> None:
        signal.sigwait({signal.SIGTERM})
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=end_group, name="infercmp-lifeline", daemon=True).start()
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM)) == 0 and os.getppid() != parent:
        os.killpg(0, signal.SIGKILL)  # the parent died before the request took effect


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python -m infercmp.platform.lifeline MODULE [ARGS...]", file=sys.stderr)
        sys.exit(2)
    arm(os.getppid())
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
