"""BottleNet's bottleneck unit: the learned layers either side of the codec.

reduction  = Conv(k x k, stride 1|2, C -> C') -> BatchNorm -> sigmoid   (values in [0, 1] for 8-bit;
             no sigmoid for a codec whose input is real-valued, `Codec.unit_output == "linear"`)
             BottleNet++: the conv sees [features || constant map of the channel condition]
restoration = ConvTranspose(k x k, stride 2) or Conv(stride 1), C' -> C -> BatchNorm -> ReLU

The exact layers are [OPEN] in the BottleNet paper; this reading follows BottleNet++'s published
code (which follows BottleNet). The sigmoid and everything after it up to the codec run in at least float32
whatever the compute dtype, so 8-bit codecs see exact values.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bottlenet_jax.models.resnet import conv_init


def _norm(train, dtype, axis_name, name):
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name=axis_name, name=name
    )


def _unit_conv(layer, channels: int, k: int, s: int, dtype, name: str = "conv"):
    """The bottleneck units' k x k, stride-s conv (no bias, SAME), named "conv" in both units."""
    return layer(
        channels, (k, k), (s, s), padding="SAME", use_bias=False, dtype=dtype, kernel_init=conv_init, name=name
    )


class Reduction(nn.Module):
    channels: int
    kernel: int = 2
    stride: int = 2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    output: str = "sigmoid"  # or "linear" (see the module docstring)
    layers: int = 1  # > 1: (layers - 1) more strided convs first, each -> BN -> ReLU, `hidden` wide
    hidden: int = 0  # 0: as wide as the input

    @nn.compact
    def __call__(self, x, train: bool = False, condition=None):
        """`condition`: float[batch] (channel sigma or p) appended as one constant input channel."""
        k, s = self.kernel, self.stride
        if condition is not None:
            cmap = jnp.broadcast_to(condition.astype(x.dtype)[..., None, None, None], x.shape[:-1] + (1,))
            x = jnp.concatenate([x, cmap], axis=-1)
        for i in range(self.layers - 1):
            x = _unit_conv(nn.Conv, self.hidden or x.shape[-1], k, s, self.dtype, f"conv_{i}")(x)
            x = nn.relu(_norm(train, self.dtype, self.bn_axis_name, f"bn_{i}")(x))
        x = _unit_conv(nn.Conv, self.channels, k, s, self.dtype)(x)
        wide = jnp.promote_types(self.dtype, jnp.float32)  # bf16 -> f32, f64 stays f64
        x = _norm(train, wide, self.bn_axis_name, "bn")(x.astype(wide))
        return nn.sigmoid(x) if self.output == "sigmoid" else x


class Restoration(nn.Module):
    channels: int
    kernel: int = 2
    stride: int = 2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    layers: int = 1  # mirrors Reduction's
    hidden: int = 0  # 0: as wide as the output

    @nn.compact
    def __call__(self, x, train: bool = False):
        k, s = self.kernel, self.stride
        x = x.astype(self.dtype)
        layer = nn.Conv if s == 1 else nn.ConvTranspose  # same kernel, same parameter name
        for i in range(self.layers - 1):
            x = _unit_conv(layer, self.hidden or self.channels, k, s, self.dtype, f"conv_{i}")(x)
            x = nn.relu(_norm(train, self.dtype, self.bn_axis_name, f"bn_{i}")(x))
        x = _unit_conv(layer, self.channels, k, s, self.dtype)(x)
        x = _norm(train, self.dtype, self.bn_axis_name, "bn")(x)
        return nn.relu(x)
