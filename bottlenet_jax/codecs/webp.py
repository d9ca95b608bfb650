"""WebP (lossy VP8) for the input-image rival: the bitstream a receiver needs, counted as JPEG's
abbreviated stream is (jpeg/jfif.py).

OpenCV writes a lossy WebP (libwebp, quality 1..100) as a RIFF container: "RIFF", its size, "WEBP",
then one "VP8 " chunk (its size, the VP8 key frame, a pad byte if the size is odd). The key frame
starts with a 3-byte frame tag (key frame flag, version, first partition's size), a 3-byte start
code (9d 01 2a, fixed) and the width and height (2 bytes each, with 2 scaling bits: 0 here). A
receiver that knows the image size rebuilds all of that but the frame tag and what follows the
dimensions: the payload (`abbreviate`) is the frame tag + the rest of the frame, 27 bytes fewer than
the file. `rebuild` writes the file back byte for byte (tested: cv2 decodes it to the same pixels).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

START_CODE = b"\x9d\x01\x2a"
OMITTED_BYTES = 12 + 8 + 3 + 4  # RIFF header, chunk header, start code, dimensions


def encode_image(img: np.ndarray, quality: int) -> bytes:
    """A grey [h, w] or BGR [h, w, 3] uint8 image -> the WebP file cv2 writes at `quality`."""
    ok, enc = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2 could not encode this image as WebP")
    return enc.tobytes()


def abbreviate(file: bytes) -> bytes:
    """A lossy WebP file -> its payload (module docstring); ValueError for another kind of file."""
    if file[:4] != b"RIFF" or file[8:16] != b"WEBPVP8 " or file[23:26] != START_CODE:
        raise ValueError("not a simple lossy WebP file (RIFF / WEBP / 'VP8 ' chunk / key frame)")
    size = struct.unpack("<I", file[16:20])[0]
    frame = file[20 : 20 + size]
    if len(frame) < 10 or frame[7] >> 6 or frame[9] >> 6:
        raise ValueError("a scaled VP8 frame: its scaling bits would not be rebuilt")
    return frame[:3] + frame[10:]


def rebuild(payload: bytes, height: int, width: int) -> bytes:
    """The payload back to the WebP file cv2 wrote (module docstring)."""
    frame = payload[:3] + START_CODE + struct.pack("<HH", width, height) + payload[3:]
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame + (b"\x00" if len(frame) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def decode(file: bytes, grey: bool) -> np.ndarray:
    """A WebP file -> uint8 pixels ([h, w] grey, or [h, w, 3] BGR)."""
    flags = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    out = cv2.imdecode(np.frombuffer(file, np.uint8), flags)
    if out is None:
        raise ValueError("cv2 could not decode this WebP stream")
    return out
