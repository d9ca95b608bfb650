"""The cloud side's payload check and decoding: framed payloads -> features, or a PayloadError each.

`PayloadDecoder` owns the export's codec and its state. Each payload's header is checked against the
export's feature shape before anything is decoded (`Codec.check_payload`), so no payload can make
the server allocate or compute more than that shape needs; the checked payloads are then decoded
together (`decode_many`: one `Codec.decode_each` call, as a batch-parallel codec wants it), which
says which of them failed, so a bad payload fails only its own request. `warm_up` compiles every
program decoding can need before the server is ready (the rANS codecs: each lane count and stream
width), so no payload, a hostile one included, makes the server compile while it serves.

`DecodeQueue` gathers the payloads of requests that arrive while a decode runs into the next one:
batching without waiting (the model's batcher does the same after it), so that a codec whose decoder
codes a batch in one call (the entropy codec's rANS) serves many requests for little more than one.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

from bottlenet_jax.serve.model_process import CompileCounter
from bottlenet_jax.serve.protocol import CRC_BYTES, PayloadError, unframe

BATCHES = (1, 8, 64)  # payloads per decode call that warm_up compiles for; the largest bounds a DecodeQueue call


class PayloadDecoder:
    """The export's codec and feature shape: `decode_one(element)` -> features, or PayloadError."""

    def __init__(self, export_dir: str):
        from bottlenet_jax.export import load_codec, load_manifest

        self.manifest = manifest = load_manifest(export_dir)
        self.codec, self.state = load_codec(export_dir)
        self.feature_shape = tuple(manifest["feature_shape"])
        # The largest payload a sample can need: raw float32 features plus headers; more is not ours.
        self.max_payload = 4 * int(np.prod(self.feature_shape)) + 4096
        CompileCounter.install()
        self._compiles_at_warmup = CompileCounter.count

    def warm_up(self, sizes=BATCHES) -> None:
        """Compile everything decoding a batch of these sizes can need (Codec.warm_up: the rANS
        codecs pad a server's streams to one width, one program per lane count), then count:
        `compiles_since_warmup` says whether any payload made this process compile afterwards (none
        should, a hostile one included)."""
        self.codec.warm_up(self.feature_shape, state=self.state, batches=sizes)
        self._compiles_at_warmup = CompileCounter.count

    @property
    def compiles_since_warmup(self) -> int:
        """Programs compiled (or loaded from a cache) in this process since `warm_up`."""
        return CompileCounter.count - self._compiles_at_warmup

    def decode_one(self, element: bytes) -> np.ndarray:
        """A framed payload -> float32 features [h, w, c], or PayloadError naming what is wrong."""
        out = self.decode_many([element])[0]
        if isinstance(out, PayloadError):
            raise out
        return out

    def decode_many(self, elements) -> list:
        """Framed payloads -> per payload its features [h, w, c] or its PayloadError, in one codec
        call (Codec.decode_each: a bad payload fails only itself)."""
        out, bodies, where = [None] * len(elements), [], []
        for i, e in enumerate(elements):
            try:
                bodies.append(self._checked(e))
                where.append(i)
            except PayloadError as err:
                out[i] = err
        if not bodies:
            return out
        name, shape = self.manifest["codec"]["name"], list(self.feature_shape)
        z, errors = [], []
        for a in range(0, len(bodies), BATCHES[-1]):  # no call larger than warm_up compiled for
            part = bodies[a : a + BATCHES[-1]]
            try:
                zs, es = self.codec.decode_each(part, (len(part), *self.feature_shape), state=self.state)
            except Exception as e:  # noqa: BLE001  (not one payload's fault: every one of the call fails)
                zs, es = [None] * len(part), [e] * len(part)
            z += list(zs)
            errors += es
        for k, i in enumerate(where):
            if errors[k] is None and not np.isfinite(z[k]).all():
                errors[k] = ValueError("decodes to non-finite values")
            if errors[k] is None:
                out[i] = z[k]
            else:
                why = str(errors[k]).splitlines()[0] if str(errors[k]) else type(errors[k]).__name__
                out[i] = PayloadError(
                    f"payload of {len(elements[i])} bytes: the {name} codec cannot decode it to features {shape}: {why}"
                )
        return out

    def _checked(self, element: bytes) -> bytes:
        """The payload of a framed element, its size and header checked (PayloadError)."""
        if len(element) > self.max_payload + CRC_BYTES:
            raise PayloadError(
                f"payload of {len(element)} bytes: larger than any {self.manifest['codec']['name']} "
                f"payload for features {list(self.feature_shape)} ({self.max_payload} bytes)"
            )
        body = unframe(element)
        try:
            self.codec.check_payload(body, self.feature_shape, state=self.state)  # O(header): before any decoding
        except ValueError as e:
            raise PayloadError(
                f"payload of {len(element)} bytes: not a {self.manifest['codec']['name']} payload for features "
                f"{list(self.feature_shape)}: {e}"
            ) from None
        return body


class DecodeQueue:
    """Requests' payloads decoded on `workers` threads; what queues while a decode runs is decoded
    together in the next one (up to `max_payloads`, the largest batch `warm_up` compiles for).
    `submit(elements)` -> a future of the request's
    features [n, h, w, c], or of the PayloadError of its first bad payload."""

    def __init__(self, decoder: PayloadDecoder, workers: int, max_payloads: int = BATCHES[-1]):
        self.decoder, self.max_payloads = decoder, max_payloads
        self.calls = self.payloads = 0  # decode calls made (each for one or more requests), payloads decoded
        self._pending: list = []  # (elements, future)
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def submit(self, elements) -> concurrent.futures.Future:
        fut = concurrent.futures.Future()
        with self._lock:
            self._pending.append((elements, fut))
        self._pool.submit(self._drain)
        return fut

    def _drain(self):
        with self._lock:
            jobs, n = [], 0
            while self._pending and (not jobs or n + len(self._pending[0][0]) <= self.max_payloads):
                jobs.append(self._pending.pop(0))
                n += len(jobs[-1][0])
            if jobs:
                self.calls, self.payloads = self.calls + 1, self.payloads + n
        if not jobs:
            return  # an earlier drain took them
        try:
            results = iter(self.decoder.decode_many([e for elements, _ in jobs for e in elements]))
            for elements, fut in jobs:
                mine = [next(results) for _ in elements]
                bad = [r for r in mine if isinstance(r, PayloadError)]
                _settle(fut, bad[0] if bad else np.stack(mine))
        except Exception as e:  # not a payload's fault: every request of the call fails with it
            for _, fut in jobs:
                _settle(fut, e)

    def close(self):
        self._pool.shutdown(wait=True)


def _settle(fut: concurrent.futures.Future, outcome) -> None:
    """Result or exception, unless the request was cancelled meanwhile (its client gave up)."""
    try:
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled, or settled already
