"""Data parallelism over 4 forced CPU devices (conftest): exact gradients, one callback per device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bottlenet_jax import parallel
from bottlenet_jax.codecs import JpegCodec
from bottlenet_jax.models import build_model
from bottlenet_jax.parallel import AXIS, BATCH, REPLICATED
from bottlenet_jax.steps import cross_entropy

from helpers import feature_maps, small_config


def test_four_devices_present():
    assert jax.device_count() == 4


def test_codec_gradient_is_identity_inside_shard_map(rng):
    codec = JpegCodec(quality=20)
    mesh = parallel.make_mesh()
    x = feature_maps(rng, 8, 8, 8, 2)
    w = rng.normal(size=x.shape).astype(np.float32)

    def per_device(x, w):
        return jax.grad(lambda x: jnp.sum(w * codec(x, train=True)[0]))(x)

    g = parallel.data_parallel(per_device, mesh, (BATCH, BATCH), BATCH)(x, w)
    np.testing.assert_array_equal(g, w)


def _loss_and_model(cfg, axis):
    model = build_model(cfg, bn_axis_name=axis)

    def loss(params, batch_stats, x, y):
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])[
            0
        ]
        l = jnp.mean(cross_entropy(logits, y, 10))
        return lax.pmean(l, AXIS) if axis else l

    return model, loss


@pytest.mark.parametrize("depth", [pytest.param(18, marks=pytest.mark.slow), pytest.param(50, marks=pytest.mark.slow)])
def test_data_parallel_gradient_equals_single_device(rng, depth):
    """ResNet-18 and ResNet-50 (the paper's network), both in `make test-slow`. Compared in
    float64: at random init this deep BN network is so ill-conditioned in float32 that
    the single-device gradient of a merely *permuted* batch already differs by ~10 % (measured),
    so f32 cannot separate a parallelism bug from rounding noise; f64 can (observed diff ~1e-12).
    The JPEG codec itself is exact integer work either way."""
    with jax.enable_x64(True):
        _check_data_parallel_gradient(depth)


def _check_data_parallel_gradient(depth):
    cfg = small_config()
    cfg.model.depth = depth
    cfg.model.dtype = "float64"
    x = jax.random.uniform(jax.random.key(3), (8, 32, 32, 3), jnp.float64)
    y = jnp.arange(8) % 10
    ref_model, ref_loss = _loss_and_model(cfg, None)
    v = ref_model.init(jax.random.key(0), x[:1])
    v = jax.tree.map(lambda a: a.astype(jnp.float64), v)
    want = jax.jit(jax.grad(ref_loss))(v["params"], v["batch_stats"], x, y)

    dp_model, dp_loss = _loss_and_model(cfg, AXIS)
    calls = []
    inner = dp_model.codec.host_fn
    object.__setattr__(dp_model.codec, "host_fn", lambda u8, q: (calls.append(u8.shape), inner(u8, q))[1])
    mesh = parallel.make_mesh()
    grad = parallel.data_parallel(jax.grad(dp_loss), mesh, (REPLICATED, REPLICATED, BATCH, BATCH), REPLICATED)
    got = grad(v["params"], v["batch_stats"], x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9), got, want)
    # the gradient is not trivially zero, and the codec ran once per device on its own slice
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(got)) > 1e-3
    assert sorted(calls) == [(2, 16, 16, 3)] * 4


def test_saving_small_replicated_arrays_compiles_nothing(tmp_path):
    """Orbax's replica-parallel save sliced every replicated array per device, a compiled slice per
    shape and device (72 compiles, 12 s of a 3-step run here); checkpoint.py splits only arrays of
    at least 1 MiB a replica: a state of small arrays replicated on the 4 devices saves without a
    compile, and restores to the same values."""
    import flax

    from bottlenet_jax.checkpoint import Checkpoints

    @flax.struct.dataclass
    class State:
        step: jax.Array
        params: dict

    mesh = parallel.make_mesh()
    shapes = [(8,), (16,), (3, 3, 1, 8), (2, 2, 8, 4), (32, 10)]
    state = parallel.replicate(
        State(jnp.asarray(3), {f"w{i}": jnp.full(s, i + 0.5, jnp.float32) for i, s in enumerate(shapes)}), mesh
    )
    from bottlenet_jax.serve.model_process import CompileCounter  # the server's count of programs made

    CompileCounter.install()
    before = CompileCounter.count
    ck = Checkpoints(str(tmp_path / "wd"))
    ck.save(state, {"examples": 24})
    ck.wait()
    assert CompileCounter.count == before, f"{CompileCounter.count - before} compiles while saving"
    restored, meta = Checkpoints(str(tmp_path / "wd")).restore(state)
    assert meta["examples"] == 24
    for k, v in state.params.items():
        np.testing.assert_array_equal(restored.params[k], v)
