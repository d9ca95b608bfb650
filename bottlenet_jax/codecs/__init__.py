"""Feature codecs behind one contract (see `base`). Build one from a config with `make_codec`."""
from __future__ import annotations

import dataclasses

from bottlenet_jax.codecs.base import STAT_KEYS, Codec, ConfigError, IdentityCodec, Uint8Codec
from bottlenet_jax.codecs.channel import AwgnCodec, BecCodec
from bottlenet_jax.codecs.jpeg import JpegCodec
from bottlenet_jax.codecs.lightweight import LightweightCodec

REGISTRY: dict[str, type[Codec]] = {c.name: c for c in (IdentityCodec, Uint8Codec, JpegCodec, LightweightCodec, AwgnCodec,
                                                    BecCodec)}


def make_codec(cfg=None, **overrides) -> Codec:
    """Build a codec from a config mapping with a `name` key; keys other codecs use are ignored."""
    cfg = dict(cfg or {"name": "identity"})
    cfg.update(overrides)
    name = cfg.pop("name", "identity")
    if name == "jpeg_xla":  # configs and exports from before the exact device codec
        raise ConfigError("codec.name='jpeg_xla' (a float emulation of JPEG) is gone: use codec.name='jpeg' with "
                          "codec.backend='device', which is libjpeg bit for bit")
    if name not in REGISTRY:
        raise ConfigError(f"codec.name={name!r}: unknown codec; valid: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in fields})


__all__ = ["STAT_KEYS", "Codec", "ConfigError", "IdentityCodec", "Uint8Codec", "JpegCodec", "LightweightCodec",
           "AwgnCodec", "BecCodec", "REGISTRY", "make_codec"]
