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

from bottlenet_jax.codecs.coding.rans_np import (  # noqa: F401  (the format, re-exported for its users)
    FIXED_BYTES,
    HEAD_BYTES,
    MAX_PRECISION,
    WORD_BYTES,
    L,
    check_precision,
    cumulative,
    encode_np,
    head_bytes,
    longest_words,
    lookup_table,
    pack,
    packed_rows,
    stream_bytes_np,
    stream_errors,
    unpack,
    widths,
)
from bottlenet_jax.codecs.straight_through import match_varying


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


# ----------------------------------------------------------------------------- decoding
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
