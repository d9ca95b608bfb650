"""BottleNet++'s channel layers: AWGN and binary erasure, behind the ordinary codec contract.

A channel codec has a *channel condition* per sample (AWGN: the noise std sigma; BEC: the bit
erasure probability p). In training it is drawn uniformly from ``*_range`` per batch (or per sample
with ``per_sample=True``), as the public BottleNet++ code does; in evaluation it is the fixed
``sigma`` / ``p`` of the run. The model asks the codec for the condition (`condition`) before the
encoder, so the encoder can see it (BottleNet++ appends it as a constant feature map), and hands the
same values back to the codec call. Nothing outside this file knows which channel is in use.

Transport (`encode`/`decode`) is the source side only: what is put on the channel before the
channel acts (AWGN: float32 symbols; BEC: 8-bit values). At sigma = 0 / p = 0 the graph's output
equals `decode(encode(x))` bit for bit.

Signal power for the SNR: the encoder output is a sigmoid in [0, 1] and is transmitted unnormalised
(as in the paper's code), so SNR_dB = 10 log10(P / sigma^2) with P = E[x^2] of the encoder output,
measured on the evaluation data (`snr_db`); P depends on the trained model and is reported with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import Codec, exact_size, per_sample, register
from bottlenet_jax.codecs.quantize import (
    MINMAX_BYTES,
    dequantize_u8,
    dequantize_u8_np,
    minmax_pack,
    minmax_range,
    minmax_unpack,
    quantize_u8,
    quantize_u8_np,
)
from bottlenet_jax.codecs.straight_through import straight_through
from bottlenet_jax.errors import ConfigError

_BIT_WEIGHTS = 2.0 ** np.arange(8, dtype=np.float32)  # bit k of an 8-bit value weighs 2^k


def snr_db(signal_power: float, sigma: float) -> float:
    return float("inf") if sigma == 0 else float(10 * np.log10(signal_power / sigma**2))


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelCodec(Codec):
    """Shared parts: drawing the condition, optional per-sample min-max scaling, stats."""

    #: the setting holding the channel condition (eval value; `<name>_range` the training draw),
    #: fed to a conditioned encoder and varied by `eval.py --sweep`
    condition_field: ClassVar[str] = ""
    per_sample: bool = False  # training: one condition per sample instead of per batch
    # Per-sample min-max to [0, 1] before the channel (8 bytes side info, assumed sent error-free):
    # for unbounded raw features, i.e. the "no channel coding" reference. The units' sigmoid output
    # is already in [0, 1] and needs none.
    minmax: bool = False

    def _eval_value(self) -> float:
        return float(getattr(self, self.condition_field))

    def _range(self) -> tuple[float, float]:
        lo, hi = getattr(self, self.condition_field + "_range")
        return float(lo), float(hi)

    def condition(self, batch_shape, *, train: bool, rng: Any = None):
        """float32[batch_shape]: the channel condition each sample meets."""
        if not train:
            return jnp.full(batch_shape, self._eval_value(), jnp.float32)
        if rng is None:
            raise ValueError(f"{self.name}: training draws the channel condition and needs rngs={{'codec': key}}")
        lo, hi = self._range()
        shape = tuple(batch_shape) if self.per_sample else (1,) * len(batch_shape)
        return jnp.broadcast_to(jax.random.uniform(rng, shape, jnp.float32, lo, hi), batch_shape)

    def __call__(self, x, *, train=False, rng=None, condition=None, params=None, state=None):
        if rng is None:  # a fixed fallback key would draw the same noise on every call
            raise ValueError(
                f"the {self.name} channel draws noise and needs a key: model.apply(..., rngs={{'codec': key}})"
            )
        k_cond, k_chan = jax.random.split(rng)
        if condition is None:
            condition = self.condition(x.shape[:-3], train=train, rng=k_cond)
        condition = jax.lax.stop_gradient(condition.astype(jnp.float32))[..., None, None, None]
        dtype = x.dtype
        x = x.astype(jnp.promote_types(dtype, jnp.float32))
        if self.minmax:
            lo, scale = minmax_range(x)
            y = self.channel((x - lo) / scale, condition, k_chan) * scale + lo
        else:
            y = self.channel(x, condition, k_chan)
        h, w, c = x.shape[-3:]
        stats = per_sample(self.bytes_per_element * h * w * c + (MINMAX_BYTES if self.minmax else 0), x)
        return y.astype(dtype), {**stats, "signal_power": self.signal_power(x)}  # the P of the SNR

    bytes_per_element: ClassVar[int] = 1

    def signal_power(self, x):
        """Per-sample mean of x^2 of what enters the channel (after min-max scaling when on): the
        P in SNR = P / sigma^2."""
        x = x.astype(jnp.float32)
        if self.minmax:
            lo, scale = minmax_range(x)
            x = (x - lo) / scale
        return jnp.mean(x**2, axis=(-3, -2, -1))

    def channel(self, x, condition, rng):
        raise NotImplementedError

    def check_payload(self, payload, shape, state=None):
        size = self.bytes_per_element * int(np.prod(shape)) + (MINMAX_BYTES if self.minmax else 0)
        exact_size(payload, size, f"{self.name} channel inputs")

    def pack(self, x):
        """(what goes on the channel per sample, its side information): min-max scaled if `minmax`."""
        x = np.asarray(x, np.float32)
        return minmax_pack(x) if self.minmax else (x, [b""] * len(x))

    def unpack(self, payloads, read):
        """Samples back from payloads (`read`: one body -> its values), min-max side info undone."""
        if not self.minmax:
            return np.stack([read(p) for p in payloads])
        lo, scale, bodies = minmax_unpack(payloads)
        return np.stack([read(p) for p in bodies]) * scale + lo

    def _check(self):
        lo, hi = self._range()
        v = self._eval_value()
        top = 1.0 if self.name == "bec" else float("inf")
        if not (0 <= lo <= hi <= top and 0 <= v <= top):
            raise ConfigError(
                f"codec.{self.condition_field}={v}, codec.{self.condition_field}_range=({lo}, {hi}): "
                f"need 0 <= low <= high{' <= 1' if top == 1 else ''} and 0 <= {self.condition_field}"
                f"{' <= 1' if top == 1 else ''}"
            )

    def __post_init__(self):
        self._check()


@register
@dataclasses.dataclass(frozen=True, eq=False)
class AwgnCodec(ChannelCodec):
    """y = x + n, n ~ N(0, sigma^2) i.i.d. per element; the gradient w.r.t. x is the identity.

    Bandwidth is counted in channel uses (one real symbol per element); `encode` sends them as
    float32, so the byte stats are 4 per element.
    """

    name: ClassVar[str] = "awgn"
    condition_field: ClassVar[str] = "sigma"
    sweep_field: ClassVar[str] = "sigma"
    bytes_per_element: ClassVar[int] = 4
    sigma: float = 0.0  # evaluation
    sigma_range: tuple = (0.0, 0.2)  # training: uniform

    def channel(self, x, sigma, rng):
        return x + sigma * jax.random.normal(rng, x.shape, x.dtype)

    def encode(self, x, state=None):
        x, sides = self.pack(x)
        return [s + np.ascontiguousarray(v, "<f4").tobytes() for s, v in zip(sides, x)]

    def decode(self, payloads, shape, state=None):
        return self.unpack(payloads, lambda p: np.frombuffer(p, "<f4").reshape(shape[1:]))


@register
@dataclasses.dataclass(frozen=True, eq=False)
class BecCodec(ChannelCodec):
    """8-bit quantisation, then each bit erased with probability p and replaced by its expected value.

    Values are round(x * 255) clamped to 0..255 (the public code's round(x * 256) overflows uint8 at
    x = 1). Bits are taken as equiprobable, so an erased bit counts 1/2: at p = 1 every value becomes
    127.5 / 255 = 0.5. Straight-through gradient (quantisation and erasure are identity in backprop).
    Bytes: C' * H' * W' per sample before any channel code; an erasure channel tells the receiver
    which bits were lost, so `decode` of a clean payload is the p = 0 output.
    """

    name: ClassVar[str] = "bec"
    condition_field: ClassVar[str] = "p"
    sweep_field: ClassVar[str] = "p"
    p: float = 0.0  # evaluation
    p_range: tuple = (0.0, 0.05)  # training: uniform

    def channel(self, x, p, rng):
        erased = jax.random.uniform(rng, x.shape + (8,), jnp.float32) < p[..., None]
        return straight_through(lambda v: (self._erase(v, erased), {}))(x)[0]

    @staticmethod
    def _erase(x, erased):
        u8 = quantize_u8(x)
        if erased is None:
            return dequantize_u8(u8, x.dtype)
        bits = ((u8[..., None] >> jnp.arange(8, dtype=jnp.uint8)) & 1).astype(jnp.float32)
        bits = jnp.where(erased, jnp.float32(0.5), bits)
        value = jnp.sum(bits * jnp.asarray(_BIT_WEIGHTS), axis=-1)  # exact: sums of halves of powers of 2
        return dequantize_u8(value, x.dtype)

    def encode(self, x, state=None):
        x, sides = self.pack(x)
        return [s + u.tobytes() for s, u in zip(sides, quantize_u8_np(x))]

    def decode(self, payloads, shape, state=None):
        return self.unpack(payloads, lambda p: dequantize_u8_np(np.frombuffer(p, np.uint8).reshape(shape[1:])))
