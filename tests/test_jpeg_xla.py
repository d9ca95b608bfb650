"""On-device JPEG emulation vs libjpeg-turbo (cv2) on realistic feature maps."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax.codecs import make_codec
from bottlenet_jax.codecs.jpeg import tile, untile
from bottlenet_jax.codecs.jpeg_xla import jpeg_lossy, quant_table, tile_jnp, untile_jnp
from conftest import feature_maps


def test_quant_table_follows_libjpeg_scaling():
    assert quant_table(50)[0, 0] == 16 and quant_table(100).max() == 1
    assert quant_table(10)[0, 0] == 80 and quant_table(1).max() == 255  # 5000/q %, clamped to 255
    assert quant_table(90)[0, 0] == 3  # (16*20+50)//100


def test_tiling_matches_host(rng):
    x = rng.integers(0, 256, (2, 3, 7, 5, 6)).astype(np.float32)
    for layout in ("grid", "rows"):
        np.testing.assert_array_equal(tile_jnp(jnp.asarray(x), layout), tile(x.reshape(-1, 7, 5, 6), layout).reshape(2, 3, *tile(x[0], layout).shape[1:]))
        np.testing.assert_array_equal(untile_jnp(tile_jnp(jnp.asarray(x), layout), 7, 5, 6, layout), x)


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_emulation_fidelity_vs_libjpeg(rng, quality):
    """>= 100 realistic maps (ReLU-sparse and smooth, odd sizes so edge padding is exercised)."""
    maps = np.concatenate([feature_maps(rng, 60, 14, 14, 4, "sparse"), feature_maps(rng, 60, 14, 14, 4, "smooth")])
    imgs = tile(np.clip(np.round(maps * 255), 0, 255).astype(np.uint8), "grid")  # 120 images of 28x28
    ref = np.stack([cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)
                    for im in imgs]).astype(np.float32)
    emu = np.asarray(jax.jit(lambda p: jpeg_lossy(p, quality))(imgs.astype(np.float32)))
    diff = np.abs(emu - ref)
    blocks = diff[:, :24, :24].reshape(len(imgs), 3, 8, 3, 8).max(axis=(2, 4))
    print(f"q={quality}: mean |diff| {diff.mean():.4f}, max {diff.max():.0f}, blocks differing {100 * (blocks > 0).mean():.1f} %")
    assert diff.mean() <= 0.25
    assert (diff > 0).mean() < 0.5  # most pixels are identical, not merely close


def test_codec_trains_on_emulation_and_evaluates_with_real_jpeg(rng):
    x = feature_maps(rng, 6, 14, 14, 4)
    emu, host = make_codec({"name": "jpeg_xla", "quality": 30, "rate_samples": 2}), make_codec({"name": "jpeg", "quality": 30})
    (xe, se), (xh, sh) = jax.jit(lambda x: emu(x, train=True))(x), jax.jit(lambda x: host(x, train=False))(x)
    assert np.abs(np.asarray(xe) - np.asarray(xh)).mean() * 255 <= 0.25
    assert int(se["bytes_full"][0]) == int(np.round(np.asarray(sh["bytes_full"][:2]).mean()))  # sampled rate
    xv, sv = jax.jit(lambda x: emu(x, train=False))(x)
    np.testing.assert_array_equal(xv, xh)  # eval = the real host codec
    np.testing.assert_array_equal(sv["bytes_payload"], sh["bytes_payload"])
    w = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(w * emu(x, train=True)[0]))(x), w)


def test_unmeasured_skips_the_rate_callback_and_keeps_the_output(rng):
    """The trainer's non-logging steps: same x_hat and gradient, NaN bytes, no host callback."""
    x = feature_maps(rng, 4, 8, 8, 4)
    emu = make_codec({"name": "jpeg_xla", "quality": 40, "rate_samples": 2})
    quiet = emu.unmeasured()
    calls, inner = [], quiet.host_fn
    object.__setattr__(quiet, "host_fn", lambda u8: (calls.append(u8.shape), inner(u8))[1])
    (xe, se), (xq, sq) = jax.jit(lambda x: emu(x, train=True))(x), jax.jit(lambda x: quiet(x, train=True))(x)
    np.testing.assert_array_equal(xq, xe)
    assert np.isfinite(np.asarray(se["bytes_full"])).all() and np.isnan(np.asarray(sq["bytes_full"])).all()
    assert calls == []
    w = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(w * quiet(x, train=True)[0]))(x), w)
    np.testing.assert_array_equal(quiet(x, train=False)[0], emu(x, train=False)[0])  # eval: the real codec
    host = make_codec({"name": "jpeg"})
    assert host.unmeasured() is host and make_codec({"name": "jpeg_xla", "rate_samples": 0}).unmeasured().measure_rate
