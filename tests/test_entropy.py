"""The learned entropy bottleneck (codecs/entropy/factorized.py): the density, the integer tables, real bytes,
the rate term and its place in the model, the step, checkpoints and exports."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs.entropy import factorized as ent
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models import build_model

from helpers import small_config

HERE = os.path.dirname(os.path.abspath(__file__))


def entropy_config(**split):
    """small_config's split in the ResNet-18 layout (the tests here are about the codec: fast to compile)."""
    c = small_config(**split)
    c.model.depth = 18
    c.codec = ml_collections.ConfigDict(codec_settings("entropy"))
    return c


def random_density(seed, channels=3, filters=(3, 3, 3)):
    """Init parameters pushed far from init (large matrices, factors of both signs), as training may."""
    p = ent.init_density(jax.random.key(seed), channels, filters)
    ks = iter(jax.random.split(jax.random.key(seed + 1), 64))
    return {k: v + 3.0 * jax.random.normal(next(ks), v.shape) for k, v in p.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_learned_density_is_a_density(seed):
    p = jax.device_get(random_density(seed))
    xs = np.linspace(-200, 200, 40001)[None, None, :].repeat(3, 0)
    for xp, params in ((np, p), (jnp, p)):
        cdf = 0.5 * (1 + np.tanh(0.5 * np.asarray(ent.logits_cumulative(params, xp.asarray(xs), xp))))
        assert np.all(np.diff(cdf, axis=-1) >= -1e-7)  # monotone
        far = np.asarray(ent.logits_cumulative(params, xp.asarray(np.array([[[-1e6, 1e6]]] * 3)), xp))
        assert np.all(far[..., 0] < -30) and np.all(far[..., 1] > 30)  # CDF 0 at -inf, 1 at +inf
    # the integer bins' probabilities sum to one (over a range wide enough to hold the mass)
    ks = np.arange(-5000, 5001, dtype=np.float64)[None, None, :].repeat(3, 0)
    np.testing.assert_allclose(ent.likelihood(p, ks, np).sum(-1), 1.0, atol=1e-6)


def test_tables_are_integer_frequencies_of_the_density():
    p = jax.device_get(random_density(0))
    med = np.array([0.3, -1.2, 0.0], np.float32)
    x_lo, x_hi = ent.tails({k: np.asarray(v, np.float64) for k, v in p.items()}, 1e-9)
    cdf = lambda x: 0.5 * (1 + np.tanh(0.5 * ent.logits_cumulative(p, np.asarray(x)[:, None, None], np)[:, 0, 0]))
    np.testing.assert_allclose(cdf(x_lo), 0.5e-9, rtol=1e-4)
    np.testing.assert_allclose(1 - cdf(x_hi), 0.5e-9, rtol=1e-4)
    t = ent.build_tables(p, med, 1e-9, 16, 100000)
    for c, (k, lo) in enumerate(zip(t.widths, t.lower)):
        f = t.freqs[c, : k + 1]
        assert f.sum() == 2**16 and f.min() >= 1 and not t.freqs[c, k + 1 :].any()  # zero padding after
        assert lo == min(np.floor(x_lo[c] - med[c]), 0)
        assert len(f) == max(np.ceil(x_hi[c] - med[c]), 0) - lo + 2  # lower..upper, then the escape
    assert ent.build_tables(p, med, 1e-9, 16, 64).widths.max() <= 64  # capped
    again = ent.build_tables(p, med, 1e-9, 16, 100000)  # deterministic
    assert all(np.array_equal(again.state()[k], t.state()[k]) for k in t.state())


def _fit_density(y, steps=300, seed=0):
    """A density trained by Adam on the rate of `y` (the codec's own rate term, nothing else)."""
    c = y.shape[-1]
    p = ent.init_density(jax.random.key(seed), c)
    opt = optax.adam(0.05)
    st = opt.init(p)
    yy = jnp.moveaxis(jnp.asarray(y).reshape(-1, c), -1, 0)[:, None, :]

    @jax.jit
    def step(p, st, key):
        def loss(p):
            noisy = yy + jax.random.uniform(key, yy.shape, minval=-0.5, maxval=0.5)
            return -jnp.mean(jnp.log2(jnp.maximum(ent.likelihood(p, noisy), 1e-9)))

        g = jax.grad(loss)(p)
        u, st = opt.update(g, st)
        return optax.apply_updates(p, u), st

    for i in range(steps):
        p, st = step(p, st, jax.random.key(i))
    return p


def _estimate_bytes(density, y):
    """The graph's rate (-log2 likelihood of the rounded values) per sample, in bytes."""
    c = y.shape[-1]
    lik = ent.likelihood(jax.device_get(density), np.moveaxis(y.reshape(-1, c), -1, 0)[:, None, :], np)
    return (-np.log2(np.maximum(lik, 1e-9))).reshape(c, len(y), -1).sum((0, 2)) / 8


def test_rate_estimate_agrees_with_the_real_stream_on_trained_feature_maps():
    """1,000 feature maps of the Fashion-MNIST entropy model (tests/data/make_entropy_maps.py): the
    graph's -log2 likelihood vs len() of each range-coded stream, within 3 % + 8 bytes per sample."""
    d = np.load(os.path.join(HERE, "data", "entropy_maps.npz"))
    y = d["symbols"].astype(np.float32) + d["medians"].ravel()
    params = {"density": {k[8:]: d[k] for k in d.files if k.startswith("density_")}, "medians": d["medians"]}
    codec = make_codec(codec_settings("entropy"))
    state = codec.fit(params, iter(()))  # the density's tables: no data read
    assert len(y) == 1000
    est = _estimate_bytes(params["density"], y)
    real = np.array([len(p) for p in codec.encode(y, state=state)])
    assert np.all(np.abs(real - est) <= 0.03 * est + 8), np.max(np.abs(real - est) - 0.03 * est)
    np.testing.assert_array_equal(codec.decode(codec.encode(y, state=state), y.shape, state=state), y)


def test_rate_estimate_agrees_with_the_real_stream_on_a_fitted_density(rng):
    """The same on a density fitted here by Adam to Laplacian symbols of three scales (medians 0)."""
    y = np.round(rng.laplace(0, [0.4, 2.0, 6.0], (1000, 7, 7, 3))).astype(np.float32)
    density = _fit_density(y)
    codec = ent.EntropyCodec()
    state = codec.fit({"density": density, "medians": np.zeros((3, 1, 1), np.float32)}, ())
    est = _estimate_bytes(density, y)
    real = np.array([len(p) for p in codec.encode(y, state=state)])
    assert np.all(np.abs(real - est) <= 0.03 * est + 8)
    assert est.mean() < 0.8 * _estimate_bytes(ent.init_density(jax.random.key(0), 3), y).mean()  # it did fit


def test_tables_fitted_to_trained_symbols_code_held_out_maps_exactly_and_in_fewer_bytes():
    """Tables fitted (per channel, per element, per element and neighbour state) to 800 of the trained
    feature maps code the other 200 exactly and in fewer bytes than the density's tables, each
    finer context in fewer still (a 14x14 map's statistics depend on the position, and a symbol on
    the ones above it and before it). The tables' rate estimate is len() within 3 % + 8 B."""
    d = np.load(os.path.join(HERE, "data", "entropy_maps.npz"))
    y = d["symbols"].astype(np.float32) + d["medians"].ravel()
    params = {"density": {k[8:]: d[k] for k in d.files if k.startswith("density_")}, "medians": d["medians"]}
    held_out = y[800:]
    density = make_codec(codec_settings("entropy"))
    density_len = np.mean([len(p) for p in density.encode(held_out, state=density.fit(params, ()))])
    got = {}
    rows = {"channel": 8, "element": 14 * 14 * 8, "neighbours": 14 * 14 * 8 * 9}
    for ctx, n_rows in rows.items():
        codec = make_codec(codec_settings("entropy", fit_context=ctx))
        assert codec.fits_data
        state = codec.fit(params, [y[:400], y[400:800]])
        assert len(state["freqs"]) == n_rows
        payloads = codec.encode(held_out, state=state)
        np.testing.assert_array_equal(codec.decode(payloads, held_out.shape, state=state), held_out)
        real = np.array([len(p) for p in payloads])
        est = np.asarray(codec.table_bits(jnp.asarray(d["symbols"][800:]), state)) / 8
        assert np.all(np.abs(real - est) <= 0.03 * est + 8)
        got[ctx] = real.mean()
        # the tables' binary form (what a sender ships once) reads back to the same streams
        blob = ent.Tables(**state).to_bytes()
        assert codec.side_info_bytes(state) == len(blob) < state["freqs"].nbytes
        again = ent.Tables.from_bytes(blob, held_out.shape[1:]).state()
        assert codec.encode(held_out[:3], state=again) == payloads[:3]
    assert got["channel"] < density_len and got["element"] <= 0.8 * density_len, (got, density_len)
    assert got["element"] < got["channel"] and got["neighbours"] <= 0.9 * got["element"], got


def test_fitting_reads_fit_examples_samples_and_refuses_what_it_cannot_code():
    d = np.load(os.path.join(HERE, "data", "entropy_maps.npz"))
    y = d["symbols"].astype(np.float32) + d["medians"].ravel()
    params = {"density": {k[8:]: d[k] for k in d.files if k.startswith("density_")}, "medians": d["medians"]}
    codec = make_codec(codec_settings("entropy", fit_context="element", fit_examples=10))
    freqs = lambda c, batches: c.fit(params, batches)["freqs"]  # noqa: E731
    np.testing.assert_array_equal(freqs(codec, [y[:8], y[8:16], y[16:24]]), freqs(codec, [y[:10]]))
    every = make_codec(codec_settings("entropy", fit_context="element"))  # fit_examples=0: all of them
    np.testing.assert_array_equal(freqs(every, [y[:8], y[8:16]]), freqs(every, [y[:16]]))
    assert not np.array_equal(freqs(every, [y[:16]]), freqs(codec, [y[:16]]))
    with pytest.raises(ValueError, match="no tables"):
        codec.encode(y[:1])  # not fitted: it has no tables to transport
    state = codec.fit(params, [y[:10]])
    with pytest.raises(ValueError, match="table rows code no 7x14x8 features"):
        codec.encode(y[:1, :7], state=state)  # another feature shape
    with pytest.raises(ValueError, match="no symbols"):
        codec.fit(params, [])


def codes_with_its_tables(cfg, v, state, x, tmp_path, rtol):
    """The model of `cfg` given its fitted codec state: its eval x_hat is decode(encode(z)) bit for
    bit, its bytes len() of the streams, its rate the density's at the values sent; an export carries the
    state as arrays (the manifest holds settings only), and the exporter refuses to export a codec
    fitted to data without its state."""
    from bottlenet_jax.codecs import STATE_COLLECTION
    from bottlenet_jax.errors import CheckpointError
    from bottlenet_jax.export import export_variables, load_codec

    model = build_model(cfg, bn_axis_name=None)
    codec = model.codec
    fitted = {**v, STATE_COLLECTION: {"codec": state}}
    (logits, stats), inter = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(fitted, x)
    z = np.asarray(jax.jit(lambda v, x: model.apply(v, x, part="edge"))(v, x))
    payloads = codec.encode(z, state=state)
    x_hat = inter["intermediates"]["x_hat"][0]
    np.testing.assert_array_equal(codec.decode(payloads, z.shape, state=state), x_hat)
    np.testing.assert_array_equal(stats["bytes_payload"], [len(p) for p in payloads])
    # the rate is the density's (what training prices), at the values sent, whatever the tables
    y_hat = ent.dequantize_np(ent.quantize_np(z, state["medians"]), state["medians"])
    np.testing.assert_allclose(
        stats["rate_bits"] / 8, _estimate_bytes(v["params"]["codec"]["density"], y_hat), rtol=rtol
    )
    with pytest.raises(CheckpointError, match="fitted to training data"):
        export_variables(cfg, v, str(tmp_path / "unfitted"))
    m = export_variables(cfg, v, str(tmp_path / "export"), codec_state=state)
    assert "freqs" not in json.dumps(m) and m["codec_side_info_bytes"] == codec.side_info_bytes(state)
    shipped, shipped_state = load_codec(str(tmp_path / "export"))
    assert shipped.settings() == codec.settings()
    np.testing.assert_array_equal(shipped.decode(payloads, z.shape, state=shipped_state), x_hat)


@pytest.mark.slow  # make test-slow (CI); make test: the registry, legacy and export tests of test_codec_state.py
def test_a_fitted_codec_codes_with_its_tables_in_the_graph_and_through_an_export(tmp_path, rng):
    cfg = entropy_config()
    cfg.codec.fit_context = "neighbours"
    model = build_model(cfg, bn_axis_name=None)
    v = jax.device_get(jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3))))
    v["params"]["reduce"]["bn"]["scale"] = v["params"]["reduce"]["bn"]["scale"] * 3.0
    edge = jax.jit(lambda x: model.apply(v, x, part="edge"))
    fit_y = [np.asarray(edge(jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32))) for _ in range(3)]
    state = model.codec.fit(v["params"]["codec"], fit_y)
    x = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
    codes_with_its_tables(cfg, v, state, x, tmp_path, rtol=1e-5)


@pytest.mark.slow  # mock ImageNet records (TensorFlow): make test-slow (CI)
def test_fitted_codec_state_fits_on_the_training_split_and_the_graph_and_an_export_code_with_it(
    mock_imagenet, tmp_path, rng
):
    """evaluation.fitted_codec_state runs the edge over the config's training split and fits the
    tables; the model codes with them in its eval graph (x_hat is decode(encode(z)) bit for bit,
    bytes are len(), the rate the tables' own), and an export carries them."""
    from bottlenet_jax import cli
    from bottlenet_jax.data import records
    from bottlenet_jax.evaluation import edge_features, fitted_codec_state

    cfg = cli.load_config_file(os.path.join(os.path.dirname(HERE), "configs", "mock.py"))
    cfg.data_dir = str(mock_imagenet)
    cfg.codec = ml_collections.ConfigDict(codec_settings("entropy", fit_context="element"))
    model = build_model(cfg, bn_axis_name=None)
    v = jax.device_get(jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3))))
    v["params"]["reduce"]["bn"]["scale"] = v["params"]["reduce"]["bn"]["scale"] * 3.0  # a few symbols each side
    data = records.open_prepared(cfg.dataset, cfg.data_dir)
    state = fitted_codec_state(cfg, v, 0, None, data)
    codec = model.codec
    train_y = np.concatenate(list(edge_features(cfg, v, data, cfg.train_split)))
    assert len(train_y) == 48 and len(state["freqs"]) == int(np.prod(train_y.shape[1:]))
    density = make_codec(codec_settings("entropy"))
    by_density = density.encode(train_y, state=density.fit(v["params"]["codec"], ()))
    assert sum(map(len, codec.encode(train_y, state=state))) < sum(map(len, by_density))  # fitted to these

    x = jnp.asarray(rng.normal(size=(4, 64, 64, 3)), jnp.float32)
    codes_with_its_tables(cfg, v, state, x, tmp_path, rtol=1e-6)


def test_graph_eval_output_equals_decode_of_encode_and_bytes_are_len(rng):
    cfg = entropy_config()
    model = build_model(cfg, bn_axis_name=None)
    x = jnp.asarray(rng.normal(size=(5, 32, 32, 3)), jnp.float32)
    v = jax.device_get(jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3))))
    # spread the features so that symbols fall outside the tables (escapes) and far into the tails
    v["params"]["reduce"]["bn"]["scale"] = v["params"]["reduce"]["bn"]["scale"] * 40.0
    (logits, stats), inter = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(v, x)
    x_hat = np.asarray(inter["intermediates"]["x_hat"][0])
    codec = model.codec
    state = codec.fit(v["params"]["codec"], ())  # the density's tables, as the graph builds them
    z = np.asarray(jax.jit(lambda v, x: model.apply(v, x, part="edge"))(v, x))
    assert np.abs(z).max() > 40  # beyond the initial tables (+-10): escapes are exercised
    payloads = codec.encode(z, state=state)
    np.testing.assert_array_equal(codec.decode(payloads, z.shape, state=state), x_hat)  # bit for bit
    np.testing.assert_array_equal(np.asarray(stats["bytes_payload"]), [len(p) for p in payloads])
    np.testing.assert_array_equal(stats["bytes_full"], stats["bytes_payload"])
    # the cloud half on the decoded features gives the full model's logits
    cloud = model.apply(v, jnp.asarray(codec.decode(payloads, z.shape, state=state)), part="cloud")
    np.testing.assert_allclose(cloud, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stream", ["rans", "range"])
def test_malformed_streams_are_value_errors(rng, stream):
    cfg = entropy_config()
    cfg.codec.stream = stream
    model = build_model(cfg, bn_axis_name=None)
    v = jax.device_get(jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3))))
    codec = model.codec
    state = codec.fit(v["params"]["codec"], ())
    z = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
    good = codec.encode(z, state=state)[0]
    words = "rANS" if stream == "rans" else "multiple of 4"
    for bad, why in (
        (good[:-4], "not an (rANS )?encoding"),
        (good + b"\0\0\0\0", "not an (rANS )?encoding"),
        (good[:-1], "not an (rANS )?encoding|shortest form" if stream == "rans" else words),
        (b"", words),
    ):
        with pytest.raises(ValueError, match=why):
            codec.decode([bad], z.shape, state=state)
    with pytest.raises(ValueError, match="channels"):
        codec.decode([good], (1, 8, 8, 2), state=state)
    with pytest.raises(ValueError, match="not finite"):
        codec.encode(np.full((1, 8, 8, 3), np.nan, np.float32), state=state)
    with pytest.raises(ValueError, match="no tables"):
        codec.encode(z)


@pytest.mark.slow  # make test-slow (CI): keeps make test within its budget on 2 cores
def test_codec_and_model_parameters_all_receive_gradients(rng):
    from bottlenet_jax.steps import Objective, objective

    cfg = entropy_config()
    model = build_model(cfg, bn_axis_name=None)
    x = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
    y = jnp.arange(4) % 10
    v = model.init({"params": jax.random.key(0)}, x)

    def loss(params):
        (logits, stats), nv = model.apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            x,
            train=True,
            rngs={"codec": jax.random.key(1)},
            mutable=["batch_stats", "losses"],
        )
        return objective(Objective(rate_lambda=1e-3), logits, y, stats, nv["losses"])[0]

    g = jax.grad(loss)(v["params"])
    for path, leaf in jax.tree_util.tree_leaves_with_path(g):
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(leaf)), name
        if "bias" in name and "bn" not in name and "density" not in name:
            continue
        assert np.abs(np.asarray(leaf)).max() > 0, f"no gradient reaches {name}"
    assert {"density", "medians"} <= set(g["codec"])


def test_rate_term_trains_the_density_and_needs_a_rate_model(rng):
    from bottlenet_jax.parallel import make_mesh
    from bottlenet_jax.steps import compile_steps, create_optimizer

    cfg = entropy_config()
    cfg.codec = ml_collections.ConfigDict(codec_settings("identity"))
    cfg.rate_lambda = 1e-3
    model = build_model(cfg)
    with pytest.raises(ConfigError, match="no differentiable rate"):
        compile_steps(model, optax.sgd(0.1), make_mesh(jax.devices()[:1]), cfg)
    # codec parameters are not weight-decayed (a probability model, not weights)
    cfg = entropy_config()
    cfg.weight_decay = 0.5
    params = {"codec": {"q": jnp.ones(2)}, "backbone": {"k": jnp.ones(2)}}
    tx = create_optimizer(cfg, params, 10, 10)
    upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert np.all(np.asarray(upd["codec"]["q"]) == 0) and np.all(np.asarray(upd["backbone"]["k"]) != 0)


def test_the_medians_have_an_optimizer_of_their_own():
    """The codec's aux parameters (the medians) move by Adam at aux_learning_rate (its first step:
    lr x sign of the gradient), whatever the network's learning rate, weight decay or first stage;
    the network's parameters move by SGD on their gradients alone."""
    from bottlenet_jax.steps import create_optimizer

    cfg = entropy_config()
    cfg.update(learning_rate=0.4, weight_decay=0.5, stage1_steps=5, aux_learning_rate=2e-3)
    params = {
        "codec": {"medians": jnp.zeros((3, 1, 1)), "density": {"bias_0": jnp.ones(2)}},
        "backbone": {"k": jnp.ones(2)},
        "reduce": {"k": jnp.ones(2)},
    }
    grads = {
        "codec": {"medians": jnp.array([50.0, -0.01, 3.0]).reshape(3, 1, 1), "density": {"bias_0": jnp.ones(2)}},
        "backbone": {"k": jnp.ones(2)},
        "reduce": {"k": jnp.ones(2)},
    }
    tx = create_optimizer(cfg, params, 10, 100)
    upd, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(upd["codec"]["medians"]).ravel(), [-2e-3, 2e-3, -2e-3], rtol=1e-4)
    assert np.all(np.asarray(upd["backbone"]["k"]) == 0)  # frozen in the first stage
    assert np.all(np.asarray(upd["reduce"]["k"]) < 0)
    density = np.asarray(upd["codec"]["density"]["bias_0"])  # the network's SGD, without decay
    np.testing.assert_allclose(density, np.asarray(upd["reduce"]["k"]) / (1 + 0.5), rtol=1e-5)  # reduce: + decay 0.5
    hyper = entropy_config()
    hyper.codec = ml_collections.ConfigDict(codec_settings("hyperprior"))
    hp = {"codec": {"ha": {"w0": jnp.ones(2)}, "z_medians": jnp.zeros(2)}, "backbone": {"k": jnp.ones(2)}}
    tx = create_optimizer(hyper, hp, 10, 100)
    upd, _ = tx.update(jax.tree.map(lambda v: 5 * jnp.ones_like(v), hp), tx.init(hp), hp)
    np.testing.assert_allclose(upd["codec"]["ha"]["w0"], -1e-3, rtol=1e-4)  # its networks: Adam at codec_learning_rate
    np.testing.assert_allclose(upd["codec"]["z_medians"], -1e-2, rtol=1e-4)  # its medians: Adam at aux_learning_rate
    plain = entropy_config()
    plain.codec = ml_collections.ConfigDict(codec_settings("identity"))
    tx = create_optimizer(plain, {"backbone": params["backbone"]}, 10, 100)  # no aux parameters: one optimizer
    assert not isinstance(tx.init({"backbone": params["backbone"]}), optax.MultiTransformState)


def test_distillation_term_is_zero_for_the_teacher_itself_and_positive_otherwise():
    from bottlenet_jax.steps import Objective, distillation, objective

    t = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    np.testing.assert_allclose(distillation(t, t, 2.0), 0.0, atol=1e-6)
    assert np.all(np.asarray(distillation(-t, t, 2.0)) > 0)
    obj = Objective(rate_lambda=0.0, distill_weight=1.0, temperature=2.0)
    loss, parts = objective(obj, -t, jnp.array([0, 1]), {}, {}, t)
    np.testing.assert_allclose(loss, parts["kd"], rtol=1e-6)


@pytest.mark.slow  # trains 8 steps beside a teacher: make test-slow (CI)
def test_feature_distillation_pulls_the_restored_features_to_the_teachers(rng):
    """distill.feature_weight: the term is the MSE to the teacher's RBk features (0 for equal
    features), it reaches the compiled step as metric "feature", and SGD on it alone lowers it."""
    from bottlenet_jax.parallel import make_mesh, replicate, shard_batch
    from bottlenet_jax.steps import Objective, _teacher_outputs, compile_steps, objective
    from bottlenet_jax.train_lib import create_train_state, validate_config

    a = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    obj = Objective(feature_weight=2.0)
    logits, labels = jnp.zeros((2, 10)), jnp.array([0, 1])
    assert float(objective(obj, logits, labels, {}, {}, features=(a, a))[1]["feature"]) == 0.0
    loss, parts = objective(obj, logits, labels, {}, {}, features=(a, a + 1.0))
    np.testing.assert_allclose([parts["feature"], loss - parts["ce"]], [1.0, 2.0], rtol=1e-6)

    cfg = entropy_config()
    cfg.rate_lambda, cfg.learning_rate, cfg.warmup_epochs = 0.0, 0.3, 0.0
    cfg.distill.update(weight=0.0, feature_weight=1.0)
    bad = ml_collections.ConfigDict(cfg.to_dict())
    bad.split.after, bad.distill.teacher = 0, "somewhere"
    with pytest.raises(ConfigError, match="feature_weight"):  # no split: no features to match
        validate_config(bad)
    tcfg = ml_collections.ConfigDict(cfg.to_dict())
    tcfg.split.update(after=0, unit=False)
    tcfg.codec = ml_collections.ConfigDict(codec_settings("identity"))
    teacher = build_model(tcfg)
    t_vars = jax.jit(teacher.init)({"params": jax.random.key(5)}, jnp.zeros((1, 32, 32, 3)))
    x = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)  # the step's one teacher pass: same logits
    one_pass = jax.jit(lambda v, x: teacher.apply(v, x, 1, method=_teacher_outputs)[0])
    np.testing.assert_array_equal(one_pass(t_vars, x), jax.jit(lambda v, x: teacher.apply(v, x)[0])(t_vars, x))
    mesh = make_mesh(jax.devices()[:1])
    model = build_model(cfg)
    state, tx = create_train_state(cfg, model, 3, 20, 20)
    p_train, _ = compile_steps(model, tx, mesh, cfg, teacher=(teacher, t_vars))
    batch = {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8), "label": np.arange(8) % 10}
    state, batch = replicate(state, mesh), shard_batch(batch, mesh)
    seen = []
    for _ in range(8):
        state, m = p_train(state, batch)
        seen.append(float(m["feature"]))
    assert np.all(np.isfinite(seen)) and seen[0] > 0 and seen[-1] < 0.7 * seen[0], seen


def test_bad_entropy_settings_fail_at_build():
    for bad, match in (
        (dict(train_quantizer="round"), "train_quantizer"),
        (dict(precision=30), "precision"),
        (dict(tail_mass=0.0), "tail_mass"),
        (dict(freqs=((1,),)), "not a setting"),  # tables are state now, not settings
        (dict(fit_context="pixel"), "fit_context"),
        (dict(fit_prior=0.0), "fit_prior"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_codec({"name": "entropy", **bad})


def test_a_workdir_and_an_export_saved_before_codecs_owned_parameters_still_load():
    """tests/data/legacy was written at 17c031e (tests/data/make_legacy.py): its checkpoint resumes
    into the current TrainState, evaluates to the logits that version computed, and its export
    serves them through real bytes."""
    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.export import Half, load_codec, load_manifest
    from bottlenet_jax.steps import compile_steps
    from bottlenet_jax.train_lib import create_train_state

    legacy = os.path.join(HERE, "data", "legacy")
    want = np.load(os.path.join(legacy, "expected.npz"))
    cfg = load_config(os.path.join(legacy, "workdir"))
    assert "rate_lambda" not in cfg and "distill" not in cfg  # an old config.json
    model = build_model(cfg)
    fresh, tx = create_train_state(cfg, model, 3, 1, 1)
    state, meta = Checkpoints(os.path.join(legacy, "workdir")).restore(fresh)  # the resume path
    assert state is not None and meta["step"] == 0
    compile_steps(model, tx, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)), cfg)  # objective defaults
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, _ = build_model(cfg, bn_axis_name=None).apply(variables, jnp.asarray(want["x"]))
    np.testing.assert_allclose(logits, want["logits"], rtol=1e-5, atol=1e-5)
    d = os.path.join(legacy, "export")
    codec, codec_state = load_codec(d)
    assert codec_state == {} and load_manifest(d)["codec"]["name"] == "jpeg"
    z = Half(d, "edge")(want["x"])
    z_hat = codec.decode(codec.encode(np.asarray(z)), z.shape)
    np.testing.assert_allclose(Half(d, "cloud")(z_hat), want["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # make test-slow (CI); tests/test_codec_state.py exports the codec's state in make test
def test_checkpoint_and_export_round_trip(tmp_path, rng):
    from bottlenet_jax.checkpoint import Checkpoints
    from bottlenet_jax.export import Half, export_variables, load_codec, load_manifest
    from bottlenet_jax.train_lib import create_train_state

    cfg = entropy_config()
    model = build_model(cfg)
    state, _ = create_train_state(cfg, model, 3, 1, 1)
    # move the codec's parameters off their init, as training does
    state = state.replace(
        params={**state.params, "codec": jax.device_get(random_density_params(state.params["codec"]))}
    )
    ck = Checkpoints(str(tmp_path / "wd"))
    ck.save(state, {"step": 0})
    ck.close()
    restored, _ = Checkpoints(str(tmp_path / "wd")).restore(state)
    before = model.codec.fit(state.params["codec"], ())
    after = model.codec.fit(restored.params["codec"], ())
    assert all(np.array_equal(before[k], after[k]) for k in before) and len(after["freqs"]) == cfg.split.channels

    variables = {"params": restored.params, "batch_stats": restored.batch_stats}
    export_variables(cfg, variables, str(tmp_path / "export"))  # the density's tables: from the params
    m = load_manifest(str(tmp_path / "export"))
    codec, shipped = load_codec(str(tmp_path / "export"))
    assert codec.settings() == model.codec.settings() and m["codec_state"] == "codec_state"
    assert all(np.array_equal(before[k], shipped[k]) for k in before)  # the integer tables travel as arrays
    x = jnp.asarray(rng.normal(size=(3, 32, 32, 3)), jnp.float32)
    z = np.asarray(Half(str(tmp_path / "export"), "edge")(x))
    z_hat = codec.decode(codec.encode(z, state=shipped), z.shape, state=shipped)
    logits = Half(str(tmp_path / "export"), "cloud")(z_hat)
    full, stats = build_model(cfg, bn_axis_name=None).apply(variables, x)
    np.testing.assert_allclose(logits, full, rtol=1e-5, atol=1e-5)
    assert m["codec"]["name"] == "entropy" and np.all(np.asarray(stats["bytes_payload"]) > 0)


def random_density_params(codec_params):
    c = codec_params["medians"].shape[0]
    return {
        "density": random_density(5, channels=c),
        "medians": np.linspace(-0.7, 0.4, c, dtype=np.float32)[:, None, None],
    }
