"""The scalar quantisers and the per-sample min-max scaling several codecs share, graph and host alike.

numpy only (JAX imported where a graph function needs it: the edge runtime imports this without
it). 8-bit: round(x * 255) clamped to 0..255 (no overflow at 1.0, unlike the round(x * 256) of some
published code), and back by multiplying with the float32 reciprocal of 255 on both sides: XLA
rewrites x / 255 into exactly that, so numpy must too, or the transport path would differ from the
graph in the last bit. Min-max: per sample (lo, scale) to map unbounded features to [0, 1]; its two
float32s are side information prepended to each payload.
"""

from __future__ import annotations

import numpy as np

MINMAX_BYTES = 8  # the side information of per-sample min-max scaling: (lo, scale) as two float32
_INV255 = np.float32(1.0 / 255.0)


def quantize_u8(x):
    """[0, 1] -> uint8 by round(x * 255), clamped (in the graph: jax arrays)."""
    import jax.numpy as jnp

    return jnp.clip(jnp.round(x.astype(jnp.float32) * 255.0), 0, 255).astype(jnp.uint8)


def quantize_u8_np(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


def dequantize_u8(u8, dtype=None):
    import jax.numpy as jnp

    return (u8.astype(jnp.float32) * _INV255).astype(dtype or jnp.float32)


def dequantize_u8_np(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) * _INV255


def minmax_range(x):
    """Per-sample (lo, scale) for min-max scaling to [0, 1], numpy or jax alike: (x - lo) / scale.
    scale = max - min floored at 1e-12, so a constant sample maps to 0 and back to exactly lo.
    The one implementation every codec's `minmax` option uses (graph and transport paths)."""
    xp = np if isinstance(x, np.ndarray) else _jnp()
    lo = xp.min(x, axis=(-3, -2, -1), keepdims=True)
    return lo, xp.maximum(xp.max(x, axis=(-3, -2, -1), keepdims=True) - lo, xp.float32(1e-12))


def minmax_pack(x: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Transport side of the `minmax` option: (x scaled to [0, 1] per sample, each sample's 8 bytes
    of side information to put before its payload)."""
    lo, scale = minmax_range(x)
    side = np.stack([lo.reshape(-1), scale.reshape(-1)], -1).astype("<f4")
    return (x - lo) / scale, [s.tobytes() for s in side]


def minmax_unpack(payloads) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """The receiver's side: (lo [n,1,1,1], scale [n,1,1,1], the payloads without their side info)."""
    side = np.stack([np.frombuffer(p[:MINMAX_BYTES], "<f4") for p in payloads]).reshape(-1, 2, 1, 1, 1)
    return side[:, 0], side[:, 1], [p[MINMAX_BYTES:] for p in payloads]


def _jnp():
    import jax.numpy as jnp

    return jnp
