"""Feature codecs behind one contract (see `base`). Build one from a config with `make_codec`.

Each codec module registers its class (`@register`); the first use of the registry imports them
all (`load_all`). A config's codec block is `name` plus that codec's settings (`codec_settings(name)`
lists them with their defaults); anything else is a ConfigError.

Importing this package imports nothing else: its names load on first use (PEP 562), so the
modules that need only numpy (quantize, webp, jpeg/jfif, jpeg/tiling, coding/rans_np,
entropy/tables, entropy/density, entropy/integer_net, entropy/hyper_model, lightweight/quantizer)
serve a process without JAX: the edge runtime (bottlenet_jax/edge).
"""

from __future__ import annotations

import importlib

# the modules that register a codec, in registry order
CODEC_MODULES = ("simple", "jpeg.codec", "lightweight.codec", "channel", "entropy.factorized", "entropy.hyperprior")
_NAMES = {
    "base": (
        "REGISTRY",
        "STAT_KEYS",
        "STATE_COLLECTION",
        "Codec",
        "CodecLayer",
        "codec_settings",
        "make_codec",
        "register",
    ),
    "channel": ("AwgnCodec", "BecCodec"),
    "entropy.factorized": ("EntropyCodec",),
    "entropy.hyperprior": ("HyperpriorCodec",),
    "jpeg.codec": ("JpegCodec",),
    "lightweight.codec": ("LightweightCodec",),
    "saved": ("read_saved", "upgrade_settings"),
    "simple": ("IdentityCodec", "Uint8Codec"),
}
__all__ = sorted(n for names in _NAMES.values() for n in names)


def load_all() -> None:
    """Import every codec module: each registers its class."""
    for m in CODEC_MODULES:
        importlib.import_module(f"{__name__}.{m}")


def __getattr__(name: str):
    module = next((m for m, names in _NAMES.items() if name in names), None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    load_all()
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
