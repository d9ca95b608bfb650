"""Host-side JPEG coding for the codec's `host` backend: cv2 over a pool of workers.

One contiguous chunk of images per worker (`pool`: threads, or spawned processes on many-core
hosts: cv2 releases the GIL inside the codec, but each call's Python glue takes it back, so small
images stop scaling at a few threads; see benchmarks/codec_throughput.py). Pools are created once
per (kind, size) and joined at exit; spawned workers exit when their parent is killed.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import os
import threading
import time

import cv2
import numpy as np

from bottlenet_jax.codecs.jpeg.jfif import encode_image

POOLS = ("threads", "processes")
_POOLS: dict[tuple[str, int], concurrent.futures.Executor] = {}
_POOL_LOCK = threading.Lock()


def host_workers(requested: int = 0) -> int:
    return (
        requested
        if requested > 0
        else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def _exit_with_parent(parent: int):
    """Worker initializer: a killed trainer (SIGKILL, preemption) leaves its spawned workers
    blocked on their queue forever (seen); each watches its parent and exits when it is gone."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="bottlenet-jpeg-parent-watch").start()


@atexit.register
def _shutdown_pools():
    """Join the workers while the interpreter is whole (a process pool left to its weakref
    callback at teardown prints a spurious traceback)."""
    with _POOL_LOCK:
        for p in _POOLS.values():
            p.shutdown(wait=True, cancel_futures=True)
        _POOLS.clear()


def _pool(kind: str, n: int) -> concurrent.futures.Executor:
    with _POOL_LOCK:
        if (kind, n) not in _POOLS:
            if kind == "threads":
                _POOLS[kind, n] = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="bottlenet-jpeg")
            else:  # spawn, not fork: the parent runs XLA threads, which a fork would copy half-alive
                ctx = multiprocessing.get_context("spawn")
                _POOLS[kind, n] = concurrent.futures.ProcessPoolExecutor(
                    n, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),)
                )
        return _POOLS[kind, n]


def code_images(imgs: np.ndarray, params: list[int], out: np.ndarray | None = None):
    """Encode and decode each grey image: (decoded [n, H, W] uint8, full JFIF sizes [n] int32)."""
    out = np.empty_like(imgs) if out is None else out
    full = np.empty((len(imgs),), np.int32)
    for i, img in enumerate(imgs):
        enc = encode_image(img, params)
        out[i] = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
        full[i] = enc.size
    return out, full


def code_tiles(imgs: np.ndarray, params: list[int], workers: int = 0, pool: str = "threads"):
    """Grey uint8 images [n, H, W] -> (decoded [n, H, W], full JFIF sizes [n]), one contiguous chunk
    per worker (``workers`` of them, 0: one per core). ``processes``: spawned workers, no shared
    GIL; each chunk is pickled across, which pays off on many-core hosts, not on 2 cores."""
    n = imgs.shape[0]
    k = min(host_workers(workers), n)
    bounds = np.linspace(0, n, k + 1).astype(int)
    if k <= 1:
        return code_images(imgs, params)
    if pool == "threads":
        out, full = np.empty_like(imgs), np.empty((n,), np.int32)

        def work(lo, hi):
            full[lo:hi] = code_images(imgs[lo:hi], params, out[lo:hi])[1]

        for f in [_pool(pool, k).submit(work, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]:
            f.result()
        return out, full
    parts = list(
        _pool(pool, k).map(code_images, [imgs[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])], [params] * k)
    )
    return np.concatenate([o for o, _ in parts]), np.concatenate([f for _, f in parts])
