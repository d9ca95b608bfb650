"""Why the server runs the cloud half in a process of its own: XLA CPU beside a busy Python thread.

    python benchmarks/gil_contention.py [--export EXPORT_DIR] [--seconds 2]

Times the export's compiled cloud half (batch 32, as the server's batcher calls it) alone, then
in a thread while the main thread runs a pure-Python loop (what the gRPC event loop is under load),
at several GIL switch intervals. Prints batches/s and the slowdown against running alone.
Without --export a random-init Fashion-MNIST export is made (timings do not depend on weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def busy(seconds: float) -> int:
    n, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        n += 1
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=None)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    from bottlenet_jax.serve.runtime import CloudModel

    if a.export is None:
        from serve_load import random_export

        a.export = random_export(tempfile.mkdtemp(prefix="gil_"))
    model = CloudModel(a.export, a.batch)
    x = np.random.default_rng(0).random((a.batch, *model.feature_shape), np.float32)
    model.infer(x)
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < a.seconds:
        model.infer(x)
        n += 1
    alone = n / (time.perf_counter() - t)
    print(f"# {os.cpu_count()} host cores | cloud half of {a.export}, batch {a.batch}")
    print(f"alone: {alone:.1f} batches/s")
    default = sys.getswitchinterval()
    for interval in (default, 1e-3, 1e-4):
        sys.setswitchinterval(interval)
        done, count = threading.Event(), [0]

        def compute():
            while not done.is_set():
                model.infer(x)
                count[0] += 1

        th = threading.Thread(target=compute)
        t = time.perf_counter()
        th.start()
        busy(a.seconds)
        done.set()
        th.join()
        rate = count[0] / (time.perf_counter() - t)
        print(
            f"beside a busy Python thread, switch interval {interval * 1e3:g} ms: {rate:.1f} batches/s "
            f"({alone / max(rate, 1e-9):.1f}x slower than alone)"
        )
    sys.setswitchinterval(default)


if __name__ == "__main__":
    main()
