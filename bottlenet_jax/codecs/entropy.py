"""Learned entropy bottleneck: a factorized prior trained with a rate term, coded by a range coder.

The field's strongest feature codec (SC2 benchmark's "Entropic Student", Matsubara et al. WACV 2022;
Singh et al. ICIP 2020): the encoder's output y (real-valued: the reduction unit ends at its
BatchNorm, no sigmoid) is rounded to integers and entropy coded under a learned per-channel density.

Density (Ballé et al. ICLR 2018, appendix 6.1): per channel c a monotone map L_c: R -> R,
    L_c = f_K o ... o f_1,   f_k(x) = g_k(softplus(H_k) x + b_k),   g_k(x) = x + tanh(a_k) * tanh(x),
with the last layer affine; the CDF is sigmoid(L_c). softplus(H) >= 0 and tanh(a) >= -1 make every
layer non-decreasing, so the CDF is monotone, 0 at -inf and 1 at +inf. The probability of an integer
symbol k is sigmoid(L(k + 1/2)) - sigmoid(L(k - 1/2)).

Quantisation. Eval and transport: q = round(y - m_c) with m_c the channel's learned median, y_hat =
q + m_c (in float32 in the graph and in numpy alike, so `decode(encode(y))` equals the graph's y_hat
bit for bit). Training (`train_quantizer`):
  ``ste``   (default) the rate sees y + U(-1/2, 1/2) (a differentiable upper bound of the rounded
            rate), the cloud half sees y_hat with a straight-through gradient: it trains on exactly
            what it receives at eval (Minnen & Singh 2020 report this "mixed" quantisation better);
  ``noise`` both see y + U(-1/2, 1/2), as CompressAI's EntropyBottleneck and the SC2 code train.
The medians are learned per channel by an auxiliary loss, |L(m)| with the density held fixed in it
(CompressAI's), sown into the model's "losses" collection, which the train step adds to its loss.

Rate. In the graph: bits = -log2 likelihood per sample (stats["rate_bits"], differentiable; the step
adds rate_lambda * bits). On eval steps only, one host callback range-codes each sample and reports
the real `len()` as bytes_full / bytes_payload (no callback ever runs in a train step).

Bytes. Per channel the symbols between the floored lower and ceiled upper tail (where the CDF is
tail_mass/2 and 1 - tail_mass/2, found by bisection on the float64 density) get integer
frequencies (sum 2^precision, each >= 1) from the density evaluated in float64 numpy on the float32
parameters; everything outside is one escape symbol followed by the value coded uniformly on 16
bits. constriction's range coder codes the channels one after another into one stream per sample.
`with_params` binds the tables into the codec's settings (what an export's manifest holds), so the
receiver decodes with the integers the sender used, whatever its float arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import Codec, match_varying, range_coded_size, register
from bottlenet_jax.errors import ConfigError

TRAIN_QUANTIZERS = ("ste", "noise")
_ESC_BITS = 16  # escaped symbols are coded uniformly on this many bits (|q| < 2^15 always)
_QMAX = 2 ** (_ESC_BITS - 1) - 1
_LOG2 = float(np.log(2.0))


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
@dataclasses.dataclass(frozen=True)
class Tables:
    """What sender and receiver share: per channel the median, the lowest symbol of the table and
    the integer frequencies of symbols lower..lower+K-1 followed by the escape symbol's."""

    medians: tuple  # float32 values
    lower: tuple  # int per channel
    freqs: tuple  # per channel a tuple of K + 1 ints, summing to 2^precision

    @functools.cached_property
    def models(self):
        import constriction

        cat = constriction.stream.model.Categorical
        return [cat(np.asarray(f, np.float64), perfect=False) for f in self.freqs]

    @functools.cached_property
    def escape_model(self):
        import constriction

        return constriction.stream.model.Uniform(2**_ESC_BITS)


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


def build_tables(density: dict, medians, tail_mass: float, precision: int, max_symbols: int) -> Tables:
    """Integer frequency tables from the float32 parameters, in float64 numpy (deterministic)."""
    med = np.asarray(medians, np.float32).ravel()
    p64 = {k: np.asarray(v, np.float64) for k, v in density.items()}
    x_lo, x_hi = tails(p64, tail_mass)
    lo = np.minimum(np.floor(x_lo - med), 0).astype(np.int64)
    hi = np.maximum(np.ceil(x_hi - med), 0).astype(np.int64)
    half = max_symbols // 2
    lo, hi = np.maximum(lo, -half), np.minimum(hi, max_symbols - half - 1)
    total = 2**precision
    freqs = []
    for c in range(med.size):
        ks = np.arange(lo[c], hi[c] + 1, dtype=np.float64)
        pc = {k: v[c : c + 1] for k, v in p64.items()}
        pmf = likelihood(pc, (ks + np.float64(med[c]))[None, None, :], np)[0, 0]
        probs = np.append(pmf, max(0.0, 1.0 - pmf.sum()))
        probs = probs / probs.sum()
        f = 1 + np.floor(probs * (total - probs.size)).astype(np.int64)
        f[np.argmax(probs)] += total - f.sum()
        freqs.append(tuple(int(v) for v in f))
    return Tables(tuple(float(m) for m in med), tuple(int(v) for v in lo), tuple(freqs))


def quantize_np(y: np.ndarray, medians) -> np.ndarray:
    """The transport's symbols: round(y - m) per channel, float32 arithmetic as in the graph."""
    y = np.asarray(y, np.float32)
    if not np.all(np.isfinite(y)):
        raise ValueError("entropy codec: features are not finite")
    return np.clip(np.round(y - np.asarray(medians, np.float32)), -_QMAX, _QMAX).astype(np.int32)


def encode_sample(q: np.ndarray, t: Tables) -> bytes:
    """Symbols [h, w, C] -> one range-coded stream (channel after channel, escapes after each)."""
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    for c, model in enumerate(t.models):
        k = len(t.freqs[c]) - 1
        s = q[..., c].ravel().astype(np.int64) - t.lower[c]
        esc = (s < 0) | (s >= k)
        enc.encode(np.where(esc, k, s).astype(np.int32), model)
        if esc.any():
            enc.encode((q[..., c].ravel()[esc] + 2 ** (_ESC_BITS - 1)).astype(np.int32), t.escape_model)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_sample(data: bytes, shape, t: Tables) -> np.ndarray:
    """One stream -> symbols [h, w, C]; a stream that is not exactly one sample's raises ValueError."""
    import constriction

    h, w, c_ = shape
    if len(data) % 4 or not data:
        raise ValueError(f"entropy stream of {len(data)} bytes: must be a non-empty multiple of 4")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    out = np.empty((h * w, c_), np.int32)
    try:
        for c, model in enumerate(t.models):
            k = len(t.freqs[c]) - 1
            s = dec.decode(model, h * w).astype(np.int64)
            esc = s == k
            vals = s + t.lower[c]
            if esc.any():
                vals[esc] = dec.decode(t.escape_model, int(esc.sum())).astype(np.int64) - 2 ** (_ESC_BITS - 1)
            out[:, c] = vals
    except Exception as e:  # constriction reports a stream that runs out as a generic error
        raise ValueError(f"entropy stream does not decode to {h}x{w}x{c_} symbols ({e})") from None
    out = out.reshape(h, w, c_)
    # A range decoder reads any words as some symbols (missing ones as zeros), so a stream is
    # accepted only in the one form our encoder writes for what it decodes to.
    if not dec.maybe_exhausted() or encode_sample(out, t) != bytes(data):
        raise ValueError(f"entropy stream is not an encoding of {h}x{w}x{c_} symbols under this model's tables")
    return out


# ----------------------------------------------------------------------------- in the model
def _to_cn(y):
    """[..., h, w, C] -> [C, 1, N]."""
    c = y.shape[-1]
    return jnp.moveaxis(y.reshape(-1, c), -1, 0)[:, None, :]


def _from_cn(v, shape):
    return jnp.moveaxis(v[:, 0, :], 0, -1).reshape(shape)


class EntropyLayer(nn.Module):
    """The codec inside the model: owns the density and quantile parameters (params['codec'])."""

    codec: Any

    @nn.compact
    def __call__(self, y, *, train: bool = False, rng=None, condition=None):
        del condition
        cd = self.codec
        C = y.shape[-1]
        density = self.param("density", lambda k: init_density(k, C, tuple(cd.filters), cd.init_scale))
        medians = self.param("medians", lambda k: jnp.zeros((C, 1, 1), jnp.float32))
        y = y.astype(jnp.promote_types(y.dtype, jnp.float32))
        # the medians fit L(m) = 0 with the density held fixed (CompressAI's auxiliary loss)
        aux = jnp.sum(jnp.abs(logits_cumulative(jax.lax.stop_gradient(density), medians)))
        self.sow("losses", "entropy_medians", aux)
        med = jax.lax.stop_gradient(medians[:, 0, 0])
        q = jnp.clip(jnp.round(y - med), -_QMAX, _QMAX)
        y_hat = q + med
        if train:
            if rng is None:
                raise ValueError("entropy codec: training adds uniform noise and needs rngs={'codec': key}")
            noisy = y + jax.random.uniform(rng, y.shape, y.dtype, -0.5, 0.5)
            y_rate = noisy
            # ste: forward exactly y_hat (y - sg(y) is exactly 0), gradient 1 w.r.t. y
            y_out = y_hat + (y - jax.lax.stop_gradient(y)) if cd.train_quantizer == "ste" else noisy
        else:
            y_rate = y_out = y_hat
        lik = _from_cn(likelihood(density, _to_cn(y_rate)), y.shape)
        bits = -jnp.sum(jnp.log(jnp.maximum(lik, cd.likelihood_bound)), axis=(-3, -2, -1)) / _LOG2
        stats = {"rate_bits": bits}
        if not train:
            n = cd.stream_bytes(q.astype(jnp.int32), density, medians)
            stats.update(bytes_full=n, bytes_payload=n)
        return y_out, stats


@register
@dataclasses.dataclass(frozen=True, eq=False)
class EntropyCodec(Codec):
    """Factorized-prior entropy bottleneck (module docstring). The table fields are empty in a
    training config and filled by `with_params` for transport (an export's manifest)."""

    name: ClassVar[str] = "entropy"
    unit_output: ClassVar[str] = "linear"  # real-valued features: the grid of integers is the quantiser
    differentiable_rate: ClassVar[bool] = True
    filters: tuple = (3, 3, 3)
    init_scale: float = 10.0
    tail_mass: float = 1e-9
    likelihood_bound: float = 1e-9
    train_quantizer: str = "ste"
    precision: int = 16  # bits of the integer frequency tables
    max_symbols: int = 1024  # widest table per channel; symbols beyond it are escaped
    medians: tuple = ()
    lower: tuple = ()
    freqs: tuple = ()

    def __post_init__(self):
        if self.train_quantizer not in TRAIN_QUANTIZERS:
            raise ConfigError(
                f"codec.train_quantizer={self.train_quantizer!r}: must be one of {', '.join(TRAIN_QUANTIZERS)}"
            )
        if not 0 < self.tail_mass < 1 or not 0 < self.likelihood_bound < 1:
            raise ConfigError(
                f"codec.tail_mass={self.tail_mass}, likelihood_bound={self.likelihood_bound}: need (0, 1)"
            )
        if not 8 <= self.precision <= 20:
            raise ConfigError(f"codec.precision={self.precision}: must be 8..20 bits")
        if self.max_symbols < 2 or any(f < 1 for f in self.filters) or self.init_scale <= 0:
            raise ConfigError("codec.max_symbols >= 2, codec.filters >= 1 each and codec.init_scale > 0 are required")
        if not len(self.medians) == len(self.lower) == len(self.freqs):
            raise ConfigError("codec.medians/lower/freqs: one entry per channel in each (or all empty)")

    def layer(self, name: str = "codec"):
        return EntropyLayer(self, name=name)

    def __call__(self, x, *, train=False, rng=None, condition=None):
        raise ValueError("the entropy codec owns parameters: call it as a model layer (codec.layer())")

    # -- tables
    def _tables_for(self, density, medians) -> Tables:
        return build_tables(density, medians, self.tail_mass, self.precision, self.max_symbols)

    def with_params(self, params: dict) -> EntropyCodec:
        """This codec with the integer tables of trained parameters (params['codec'])."""
        if "density" not in params or "medians" not in params:
            raise ConfigError("entropy codec: params hold no 'density'/'medians' (not this codec's parameters)")
        t = self._tables_for(jax.device_get(params["density"]), np.asarray(params["medians"]))
        return dataclasses.replace(self, medians=t.medians, lower=t.lower, freqs=t.freqs)

    @functools.cached_property
    def tables(self) -> Tables:
        if not self.freqs:
            raise ValueError("entropy codec has no tables: bind trained parameters with codec.with_params(...)")
        return Tables(tuple(self.medians), tuple(self.lower), tuple(tuple(f) for f in self.freqs))

    # -- eval byte counts: one host callback per eval step
    def stream_bytes(self, q, density, medians):
        leaves, treedef = jax.tree.flatten(density)
        cache: dict = {}

        def host(q, medians, *leaves):
            p = jax.tree.unflatten(treedef, [np.asarray(v) for v in leaves])
            key = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in (medians, *leaves))).digest()
            if key not in cache:
                cache.clear()
                cache[key] = self._tables_for(p, medians)
            t = cache[key]
            q = np.asarray(q)
            flat = q.reshape((-1, *q.shape[-3:]))
            n = np.array([len(encode_sample(s, t)) for s in flat], np.int32)
            return n.reshape(q.shape[:-3])

        out = jax.ShapeDtypeStruct(q.shape[:-3], jnp.int32)
        n = jax.pure_callback(host, out, q, medians, *leaves, vmap_method="sequential")
        return match_varying(n, q)

    # -- transport
    def encode(self, x):
        t = self.tables
        return [encode_sample(s, t) for s in quantize_np(x, t.medians)]

    def check_payload(self, payload, shape):
        # at most a 24-bit categorical symbol (constriction's precision) plus a 16-bit escape each
        range_coded_size(payload, int(np.prod(shape)), 24 + _ESC_BITS)

    def decode(self, payloads, shape):
        t = self.tables
        if shape[-1] != len(t.medians):
            raise ValueError(f"entropy codec: tables for {len(t.medians)} channels, features have {shape[-1]}")
        med = np.asarray(t.medians, np.float32)
        return np.stack([decode_sample(p, tuple(shape[1:]), t).astype(np.float32) + med for p in payloads])
