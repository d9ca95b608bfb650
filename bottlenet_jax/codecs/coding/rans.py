"""Batch-parallel rANS: one stream per sample, every stream of a batch advanced one symbol per step.

No JAX library codes entropy streams batch-parallel; constriction and CompressAI code one stream at
a time on the host. Streams coded under shared tables advance symbol by symbol in lockstep, which is
the shape XLA (and an accelerator) is good at: here one step of `lax.scan` codes one symbol of every
sample (Duda 2013's rANS; the vectorised form of Giesen 2014, with lanes = samples, not interleaved
states, so a sample pays for one final state only).

Coder (32-bit state x in [L, 2^32), L = 2^16, 16-bit words, tables of P <= 16 bits):
  encode s (frequency f, cumulative c):  if x >> (32 - P) >= f: emit x & 0xffff, x >>= 16
                                         x = (x // f << P) + x % f + c
  decode:  slot = x & (2^P - 1); s with cum[s] <= slot < cum[s + 1]
           x = f * (x >> P) + slot - c; if x < L: x = x << 16 | the next word
The encoder runs the symbols backwards from x = L; the stream starts with its final state (big-
endian, 3 bytes below 2^24, else 4: the words after it are whole, so the length says which), and
the decoder reads forward. With P <= 16 a step emits at most one word, so a step's output is a word
and a flag (no scatter) and a stream's length follows from the flags and the final state: the graph
computes it exactly. Each decode step maps [L, 2^32) x words one-to-one onto the encoder's, so a
stream that decodes back to x = L having read exactly its words IS the encoding of what it decodes
to: that is the format check, with no second encode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.straight_through import match_varying

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


# ----------------------------------------------------------------------------- encoding
def _encode_step(precision: int):
    def step(x, fc):
        f, c = fc
        emit = (x >> (32 - precision)) >= f
        word = x & 0xFFFF
        x = jnp.where(emit, x >> 16, x)
        x = ((x // f) << precision) + x % f + c
        return x, (word, emit)

    return step


def encode(freq, cum, precision: int):
    """Symbols given as their (frequency, cumulative) [T, N] in decoding order (uint32) -> (final
    states [N], words [T, N], emitted [T, N]): stream n is the state's two words then words[t, n] for
    ascending t where emitted[t, n]."""
    return encode_by(lambda f, c: (f, c), freq, cum, precision)


def encode_by(lookup, a, b, precision: int):
    """`encode` of symbols whose (frequency, cumulative) `lookup(a[t], b[t])` gives at each step."""
    step = _encode_step(precision)

    def body(x, ab):
        return step(x, lookup(*ab))

    x0 = match_varying(jnp.full(a.shape[1:], L, jnp.uint32), a)  # per device under shard_map, as a is
    x, (words, emitted) = jax.lax.scan(body, x0, (a[::-1], b[::-1]))
    return x, words[::-1], emitted[::-1]


@functools.partial(jax.jit, static_argnames=("precision",))
def encode_entries(sub, table, precision: int):
    """`encode_by` of symbols given as their entries [T, N] (uint8/int32) in packed rows
    (`packed_rows`: cum << 16 | freq): in their step's block of `table` [T, S * (K + 1)] (a
    position's candidate rows, one after another), or in all the rows flattened, `table` [R * (K + 1)]
    (1-D). Returns (final states [N], words [T, N] uint16, emitted [T, N / 8] as little-endian bits:
    what `pack` takes). One compiled call codes a batch; run it where `table` lives (the host's CPU)."""

    def lookup(sub, block):
        p = jnp.take(table if table.ndim == 1 else block, sub.astype(jnp.int32))
        return p & 0xFFFF, p >> 16

    blocks = table if table.ndim == 2 else jnp.zeros((len(sub), 1), table.dtype)
    x, words, emitted = encode_by(lookup, sub, blocks, precision)
    emitted = jnp.pad(emitted, ((0, 0), (0, -emitted.shape[1] % 8)))  # whole bytes of lanes
    bits = emitted.reshape(emitted.shape[0], -1, 8).astype(jnp.uint8) << jnp.arange(8, dtype=jnp.uint8)
    return x, words.astype(jnp.uint16), jnp.sum(bits, axis=-1, dtype=jnp.uint8)


def head_bytes(x, xp=np):
    """Bytes of the final state x in the stream: 3 below 2^24, else 4."""
    return 3 + (x >= (1 << 24)).astype(xp.int32)


def stream_bytes(freq, cum, precision: int):
    """The length in bytes of each stream `encode` writes, before any appended words (the graph's
    exact byte count, without the words themselves)."""
    step = _encode_step(precision)

    def count(carry, fc):
        x, n = carry
        x, (_, emit) = step(x, fc)
        return (x, n + emit), None

    init = match_varying((jnp.full(freq.shape[1:], L, jnp.uint32), jnp.zeros(freq.shape[1:], jnp.int32)), freq)
    (x, n), _ = jax.lax.scan(count, init, (freq[::-1], cum[::-1]))
    return head_bytes(x, jnp) + WORD_BYTES * n


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


# ----------------------------------------------------------------------------- decoding
def packed_rows(freqs, cum):
    """Per row and symbol cum << 16 | freq ([R, K + 1] uint32; the padding, freq 0, is 0): what
    `find_in_rows` compares with, frequencies < 2^16 (P <= 16, two symbols or more per row)."""
    return np.where(freqs > 0, (cum[:, :-1].astype(np.uint32) << 16) | freqs, 0).astype(np.uint32)


def find_in_rows(rows):
    """A symbol finder over each lane's own packed row [N, K + 1] (`packed_rows`; narrow rows): one
    reduction finds the symbol's packed entry, the largest at or below the slot (cumulative
    frequencies increase; the padding, 0, never wins over entry 0). Its key is that entry:
    `index_in_rows` turns keys into symbol indices, for many steps at once."""

    def find(slot):
        m = jnp.max(jnp.where(rows <= ((slot << 16) | 0xFFFF)[:, None], rows, 0), axis=1)
        return m, m >> 16, m & 0xFFFF

    return find


def index_in_rows(keys, rows):
    """`find_in_rows`'s keys [...] -> symbol indices: the key's place in its row [..., K + 1]."""
    return jnp.sum((rows <= keys[..., None]) & (rows != 0), axis=-1, dtype=jnp.int32) - 1


def find_by_search(cum, rows):
    """A symbol finder by binary search in `cum` [R, K + 1] at each lane's row [N] (wide rows: a
    gather per halving instead of the whole row)."""
    width = cum.shape[1]
    flat, base = cum.reshape(-1), rows * width

    def find(slot):
        s = jnp.zeros_like(rows)
        for k in reversed(range((width - 1).bit_length())):
            probe = s + (1 << k)
            inside = probe < width
            s = jnp.where(inside & (jnp.take(flat, base + jnp.minimum(probe, width - 1)) <= slot), probe, s)
        c = jnp.take(flat, base + s)
        return s, c, jnp.take(flat, base + s + 1) - c  # s < width - 1: the last entry, 2^P, exceeds every slot

    return find


def lookup_table(freqs) -> np.ndarray:
    """Per row the symbol of each slot, flat uint16 [R << P] (P from the rows' sum 2^P): the
    decoder's one-gather symbol finder (`find_by_lookup`), the classic fast rANS decode."""
    freqs = np.asarray(freqs, np.int64)
    total = int(freqs[0].sum())
    return np.concatenate([np.repeat(np.arange(freqs.shape[1], dtype=np.uint16), row) for row in freqs])[
        : len(freqs) * total
    ]


def find_by_lookup(lookup, packed, rows, precision: int):
    """A symbol finder by table lookup: `lookup` (`lookup_table`) gives each lane's symbol at its
    slot in its row (`rows` [N]), `packed` (`packed_rows`, flattened) its cumulative and
    frequency: two gathers a step, whatever the rows' width."""
    width = packed.shape[0] // (lookup.shape[0] >> precision)

    def find(slot):
        s = jnp.take(lookup, (rows << precision) + slot.astype(jnp.int32)).astype(jnp.int32)
        p = jnp.take(packed, rows * width + s)
        return s, p >> 16, p & 0xFFFF

    return find


def decode_symbol(x, ptr, find, words, precision: int):
    """One step of every lane: x, ptr [N] (states; the index of each lane's next word in `words`
    [N, W]); `find` maps each lane's slot to (key, cumulative, frequency). Returns (x, ptr, key):
    the key is the symbol index or what identifies it (`find_in_rows`). A lane that reads past its
    words reads the last column; its ptr says so. States start as `unpack` gives them, ptr at 0."""
    slot = x & ((1 << precision) - 1)
    s, c, f = find(slot)
    x = f * (x >> precision) + slot - c
    need = x < L
    n, width = words.shape
    word = jnp.take(words.reshape(-1), jnp.arange(n) * width + jnp.minimum(ptr, width - 1))
    return jnp.where(need, (x << 16) | word, x), ptr + need.astype(ptr.dtype), s


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


def unpack(payloads, max_bytes: int, lanes: int = 0, columns: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streams -> (first states [lanes] uint32; words after the state [lanes, W] uint32, zero-padded
    to a power of two >= `columns`; words per stream [N]); `lanes` >= N rows, the rest state L and
    no words. ValueError for a stream that cannot be one: shorter than a
    state, longer than `max_bytes`, or a state written longer than it is."""
    n = np.fromiter(map(len, payloads), np.int64, len(payloads))
    head = np.where(n % 2, 3, 4)
    bad = (n < head) | (n > max_bytes)
    if bad.any():
        raise ValueError(f"{n[np.argmax(bad)]} bytes: an rANS stream here is 3..{max_bytes} bytes")
    counts = (n - head) // WORD_BYTES
    width = max(columns, 1 << int(counts.max(initial=1) - 1).bit_length())
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
    short = x[: len(payloads)] < np.where(head == 3, L, 1 << 24)
    if short.any():
        i = int(np.argmax(short))
        raise ValueError(f"{n[i]} bytes: its rANS state {x[i]:#x} is not written in its shortest form")
    return x, rows[:, 4:].view("<u2").astype(np.uint32), counts.astype(np.int32)
