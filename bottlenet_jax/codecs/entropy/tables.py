"""The factorized entropy codec's integer tables: what codes under the learned density, per channel,
element or neighbour state (entropy/factorized.py puts them in the model and the codec contract;
entropy/streams.py codes rANS streams under them, entropy/range_format.py the older range-coded ones).

The density (Ballé et al. 2018's factorized prior) lives in density.py.

Tables. Per channel the symbols between the floored lower and ceiled upper tail (where the CDF is
tail_mass/2 and 1 - tail_mass/2, found by bisection on the float64 density) get integer
frequencies (sum 2^precision, each >= 1); everything outside is one escape symbol followed by the
value coded uniformly on 16 bits. The frequencies come either from the density itself
(`build_tables`, evaluated in float64 numpy on the float32 parameters) or from the symbols the
trained encoder really emits on training data (`fit_tables`): a histogram per row with the
density's probabilities as a Dirichlet prior (`prior` pseudo-counts), over the symbols seen. Rows
(the context a symbol is coded in):
  channel     one per channel, as the density;
  element     one per position and channel of a fixed feature shape: a feature map's statistics
              depend on the position (Fashion-MNIST's background at the borders);
  neighbours  nine per element: the sign (below 0, 0, above 0) of the element above it in its
              channel and of the same position in the previous channel, both decoded before it
              (a causal context, as image codecs' context models use; decoding goes row by row).
Why fit at all: the density is trained on y + U(-1/2, 1/2) while the stream carries round(y - m),
whose distribution it only approximates, and a factorized density sees neither position nor
neighbours. Every kind is an exact model of the stream: what it costs is what `len()` measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from bottlenet_jax.codecs.entropy.density import likelihood, tails

ESC_BITS = 16  # escaped symbols are coded uniformly on this many bits (|q| < 2^15 always)
QMAX = 2 ** (ESC_BITS - 1) - 1
CONTEXTS = ("channel", "element", "neighbours")


# ----------------------------------------------------------------------------- integer tables
def states_per_element(context: str) -> int:
    """Rows per element and channel: 9 neighbour states for "neighbours", else 1."""
    return 9 if context == "neighbours" else 1


def sign_bucket(idx, zero, xp=np):
    """0 below symbol 0 (whose index is `zero`), 1 at it, 2 above it or escaped."""
    return xp.where(idx == zero, 1, xp.where(idx < zero, 0, 2))


def neighbour_states(idx, zero, xp=np):
    """Per element of symbol indices [..., h, w, C] (K_c: the escape) the state of its causal
    neighbours: 3 * b(the element above, same channel) + b(the same position, previous channel),
    b = 0 below symbol 0, 1 at it (or no neighbour), 2 above it or escaped. `zero`: per channel the
    index of symbol 0. Both neighbours are decoded before the element (channel-major, row by row)."""
    b = sign_bucket(idx, zero, xp)
    one = xp.ones_like(b)
    up = xp.concatenate([one[..., :1, :, :], b[..., :-1, :, :]], axis=-3)
    prev = xp.concatenate([one[..., :1], b[..., :-1]], axis=-1)
    return 3 * up + prev


def row_index(context: str, idx, zero, xp=np):
    """The table row (index into `Tables.freqs`) of each element of symbol indices [..., h, w, C]:
    c ("channel"), (i*w + j)*C + c ("element"), ((i*w + j)*C + c)*9 + state ("neighbours")."""
    h, w, c = idx.shape[-3:]
    if context == "channel":
        return xp.broadcast_to(xp.arange(c), idx.shape)
    element = xp.arange(h * w * c).reshape(h, w, c)
    if context == "element":
        return xp.broadcast_to(element, idx.shape)
    return element * 9 + neighbour_states(idx, zero, xp)


def context_of(rows: int, shape) -> str:
    """The context a table of `rows` rows codes features of `shape` ([h, w, C]) in, or ValueError:
    C rows per channel, h*w*C per element, 9*h*w*C per element and neighbour state (unambiguous for
    a known shape; with h*w = 1 "element" is "channel")."""
    h, w, c = (int(v) for v in shape)
    for context in CONTEXTS:
        if rows == (c if context == "channel" else h * w * c * states_per_element(context)):
            return context
    raise ValueError(
        f"entropy codec: {rows} table rows code no {h}x{w}x{c} features (per channel {c}, per element "
        f"{h * w * c}, per neighbour state {9 * h * w * c})"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Tables:
    """What sender and receiver share, as arrays: per channel the median, the lowest symbol of its
    table and its width K (the escape's index); per row the integer frequencies of its channel's
    symbols lower..lower+K-1 followed by the escape's, zero-padded to the widest row. Rows: one per
    channel, one per element of an h x w x C map, or nine per element (the states of its causal
    neighbours), ordered as `row_index`. `state()` is the codec's state; `Tables(**state)` reads it."""

    medians: np.ndarray  # float32 [C]
    lower: np.ndarray  # int32 [C]
    widths: np.ndarray  # int32 [C]
    freqs: np.ndarray  # int32 [rows, max K + 1], each row summing to 2^precision over its K + 1 entries

    def __post_init__(self):
        for k, dtype in (("medians", np.float32), ("lower", np.int32), ("widths", np.int32), ("freqs", np.int32)):
            object.__setattr__(self, k, np.asarray(getattr(self, k), dtype))
        c = self.medians.shape
        if self.medians.ndim != 1 or self.lower.shape != c or self.widths.shape != c or self.freqs.ndim != 2:
            raise ValueError("entropy tables: medians, lower, widths one per channel and a 2-D freqs are required")
        if self.freqs.shape[0] % c[0] or self.freqs.shape[1] <= self.widths.max(initial=0):
            raise ValueError(
                f"entropy tables: freqs {self.freqs.shape} do not fit {c[0]} channels of widths up to "
                f"{self.widths.max(initial=0)}"
            )

    @classmethod
    def from_rows(cls, medians, lower, rows, context: str) -> Tables:
        """From the tuples of tables a511a13 kept in a codec's settings (one tuple per row)."""
        s = states_per_element(context)
        widths = [len(rows[c * s]) - 1 for c in range(len(medians))]
        return cls(medians, lower, widths, _padded([np.asarray(r) for r in rows]))

    def to_bytes(self) -> bytes:
        """The tables in the binary form a sender ships once: C, the row count and the bytes per
        frequency (uint32), medians (float32), lower (int16), widths (uint16), then each row's K + 1
        frequencies minus 1 (uint16 when every frequency is <= 2^16, as at precision <= 16; the
        padding is 0, so a row's K + 1 is its count of non-zero entries)."""
        size = 2 if self.freqs.max(initial=1) <= 2**16 else 4
        head = [
            np.array([self.channels, len(self.freqs), size], "<u4"),
            self.medians.astype("<f4"),
            self.lower.astype("<i2"),
            self.widths.astype("<u2"),
        ]
        body = (self.freqs[self.freqs > 0] - 1).astype(f"<u{size}")
        return b"".join(a.tobytes() for a in head) + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, shape) -> Tables:
        """`to_bytes`'s output back, for features of `shape` ([h, w, C])."""
        c, n, size = (int(v) for v in np.frombuffer(data[:12], "<u4"))
        med = np.frombuffer(data[12 : 12 + 4 * c], "<f4")
        lower = np.frombuffer(data[12 + 4 * c : 12 + 6 * c], "<i2")
        widths = np.frombuffer(data[12 + 6 * c : 12 + 8 * c], "<u2").astype(np.int32)
        s = states_per_element(context_of(n, shape))
        lengths = np.repeat(np.tile(widths + 1, n // (c * s)), s) if s > 1 else np.tile(widths + 1, n // c)
        flat = np.frombuffer(data[12 + 8 * c :], f"<u{size}").astype(np.int32) + 1
        if flat.size != lengths.sum():
            raise ValueError(f"entropy tables: {flat.size} frequencies in the bytes, {lengths.sum()} expected")
        rows = np.split(flat, np.cumsum(lengths)[:-1])
        return cls(med, lower, widths, _padded(rows))

    def state(self) -> dict:
        return {"medians": self.medians, "lower": self.lower, "widths": self.widths, "freqs": self.freqs}

    @property
    def channels(self) -> int:
        return len(self.medians)

    @property
    def zero(self) -> np.ndarray:
        """Per channel the index of symbol 0."""
        return -self.lower.astype(np.int64)

    def context(self, shape) -> str:
        """ValueError unless these tables code features of `shape` ([h, w, C]); else their context."""
        if int(shape[-1]) != self.channels:
            raise ValueError(f"entropy codec: tables for {self.channels} channels, features have {shape[-1]}")
        return context_of(len(self.freqs), shape)

    def log2_probs(self, xp=np):
        """log2 P per row and symbol index [rows, max K + 1] (-inf at the padding): the tables' own
        ideal code length, for the graph's rate estimate (numpy or jax alike)."""
        f = xp.asarray(self.freqs).astype(xp.float32)
        return xp.log2(f) - xp.log2(xp.sum(f, axis=-1, keepdims=True))


def _pmfs(density: dict, medians, tail_mass: float, max_symbols: int):
    """(lowest symbol per channel, per channel the density's probabilities of its symbols followed
    by the escape's), in float64."""
    med = np.asarray(medians, np.float32).ravel()
    p64 = {k: np.asarray(v, np.float64) for k, v in density.items()}
    x_lo, x_hi = tails(p64, tail_mass)
    lo = np.minimum(np.floor(x_lo - med), 0).astype(np.int64)
    hi = np.maximum(np.ceil(x_hi - med), 0).astype(np.int64)
    half = max_symbols // 2
    lo, hi = np.maximum(lo, -half), np.minimum(hi, max_symbols - half - 1)
    pmfs = []
    for c in range(med.size):
        ks = np.arange(lo[c], hi[c] + 1, dtype=np.float64)
        pc = {k: v[c : c + 1] for k, v in p64.items()}
        pmf = likelihood(pc, (ks + np.float64(med[c]))[None, None, :], np)[0, 0]
        probs = np.append(pmf, max(0.0, 1.0 - pmf.sum()))
        pmfs.append(probs / probs.sum())
    return med, lo, pmfs


def integer_freqs(probs: np.ndarray, precision: int) -> np.ndarray:
    """Probabilities -> integer frequencies summing to 2^precision, each >= 1 (deterministic)."""
    total = 2**precision
    f = 1 + np.floor(probs * (total - probs.size)).astype(np.int64)
    f[np.argmax(probs)] += total - f.sum()
    return f


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def build_tables(density: dict, medians, tail_mass: float, precision: int, max_symbols: int) -> Tables:
    """Integer frequency tables from the float32 parameters, in float64 numpy (deterministic)."""
    med, lo, pmfs = _pmfs(density, medians, tail_mass, max_symbols)
    rows = [integer_freqs(p, precision) for p in pmfs]
    return Tables(med, lo, [len(r) - 1 for r in rows], _padded(rows))


def symbol_indices(q: np.ndarray, lower, widths) -> np.ndarray:
    """Symbols [..., C] -> their index in their channel's table (K_c for the escape)."""
    s = q.astype(np.int64) - np.asarray(lower, np.int64)
    k = np.asarray(widths, np.int64)
    return np.where((s < 0) | (s >= k), k, s)


def fit_tables(
    density: dict,
    medians,
    symbols: Iterable[np.ndarray],
    context: str,
    tail_mass: float,
    precision: int,
    max_symbols: int,
    prior: float,
) -> tuple[Tables, int]:
    """Tables fitted to batches of symbols [n, h, w, C] (round(y - m) of training features): per row
    (`context`: "channel", "element" or "neighbours") the histogram of the symbols' indices plus
    `prior` pseudo-counts spread as the density's probabilities, over the symbols seen within the
    density tables' support (the rest escaped). Returns (tables, samples counted)."""
    if context not in CONTEXTS:
        raise ValueError(f"context={context!r}: must be one of {', '.join(CONTEXTS)}")
    med, lo, pmfs = _pmfs(density, medians, tail_mass, max_symbols)
    widths = np.array([p.size - 1 for p in pmfs])
    c, per, width = med.size, states_per_element(context), int(widths.max()) + 1
    table, shape, n = None, None, 0
    for q in symbols:
        q = np.asarray(q)
        if q.ndim != 4 or q.shape[-1] != c or (shape and q.shape[1:] != shape):
            raise ValueError(f"fit_tables: symbols of shape {q.shape}, want [n, h, w, {c}] (all alike)")
        if table is None:
            shape = q.shape[1:]
            table = np.zeros((c if context == "channel" else int(np.prod(shape)) * per) * width)
        idx = symbol_indices(q, lo, widths)
        table += np.bincount((row_index(context, idx, -lo) * width + idx).ravel(), minlength=table.size)
        n += q.shape[0]
    if not n:
        raise ValueError("fit_tables: no symbols to fit the tables to")
    # Each channel's table spans the symbols seen (and 0); the density's mass beyond them joins the
    # escape's, so rarely seen tails cost an escape instead of table rows nobody uses.
    table = table.reshape(-1, width)
    channel_of = (np.arange(len(table)) // per) % c
    span = []
    for ch in range(c):
        seen = np.flatnonzero(table[channel_of == ch, : widths[ch]].sum(0))
        zero = -lo[ch]
        span.append((min(seen.min(initial=zero), zero), max(seen.max(initial=zero), zero) + 1))
    freqs = []
    for r, row in enumerate(table):
        ch = channel_of[r]
        (a, b), k, pmf = span[ch], widths[ch], pmfs[ch]
        p = np.append(row[a:b] + prior * pmf[a:b], row[k] + prior * (pmf[k] + pmf[:a].sum() + pmf[b:k].sum()))
        freqs.append(integer_freqs(p / p.sum(), precision))
    lower = [lo[ch] + span[ch][0] for ch in range(c)]
    return Tables(med, lower, [b - a for a, b in span], _padded(freqs)), n


def quantize_np(y: np.ndarray, medians) -> np.ndarray:
    """The transport's symbols: round(y - m) per channel, float32 arithmetic as in the graph. The
    medians are tiled over each sample first (numpy is slow over a short last axis)."""
    y = np.asarray(y, np.float32)
    if not np.isfinite(np.sum(y, dtype=np.float64)):
        raise ValueError("entropy codec: features are not finite")
    flat = y.reshape(len(y), -1) if y.ndim > 1 else y[None]
    m = np.tile(np.asarray(medians, np.float32), flat.shape[1] // len(medians))
    q = np.subtract(flat, m, dtype=np.float32)
    np.round(q, out=q)
    np.clip(q, -QMAX, QMAX, out=q)
    return q.astype(np.int32).reshape(y.shape)


def dequantize_np(q: np.ndarray, medians) -> np.ndarray:
    """Symbols back to features: q + m in float32, as the graph's y_hat."""
    flat = q.reshape(len(q), -1)
    m = np.tile(np.asarray(medians, np.float32), flat.shape[1] // len(medians))
    return np.add(flat, m, dtype=np.float32).reshape(q.shape)


# ----------------------------------------------------------------------------- the symbols' rows
def coding_order(a):
    """[N, h, w, C] -> [T, N], t = (c * h + i) * w + j (numpy or jax)."""
    return a.transpose(3, 1, 2, 0).reshape(-1, a.shape[0])


def freq_cum(q, freqs, cum, lower, widths, context, xp):
    """Symbols [N, h, w, C] -> (frequency, cumulative) of each in decoding order [T, N] (uint32),
    escaped [N, h, w, C] (numpy or jax)."""
    s = q - lower
    esc = (s < 0) | (s >= widths)
    idx = xp.where(esc, widths, s)
    rows = row_index(context, idx, -lower, xp)
    return coding_order(freqs[rows, idx]), coding_order(cum[rows, idx]), esc


def escape_tail(q: np.ndarray, lower, widths) -> np.ndarray:
    """One sample's escaped symbols [h, w, C] as the 16-bit words after its rANS words: decoding
    order, value + 2^15 (an empty array where none is escaped)."""
    v = coding_order(np.asarray(q)[None])[:, 0].astype(np.int64)
    ch = np.arange(v.size) // (v.size // len(lower))
    lo, k = np.asarray(lower, np.int64)[ch], np.asarray(widths, np.int64)[ch]
    return v[(v < lo) | (v >= lo + k)] + (1 << (ESC_BITS - 1))


def rans_streams_np(y, t: Tables, precision: int) -> list[bytes]:
    """Features [N, h, w, C] -> the factorized codec's rANS streams (entropy/streams.py's format) in
    numpy: symbols round(y - m), each coded under its row (`row_index`: channel, element or
    neighbour state), escapes after the rANS words. The same bytes as streams.Streams.encode (the
    host's compiled coder; tested), for the edge runtime, which runs without JAX."""
    from bottlenet_jax.codecs.coding import rans_np

    q = quantize_np(y, t.medians)
    freqs = t.freqs.astype(np.uint32)
    f, c, esc = freq_cum(
        q.astype(np.int64), freqs, rans_np.cumulative(freqs), t.lower, t.widths, t.context(q.shape[1:]), np
    )
    x, words, emitted = rans_np.encode_np(f, c, precision)
    tails = [escape_tail(s, t.lower, t.widths) if e.any() else None for s, e in zip(q, esc)]
    return rans_np.pack(x, words, emitted, tails)
