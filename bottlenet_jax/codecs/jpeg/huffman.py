"""Baseline JPEG scans under any Huffman tables: the tables fitted to training images, their exact
byte counts in XLA, and real streams that cv2 decodes.

Huffman coding is lossless: the decoded pixels of a JPEG stream depend on the quantised DCT
coefficients only (libjpeg's, computed bit for bit by xla.py), never on the tables. So a codec may
keep cv2's pixels and send its scan under other tables. `fit_lengths` fits them to a histogram of
the symbols training images emit (Huffman's code lengths limited to 16 bits by T.81 Annex K.2, with
one pseudo-count on every symbol baseline JPEG can emit, so any image stays codable); the tables are
sent once, as the entropy codec's are: a DHT segment of `dht_bytes`. A stream under them is the
abbreviated stream of jfif.py with its scan re-coded (`write_streams`); a receiver puts the DHT
segments back (`dht_segments`) and cv2 decodes it to the same pixels as the standard stream.

State: `lengths` int32 [2, 256], the code length of every DC (row 0) and AC (row 1) symbol (0: not
coded); codes are canonical in (length, symbol) order, as a DHT segment lists them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.jpeg.scan import (
    AC_SYMBOLS,
    DC_SYMBOLS,
    DHT_SEGMENT,
    MAX_CODE_LEN,
    ZIGZAG,
    canonical_codes,
    fields_symbols,
    length_counts,
    stream_bytes,
)
from bottlenet_jax.codecs.jpeg.xla import forward, quant_table


@jax.jit
def zigzag_blocks(images, quality):
    """uint8 [..., H, W] grey images -> libjpeg's quantised coefficients, int32 [..., blocks, 64] in
    scan (row-major block) and zig-zag order, as xla.jpeg_device computes them."""
    *lead, h, w = images.shape
    hp, wp = h + (-h % 8), w + (-w % 8)
    padded = jnp.pad(images, [(0, 0)] * len(lead) + [(0, hp - h), (0, wp - w)], mode="edge")
    blocks = (padded.astype(jnp.int32) - 128).reshape(*lead, hp // 8, 8, wp // 8, 8).swapaxes(-3, -2)
    qcoef = forward(blocks, quant_table(quality))
    return qcoef.reshape(*lead, (hp // 8) * (wp // 8), 64)[..., ZIGZAG]


@jax.jit
def symbol_histogram(zz):
    """Counts of the emitted DC and AC symbols of blocks [..., blocks, 64], int32 [2, 256]."""
    index, _, _, emitted = fields_symbols(zz)
    return jnp.zeros(513, jnp.int32).at[jnp.where(emitted, index, 512).ravel()].add(1)[:512].reshape(2, 256)


def fit_lengths(hist) -> np.ndarray:
    """Code lengths [2, 256] fitted to a histogram [2, 256] of symbol counts (any total): Huffman
    code lengths of the counts plus one on every valid symbol, limited to 16 bits with no all-ones
    code as T.81 Annex K.2 prescribes (a reserved pseudo-symbol, then its adjust-BITS procedure).

    Why a second Annex K.2 beside scan.optimal_tables (XLA): this one runs once, on the host, over
    a whole training split's histogram, whose counts (tens of millions of AC symbols) exceed the
    int32 range the in-graph builder packs its sort keys into; it is also libjpeg's loop as
    written. scan.optimal_tables builds a table per image inside the compiled step with a fixed
    amount of work (no data-dependent loop), which this loop cannot do."""
    hist = np.asarray(hist, np.float64)
    out = np.zeros((2, 256), np.int32)
    for t, symbols in enumerate((DC_SYMBOLS, AC_SYMBOLS)):
        counts = hist[t, symbols] + 1  # every symbol keeps a code: an image unlike the training ones still codes
        size = _huffman_sizes(np.append(counts, 1.0))  # + the pseudo-symbol that reserves the all-ones code
        bits = np.bincount(size, minlength=33)
        for i in range(len(bits) - 1, MAX_CODE_LEN, -1):  # Annex K.2, Figure K.3: no code longer than 16 bits
            while bits[i] > 0:
                j = i - 2
                while bits[j] == 0:
                    j -= 1
                bits[i] -= 2
                bits[i - 1] += 1
                bits[j + 1] += 2
                bits[j] -= 1
        bits[np.flatnonzero(bits).max()] -= 1  # the pseudo-symbol's code, the longest
        order = np.lexsort((symbols, size[:-1]))  # HUFFVAL: by code size, then symbol
        out[t, symbols[order]] = np.repeat(np.arange(len(bits)), bits)[: len(symbols)]
    return out


def _huffman_sizes(counts) -> np.ndarray:
    """Huffman code sizes of `counts` (Annex K.2, Figure K.1's result; ties in any order)."""
    import heapq

    heap = [(float(c), i, [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    size = np.zeros(len(counts), np.int64)
    while len(heap) > 1:
        c1, k1, a = heapq.heappop(heap)
        c2, k2, b = heapq.heappop(heap)
        size[a + b] += 1
        heapq.heappush(heap, (c1 + c2, min(k1, k2), a + b))
    return size


def codes_of(lengths, xp=np):
    """Canonical codes uint32 [2, 256] of code lengths [2, 256] (numpy or jax alike)."""
    lengths = xp.asarray(lengths)
    key = xp.where(lengths > 0, lengths * 256 + xp.arange(256), -1)
    codes, _ = canonical_codes(key, length_counts(lengths, MAX_CODE_LEN, xp), xp)
    return codes


@jax.jit
def scan_bytes(zz, lengths):
    """Bytes of the entropy-coded segment of blocks [..., blocks, 64] under tables of these code
    lengths (padding and 0xFF stuffing included), in XLA."""
    lengths = jnp.asarray(lengths, jnp.int32).reshape(512)
    codes = codes_of(lengths.reshape(2, 256), jnp).reshape(512)
    index, size, mag, emitted = fields_symbols(zz)
    length = jnp.where(emitted, lengths[index] + size, 0)
    value = jnp.where(emitted, (codes[index] << size.astype(jnp.uint32)) | mag, 0).astype(jnp.uint32)
    return stream_bytes(value, length)


def dht_bytes(lengths) -> int:
    """Bytes of the two DHT segments (DC, AC) that carry these tables: the side information."""
    return 2 * DHT_SEGMENT + int((np.asarray(lengths) > 0).sum())


def dht_segments(lengths) -> bytes:
    """The DHT segments (T.81 B.2.4.2) of these tables: DC table 0, then AC table 0."""
    lengths = np.asarray(lengths)
    out = []
    for t in range(2):
        coded = np.flatnonzero(lengths[t] > 0)
        huffval = coded[np.lexsort((coded, lengths[t, coded]))]
        bits = length_counts(lengths[t], MAX_CODE_LEN)[1:]
        body = bytes([t << 4]) + bytes(bits.astype(np.uint8)) + bytes(huffval.astype(np.uint8))
        out.append(b"\xff\xc4" + (2 + len(body)).to_bytes(2, "big") + body)
    return b"".join(out)


@jax.jit
def _fields(zz, lengths):
    lengths = lengths.reshape(512)
    codes = codes_of(lengths.reshape(2, 256), jnp).reshape(512)
    index, size, mag, emitted = fields_symbols(zz)
    value = (codes[index] << size.astype(jnp.uint32)) | mag
    return value.astype(jnp.uint32), jnp.where(emitted, lengths[index] + size, 0)


def pack_scan(value: np.ndarray, length: np.ndarray) -> bytes:
    """Bit fields (MSB first, in order; length 0 = none) -> the entropy-coded segment: padded with
    ones to a byte, every 0xFF followed by a stuffed 0x00."""
    keep = length > 0
    value, length = value[keep].astype(np.uint64), length[keep].astype(np.int64)
    total = int(length.sum())
    starts = np.cumsum(length) - length
    shift = np.repeat(length, length) - 1 - (np.arange(total) - np.repeat(starts, length))
    bits = ((np.repeat(value, length) >> shift.astype(np.uint64)) & 1).astype(np.uint8)
    bits = np.concatenate([bits, np.ones((-total) % 8, np.uint8)])
    packed = np.packbits(bits)
    return np.insert(packed, np.flatnonzero(packed == 0xFF) + 1, 0).tobytes()


def write_scans(images_u8, quality: int, lengths) -> list[bytes]:
    """The entropy-coded segment of each grey image [n, H, W] at `quality` under these tables."""
    zz = zigzag_blocks(jnp.asarray(images_u8), quality)
    value, length = (np.asarray(v) for v in _fields(zz, jnp.asarray(lengths, jnp.int32)))
    return [pack_scan(v.ravel(), n.ravel()) for v, n in zip(value, length)]


def write_streams(images_u8, quality: int, lengths, framing) -> list[bytes]:
    """Abbreviated streams (no JFIF header, DQT or DHT: SOI, frame header, scan header, the scan
    under these tables, EOI) of grey images [n, H, W]; `framing(h, w)` gives (SOI + SOF0 + ...
    up to and including SOS, EOI) for the image shape."""
    head, tail = framing(*np.shape(images_u8)[-2:])
    return [head + s + tail for s in write_scans(images_u8, quality, lengths)]
