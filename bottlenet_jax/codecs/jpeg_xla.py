"""On-device JPEG emulation (`jpeg_xla`): the lossy path of baseline grayscale JPEG in XLA.

For training only: no host round trip in the step. Per sample, the same tiling as the host codec,
then: edge-replicate padding to multiples of 8 (as libjpeg), level shift -128, 8x8 DCT-II
(orthonormal, which is JPEG's definition) rounded to 1/8 units like libjpeg's integer DCT, quantisation by the IJG luminance table scaled with
libjpeg's quality formula (q<50: 5000/q %, else 200-2q %; entries clamped to 1..255), rounding
half away from zero, dequantisation, IDCT, +128, round and clamp to 0..255. Straight-through
gradient. Float DCTs against libjpeg-turbo's integer ones differ by a fraction of a grey level
(tests/test_jpeg_xla.py measures it on realistic maps).

Rate: the emulation makes no bitstream, so in training the real host codec codes `rate_samples`
samples of each device batch (one small callback) and every sample reports their mean; with
`rate_samples=0` training reports no rate (zeros). The callback stops the accelerator for ~6 ms
of a 58 ms ResNet-50 step on an H100 (benchmarks/README.md), so the trainer runs `unmeasured()`
(NaN bytes, no callback, same x_hat) on all steps but the logging ones. In eval (`train=False`)
this codec *is* the host codec: real JPEG output and real per-sample bytes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import ConfigError, straight_through
from bottlenet_jax.codecs.jpeg import JpegCodec, grid_shape

# ITU T.81 Annex K.1, luminance, natural (row-major) order.
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32).reshape(8, 8)


def quant_table(quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table with force_baseline."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((IJG_LUMA.astype(np.int64) * scale + 50) // 100, 1, 255).astype(np.float32)


def dct_matrix() -> np.ndarray:
    k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d.astype(np.float32)


def tile_jnp(x, layout):
    """[..., h, w, c] -> [..., H', W'] exactly as the host codec's `tile`."""
    *lead, h, w, c = x.shape
    if layout == "rows":
        return jnp.moveaxis(x, -1, -3).reshape(*lead, c * h, w)
    rows, cols = grid_shape(c)
    if rows * cols != c:
        x = jnp.concatenate([x, jnp.zeros((*lead, h, w, rows * cols - c), x.dtype)], axis=-1)
    x = x.reshape(*lead, h, w, rows, cols)
    n = len(lead)
    x = jnp.transpose(x, (*range(n), n + 2, n, n + 3, n + 1))
    return x.reshape(*lead, rows * h, cols * w)


def untile_jnp(img, h, w, c, layout):
    *lead, _, _ = img.shape
    n = len(lead)
    if layout == "rows":
        return jnp.moveaxis(img.reshape(*lead, c, h, w), -3, -1)
    rows, cols = grid_shape(c)
    x = img.reshape(*lead, rows, h, cols, w)
    x = jnp.transpose(x, (*range(n), n + 1, n + 3, n, n + 2)).reshape(*lead, h, w, rows * cols)
    return x[..., :c]


def jpeg_lossy(pixels, quality: int):
    """Grey images [..., H, W] (values 0..255 as float32) -> JPEG-decoded values, emulated."""
    *lead, H, W = pixels.shape
    ph, pw = -H % 8, -W % 8
    x = jnp.pad(pixels, [(0, 0)] * len(lead) + [(0, ph), (0, pw)], mode="edge") - 128.0
    bh, bw = (H + ph) // 8, (W + pw) // 8
    blocks = x.reshape(*lead, bh, 8, bw, 8)
    d, q = jnp.asarray(dct_matrix()), jnp.asarray(quant_table(quality))
    hi = jax.lax.Precision.HIGHEST
    coef = jnp.einsum("ui,...aibj,vj->...aubv", d, blocks, d, precision=hi)
    # libjpeg's ISLOW forward DCT emits integers in units of 1/8 (output scaled by 8): rounding
    # there first cuts the mismatch vs libjpeg-turbo 3-5x (q=90: 0.29 -> 0.08 grey levels, measured).
    coef = jnp.round(coef * 8.0) / 8.0
    qcoef = jnp.sign(coef) * jnp.floor(jnp.abs(coef) / q[:, None, :] + 0.5) * q[:, None, :]
    rec = jnp.einsum("ui,...aubv,vj->...aibj", d, qcoef, d, precision=hi)
    rec = jnp.clip(jnp.round(rec + 128.0), 0, 255).reshape(*lead, H + ph, W + pw)
    return rec[..., :H, :W]


@dataclasses.dataclass(frozen=True, eq=False)
class JpegXlaCodec(JpegCodec):
    """JPEG emulated on the accelerator for training; the real host codec in eval and for the rate."""

    name: ClassVar[str] = "jpeg_xla"
    rate_samples: int = 8
    measure_rate: bool = True  # False: no rate callback, NaN bytes (see `unmeasured`)

    def __post_init__(self):
        super().__post_init__()
        if self.minmax:
            raise ConfigError("codec.minmax: not supported by jpeg_xla (use jpeg)")
        if self.rate_samples < 0:
            raise ConfigError(f"codec.rate_samples={self.rate_samples}: must be >= 0")

    def __call__(self, x, *, train=False, rng=None, condition=None):
        if not train:
            return super().__call__(x, train=False, rng=rng)
        return straight_through(self.emulate)(x)

    def unmeasured(self):
        return dataclasses.replace(self, measure_rate=False) if self.rate_samples and self.measure_rate else self

    def emulate(self, x):
        h, w, c = x.shape[-3:]
        pixels = jnp.clip(jnp.round(x.astype(jnp.float32) * 255.0), 0, 255)
        rec = jpeg_lossy(tile_jnp(pixels, self.layout), self.quality)
        x_hat = (untile_jnp(rec, h, w, c, self.layout) * np.float32(1 / 255)).astype(x.dtype)
        return x_hat, self.sampled_rate(x)

    def sampled_rate(self, x):
        lead = x.shape[:-3]
        k = min(self.rate_samples, lead[-1] if lead else 1)
        if k == 0:
            z = jnp.zeros(lead, jnp.int32)
            return {"bytes_full": z, "bytes_payload": z}
        if not self.measure_rate:
            nan = jnp.full(lead, jnp.nan, jnp.float32)
            return {"bytes_full": nan, "bytes_payload": nan}
        _, stats = JpegCodec.roundtrip(self, jax.lax.stop_gradient(x[..., :k, :, :, :]))
        return {key: jnp.broadcast_to(jnp.round(jnp.mean(v.astype(jnp.float32), -1, keepdims=True)).astype(jnp.int32), lead)
                for key, v in stats.items()}
