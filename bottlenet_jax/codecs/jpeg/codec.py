"""Real JPEG (libjpeg-turbo, as OpenCV writes it) in the training step, on the host or on the device.

Per sample: features in [0, 1] -> round(x*255) uint8 -> its C' channels tiled into one grey image
-> baseline JPEG at `quality` -> decoded -> un-tiled -> /255, with a straight-through gradient.
Two backends compute it, with the same pixels and byte counts bit for bit (tests/test_jpeg_device.py):

  ``host``    one `jax.pure_callback` per device batch runs cv2.imencode/imdecode on the host, in one
              contiguous chunk per worker (`pool`: threads or spawned processes, `workers` of them;
              per-image tasks cost more in scheduling than they save). The product's first design;
              on an accelerator the step waits for the device->host->device round trip.
  ``device``  `xla.jpeg_device`: libjpeg's integer DCT/quantiser/IDCT and the exact file size
              in XLA, so no host round trip: the codec runs at the accelerator's speed.

Transport (`encode` / `decode`) is always cv2: real bitstreams that decode to the graph's x_hat.

Layouts ([OPEN] in the papers, so a config value):
  ``grid``: a near-square grid of H x W tiles (ceil(sqrt(C')) columns; spare tiles are zero),
  ``rows``: the authors' layout, channels stacked vertically: (C'.H) x W per sample.

Byte counts, both per sample:
  ``bytes_full``: the complete JFIF file cv2 writes.
  ``bytes_payload``: the *abbreviated* stream (ITU T.81 B.4): the tables that are fixed by q
  (DQT, and DHT when the default Huffman tables are used) and the JFIF APP0 header are dropped;
  the receiver, knowing q, re-inserts them (`rebuild_full`) and gets the identical file back.
  With ``optimize=True`` Huffman tables are image-specific, so DHT stays in the payload.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import Codec, first_samples, register
from bottlenet_jax.codecs.jpeg import huffman
from bottlenet_jax.codecs.jpeg.host import POOLS, code_tiles
from bottlenet_jax.codecs.jpeg.jfif import (
    FRAMING_BYTES,
    SEGMENT_BYTES,
    check_abbreviated,
    encode_maps,
    framing,
    omitted_bytes,
    params,
    rebuild_full,
)
from bottlenet_jax.codecs.jpeg.scan import DHT_SEGMENT
from bottlenet_jax.codecs.jpeg.tiling import LAYOUTS, tile, untile
from bottlenet_jax.codecs.jpeg.xla import jpeg_device
from bottlenet_jax.codecs.quantize import (
    MINMAX_BYTES,
    dequantize_u8,
    dequantize_u8_np,
    minmax_range,
    minmax_unpack,
    quantize_u8,
    quantize_u8_np,
)
from bottlenet_jax.codecs.straight_through import match_varying, straight_through
from bottlenet_jax.errors import ConfigError

BACKENDS = ("host", "device")


def jpeg_roundtrip_np(
    u8: np.ndarray, quality: int, layout: str = "grid", optimize: bool = False, workers: int = 0, pool: str = "threads"
):
    """Host side: uint8 [..., h, w, c] -> (decoded uint8 same shape, bytes_full, bytes_payload):
    tiled, coded by cv2 on the worker pool (host.py), un-tiled."""
    lead, (h, w, c) = u8.shape[:-3], u8.shape[-3:]
    imgs = tile(np.ascontiguousarray(u8.reshape((-1, h, w, c))), layout)
    out, full = code_tiles(imgs, params(quality, optimize), workers, pool)
    dec = untile(out, h, w, c, layout).reshape(u8.shape)
    return dec, full.reshape(lead), (full - omitted_bytes(optimize)).reshape(lead)


@register
@dataclasses.dataclass(frozen=True, eq=False)
class JpegCodec(Codec):
    """Real JPEG with a straight-through gradient, coded on the host or on the device (module docstring)."""

    name: ClassVar[str] = "jpeg"
    sweep_field: ClassVar[str] = "quality"
    quality: int = 90
    # (lo, hi): training draws the quality per step (per device) from lo..hi, so one model serves
    # every quality it is evaluated at (eval uses `quality`); (): train at `quality`
    quality_range: tuple = ()
    layout: str = "grid"
    optimize: bool = False
    # Huffman tables fitted to the training split's symbols at `quality` (the codec's state, sent
    # once as its DHT segments): the payload's scan is coded under them (huffman.py); the
    # pixels are the same as with the default tables (Huffman coding is lossless)
    fitted_tables: bool = False
    fit_examples: int = 0  # training samples the tables are fitted to (0: the whole training split)
    backend: str = "host"  # host: cv2 in a callback | device: xla.py in the graph (same bits, no round trip)
    workers: int = 0  # host backend: threads or processes (`pool`) coding in parallel; 0: one per host core
    pool: str = "threads"  # host backend: threads | processes (many-core hosts; see jpeg_roundtrip_np)
    # Scale each sample by its own (min, max) before 8-bit: for features not already in [0, 1]
    # (raw RBk features, no reduction unit). Its min and scale (base.minmax_range), two float32s,
    # are side information: 8 bytes,
    # counted in both byte counts and prepended to each payload.
    minmax: bool = False

    def __post_init__(self):
        if not (isinstance(self.quality, (int, np.integer)) and 1 <= self.quality <= 100):
            raise ConfigError(f"codec.quality={self.quality!r}: JPEG quality must be an integer in 1..100")
        q = tuple(self.quality_range)
        if q and not (len(q) == 2 and all(isinstance(v, (int, np.integer)) for v in q) and 1 <= q[0] <= q[1] <= 100):
            raise ConfigError(f"codec.quality_range={q!r}: must be () or (lo, hi), integers, 1 <= lo <= hi <= 100")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"codec.layout={self.layout!r}: must be one of {', '.join(LAYOUTS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"codec.backend={self.backend!r}: must be one of {', '.join(BACKENDS)}")
        if self.minmax and self.backend == "device":
            # XLA rewrites x / s into x * (1 / s) and contracts a * b + c into an FMA, so a float
            # rescale in the graph cannot promise numpy's rounding; the host path does it in numpy.
            raise ConfigError(
                "codec.minmax=True: per-sample scaling needs codec.backend='host' (in XLA "
                "it would not be bit-identical to the receiver's decode)"
            )
        if self.fitted_tables and (self.optimize or self.minmax):
            raise ConfigError(
                "codec.fitted_tables=True: not with codec.optimize (one kind of Huffman tables at a time) nor "
                "codec.minmax (its scaling is the host's; the fitted tables' byte count is the graph's)"
            )
        if self.pool not in POOLS:
            raise ConfigError(f"codec.pool={self.pool!r}: must be one of {', '.join(POOLS)}")
        if self.workers < 0:
            raise ConfigError(f"codec.workers={self.workers}: must be >= 0 (0 = one per core)")

    # ------------------------------------------------------------------ fitted Huffman tables (state)
    @property
    def fits_data(self) -> bool:
        return self.fitted_tables

    def fit(self, params, features):
        """Code lengths fitted to the symbols of the training features' tiles at `quality`."""
        if not self.fitted_tables:
            return {}
        hist = np.zeros((2, 256), np.int64)
        for z in first_samples(features, self.fit_examples):
            u8 = tile(quantize_u8_np(z), self.layout)
            hist += np.asarray(huffman.symbol_histogram(huffman.zigzag_blocks(jnp.asarray(u8), self.quality)))
        return {"lengths": huffman.fit_lengths(hist)}

    def side_info_bytes(self, state) -> int:
        return huffman.dht_bytes(state["lengths"]) if state else 0

    def __call__(self, x, *, train=False, rng=None, condition=None, params=None, state=None):
        quality = self.quality
        if train and self.quality_range:
            if rng is None:
                raise ValueError(
                    "jpeg codec: quality_range draws the quality in training and needs rngs={'codec': key}"
                )
            quality = jax.random.randint(rng, (), self.quality_range[0], self.quality_range[1] + 1)
        x_hat, stats = straight_through(lambda v: self.roundtrip(v, state, quality))(x)
        if self.fitted_tables and state and not train:  # the scan under the fitted tables (exact, in XLA)
            stats = self.fitted_bytes(x, state, stats)
        return x_hat, stats

    def fitted_bytes(self, x, state, stats):
        """Byte counts of the payload with the scan coded under the fitted tables: the framing of
        the abbreviated stream + that scan; the full file adds the JFIF header, the DQT and the
        fitted tables' DHT."""
        zz = huffman.zigzag_blocks(tile(quantize_u8(jax.lax.stop_gradient(x)), self.layout), self.quality)
        scan = huffman.scan_bytes(zz, state["lengths"])
        payload = FRAMING_BYTES + scan
        full = payload + SEGMENT_BYTES["APP0"] + SEGMENT_BYTES["DQT"] + 2 * DHT_SEGMENT
        full = full + jnp.sum(jnp.asarray(state["lengths"]) > 0)
        return {**stats, "bytes_payload": match_varying(payload, x), "bytes_full": match_varying(full, x)}

    def host_fn(self, u8, quality=None):
        q = self.quality if quality is None else int(np.ravel(quality)[0])  # (vmap hands it as [1])
        return jpeg_roundtrip_np(np.asarray(u8), q, self.layout, self.optimize, self.workers, self.pool)

    def roundtrip(self, x, state=None, quality=None):
        """`quality`: an int or a traced int32 scalar (training's draw from quality_range)."""
        quality = jnp.asarray(self.quality if quality is None else quality, jnp.int32)
        if self.backend == "device":
            return self.device_roundtrip(x, quality)
        lead = x.shape[:-3]
        counts = (jax.ShapeDtypeStruct(lead, jnp.int32), jax.ShapeDtypeStruct(lead, jnp.int32))
        if self.minmax:  # scaling on the host too, so `decode` reproduces it bit for bit
            x32 = x.astype(jnp.float32)
            x_hat, full, payload = jax.pure_callback(
                self.minmax_host_fn,
                (jax.ShapeDtypeStruct(x.shape, jnp.float32), *counts),
                x32,
                quality,
                vmap_method="expand_dims",
            )
            return x_hat.astype(x.dtype), {"bytes_full": full, "bytes_payload": payload}
        u8 = quantize_u8(x)
        # `self.host_fn` is looked up at trace time, so tests can wrap it to count calls.
        dec, full, payload = jax.pure_callback(
            self.host_fn, (jax.ShapeDtypeStruct(u8.shape, jnp.uint8), *counts), u8, quality, vmap_method="expand_dims"
        )
        return dequantize_u8(dec, x.dtype), {"bytes_full": full, "bytes_payload": payload}

    def minmax_host_fn(self, x, quality=None):
        x = np.asarray(x, np.float32)
        lo, scale = minmax_range(x)
        dec, full, payload = self.host_fn(quantize_u8_np((x - lo) / scale), quality)
        return _unscale(dec, lo, scale), full + MINMAX_BYTES, payload + MINMAX_BYTES

    def device_roundtrip(self, x, quality=None):
        """The same computation as the host path, in XLA: no callback."""
        h, w, c = x.shape[-3:]
        quality = self.quality if quality is None else quality
        dec, full = jpeg_device(tile(quantize_u8(x), self.layout), quality, self.optimize)
        x_hat = dequantize_u8(untile(dec, h, w, c, self.layout), x.dtype)
        payload = full - omitted_bytes(self.optimize)
        return x_hat, {"bytes_full": full, "bytes_payload": payload}

    # ------------------------------------------------------------------ transport (off the graph)
    def encode(self, x, state=None):
        if not self.fitted_tables:
            return encode_maps(x, self.quality, self.optimize, self.layout, self.minmax)
        imgs = tile(quantize_u8_np(np.asarray(x, np.float32)), self.layout)  # (fitted tables exclude minmax)
        return huffman.write_streams(imgs, self.quality, self._lengths(state), framing)

    def _lengths(self, state):
        if not state:
            raise ValueError("jpeg codec: fitted_tables=True codes under tables fitted to training data; fit it first")
        return state["lengths"]

    def check_payload(self, payload, shape, state=None):
        h, w, c = shape
        body = payload[MINMAX_BYTES:] if self.minmax else payload
        if self.minmax and len(payload) < MINMAX_BYTES:
            raise ValueError(f"{len(payload)} bytes: shorter than the min-max side information")
        check_abbreviated(body, *tile(np.zeros((1, h, w, c), np.uint8), self.layout).shape[1:], self.optimize)

    def decode(self, payloads, shape, state=None):
        _, h, w, c = shape
        if self.minmax:
            lo, scale, payloads = minmax_unpack(payloads)
        want = tile(np.zeros((1, h, w, c), np.uint8), self.layout).shape[1:]
        dht = huffman.dht_segments(self._lengths(state)) if self.fitted_tables else None
        imgs = []
        for i, p in enumerate(payloads):  # checked one by one: a bad payload is named, not a shape clash
            try:
                full = rebuild_full(p, self.quality, self.optimize, dht)
            except ValueError as e:
                raise ValueError(f"payload {i} ({len(p)} bytes): {e}") from None
            img = cv2.imdecode(np.frombuffer(full, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None or img.shape != want:
                got = "nothing (not a decodable JPEG stream)" if img is None else f"a {img.shape} image"
                raise ValueError(f"payload {i} ({len(p)} bytes) decodes to {got}, expected a {want} tile image")
            imgs.append(img)
        dec = untile(np.stack(imgs), h, w, c, self.layout)
        return _unscale(dec, lo, scale) if self.minmax else dequantize_u8_np(dec)


def _unscale(u8, lo, scale):
    return (dequantize_u8_np(u8) * scale + lo).astype(np.float32)
