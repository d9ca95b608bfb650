"""Integer networks: the hyperprior's analysis and synthesis, computed the same on every machine.

Why. A hyperprior's decoder computes each element's table index (and mean) from what it decoded
before, by a network. In floating point, one ulp of difference between the edge's and the cloud's
hardware, compiler flags, batch size or device count can move an index across a table boundary,
and the stream decodes to garbage from there on (CompressAI #279, tensorflow/compression #44).
Ballé, Johnston & Minnen ("Integer networks for data compression with latent-variable models",
ICLR 2019) make that network integer-only; here both hyper networks are, so the encoder's hyper
latent, every index and every mean follow from integers alone.

Arithmetic (fixed point). Weights are integers w = round(W * 2^WEIGHT_FRAC), W clipped to
[-2, 2 - 2^-6] (w in int8's range); activations are integers a = value * 2^f (f fractional bits).
A layer computes acc = sum(w * a) + b over its k x k x C_in window (SAME padding, zeros), then
rounds half up: out = floor(acc / 2^shift + 1/2), shift = WEIGHT_FRAC + f_in - f_out; hidden layers
clip to [0, 255] (a quantised ReLU: values in [0, 16) at f = 4). Every product and partial sum is
an integer below 2^24 in magnitude (`check_bounds` at construction), so the same computation in
float32 is exact in any order of summation (and with FMA), which is what lets one implementation
serve training (float32, gradients by straight-through rounding), the graph (float32 matmuls at
precision HIGHEST: no TF32 or bf16 passes) and the host (numpy, float64 BLAS): all three give the
same integers, on any IEEE machine. Rounding steps are x * 2^-shift (exact) + 1/2 (exact below 2^22)
then floor (exact).

Training simulates exactly this arithmetic in float32: weights, biases and activations are rounded
in the forward pass with straight-through gradients; every clip (of weights, biases, hidden units,
outputs) passes a tenth of the gradient outside its range, so what is pushed out can come back.

Layers (`Layer`): a k x k conv (stride s), or depth-to-space (each position's 4C outputs spread
over a 2x2 block, cropped to a shape: sub-pixel upsampling, a reshape). The analysis h_a: y (as
round(y * 16), clipped) -> 3x3 stride-2 conv, hidden -> 3x3 conv -> z (the accumulator at 2^-10: z
is real, rounded to symbols outside). The synthesis h_s works at z's resolution: the symbols of z
(integers, clipped to +-127) -> 3x3 conv, hidden -> 3x3 conv, hidden -> 1x1 conv, 4x the outputs ->
depth-to-space to y's shape -> per element a scale-table index (rounded, clipped to the table) and,
for the mean-scale form, a mean in units of 2^-MEAN_FRAC.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _jax():
    """jax and jax.numpy, imported where jax arrays are computed (numpy alone serves the host)."""
    import jax
    import jax.numpy as jnp

    return jax, jnp


WEIGHT_FRAC = 6  # fractional bits of the integer weights
W_LO, W_HI = -2.0, 2.0 - 2.0**-WEIGHT_FRAC  # weights in int8's range: -128..127
B_MAX = 64.0  # |bias| in real units
ACT_FRAC = 4  # fractional bits of hidden activations (and of h_a's input y)
ACT_MAX = 255  # hidden activations clip to 0..255 (8 bits)
INPUT_MAX = 1023  # h_a's input round(y * 16) clips to +-1023 (y within +-64) ...
Z_MAX = 127  # ... and h_s's input, the symbols of z, to +-127
MEAN_FRAC = 4  # means in units of 1/16
MEAN_MAX = 1 << 10  # means within +-64
EXACT = 1 << 24  # float32 holds every integer below this exactly
LEAK = 0.1  # the share of the gradient a hidden clip passes outside its range (training only)


@dataclasses.dataclass(frozen=True)
class Layer:
    kind: str  # "conv" | "d2s"
    k: int = 1
    stride: int = 1
    c_in: int = 0
    c_out: int = 0
    f_in: int = 0  # fractional bits of the input (conv)
    f_out: int | None = 0  # fractional bits of the output; None: the accumulator itself (a real value)
    relu: bool = False
    in_max: int = ACT_MAX  # bound of |input| (for the exactness check)

    @property
    def shift(self) -> int:
        return WEIGHT_FRAC + self.f_in - (self.f_out or 0)


def analysis(channels: int, hidden: int, z_channels: int) -> tuple[Layer, ...]:
    return (
        Layer("conv", 3, 2, channels, hidden, ACT_FRAC, ACT_FRAC, True, INPUT_MAX),
        Layer("conv", 3, 1, hidden, z_channels, ACT_FRAC, None, False, ACT_MAX),
    )


def synthesis(z_channels: int, hidden: int, outputs: int) -> tuple[Layer, ...]:
    return (
        Layer("conv", 3, 1, z_channels, hidden, 0, ACT_FRAC, True, Z_MAX),
        Layer("conv", 3, 1, hidden, hidden, ACT_FRAC, ACT_FRAC, True, ACT_MAX),
        Layer("conv", 1, 1, hidden, 4 * outputs, ACT_FRAC, None, False, ACT_MAX),
        Layer("d2s"),
    )


def convs(layers) -> list[Layer]:
    return [layer for layer in layers if layer.kind == "conv"]


def check_bounds(layers) -> None:
    """ValueError unless every accumulator of `layers` stays below 2^24 (float32-exact)."""
    for i, layer in enumerate(convs(layers)):
        worst = layer.k * layer.k * layer.c_in * layer.in_max * 128 + int(B_MAX * 2 ** (WEIGHT_FRAC + layer.f_in))
        if worst >= EXACT:
            raise ValueError(
                f"integer network layer {i} ({layer.k}x{layer.k}x{layer.c_in} -> {layer.c_out}): its accumulator "
                f"can reach {worst} >= 2^24, beyond float32's exact integers; use fewer channels"
            )


def init(key, layers) -> dict:
    """He-normal weights (clipped to the integer range), zero biases: {"w<i>", "b<i>"} per conv."""
    jax, jnp = _jax()
    out = {}
    for i, layer in enumerate(convs(layers)):
        key, sub = jax.random.split(key)
        fan_in = layer.k * layer.k * layer.c_in
        w = jax.random.normal(sub, (layer.k, layer.k, layer.c_in, layer.c_out)) * np.sqrt(2.0 / fan_in)
        out[f"w{i}"] = jnp.clip(w, W_LO, W_HI).astype(jnp.float32)
        out[f"b{i}"] = jnp.zeros((layer.c_out,), jnp.float32)
    return out


def round_half_up(x, xp=np):
    """floor(x + 1/2): half up, the same in numpy and XLA (exact for |x| < 2^22)."""
    return xp.floor(x + 0.5)


def ste(f, x):
    """f(x) forward, gradient 1 (straight through)."""
    jax, _ = _jax()
    return x + jax.lax.stop_gradient(f(x) - x)


def integer_params(params: dict, layers, xp=np) -> dict:
    """The integer weights and biases (int32) of float parameters: what the codec's state holds."""
    out = {}
    for i, layer in enumerate(convs(layers)):
        w = xp.asarray(params[f"w{i}"], xp.float32)
        b = xp.asarray(params[f"b{i}"], xp.float32)
        out[f"w{i}"] = round_half_up(xp.clip(w, W_LO, W_HI) * 2.0**WEIGHT_FRAC, xp).astype(xp.int32)
        out[f"b{i}"] = round_half_up(xp.clip(b, -B_MAX, B_MAX) * 2.0 ** (WEIGHT_FRAC + layer.f_in), xp).astype(xp.int32)
    return out


def leaky_clip(x, lo, hi):
    """clip(x, lo, hi) forward; gradient 1 inside, LEAK outside (training: a weight, activation or
    output pushed out of range keeps a way back instead of dying at the bound)."""
    inside = (x >= lo) & (x <= hi)
    jax, jnp = _jax()
    return jax.lax.stop_gradient(jnp.clip(x, lo, hi)) + (x - jax.lax.stop_gradient(x)) * jnp.where(inside, 1.0, LEAK)


def _simulated(params: dict, layers) -> dict:
    """Training: the integer weights as float32 values, with straight-through gradients."""
    _, jnp = _jax()
    out = {}
    for i, layer in enumerate(convs(layers)):
        w = leaky_clip(params[f"w{i}"], W_LO, W_HI) * 2.0**WEIGHT_FRAC
        b = leaky_clip(params[f"b{i}"], -B_MAX, B_MAX) * 2.0 ** (WEIGHT_FRAC + layer.f_in)
        out[f"w{i}"], out[f"b{i}"] = ste(lambda v: round_half_up(v, jnp), w), ste(lambda v: round_half_up(v, jnp), b)
    return out


def _same(hw, k: int, stride: int):
    """SAME padding as XLA pads (the extra row/column at the end), per spatial axis."""
    out = []
    for n in hw:
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        out.append((total // 2, total - total // 2))
    return out


def _patches(a, k: int, stride: int, xp):
    """[n, h, w, c] -> [n, ho, wo, k*k*c]: each output position's k x k window (SAME padding, as
    XLA pads: the extra row/column at the end), rows of the window outermost, channels innermost."""
    n, h, w, c = a.shape
    ho, wo = -(-h // stride), -(-w // stride)
    ph, pw = max((ho - 1) * stride + k - h, 0), max((wo - 1) * stride + k - w, 0)
    a = xp.pad(a, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    cols = [
        a[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride]
        for i in range(k)
        for j in range(k)
    ]
    return xp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def forward(a, params: dict, layers, shape=None, xp=np, train: bool = False):
    """Run `layers` on integer activations `a` [n, h, w, c] (float32 or float64 holding integers).
    `params`: integer weights (`integer_params`; jax: float32 arrays of integers, or with `train`
    the float parameters, rounded here straight-through). `shape`: (h, w) depth-to-space crops to.
    Returns the last conv's accumulator as a real value (acc * 2^-shift, f_out None), rearranged by
    the layers after it. Numpy computes in float64 (exact BLAS), jax in float32 at HIGHEST precision
    (a matmul of integers in evaluation, a convolution in training: exact on a CPU; on an
    accelerator training's values may round differently, which changes no stream)."""
    ints = _simulated(params, layers) if train else params
    jax, jnp = _jax() if xp is not np else (None, None)
    dtype = np.float64 if xp is np else jnp.float32
    a = xp.asarray(a, dtype)
    i = 0
    for layer in layers:
        if layer.kind == "d2s":
            n, h, w, c = a.shape
            a = a.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c // 4)
            a = a[:, : shape[0], : shape[1]]
            continue
        w = xp.asarray(ints[f"w{i}"], dtype)
        b = xp.asarray(ints[f"b{i}"], dtype)
        if train:  # XLA's convolution: fast to differentiate; exact on a CPU (a GEMM of integers)
            acc = (
                jax.lax.conv_general_dilated(
                    a,
                    w,
                    (layer.stride,) * 2,
                    _same(a.shape[1:3], layer.k, layer.stride),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    precision=jax.lax.Precision.HIGHEST,
                )
                + b
            )
        else:  # a matmul of integers below 2^24: exact in any order, on any backend (no conv algorithm choice)
            p = _patches(a, layer.k, layer.stride, xp)
            w = w.reshape(-1, layer.c_out)
            if xp is np:
                acc = (p.reshape(-1, p.shape[-1]) @ w).reshape(*p.shape[:-1], layer.c_out) + b
            else:
                acc = jnp.matmul(p, w, precision=jax.lax.Precision.HIGHEST) + b
        i += 1
        a = acc * 2.0**-layer.shift
        if layer.f_out is None:  # the accumulator as a real value: the network's output
            continue
        a = ste(lambda v: round_half_up(v, jnp), a) if train else round_half_up(a, xp)
        if layer.relu:
            a = leaky_clip(a, 0, ACT_MAX) if train else xp.clip(a, 0, ACT_MAX)
    return a


def position_prior(pos, xp=np, train: bool = False):
    """A learned offset per position and output of the synthesis ([h, w, outputs], real units, |.|
    <= B_MAX), at the output's resolution 2^-(WEIGHT_FRAC + ACT_FRAC): integers (`train`: rounded
    straight-through), so the output plus it is still an exact accumulator. What a translation-
    equivariant synthesis cannot know for free: where in the map an element is (a feature map's
    borders are quieter than its centre), as the factorized codec's per-element tables know it."""
    unit = 2.0 ** (WEIGHT_FRAC + ACT_FRAC)
    if train:
        _, jnp = _jax()
        return ste(lambda v: round_half_up(v, jnp), leaky_clip(pos, -B_MAX, B_MAX) * unit) / unit
    return xp.asarray(pos, np.float64 if xp is np else xp.float32) / unit


def integer_position(pos, xp=np):
    """The integers of a position prior's float parameters (the state's)."""
    unit = 2.0 ** (WEIGHT_FRAC + ACT_FRAC)
    return round_half_up(xp.clip(xp.asarray(pos, xp.float32), -B_MAX, B_MAX) * unit, xp).astype(xp.int32)


def input_of_analysis(y, xp=np, train: bool = False):
    """h_a's input: round(y * 2^ACT_FRAC) clipped to +-INPUT_MAX (exact: a power-of-two scaling)."""
    x = xp.asarray(y, xp.float32) * np.float32(2.0**ACT_FRAC)
    r = ste(lambda v: round_half_up(v, xp), x) if train else round_half_up(x, xp)
    return xp.clip(r, -INPUT_MAX, INPUT_MAX)
