"""The cloud side's work, independent of the wire: payload validation, dynamic batching, the model.

`CloudModel` owns the exported cloud half and the codec named in the export's manifest. Each
payload is checked and decoded on its own (`decode_one`), so a bad one fails only its request.
`Batcher` collects decoded requests into batches (up to `max_batch` samples, waiting at most
`max_delay` after the first), pads each batch to the next of a fixed set of sizes compiled at start-up
(no request ever triggers a compile; `CloudModel.compiles_since_warmup` counts them to prove it),
and runs the cloud half once per batch. Its queue is bounded: when full, `submit` raises `QueueFull`
at once instead of letting latency grow without limit.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
import zlib

import numpy as np

CRC_BYTES = 4


class PayloadError(ValueError):
    """One request's payload is malformed; the message names the problem (INVALID_ARGUMENT)."""


class QueueFull(RuntimeError):
    """The batcher's queue is full (RESOURCE_EXHAUSTED): retry later."""


def frame(payload: bytes) -> bytes:
    """Codec payload -> wire element: the payload and its CRC-32 (little-endian), so a corrupted
    payload is rejected instead of decoding to wrong features."""
    return bytes(payload) + zlib.crc32(payload).to_bytes(CRC_BYTES, "little")


def unframe(element: bytes) -> bytes:
    if len(element) <= CRC_BYTES:
        raise PayloadError(f"payload of {len(element)} bytes: empty (a framed payload is the codec's bytes + CRC-32)")
    body, crc = element[:-CRC_BYTES], int.from_bytes(element[-CRC_BYTES:], "little")
    if zlib.crc32(body) != crc:
        raise PayloadError(f"payload of {len(element)} bytes: CRC-32 mismatch (truncated or corrupted in transit)")
    return body


class _CompileCounter:
    """Counts XLA backend compiles in this process (jax.monitoring's compile-duration event)."""

    count = 0
    _installed = False

    @classmethod
    def install(cls):
        if not cls._installed:
            import jax

            def on_event(event, duration_secs, **_):
                if event == "/jax/core/compile/backend_compile_duration":
                    cls.count += 1
            jax.monitoring.register_event_duration_secs_listener(on_event)
            cls._installed = True


def bucket_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to max_batch (inclusive): a batch is padded to the next of these."""
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return sizes + [max_batch]


class CloudModel:
    """The exported cloud half + codec: `decode_one(element)` -> features, `infer(features)` -> logits."""

    def __init__(self, export_dir: str, max_batch: int = 32):
        import jax

        from bottlenet_jax.export import Half, load_codec, load_manifest
        _CompileCounter.install()
        self.manifest = load_manifest(export_dir)
        self.codec = load_codec(self.manifest)
        self.feature_shape = tuple(self.manifest["feature_shape"])
        self.num_classes = int(self.manifest["model"]["num_classes"])
        # The largest payload a sample can need: raw float32 features plus headers; more is not ours.
        self.max_payload = 4 * int(np.prod(self.feature_shape)) + 4096
        cloud = Half(export_dir, "cloud")
        self._variables = cloud.variables
        self.sizes = bucket_sizes(max_batch)
        fn = jax.jit(cloud.exported.call)
        # Ahead of time, one executable per batch size: a request cannot trigger a compile.
        self._compiled = {s: fn.lower(self._variables, jax.ShapeDtypeStruct((s, *self.feature_shape), np.float32))
                          .compile() for s in self.sizes}
        self._compiles_at_warmup = _CompileCounter.count

    @property
    def compiles_since_warmup(self) -> int:
        """XLA compiles in this process since start-up (the server process: 0, by construction)."""
        return _CompileCounter.count - self._compiles_at_warmup

    def decode_one(self, element: bytes) -> np.ndarray:
        """A framed payload -> float32 features [h, w, c], or PayloadError naming what is wrong."""
        if len(element) > self.max_payload + CRC_BYTES:
            raise PayloadError(f"payload of {len(element)} bytes: larger than any {self.manifest['codec']['name']} "
                               f"payload for features {list(self.feature_shape)} ({self.max_payload} bytes)")
        body = unframe(element)
        try:
            z = self.codec.decode([body], (1, *self.feature_shape))
        except Exception as e:  # the codec's own error, one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PayloadError(f"payload of {len(element)} bytes: the {self.manifest['codec']['name']} codec cannot "
                               f"decode it to features {list(self.feature_shape)}: {why}") from None
        z = np.asarray(z, np.float32)
        if z.shape != (1, *self.feature_shape) or not np.isfinite(z).all():
            raise PayloadError(f"payload of {len(element)} bytes: decodes to {list(z.shape[1:])} "
                               f"{'non-finite values' if z.shape[1:] == self.feature_shape else ''}, expected "
                               f"{list(self.feature_shape)}")
        return z[0]

    def infer(self, features: np.ndarray) -> np.ndarray:
        """[n, h, w, c] -> logits [n, classes], n <= max_batch, padded to a compiled size."""
        n = len(features)
        size = next(s for s in self.sizes if s >= n)
        padded = np.zeros((size, *self.feature_shape), np.float32)
        padded[:n] = features
        return np.asarray(self._compiled[size](self._variables, padded))[:n]


class Batcher:
    """Dynamic batching in one thread: requests in, one `model.infer` per batch, futures out."""

    def __init__(self, model: CloudModel, max_batch: int, max_delay: float, queue_size: int):
        self.model, self.max_batch, self.max_delay = model, max_batch, max_delay
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self.executions = self.inferences = 0
        self.exec_ns = self.queue_ns = 0
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, features: np.ndarray) -> concurrent.futures.Future:
        """Queue one request's decoded features [n, h, w, c]; the future gets its logits."""
        if len(features) > self.max_batch:
            raise PayloadError(f"{len(features)} samples in one request: at most {self.max_batch} (max batch)")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((features, fut, time.perf_counter_ns()))
        except queue.Full:
            raise QueueFull(f"queue full ({self._queue.maxsize} requests waiting); retry later") from None
        return fut

    def _run(self):
        pending = None
        while not (self._stop.is_set() and pending is None and self._queue.empty()):
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
            self._execute(batch, n)

    def _execute(self, batch, n):
        t0 = time.perf_counter_ns()
        try:
            logits = self.model.infer(np.concatenate([f for f, _, _ in batch]))
        except Exception as e:  # a model failure fails this batch's requests, not the server
            for _, fut, _ in batch:
                fut.set_exception(e)
            return
        self.executions += 1
        self.inferences += n
        self.exec_ns += time.perf_counter_ns() - t0
        self.queue_ns += sum(t0 - t for _, _, t in batch)
        start = 0
        for f, fut, _ in batch:
            fut.set_result(logits[start:start + len(f)])
            start += len(f)

    def close(self, timeout: float = 30.0):
        """Finish everything queued, then stop."""
        self._stop.set()
        self._thread.join(timeout)
