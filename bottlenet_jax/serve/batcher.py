"""Dynamic batching: requests in, one model call per batch, futures out.

`Batcher` collects decoded requests into batches (up to `max_batch` samples, waiting at most
`max_delay` after the first), drops requests whose deadline has passed before their batch runs
(`DeadlineExceeded`: never computed) and runs the model once per batch. Its queue is bounded: when
full, `submit` raises `QueueFull` at once instead of letting latency grow. The model is anything
with `infer(features) -> logits` (a `ModelProcess`, or a fake in tests).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time

import numpy as np

from bottlenet_jax.serve.protocol import DeadlineExceeded, PayloadError, QueueFull


class Batcher:
    """Dynamic batching in one thread: requests in, one `model.infer` per batch, futures out.
    `observe(event, value)`, if given, hears "queue_s", "compute_s" and "batch" for metrics."""

    def __init__(self, model, max_batch: int, max_delay: float, queue_size: int, observe=None):
        self.model, self.max_batch, self.max_delay = model, max_batch, max_delay
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stopping = threading.Event()  # set once close() is called: what is queued still runs
        self.executions = self.inferences = self.expired = 0
        self.exec_ns = self.queue_ns = 0
        self._observe = observe or (lambda event, value: None)
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, features: np.ndarray, deadline: float | None = None) -> concurrent.futures.Future:
        """Queue one request's decoded features [n, h, w, c]; the future gets its logits.
        `deadline`: time.monotonic() after which the request is dropped instead of computed."""
        if len(features) > self.max_batch:
            raise PayloadError(f"{len(features)} samples in one request: at most {self.max_batch} (max batch)")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((features, fut, time.perf_counter_ns(), deadline))
        except queue.Full:
            raise QueueFull(f"queue full ({self._queue.maxsize} requests waiting); retry later") from None
        return fut

    def _run(self):
        pending = None
        while not (self.stopping.is_set() and pending is None and self._queue.empty()):
            try:
                first = pending or self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            pending, batch, n = None, [first], len(first[0])
            deadline = time.perf_counter() + self.max_delay
            while n < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if n + len(item[0]) > self.max_batch:
                    pending = item  # starts the next batch
                    break
                batch.append(item)
                n += len(item[0])
            self._execute(batch)

    def _execute(self, batch):
        now, live = time.monotonic(), []
        for item in batch:
            _, fut, _, deadline = item
            if not fut.set_running_or_notify_cancel():  # the caller gave up (its RPC was cancelled)
                self.expired += 1
            elif deadline is not None and deadline <= now:
                fut.set_exception(DeadlineExceeded("the deadline passed while the request waited for its batch"))
                self.expired += 1
            else:
                live.append(item)
        batch = live
        if not batch:
            return
        n = sum(len(f) for f, _, _, _ in batch)
        t0 = time.perf_counter_ns()
        try:
            logits = self.model.infer(np.concatenate([f for f, _, _, _ in batch]))
        except Exception as e:  # a model failure fails this batch's requests, not the server
            for _, fut, _, _ in batch:
                fut.set_exception(e)
            return
        spent = time.perf_counter_ns() - t0
        self.executions += 1
        self.inferences += n
        self.exec_ns += spent
        self.queue_ns += sum(t0 - t for _, _, t, _ in batch)
        self._observe("batch", n)
        self._observe("compute_s", spent / 1e9)
        for _, _, t, _ in batch:
            self._observe("queue_s", (t0 - t) / 1e9)
        start = 0
        for f, fut, _, _ in batch:
            fut.set_result(logits[start : start + len(f)])
            start += len(f)

    def close(self, timeout: float = 30.0):
        """Finish everything queued, then stop."""
        self.stopping.set()
        self._thread.join(timeout)
