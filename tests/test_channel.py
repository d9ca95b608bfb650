"""BottleNet++ channel layers (AWGN, BEC) and the channel-conditioned encoder."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bottlenet_jax import parallel
from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs.quantize import dequantize_u8, quantize_u8
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models import build_model

from helpers import small_config

X = jax.random.uniform(jax.random.key(0), (16, 8, 8, 16))  # 16k values in [0, 1]


def run(codec, x=X, train=False, seed=1):
    return jax.jit(lambda x, k: codec(x, train=train, rng=k))(x, jax.random.key(seed))


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.5])
def test_awgn_noise_variance_is_sigma_squared(sigma):
    y, stats = run(make_codec({"name": "awgn", "sigma": sigma}))
    noise = np.asarray(y - X, np.float64).ravel()
    # 16,384 i.i.d. draws: the sample variance has relative std sqrt(2/n) = 1.1 %; allow 5 % (4.5 sd)
    assert abs(noise.var() / sigma**2 - 1) < 0.05
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)
    assert (np.asarray(stats["bytes_payload"]) == 4 * 8 * 8 * 16).all()  # float32 channel symbols


def test_awgn_training_draws_sigma_in_range_per_batch_or_sample():
    codec = make_codec({"name": "awgn", "sigma_range": (0.1, 0.3)})
    c = codec.condition((64,), train=True, rng=jax.random.key(3))
    assert np.ptp(np.asarray(c)) == 0 and 0.1 <= float(c[0]) <= 0.3  # one sigma per batch
    c = make_codec({"name": "awgn", "sigma_range": (0.1, 0.3), "per_sample": True}).condition(
        (4096,), train=True, rng=jax.random.key(3)
    )
    assert 0.1 <= float(c.min()) < 0.11 and 0.29 < float(c.max()) <= 0.3  # spans the range
    assert np.asarray(codec.condition((5,), train=False)).tolist() == [0.0] * 5  # eval: the fixed sigma


def test_bec_p0_is_exactly_8bit_quantisation():
    codec = make_codec({"name": "bec", "p": 0.0})
    y, stats = run(codec, X)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(dequantize_u8(quantize_u8(X))))
    np.testing.assert_array_equal(np.asarray(y), codec.decode(codec.encode(np.asarray(X)), X.shape))
    assert (np.asarray(stats["bytes_payload"]) == 8 * 8 * 16).all()  # C' H' W' bytes
    one = run(codec, jnp.ones((1, 2, 2, 1)))[0]  # round(1 * 255) = 255 stays in uint8 (no overflow to 0)
    assert np.asarray(one).min() == 1.0


def test_bec_p1_gives_the_expected_value_everywhere():
    y, _ = run(make_codec({"name": "bec", "p": 1.0}), X)
    np.testing.assert_allclose(np.asarray(y), 0.5, rtol=0, atol=1e-7)  # 8 bits of 1/2 each: 127.5 / 255


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3])
def test_bec_erasure_rate_matches_p(p):
    """Erased bits show as half-integers; count them via the value's distance from the clean one."""
    codec = make_codec({"name": "bec", "p": p})
    y = np.asarray(run(codec, X, seed=7)[0], np.float64) * 255
    clean = np.asarray(quantize_u8(X), np.int64)
    diff = y - clean  # = sum over erased bits k of (1/2 - bit_k) 2^k: decode per bit, LSB first
    erased = 0
    rest = diff * 2  # integer: sum over erased k of (1 - 2 bit_k) 2^k
    rest = np.rint(rest).astype(np.int64)
    for k in range(8):
        bit = (clean >> k) & 1
        sign = 1 - 2 * bit
        hit = (rest & (1 << k)) != 0  # each erased bit contributes an odd multiple of 2^k at this position
        erased += hit.sum()
        rest = rest - np.where(hit, sign << k, 0)
    assert (rest == 0).all()
    n = clean.size * 8
    rate = erased / n
    assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-4, rate


@pytest.mark.parametrize("name", ["awgn", "bec"])
def test_straight_through_gradient_is_identity(name):
    codec = make_codec({"name": name, f"{'sigma' if name == 'awgn' else 'p'}_range": (0.0, 0.5)})
    w = jax.random.normal(jax.random.key(4), X.shape)
    g = jax.jit(jax.grad(lambda x, k: jnp.sum(w * codec(x, train=True, rng=k)[0])))(X, jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("name", ["awgn", "bec"])
def test_straight_through_gradient_under_shard_map(name):
    """4 devices, each its own slice: the gradient is still exactly the cotangent (not N x)."""
    codec = make_codec({"name": name, f"{'sigma' if name == 'awgn' else 'p'}_range": (0.0, 0.5)})
    mesh = parallel.make_mesh()
    w = jax.random.normal(jax.random.key(4), X.shape)

    def loss(x, w, k):
        k = jax.random.fold_in(k, jax.lax.axis_index(parallel.AXIS))
        return jax.lax.psum(jnp.sum(w * codec(x, train=True, rng=k)[0]), parallel.AXIS)

    f = jax.shard_map(
        jax.grad(loss),
        mesh=mesh,
        in_specs=(parallel.BATCH, parallel.BATCH, parallel.REPLICATED),
        out_specs=parallel.BATCH,
    )
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(X, w, jax.random.key(5))), np.asarray(w))


def test_minmax_reference_roundtrip():
    """Unbounded features (no unit): per-sample min-max scaling with 8 bytes of side information."""
    x = np.asarray(jax.random.normal(jax.random.key(2), (3, 4, 4, 8))) * 5
    codec = make_codec({"name": "bec", "minmax": True})
    y, stats = run(codec, jnp.asarray(x))
    assert (np.asarray(stats["bytes_payload"]) == 4 * 4 * 8 + 8).all()
    np.testing.assert_allclose(np.asarray(y), x, atol=np.ptp(x, axis=(1, 2, 3)).max() / 255)
    np.testing.assert_allclose(codec.decode(codec.encode(x), x.shape), np.asarray(y), atol=1e-5)


def test_bad_channel_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"codec.p=1.5.*<= 1"):
        make_codec({"name": "bec", "p": 1.5})
    with pytest.raises(ConfigError, match=r"sigma_range=\(0.3, 0.1\)"):
        make_codec({"name": "awgn", "sigma_range": (0.3, 0.1)})


def _model(condition=True, name="awgn"):
    cfg = small_config(after=8, channels=4, kernel=3, stride=1, condition=condition)
    cfg.model.depth = 18  # after its last block (RB8): fast to compile; the channel is what is tested
    cfg.codec = ml_collections.ConfigDict(codec_settings(name))
    model = build_model(cfg, bn_axis_name=None)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init({"params": jax.random.key(1), "codec": jax.random.key(2)}, x)
    return model, variables, x


@pytest.mark.slow  # BottleNet++ end to end through a ResNet: make test-slow
def test_channel_condition_reaches_the_encoder():
    model, v, x = _model()
    assert (
        v["params"]["reduce"]["conv"]["kernel"].shape[2] == 32 + 1
    )  # C (width 4 x 8 after RB8 of ResNet-18) + the condition map
    edge = jax.jit(lambda c: model.apply(v, x, part="edge", condition=jnp.full((2,), c)))
    z0, z1 = np.asarray(edge(0.0)), np.asarray(edge(0.3))
    assert np.abs(z0 - z1).max() > 1e-4  # same input, different sigma: different encoder output
    # in training, the drawn sigma is what the encoder sees: two rng draws give two outputs
    full = jax.jit(lambda k: model.apply(v, x, train=True, rngs={"codec": k}, mutable=["batch_stats"])[0][0])
    assert np.abs(np.asarray(full(jax.random.key(1))) - np.asarray(full(jax.random.key(9)))).max() > 0


@pytest.mark.slow  # BottleNet++ end to end through a ResNet: make test-slow
def test_unconditioned_ablation_ignores_the_condition():
    model, v, x = _model(condition=False)
    assert v["params"]["reduce"]["conv"]["kernel"].shape[2] == 32
    edge = jax.jit(lambda c: model.apply(v, x, part="edge", condition=jnp.full((2,), c)))
    np.testing.assert_array_equal(np.asarray(edge(0.0)), np.asarray(edge(0.3)))


def _check_eval_uses_the_fixed_condition(model, v, x, eval_value):
    """Through the whole model at train=False with many keys: the channel the features meet is the
    eval condition (sigma or p), never one drawn from the training range. The codec is asked for
    what it got and the noise actually added is measured against it."""
    f = jax.jit(lambda k: model.apply(v, x, train=False, rngs={"codec": k})[0])
    conds = [float(model.codec.condition((1,), train=False)[0])]
    outs = np.stack([np.asarray(f(jax.random.key(s))) for s in range(4)])
    assert conds == [pytest.approx(eval_value)], conds
    # different keys change the noise realisation (a channel is really applied) ...
    assert np.ptp(outs, axis=0).max() > 0 or eval_value == 0
    # ... and its strength is the eval value: measured on the codec at train=False over many keys
    z = jnp.full((64, 4, 4, 4), 0.5)
    ys = np.stack([np.asarray(model.codec(z, train=False, rng=jax.random.key(s))[0]) for s in range(8)])
    if model.codec.name == "awgn":
        level = float(np.std(ys - 0.5))
    else:  # bec: an erased bit reads as 1/2, so the value moves off 128/255; erased bits ~ 1 - (1-p)^8 of values
        level = 1 - (1 - float(np.mean(np.abs(ys * 255 - 128) > 1e-3))) ** (1 / 8)
    assert abs(level - eval_value) < 0.25 * eval_value + 1e-3, (model.codec.name, level, eval_value)


@pytest.mark.slow  # BottleNet++ end to end through a ResNet: make test-slow
@pytest.mark.parametrize(
    "name, eval_value, train_range",
    [("awgn", 0.05, (0.3, 0.5)), ("bec", 0.02, (0.3, 0.5))],
)
def test_eval_meets_the_fixed_condition_not_the_training_range(name, eval_value, train_range):
    field = {"awgn": "sigma", "bec": "p"}[name]
    cfg = small_config(after=16, channels=4, kernel=3, stride=1, condition=True)
    cfg.codec = ml_collections.ConfigDict(codec_settings(name, **{field: eval_value, f"{field}_range": train_range}))
    model = build_model(cfg, bn_axis_name=None)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = model.init({"params": jax.random.key(1), "codec": jax.random.key(2)}, x)
    _check_eval_uses_the_fixed_condition(model, v, x, eval_value)

    # The same check fails on a codec that (wrongly) draws from the training range at eval too.
    good = model.codec

    class Broken(type(good)):
        def condition(self, batch_shape, *, train, rng=None):
            return super().condition(batch_shape, train=True, rng=rng if rng is not None else jax.random.key(9))

    broken_model = build_model(
        cfg, bn_axis_name=None, codec=Broken(**{k: getattr(good, k) for k in codec_settings(name) if k != "name"})
    )
    with pytest.raises(AssertionError):
        _check_eval_uses_the_fixed_condition(broken_model, v, x, eval_value)


def test_channel_codecs_need_a_key_to_draw_noise():
    """A missing rng used to fall back to jax.random.key(0): the same noise on every call."""
    for codec in (make_codec({"name": "awgn", "sigma": 0.1}), make_codec({"name": "bec", "p": 0.1})):
        with pytest.raises(ValueError, match="needs a key"):
            codec(jnp.zeros((2, 4, 4, 3)), train=False)
