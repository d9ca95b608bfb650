"""JPEG streams as cv2 writes them, and their abbreviated form (ITU T.81 B.4).

The payload a BottleNet sender puts on the wire is the *abbreviated* stream: the JFIF APP0 header
and the tables fixed by the quality (DQT, and DHT when the default Huffman tables are used) are
dropped; the receiver, knowing q, re-inserts them (`rebuild_full`) and gets the identical file.
With optimize=True the Huffman tables are image-specific, so DHT stays in the payload.
"""

from __future__ import annotations

import functools
import struct

import cv2
import numpy as np

# Segment sizes libjpeg writes for one grey baseline image (jcmarker.c), in bytes with markers.
SEGMENT_BYTES = {"SOI": 2, "APP0": 18, "DQT": 2 + 2 + 1 + 64, "SOF0": 2 + 2 + 6 + 3, "SOS": 2 + 2 + 1 + 2 + 3, "EOI": 2}
# What an abbreviated stream with the default tables still carries besides its scan: SOI, the frame
# header, the scan header and EOI, every byte fixed by the tile's shape (one component, baseline).
# Annex K's luminance DC and AC tables as libjpeg writes them: two DHT segments, 2 + 2 + 1 + 16 bytes
# of header each, then 12 and 162 symbols (scan.py derives the same from the tables; a test checks)
DEFAULT_DHT_BYTES = 2 * 21 + 12 + 162
FRAMING_BYTES = SEGMENT_BYTES["SOI"] + SEGMENT_BYTES["SOF0"] + SEGMENT_BYTES["SOS"] + SEGMENT_BYTES["EOI"]


def omitted_bytes(optimize: bool) -> int:
    """Bytes an abbreviated stream leaves out (JFIF APP0, DQT, and the DHT unless optimize)."""
    return SEGMENT_BYTES["APP0"] + SEGMENT_BYTES["DQT"] + (0 if optimize else DEFAULT_DHT_BYTES)


_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
_APP0, _DQT, _DHT = 0xE0, 0xDB, 0xC4


def params(quality: int, optimize: bool) -> list[int]:
    """cv2.imencode's parameters for baseline JPEG at `quality`, optimized Huffman tables or not."""
    return [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)]


def encode_image(img: np.ndarray, params: list[int]) -> np.ndarray:
    """One grey (or BGR) uint8 image -> its complete JFIF file (uint8 array)."""
    ok, enc = cv2.imencode(".jpg", img, params)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed on a {img.shape} {img.dtype} image")
    return enc


def segments(buf: bytes):
    """Yield (marker, start, end) for each marker segment before the scan data, then the SOS."""
    if buf[:2] != _SOI:
        raise ValueError("not a JPEG stream (no SOI marker)")
    i = 2
    while i < len(buf):
        if buf[i] != 0xFF:
            raise ValueError(f"corrupt JPEG stream: expected a marker at byte {i}")
        marker = buf[i + 1]
        length = int.from_bytes(buf[i + 2 : i + 4], "big")
        yield marker, i, i + 2 + length
        if marker == _SOS:
            return
        i += 2 + length


_SOF0 = 0xC0
# start-of-frame markers other than baseline's SOF0: extended, progressive, lossless, arithmetic...
_OTHER_SOF = {0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def check_abbreviated(payload: bytes, height: int, width: int, optimize: bool) -> None:
    """An abbreviated stream as our encoder writes it for a `height` x `width` grey tile image, or
    ValueError naming what is not: baseline SOF0, 8-bit, one component of exactly these dimensions,
    Huffman tables only with optimize, then the scan. Reads the marker segments only (O(header)),
    so a header claiming a huge image is refused before any decoding or allocation; the scan is
    bounded too (at most 8 bytes per pixel, far above what baseline JPEG of 8-bit pixels needs)."""
    limit = 8 * height * width + 1024
    if len(payload) > limit:
        raise ValueError(f"{len(payload)} bytes: more than a {height}x{width} tile's JPEG can be ({limit})")
    frame = None
    for marker, start, end in segments(payload):
        if end > len(payload) or end - start < 4:
            raise ValueError(f"marker 0x{marker:02X} segment runs past the end of the stream")
        if marker in _OTHER_SOF:
            raise ValueError(f"SOF marker 0x{marker:02X}: only baseline JPEG (SOF0) is sent by this codec")
        if marker == _SOF0:
            if end - start < 10:
                raise ValueError("SOF0 segment too short")
            precision, h, w, ncomp = (
                payload[start + 4],
                *struct.unpack(">HH", payload[start + 5 : start + 9]),
                payload[start + 9],
            )
            if (precision, h, w, ncomp) != (8, height, width, 1):
                raise ValueError(
                    f"SOF0 says {ncomp} component(s) of {w}x{h} at {precision} bits; this export's tiles are one "
                    f"8-bit component of {width}x{height}"
                )
            frame = (h, w)
        elif marker == _DHT and not optimize:
            raise ValueError("Huffman tables in the stream: this export sends the default tables (optimize=False)")
        elif marker == _SOS and frame is None:
            raise ValueError("scan before any SOF0 frame header")
        elif marker not in (_SOF0, _DHT, _SOS, _DQT, _APP0):
            raise ValueError(f"marker 0x{marker:02X}: not part of an abbreviated baseline stream")
    if frame is None:
        raise ValueError("no SOF0 frame header and no scan")


def _dropped(optimize: bool) -> tuple[int, ...]:
    return (_APP0, _DQT) if optimize else (_APP0, _DQT, _DHT)


def abbreviate(buf: bytes, optimize: bool) -> bytes:
    drop = _dropped(optimize)
    keep, last = [_SOI], 2
    for m, s, e in segments(buf):
        if m not in drop:
            keep.append(buf[s:e])
        last = e
    keep.append(buf[last:])
    return b"".join(keep)


@functools.cache
def _tables(quality: int, optimize: bool) -> tuple[bytes, bytes, bytes]:
    """(APP0, DQT, DHT) segments libjpeg writes at this quality: what the receiver already knows."""
    ok, enc = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8), params(quality, False))
    assert ok
    buf = enc.tobytes()
    got = {m: b"" for m in (_APP0, _DQT, _DHT)}
    for m, s, e in segments(buf):
        if m in got:
            got[m] += buf[s:e]
    return got[_APP0], got[_DQT], (b"" if optimize else got[_DHT])


@functools.cache
def framing(height: int, width: int) -> tuple[bytes, bytes]:
    """(SOI + frame header + scan header, EOI) of an abbreviated grey stream of this shape, as
    cv2 writes them (fixed by the shape; the same at every quality)."""
    ok, enc = cv2.imencode(".jpg", np.zeros((height, width), np.uint8), params(50, False))
    buf = abbreviate(enc.tobytes(), False)
    sos_end = list(segments(buf))[-1][2]
    return buf[:sos_end], _EOI


def rebuild_full(payload: bytes, quality: int, optimize: bool, dht: bytes | None = None) -> bytes:
    """Abbreviated stream + q -> the complete JFIF file, byte-identical to what cv2 wrote. `dht`:
    the DHT segments of tables the receiver holds instead of the default ones (fitted tables)."""
    app0, dqt, dht_default = _tables(quality, optimize)
    dht = dht_default if dht is None else dht
    segs = list(segments(payload))
    sof = [payload[s:e] for m, s, e in segs if m not in (_SOS, _DHT)]
    own_dht = [payload[s:e] for m, s, e in segs if m == _DHT]
    sos_start = segs[-1][1]
    return b"".join([_SOI, app0, dqt, *sof, dht, *own_dht, payload[sos_start:]])


def encode_maps(x, quality: int, optimize: bool = False, layout: str = "grid", minmax: bool = False) -> list[bytes]:
    """Feature maps [N, h, w, C] (in [0, 1], or any range with `minmax`) -> one abbreviated stream
    per sample, cv2 at `quality`: the JPEG codec's transport (under its standard or per-image
    tables) in numpy and cv2 alone, the host's and the edge runtime's."""
    from bottlenet_jax.codecs.jpeg.tiling import tile
    from bottlenet_jax.codecs.quantize import minmax_pack, quantize_u8_np

    x = np.asarray(x, np.float32)
    x, sides = minmax_pack(x) if minmax else (x, [b""] * len(x))
    p = params(quality, optimize)
    return [
        s + abbreviate(encode_image(img, p).tobytes(), optimize)
        for s, img in zip(sides, tile(quantize_u8_np(x), layout))
    ]
