"""`python -m infercmp.worker SPEC.json`: run one combination (worker/run.py) and exit."""

import os
import sys

from infercmp.worker.run import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is on disk (written atomically); skipping interpreter teardown saves about
    # 1.1 s per PyTorch worker (module and CUDA/thread-pool destructors) at no risk.
    os._exit(code)
