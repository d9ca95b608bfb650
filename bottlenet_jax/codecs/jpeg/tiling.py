"""C' feature maps as one grey image and back: BottleNet's layout for JPEG (numpy or jax arrays; no
JAX import: the edge runtime tiles with it).

  grid  the channels in a near-square grid of h x w tiles (zero tiles pad the last row);
  rows  the channels stacked vertically, one h x w tile each (the authors' tutorial code's layout).
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = ("grid", "rows")


def grid_shape(c: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(c))
    return math.ceil(c / cols), cols


def _xp(a):
    """The array module of `a`: one tiling implementation serves the host path and the graph."""
    if isinstance(a, np.ndarray):
        return np
    import jax.numpy as jnp

    return jnp


def tile(u8, layout: str):
    """[..., h, w, c] -> [..., H', W'] grey images (numpy or jax arrays)."""
    xp, (*lead, h, w, c), n = _xp(u8), u8.shape, u8.ndim - 3
    if layout == "rows":
        return xp.moveaxis(u8, -1, -3).reshape(*lead, c * h, w)
    rows, cols = grid_shape(c)
    if rows * cols != c:
        u8 = xp.pad(u8, [(0, 0)] * (n + 2) + [(0, rows * cols - c)])
    x = u8.reshape(*lead, h, w, rows, cols).transpose(*range(n), n + 2, n, n + 3, n + 1)
    return x.reshape(*lead, rows * h, cols * w)


def untile(img, h: int, w: int, c: int, layout: str):
    xp, lead, n = _xp(img), img.shape[:-2], img.ndim - 2
    if layout == "rows":
        return xp.moveaxis(img.reshape(*lead, c, h, w), -3, -1)
    rows, cols = grid_shape(c)
    x = img.reshape(*lead, rows, h, cols, w).transpose(*range(n), n + 1, n + 3, n, n + 2)
    return x.reshape(*lead, h, w, rows * cols)[..., :c]
