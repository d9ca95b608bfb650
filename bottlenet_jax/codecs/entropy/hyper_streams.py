"""The hyperprior codec's streams: z's symbols then y's residuals, in one batch-rANS stream per sample.

Format (coding/rans.py's): the final rANS state (3 or 4 bytes), then little-endian 16-bit words:
the rANS words of z's symbols (channel by channel, row by row), each under its channel's table;
then of y's residuals, each under the row of its element's scale level (hyper_model.py: the
symbols and rows); then each escaped residual as r + 2^15, in the same order.

Coders: the host's encodes a batch in one compiled call (symbols, rows, rans.encode_entries) and
decodes in one: z's symbols, the synthesis, then y's residuals, each step one lookup in the lane's
own row (rans.find_by_lookup); the graph computes the exact length of each stream (`stream_bytes`:
no host callback). A stream is accepted only if it is exactly what the encoder writes for what it
decodes to (rans.py's check) and its escapes hold values the tables cannot code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.coding import rans
from bottlenet_jax.codecs.entropy.hyper_model import (  # noqa: F401  (the model, re-exported for the codec)
    ESC_OFFSET,
    Structure,
    dequantize,
    entries,
    max_bytes,
    part,
    rows_table,
    stream_bytes_np,
)
from bottlenet_jax.codecs.entropy.streams import LANES, columns_for, lanes_for
from bottlenet_jax.codecs.entropy.tables import QMAX, coding_order


def stream_bytes(qz, r, level, state: dict, precision: int):
    """In the graph: the exact length in bytes of each sample's stream (leading axes kept)."""
    lead = r.shape[:-3]
    qz, r, level = (v.reshape(-1, *v.shape[-3:]) for v in (qz, r, level))
    # the barrier: tables given as constants would otherwise be constant-folded through the cumsum
    freqs = jax.lax.optimization_barrier(rows_table(state, jnp).astype(jnp.uint32))
    cum = rans.cumulative(freqs, jnp)
    rows, idx, esc = entries(qz, r, level, state, jnp)
    n = rans.stream_bytes(freqs[rows, idx], cum[rows, idx], precision)
    return (n + rans.WORD_BYTES * jnp.sum(esc, axis=(1, 2, 3), dtype=jnp.int32)).reshape(lead)


def _code(qz, r, level, state, table, precision: int):
    rows, idx, esc = entries(qz, r, level, state, jnp)
    width = table.shape[0] // (len(state["z_lower"]) + len(state["y_half"]))
    return (*rans.encode_entries(rows * width + idx, table, precision), r, esc)


@functools.partial(jax.jit, static_argnames=("structure", "precision"))
def _encode(y, state, table, structure: Structure, precision: int):
    """Features [N, h, w, C] -> (final states [N], words, emitted bits: rans.encode_entries's;
    residuals r and escaped [N, h, w, C]): symbols, rows and the rANS scan in one compiled call."""
    qz, r, level, _ = structure.symbols(y, state, jnp)
    return _code(qz, r, level, state, table, precision)


@functools.partial(jax.jit, static_argnames=("structure", "precision"))
def _encode_symbols(qz, r, state, table, structure: Structure, precision: int):
    """`_encode` of given symbols (qz, r): the levels from qz, as the decoder computes them."""
    level, _ = structure.synthesize(qz, part(state, "hs_"), jnp)
    return _code(qz, r, level, state, table, precision)


def _padded(a: np.ndarray, lanes: int) -> np.ndarray:
    return np.pad(a, ((0, lanes - len(a)),) + ((0, 0),) * (a.ndim - 1))


@functools.partial(jax.jit, static_argnames=("structure", "precision"))
def _decode(x0, words, lookup, table, state, structure: Structure, precision: int):
    """First states [N], words [N, W] -> ([final states, words read, escapes] [3, N] uint32, z's
    symbols, residuals [N, h, w, C] int32 (0 where escaped), escaped, level, mean). Each step
    finds its symbol by one lookup in its lane's row (rans.find_by_lookup)."""
    n = words.shape[0]
    hz, wz, cz = structure.z_shape
    h, w, c = structure.shape

    def symbol(carry, rows):
        x, ptr, s = rans.decode_symbol(*carry, rans.find_by_lookup(lookup, table, rows, precision), words, precision)
        return (x, ptr), s

    zrows = jnp.broadcast_to(jnp.repeat(jnp.arange(cz, dtype=jnp.int32), hz * wz)[:, None], (cz * hz * wz, n))
    carry, zidx = jax.lax.scan(symbol, (x0, jnp.zeros(n, jnp.int32)), zrows)
    qz = jnp.transpose(zidx.reshape(cz, hz, wz, n), (3, 1, 2, 0)) + state["z_lower"]
    level, mean = structure.synthesize(qz, part(state, "hs_"), jnp)
    carry, yidx = jax.lax.scan(symbol, carry, coding_order(cz + level))
    idx = jnp.transpose(yidx.reshape(c, h, w, n), (3, 1, 2, 0))
    k = state["y_half"][level]
    escaped = idx == 2 * k + 1
    n_esc = jnp.sum(escaped, axis=(1, 2, 3), dtype=jnp.uint32)
    return (
        jnp.stack([carry[0], carry[1].astype(jnp.uint32), n_esc]),
        qz,
        jnp.where(escaped, 0, idx - k),
        escaped,
        level,
        mean,
    )


class Streams:
    """The hyperprior's rANS coder for one state and one `Structure`; its arrays live on the CPU
    (the host's coder: a batch encoded or decoded in one compiled call each)."""

    def __init__(self, state: dict, structure: Structure, precision: int):
        rans.check_precision(precision)
        freqs = rows_table(state)
        sums = freqs.astype(np.int64).sum(axis=1)
        if np.any(sums != 1 << precision):
            raise ValueError(f"hyperprior tables: rows sum to {np.unique(sums)[:3]}, not 2^{precision}")
        self.structure, self.precision, self.state = structure, precision, state
        cum = rans.cumulative(freqs.astype(np.uint32))
        cpu = jax.devices("cpu")[0]
        self._table = jax.device_put(rans.packed_rows(freqs.astype(np.uint32), cum).reshape(-1), cpu)
        self._lookup = jax.device_put(rans.lookup_table(freqs), cpu)
        self._state = jax.device_put({k: np.asarray(v) for k, v in state.items()}, cpu)
        self._half = np.asarray(state["y_half"], np.int64)

    def encode(self, y: np.ndarray) -> list[bytes]:
        """Features [N, h, w, C] -> one stream per sample."""
        y = np.asarray(y, np.float32)
        out = []
        for a in range(0, len(y), LANES):
            m, lanes = len(y[a : a + LANES]), lanes_for(len(y[a : a + LANES]))
            args = (self._state, self._table, self.structure, self.precision)
            out += self._pack(_encode(_padded(y[a : a + LANES], lanes), *args), m)
        return out

    def encode_symbols(self, qz: np.ndarray, r: np.ndarray) -> list[bytes]:
        """Symbols (z's [N, hz, wz, Cz] within their tables, y's residuals [N, h, w, C]) -> their
        streams: what `decode_symbols` reads back."""
        qz, r = np.asarray(qz, np.int32), np.asarray(r, np.int32)
        out = []
        for a in range(0, len(r), LANES):
            m, lanes = len(r[a : a + LANES]), lanes_for(len(r[a : a + LANES]))
            args = (self._state, self._table, self.structure, self.precision)
            out += self._pack(
                _encode_symbols(_padded(qz[a : a + LANES], lanes), _padded(r[a : a + LANES], lanes), *args), m
            )
        return out

    @staticmethod
    def _pack(coded, m: int) -> list[bytes]:
        x, words, emitted, r, esc = jax.device_get(coded)
        tails = [None] * m
        for k in np.flatnonzero(esc[:m].any(axis=(1, 2, 3))):
            tails[k] = coding_order(r[k : k + 1])[coding_order(esc[k : k + 1])] + ESC_OFFSET
        return rans.pack(x[:m], words, emitted, tails)

    def decode(self, payloads) -> np.ndarray:
        """Streams -> y_hat [N, h, w, C] float32 (the graph's); ValueError naming the first stream
        that is not one."""
        _, r, mean = self.decode_symbols(payloads)
        return dequantize(r, mean)

    def decode_each(self, payloads) -> tuple[np.ndarray, list]:
        """Streams -> (y_hat [N, h, w, C] float32, per stream None or the ValueError saying why it
        is not one, its y_hat then zeros): a bad stream in a batch costs the others nothing."""
        _, r, mean, errors = self._symbols(payloads)
        return dequantize(r, mean), errors

    def decode_symbols(self, payloads):
        """Streams -> (z's symbols, y's residuals, means in 1/16), int32; ValueError naming the first
        stream that is not one."""
        *out, errors = self._symbols(payloads)
        bad = next((e for e in errors if e is not None), None)
        if bad is not None:
            raise bad
        return tuple(out)

    def _symbols(self, payloads):
        """`decode_symbols` stream by stream: (qz, r, mean, errors), zeros where a stream is bad."""
        s = self.structure
        limit = max_bytes(s.shape, s.z_shape)
        errors = [None if e is None else ValueError(e) for e in rans.stream_errors(payloads, limit)]
        good = [i for i, e in enumerate(errors) if e is None]
        n = len(payloads)
        qz_all, r_all, mean_all = (np.zeros((n, *shape), np.int32) for shape in (s.z_shape, s.shape, s.shape))
        for a in range(0, len(good), LANES):
            idx = good[a : a + LANES]
            m, lanes = len(idx), lanes_for(len(idx))
            x0, words, counts = rans.unpack([payloads[i] for i in idx], limit, lanes, columns_for(lanes, limit))
            coder, qz, r, escaped, level, mean = jax.device_get(self._run(x0, words))
            x, ptr, n_esc = (v[:m] for v in coder)
            ok = (x == rans.L) & (ptr + n_esc == counts)
            qz_all[idx], r_all[idx], mean_all[idx] = qz[:m], r[:m], mean[:m]
            for k in range(m):
                i = idx[k]
                if not ok[k]:
                    errors[i] = ValueError(
                        f"stream {i} ({len(payloads[i])} bytes) is not an rANS encoding of "
                        f"{'x'.join(map(str, s.shape))} features under this model's tables"
                    )
                elif n_esc[k]:
                    try:
                        self._escapes(r_all[i], escaped[k], level[k], words[k, ptr[k] : ptr[k] + n_esc[k]], i)
                    except ValueError as e:
                        errors[i] = e
                if errors[i] is not None:
                    qz_all[i], r_all[i], mean_all[i] = 0, 0, 0
        return qz_all, r_all, mean_all, errors

    def warm_up(self, batches) -> None:
        """Compile the decoder for every call a batch of one of these sizes can make: each lane
        count and each width of words (rans.widths), so that no stream compiles one later."""
        s = self.structure
        for lanes in sorted({lanes_for(n) for n in batches}):
            limit = max_bytes(s.shape, s.z_shape)
            for width in rans.widths(limit, columns_for(lanes, limit)):
                x0 = np.full(lanes, rans.L, np.uint32)
                jax.block_until_ready(self._run(x0, np.zeros((lanes, width), np.uint32)))

    def _run(self, x0, words):
        return _decode(x0, words, self._lookup, self._table, self._state, self.structure, self.precision)

    def _escapes(self, r, escaped, level, tail, i: int) -> None:
        """Put a stream's escaped residuals (its tail, decoding order) where `escaped` marks them;
        ValueError for a value its level's table codes, or one beyond QMAX."""
        pos = np.flatnonzero(coding_order(escaped[None])[:, 0])  # decoding order, as the tail
        v = tail.astype(np.int64) - ESC_OFFSET
        k = coding_order(self._half[level][None])[pos, 0]
        if np.any((np.abs(v) > QMAX) | (np.abs(v) <= k)):
            raise ValueError(f"stream {i}: an escaped residual its table codes, or one beyond ±{QMAX}")
        flat = coding_order(r[None])[:, 0].copy()
        flat[pos] = v
        h, w, c = self.structure.shape
        r[...] = np.transpose(flat.reshape(c, h, w), (1, 2, 0))
