import os
import subprocess
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax.codecs import JpegCodec, make_codec
from bottlenet_jax.codecs.jpeg import codec as jpeg
from bottlenet_jax.codecs.jpeg import host as jpeg_host
from bottlenet_jax.codecs.jpeg import jfif
from bottlenet_jax.codecs.jpeg.jfif import FRAMING_BYTES
from bottlenet_jax.errors import ConfigError

from helpers import feature_maps


def reference_tile(u8, layout):
    """Independent (loop) tiling to check the vectorised one against."""
    n, h, w, c = u8.shape
    if layout == "rows":
        return np.stack([np.concatenate([u8[i, :, :, j] for j in range(c)], 0) for i in range(n)])
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    img = np.zeros((n, rows * h, cols * w), np.uint8)
    for j in range(c):
        r, q = divmod(j, cols)
        img[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = u8[..., j]
    return img


@pytest.mark.parametrize("layout", ["grid", "rows"])
@pytest.mark.parametrize("optimize", [False, True])
def test_graph_output_is_cv2_roundtrip_bit_for_bit(rng, layout, optimize):
    x = feature_maps(rng, 6, 14, 14, 5)
    codec = JpegCodec(quality=40, layout=layout, optimize=optimize)
    x_hat, stats = jax.jit(lambda x: codec(x, train=True))(x)
    u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    for i, img in enumerate(reference_tile(u8, layout)):
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 40, cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)])
        dec = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
        want = jpeg.untile(dec[None], 14, 14, 5, layout)[0]
        got = np.asarray(x_hat[i])
        np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), want)  # the pixels
        np.testing.assert_array_equal(got, want.astype(np.float32) * np.float32(1 / 255))  # the scaling
        assert int(stats["bytes_full"][i]) == len(enc)
        payload = jfif.abbreviate(enc.tobytes(), optimize)
        assert int(stats["bytes_payload"][i]) == len(payload) < len(enc)
        if not optimize:  # the rest is fixed framing, as the frontier's "without framing" figures assume
            scan = payload[list(jfif.segments(payload))[-1][2] : -2]  # after the SOS header, before EOI
            assert payload[-2:] == b"\xff\xd9" and len(payload) - len(scan) == FRAMING_BYTES
        rebuilt = jfif.rebuild_full(payload, 40, optimize)
        assert rebuilt == enc.tobytes()
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(rebuilt, np.uint8), cv2.IMREAD_UNCHANGED), dec)


def test_tiling_matches_reference_and_inverts(rng):
    u8 = rng.integers(0, 256, (3, 7, 9, 6), dtype=np.uint8)
    for layout in jpeg.LAYOUTS:
        t = jpeg.tile(u8, layout)
        np.testing.assert_array_equal(t, reference_tile(u8, layout))
        np.testing.assert_array_equal(jpeg.untile(t, 7, 9, 6, layout), u8)
        # the same function on jax arrays inside jit (the device backend), with extra leading axes
        tj = jax.jit(lambda x: jpeg.tile(x, layout))(u8.reshape(3, 1, 7, 9, 6))
        np.testing.assert_array_equal(tj, t.reshape(3, 1, *t.shape[1:]))
        np.testing.assert_array_equal(jax.jit(lambda t: jpeg.untile(t, 7, 9, 6, layout))(tj), u8.reshape(3, 1, 7, 9, 6))


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "identity"},
        {"name": "uint8"},
        {"name": "jpeg", "quality": 25},
        {"name": "jpeg", "quality": 90, "layout": "rows", "optimize": True},
        {"name": "jpeg", "quality": 50, "minmax": True},
        {"name": "jpeg", "quality": 25, "backend": "device"},
        pytest.param(
            {"name": "jpeg", "quality": 90, "layout": "rows", "optimize": True, "backend": "device"},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_transport_path_equals_graph(rng, cfg):
    codec = make_codec(cfg)
    x = feature_maps(rng, 4, 8, 8, 3)
    if cfg.get("minmax"):  # raw features, any range: scaled per sample, 8 bytes of side info
        x = (x - 0.3) * np.array([1, 5, 40, 0.01], np.float32)[:, None, None, None]
    x_hat, stats = jax.jit(lambda x: codec(x))(x)
    payloads = codec.encode(x)
    assert all(isinstance(p, bytes) for p in payloads)
    np.testing.assert_array_equal(codec.decode(payloads, x.shape), np.asarray(x_hat))
    assert [len(p) for p in payloads] == list(np.asarray(stats["bytes_payload"]))


def test_decode_names_a_bad_payload_instead_of_failing_the_batch_on_shapes(rng):
    codec = JpegCodec(quality=50)
    x = feature_maps(rng, 3, 8, 8, 4)
    good = codec.encode(x)
    for bad in (good[1][: len(good[1]) // 3], b"", codec.encode(feature_maps(rng, 1, 4, 4, 4))[0]):
        with pytest.raises(
            ValueError, match=r"payload 1 \(\d+ bytes\)(: not a JPEG| decodes to .*expected a \(16, 16\))"
        ):
            codec.decode([good[0], bad, good[2]], x.shape)


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "uint8"},
        {"name": "jpeg", "quality": 10},
        # slow (~16 s): make test has test_jpeg_device's gradient test of that backend
        pytest.param({"name": "jpeg", "quality": 10, "backend": "device"}, marks=pytest.mark.slow),
    ],
)
def test_gradient_is_identity_under_jit_and_vmap(rng, cfg):
    codec = make_codec(cfg)
    x = feature_maps(rng, 4, 8, 8, 2)
    w = rng.normal(size=x.shape).astype(np.float32)
    f = lambda x: jnp.sum(w * codec(x, train=True)[0])
    np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), w)
    xs = np.stack([x, x[::-1]])
    g = jax.jit(jax.vmap(jax.grad(f)))(xs)
    np.testing.assert_array_equal(g, np.stack([w, w]))
    assert not np.allclose(np.asarray(codec(x)[0]), x)  # the forward pass really is lossy


def test_vmap_makes_one_callback_call(rng):
    codec = JpegCodec(quality=50)
    calls = []
    inner = codec.host_fn
    object.__setattr__(codec, "host_fn", lambda u8, q: (calls.append(u8.shape), inner(u8, q))[1])
    xs = feature_maps(rng, 6, 8, 8, 2).reshape(3, 2, 8, 8, 2)
    x_hat, stats = jax.jit(jax.vmap(lambda x: codec(x)))(xs)
    assert calls == [(3, 2, 8, 8, 2)]
    assert stats["bytes_full"].shape == (3, 2)
    np.testing.assert_array_equal(x_hat[1], jax.jit(lambda x: codec(x)[0])(xs[1]))


def test_process_pool_codes_exactly_like_the_thread_pool(rng):
    """Same pixels and byte counts whichever pool codes the chunks (3 workers, 7 uneven chunks' worth)."""
    x = feature_maps(rng, 7, 12, 12, 3)
    outs = {pool: jax.jit(JpegCodec(quality=35, workers=3, pool=pool))(x) for pool in jpeg_host.POOLS}
    (xt, st), (xp, sp) = outs["threads"], outs["processes"]
    np.testing.assert_array_equal(xt, xp)
    for k in st:
        np.testing.assert_array_equal(st[k], sp[k])
    assert 0 < int(sp["bytes_payload"][0]) < int(sp["bytes_full"][0])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"quality": 0}, "1..100"),
        ({"quality": 101}, "1..100"),
        ({"layout": "spiral"}, "grid, rows"),
        ({"workers": -1}, ">= 0"),
        ({"pool": "gpu"}, "threads, processes"),
    ],
)
def test_bad_jpeg_settings_fail_at_build(bad, match):
    with pytest.raises(ConfigError, match=match):
        make_codec({"name": "jpeg", **bad})
    with pytest.raises(ConfigError, match="unknown codec"):
        make_codec({"name": "webp"})


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_process_pool_workers_exit_when_the_trainer_is_killed(tmp_path):
    """SIGKILL (preemption) gives the pool no chance to shut down; its workers must still go."""
    script = tmp_path / "killed.py"
    script.write_text(
        "import os, signal, numpy as np\n"
        "from bottlenet_jax.codecs.jpeg import codec as jpeg, host as jpeg_host\n"
        "if __name__ == '__main__':\n"
        "    jpeg.jpeg_roundtrip_np(np.zeros((4, 8, 8, 2), np.uint8), 50, workers=2, pool='processes')\n"
        "    print(*jpeg_host._POOLS['processes', 2]._processes, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
    )
    assert p.returncode == -9, p.stderr[-2000:]
    pids = [int(x) for x in p.stdout.split()]
    assert len(pids) == 2
    deadline = time.time() + 15
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), f"orphaned JPEG workers still running: {pids}"


def test_codec_settings_are_the_codecs_own_and_old_saved_blocks_still_load():
    from bottlenet_jax.codecs import codec_settings, upgrade_settings

    assert codec_settings("awgn", sigma=0.1)["sigma"] == 0.1 and "quality" not in codec_settings("awgn")
    with pytest.raises(ConfigError, match=r"codec.sigma: not a setting of the jpeg codec \(its settings: quality"):
        make_codec({"name": "jpeg", "sigma": 0.1})
    with pytest.raises(ConfigError, match="codec.name='nope': unknown codec"):
        codec_settings("nope")
    # a workdir's config.json / an export's manifest from before: one shared block, `threads`
    old = {
        "name": "jpeg",
        "quality": 30,
        "layout": "grid",
        "optimize": False,
        "backend": "host",
        "threads": 2,
        "pool": "threads",
        "sigma": 0.0,
        "sigma_range": [0.0, 0.2],
        "p": 0.0,
        "p_range": [0.0, 0.05],
        "per_sample": False,
        "minmax": False,
    }
    assert make_codec(upgrade_settings(old)).settings() == JpegCodec(quality=30, workers=2).settings()
    assert upgrade_settings({**old, "name": "bec"}) == {
        "name": "bec",
        "p": 0.0,
        "p_range": [0.0, 0.05],
        "per_sample": False,
        "minmax": False,
    }
    # settings added after a block was saved come with their defaults, so overrides can set them
    saved = {k: v for k, v in codec_settings("entropy").items() if not k.startswith("fit_")}
    assert upgrade_settings(saved)["fit_context"] == "" and upgrade_settings(saved) == codec_settings("entropy")


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "jpeg", "quality": 50, "minmax": True},
        {"name": "awgn", "sigma": 0.0, "minmax": True},
        {"name": "bec", "p": 0.0, "minmax": True},
    ],
)
def test_minmax_side_information_is_one_helper_and_round_trips(rng, settings):
    """The 8 bytes of (lo, scale) were written three times (jpeg.py, channel.py twice); now
    base.minmax_pack / minmax_unpack: every codec's payloads start with them, and decode(encode)
    gives the graph's output (bit for bit for JPEG, whose scaling runs on the host; the channels
    scale in XLA, which rewrites x / s as x * (1 / s): equal to float32 rounding)."""
    from bottlenet_jax.codecs.quantize import MINMAX_BYTES, minmax_range

    codec = make_codec(settings)
    x = (rng.normal(size=(3, 6, 6, 2)) * 4 + 1).astype(np.float32)
    x_hat, stats = jax.jit(lambda x: codec(x, train=False, rng=jax.random.key(0)))(x)
    payloads = codec.encode(x)
    lo, scale = minmax_range(x)
    for p, l, s in zip(payloads, lo.ravel(), scale.ravel()):
        assert np.frombuffer(p[:MINMAX_BYTES], "<f4").tolist() == [l, s]
    assert [len(p) for p in payloads] == np.asarray(stats["bytes_full"]).tolist() or settings["name"] == "jpeg"
    if settings["name"] == "jpeg":
        np.testing.assert_array_equal(codec.decode(payloads, x.shape), np.asarray(x_hat))
    else:
        np.testing.assert_allclose(codec.decode(payloads, x.shape), np.asarray(x_hat), rtol=1e-5, atol=1e-5)


def test_quality_range_draws_the_training_quality_per_step_and_eval_uses_quality(rng):
    """codec.quality_range: a train step codes at q ~ U{lo..hi} from its codec key (the same key,
    the same q; the gradient stays the identity); evaluation codes at `quality`."""
    codec = make_codec({"name": "jpeg", "quality": 50, "quality_range": (5, 95)})
    x = jnp.asarray(feature_maps(rng, 2, 8, 8, 4))
    seen = set()
    for k in range(4):
        key = jax.random.key(k)
        q = int(jax.random.randint(key, (), 5, 96))
        got, _ = codec(x, train=True, rng=key)
        want, _ = make_codec({"name": "jpeg", "quality": q})(x)
        np.testing.assert_array_equal(got, want)
        seen.add(q)
    assert len(seen) > 1
    np.testing.assert_array_equal(codec(x)[0], make_codec({"name": "jpeg", "quality": 50})(x)[0])
    g = jax.grad(lambda x: codec(x, train=True, rng=jax.random.key(0))[0].sum())(x)
    np.testing.assert_array_equal(g, np.ones_like(x))
    with pytest.raises(ValueError, match="needs rngs"):
        codec(x, train=True)
    with pytest.raises(ConfigError, match="quality_range"):
        make_codec({"name": "jpeg", "quality_range": (0, 50)})


@pytest.mark.parametrize("shape", [(28, 28), (17, 9), (32, 24, 3)])
def test_a_webp_payload_rebuilds_the_file_cv2_wrote(rng, shape):
    """The input-image rival's WebP: the payload (the VP8 frame without container, start code and
    dimensions) is 27 bytes fewer than the file (28 with RIFF's pad byte) and rebuilds it byte for byte."""
    from bottlenet_jax.codecs import webp

    yy, xx = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    img = np.uint8(255 * (0.5 + 0.5 * np.sin(6 * xx + 4 * yy)))
    img = np.dstack([img, img[::-1], 255 - img]) if len(shape) == 3 else img
    for q in (1, 30, 95):
        f = webp.encode_image(img, q)
        p = webp.abbreviate(f)
        assert len(f) - len(p) in (27, 28)
        assert webp.rebuild(p, *shape[:2]) == f
        np.testing.assert_array_equal(webp.decode(webp.rebuild(p, *shape[:2]), len(shape) == 2).shape[:2], shape[:2])
    with pytest.raises(ValueError, match="lossy WebP"):
        webp.abbreviate(cv2.imencode(".png", img)[1].tobytes())
