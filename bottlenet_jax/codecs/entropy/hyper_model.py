"""The hyperprior's model of a stream, in numpy (or jax where given jax arrays; no JAX import: the
edge runtime encodes with it): what the encoder computes from y, and each symbol's row.

Symbols (`Structure.symbols`): z = h_a(y) (integer_net.py; a real value, the accumulator at 2^-10),
its symbols qz = round(z - m) clipped to their tables' range (so z never escapes), then h_s(qz) ->
per element a scale level and a mean in 1/16 (integers only), and the residual r = round(y - mean),
clipped to +-QMAX. The decoder recomputes levels and means from qz alone, with integer arithmetic:
identical on every machine. y_hat = r + mean (float32, exact).

Rows: one table for both parts of a stream: z's channel rows first (entropy/tables.py: the
density's integer frequencies), then one row per scale level (gaussian.py). The stream's format and
coders: hyper_streams.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bottlenet_jax.codecs.coding import rans_np as rans
from bottlenet_jax.codecs.entropy import integer_net as inet
from bottlenet_jax.codecs.entropy.tables import ESC_BITS, QMAX, coding_order

ESC_OFFSET = 1 << (ESC_BITS - 1)


@dataclasses.dataclass(frozen=True)
class Structure:
    """The hyper networks' shapes for features of `shape` ([h, w, C]): static, hashable."""

    shape: tuple
    z_channels: int
    hidden: int
    levels: int
    mean: bool

    @property
    def z_shape(self) -> tuple:
        h, w, _ = self.shape
        return (-(-h // 2), -(-w // 2), self.z_channels)

    @property
    def analysis(self):
        return inet.analysis(self.shape[-1], self.hidden, self.z_channels)

    @property
    def synthesis(self):
        return inet.synthesis(self.z_channels, self.hidden, self.shape[-1] * (2 if self.mean else 1))

    def analyze(self, y, ints: dict, xp=np, train: bool = False):
        """z = h_a(y), float32 [N, hz, wz, Cz] (exact: the accumulator times 2^-10)."""
        z = inet.forward(inet.input_of_analysis(y, xp, train), ints, self.analysis, xp=xp, train=train)
        return z.astype(xp.float32)

    def synthesize(self, qz, ints: dict, xp=np, train: bool = False):
        """(level [N, h, w, C], mean in 1/16 [N, h, w, C]) of z's symbols: int32 arrays, or with
        `train` float32 ones rounded straight-through (the level's clip leaks gradient)."""
        c = self.shape[-1]
        out = inet.forward(xp.clip(qz, -inet.Z_MAX, inet.Z_MAX), ints, self.synthesis, self.shape[:2], xp, train)
        out = out + inet.position_prior(ints["pos"], xp, train)
        rnd = (
            (lambda v: inet.ste(lambda u: inet.round_half_up(u, xp), v))
            if train
            else (lambda v: inet.round_half_up(v, xp))
        )
        level = rnd(out[..., :c])
        level = inet.leaky_clip(level, 0, self.levels - 1) if train else xp.clip(level, 0, self.levels - 1)
        if self.mean:
            mean = rnd(out[..., c:] * 2.0**inet.MEAN_FRAC)
            mean = (
                inet.leaky_clip(mean, -inet.MEAN_MAX, inet.MEAN_MAX)
                if train
                else xp.clip(mean, -inet.MEAN_MAX, inet.MEAN_MAX)
            )
        else:
            mean = xp.zeros_like(level)
        if train:
            return level, mean
        return level.astype(xp.int32), mean.astype(xp.int32)

    def symbols(self, y, state: dict, xp=np):
        """The encoder's symbols of features y [N, h, w, C]: (qz, r, level, mean) int32 (module docstring)."""
        y = xp.asarray(y, xp.float32)
        z = self.analyze(y, part(state, "ha_"), xp)
        lower = xp.asarray(state["z_lower"], xp.int32)
        qz = xp.round(z - xp.asarray(state["z_medians"], xp.float32))
        qz = xp.clip(qz, lower, lower + xp.asarray(state["z_widths"], xp.int32) - 1).astype(xp.int32)
        level, mean = self.synthesize(qz, part(state, "hs_"), xp)
        r = xp.clip(xp.round(y - dequantize_mean(mean, xp)), -QMAX, QMAX).astype(xp.int32)
        return qz, r, level, mean


def part(state: dict, prefix: str) -> dict:
    """The integer weights of one hyper network, keyed as integer_net names them."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def dequantize_mean(mean, xp=np):
    return xp.asarray(mean, xp.float32) * np.float32(2.0**-inet.MEAN_FRAC)


def dequantize(r, mean, xp=np):
    """y_hat = r + mean, float32 (exact: |r| < 2^15 and the mean a multiple of 1/16 below 64)."""
    return xp.asarray(r, xp.float32) + dequantize_mean(mean, xp)


def max_bytes(shape, z_shape) -> int:
    """The longest stream: the state, a word per z symbol, two per y residual (a word and an escape)."""
    return rans.HEAD_BYTES + rans.WORD_BYTES * (int(np.prod(z_shape)) + 2 * int(np.prod(shape)))


def rows_table(state: dict, xp=np):
    """z's channel rows then the scale levels' rows, zero-padded to one width: [Cz + L, W] int32
    (numpy, or jax where the state is traced: the eval step's argument)."""
    z, y = xp.asarray(state["z_freqs"], xp.int32), xp.asarray(state["y_freqs"], xp.int32)
    width = max(z.shape[1], y.shape[1])
    pad = lambda a: xp.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
    return xp.concatenate([pad(z), pad(y)])


def entries(qz, r, level, state: dict, xp=np):
    """(row [T, N], index in its row [T, N], escaped [N, h, w, C]) of every symbol in decoding
    order: z's (qz [N, hz, wz, Cz], within their tables) then y's (r, level [N, h, w, C])."""
    lower = xp.asarray(state["z_lower"], xp.int32)
    half = xp.asarray(state["y_half"], xp.int32)
    cz = lower.shape[0]
    k = half[level]
    esc = (r < -k) | (r > k)
    rows = xp.concatenate(
        [coding_order(xp.broadcast_to(xp.arange(cz, dtype=xp.int32), qz.shape)), coding_order(cz + level)]
    )
    idx = xp.concatenate([coding_order(qz - lower), coding_order(xp.where(esc, 2 * k + 1, r + k))])
    return rows, idx, esc


def stream_bytes_np(qz, r, level, state: dict, precision: int) -> np.ndarray:
    """`stream_bytes` on the host (for a callback, which must not call back into JAX)."""
    freqs = rows_table(state).astype(np.uint32)
    cum = rans.cumulative(freqs)
    rows, idx, esc = entries(qz, r, level, state)
    n = rans.stream_bytes_np(freqs[rows, idx], cum[rows, idx], precision)
    return n + rans.WORD_BYTES * esc.sum(axis=(1, 2, 3), dtype=np.int32)


def encode_np(y, state: dict, structure: Structure, precision: int) -> list[bytes]:
    """Features [N, h, w, C] -> the hyperprior's streams (hyper_streams.py's format) in numpy: the
    same bytes as hyper_streams.Streams.encode (the host's compiled coder; tested), for the edge
    runtime, which runs without JAX."""
    qz, r, level, _ = structure.symbols(y, state)
    rows, idx, esc = entries(qz, r, level, state)
    freqs = rows_table(state).astype(np.uint32)
    x, words, emitted = rans.encode_np(freqs[rows, idx], rans.cumulative(freqs)[rows, idx], precision)
    tails = [
        coding_order(rk[None])[coding_order(ek[None])] + ESC_OFFSET if ek.any() else None for rk, ek in zip(r, esc)
    ]
    return rans.pack(x, words, emitted, tails)
