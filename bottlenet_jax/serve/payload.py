"""The cloud side's payload check and decoding: framed payloads -> features, or a PayloadError each.

`PayloadDecoder` owns the export's codec and its state. Each payload's header is checked against the
export's feature shape before anything is decoded (`Codec.check_payload`), so no payload can make
the server allocate or compute more than that shape needs; the checked payloads are then decoded
together (`decode_many`: one `codec.decode` call, as a batch-parallel codec wants it), and if that
call fails, one by one, so a bad payload fails only its own request.

`DecodeQueue` gathers the payloads of requests that arrive while a decode runs into the next one:
batching without waiting (the model's batcher does the same after it), so that a codec whose decoder
codes a batch in one call (the entropy codec's rANS) serves many requests for little more than one.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

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

    def warm_up(self, sizes=BATCHES) -> None:
        """Decode batches of these sizes once: a codec that compiles a program per batch shape (the
        entropy codec's rANS) does so before the first request, not during one."""
        body = self.codec.encode(np.zeros((1, *self.feature_shape), np.float32), state=self.state)[0]
        for n in sizes:
            self.codec.decode([body] * n, (n, *self.feature_shape), state=self.state)

    def decode_one(self, element: bytes) -> np.ndarray:
        """A framed payload -> float32 features [h, w, c], or PayloadError naming what is wrong."""
        out = self.decode_many([element])[0]
        if isinstance(out, PayloadError):
            raise out
        return out

    def decode_many(self, elements) -> list:
        """Framed payloads -> per payload its features [h, w, c] or its PayloadError."""
        out, bodies, where = [None] * len(elements), [], []
        for i, e in enumerate(elements):
            try:
                bodies.append(self._checked(e))
                where.append(i)
            except PayloadError as err:
                out[i] = err
        if len(bodies) > 1:
            try:
                for i, z in zip(where, self._decoded(bodies, [len(elements[i]) for i in where])):
                    out[i] = z
                return out
            except PayloadError:
                pass  # one of them is bad: each on its own, so only that one fails
        for i, body in zip(where, bodies):
            try:
                out[i] = self._decoded([body], [len(elements[i])])[0]
            except PayloadError as err:
                out[i] = err
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

    def _decoded(self, bodies, sizes) -> np.ndarray:
        """Checked payloads -> features [n, h, w, c] in one codec call, or PayloadError."""
        what = f"payload of {sizes[0]} bytes" if len(bodies) == 1 else f"{len(bodies)} payloads"
        try:
            z = self.codec.decode(bodies, (len(bodies), *self.feature_shape), state=self.state)
        except Exception as e:  # the codec's own error, one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PayloadError(
                f"{what}: the {self.manifest['codec']['name']} codec cannot decode it to features "
                f"{list(self.feature_shape)}: {why}"
            ) from None
        z = np.asarray(z, np.float32)
        if z.shape != (len(bodies), *self.feature_shape) or not np.isfinite(z).all():
            raise PayloadError(
                f"{what}: decodes to {list(z.shape[1:])} "
                f"{'non-finite values' if z.shape[1:] == self.feature_shape else ''}, expected "
                f"{list(self.feature_shape)}"
            )
        return z


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
