"""Mean-scale hyperprior: a learned entropy model whose every table index decodes the same anywhere.

The codec the field's anchors ship beside the factorized prior (Ballé et al., ICLR 2018: the scale
hyperprior; Minnen, Ballé & Toderici, NeurIPS 2018: its mean-scale form; SC2 benchmark's Entropic
Student sweeps both): the unit's real-valued output y goes through a hyper-analysis h_a to a small
latent z, coded under a factorized prior (density.py, its median-centred integer tables); a
hyper-synthesis h_s maps z's symbols to each element's scale (and, `form="mean_scale"`, mean), and
y is coded under a Gaussian of that scale around that mean (gaussian.py), in one rANS stream per
sample with z (hyper_streams.py).

Decodable anywhere: h_a and h_s are integer networks (integer_net.py, Ballé, Johnston & Minnen
2019), so z's symbols, each element's scale level (an index into a fixed table of scales, as
CompressAI's GaussianConditional indexes its tables) and each mean (in 1/16) are integers that
every machine computes alike; the tables are built once (`fit`, float64) and shipped as integers.
The only float step after y is y - mean, an IEEE subtraction, on the sender alone.

Trained at the rate it is sent at: stats["rate_bits"] is -log2 of the likelihood under the same
model the coder codes with: z + U(-1/2, 1/2) under the density, y - mean + U(-1/2, 1/2) under the
Gaussian of the element's table scale (the level rounded straight-through); at evaluation the same
at the rounded values, so the rate term and len() differ only by the frequencies' rounding to
integers, escapes and the stream's fixed cost (benchmarks/README.md, "Rate estimate vs bytes").
`train_quantizer` as the factorized codec's: "ste" sends y_hat = r + mean to the cloud half with a
straight-through gradient, "noise" y + U. z's medians are `aux_params`: their own loss and optimizer.

Parameters: "ha", "hs" (the hyper networks' float weights, rounded in the forward pass; "hs" also a learned
prior per position, integer_net.position_prior), "z_density",
"z_medians". State (`fit`, from the parameters alone: no data): z's tables, the scale levels'
tables, and both networks' integer weights: what encoder and decoder share.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import Codec, register
from bottlenet_jax.codecs.coding import rans
from bottlenet_jax.codecs.entropy import gaussian, hyper_streams
from bottlenet_jax.codecs.entropy import integer_net as inet
from bottlenet_jax.codecs.entropy.density import init_density, likelihood_of, logits_cumulative
from bottlenet_jax.codecs.entropy.hyper_streams import Structure, dequantize
from bottlenet_jax.codecs.entropy.tables import ESC_BITS, QMAX, Tables, build_tables
from bottlenet_jax.codecs.straight_through import match_varying
from bottlenet_jax.errors import ConfigError

FORMS = ("mean_scale", "scale")
TRAIN_QUANTIZERS = ("ste", "noise")
_LOG2 = float(np.log(2.0))


@register
@dataclasses.dataclass(frozen=True, eq=False)
class HyperpriorCodec(Codec):
    """Mean-scale (or scale) hyperprior with integer hyper networks (module docstring)."""

    name: ClassVar[str] = "hyperprior"
    unit_output: ClassVar[str] = "linear"
    differentiable_rate: ClassVar[bool] = True
    aux_params: ClassVar[tuple] = ("z_medians",)
    adam_params: ClassVar[tuple] = ("ha", "hs", "z_density")  # fixed-point weights: SGD at lr 0.1 diverged
    form: str = "mean_scale"  # "mean_scale" (Minnen et al.) | "scale" (Ballé et al.: zero means)
    hyper_channels: int = 8  # z's channels (z is half y's height and width)
    hidden: int = 16  # the hyper networks' hidden width
    scale_min: float = 0.11  # the table of scales: log-spaced scale_min..scale_max, scale_levels of them
    scale_max: float = 32.0
    scale_levels: int = 64
    filters: tuple = (3, 3, 3)  # z's density (density.py)
    init_scale: float = 10.0
    tail_mass: float = 1e-6  # the tables' support: mass beyond it is escaped (y) or clipped (z)
    likelihood_bound: float = 1e-9
    train_quantizer: str = "ste"
    precision: int = 16  # bits of the integer frequency tables (rANS: at most 16)
    max_symbols: int = 1024  # widest table

    def __post_init__(self):
        if self.form not in FORMS:
            raise ConfigError(f"codec.form={self.form!r}: must be one of {', '.join(FORMS)}")
        if self.train_quantizer not in TRAIN_QUANTIZERS:
            raise ConfigError(
                f"codec.train_quantizer={self.train_quantizer!r}: must be one of {', '.join(TRAIN_QUANTIZERS)}"
            )
        if not 0 < self.scale_min < self.scale_max or not 2 <= self.scale_levels <= 256:
            raise ConfigError(
                f"codec.scale_min={self.scale_min}, scale_max={self.scale_max}, scale_levels={self.scale_levels}: "
                "need 0 < scale_min < scale_max and 2..256 levels"
            )
        if self.hyper_channels < 1 or self.hidden < 1 or any(f < 1 for f in self.filters) or self.init_scale <= 0:
            raise ConfigError(
                "codec.hyper_channels, codec.hidden, codec.filters >= 1 and codec.init_scale > 0 are required"
            )
        if not 0 < self.tail_mass < 1 or not 0 < self.likelihood_bound < 1:
            raise ConfigError(
                f"codec.tail_mass={self.tail_mass}, likelihood_bound={self.likelihood_bound}: need (0, 1)"
            )
        if not 8 <= self.precision <= rans.MAX_PRECISION:
            raise ConfigError(f"codec.precision={self.precision}: rANS tables take 8..{rans.MAX_PRECISION} bits")
        if self.max_symbols < 4:
            raise ConfigError(f"codec.max_symbols={self.max_symbols}: must be >= 4")

    # -- structure, parameters and state
    def structure(self, shape) -> Structure:
        shape = tuple(int(v) for v in shape[-3:])
        s = Structure(shape, self.hyper_channels, self.hidden, self.scale_levels, self.form == "mean_scale")
        try:
            inet.check_bounds(s.analysis)
            inet.check_bounds(s.synthesis)
        except ValueError as e:
            raise ConfigError(f"codec.name=hyperprior on {'x'.join(map(str, shape))} features: {e}") from None
        return s

    def init_params(self, key, shape):
        s = self.structure(shape)
        ka, ks, kd = jax.random.split(key, 3)
        hs = inet.init(ks, s.synthesis)
        last = len(inet.convs(s.synthesis)) - 1
        level_of_one = np.log(1.0 / self.scale_min) / gaussian.log_step(
            self.scale_min, self.scale_max, self.scale_levels
        )
        outputs = s.synthesis[last].c_out // 4  # per position of z, 4 elements' (depth-to-space)
        start = jnp.zeros((4, outputs)).at[:, : shape[-1]].set(float(np.clip(np.round(level_of_one), 0, inet.B_MAX)))
        hs[f"b{last}"] = start.reshape(-1)
        hs["pos"] = jnp.zeros((*s.shape[:2], outputs), jnp.float32)  # integer_net.position_prior
        return {
            "ha": inet.init(ka, s.analysis),
            "hs": hs,
            "z_density": init_density(kd, self.hyper_channels, tuple(self.filters), self.init_scale),
            "z_medians": jnp.zeros((self.hyper_channels, 1, 1), jnp.float32),
        }

    def aux_loss(self, params):
        """z's medians fit L(m) = 0 with the density held fixed (as the factorized codec's)."""
        density = jax.lax.stop_gradient(params["z_density"])
        return jnp.sum(jnp.abs(logits_cumulative(density, params["z_medians"])))

    def fit(self, params, features):
        """The state from the parameters alone (no data): z's tables (the density's integer
        frequencies around its medians), the scale levels' tables, both networks' integers."""
        del features
        _check_params(params)
        channels = int(np.shape(params["ha"]["w0"])[2])
        s = self.structure((1, 1, channels))
        z = build_tables(
            jax.device_get(params["z_density"]),
            np.asarray(params["z_medians"], np.float32).ravel(),
            self.tail_mass,
            self.precision,
            self.max_symbols,
        )
        half, freqs = gaussian.tables(
            self.scale_min, self.scale_max, self.scale_levels, self.tail_mass, self.precision, self.max_symbols
        )
        ints = {f"ha_{k}": v for k, v in inet.integer_params(jax.device_get(params["ha"]), s.analysis).items()}
        ints |= {f"hs_{k}": v for k, v in inet.integer_params(jax.device_get(params["hs"]), s.synthesis).items()}
        ints["hs_pos"] = inet.integer_position(jax.device_get(params["hs"]["pos"]))
        return {
            "z_medians": z.medians,
            "z_lower": z.lower,
            "z_widths": z.widths,
            "z_freqs": z.freqs,
            "y_half": half,
            "y_freqs": freqs,
            **ints,
        }

    def side_info_bytes(self, state) -> int:
        """The tables a sender ships once: z's in entropy/tables.py's binary form, the scale levels'
        in gaussian.binary_bytes's. The hyper networks' integer weights are the model's, shipped with
        its halves as the unit's weights are (no method's network weights are side information)."""
        z = Tables(state["z_medians"], state["z_lower"], state["z_widths"], state["z_freqs"])
        return len(z.to_bytes()) + gaussian.binary_bytes(state["y_half"])

    # -- in the graph
    def __call__(self, x, *, train=False, rng=None, condition=None, params=None, state=None):
        del condition
        _check_params(params)
        y = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        s = self.structure(y.shape)
        lead = y.shape[:-3]
        y = y.reshape(-1, *s.shape)
        if train:
            if rng is None:
                raise ValueError("hyperprior codec: training adds uniform noise and needs rngs={'codec': key}")
            kz, ky = jax.random.split(rng)
            med = jax.lax.stop_gradient(params["z_medians"][:, 0, 0])
            z = s.analyze(y, params["ha"], jnp, train=True)
            z_rate = z + jax.random.uniform(kz, z.shape, z.dtype, -0.5, 0.5)
            qz = inet.ste(jnp.round, z - med)
            level, mean = s.synthesize(qz, params["hs"], jnp, train=True)
            mu = mean * 2.0**-inet.MEAN_FRAC
            r = jax.lax.stop_gradient(jnp.clip(jnp.round(y - mu), -QMAX, QMAX))
            noisy = y + jax.random.uniform(ky, y.shape, y.dtype, -0.5, 0.5)
            y_rate = noisy - mu
            y_hat = jax.lax.stop_gradient(r + mu)
            y_out = y_hat + (y - jax.lax.stop_gradient(y)) if self.train_quantizer == "ste" else noisy
        else:
            coding = state or self._state_of(params, s)
            qz, r, level, mean = s.symbols(y, coding, jnp)
            y_out = dequantize(r, mean, jnp)
            y_rate = r.astype(jnp.float32)
            z_rate = (qz + jnp.asarray(coding["z_medians"], jnp.float32)).astype(jnp.float32)
        scale = gaussian.scale_of_level(level, self.scale_min, self.scale_max, self.scale_levels)
        bits = _bits(gaussian.likelihood(y_rate, scale), self.likelihood_bound)
        bits = bits + _bits(likelihood_of(params["z_density"], z_rate), self.likelihood_bound)
        stats = {"rate_bits": bits.reshape(lead)}
        if not train:
            if state:
                n = hyper_streams.stream_bytes(qz, r, level, state, self.precision)
            else:
                n = self._callback_bytes(y, params, s)
            stats.update(bytes_full=n.reshape(lead), bytes_payload=n.reshape(lead))
        return y_out.reshape(x.shape), stats

    def _state_of(self, params, s: Structure) -> dict:
        """Without a fitted state (periodic evaluation during training): the integers of the
        current parameters and z clipped to +-QMAX (the tables live on the host: `_callback_bytes`)."""
        c = s.z_shape[-1]
        ints = {f"ha_{k}": v for k, v in inet.integer_params(params["ha"], s.analysis, jnp).items()}
        ints |= {f"hs_{k}": v for k, v in inet.integer_params(params["hs"], s.synthesis, jnp).items()}
        ints["hs_pos"] = inet.integer_position(params["hs"]["pos"], jnp)
        return {
            "z_medians": jax.lax.stop_gradient(params["z_medians"][:, 0, 0]),
            "z_lower": jnp.full((c,), -QMAX, jnp.int32),
            "z_widths": jnp.full((c,), 2 * QMAX + 1, jnp.int32),
            **ints,
        }

    def _callback_bytes(self, y, params, s: Structure):
        """len() of each sample's stream under the tables of the current parameters, built and
        coded on the host by one callback (periodic evaluation during training only)."""
        leaves, treedef = jax.tree.flatten(params)
        cache: dict = {}

        def host(y, *leaves):
            p = jax.tree.unflatten(treedef, [np.asarray(v) for v in leaves])
            key = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in leaves)).digest()
            if key not in cache:
                cache.clear()
                cache[key] = self.fit(p, ())
            state = cache[key]
            qz, r, level, _ = s.symbols(np.asarray(y), state)
            return hyper_streams.stream_bytes_np(qz, r, level, state, self.precision).astype(np.int32)

        n = jax.pure_callback(host, jax.ShapeDtypeStruct(y.shape[:1], jnp.int32), y, *leaves, vmap_method="sequential")
        return match_varying(n, y)

    # -- transport
    def encode(self, x, state=None):
        x = np.asarray(x, np.float32)
        if not np.isfinite(np.sum(x, dtype=np.float64)):
            raise ValueError("hyperprior codec: features are not finite")
        return self._streams(state, x.shape[1:]).encode(x)

    def decode(self, payloads, shape, state=None):
        return self._streams(state, shape[1:]).decode(list(payloads))

    def decode_each(self, payloads, shape, state=None):
        return self._streams(state, shape[1:]).decode_each(list(payloads))

    def warm_up(self, shape, state=None, batches=(1,)):
        self._streams(state, tuple(shape)).warm_up(batches)

    def check_payload(self, payload, shape, state=None):
        s = self.structure(shape)
        limit = hyper_streams.max_bytes(s.shape, s.z_shape)
        if not 3 <= len(payload) <= limit:
            raise ValueError(
                f"{len(payload)} bytes: a hyperprior stream of {'x'.join(map(str, s.shape))} features is 3..{limit}"
            )

    def _streams(self, state, shape) -> hyper_streams.Streams:
        """The rANS coder of this state for this shape (built once per state and shape)."""
        if not state:
            raise ValueError("hyperprior codec has no tables: fit it (codec.fit(params, ())) or load a fitted state")
        s = self.structure(shape)
        if np.shape(state["hs_pos"])[:2] != s.shape[:2] or int(np.shape(state["ha_w0"])[2]) != s.shape[-1]:
            raise ValueError(f"hyperprior codec: this state codes other features than {'x'.join(map(str, s.shape))}")
        key = (id(state["y_freqs"]), id(state["hs_w0"]), s, self.precision)
        hit = _STREAMS.get(key)
        if hit is None or hit[0] is not state["y_freqs"]:
            if len(_STREAMS) > 8:
                _STREAMS.clear()
            hit = _STREAMS[key] = (state["y_freqs"], hyper_streams.Streams(state, s, self.precision))
        return hit[1]


_STREAMS: dict = {}  # (ids of the state's arrays, structure, precision) -> (an array it holds, Streams)


def _bits(lik, bound: float):
    return -jnp.sum(jnp.log(jnp.maximum(lik, bound)), axis=(-3, -2, -1)) / _LOG2


def _check_params(params):
    if not params or not {"ha", "hs", "z_density", "z_medians"} <= set(params):
        raise ValueError(
            "hyperprior codec: needs its parameters (params['codec'] of the model: 'ha', 'hs', 'z_density', "
            "'z_medians'); in a model it is a CodecLayer, which creates them"
        )


__all__ = ["HyperpriorCodec", "ESC_BITS"]
