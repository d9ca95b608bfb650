"""Batch rANS in numpy: the stream format, the tables' forms, and a numpy coder (no JAX: the edge
runtime's, and the reference the XLA coder of rans.py is tested against). The coder and the format
are described in rans.py; one sample's stream is its final state (3 or 4 bytes) then its 16-bit
words, plus whatever words a codec appends after them (escapes).
"""

from __future__ import annotations

import numpy as np

L = 1 << 16  # the state's lower bound; also the encoder's initial and the decoder's final state
WORD_BYTES = 2
HEAD_BYTES = 4  # the most the final state takes (3 below 2^24)
# What a stream costs beyond its symbols' ideal code length, on average: the encoder starts from
# x = L, whose 16 bits the final state still holds (2 bytes), and the final state is written in
# whole bytes (half a byte on average). A rate estimate plus this is what len() should average.
FIXED_BYTES = 2.5
MAX_PRECISION = 16


def check_precision(precision: int) -> None:
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"rANS tables of {precision} bits: this coder takes 1..{MAX_PRECISION}")


def cumulative(freqs, xp=np):
    """Frequencies [rows, K] -> cumulative [rows, K + 1] (uint32; 0 first, 2^P last and after)."""
    f = xp.asarray(freqs).astype(xp.uint32)
    return xp.concatenate([xp.zeros_like(f[:, :1]), xp.cumsum(f, axis=1, dtype=xp.uint32)], axis=1)


def encode_np(freq, cum, precision: int):
    """rans.encode in numpy: symbols' (frequency, cumulative) [T, N] in decoding order -> (final
    states [N] uint32, words [T, N] uint16, emitted [T, N] bool): the same numbers, lane by lane
    vectorised, one step per symbol position (backwards, from x = L)."""
    check_precision(precision)
    if np.ndim(freq) == 2 and np.shape(freq)[1] <= SCALAR_LANES:
        return _encode_lanes_in_python(freq, cum, precision)
    freq, cum = np.asarray(freq, np.uint64), np.asarray(cum, np.uint64)
    x = np.full(freq.shape[1:], L, np.uint64)
    words = np.empty(freq.shape, np.uint16)
    emitted = np.empty(freq.shape, bool)
    shift, p, word = np.uint64(32 - precision), np.uint64(precision), np.uint64(16)
    for t in range(len(freq) - 1, -1, -1):
        f = freq[t]
        emitted[t] = e = (x >> shift) >= f
        words[t] = x & np.uint64(0xFFFF)
        x = np.where(e, x >> word, x)
        x = ((x // f) << p) + x % f + cum[t]
    return x.astype(np.uint32), words, emitted


# At a few lanes (an edge encoding one image) numpy's per-call overhead, ~1 us a step and operation,
# is most of the time: Python's integers code one lane ~10x faster. The same arithmetic (every
# value stays below 2^32 + 2^16), so the same numbers: tests/test_rans.py checks both paths.
SCALAR_LANES = 2


def _encode_lanes_in_python(freq, cum, precision: int):
    freq, cum = np.asarray(freq, np.int64), np.asarray(cum, np.int64)
    T, N = freq.shape
    states = np.empty(N, np.uint32)
    words = np.empty((T, N), np.uint16)
    emitted = np.empty((T, N), bool)
    shift = 32 - precision
    for n in range(N):
        fs, cs = freq[:, n].tolist(), cum[:, n].tolist()
        w, e = [0] * T, [False] * T
        x = L
        for t in range(T - 1, -1, -1):
            f = fs[t]
            w[t] = x & 0xFFFF
            if (x >> shift) >= f:
                e[t] = True
                x >>= 16
            x = ((x // f) << precision) + x % f + cs[t]
        states[n], words[:, n], emitted[:, n] = x, w, e
    return states, words, emitted


def head_bytes(x, xp=np):
    """Bytes of the final state x in the stream: 3 below 2^24, else 4."""
    return 3 + (x >= (1 << 24)).astype(xp.int32)


def stream_bytes_np(freq: np.ndarray, cum: np.ndarray, precision: int) -> np.ndarray:
    """`stream_bytes` in numpy (host callbacks, which must not call back into JAX)."""
    freq, cum = np.asarray(freq, np.uint64), np.asarray(cum, np.uint64)
    x = np.full(freq.shape[1:], L, np.uint64)
    n = np.zeros(freq.shape[1:], np.int32)
    for f, c in zip(freq[::-1], cum[::-1]):
        emit = (x >> np.uint64(32 - precision)) >= f
        n += emit
        x = np.where(emit, x >> np.uint64(16), x)
        x = ((x // f) << np.uint64(precision)) + x % f + c
    return head_bytes(x) + WORD_BYTES * n


def lookup_table(freqs) -> np.ndarray:
    """Per row the symbol of each slot, flat uint16 [R << P] (P from the rows' sum 2^P): the
    decoder's one-gather symbol finder (`find_by_lookup`), the classic fast rANS decode."""
    freqs = np.asarray(freqs, np.int64)
    total = int(freqs[0].sum())
    return np.concatenate([np.repeat(np.arange(freqs.shape[1], dtype=np.uint16), row) for row in freqs])[
        : len(freqs) * total
    ]


def packed_rows(freqs, cum):
    """Per row and symbol cum << 16 | freq ([R, K + 1] uint32; the padding, freq 0, is 0): what
    `find_in_rows` compares with, frequencies < 2^16 (P <= 16, two symbols or more per row)."""
    return np.where(freqs > 0, (cum[:, :-1].astype(np.uint32) << 16) | freqs, 0).astype(np.uint32)


# ----------------------------------------------------------------------------- bytes
def pack(x, words, emitted, tails) -> list[bytes]:
    """(final states [N], words [T, N'], emitted [T, N'] or its little-endian bits [T, N' / 8] (N' >= N
    lanes) in numpy; per stream the 16-bit words appended after its rANS words, or None) -> one
    byte string per stream."""
    x = np.asarray(x, np.uint32)[: len(tails)]
    heads = x.astype(">u4").tobytes()
    start = 4 - head_bytes(x)  # a 3-byte state drops its (zero) first byte
    emitted = np.asarray(emitted)
    if emitted.dtype == np.uint8:  # bits: find the few non-zero bytes first
        t, byte = np.nonzero(emitted)
        bits = np.unpackbits(emitted[t, byte][:, None], axis=1, bitorder="little").astype(bool)
        k, bit = np.nonzero(bits)
        t, n = t[k], 8 * byte[k] + bit
    else:
        t, n = np.nonzero(emitted)  # few: most steps emit nothing
    order = np.lexsort((t, n))  # sample-major, each sample's words in order
    blob = np.asarray(words)[t[order], n[order]].astype("<u2").tobytes()
    ends = np.cumsum(WORD_BYTES * np.bincount(n, minlength=len(x))[: len(x)]).tolist()
    out, begin = [], 0
    for i, (a, end) in enumerate(zip(start.tolist(), ends)):
        tail = b"" if tails[i] is None else np.asarray(tails[i], "<u2").tobytes()
        out.append(heads[4 * i + a : 4 * i + 4] + blob[begin:end] + tail)
        begin = end
    return out


def longest_words(max_bytes: int) -> int:
    """Words after the state in the longest stream of at most `max_bytes`."""
    return max(1, (max_bytes - 3) // WORD_BYTES)


def widths(max_bytes: int, columns: int = 16) -> list[int]:
    """Every width of words `unpack` can give streams of at most `max_bytes`: `columns`, then
    doubling up to the first that holds the longest stream (just one when `columns` is
    `longest_words(max_bytes)`: what a server asks for, so that its decoder is compiled once per lane
    count, before it serves, and no payload, a hostile one included, compiles another)."""
    out = [columns]
    while out[-1] < longest_words(max_bytes):
        out.append(out[-1] * 2)
    return out


def stream_errors(payloads, max_bytes: int) -> list:
    """Per stream, why it cannot be one (None where it can): shorter than a state, longer than
    `max_bytes`, or a state written longer than it is. What `unpack` refuses, stream by stream."""
    out = []
    for p in payloads:
        head = 3 if len(p) % 2 else 4
        if not head <= len(p) <= max_bytes:
            out.append(f"{len(p)} bytes: an rANS stream here is 3..{max_bytes} bytes")
        elif (x := int.from_bytes(p[:head], "big")) < (L if head == 3 else 1 << 24):
            out.append(f"{len(p)} bytes: its rANS state {x:#x} is not written in its shortest form")
        else:
            out.append(None)
    return out


def unpack(payloads, max_bytes: int, lanes: int = 0, columns: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streams -> (first states [lanes] uint32; words after the state [lanes, W] uint32, zero-padded
    to the first of `widths(max_bytes, columns)` that holds them; words per stream [N]); `lanes` >= N
    rows, the rest state L and no words. ValueError for a stream that cannot be one: shorter than a
    state, longer than `max_bytes`, or a state written longer than it is."""
    problem = next((e for e in stream_errors(payloads, max_bytes) if e), None)
    if problem:
        raise ValueError(problem)
    n = np.fromiter(map(len, payloads), np.int64, len(payloads))
    head = np.where(n % 2, 3, 4)
    counts = (n - head) // WORD_BYTES
    most = int(counts.max(initial=1))
    width = next(w for w in widths(max_bytes, columns) if w >= most)
    # every stream's bytes in one row, aligned so that its words start at column 4
    rows = np.zeros((max(lanes, len(payloads)), 4 + WORD_BYTES * width), np.uint8)
    if len(payloads) <= 16:  # few: a loop costs less than the index arithmetic
        for i, p in enumerate(payloads):
            rows[i, 4 - head[i] : 4 - head[i] + len(p)] = np.frombuffer(p, np.uint8)
    else:
        blob = np.frombuffer(b"".join(payloads), np.uint8)
        seq = np.arange(len(blob)) - np.repeat(np.cumsum(n) - n, n)
        rows[np.repeat(np.arange(len(payloads)), n), seq + (4 - head).repeat(n)] = blob
    rows[len(payloads) :, 2] = 1  # padding lanes: state L
    state = rows[:, :4].astype(np.uint32)
    x = (state[:, 0] << 24) | (state[:, 1] << 16) | (state[:, 2] << 8) | state[:, 3]
    return x, rows[:, 4:].view("<u2").astype(np.uint32), counts.astype(np.int32)
