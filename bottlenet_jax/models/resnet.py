"""ResNet v1.5 (18/34/50/101/152) in Flax, runnable in pieces.

* v1.5: the stride of a downsampling bottleneck block sits on the 3x3 conv (as torchvision).
* Paddings are explicit and symmetric (k//2), as torchvision's, so imported weights give the same
  logits (tests/test_convert.py); module names follow torchvision's state_dict (`conv1`, `bn1`,
  `layer{s}_{i}/conv1`, `.../downsample_conv`, `fc`) so the import is a rename.
* Residual blocks are numbered RB1..RBn in forward order (ResNet-50: RB1..RB16).
  ``model(x, start=0, stop=k)`` runs the stem and RB1..RBk (the edge half);
  ``model(f, start=k)`` runs RB(k+1)..RBn and the head (the cloud half). Both halves use the same
  parameters as the whole, so split logits equal unsplit logits exactly.
* Two stems: ``imagenet`` (7x7/2 conv + 3x3/2 max-pool) and ``small`` (3x3/1 conv, no pool) for
  28-64 px inputs. ``width`` scales every stage (64 = the standard network).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STEMS = ("imagenet", "small")

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's kaiming_normal_


def uses_bottleneck(depth: int) -> bool:
    return depth >= 50


def block_layout(depth: int) -> list[tuple[int, int]]:
    """[(stage 1..4, index in stage)] for RB1..RBn."""
    return [(s + 1, i) for s, n in enumerate(STAGE_SIZES[depth]) for i in range(n)]


def block_name(stage: int, index: int) -> str:
    return f"layer{stage}_{index}"


def stem_stride(stem: str) -> int:
    return 4 if stem == "imagenet" else 1


def stride_after_block(depth: int, stem: str, k: int) -> int:
    """Total downsampling factor of the features after RBk (k=0: after the stem)."""
    stride = stem_stride(stem)
    for stage, index in block_layout(depth)[:k]:
        if index == 0 and stage > 1:
            stride *= 2
    return stride


def size_after_block(image_size: int, depth: int, stem: str, k: int) -> int:
    """Spatial size of the features after RBk (stride-2 convs round up, like SAME/k//2 padding)."""
    h = image_size
    if stem == "imagenet":
        h = -(-(-(-h // 2)) // 2)
    for stage, index in block_layout(depth)[:k]:
        if index == 0 and stage > 1:
            h = -(-h // 2)
    return h


def channels_after_block(depth: int, width: int, k: int) -> int:
    stage = block_layout(depth)[k - 1][0] if k > 0 else 1
    if k == 0:
        return width
    return width * 2 ** (stage - 1) * (4 if uses_bottleneck(depth) else 1)


def _pad(k: int):
    return ((k // 2, k // 2), (k // 2, k // 2))


class BasicBlock(nn.Module):
    filters: int
    strides: int
    conv: Callable
    norm: Callable

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_pad(3), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), padding=_pad(3), name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = self.conv(self.filters, (1, 1), (self.strides, self.strides), padding="VALID", name="downsample_conv")(
                x
            )
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    filters: int
    strides: int
    conv: Callable
    norm: Callable

    @nn.compact
    def __call__(self, x):
        out = self.filters * 4
        y = self.conv(self.filters, (1, 1), padding="VALID", name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_pad(3), name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(out, (1, 1), padding="VALID", name="conv3")(y)
        y = self.norm(name="bn3")(y)
        if x.shape[-1] != out or self.strides != 1:
            x = self.conv(out, (1, 1), (self.strides, self.strides), padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    depth: int = 50
    num_classes: int = 1000
    width: int = 64
    stem: str = "imagenet"
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # "data" under shard_map: BN statistics over the global batch

    @property
    def num_blocks(self) -> int:
        return sum(STAGE_SIZES[self.depth])

    @nn.compact
    def __call__(self, x, train: bool = False, start: int = 0, stop: int | None = None):
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
        norm = partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
        )
        x = x.astype(self.dtype)
        if start == 0:
            if self.stem == "imagenet":
                x = conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
                x = nn.relu(norm(name="bn1")(x))
                x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3))
            else:
                x = conv(self.width, (3, 3), padding=_pad(3), name="conv1")(x)
                x = nn.relu(norm(name="bn1")(x))
        block_cls = BottleneckBlock if uses_bottleneck(self.depth) else BasicBlock
        last = self.num_blocks if stop is None else stop
        for k, (stage, index) in enumerate(block_layout(self.depth), start=1):
            if start < k <= last:
                strides = 2 if (index == 0 and stage > 1) else 1
                x = block_cls(self.width * 2 ** (stage - 1), strides, conv, norm, name=block_name(stage, index))(x)
        if stop is not None:
            return x
        x = jnp.mean(x, axis=(-3, -2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return x.astype(jnp.promote_types(self.dtype, jnp.float32))
