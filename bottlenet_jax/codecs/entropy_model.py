"""The entropy codec's probability model: the learned density, the integer tables that code under
it, and the range-coded streams (codecs/entropy.py puts them in the model and the codec contract).

Density (Ballé et al. ICLR 2018, appendix 6.1): per channel c a monotone map L_c: R -> R,
    L_c = f_K o ... o f_1,   f_k(x) = g_k(softplus(H_k) x + b_k),   g_k(x) = x + tanh(a_k) * tanh(x),
with the last layer affine; the CDF is sigmoid(L_c). softplus(H) >= 0 and tanh(a) >= -1 make every
layer non-decreasing, so the CDF is monotone, 0 at -inf and 1 at +inf. The probability of an integer
symbol k is sigmoid(L(k + 1/2)) - sigmoid(L(k - 1/2)).

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

Streams. constriction's range coder codes the channels one after another into one stream per
sample, escapes after each channel; with rows finer than the channel each symbol is coded under
its own row (constriction's categorical model family).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

ESC_BITS = 16  # escaped symbols are coded uniformly on this many bits (|q| < 2^15 always)
QMAX = 2 ** (ESC_BITS - 1) - 1
CONTEXTS = ("channel", "element", "neighbours")


# ----------------------------------------------------------------------------- the density
def _softplus(x, xp):
    return jnp.logaddexp(x, 0.0) if xp is jnp else np.logaddexp(x, 0.0)


def logits_cumulative(params: dict, x, xp=jnp):
    """L(x) for x [C, 1, N] -> [C, 1, N] (numpy or jax alike: the tables and the graph share it)."""
    n = sum(1 for k in params if k.startswith("matrix_"))
    for i in range(n):
        x = xp.matmul(_softplus(params[f"matrix_{i}"], xp), x) + params[f"bias_{i}"]
        if i < n - 1:
            x = x + xp.tanh(params[f"factor_{i}"]) * xp.tanh(x)
    return x


def _sigmoid(x, xp):
    return jax.nn.sigmoid(x) if xp is jnp else 0.5 * (1.0 + np.tanh(0.5 * x))


def likelihood(params: dict, y, xp=jnp):
    """P(round bin of y) = CDF(y + 1/2) - CDF(y - 1/2) for y [C, 1, N]; computed on the side of the
    median where the sigmoids are not both near 1 (no cancellation in the upper tail)."""
    lower = logits_cumulative(params, y - 0.5, xp)
    upper = logits_cumulative(params, y + 0.5, xp)
    sign = -xp.sign(lower + upper)
    return xp.abs(_sigmoid(sign * upper, xp) - _sigmoid(sign * lower, xp))


def init_density(key, channels: int, filters=(3, 3, 3), init_scale: float = 10.0) -> dict:
    """Ballé's initialisation: L starts as a wide logistic-like ramp of scale ~init_scale."""
    sizes = (1, *filters, 1)
    scale = init_scale ** (1.0 / (len(filters) + 1))
    out = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i in range(len(sizes) - 1):
        w = np.log(np.expm1(1.0 / scale / sizes[i + 1]))
        out[f"matrix_{i}"] = jnp.full((channels, sizes[i + 1], sizes[i]), w, jnp.float32)
        out[f"bias_{i}"] = jax.random.uniform(keys[i], (channels, sizes[i + 1], 1), jnp.float32, -0.5, 0.5)
        if i < len(sizes) - 2:
            out[f"factor_{i}"] = jnp.zeros((channels, sizes[i + 1], 1), jnp.float32)
    return out


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


@dataclasses.dataclass(frozen=True)
class Tables:
    """What sender and receiver share: per channel the median and the lowest symbol of its table;
    per row the integer frequencies of its channel's symbols lower..lower+K-1 followed by the
    escape symbol's. Rows (`context`): one per channel, one per element of an h x w x C map, or
    nine per element (the states of its causal neighbours); `row_index` orders them."""

    medians: tuple  # float32 values, one per channel
    lower: tuple  # int per channel
    freqs: tuple  # per row a tuple of K + 1 ints (K of its channel), summing to 2^precision
    context: str = "channel"

    @property
    def channels(self) -> int:
        return len(self.medians)

    @property
    def widths(self) -> np.ndarray:
        """K per channel (the escape's index)."""
        c = self.channels
        return np.array([len(self.freqs[i * states_per_element(self.context)]) - 1 for i in range(c)])

    @property
    def zero(self) -> np.ndarray:
        """Per channel the index of symbol 0."""
        return -np.asarray(self.lower, np.int64)

    def check_shape(self, shape) -> None:
        """ValueError unless these tables code features of `shape` ([h, w, C])."""
        h, w, c = shape
        if c != self.channels:
            raise ValueError(f"entropy codec: tables for {self.channels} channels, features have {c}")
        want = c if self.context == "channel" else h * w * c * states_per_element(self.context)
        if len(self.freqs) != want:
            raise ValueError(
                f"entropy codec: {len(self.freqs)} {self.context} tables, features {h}x{w}x{c} need {want}"
            )

    @functools.cached_property
    def models(self):
        """Per channel one categorical model (per-channel tables)."""
        import constriction

        cat = constriction.stream.model.Categorical
        return [cat(np.asarray(f, np.float64), perfect=False) for f in self.freqs]

    @functools.cached_property
    def rows(self) -> list[np.ndarray]:
        """Per channel its rows' frequencies, float64 [h*w*S, K + 1], row (i*w + j)*S + state."""
        c, s = self.channels, states_per_element(self.context)
        out = []
        for ch in range(c):
            picked = [self.freqs[(e * c + ch) * s + k] for e in range(len(self.freqs) // (c * s)) for k in range(s)]
            out.append(np.asarray(picked, np.float64))
        return out

    @functools.cached_property
    def family(self):
        import constriction

        return constriction.stream.model.Categorical(perfect=False)

    @functools.cached_property
    def escape_model(self):
        import constriction

        return constriction.stream.model.Uniform(2**ESC_BITS)

    def log2_probs(self) -> np.ndarray:
        """log2 P per row and symbol index, float32 [rows, max K + 1], padded with 0: the tables' own
        ideal code length, for the graph's rate estimate."""
        width = max(len(f) for f in self.freqs)
        out = np.zeros((len(self.freqs), width), np.float32)
        for r, f in enumerate(self.freqs):
            f = np.asarray(f, np.float64)
            out[r, : f.size] = np.log2(f / f.sum())
        return out


def tails(density: dict, tail_mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel the x where the CDF is tail_mass/2 and 1 - tail_mass/2 (float64 bisection on L,
    which is monotone): the range the integer tables cover."""
    t = np.log(2.0 / tail_mass - 1.0)
    c = next(iter(density.values())).shape[0]
    out = []
    for target in (-t, t):
        lo, hi = np.full(c, -1.0), np.full(c, 1.0)
        for _ in range(64):  # widen the bracket until it holds the target on every channel
            l_lo = logits_cumulative(density, lo[:, None, None], np)[:, 0, 0]
            l_hi = logits_cumulative(density, hi[:, None, None], np)[:, 0, 0]
            if np.all(l_lo <= target) and np.all(l_hi >= target):
                break
            lo, hi = np.where(l_lo > target, 2 * lo, lo), np.where(l_hi < target, 2 * hi, hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = logits_cumulative(density, mid[:, None, None], np)[:, 0, 0] < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out.append((lo + hi) / 2)
    return out[0], out[1]


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


def integer_freqs(probs: np.ndarray, precision: int) -> tuple:
    """Probabilities -> integer frequencies summing to 2^precision, each >= 1 (deterministic)."""
    total = 2**precision
    f = 1 + np.floor(probs * (total - probs.size)).astype(np.int64)
    f[np.argmax(probs)] += total - f.sum()
    return tuple(int(v) for v in f)


def build_tables(density: dict, medians, tail_mass: float, precision: int, max_symbols: int) -> Tables:
    """Integer frequency tables from the float32 parameters, in float64 numpy (deterministic)."""
    med, lo, pmfs = _pmfs(density, medians, tail_mass, max_symbols)
    return Tables(
        tuple(float(m) for m in med), tuple(int(v) for v in lo), tuple(integer_freqs(p, precision) for p in pmfs)
    )


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
    lower = tuple(int(lo[ch] + span[ch][0]) for ch in range(c))
    return Tables(tuple(float(m) for m in med), lower, tuple(freqs), context), n


def quantize_np(y: np.ndarray, medians) -> np.ndarray:
    """The transport's symbols: round(y - m) per channel, float32 arithmetic as in the graph."""
    y = np.asarray(y, np.float32)
    if not np.all(np.isfinite(y)):
        raise ValueError("entropy codec: features are not finite")
    return np.clip(np.round(y - np.asarray(medians, np.float32)), -QMAX, QMAX).astype(np.int32)


def encode_sample(q: np.ndarray, t: Tables) -> bytes:
    """Symbols [h, w, C] -> one range-coded stream (channel after channel, escapes after each)."""
    import constriction

    t.check_shape(q.shape)
    enc = constriction.stream.queue.RangeEncoder()
    widths = t.widths
    idx = symbol_indices(q, t.lower, widths)
    hw = q.shape[0] * q.shape[1]
    local = None  # each element's row among its channel's: (i*w + j)*S + state
    if t.context == "element":
        local = np.broadcast_to(np.arange(hw)[:, None], (hw, t.channels))
    elif t.context == "neighbours":
        local = np.arange(hw)[:, None] * 9 + neighbour_states(idx, t.zero).reshape(hw, t.channels)
    for c in range(t.channels):
        sym = idx[..., c].ravel().astype(np.int32)
        if local is None:
            enc.encode(sym, t.models[c])
        else:
            enc.encode(sym, t.family, t.rows[c][local[:, c]])
        esc = sym == widths[c]
        if esc.any():
            enc.encode((q[..., c].ravel()[esc] + 2 ** (ESC_BITS - 1)).astype(np.int32), t.escape_model)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_sample(data: bytes, shape, t: Tables) -> np.ndarray:
    """One stream -> symbols [h, w, C]; a stream that is not exactly one sample's raises ValueError."""
    import constriction

    h, w, c_ = shape
    t.check_shape(shape)
    if len(data) % 4 or not data:
        raise ValueError(f"entropy stream of {len(data)} bytes: must be a non-empty multiple of 4")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    widths, zero = t.widths, t.zero
    idx = np.empty((h, w, c_), np.int64)
    out = np.empty((h, w, c_), np.int32)
    try:
        for c in range(c_):
            if t.context == "channel":
                idx[..., c] = dec.decode(t.models[c], h * w).reshape(h, w)
            elif t.context == "element":
                idx[..., c] = dec.decode(t.family, t.rows[c]).reshape(h, w)
            else:  # row by row: an element's state needs the row above and the previous channel
                for i in range(h):
                    up = sign_bucket(idx[i - 1, :, c], zero[c]) if i else np.ones(w, np.int64)
                    prev = sign_bucket(idx[i, :, c - 1], zero[c - 1]) if c else np.ones(w, np.int64)
                    idx[i, :, c] = dec.decode(t.family, t.rows[c][(i * w + np.arange(w)) * 9 + 3 * up + prev])
            vals = idx[..., c] + t.lower[c]
            esc = idx[..., c] == widths[c]
            if esc.any():
                vals[esc] = dec.decode(t.escape_model, int(esc.sum())).astype(np.int64) - 2 ** (ESC_BITS - 1)
            out[..., c] = vals
    except Exception as e:  # constriction reports a stream that runs out as a generic error
        raise ValueError(f"entropy stream does not decode to {h}x{w}x{c_} symbols ({e})") from None
    # A range decoder reads any words as some symbols (missing ones as zeros), so a stream is
    # accepted only in the one form our encoder writes for what it decodes to.
    if not dec.maybe_exhausted() or encode_sample(out, t) != bytes(data):
        raise ValueError(f"entropy stream is not an encoding of {h}x{w}x{c_} symbols under this model's tables")
    return out
