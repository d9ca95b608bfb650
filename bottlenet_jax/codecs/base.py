"""The codec contract shared by every feature codec, plus the two trivial codecs.

In the graph (inside jit / shard_map / vmap)::

    x_hat, stats = codec(x, train=..., rng=...)   # x, x_hat: [b, h, w, c]; stats: {key: int32[b]}

Off the graph (the real transport path)::

    payloads = codec.encode(x)            # list[bytes], one per sample
    x_hat = codec.decode(payloads, shape) # equals the in-graph x_hat bit for bit

Every codec reports the same stat keys (``STAT_KEYS``): ``bytes_full`` (a self-contained file per
sample) and ``bytes_payload`` (what a receiver that knows the codec settings needs). The model,
trainer and evaluator only ever see ``(x_hat, stats)`` and never branch on the codec type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.errors import ConfigError

STAT_KEYS = ("bytes_full", "bytes_payload")

#: name -> codec class, filled by @register as each codec module is imported (codecs/__init__).
REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a codec buildable by its `name` from a config."""
    if cls.name in REGISTRY:
        raise ValueError(f"codec name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def codec_settings(name: str, **overrides) -> dict:
    """The settings (and their defaults) codec `name` takes, name first, with `overrides`: what a
    config's codec block holds. Each codec owns its names and defaults; nothing outside codecs/
    lists them."""
    if name not in REGISTRY:
        raise ConfigError(f"codec.name={name!r}: unknown codec; valid: {', '.join(sorted(REGISTRY))}")
    out = {"name": name, **{f.name: f.default for f in dataclasses.fields(REGISTRY[name])}}
    unknown = sorted(set(overrides) - set(out))
    if unknown:
        raise ConfigError(
            f"codec.{unknown[0]}: not a setting of the {name} codec (its settings: "
            f"{', '.join(k for k in out if k != 'name') or 'none'})"
        )
    return {**out, **overrides}


# Before codecs owned their settings, every config carried one shared block with all of these.
_SHARED_BLOCK = {
    "quality",
    "layout",
    "optimize",
    "backend",
    "threads",
    "pool",
    "sigma",
    "sigma_range",
    "p",
    "p_range",
    "per_sample",
    "minmax",
}


def upgrade_settings(block: dict) -> dict:
    """A codec block as saved by an older version (a workdir's config.json, an export's manifest):
    the shared keys its codec does not take are dropped, `threads` is now `workers`, and settings
    added since are there with their defaults (so `--config.codec.NEW=...` applies to an old
    workdir too). Only saved files go through this; a config being written is checked strictly
    by `make_codec`."""
    block = dict(block)
    defaults = codec_settings(block.get("name", "identity"))
    if "threads" in block and "workers" in defaults:
        block.setdefault("workers", block.pop("threads"))
    return {**defaults, **{k: v for k, v in block.items() if k in defaults or k not in _SHARED_BLOCK}}


def make_codec(cfg=None, **overrides):
    """Build the codec a config mapping names (`name` + that codec's settings); an unknown
    setting is a one-line ConfigError, not silently ignored."""
    cfg = dict(cfg or {"name": "identity"})
    cfg.update(overrides)
    name = cfg.pop("name", "identity")
    if name == "jpeg_xla":  # configs and exports from before the exact device codec
        raise ConfigError(
            "codec.name='jpeg_xla' (a float emulation of JPEG) is gone: use codec.name='jpeg' with "
            "codec.backend='device', which is libjpeg bit for bit"
        )
    settings = codec_settings(name, **cfg)
    del settings["name"]
    return REGISTRY[name](**{k: _tuples(v) for k, v in settings.items()})


def _tuples(v):
    """JSON lists (a saved manifest, a config) back to the tuples a codec holds, at any depth."""
    return tuple(_tuples(e) for e in v) if isinstance(v, (list, tuple)) else v


def varying_axes(x) -> frozenset:
    """Manual mesh axes along which `x` varies (empty outside shard_map).

    Newer JAX spells this `typeof(x).vma`, 0.10 `typeof(x).manual_axis_type.varying`.
    """
    t = jax.typeof(x)
    vma = getattr(t, "vma", None)
    if vma is None:
        mat = getattr(t, "manual_axis_type", None)
        vma = mat.varying if mat is not None else frozenset()
    return frozenset(vma)


def match_varying(tree, like):
    """Give every leaf of `tree` the varying type of `like`.

    A host callback's result is typed device-invariant inside shard_map. Left so, the transpose
    of the implicit invariant->varying cast psums the cotangent: the gradient comes out N x too
    large. Casting in the primal and fwd rules keeps the types honest (see tests/test_parallel).
    """
    want = varying_axes(like)

    def fix(leaf):
        missing = tuple(sorted(want - varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(fix, tree)


def straight_through(roundtrip: Callable[[jax.Array], tuple[jax.Array, dict]]):
    """Wrap a non-differentiable `x -> (x_hat, stats)` so its backward pass is the identity.

    This is BottleNet's rule: the compressor/decompressor pair is treated as identity in backprop.
    """

    @jax.custom_vjp
    def f(x):
        return match_varying(roundtrip(x), x)

    def fwd(x):
        return match_varying(roundtrip(x), x), None

    def bwd(_, cotangents):
        g_x_hat, _ = cotangents
        return (g_x_hat,)

    f.defvjp(fwd, bwd)
    return f


def quantize_u8(x: jax.Array) -> jax.Array:
    """[0, 1] -> uint8 by round(x * 255), clamped (no overflow at 1.0, unlike round(x*256))."""
    return jnp.clip(jnp.round(x.astype(jnp.float32) * 255.0), 0, 255).astype(jnp.uint8)


def quantize_u8_np(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


# Multiply by the float32 reciprocal on both sides: XLA rewrites x / 255 into exactly this, so
# numpy must too, or the transport path would differ from the graph in the last bit.
_INV255 = np.float32(1.0 / 255.0)


def dequantize_u8(u8, dtype=jnp.float32):
    return (u8.astype(jnp.float32) * _INV255).astype(dtype)


def dequantize_u8_np(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) * _INV255


def minmax_range(x):
    """Per-sample (lo, scale) for min-max scaling to [0, 1], numpy or jax alike: (x - lo) / scale.
    scale = max - min floored at 1e-12, so a constant sample maps to 0 and back to exactly lo.
    The one implementation every codec's `minmax` option uses (graph and transport paths)."""
    xp = jnp if isinstance(x, jax.Array) else np
    lo = xp.min(x, axis=(-3, -2, -1), keepdims=True)
    return lo, xp.maximum(xp.max(x, axis=(-3, -2, -1), keepdims=True) - lo, xp.float32(1e-12))


MINMAX_BYTES = 8  # the side information of per-sample min-max scaling: (lo, scale) as two float32


def minmax_pack(x: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Transport side of the `minmax` option: (x scaled to [0, 1] per sample, each sample's 8 bytes
    of side information to put before its payload)."""
    lo, scale = minmax_range(x)
    side = np.stack([lo.reshape(-1), scale.reshape(-1)], -1).astype("<f4")
    return (x - lo) / scale, [s.tobytes() for s in side]


def minmax_unpack(payloads) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """The receiver's side: (lo [n,1,1,1], scale [n,1,1,1], the payloads without their side info)."""
    side = np.stack([np.frombuffer(p[:MINMAX_BYTES], "<f4") for p in payloads]).reshape(-1, 2, 1, 1, 1)
    return side[:, 0], side[:, 1], [p[MINMAX_BYTES:] for p in payloads]


def exact_size(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ValueError(f"{len(payload)} bytes: {what} of this shape are exactly {size} bytes")


def range_coded_size(payload: bytes, symbols: int, bits_per_symbol: int) -> None:
    """A range-coded stream (32-bit words) of `symbols` symbols, none costing more than `bits_per_symbol`."""
    limit = 4 * (-(-(bits_per_symbol * symbols + 64) // 32))
    if not payload or len(payload) % 4 or len(payload) > limit:
        raise ValueError(
            f"{len(payload)} bytes: a range-coded stream of {symbols} symbols is 4..{limit} bytes in 32-bit words"
        )


def per_sample(value: int, x) -> dict:
    """Constant per-sample byte counts for codecs whose size does not depend on content."""
    n = jnp.full(x.shape[:-3], value, jnp.int32)
    return {k: n for k in STAT_KEYS}


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """Base class: subclasses implement `roundtrip` (graph), `encode` and `decode` (host)."""

    name: ClassVar[str] = "base"
    #: the setting `eval.py --sweep` varies with the same weights ("" = nothing to sweep)
    sweep_field: ClassVar[str] = ""
    #: the setting a channel-conditioned encoder is given ("" = source codecs: no condition)
    condition_field: ClassVar[str] = ""
    #: what the reduction unit ends in, i.e. the codec's input domain: "sigmoid" ([0, 1], for the
    #: 8-bit codecs and channels) or "linear" (real values: the entropy codec quantises to integers)
    unit_output: ClassVar[str] = "sigmoid"
    #: whether stats carry "rate_bits" (float32[b], differentiable) that a rate term can train on
    differentiable_rate: ClassVar[bool] = False

    def layer(self, name: str = "codec") -> nn.Module:
        """The codec as a layer of the model. Codecs that own parameters (the entropy codec) return
        a module that creates them (they live in params[name]); the others a parameter-free wrapper,
        so a model's parameter tree is what it was before codecs could own parameters."""
        return CodecLayer(self, name=name)

    def with_params(self, params: dict) -> Codec:
        """The codec for transport given its trained parameters (params[name] of the model; {} for
        codecs without any): what `encode`/`decode` and an export's manifest need."""
        del params
        return self

    def __call__(self, x: jax.Array, *, train: bool = False, rng: Any = None, condition: Any = None):
        del train, rng, condition
        return straight_through(self.roundtrip)(x)

    @property
    def needs_fit(self) -> bool:
        """Whether this codec wants `fit` on training features before it codes for real (the
        entropy codec's fitted tables); the evaluator and the exporter ask, never the codec type."""
        return False

    def fit(self, params: dict, features: Iterable[np.ndarray]) -> Codec:
        """This codec fitted to `features` (batches [n, h, w, C] of what the edge sends, on training
        data) given its trained parameters (params[name]; {} for codecs without any)."""
        del params, features
        return self

    def condition(self, batch_shape, *, train: bool, rng: Any = None):
        """Per-sample channel condition the encoder may see (channel codecs); None for source codecs."""
        del batch_shape, train, rng
        return None

    def signal_power(self, x: jax.Array) -> jax.Array:
        """Per-sample mean square of what the codec puts on the link (channel codecs: the P of the SNR)."""
        return jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(-3, -2, -1))

    def roundtrip(self, x: jax.Array) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> list[bytes]:
        raise NotImplementedError

    def decode(self, payloads: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def check_payload(self, payload: bytes, shape: Sequence[int]) -> None:
        """Raise ValueError unless `payload` can be one sample of `shape` ([h, w, c]) from this
        codec, reading only its size and header (a server calls it before any decoding, so a
        payload's claims cannot make it allocate or compute more than the export's shape needs)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """JSON-able settings a receiver needs (written into export manifests)."""
        return {"name": self.name, **dataclasses.asdict(self)}


class CodecLayer(nn.Module):
    """A parameter-free codec as a model layer (see `Codec.layer`)."""

    codec: Codec

    def __call__(self, x, *, train: bool = False, rng: Any = None, condition: Any = None):
        return self.codec(x, train=train, rng=rng, condition=condition)


@register
@dataclasses.dataclass(frozen=True, eq=False)
class IdentityCodec(Codec):
    """Sends the float32 features as they are (4 bytes per element)."""

    name: ClassVar[str] = "identity"

    def __call__(self, x, *, train=False, rng=None, condition=None):
        h, w, c = x.shape[-3:]
        return x, per_sample(4 * h * w * c, x)

    def encode(self, x):
        return [np.ascontiguousarray(s, dtype="<f4").tobytes() for s in np.asarray(x)]

    def decode(self, payloads, shape):
        return np.stack([np.frombuffer(p, "<f4").reshape(shape[1:]) for p in payloads])

    def check_payload(self, payload, shape):
        exact_size(payload, 4 * int(np.prod(shape)), "float32 features")


@register
@dataclasses.dataclass(frozen=True, eq=False)
class Uint8Codec(Codec):
    """8-bit uniform quantization of [0, 1] features: 1 byte per element, straight-through."""

    name: ClassVar[str] = "uint8"

    def roundtrip(self, x):
        h, w, c = x.shape[-3:]
        return dequantize_u8(quantize_u8(x), x.dtype), per_sample(h * w * c, x)

    def encode(self, x):
        return [s.tobytes() for s in quantize_u8_np(x)]

    def decode(self, payloads, shape):
        u8 = np.stack([np.frombuffer(p, np.uint8).reshape(shape[1:]) for p in payloads])
        return dequantize_u8_np(u8)

    def check_payload(self, payload, shape):
        exact_size(payload, int(np.prod(shape)), "8-bit features")
