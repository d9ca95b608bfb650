"""The entropy codec's learned density: a monotone CDF per channel, numpy or jax alike.

Density (Ballé et al. ICLR 2018, appendix 6.1): per channel c a monotone map L_c: R -> R,
    L_c = f_K o ... o f_1,   f_k(x) = g_k(softplus(H_k) x + b_k),   g_k(x) = x + tanh(a_k) * tanh(x),
with the last layer affine; the CDF is sigmoid(L_c). softplus(H) >= 0 and tanh(a) >= -1 make every
layer non-decreasing, so the CDF is monotone, 0 at -inf and 1 at +inf. The probability of an integer
symbol k is sigmoid(L(k + 1/2)) - sigmoid(L(k - 1/2)). JAX is imported only where jax arrays are
asked for (`xp` None: jax.numpy), so the tables' numpy path runs without it.
"""

from __future__ import annotations

import numpy as np


def _jnp():
    import jax.numpy as jnp

    return jnp


def _softplus(x, xp):
    return np.logaddexp(x, 0.0) if xp is np else xp.logaddexp(x, 0.0)


def logits_cumulative(params: dict, x, xp=None):
    """L(x) for x [C, 1, N] -> [C, 1, N] (numpy or jax alike: the tables and the graph share it)."""
    xp = xp or _jnp()
    n = sum(1 for k in params if k.startswith("matrix_"))
    for i in range(n):
        x = xp.matmul(_softplus(params[f"matrix_{i}"], xp), x) + params[f"bias_{i}"]
        if i < n - 1:
            x = x + xp.tanh(params[f"factor_{i}"]) * xp.tanh(x)
    return x


def _sigmoid(x, xp):
    if xp is np:
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    import jax

    return jax.nn.sigmoid(x)


def likelihood(params: dict, y, xp=None):
    """P(round bin of y) = CDF(y + 1/2) - CDF(y - 1/2) for y [C, 1, N]; computed on the side of the
    median where the sigmoids are not both near 1 (no cancellation in the upper tail)."""
    xp = xp or _jnp()
    lower = logits_cumulative(params, y - 0.5, xp)
    upper = logits_cumulative(params, y + 0.5, xp)
    sign = -xp.sign(lower + upper)
    return xp.abs(_sigmoid(sign * upper, xp) - _sigmoid(sign * lower, xp))


def likelihood_of(params: dict, y):
    """`likelihood` of features y [..., h, w, C] (channel last, as the model holds them), same shape."""
    c, jnp = y.shape[-1], _jnp()
    cn = jnp.moveaxis(y.reshape(-1, c), -1, 0)[:, None, :]
    return jnp.moveaxis(likelihood(params, cn)[:, 0, :], 0, -1).reshape(y.shape)


def init_density(key, channels: int, filters=(3, 3, 3), init_scale: float = 10.0) -> dict:
    """Ballé's initialisation: L starts as a wide logistic-like ramp of scale ~init_scale."""
    import jax
    import jax.numpy as jnp

    sizes = (1, *filters, 1)
    scale = init_scale ** (1.0 / (len(filters) + 1))
    out = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i in range(len(sizes) - 1):
        w = np.log(np.expm1(1.0 / scale / sizes[i + 1]))
        out[f"matrix_{i}"] = jnp.full((channels, sizes[i + 1], sizes[i]), w, jnp.float32)
        out[f"bias_{i}"] = jax.random.uniform(keys[i], (channels, sizes[i + 1], 1), jnp.float32, -0.5, 0.5)
        if i < len(sizes) - 2:
            out[f"factor_{i}"] = jnp.zeros((channels, sizes[i + 1], 1), jnp.float32)
    return out


def tails(density: dict, tail_mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel the x where the CDF is tail_mass/2 and 1 - tail_mass/2 (float64 bisection on L,
    which is monotone): the range the integer tables cover."""
    t = np.log(2.0 / tail_mass - 1.0)
    c = next(iter(density.values())).shape[0]
    out = []
    for target in (-t, t):
        lo, hi = np.full(c, -1.0), np.full(c, 1.0)
        for _ in range(64):  # widen the bracket until it holds the target on every channel
            l_lo = logits_cumulative(density, lo[:, None, None], np)[:, 0, 0]
            l_hi = logits_cumulative(density, hi[:, None, None], np)[:, 0, 0]
            if np.all(l_lo <= target) and np.all(l_hi >= target):
                break
            lo, hi = np.where(l_lo > target, 2 * lo, lo), np.where(l_hi < target, 2 * hi, hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = logits_cumulative(density, mid[:, None, None], np)[:, 0, 0] < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out.append((lo + hi) / 2)
    return out[0], out[1]
