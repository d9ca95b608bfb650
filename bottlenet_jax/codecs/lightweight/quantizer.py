"""Lightweight post-training feature codec (Cohen, Choi, Bajic 2021): no retraining, a few statistics.

Pipeline: clip -> scalar quantiser (uniform or ECSQ) -> symbols -> range coder (constriction) -> bytes.

Clipping-range model ([OPEN] in the paper; our derivation). ReLU activations are a point mass p0 at
0 plus a positive part we model as exponential, f(x) = (1/b) e^{-x/b} (the positive half of a
Laplacian: heavy enough for ReLU features, one parameter, MLE b = mean of the positive values).
Why exponential: ReLU of roughly Laplacian pre-activations is exactly this; half-Gaussian tails
are lighter, so the exponential is the conservative choice for clipping (checked below against an
empirical search). An N-level uniform quantiser on [0, c] has levels k*D, D = c/(N-1), decision
thresholds (k+1/2)D. Its modelled MSE is

  MSE(c) = (1-p0) * [ sum_k int_{bin k, x<=c} (x - kD)^2 f(x) dx  +  int_c^inf (x - c)^2 f(x) dx ]
         = (1-p0) * [ Q(c)  +  2 b^2 e^{-c/b} ]          (the clipping term in closed form)

(the zeros are coded exactly). For fine quantisation Q(c) ~ (1 - e^{-c/b}) D^2/12; we do not use
that approximation because it is poor at the coarse N (2..16) that matter here: Q(c) is integrated
per bin by quadrature of the model density. c* = argmin MSE(c) by a dense 1-D search in units of b
(the optimum scales with b, so c*/b depends on N only). Leaky-ReLU (slope a): the negative side
gets its own exponential (scale b_-) and its own clip c_-, the quantiser spans [-c_-, c] and
(c_-, c) come from a 2-D search of the same model MSE. `empirical_clip` searches c on the data
itself, as a check (tests: model-chosen MSE within 5 % of the empirical optimum).

ECSQ: Lloyd-style iterations minimising D + lambda*R with R = -log2 p(level): assign each value to
argmin_k (x - y_k)^2 + lambda*R_k, then y_k <- centroid, p_k <- frequency. The end levels are pinned,
y_0 = 0 (the ReLU zeros) and y_{N-1} = c (the clipped mass piles up there). lambda = 0 is Lloyd-Max.

Entropy coding: a static categorical model (the calibration histogram, floored so every level is
codable) drives constriction's range coder per sample. Rate = len(bytes) of each sample's stream.
The calibrated levels, thresholds and probabilities (and c) are the codec's state (`fit`: once, on
`fit_examples` training samples through the edge); they are side information sent once per model:
`side_info_bytes` reports it; the per-sample rate excludes it.
"""

from __future__ import annotations

import numpy as np

from bottlenet_jax.codecs.coding import rangecoder


# ----------------------------------------------------------------------------- clip model
def fit_exponential(x: np.ndarray):
    """(p0, b): mass at zero and the exponential scale (MLE) of the positive part."""
    x = np.asarray(x, np.float64).ravel()
    pos = x[x > 0]
    return float(1 - pos.size / x.size), float(pos.mean()) if pos.size else 1.0


def _model_mse_uniform(c: float, n: int, b: float, grid: int = 4000) -> float:
    """MSE per positive value of an n-level uniform quantiser on [0, c] for f = Exp(b)."""
    xs = np.linspace(0, c, grid + 1)
    mid = (xs[:-1] + xs[1:]) / 2
    w = np.exp(-xs[:-1] / b) - np.exp(-xs[1:] / b)  # exact bin probabilities of the quadrature
    step = c / (n - 1)
    err = (mid - np.clip(np.round(mid / step), 0, n - 1) * step) ** 2
    return float(np.sum(w * err) + 2 * b * b * np.exp(-c / b))


def model_clip(x: np.ndarray, n: int) -> float:
    """c* minimising the modelled clipping + quantisation MSE (module docstring)."""
    _, b = fit_exponential(x)
    cs = b * np.geomspace(0.05, 30, 600)
    return float(cs[np.argmin([_model_mse_uniform(c, n, b) for c in cs])])


def uniform_levels(c: float, n: int, lo: float = 0.0):
    levels = np.linspace(lo, c, n)
    return levels, (levels[:-1] + levels[1:]) / 2


def quantize(x, levels, thresholds):
    """Symbols by the decision thresholds (values beyond the ends clip to the end levels)."""
    return np.searchsorted(np.asarray(thresholds), np.asarray(x), side="right").astype(np.int32)


def empirical_mse(x, levels, thresholds) -> float:
    x = np.asarray(x, np.float64)
    return float(np.mean((x - np.asarray(levels)[quantize(x, levels, thresholds)]) ** 2))


def empirical_clip(x: np.ndarray, n: int) -> float:
    """The c minimising the MSE measured on `x` itself (dense search), as a check of the model."""
    _, b = fit_exponential(x)
    cs = b * np.geomspace(0.05, 30, 300)
    return float(cs[np.argmin([empirical_mse(x, *uniform_levels(c, n)) for c in cs])])


def model_clip_leaky(x: np.ndarray, n: int, slope: float):
    """(c_neg, c_pos) for leaky-ReLU activations: exponential on each side, 2-D model search."""
    x = np.asarray(x, np.float64).ravel()
    pos, neg = x[x > 0], -x[x < 0]
    bp, bn = (pos.mean() if pos.size else 1.0), (neg.mean() if neg.size else slope)
    wp, wn = pos.size / x.size, neg.size / x.size
    # model samples: a deterministic quantile grid of each side's exponential
    u = (np.arange(2000) + 0.5) / 2000
    model_p, model_n = bp * -np.log1p(-u), bn * np.log1p(-u)  # quantiles of each side (negative: <= 0)
    best = (np.inf, 0.0, 0.0)
    for cn in bn * np.geomspace(0.1, 20, 40):
        for cp in bp * np.geomspace(0.1, 20, 40):
            lv, th = uniform_levels(cp, n, lo=-cn)
            mse = wp * empirical_mse(model_p, lv, th) + (wn * empirical_mse(model_n, lv, th) if wn else 0)
            if mse < best[0]:
                best = (mse, cn, cp)
    return float(best[1]), float(best[2])


# ----------------------------------------------------------------------------- ECSQ
def _ecsq_cells(xs: np.ndarray, csum: np.ndarray, y: np.ndarray, r: np.ndarray, lam: float):
    """(count, sum) of the sorted values `xs` whose ECSQ choice argmin_k (x - y_k)^2 + lam r_k is each
    level. The costs are parabolas of equal curvature, so each level's cell is one interval of x and
    the cells meet only at pairwise crossing points: the choice is constant between consecutive
    crossings, probed once per gap and read off the sorted data with searchsorted, O(K^2 log n)
    instead of O(n K) per iteration. A value exactly on a crossing goes to the lower level, as
    argmin's first-index rule would."""
    k0 = y * y + lam * r  # cost_k(x) = x^2 - 2 x y_k + k0_k
    i, j = np.triu_indices(len(y), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (k0[j] - k0[i]) / (2 * (y[j] - y[i]))
    cross = np.unique(cross[np.isfinite(cross)])
    if cross.size:
        probe = np.concatenate([[cross[0] - 1], (cross[:-1] + cross[1:]) / 2, [cross[-1] + 1]])
    else:
        probe = np.zeros(1)
    owner = np.argmin(-2 * probe[:, None] * y[None] + k0[None], axis=1)
    edge = np.concatenate([[0], np.searchsorted(xs, cross, side="right"), [xs.size]])
    counts = np.bincount(owner, weights=np.diff(edge), minlength=len(y))
    sums = np.bincount(owner, weights=csum[edge[1:]] - csum[edge[:-1]], minlength=len(y))
    return counts, sums


def ecsq(x: np.ndarray, n: int, c: float, lam: float, iters: int = 50):
    """Entropy-constrained scalar quantiser on min(x, c): (levels, thresholds, probabilities)."""
    xs = np.sort(np.minimum(np.asarray(x, np.float64).ravel(), c))
    csum = np.concatenate([[0.0], np.cumsum(xs)])
    y = np.linspace(0, c, n)
    p = np.full(n, 1 / n)
    for _ in range(iters):
        r = -np.log2(np.maximum(p, 1e-12))
        counts, sums = _ecsq_cells(xs, csum, y, r, lam)
        keep = counts > 0
        keep[0] = keep[-1] = True  # pinned ends stay
        new_y = np.where(counts > 0, sums / np.maximum(counts, 1), y)
        new_y[0], new_y[-1] = 0.0, c
        if len(y) == keep.sum() and np.allclose(y, new_y, rtol=0, atol=1e-12 * c):
            y, p = new_y, counts / counts.sum()
            break
        y, p = new_y[keep], (counts / counts.sum())[keep]
    r = -np.log2(np.maximum(p, 1e-12))
    th = (y[:-1] + y[1:]) / 2 + lam * (r[1:] - r[:-1]) / (2 * (y[1:] - y[:-1]))
    th = np.maximum.accumulate(th)
    return y, th, p


def lloyd_max(x: np.ndarray, n: int, c: float, iters: int = 50):
    """Plain Lloyd-Max (nearest level, centroids) with the same pinned ends: ECSQ at lambda = 0."""
    x = np.minimum(np.asarray(x, np.float64).ravel(), c)
    y = np.linspace(0, c, n)
    for _ in range(iters):
        sym = np.argmin(np.abs(x[:, None] - y[None]), axis=1)
        counts = np.bincount(sym, minlength=len(y))
        y = np.array([x[sym == k].mean() if counts[k] else y[k] for k in range(len(y))])
        y[0], y[-1] = 0.0, c
    return y


def entropy_bits(symbols: np.ndarray, n: int) -> float:
    p = np.bincount(np.ravel(symbols), minlength=n) / np.size(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ----------------------------------------------------------------------------- range coding
def _model(probs):
    p = np.maximum(np.asarray(probs, np.float64), 1e-6)
    return rangecoder.categorical(p / p.sum())


def encode_symbols(symbols: np.ndarray, probs) -> bytes:
    out = rangecoder.Writer()
    out.write(symbols, _model(probs))
    return out.getvalue()


def decode_symbols(data: bytes, count: int, probs) -> np.ndarray:
    return rangecoder.Reader(data).read(_model(probs), count).astype(np.int32)


QUANTIZERS = ("uniform", "ecsq")


def encode_features(x, state: dict) -> list[bytes]:
    """Features [N, ...] -> one range-coded stream per sample under a calibrated state (levels,
    thresholds, probs): the codec's transport, the host's and the edge runtime's."""
    sym = quantize(np.asarray(x, np.float32), state["levels"], state["thresholds"])
    return [encode_symbols(v, state["probs"]) for v in sym]


def calibrate(x: np.ndarray, n: int, quantizer: str = "uniform", lam_b2: float = 0.1) -> dict:
    """The codec's state from calibration activations `x`: the model clip c*, then an N-level
    uniform quantiser on [0, c*] or ECSQ with lambda = lam_b2 * b^2 (b: the exponential scale of
    the positive part, so one lambda grid serves every split point). Arrays: levels, thresholds,
    probs (the calibration histogram, floored so every level is codable), clip."""
    c = model_clip(x, n)
    if quantizer == "uniform":
        levels, thresholds = uniform_levels(c, n)
    else:
        levels, thresholds, _ = ecsq(x, n, c, lam_b2 * fit_exponential(x)[1] ** 2)
    counts = np.bincount(quantize(x, levels, thresholds).ravel(), minlength=len(levels))
    probs = np.maximum(counts / counts.sum(), 1e-6)
    return {
        "levels": np.asarray(levels, np.float32),
        "thresholds": np.asarray(thresholds, np.float32),
        "probs": np.asarray(probs / probs.sum(), np.float32),
        "clip": np.float32(c),
    }


def calibrate_free(n: int) -> dict:
    """The uncalibrated state: N uniform levels on [0, 1] (a sigmoid unit's range), equal probabilities."""
    levels, thresholds = uniform_levels(1.0, n)
    return {
        "levels": np.asarray(levels, np.float32),
        "thresholds": np.asarray(thresholds, np.float32),
        "probs": np.full(n, 1 / n, np.float32),
        "clip": np.float32(1.0),
    }
