"""Learned entropy bottleneck: a factorized prior trained with a rate term, coded by a range coder.

The field's strongest feature codec (SC2 benchmark's "Entropic Student", Matsubara et al. WACV 2022;
Singh et al. ICIP 2020): the encoder's output y (real-valued: the reduction unit ends at its
BatchNorm, no sigmoid) is rounded to integers and entropy coded under a learned per-channel density
(Ballé et al.'s non-parametric one; entropy_model.py holds it, its integer tables and the streams).

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

Tables. By default the integer tables are the density's (`with_params` binds them into the codec's
settings: what an export's manifest holds, so the receiver decodes with the integers the sender
used, whatever its float arithmetic). With `fit_context` ("channel" or "element") they are fitted,
after training, to the symbols the trained encoder emits on the training split (`fit`; the
evaluator and the exporter call it through `Codec.needs_fit`): the density stays the training-time
rate model and the prior of the fit. A codec with bound tables codes, counts bytes and estimates
the rate (their ideal code length) with them in the graph too; an unfitted `fit_context` codec
(periodic evaluation during training) uses the density's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bottlenet_jax.codecs.base import Codec, match_varying, range_coded_size, register
from bottlenet_jax.codecs.entropy_model import (
    CONTEXTS,
    ESC_BITS,
    QMAX,
    Tables,
    build_tables,
    decode_sample,
    encode_sample,
    fit_tables,
    init_density,
    likelihood,
    logits_cumulative,
    quantize_np,
    row_index,
    tails,
)
from bottlenet_jax.errors import ConfigError

__all__ = [
    "EntropyCodec",
    "EntropyLayer",
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
_LOG2 = float(np.log(2.0))


# ----------------------------------------------------------------------------- in the model
def _to_cn(y):
    """[..., h, w, C] -> [C, 1, N]."""
    c = y.shape[-1]
    return jnp.moveaxis(y.reshape(-1, c), -1, 0)[:, None, :]


def _from_cn(v, shape):
    return jnp.moveaxis(v[:, 0, :], 0, -1).reshape(shape)


def _first(batches, n: int):
    """The batches up to n samples in all (n = 0: every batch); reads no batch beyond them."""
    seen = 0
    for b in batches:
        if n and seen >= n:
            return
        yield b[: n - seen] if n else b
        seen += len(b)


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
        bound = bool(cd.freqs)  # tables bound into the codec (fitted): they define the transport
        med = jnp.asarray(cd.tables.medians, jnp.float32) if bound else jax.lax.stop_gradient(medians[:, 0, 0])
        q = jnp.clip(jnp.round(y - med), -QMAX, QMAX)
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
        if bound and not train:
            bits = cd.table_bits(q.astype(jnp.int32))
        else:
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
    training config and filled by `with_params` (the density's tables) or `fit` (fitted ones)."""

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
    fit_context: str = ""  # "": the density's tables; "channel", "element", "neighbours": fitted (entropy_model)
    fit_prior: float = 1.0  # pseudo-counts of the density's probabilities in each fitted table
    fit_examples: int = 0  # training examples the tables are fitted to (0: the whole training split)
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
        if self.fit_context and self.fit_context not in CONTEXTS:
            raise ConfigError(f"codec.fit_context={self.fit_context!r}: must be '' or one of {', '.join(CONTEXTS)}")
        if self.fit_prior <= 0 or self.fit_examples < 0:
            raise ConfigError(
                f"codec.fit_prior={self.fit_prior} must be > 0, codec.fit_examples={self.fit_examples} >= 0"
            )
        c = len(self.medians)
        if len(self.lower) != c or (len(self.freqs) % c if c else self.freqs):
            raise ConfigError(
                "codec.medians/lower/freqs: medians and lower one per channel, freqs one per channel or "
                "per element (or all empty)"
            )

    def layer(self, name: str = "codec"):
        return EntropyLayer(self, name=name)

    def __call__(self, x, *, train=False, rng=None, condition=None):
        raise ValueError("the entropy codec owns parameters: call it as a model layer (codec.layer())")

    # -- tables
    def _tables_for(self, density, medians) -> Tables:
        return build_tables(density, medians, self.tail_mass, self.precision, self.max_symbols)

    def with_params(self, params: dict) -> EntropyCodec:
        """This codec for transport with trained parameters (params['codec']): the density's integer
        tables bound, or (fit_context) the fitted tables it holds, checked to be of these parameters."""
        if "density" not in params or "medians" not in params:
            raise ConfigError("entropy codec: params hold no 'density'/'medians' (not this codec's parameters)")
        medians = np.asarray(params["medians"], np.float32).ravel()
        if self.fit_context:
            if not self.freqs:
                raise ConfigError(
                    f"codec.fit_context={self.fit_context!r}: the tables are fitted to training data and this "
                    "codec has none yet (bottlenet_jax.evaluation.fit_codec fits them)"
                )
            if not np.array_equal(np.asarray(self.medians, np.float32), medians):
                raise ConfigError("entropy codec: its fitted tables belong to other parameters (medians differ)")
            return self
        t = self._tables_for(jax.device_get(params["density"]), medians)
        return dataclasses.replace(self, medians=t.medians, lower=t.lower, freqs=t.freqs)

    @property
    def needs_fit(self) -> bool:
        return bool(self.fit_context) and not self.freqs

    def fit(self, params: dict, features: Iterable[np.ndarray]) -> EntropyCodec:
        """This codec with tables fitted to `features` (batches of the edge's y [n, h, w, C] on
        training data) under `fit_context`; itself when it fits nothing."""
        if not self.fit_context:
            return self
        density = jax.device_get(params["density"])
        medians = np.asarray(params["medians"], np.float32).ravel()
        symbols = (quantize_np(f, medians) for f in _first(features, self.fit_examples))
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
        return dataclasses.replace(self, medians=t.medians, lower=t.lower, freqs=t.freqs)

    @functools.cached_property
    def tables(self) -> Tables:
        if not self.freqs:
            raise ValueError("entropy codec has no tables: bind trained parameters with codec.with_params(...)")
        ctx = self.fit_context or "channel"
        return Tables(tuple(self.medians), tuple(self.lower), tuple(tuple(f) for f in self.freqs), ctx)

    def table_bits(self, q):
        """The bound tables' ideal code length per sample of symbols q [..., h, w, C] (in the graph)."""
        t = self.tables
        t.check_shape(q.shape[-3:])
        k = jnp.asarray(t.widths, jnp.int32)
        s = q - jnp.asarray(t.lower, jnp.int32)
        esc = (s < 0) | (s >= k)
        idx = jnp.where(esc, k, s)
        rows = row_index(t.context, idx, jnp.asarray(t.zero, jnp.int32), jnp)
        bits = -jnp.asarray(t.log2_probs())[rows, idx] + ESC_BITS * esc
        return jnp.sum(bits, axis=(-3, -2, -1))

    # -- eval byte counts: one host callback per eval step
    def stream_bytes(self, q, density, medians):
        """len() of each sample's stream: under the bound tables, else under the density's tables
        (built on the host from the parameters it is given, cached while they do not change)."""
        leaves, treedef = jax.tree.flatten(density)
        cache: dict = {}

        def host(q, medians, *leaves):
            if self.freqs:
                t = self.tables
            else:
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
        range_coded_size(payload, int(np.prod(shape)), 24 + ESC_BITS)

    def decode(self, payloads, shape):
        t = self.tables
        t.check_shape(tuple(shape[1:]))
        med = np.asarray(t.medians, np.float32)
        return np.stack([decode_sample(p, tuple(shape[1:]), t).astype(np.float32) + med for p in payloads])
