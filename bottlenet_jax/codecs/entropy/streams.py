"""The entropy codec's streams in batch rANS (rans.py): the format, the host coder, the graph's bytes.

One sample's stream: the rANS state (3 or 4 bytes, rans.py); then little-endian 16-bit words: the rANS words of its
symbol indices in decoding order (channel by channel, row by row, so that an element's causal
neighbours come before it), each coded under its row of the tables (tables.row_index); then
each escaped value as v + 2^15, in the same order. Its length, state + 2 * (rANS words + escapes)
bytes, the graph computes exactly in XLA (`stream_bytes`: no host callback).

The host codes a batch in one compiled call (`Streams`, on the CPU device): encoding is one scan
over the symbols; decoding scans channels, rows and columns, each image row's context rows computed
at once from the row above and the previous channel. A stream is accepted only if it is exactly what
the encoder writes for what it decodes to (rans.py: the state returns to L having read every rANS
word) and its escapes hold values the tables cannot code: a check, not a second encode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.coding import rans
from bottlenet_jax.codecs.entropy.tables import (
    ESC_BITS,
    QMAX,
    Tables,
    coding_order,
    context_of,
    escape_tail,
    freq_cum,
    sign_bucket,
    states_per_element,
)

ESC_OFFSET = 1 << (ESC_BITS - 1)
LANES = 256  # streams per compiled call; a batch is cut into calls of this many (fewer: `lanes_for`)


def max_bytes(shape) -> int:
    """The longest stream of features of `shape` ([h, w, C]): the state, a word per symbol and per escape."""
    return rans.HEAD_BYTES + 2 * rans.WORD_BYTES * int(np.prod(shape))


def stream_bytes(q, state: dict, precision: int):
    """In the graph: the exact length in bytes of each sample's stream, q [..., h, w, C] int32."""
    lead, shape = q.shape[:-3], q.shape[-3:]
    # the barrier: tables given as constants would otherwise be constant-folded through the cumsum
    # (minutes of XLA time for a 14x14x8x9-row table)
    freqs = jax.lax.optimization_barrier(jnp.asarray(state["freqs"]).astype(jnp.uint32))
    lower, widths = (jnp.asarray(state[k], jnp.int32) for k in ("lower", "widths"))
    context = context_of(state["freqs"].shape[0], shape)
    cum = rans.cumulative(freqs, jnp)
    f, c, esc = freq_cum(q.reshape(-1, *shape), freqs, cum, lower, widths, context, jnp)
    n = rans.stream_bytes(f, c, precision) + rans.WORD_BYTES * jnp.sum(esc, axis=(1, 2, 3), dtype=jnp.int32)
    return n.reshape(lead)


def stream_bytes_np(q: np.ndarray, t: Tables, precision: int) -> np.ndarray:
    """`stream_bytes` on the host (for a callback, which must not call back into JAX)."""
    freqs = t.freqs.astype(np.uint32)
    context = t.context(q.shape[1:])
    f, c, esc = freq_cum(q.astype(np.int64), freqs, rans.cumulative(freqs), t.lower, t.widths, context, np)
    return rans.stream_bytes_np(f, c, precision) + rans.WORD_BYTES * esc.sum(axis=(1, 2, 3), dtype=np.int32)


def lanes_for(n: int) -> int:
    """Lanes of a compiled call for n streams: 1, 8, 64 or LANES (few shapes to compile)."""
    return next(b for b in (1, 8, 64, LANES) if b >= n)


def columns_for(lanes: int, max_bytes: int) -> int:
    """The narrowest words of a call (rans.widths' first): big calls (an evaluation's) get tight
    widths; small ones (a server's) the longest stream's, one program per lane count to compile."""
    return 16 if lanes == LANES else rans.longest_words(max_bytes)


BLOCKS_LIMIT = 1 << 24  # most table entries held per position (positions x states x row width)
NARROW = 32  # widest table row decoded by comparing the slot with the whole row


@functools.partial(jax.jit, static_argnames=("context", "shape", "precision", "blocked", "row_widths"))
def _decode(x0, words, table, cum, lower, widths, medians, context, shape, precision, blocked, row_widths):
    """First states [N], words [N, W] -> ([final states, words read, escapes] [3, N] uint32,
    features q + m [N, h, w, C] in float32 (NaN where a value was escaped: the host puts it in)).

    Scans channels, rows, columns. Narrow tables: each column's candidate rows (one, or its nine
    neighbour states: `table` [T, S * (K + 1)], or taken here from all the packed rows, `table`
    [R, K + 1], rans.packed_rows) come in with the scan, each lane picks its own by
    a one-hot over the nine once per image row, so no step gathers from the whole table; each
    channel's rows cut to its own width (`row_widths`, static: a loop per channel is compiled);
    wide tables: a binary search in it."""
    h, w, c_ = shape
    n = words.shape[0]
    per = states_per_element(context)
    zero = -lower
    if context == "channel":
        rows = jnp.broadcast_to(jnp.arange(c_, dtype=jnp.int32)[:, None, None, None], (c_, h, w, 1))
    else:
        element = jnp.arange(h * w * c_, dtype=jnp.int32).reshape(h, w, c_) * per
        rows = jnp.transpose(element, (2, 0, 1))[..., None] + jnp.arange(per, dtype=jnp.int32)  # [C, h, w, S]
    narrow = cum.shape[1] <= NARROW
    if not narrow:
        blocks = rows[..., 0]  # [C, h, w]: rows of the first state
    elif blocked:
        blocks = table.reshape(c_, h, w, per, -1)
    else:
        blocks = jnp.take(table, rows, axis=0)  # [C, h, w, S, K + 1]

    def symbol(carry, lane_rows):
        find = rans.find_in_rows(lane_rows) if narrow else rans.find_by_search(cum, lane_rows)
        x, ptr, key = rans.decode_symbol(*carry, find, words, precision)
        return (x, ptr), key

    def image_row(carry, xs):
        coder, up = carry
        prev, blocks_row, z = xs
        state = 3 * up + prev if per == 9 else jnp.zeros_like(up)  # [w, N]
        if not narrow:
            lane_rows = blocks_row[:, None] + state  # each lane's row index
        elif per == 1:
            lane_rows = jnp.broadcast_to(blocks_row[:, None, 0], (w, n, blocks_row.shape[-1]))
        else:  # each lane's row among its column's nine, for the whole image row at once
            pick = state[:, :, None, None] == jnp.arange(per)[:, None]  # [w, N, S, 1]
            lane_rows = jnp.sum(jnp.where(pick, blocks_row[:, None], 0), axis=2, dtype=jnp.uint32)
        coder, keys = jax.lax.scan(symbol, coder, lane_rows)
        s = rans.index_in_rows(keys, lane_rows) if narrow else keys
        return (coder, sign_bucket(s, z, jnp)), s

    def channel(carry, xs):
        coder, prev = carry
        blocks_c, z = xs
        top = jnp.ones((w, n), jnp.int32)
        (coder, _), s = jax.lax.scan(image_row, (coder, top), (prev, blocks_c, jnp.broadcast_to(z, (h,))))
        return (coder, sign_bucket(s, z, jnp)), s

    carry, planes = ((x0, jnp.zeros(n, jnp.int32)), jnp.ones((h, w, n), jnp.int32)), []
    for c in range(c_):
        carry, s = channel(carry, (blocks[c][..., : row_widths[c]] if narrow else blocks[c], zero[c]))
        planes.append(s)
    coder = carry[0]
    s = jnp.transpose(jnp.stack(planes), (3, 1, 2, 0))
    escaped = s == widths
    features = jnp.where(escaped, jnp.nan, (s + lower).astype(jnp.float32) + medians)
    n_esc = jnp.sum(escaped, axis=(1, 2, 3), dtype=jnp.uint32)
    return jnp.stack([coder[0], coder[1].astype(jnp.uint32), n_esc]), features


class Streams:
    """The rANS coder of one Tables for features of one shape ([h, w, C]); its arrays live on the CPU."""

    def __init__(self, tables: Tables, shape, precision: int):
        rans.check_precision(precision)
        self.context, self.shape, self.precision, self.tables = tables.context(shape), tuple(shape), precision, tables
        sums = tables.freqs.astype(np.int64).sum(axis=1)
        if np.any(sums != 1 << precision):
            raise ValueError(f"entropy tables: rows sum to {np.unique(sums)[:3]}, not 2^{precision}")
        self.device = jax.devices("cpu")[0]
        freqs = tables.freqs.astype(np.uint32)
        cum = rans.cumulative(freqs)
        self._lower, self._widths = tables.lower.astype(np.int32), tables.widths.astype(np.int32)
        self._packed = rans.packed_rows(freqs, cum)
        h, w, c_ = self.shape
        per, width = states_per_element(self.context), self._packed.shape[1]
        channel = np.tile(np.arange(c_, dtype=np.int32), h * w)
        element = np.arange(h * w * c_, dtype=np.int32)
        rows = channel[:, None] if self.context == "channel" else element[:, None] * per + np.arange(per)
        if rows.size * width <= BLOCKS_LIMIT and len(self._packed) > c_:
            # per position (decoding order) its candidate rows, one after another: a step's lookup table
            blocks = self._packed[rows].reshape(h, w, c_, per * width).transpose(2, 0, 1, 3)
            self._table = jax.device_put(blocks.reshape(h * w * c_, -1), self.device)
            self._sub_dtype = np.uint8 if per * width <= 256 else np.int32
            self._base = None
        else:  # a symbol's entry indexes all the rows (only the rows' first entry is per position)
            self._table = jax.device_put(self._packed, self.device)
            self._sub_dtype = np.int32
            self._base = (rows[:, 0] * width).astype(np.int32)
        arrays = (cum, self._lower, self._widths, tables.medians.astype(np.float32))
        self._on_cpu = [self._table] + [jax.device_put(a, self.device) for a in arrays]
        self._flat = {  # per element of the map in its natural order (i, j, c)
            "lower": self._lower[channel],
            "widths": self._widths[channel].view(np.uint32),
            "first_channel": channel == 0,
        }

    def _chunks(self, n: int):
        for a in range(0, n, LANES):
            yield a, min(n, a + LANES)

    def _coded(self, q: np.ndarray, symbols=None):
        """Symbols [N, h, w, C] int32 -> (each one's entry in its step's block, in decoding order
        [T, N], escaped [N]) in numpy (faster on a CPU than XLA), 32 samples at a time (each pass
        over them stays in the cache); `symbols` (features -> symbols) applied to each 32 first."""
        parts = [self._coded_part(symbols(q[i : i + 32]) if symbols else q[i : i + 32]) for i in range(0, len(q), 32)]
        return np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts])

    def _coded_part(self, q: np.ndarray):
        """`_coded` of a few samples: entry = state * (K + 1) + symbol index, state = 3 * (bucket
        above) + (bucket in the previous channel) for neighbour tables, else 0. Per-channel constants
        are tiled over the map (numpy is slow over a short last axis); 8-bit arrays where they fit."""
        h, w, c_ = self.shape
        flat = q.reshape(len(q), -1)
        sub = np.empty(flat.shape, self._sub_dtype)
        np.minimum((flat - self._flat["lower"]).view(np.uint32), self._flat["widths"], out=sub, casting="unsafe")
        esc = (sub == self._flat["widths"]).any(axis=1)
        if self.context == "neighbours":
            width = self._packed.shape[1]
            b = np.empty(flat.shape, self._sub_dtype)
            np.sign(flat, out=b, casting="unsafe")  # -1 (255 in uint8), 0, 1: below, at, above 0
            b += 1  # buckets 0, 1, 2
            for k in np.flatnonzero(esc):
                b[k][sub[k] == self._flat["widths"]] = 2  # an escape counts as above
            up, prev = np.ones_like(b), np.ones_like(b)  # 1: no neighbour
            up[:, w * c_ :] = b[:, : -w * c_]
            prev[:, 1:] = b[:, :-1]
            prev[:, self._flat["first_channel"]] = 1
            up *= 3 * width
            prev *= width
            sub += up
            sub += prev
        if self._base is not None:
            sub += self._base
        return coding_order(sub.reshape(q.shape)), esc

    def encode(self, q: np.ndarray, symbols=None) -> list[bytes]:
        """Symbols [N, h, w, C] -> one stream per sample; with `symbols`, q are features and
        `symbols` (features -> int32 symbols) makes them, a few samples at a time."""
        if symbols is None:
            q = np.asarray(q, np.int32)
        out = []
        for a, b in self._chunks(len(q)):
            sub, esc = self._coded(q[a:b], symbols)
            if lanes_for(b - a) > b - a:
                sub = np.pad(sub, ((0, 0), (0, lanes_for(b - a) - (b - a))))
            table = self._table if self._base is None else self._table.reshape(-1)
            x, words, emitted = jax.device_get(rans.encode_entries(sub, table, self.precision))  # on the table's CPU
            tails = [None] * (b - a)
            for k in np.flatnonzero(esc):
                one = q[a + k : a + k + 1]
                tails[k] = escape_tail((symbols(one) if symbols else one)[0], self._lower, self._widths)
            out += rans.pack(x[: b - a], words, emitted, tails)
        return out

    def decode(self, payloads) -> np.ndarray:
        """Streams -> features q + m [N, h, w, C] float32 (the graph's y_hat); ValueError naming the
        first stream that is not one."""
        out, errors = self.decode_each(payloads)
        bad = next((e for e in errors if e is not None), None)
        if bad is not None:
            raise bad
        return out

    def decode_each(self, payloads) -> tuple[np.ndarray, list]:
        """Streams -> (features [N, h, w, C] float32, per stream None or the ValueError saying why it
        is not one, its features then zeros): a bad stream in a batch costs the others nothing."""
        h, w, c_ = self.shape
        limit = max_bytes(self.shape)
        errors = [None if e is None else ValueError(e) for e in rans.stream_errors(payloads, limit)]
        good = [i for i, e in enumerate(errors) if e is None]
        out = np.zeros((len(payloads), h, w, c_), np.float32)
        for a in range(0, len(good), LANES):
            idx = good[a : a + LANES]
            m, lanes = len(idx), lanes_for(len(idx))
            x0, words, counts = rans.unpack([payloads[i] for i in idx], limit, lanes, columns_for(lanes, limit))
            (x, ptr, n_esc), q = jax.device_get(self._run(x0, words))  # on the tables' CPU
            ok = (x[:m] == rans.L) & (ptr[:m] + n_esc[:m] == counts)
            out[idx] = q[:m]
            for k in range(m):
                i = idx[k]
                if not ok[k]:
                    errors[i] = ValueError(
                        f"stream {i} ({len(payloads[i])} bytes) is not an rANS encoding of {h}x{w}x{c_} symbols "
                        "under this model's tables"
                    )
                    out[i] = 0
                elif n_esc[k]:
                    try:
                        self._escapes(out[i], words[k, ptr[k] : ptr[k] + n_esc[k]], i)
                    except ValueError as e:
                        errors[i], out[i] = e, 0
        return out, errors

    def warm_up(self, batches) -> None:
        """Compile the decoder for every call a batch of one of these sizes can make: each lane
        count and each width of words (rans.widths), so that no stream compiles one later."""
        for lanes in sorted({lanes_for(n) for n in batches}):
            for width in rans.widths(max_bytes(self.shape), columns_for(lanes, max_bytes(self.shape))):
                x0 = np.full(lanes, rans.L, np.uint32)
                jax.block_until_ready(self._run(x0, np.zeros((lanes, width), np.uint32)))

    def _run(self, x0, words):
        return _decode(
            x0,
            words,
            *self._on_cpu,
            self.context,
            self.shape,
            self.precision,
            self._base is None,
            tuple(int(k) + 1 for k in self._widths),
        )

    def _escapes(self, features: np.ndarray, tail: np.ndarray, i: int) -> None:
        """Put a stream's escaped values (its tail, decoding order) where `features` [h, w, C] holds
        NaN; ValueError for a value the tables code, or one beyond QMAX."""
        h, w, _ = self.shape
        pos = np.flatnonzero(coding_order(np.isnan(features)[None])[:, 0])  # decoding order, as the tail
        ch = pos // (h * w)
        v = tail.astype(np.int64) - ESC_OFFSET
        if np.any((v < -QMAX) | ((v >= self._lower[ch]) & (v < self._lower[ch] + self._widths[ch]))):
            raise ValueError(f"stream {i}: an escaped value the tables code, or one beyond ±{QMAX}")
        features[(pos // w) % h, pos % w, ch] = v.astype(np.float32) + self.tables.medians[ch]
