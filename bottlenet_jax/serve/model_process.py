"""The exported cloud half, compiled ahead of time, in a supervised process of its own.

`CloudModel` compiles one executable per batch size (1, 2, 4, ... max batch; a batch is padded to
the next), so no request triggers a compile (`compiles_since_warmup` counts them to prove it).
`ModelProcess` runs it in a process of its own (see why there) and supervises it: a process that
dies (crash, OOM kill, kill -9) is noticed at once, the batch it held fails with
`ModelUnavailable`, and a new one is started with back-off (bounded retries); `ready` is false
until it has compiled.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from bottlenet_jax.serve.protocol import ModelUnavailable


class CompileCounter:
    """Counts the programs XLA makes in this process: backend compiles and loads from a persistent
    compilation cache (a cache hit is still a program that was not ready when it was asked for)."""

    count = 0
    _installed = False

    @classmethod
    def install(cls):
        if not cls._installed:
            import jax

            def on_duration(event, duration_secs, **_):
                if event == "/jax/core/compile/backend_compile_duration":
                    cls.count += 1

            def on_event(event, **_):
                if event == "/jax/compilation_cache/cache_hits":
                    cls.count += 1

            jax.monitoring.register_event_duration_secs_listener(on_duration)
            jax.monitoring.register_event_listener(on_event)
            cls._installed = True


def bucket_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to max_batch (inclusive): a batch is padded to the next of these."""
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return sizes + [max_batch]


class CloudModel:
    """The exported cloud half, compiled ahead of time per batch size: `infer(features)` -> logits."""

    def __init__(self, export_dir: str, max_batch: int = 32):
        import jax

        from bottlenet_jax.export import Half, load_manifest

        CompileCounter.install()
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
        self._compiles_at_warmup = CompileCounter.count

    @property
    def compiles_since_warmup(self) -> int:
        """XLA compiles in this process since start-up (0, by construction)."""
        return CompileCounter.count - self._compiles_at_warmup

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

    def __init__(self, export_dir: str, max_batch: int = 32, max_restarts: int = 5, on_restart=None, worker=None):
        """`worker(export_dir, max_batch, conn)`: the process's main (default `_model_worker`; tests
        pass a fake that speaks the same pipe protocol)."""
        from bottlenet_jax.export import load_manifest

        self.export_dir, self.max_batch, self.max_restarts = export_dir, max_batch, max_restarts
        self._worker = worker or _model_worker
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
            target=self._worker, args=(self.export_dir, self.max_batch, child), name="bottlenet-model", daemon=True
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
