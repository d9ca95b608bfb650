import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bottlenet_jax.codecs import codec_settings
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models import block_layout, build_model
from configs import default

from helpers import small_config


def test_resnet50_has_torchvision_parameter_count():
    c = default.get_config()
    c.split.after = 0
    model = build_model(c, bn_axis_name=None)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    assert sum(x.size for x in jax.tree.leaves(v["params"])) == 25_557_032
    assert len(block_layout(50)) == 16 and len(block_layout(152)) == 50 and len(block_layout(18)) == 8


@pytest.mark.parametrize(
    "depth, stem, size, k",
    [
        pytest.param(50, "small", 32, 1, marks=pytest.mark.slow),  # each compiles a ResNet-50: make test-slow
        pytest.param(50, "small", 32, 9, marks=pytest.mark.slow),
        (18, "imagenet", 64, 3),
        (34, "imagenet", 64, 16),
    ],
)
def test_split_without_bottleneck_equals_unsplit(depth, stem, size, k):
    c = small_config()
    c.model.update(depth=depth, stem=stem)
    c.image_size = size
    c.split.update(after=0)
    plain = build_model(c, bn_axis_name=None)
    c.split.update(after=k, unit=False)
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    split = build_model(c, bn_axis_name=None)
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    v = plain.init(jax.random.key(0), x)
    v = {"params": v["params"], "batch_stats": jax.tree.map(lambda s: s + 0.1, v["batch_stats"])}
    want, _ = plain.apply(v, x)
    got, stats = split.apply(v, x)  # the same variables serve the split model
    np.testing.assert_array_equal(got, want)
    feats = split.apply(v, x, part="edge")
    np.testing.assert_array_equal(split.apply(v, feats, part="cloud"), want)
    assert stats["bytes_full"].shape == (2,)


def test_feature_shape_matches_model_at_every_split_point():
    from bottlenet_jax.models import feature_shape

    c = small_config()
    c.image_size = 28
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    for k, stride in [(1, 2), (4, 2), (8, 1), (14, 1), (16, 1)]:
        c.split.update(after=k, stride=stride)
        model = build_model(c, bn_axis_name=None)
        z = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), part="edge")[0])
        assert z.shape[1:] == feature_shape(c), k


def test_resnet50_rb1_bottleneck_shapes():
    c = default.get_config()
    c.split.update(after=1, channels=12, stride=2, kernel=2)
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    model = build_model(c, bn_axis_name=None)
    x = jnp.zeros((1, 224, 224, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    (_, _), inter = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), v
    )
    i = inter["intermediates"]
    assert i["backbone"]["layer1_0"]["__call__"][0].shape == (1, 56, 56, 256)
    assert i["reduce"]["__call__"][0].shape == (1, 28, 28, 12)
    assert i["restore"]["__call__"][0].shape == (1, 56, 56, 256)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.split.update(after=17), r"RB1\.\.RB16"),
        (lambda c: c.split.update(after=-1), r"RB1\.\.RB16"),
        (lambda c: c.codec.update(quality=0), r"1\.\.100"),
        (lambda c: c.codec.update(quality=150), r"1\.\.100"),
        (lambda c: c.split.update(channels=0), "C' must be > 0"),
        (lambda c: c.split.update(channels=-4), "C' must be > 0"),
        (lambda c: setattr(c, "image_size", 226), "57x57, not divisible by the reduction stride 2"),
        (lambda c: c.split.update(stride=3), "1 or 2"),
        (lambda c: c.model.update(depth=42), "must be one of"),
    ],
)
def test_bad_config_fails_at_build_with_one_line(change, match):
    c = default.get_config()
    change(c)
    with pytest.raises(ConfigError, match=match) as e:
        build_model(c)
    assert "\n" not in str(e.value)
