"""Learned entropy bottleneck: a factorized prior trained with a rate term, coded in rANS streams.

The field's strongest feature codec (SC2 benchmark's "Entropic Student", Matsubara et al. WACV 2022;
Singh et al. ICIP 2020): the encoder's output y (real-valued: the reduction unit ends at its
BatchNorm, no sigmoid) is rounded to integers and entropy coded under a learned per-channel density
(Ballé et al.'s non-parametric one: density.py; its integer tables: tables.py; the streams: streams.py).

Quantisation. Eval and transport: q = round(y - m_c) with m_c the channel's learned median, y_hat =
q + m_c (in float32 in the graph and in numpy alike, so `decode(encode(y))` equals the graph's y_hat
bit for bit). Training (`train_quantizer`):
  ``ste``   (default) the rate sees y + U(-1/2, 1/2) (a differentiable upper bound of the rounded
            rate), the cloud half sees y_hat with a straight-through gradient: it trains on exactly
            what it receives at eval (Minnen & Singh 2020 report this "mixed" quantisation better);
  ``noise`` both see y + U(-1/2, 1/2), as CompressAI's EntropyBottleneck and the SC2 code train.
The medians are learned per channel by an auxiliary loss, |L(m)| with the density held fixed in it
(CompressAI's), sown into the model's "losses" collection; they are the codec's `aux_params`, so
the train step minimises that loss with an optimizer of their own (Adam at aux_learning_rate), not
the network's SGD schedule.

Rate. In the graph: bits = -log2 likelihood per sample (stats["rate_bits"], differentiable; the step
adds rate_lambda * bits), at evaluation at the rounded values: the rate the network trains against,
reported beside the real bytes (fitted tables send fewer: the gap is what training misprices). On
eval steps bytes_full / bytes_payload are each sample's real stream length: with a fitted state and
`stream="rans"` computed in XLA by the encoder's own scan (streams.py; no host callback), else by
one host callback that codes the batch.

Streams (`stream`): "rans" (default) batch-parallel rANS, a batch coded in one compiled call
(coding/rans.py, streams.py); "range" constriction's range coder, one sample per call on the host
(range_format.py): the format up to cbe3d3f, which a codec block saved before `stream` existed
keeps, so old workdirs and exports reproduce their bytes.

Parameters and state. The density and the medians are trainable parameters (params["codec"]); the
integer tables are the codec's state (`fit`, once after training): the density's own (`fit_context`
"") or fitted to the symbols the trained encoder emits on the training split (`fit_context`
"channel", "element" or "neighbours"), with the density as the fit's prior: the density is trained
on y + U(-1/2, 1/2) and sees neither position nor neighbours. With a state the graph codes, counts
bytes with those tables (`table_bits`: their ideal code length); without one (periodic evaluation
during training) with the density's, built on the host from the current parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bottlenet_jax.codecs.base import Codec, first_samples, register
from bottlenet_jax.codecs.coding import rangecoder, rans
from bottlenet_jax.codecs.entropy import streams
from bottlenet_jax.codecs.entropy.density import init_density, likelihood, likelihood_of, logits_cumulative, tails
from bottlenet_jax.codecs.entropy.range_format import decode_sample, encode_sample
from bottlenet_jax.codecs.entropy.tables import (
    CONTEXTS,
    ESC_BITS,
    QMAX,
    Tables,
    build_tables,
    context_of,
    dequantize_np,
    fit_tables,
    quantize_np,
    row_index,
)
from bottlenet_jax.codecs.straight_through import match_varying
from bottlenet_jax.errors import ConfigError

__all__ = [
    "EntropyCodec",
    "Tables",
    "build_tables",
    "decode_sample",
    "encode_sample",
    "fit_tables",
    "init_density",
    "likelihood",
    "logits_cumulative",
    "quantize_np",
    "tails",
]

TRAIN_QUANTIZERS = ("ste", "noise")
STREAMS = ("rans", "range")
_LOG2 = float(np.log(2.0))


_TABLES: dict = {}  # id(freqs) -> (freqs, Tables): the host's tables of a state, kept while it lives


def _tables(state) -> Tables:
    """The host-side Tables of a state (cached by the identity of its freqs array)."""
    if not state:
        raise ValueError("entropy codec has no tables: fit it (codec.fit(params, features)) or load a fitted state")
    key = id(state["freqs"])
    hit = _TABLES.get(key)
    if hit is None or hit[0] is not state["freqs"]:
        if len(_TABLES) > 8:
            _TABLES.clear()
        hit = _TABLES[key] = (state["freqs"], Tables(**{k: np.asarray(v) for k, v in state.items()}))
    return hit[1]


@register
@dataclasses.dataclass(frozen=True, eq=False)
class EntropyCodec(Codec):
    """Factorized-prior entropy bottleneck (module docstring)."""

    name: ClassVar[str] = "entropy"
    unit_output: ClassVar[str] = "linear"  # real-valued features: the grid of integers is the quantiser
    differentiable_rate: ClassVar[bool] = True
    transport_settings: ClassVar[tuple] = ("stream",)
    aux_params: ClassVar[tuple] = ("medians",)
    filters: tuple = (3, 3, 3)
    init_scale: float = 10.0
    tail_mass: float = 1e-9
    likelihood_bound: float = 1e-9
    train_quantizer: str = "ste"
    precision: int = 16  # bits of the integer frequency tables
    max_symbols: int = 1024  # widest table per channel; symbols beyond it are escaped
    fit_context: str = ""  # "": the density's tables; "channel", "element", "neighbours": fitted (tables.py)
    fit_prior: float = 1.0  # pseudo-counts of the density's probabilities in each fitted table
    fit_examples: int = 0  # training examples the tables are fitted to (0: the whole training split)
    stream: str = "rans"  # "rans": batch rANS (streams.py); "range": constriction, per sample

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
        if self.fit_context and self.fit_context not in CONTEXTS:
            raise ConfigError(f"codec.fit_context={self.fit_context!r}: must be '' or one of {', '.join(CONTEXTS)}")
        if self.stream not in STREAMS:
            raise ConfigError(f"codec.stream={self.stream!r}: must be one of {', '.join(STREAMS)}")
        if self.stream == "rans" and self.precision > rans.MAX_PRECISION:
            raise ConfigError(
                f"codec.precision={self.precision}: rANS streams code tables of at most {rans.MAX_PRECISION} bits "
                "(or set codec.stream='range')"
            )
        if self.fit_prior <= 0 or self.fit_examples < 0:
            raise ConfigError(
                f"codec.fit_prior={self.fit_prior} must be > 0, codec.fit_examples={self.fit_examples} >= 0"
            )

    # -- parameters and state
    def init_params(self, key, shape):
        c = int(shape[-1])
        return {
            "density": init_density(key, c, tuple(self.filters), self.init_scale),
            "medians": jnp.zeros((c, 1, 1), jnp.float32),
        }

    def aux_loss(self, params):
        """The medians fit L(m) = 0 with the density held fixed (CompressAI's auxiliary loss)."""
        return jnp.sum(jnp.abs(logits_cumulative(jax.lax.stop_gradient(params["density"]), params["medians"])))

    @property
    def fits_data(self) -> bool:
        return bool(self.fit_context)

    def fit(self, params, features):
        """The integer tables: the density's, or (fit_context) fitted to `features`."""
        _check_params(params)
        density = jax.device_get(params["density"])
        medians = np.asarray(params["medians"], np.float32).ravel()
        if not self.fit_context:
            return build_tables(density, medians, self.tail_mass, self.precision, self.max_symbols).state()
        symbols = (quantize_np(f, medians) for f in first_samples(features, self.fit_examples))
        t, n = fit_tables(
            density,
            medians,
            symbols,
            self.fit_context,
            self.tail_mass,
            self.precision,
            self.max_symbols,
            self.fit_prior,
        )
        logging.info(
            "entropy codec: %d tables (per %s) fitted to %d training samples", len(t.freqs), self.fit_context, n
        )
        return t.state()

    def side_info_bytes(self, state) -> int:
        return len(_tables(state).to_bytes())

    @classmethod
    def split_saved(cls, block):
        """a511a13 kept the tables in the settings (medians, lower, freqs: JSON lists); blocks saved
        before `stream` existed were range-coded and stay so."""
        block = dict(block)
        block.setdefault("stream", "range")
        medians, lower, freqs = (block.pop(k, ()) for k in ("medians", "lower", "freqs"))
        if not freqs:
            return block, {}
        return block, Tables.from_rows(medians, lower, freqs, block.get("fit_context") or "channel").state()

    # -- in the graph
    def __call__(self, x, *, train=False, rng=None, condition=None, params=None, state=None):
        del condition
        _check_params(params)
        density, medians = params["density"], params["medians"]
        y = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        med = jnp.asarray(state["medians"], jnp.float32) if state else jax.lax.stop_gradient(medians[:, 0, 0])
        q = jnp.clip(jnp.round(y - med), -QMAX, QMAX)
        y_hat = q + med
        if train:
            if rng is None:
                raise ValueError("entropy codec: training adds uniform noise and needs rngs={'codec': key}")
            noisy = y + jax.random.uniform(rng, y.shape, y.dtype, -0.5, 0.5)
            y_rate = noisy
            # ste: forward exactly y_hat (y - sg(y) is exactly 0), gradient 1 w.r.t. y
            y_out = y_hat + (y - jax.lax.stop_gradient(y)) if self.train_quantizer == "ste" else noisy
        else:
            y_rate = y_out = y_hat
        lik = likelihood_of(density, y_rate)
        bits = -jnp.sum(jnp.log(jnp.maximum(lik, self.likelihood_bound)), axis=(-3, -2, -1)) / _LOG2
        stats = {"rate_bits": bits}
        if not train:
            if state and self.stream == "rans":
                n = streams.stream_bytes(q.astype(jnp.int32), state, self.precision)
            else:
                n = self.stream_bytes(q.astype(jnp.int32), state, density, medians)
            stats.update(bytes_full=n, bytes_payload=n)
        return y_out, stats

    def table_bits(self, q, state):
        """The tables' ideal code length per sample of symbols q [..., h, w, C] (in the graph)."""
        lower, k = jnp.asarray(state["lower"], jnp.int32), jnp.asarray(state["widths"], jnp.int32)
        s = q - lower
        esc = (s < 0) | (s >= k)
        idx = jnp.where(esc, k, s)
        rows = row_index(context_of(state["freqs"].shape[0], q.shape[-3:]), idx, -lower, jnp)
        f = jnp.asarray(state["freqs"]).astype(jnp.float32)
        log2p = jnp.log2(f) - jnp.log2(jnp.sum(f, axis=-1, keepdims=True))
        return jnp.sum(-log2p[rows, idx] + ESC_BITS * esc, axis=(-3, -2, -1))

    def stream_bytes(self, q, state, density, medians):
        """len() of each sample's stream by one host callback: under the state's tables, else under
        the density's (built on the host from the parameters it is given, cached while they do not
        change)."""
        cache: dict = {}
        if state:
            keys = tuple(sorted(state))

            def tables(*leaves):
                return _tables(dict(zip(keys, leaves)))

            leaves = [state[k] for k in keys]
        else:
            leaves, treedef = jax.tree.flatten(density)
            leaves = [medians, *leaves]

            def tables(medians, *leaves):
                p = jax.tree.unflatten(treedef, [np.asarray(v) for v in leaves])
                key = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in (medians, *leaves))).digest()
                if key not in cache:
                    cache.clear()
                    cache[key] = build_tables(p, medians, self.tail_mass, self.precision, self.max_symbols)
                return cache[key]

        def host(q, *leaves):
            t = tables(*(np.asarray(v) for v in leaves))
            q = np.asarray(q)
            flat = q.reshape((-1, *q.shape[-3:]))
            if self.stream == "rans":
                return streams.stream_bytes_np(flat, t, self.precision).reshape(q.shape[:-3])
            return np.array([len(encode_sample(s, t)) for s in flat], np.int32).reshape(q.shape[:-3])

        out = jax.ShapeDtypeStruct(q.shape[:-3], jnp.int32)
        n = jax.pure_callback(host, out, q, *leaves, vmap_method="sequential")
        return match_varying(n, q)

    # -- transport
    def encode(self, x, state=None):
        t = _tables(state)
        if self.stream == "rans":  # quantised a few samples at a time, as the coder reads them
            x = np.asarray(x, np.float32)
            return _streams(t, x.shape[1:], self.precision).encode(x, lambda y: quantize_np(y, t.medians))
        return [encode_sample(s, t) for s in quantize_np(x, t.medians)]

    def check_payload(self, payload, shape, state=None):
        if self.stream == "rans":
            limit = streams.max_bytes(shape)
            if not 3 <= len(payload) <= limit:
                raise ValueError(
                    f"{len(payload)} bytes: an rANS stream of {'x'.join(map(str, shape))} symbols is 3..{limit}"
                )
            return
        # at most a 24-bit categorical symbol (constriction's precision) plus a 16-bit escape each
        rangecoder.check_size(payload, int(np.prod(shape)), 24 + ESC_BITS)

    def decode(self, payloads, shape, state=None):
        t = _tables(state)
        shape = tuple(int(v) for v in shape[1:])
        t.context(shape)
        if self.stream == "rans":
            return _streams(t, shape, self.precision).decode(list(payloads))
        return dequantize_np(np.stack([decode_sample(p, shape, t) for p in payloads]), t.medians)

    def decode_each(self, payloads, shape, state=None):
        if self.stream != "rans":
            return super().decode_each(payloads, shape, state=state)
        t = _tables(state)
        t.context(tuple(shape[1:]))
        return _streams(t, tuple(int(v) for v in shape[1:]), self.precision).decode_each(list(payloads))

    def warm_up(self, shape, state=None, batches=(1,)):
        if self.stream != "rans":
            return super().warm_up(shape, state=state, batches=batches)
        t = _tables(state)
        t.context(tuple(shape))
        _streams(t, tuple(int(v) for v in shape), self.precision).warm_up(batches)


def _streams(t: Tables, shape, precision: int) -> streams.Streams:
    """The rANS coder of these tables for this shape (built once per Tables object)."""
    cache = t.__dict__.setdefault("_streams", {})
    key = (tuple(shape), precision)
    if key not in cache:
        cache[key] = streams.Streams(t, shape, precision)
    return cache[key]


def _check_params(params):
    if not params or "density" not in params or "medians" not in params:
        raise ValueError(
            "entropy codec: needs its parameters (params['codec'] of the model: 'density', 'medians'); "
            "in a model it is a CodecLayer, which creates them"
        )
