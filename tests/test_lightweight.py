"""Lightweight codec: real range-coded bytes, the clip model vs an empirical search, ECSQ properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax.codecs import make_codec
from bottlenet_jax.codecs.lightweight import quantizer as lw


def relu_data(rng, n=200_000, kind="exponential", p0=0.5):
    pos = rng.exponential(1.3, n) if kind == "exponential" else np.abs(rng.laplace(0, 0.7, n))
    return np.where(rng.random(n) < p0, 0.0, pos)


def test_range_coder_roundtrip_and_rate_near_entropy(rng):
    probs = np.array([0.6, 0.25, 0.1, 0.05])
    sym = rng.choice(4, 100_000, p=probs).astype(np.int32)
    data = lw.encode_symbols(sym, probs)
    np.testing.assert_array_equal(lw.decode_symbols(data, sym.size, probs), sym)
    h = lw.entropy_bits(sym, 4) * sym.size / 8
    assert h <= len(data) <= 1.02 * h  # within 2 % of the empirical entropy


@pytest.mark.parametrize("kind", ["exponential", "laplacian"])
@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_model_clip_within_5_percent_of_empirical_optimum(rng, kind, n):
    x = relu_data(rng, kind=kind)
    c_model, c_emp = lw.model_clip(x, n), lw.empirical_clip(x, n)
    mse_model = lw.empirical_mse(x, *lw.uniform_levels(c_model, n))
    mse_best = lw.empirical_mse(x, *lw.uniform_levels(c_emp, n))
    assert mse_model <= 1.05 * mse_best, (c_model, c_emp)


def test_leaky_clip_model_beats_symmetric_guess(rng):
    pre = rng.laplace(0, 1.0, 100_000)
    x = np.where(pre > 0, pre, 0.1 * pre)
    cn, cp = lw.model_clip_leaky(x, 8, 0.1)
    assert 0 < cn < cp  # the negative side is 10x narrower, and so is its clip
    mse = lw.empirical_mse(x, *lw.uniform_levels(cp, 8, lo=-cn))
    assert mse < lw.empirical_mse(x, *lw.uniform_levels(cp, 8, lo=-cp))


def test_ecsq_lambda_zero_is_lloyd_max_and_rate_falls_with_lambda(rng):
    x = relu_data(rng, n=30_000)
    c = lw.model_clip(x, 8)
    y0, _, _ = lw.ecsq(x, 8, c, 0.0)
    np.testing.assert_allclose(y0, lw.lloyd_max(x, 8, c), rtol=1e-9, atol=1e-12)
    assert y0[0] == 0 and y0[-1] == c
    rates = []
    for lam in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0):
        y, th, _ = lw.ecsq(x, 8, c, lam)
        rates.append(lw.entropy_bits(lw.quantize(np.minimum(x, c), y, th), len(y)))
    assert all(a >= b - 1e-9 for a, b in zip(rates, rates[1:])) and rates[0] > rates[-1] + 0.3, rates


@pytest.mark.parametrize("quantizer", ["uniform", "ecsq"])
def test_codec_contract(rng, quantizer):
    """The calibrated tables are the codec's state (fit on the first fit_examples samples, in
    batches): the graph's x_hat is decode(encode(x)) under them, bytes are len(), the gradient is
    straight through; an uncalibrated codec is the uniform quantiser on [0, 1]."""
    x = np.maximum(rng.normal(size=(5, 6, 6, 4)), 0).astype(np.float32)
    codec = make_codec({"name": "lightweight", "num_levels": 4, "quantizer": quantizer, "fit_examples": 4})
    assert codec.fits_data
    state = codec.fit({}, [x[:3], x[3:], rng.normal(size=(9, 6, 6, 4))])  # reads 4 samples, no more
    want = lw.calibrate(x[:4], 4, quantizer, codec.ecsq_lambda)
    assert all(np.array_equal(state[k], want[k]) for k in want)
    x_hat, stats = jax.jit(lambda x, s: codec(x, state=s))(x, state)
    payloads = codec.encode(x, state=state)
    np.testing.assert_array_equal(codec.decode(payloads, x.shape, state=state), np.asarray(x_hat))
    assert [len(p) for p in payloads] == list(np.asarray(stats["bytes_payload"]))
    assert float(np.asarray(x_hat).max()) == pytest.approx(float(state["clip"]))  # the end level is c*
    w = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(jax.grad(lambda x: (w * codec(x, state=state)[0]).sum())(x), w)
    free, _ = codec(jnp.asarray(x))  # uncalibrated: 4 levels on [0, 1]
    assert set(np.unique(np.asarray(free))) <= set(np.linspace(0, 1, 4, dtype=np.float32))


def brute_force_ecsq(x, n, c, lam, iters=50):
    """ECSQ written directly: every value against every level, each iteration (the reference)."""
    x = np.minimum(np.asarray(x, np.float64).ravel(), c)
    y, p = np.linspace(0, c, n), np.full(n, 1 / n)
    for _ in range(iters):
        sym = np.argmin((x[:, None] - y[None]) ** 2 + lam * -np.log2(np.maximum(p, 1e-12))[None], axis=1)
        counts = np.bincount(sym, minlength=len(y))
        keep = counts > 0
        keep[0] = keep[-1] = True
        new_y = np.array([x[sym == k].mean() if counts[k] else y[k] for k in range(len(y))])
        new_y[0], new_y[-1] = 0.0, c
        if len(y) == keep.sum() and np.allclose(y, new_y, rtol=0, atol=1e-12 * c):
            return new_y, counts / counts.sum()
        y, p = new_y[keep], (counts / counts.sum())[keep]
    return y, p


@pytest.mark.parametrize("lam", [0.0, 0.02, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("n", [4, 16])
def test_ecsq_interval_cells_match_brute_force(rng, lam, n):
    x = relu_data(rng, n=20_000)
    c = lw.model_clip(x, n)
    y, _, p = lw.ecsq(x, n, c, lam * 1.3**2)
    y_ref, p_ref = brute_force_ecsq(x, n, c, lam * 1.3**2)
    assert len(y) == len(y_ref), (y, y_ref)  # the same levels dropped
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-9 * c)
    np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12)
