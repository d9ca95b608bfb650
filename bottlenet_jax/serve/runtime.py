"""The cloud side's work, independent of the wire: payload validation, dynamic batching, the model.

`PayloadDecoder` owns the codec named in the export's manifest: each payload is checked and
decoded on its own (`decode_one`), so a bad one fails only its request; its header is checked
against the export's feature shape before anything is decoded (`Codec.check_payload`), so no
payload can make the server allocate or compute more than that shape needs. `CloudModel` owns the
exported cloud half; `ModelProcess` runs it in a process of its own (see why there) and
supervises it: a process that dies (crash, OOM kill, kill -9) is noticed at once, the batch it
held fails with `ModelUnavailable`, and a new one is started with back-off (bounded retries);
`ready` is false until it has compiled. `Batcher` collects decoded requests into batches (up to
`max_batch` samples, waiting at most `max_delay` after the first), drops requests whose deadline
has passed before their batch runs (`DeadlineExceeded`: never computed), pads each batch to the
next of a fixed set of sizes compiled at start-up (no request ever triggers a compile;
`compiles_since_warmup` counts them to prove it), and runs the cloud half once per batch. Its
queue is bounded: when full, `submit` raises `QueueFull` at once instead of letting latency grow.
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


class ModelUnavailable(RuntimeError):
    """The model process is down or restarting (UNAVAILABLE): retry later."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before its batch ran (DEADLINE_EXCEEDED): it was not computed."""


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


class PayloadDecoder:
    """The export's codec and feature shape: `decode_one(element)` -> features, or PayloadError."""

    def __init__(self, manifest: dict):
        from bottlenet_jax.export import load_codec

        self.manifest = manifest
        self.codec = load_codec(manifest)
        self.feature_shape = tuple(manifest["feature_shape"])
        # The largest payload a sample can need: raw float32 features plus headers; more is not ours.
        self.max_payload = 4 * int(np.prod(self.feature_shape)) + 4096

    def decode_one(self, element: bytes) -> np.ndarray:
        """A framed payload -> float32 features [h, w, c], or PayloadError naming what is wrong."""
        if len(element) > self.max_payload + CRC_BYTES:
            raise PayloadError(
                f"payload of {len(element)} bytes: larger than any {self.manifest['codec']['name']} "
                f"payload for features {list(self.feature_shape)} ({self.max_payload} bytes)"
            )
        body = unframe(element)
        try:
            self.codec.check_payload(body, self.feature_shape)  # O(header): before any decoding
        except ValueError as e:
            raise PayloadError(
                f"payload of {len(element)} bytes: not a {self.manifest['codec']['name']} payload for features "
                f"{list(self.feature_shape)}: {e}"
            ) from None
        try:
            z = self.codec.decode([body], (1, *self.feature_shape))
        except Exception as e:  # the codec's own error, one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PayloadError(
                f"payload of {len(element)} bytes: the {self.manifest['codec']['name']} codec cannot "
                f"decode it to features {list(self.feature_shape)}: {why}"
            ) from None
        z = np.asarray(z, np.float32)
        if z.shape != (1, *self.feature_shape) or not np.isfinite(z).all():
            raise PayloadError(
                f"payload of {len(element)} bytes: decodes to {list(z.shape[1:])} "
                f"{'non-finite values' if z.shape[1:] == self.feature_shape else ''}, expected "
                f"{list(self.feature_shape)}"
            )
        return z[0]


class CloudModel:
    """The exported cloud half, compiled ahead of time per batch size: `infer(features)` -> logits."""

    def __init__(self, export_dir: str, max_batch: int = 32):
        import jax

        from bottlenet_jax.export import Half, load_manifest

        _CompileCounter.install()
        manifest = load_manifest(export_dir)
        self.feature_shape = tuple(manifest["feature_shape"])
        self.num_classes = int(manifest["model"]["num_classes"])
        cloud = Half(export_dir, "cloud")
        self._variables = cloud.variables
        self.sizes = bucket_sizes(max_batch)
        fn = jax.jit(cloud.exported.call)
        # Ahead of time, one executable per batch size: a request cannot trigger a compile.
        self._compiled = {
            s: fn.lower(self._variables, jax.ShapeDtypeStruct((s, *self.feature_shape), np.float32)).compile()
            for s in self.sizes
        }
        self._padded = {s: np.zeros((s, *self.feature_shape), np.float32) for s in self.sizes}
        self._compiles_at_warmup = _CompileCounter.count

    @property
    def compiles_since_warmup(self) -> int:
        """XLA compiles in this process since start-up (0, by construction)."""
        return _CompileCounter.count - self._compiles_at_warmup

    def infer(self, features: np.ndarray) -> np.ndarray:
        """[n, h, w, c] -> logits [n, classes], n <= max_batch, padded to a compiled size."""
        n = len(features)
        size = next(s for s in self.sizes if s >= n)
        padded = self._padded[size]
        padded[:n] = features
        padded[n:] = 0
        return np.asarray(self._compiled[size](self._variables, padded))[:n]


def _model_worker(export_dir: str, max_batch: int, conn):
    """The model process: compile, then answer (shape, features bytes) with logits bytes."""
    try:
        model = CloudModel(export_dir, max_batch)
    except Exception as e:  # reported by ModelProcess.__init__
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", model.sizes, model.num_classes))
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        if msg == b"compiles":
            conn.send_bytes(model.compiles_since_warmup.to_bytes(8, "little"))
            continue
        n = int.from_bytes(msg[:4], "little")
        features = np.frombuffer(msg, np.float32, offset=4).reshape(n, *model.feature_shape)
        try:
            conn.send_bytes(b"\0" + model.infer(features).astype(np.float32).tobytes())
        except Exception as e:  # this batch fails, the process serves on
            conn.send_bytes(b"\1" + f"{type(e).__name__}: {e}".encode())


class ModelProcess:
    """`CloudModel` in a supervised process of its own, used through the same `infer`.

    Why a process: XLA's CPU runtime needs the GIL many times during one execution, so a model
    running in a thread beside a busy gRPC event loop waits on the GIL for most of each batch
    (benchmarks/gil_contention.py; figures in benchmarks/README.md). In its own process the
    model keeps a core to itself; a batch crosses a pipe as raw float32 bytes.

    Supervision: a watcher thread waits on the process's sentinel, so a death is seen at once;
    `ready` turns false, the batch in flight (if any) fails with ModelUnavailable, and a new
    process is started after 0.5, 1, 2, ... s (at most `max_restarts` in a row without a batch
    served in between; then it stays down: `failed`). `ready` is true again once the new one
    has compiled every batch size."""

    def __init__(self, export_dir: str, max_batch: int = 32, max_restarts: int = 5, on_restart=None):
        from bottlenet_jax.export import load_manifest

        self.export_dir, self.max_batch, self.max_restarts = export_dir, max_batch, max_restarts
        self.feature_shape = tuple(load_manifest(export_dir)["feature_shape"])
        self.restarts, self.failed, self._closing = 0, False, False
        self._on_restart = on_restart or (lambda: None)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._streak = 0  # restarts since the last batch served
        self._start()  # the first one: errors go to the caller
        self._watcher = threading.Thread(target=self._watch, name="model-supervisor", daemon=True)
        self._watcher.start()

    def _start(self):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        proc = ctx.Process(
            target=_model_worker, args=(self.export_dir, self.max_batch, child), name="bottlenet-model", daemon=True
        )
        proc.start()
        child.close()
        try:
            msg = conn.recv()
        except EOFError:
            msg = ("error", f"the model process exited with code {proc.join(5) or proc.exitcode}")
        if msg[0] == "error":
            proc.join(5)
            raise RuntimeError(f"{self.export_dir}: cannot load the cloud half: {msg[1]}")
        _, self.sizes, self.num_classes = msg
        with self._lock:
            self._conn, self._proc = conn, proc
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closing

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _watch(self):
        from multiprocessing.connection import wait

        while not self._closing:
            wait([self._proc.sentinel])
            if self._closing:
                return
            self._ready.clear()
            self._on_restart()
            while not self._closing:
                if self._streak >= self.max_restarts:
                    self.failed = True  # stays down: readiness false for good
                    return
                time.sleep(min(30.0, 0.5 * 2**self._streak))
                self._streak += 1
                self.restarts += 1
                try:
                    self._start()
                    break
                except Exception:  # try again after a longer pause
                    continue

    def infer(self, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, np.float32)
        if not self.ready:
            raise ModelUnavailable(
                "the model process is restarting" if not self.failed else "the model process is down"
            )
        with self._lock:
            try:
                self._conn.send_bytes(len(features).to_bytes(4, "little") + features.tobytes())
                reply = self._conn.recv_bytes()
            except (EOFError, OSError):  # died under this batch: the watcher restarts it
                self._ready.clear()
                raise ModelUnavailable("the model process died while computing this batch; it is restarting") from None
        self._streak = 0
        if reply[:1] != b"\0":
            raise RuntimeError(reply[1:].decode())
        return np.frombuffer(reply, np.float32, offset=1).reshape(len(features), self.num_classes)

    @property
    def compiles_since_warmup(self) -> int:
        with self._lock:
            self._conn.send_bytes(b"compiles")
            return int.from_bytes(self._conn.recv_bytes(), "little")

    def close(self):
        self._closing = True
        self._ready.clear()
        with self._lock:
            self._conn.close()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


class Batcher:
    """Dynamic batching in one thread: requests in, one `model.infer` per batch, futures out.
    `observe(event, value)`, if given, hears "queue_s", "compute_s" and "batch" for metrics."""

    def __init__(self, model, max_batch: int, max_delay: float, queue_size: int, observe=None):
        self.model, self.max_batch, self.max_delay = model, max_batch, max_delay
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
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
        self._stop.set()
        self._thread.join(timeout)
