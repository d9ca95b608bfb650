"""The one wrapper around constriction's range coder that the codecs' streams go through.

A stream is constriction's queue (first in, first out) range coder's output as little-endian
32-bit words: any byte string whose length is not a positive multiple of 4 is not a stream.
Models: `categorical(weights)` (one fixed distribution; weights need not be normalised),
`Family` (a categorical model per symbol, parameters given with the symbols), `uniform(n)`.
"""

from __future__ import annotations

import numpy as np


def _stream():
    import constriction

    return constriction.stream


def categorical(weights):
    """A fixed categorical model of symbols 0..len(weights)-1 (constriction's own float rounding)."""
    return _stream().model.Categorical(np.asarray(weights, np.float64), perfect=False)


def family():
    """The categorical model family: the weights come with each symbol (`Writer.write(s, family(), w)`)."""
    return _stream().model.Categorical(perfect=False)


def uniform(n: int):
    return _stream().model.Uniform(int(n))


class Writer:
    """Symbols in, one stream out (`getvalue`)."""

    def __init__(self):
        self._enc = _stream().queue.RangeEncoder()

    def write(self, symbols, model, weights=None) -> None:
        symbols = np.ascontiguousarray(symbols, np.int32).ravel()
        if weights is None:
            self._enc.encode(symbols, model)
        else:
            self._enc.encode(symbols, model, np.asarray(weights, np.float64))

    def getvalue(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()


class Reader:
    """One stream in, symbols out; ValueError for what cannot be a stream at all."""

    def __init__(self, data: bytes):
        if not data or len(data) % 4:
            raise ValueError(f"range-coded stream of {len(data)} bytes: must be a non-empty multiple of 4")
        self._dec = _stream().queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))

    def read(self, model, count_or_weights) -> np.ndarray:
        """`count` symbols of a fixed model, or one symbol per row of `weights` of a family."""
        if isinstance(count_or_weights, (int, np.integer)):
            return self._dec.decode(model, int(count_or_weights))
        return self._dec.decode(model, np.asarray(count_or_weights, np.float64))

    def exhausted(self) -> bool:
        return self._dec.maybe_exhausted()


def check_size(payload: bytes, symbols: int, bits_per_symbol: int) -> None:
    """ValueError unless `payload` can be a stream of `symbols` symbols of at most `bits_per_symbol`
    bits each (read from its length only: a server checks this before any decoding)."""
    limit = 4 * (-(-(bits_per_symbol * symbols + 64) // 32))
    if not payload or len(payload) % 4 or len(payload) > limit:
        raise ValueError(
            f"{len(payload)} bytes: a range-coded stream of {symbols} symbols is 4..{limit} bytes in 32-bit words"
        )
