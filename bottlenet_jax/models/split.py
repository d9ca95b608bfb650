"""The composed split model: edge -> reduction -> codec -> restoration -> cloud.

``part`` selects what runs (the same parameters serve all three):
  ``full``  x -> (logits, stats)   training / evaluation, the codec in the loop
  ``edge``  x -> z                 on the device: backbone up to RBk (+ reduction unit); a channel
                                   codec's condition comes from ``condition=`` or its eval setting
  ``cloud`` z_hat -> logits        on the server: (restoration unit +) RB(k+1).. + head
  ``trunk`` x -> RBk features      the edge without its reduction unit
  ``encoder`` RBk features -> z     the reduction unit alone (edge = encoder . trunk): lets a sweep
                                   over channel conditions run the backbone once
With ``split_after == 0`` the model is the plain backbone and stats is empty.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bottlenet_jax.codecs import Codec, CodecLayer, IdentityCodec, make_codec
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models.resnet import (
    STAGE_SIZES,
    STEMS,
    ResNet,
    channels_after_block,
    size_after_block,
    stride_after_block,
)
from bottlenet_jax.models.units import Reduction, Restoration

PARTS = ("full", "edge", "cloud", "trunk", "encoder")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}  # f64: tests/debugging (needs x64)


class SplitModel(nn.Module):
    backbone: ResNet
    split_after: int = 0
    unit_channels: int = 0  # C'; 0 = no bottleneck unit (codec on the raw RBk features)
    unit_kernel: int = 2
    unit_stride: int = 2
    unit_layers: int = 1
    unit_hidden: int = 0
    codec: Codec = IdentityCodec()
    condition_encoder: bool = True  # BottleNet++: the encoder sees the codec's channel condition, if any

    @nn.compact
    def __call__(self, x, train: bool = False, part: str = "full", condition=None):
        k, bb = self.split_after, self.backbone
        if not k:
            return bb(x, train), {}
        rng = self.make_rng("codec") if part == "full" and self.has_rng("codec") else None
        if condition is None and part != "cloud":
            k_cond = None if rng is None else jax.random.fold_in(rng, 1)
            condition = self.codec.condition(x.shape[:-3], train=train and part == "full", rng=k_cond)
        if part not in PARTS:
            raise ValueError(f"part={part!r}: must be one of {', '.join(PARTS)}")
        if part == "cloud":
            z = x
        else:
            z = x if part == "encoder" else bb(x, train, stop=k)
            if part == "trunk":
                return z
            if self.unit_channels:
                z = Reduction(
                    self.unit_channels,
                    self.unit_kernel,
                    self.unit_stride,
                    bb.dtype,
                    bb.bn_axis_name,
                    self.codec.unit_output,
                    self.unit_layers,
                    self.unit_hidden,
                    name="reduce",
                )(z, train, condition if self.condition_encoder else None)
            if part in ("edge", "encoder"):
                return z
        stats = {}
        if part == "full":
            with jax.named_scope("codec"):  # profiles attribute the codec's ops by this name
                z, stats = CodecLayer(self.codec, name="codec")(z, train=train, rng=rng, condition=condition)
            self.sow("intermediates", "x_hat", z)  # what the cloud half received (apply(..., mutable="intermediates"))
        if self.unit_channels:
            c = channels_after_block(bb.depth, bb.width, k)
            z = Restoration(
                c,
                self.unit_kernel,
                self.unit_stride,
                bb.dtype,
                bb.bn_axis_name,
                self.unit_layers,
                self.unit_hidden,
                name="restore",
            )(z, train)
        if part == "full":
            self.sow("intermediates", "restored", z)  # what RB(k+1) receives (feature distillation's target)
        logits = bb(z, train, start=k)
        return (logits, stats) if part == "full" else logits


def validate(cfg) -> None:
    """Raise ConfigError (one line, naming the valid range) for an impossible model config."""
    m, s = cfg.model, cfg.split
    if m.depth not in STAGE_SIZES:
        raise ConfigError(f"model.depth={m.depth}: must be one of {sorted(STAGE_SIZES)}")
    if m.stem not in STEMS:
        raise ConfigError(f"model.stem={m.stem!r}: must be one of {', '.join(STEMS)}")
    if m.dtype not in DTYPES:
        raise ConfigError(f"model.dtype={m.dtype!r}: must be one of {', '.join(DTYPES)}")
    if m.width <= 0 or m.num_classes <= 0:
        raise ConfigError(f"model.width={m.width}, model.num_classes={m.num_classes}: both must be > 0")
    n = sum(STAGE_SIZES[m.depth])
    if not 0 <= s.after <= n:
        raise ConfigError(f"split.after={s.after}: split point must be RB1..RB{n} for ResNet-{m.depth} (0 = no split)")
    if s.after and s.unit:
        if s.channels <= 0:
            raise ConfigError(f"split.channels={s.channels}: C' must be > 0 (or set split.unit=False)")
        if s.stride not in (1, 2):
            raise ConfigError(f"split.stride={s.stride}: must be 1 or 2")
        if s.kernel < 1:
            raise ConfigError(f"split.kernel={s.kernel}: must be >= 1")
        if s.get("layers", 1) < 1 or s.get("hidden", 0) < 0:
            raise ConfigError(f"split.layers={s.get('layers')}, split.hidden={s.get('hidden')}: need >= 1 and >= 0")
    h = size_after_block(cfg.image_size, m.depth, m.stem, s.after)
    unit_stride = s.stride ** s.get("layers", 1)
    if cfg.image_size <= 0 or (s.after and s.unit and h % unit_stride):
        total = stride_after_block(m.depth, m.stem, s.after) * unit_stride
        raise ConfigError(
            f"image_size={cfg.image_size}: features after RB{s.after} are {h}x{h}, not divisible by "
            f"the reduction stride {unit_stride}; use an image size divisible by {total} (or split.stride=1)"
        )


def build_model(cfg, bn_axis_name: str | None = "data", codec: Codec | None = None) -> SplitModel:
    """Model from a config (see configs/default.py); bad values fail here, before any compute."""
    validate(cfg)
    m, s = cfg.model, cfg.split
    backbone = ResNet(
        depth=m.depth,
        num_classes=m.num_classes,
        width=m.width,
        stem=m.stem,
        dtype=DTYPES[m.dtype],
        bn_axis_name=bn_axis_name,
    )
    codec = codec if codec is not None else make_codec(cfg.codec)
    return SplitModel(
        backbone,
        split_after=s.after,
        unit_channels=s.channels if (s.after and s.unit) else 0,
        unit_kernel=s.kernel,
        unit_stride=s.stride,
        unit_layers=int(s.get("layers", 1)),
        unit_hidden=int(s.get("hidden", 0)),
        codec=codec,
        condition_encoder=bool(s.get("condition", True)),
    )


def feature_shape(cfg) -> tuple[int, int, int]:
    """(h, w, c) of what crosses the network: after the reduction unit (or RBk if none)."""
    m, s = cfg.model, cfg.split
    h = size_after_block(cfg.image_size, m.depth, m.stem, s.after)
    if s.after and s.unit:
        f = s.stride ** s.get("layers", 1)
        return (h // f, h // f, s.channels)
    return (h, h, channels_after_block(m.depth, m.width, s.after))
