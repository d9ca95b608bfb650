"""Feature codecs behind one contract (see `base`). Build one from a config with `make_codec`.

Each codec module registers its class (`@register`); importing this package imports them all.
A config's codec block is `name` plus that codec's settings (`codec_settings(name)` lists them
with their defaults); anything else is a ConfigError.
"""

from __future__ import annotations

from bottlenet_jax.codecs.base import (
    REGISTRY,
    STAT_KEYS,
    STATE_COLLECTION,
    Codec,
    CodecLayer,
    codec_settings,
    make_codec,
    register,
)
from bottlenet_jax.codecs.channel import AwgnCodec, BecCodec
from bottlenet_jax.codecs.entropy.factorized import EntropyCodec
from bottlenet_jax.codecs.entropy.hyperprior import HyperpriorCodec
from bottlenet_jax.codecs.jpeg.codec import JpegCodec
from bottlenet_jax.codecs.lightweight import LightweightCodec
from bottlenet_jax.codecs.saved import read_saved, upgrade_settings
from bottlenet_jax.codecs.simple import IdentityCodec, Uint8Codec

__all__ = [
    "STAT_KEYS",
    "STATE_COLLECTION",
    "Codec",
    "CodecLayer",
    "IdentityCodec",
    "Uint8Codec",
    "JpegCodec",
    "LightweightCodec",
    "AwgnCodec",
    "EntropyCodec",
    "HyperpriorCodec",
    "BecCodec",
    "REGISTRY",
    "codec_settings",
    "make_codec",
    "read_saved",
    "register",
    "upgrade_settings",
]
