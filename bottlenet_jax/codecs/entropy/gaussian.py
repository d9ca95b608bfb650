"""The Gaussian conditional of a hyperprior: a fixed table of scales and one integer table per scale.

The idea of CompressAI's GaussianConditional (read, not copied): an element's symbol r (its value
minus its mean, rounded) is coded under a zero-mean Gaussian convolved with U(-1/2, 1/2),
    P(r) = Phi((r + 1/2) / s) - Phi((r - 1/2) / s),
whose scale s is one of LEVELS scales spaced evenly in log between `scale_min` and `scale_max`. The
hyper-synthesis names the level directly (an integer, integer_net.py), so encoder and decoder pick
the same row whatever their hardware: nothing is recomputed from floats at the decoder.

Tables (`tables`, built once in float64 when the codec is fitted, then shipped as integers): level
l codes r in -K_l..K_l, K_l = ceil(s_l * Phi^-1(1 - tail_mass / 2)) (at most max_symbols / 2), as
frequencies summing to 2^precision (each >= 1), followed by an escape whose value goes after the
stream on 16 bits (entropy/tables.py's escape). Rows are zero-padded to the widest. Each row is
symmetric around 0 by construction (its binary form, `binary_bytes`, holds 0..K and the escape).

Training's rate is -log2 P(r) with r = y - mean + U(-1/2, 1/2) at the level's own scale (the
rounding of the level is straight-through), bounded below by `likelihood_bound`; at evaluation it is
the same at the rounded residual: the model the coder codes with, apart from the frequencies'
rounding to integers, the escapes' 16 bits and the stream's fixed cost (coding/rans.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.entropy.tables import integer_freqs

_SQRT1_2 = 1.0 / math.sqrt(2.0)


def scales(scale_min: float, scale_max: float, levels: int) -> np.ndarray:
    """The table of scales, float64 [levels], log-spaced from scale_min to scale_max."""
    return np.exp(np.linspace(np.log(scale_min), np.log(scale_max), levels))


def log_step(scale_min: float, scale_max: float, levels: int) -> float:
    return float(np.log(scale_max / scale_min) / max(levels - 1, 1))


def scale_of_level(level, scale_min: float, scale_max: float, levels: int):
    """The scale of a (float, straight-through) level in the graph: scale_min * e^(level * step)."""
    return scale_min * jnp.exp(level * log_step(scale_min, scale_max, levels))


def likelihood(r, scale):
    """P(round bin of r) under N(0, scale^2) * U(-1/2, 1/2), in the graph; computed on the lower tail
    (|r|), where the two Phi values do not both round to 1."""
    r = jnp.abs(r)
    upper = 0.5 * jax.scipy.special.erfc(-(0.5 - r) / scale * _SQRT1_2)
    lower = 0.5 * jax.scipy.special.erfc(-(-0.5 - r) / scale * _SQRT1_2)
    return upper - lower


def tables(scale_min: float, scale_max: float, levels: int, tail_mass: float, precision: int, max_symbols: int):
    """(half-widths K [levels] int32, frequencies [levels, max 2K + 2] int32): per level the symbols
    -K..K then the escape (module docstring). float64, deterministic."""
    z = _normal_quantile(1.0 - tail_mass / 2)
    rows, half = [], []
    for s in scales(scale_min, scale_max, levels):
        k = int(min(math.ceil(s * z), max_symbols // 2))
        # P(0..k), mirrored: the table is symmetric by construction (its binary form sends half)
        upper = [0.5 * math.erfc(-(j + 0.5) / s * _SQRT1_2) for j in range(-1, k + 1)]
        right = np.diff(np.array(upper))
        pmf = np.concatenate([right[:0:-1], right])
        probs = np.append(pmf, max(0.0, 1.0 - pmf.sum()))
        rows.append(integer_freqs(probs / probs.sum(), precision))
        half.append(k)
    freqs = np.zeros((levels, max(len(r) for r in rows)), np.int32)
    for i, r in enumerate(rows):
        freqs[i, : len(r)] = r
    return np.array(half, np.int32), freqs


def _normal_quantile(p: float) -> float:
    """Phi^-1(p) by bisection on erfc (p in (1/2, 1))."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid * _SQRT1_2) < p:
            lo = mid
        else:
            hi = mid
    return hi


def binary_bytes(half) -> int:
    """Bytes of the tables in the binary form a sender ships once: per level K (uint16), then the
    frequencies of 0..K and of the escape, minus one (uint16); the rest mirrors."""
    return 2 * len(half) + 2 * int(np.sum(np.asarray(half, np.int64) + 2))
