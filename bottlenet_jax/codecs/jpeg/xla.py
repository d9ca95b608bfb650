"""Baseline grayscale JPEG on the accelerator, bit for bit what OpenCV's libjpeg-turbo writes and reads.

    decoded, bytes_full = jpeg_device(images, quality)     # uint8 [..., H, W] -> same, int32 [...]

For every image, ``decoded == cv2.imdecode(cv2.imencode(".jpg", img, [IMWRITE_JPEG_QUALITY, q]))``
and ``bytes_full == len(that file)`` (tests/test_jpeg_device.py checks both on >10,000 images).
Why: the host codec stops the accelerator for a device->host->device round trip on every step,
while an emulation in floating point is not JPEG (its pixels differed from libjpeg's in about half
of all 8x8 blocks). Every step of baseline JPEG as libjpeg does it is integer arithmetic, so XLA
can do exactly the same, in int32 only: the same on CPU, GPU and TPU, under jit, vmap and shard_map.

The pipeline, each step as libjpeg-turbo 3.x implements it (reimplemented from its sources):
  1. pad to multiples of 8 by replicating the last row and column (jcprepct.c, jcsample.c), level
     shift by -128 (jcdctmgr.c, convsamp);
  2. the ISLOW forward DCT (jfdctint.c, Loeffler-Ligtenberg-Moschytz): rows then columns, constants
     with CONST_BITS = 13, pass-1 outputs scaled by 2^PASS1_BITS (2), each output rounded once by
     DESCALE (add half, arithmetic shift); results are 8x the orthonormal DCT;
  3. quantisation by divisors 8*Q (jcdctmgr.c). libjpeg-turbo multiplies by a reciprocal built so
     that the result is exactly sign(c) * floor((|c| + 4Q) / 8Q) (checked for every Q and |c|);
  4. the quality scaling of the Annex K luminance table (jcparam.c, baseline: entries 1..255);
  5. decoding: dequantise c*Q, the ISLOW inverse DCT (jidctint.c): columns then rows, DESCALE by
     11 and 18 bits, +128 and clamp to 0..255. The clamp is what the SIMD IDCT that OpenCV's build
     runs does (a saturating pack); libjpeg's C code instead wraps results beyond +-512 through
     its range-limit table, which is unreachable from real pixels in practice (see the test);
  6. the file size: fixed segments (SOI, JFIF APP0, DQT, SOF0, DHT, SOS, EOI) plus the
     entropy-coded scan, whose exact length `scan.scan_bytes` computes, Huffman codes,
     padding and 0xFF stuffing included, with the default tables or (``optimize``) per-image ones.
Intermediate int32 values stay below 2^31 by libjpeg's own scaling rule (8 + CONST_BITS +
PASS1_BITS <= 26 bits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.jpeg.jfif import SEGMENT_BYTES
from bottlenet_jax.codecs.jpeg.scan import ZIGZAG, scan_bytes

CONST_BITS, PASS1_BITS = 13, 2


# ITU T.81 Annex K.1, luminance, natural (row-major) order.
IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    np.int32,
).reshape(8, 8)


def _fix(x: float) -> int:
    return int(x * (1 << CONST_BITS) + 0.5)


C0298, C0390, C0541, C0765, C0899, C1175 = map(
    _fix, (0.298631336, 0.390180644, 0.541196100, 0.765366865, 0.899976223, 1.175875602)
)
C1501, C1847, C1961, C2053, C2562, C3072 = map(
    _fix, (1.501321110, 1.847759065, 1.961570560, 2.053119869, 2.562915447, 3.072711026)
)


def quant_table(quality) -> jax.Array:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (force_baseline): int32 [8, 8].

    ``quality`` may be a Python int or a traced int32 (one compiled program for every quality).
    """
    q = jnp.clip(jnp.asarray(quality, jnp.int32), 1, 100)
    scale = jnp.where(q < 50, 5000 // q, 200 - 2 * q)
    return jnp.clip((jnp.asarray(IJG_LUMA) * scale + 50) // 100, 1, 255)


def _descale(x, n: int):
    return (x + (1 << (n - 1))) >> n


def _odd_part(a0, a1, a2, a3):
    """The shared rotation of both DCTs' odd part (a0..a3 = jfdctint's tmp4..tmp7, jidctint's tmp0..tmp3)."""
    z1, z2, z3, z4 = a0 + a3, a1 + a2, a0 + a2, a1 + a3
    z5 = (z3 + z4) * C1175
    z1, z2 = z1 * -C0899, z2 * -C2562
    z3, z4 = z3 * -C1961 + z5, z4 * -C0390 + z5
    return a0 * C0298 + z1 + z3, a1 * C2053 + z2 + z4, a2 * C3072 + z2 + z3, a3 * C1501 + z1 + z4


def fdct_1d(x, first_pass: bool):
    """jfdctint.c, one pass along the last axis of an int32 [..., 8] array."""
    d = [x[..., i] for i in range(8)]
    t0, t1, t2, t3 = d[0] + d[7], d[1] + d[6], d[2] + d[5], d[3] + d[4]
    t7, t6, t5, t4 = d[0] - d[7], d[1] - d[6], d[2] - d[5], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    n = CONST_BITS - PASS1_BITS if first_pass else CONST_BITS + PASS1_BITS
    if first_pass:
        o0, o4 = (t10 + t11) << PASS1_BITS, (t10 - t11) << PASS1_BITS
    else:
        o0, o4 = _descale(t10 + t11, PASS1_BITS), _descale(t10 - t11, PASS1_BITS)
    z1 = (t12 + t13) * C0541
    o2, o6 = _descale(z1 + t13 * C0765, n), _descale(z1 - t12 * C1847, n)
    o7, o5, o3, o1 = (_descale(v, n) for v in _odd_part(t4, t5, t6, t7))
    return jnp.stack([o0, o1, o2, o3, o4, o5, o6, o7], -1)


def idct_1d(x, first_pass: bool):
    """jidctint.c, one pass along the last axis of dequantised int32 [..., 8] coefficients."""
    c = [x[..., i] for i in range(8)]
    z1 = (c[2] + c[6]) * C0541
    t2, t3 = z1 - c[6] * C1847, z1 + c[2] * C0765
    t0, t1 = (c[0] + c[4]) << CONST_BITS, (c[0] - c[4]) << CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
    n = CONST_BITS - PASS1_BITS if first_pass else CONST_BITS + PASS1_BITS + 3
    out = (t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3)
    return jnp.stack([_descale(v, n) for v in out], -1)


def _transposed(f, x, first_pass):
    return jnp.swapaxes(f(jnp.swapaxes(x, -1, -2), first_pass), -1, -2)


def forward(blocks, qtable):
    """Level-shifted int32 [..., 8, 8] blocks -> quantised coefficients (natural order)."""
    coef = _transposed(fdct_1d, fdct_1d(blocks, True), False)  # rows, then columns
    div = 8 * qtable
    return jnp.sign(coef) * ((jnp.abs(coef) + div // 2) // div)


def inverse(qcoef, qtable):
    """Quantised coefficients [..., 8, 8] -> decoded pixels int32 0..255."""
    rows = _transposed(idct_1d, qcoef * qtable, True)  # columns, then rows
    return jnp.clip(idct_1d(rows, False) + 128, 0, 255)


def jpeg_device(images, quality, optimize: bool = False):
    """JPEG-code grey images exactly as cv2.imencode / cv2.imdecode do; see the module docstring.

    ``images`` uint8 [..., H, W]; ``quality`` 1..100 (int or traced int32); ``optimize``: cv2's
    IMWRITE_JPEG_OPTIMIZE (per-image Huffman tables). Returns (decoded uint8 [..., H, W],
    bytes_full int32 [...]: the length of the complete JFIF file).
    """
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8 or images.ndim < 2 or 0 in images.shape[-2:]:
        raise ValueError(
            f"jpeg_device: images must be uint8 [..., H, W] with H, W >= 1; got {images.dtype}{list(images.shape)}"
        )
    *lead, h, w = images.shape
    hp, wp = h + (-h % 8), w + (-w % 8)
    padded = jnp.pad(images, [(0, 0)] * len(lead) + [(0, hp - h), (0, wp - w)], mode="edge")
    blocks = (padded.astype(jnp.int32) - 128).reshape(*lead, hp // 8, 8, wp // 8, 8).swapaxes(-3, -2)
    qtable = quant_table(quality)
    qcoef = forward(blocks, qtable)  # [..., bh, bw, 8, 8]
    pixels = inverse(qcoef, qtable).swapaxes(-3, -2).reshape(*lead, hp, wp)[..., :h, :w]
    zz = qcoef.reshape(*lead, (hp // 8) * (wp // 8), 64)[..., ZIGZAG]  # scan order, zig-zag
    entropy, dht = scan_bytes(zz, optimize)
    return pixels.astype(jnp.uint8), sum(SEGMENT_BYTES.values()) + dht + entropy
