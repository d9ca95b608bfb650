"""The two trivial codecs: float32 features as they are, and 8-bit uniform quantisation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from bottlenet_jax.codecs.base import Codec, exact_size, per_sample, register
from bottlenet_jax.codecs.quantize import dequantize_u8, dequantize_u8_np, quantize_u8, quantize_u8_np


@register
@dataclasses.dataclass(frozen=True, eq=False)
class IdentityCodec(Codec):
    """Sends the float32 features as they are (4 bytes per element)."""

    name: ClassVar[str] = "identity"

    def __call__(self, x, *, train=False, rng=None, condition=None, params=None, state=None):
        h, w, c = x.shape[-3:]
        return x, per_sample(4 * h * w * c, x)

    def encode(self, x, state=None):
        return [np.ascontiguousarray(s, dtype="<f4").tobytes() for s in np.asarray(x)]

    def decode(self, payloads, shape, state=None):
        return np.stack([np.frombuffer(p, "<f4").reshape(shape[1:]) for p in payloads])

    def check_payload(self, payload, shape, state=None):
        exact_size(payload, 4 * int(np.prod(shape)), "float32 features")


@register
@dataclasses.dataclass(frozen=True, eq=False)
class Uint8Codec(Codec):
    """8-bit uniform quantization of [0, 1] features: 1 byte per element, straight-through."""

    name: ClassVar[str] = "uint8"

    def roundtrip(self, x, state=None):
        h, w, c = x.shape[-3:]
        return dequantize_u8(quantize_u8(x), x.dtype), per_sample(h * w * c, x)

    def encode(self, x, state=None):
        return [s.tobytes() for s in quantize_u8_np(x)]

    def decode(self, payloads, shape, state=None):
        u8 = np.stack([np.frombuffer(p, np.uint8).reshape(shape[1:]) for p in payloads])
        return dequantize_u8_np(u8)

    def check_payload(self, payload, shape, state=None):
        exact_size(payload, int(np.prod(shape)), "8-bit features")
